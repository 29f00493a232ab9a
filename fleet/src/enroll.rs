//! The enrollment storm: every simulated recorder makes its key and CSR (before the
//! clock starts: that is the recorders' work, not the server's), then all enroll at
//! once, at most `concurrency` requests in flight. 429s are waited out as their
//! `Retry-After` says and transient failures follow the agent's backoff, each recorder
//! on its own. Every enrolled identity is saved in the state directory.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use contera_agent::retry::{after_retry_after, Backoff};
use contera_protocol::v1::{EnrollRequest, EnrollResponse, Hardware, ENROLL_PATH};
use rcgen::KeyPair;
use serde::Serialize;
use tokio::sync::Semaphore;

use crate::connection::{self, CallError};
use crate::identity::{self, SavedIdentity};
use crate::stats::{self, LatencyMs, Progress, Stats, Totals};
use crate::target::Target;

pub struct EnrollOptions {
    pub code: String,
    pub recorders: usize,
    pub concurrency: usize,
    pub max_attempts: u32,
    pub max_backoff: Duration,
    pub state: PathBuf,
    pub quiet: bool,
}

#[derive(Debug, Serialize)]
pub struct EnrollSummary {
    pub mode: &'static str,
    pub recorders: usize,
    pub enrolled: usize,
    pub failed: usize,
    pub concurrency: usize,
    /// Making every key and CSR, before the storm (not part of its time).
    pub keygen_secs: f64,
    /// Enrolled recorders per second, from the storm's start to the last enrollment.
    pub enrollments_per_sec: f64,
    /// From the storm's start until each recorder was enrolled, 429 waits and retries
    /// included: what an installer would see.
    pub time_to_enroll_ms: LatencyMs,
    /// Recorders that gave up, by their last failure.
    pub failures: BTreeMap<String, u64>,
    /// Every attempt: `latency_ms` is one request's, from when it was sent.
    #[serde(flatten)]
    pub attempts: Totals,
    pub peak_rss_mib: f64,
}

impl EnrollSummary {
    pub fn print(&self) {
        println!(
            "enrolled {} of {} recorders ({} failed) at {:.1}/s, concurrency {}; keys and CSRs made beforehand in {:.2} s",
            self.enrolled,
            self.recorders,
            self.failed,
            self.enrollments_per_sec,
            self.concurrency,
            self.keygen_secs
        );
        let t = &self.time_to_enroll_ms;
        println!(
            "time to enroll from the storm's start (ms): p50 {:.1}  p90 {:.1}  p99 {:.1}  max {:.1}",
            t.p50, t.p90, t.p99, t.max
        );
        if !self.failures.is_empty() {
            println!("gave up after: {:?}", self.failures);
        }
        self.attempts.print();
        println!("peak memory: {:.1} MiB", self.peak_rss_mib);
    }
}

/// One simulated recorder before enrollment: its key and the request body.
struct Pending {
    serial: String,
    key: KeyPair,
    body: Bytes,
}

enum Outcome {
    Enrolled(Duration),
    Failed(String),
}

fn prepare(options: &EnrollOptions, first_index: usize) -> anyhow::Result<Vec<Pending>> {
    (first_index..first_index + options.recorders)
        .map(|index| {
            let serial = identity::serial(index);
            let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
            let request = EnrollRequest {
                registration_code: options.code.clone(),
                csr_pem: contera_agent::identity::csr_pem(&key)?,
                hardware: Hardware {
                    serial: serial.clone(),
                    mac: None,
                    model: "contera-fleet".into(),
                    firmware: None,
                },
                agent_version: concat!("contera-fleet/", env!("CARGO_PKG_VERSION")).into(),
            };
            let body = Bytes::from(serde_json::to_vec(&request)?);
            Ok(Pending { serial, key, body })
        })
        .collect()
}

pub async fn run(target: Arc<Target>, options: EnrollOptions) -> anyhow::Result<EnrollSummary> {
    std::fs::create_dir_all(&options.state)?;
    let first_index = identity::next_index(&options.state)?;
    let keygen = Instant::now();
    let pending = prepare(&options, first_index)?;
    let keygen_secs = keygen.elapsed().as_secs_f64();

    let start = Instant::now();
    let stats = Stats::shared(start);
    let progress = Progress::start(stats.clone(), start, options.quiet);
    let permits = Arc::new(Semaphore::new(options.concurrency.max(1)));
    let options = Arc::new(options);
    let mut tasks = tokio::task::JoinSet::new();
    for recorder in pending {
        let (target, stats, permits, options) = (
            target.clone(),
            stats.clone(),
            permits.clone(),
            options.clone(),
        );
        tasks.spawn(async move {
            enroll_one(&target, recorder, &stats, &permits, &options, start).await
        });
    }
    let mut times = hdrhistogram::Histogram::<u64>::new(3).expect("valid histogram");
    let mut failures: BTreeMap<String, u64> = BTreeMap::new();
    let mut last = Duration::ZERO;
    while let Some(outcome) = tasks.join_next().await {
        match outcome? {
            Outcome::Enrolled(after) => {
                times.record((after.as_micros() as u64).max(1))?;
                last = last.max(after);
            }
            Outcome::Failed(kind) => *failures.entry(kind).or_default() += 1,
        }
    }
    drop(progress);
    let enrolled = times.len() as usize;
    let ms = |micros: u64| micros as f64 / 1000.0;
    let time_to_enroll_ms = if times.is_empty() {
        LatencyMs::default()
    } else {
        LatencyMs {
            count: times.len(),
            mean: times.mean() / 1000.0,
            p50: ms(times.value_at_quantile(0.5)),
            p90: ms(times.value_at_quantile(0.9)),
            p99: ms(times.value_at_quantile(0.99)),
            p999: ms(times.value_at_quantile(0.999)),
            max: ms(times.max()),
        }
    };
    let attempts = stats.lock().expect("stats lock").totals(Duration::ZERO);
    Ok(EnrollSummary {
        mode: "enroll",
        recorders: options.recorders,
        enrolled,
        failed: options.recorders - enrolled,
        concurrency: options.concurrency,
        keygen_secs,
        enrollments_per_sec: if last.is_zero() {
            0.0
        } else {
            enrolled as f64 / last.as_secs_f64()
        },
        time_to_enroll_ms,
        failures,
        attempts,
        peak_rss_mib: stats::peak_rss_mib(),
    })
}

async fn enroll_one(
    target: &Target,
    recorder: Pending,
    stats: &stats::Shared,
    permits: &Semaphore,
    options: &EnrollOptions,
    start: Instant,
) -> Outcome {
    let mut backoff = Backoff::new(options.max_backoff);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let permit = permits.acquire().await.expect("semaphore never closed");
        let sent = Instant::now();
        stats.lock().expect("stats lock").sent(sent);
        // Each attempt is a new connection, as a recorder enrolling once would make.
        let mut slot = None;
        let mut opened = 0;
        let result = connection::call(
            target,
            &mut slot,
            &target.anonymous,
            ENROLL_PATH,
            recorder.body.clone(),
            &mut opened,
        )
        .await
        .and_then(|body| {
            let answer: EnrollResponse =
                serde_json::from_slice(&body).map_err(|e| CallError::Protocol(e.to_string()))?;
            contera_agent::identity::check_certificate(&answer.certificate_pem, &recorder.key)
                .map_err(|e| CallError::Protocol(e.to_string()))?;
            Ok(answer)
        });
        drop(slot);
        drop(permit);
        let done = Instant::now();
        let error = match result {
            Ok(answer) => {
                {
                    let mut s = stats.lock().expect("stats lock");
                    s.connections(opened);
                    s.ok(done - sent, done);
                }
                let saved = SavedIdentity::new(
                    recorder.serial.clone(),
                    answer.recorder_id,
                    answer.account.id,
                    recorder.key.serialize_pem(),
                    answer.certificate_pem,
                );
                let dir = options.state.clone();
                return match tokio::task::spawn_blocking(move || identity::save(&dir, &saved)).await
                {
                    Ok(Ok(())) => Outcome::Enrolled(done - start),
                    Ok(Err(e)) => {
                        eprintln!("{}: {e}", recorder.serial);
                        Outcome::Failed("save".into())
                    }
                    Err(e) => Outcome::Failed(format!("save: {e}")),
                };
            }
            Err(e) => e,
        };
        {
            let mut s = stats.lock().expect("stats lock");
            s.connections(opened);
            s.error(error.kind(), error.status(), done);
        }
        if !error.is_transient() || attempt >= options.max_attempts {
            return Outcome::Failed(error.kind());
        }
        let r: f64 = rand::random();
        let wait = match error.retry_after() {
            Some(after) => after_retry_after(after, r),
            None => backoff.next_delay(r),
        };
        tokio::time::sleep(wait).await;
    }
}
