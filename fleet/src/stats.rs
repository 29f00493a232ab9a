//! What a run measured: counts, latencies (an HDR histogram, so memory stays fixed
//! however long the run), outcomes by kind and per-second throughput; and the progress
//! line printed once a second while it runs.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latencies are kept in microseconds, up to an hour.
const MAX_MICROS: u64 = 3_600_000_000;

/// Shared between every simulated recorder of a run. A plain mutex: it is held for a few
/// additions per request and is uncontended on the default one-thread runtime.
pub type Shared = Arc<Mutex<Stats>>;

/// Counts for one second of the run.
#[derive(Debug, Default, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct Second {
    /// Requests sent in this second.
    pub sent: u64,
    /// Successful answers received in this second.
    pub ok: u64,
    /// Failures (of any kind) noticed in this second.
    pub errors: u64,
}

pub struct Stats {
    start: Instant,
    latency: Histogram<u64>,
    pub sent: u64,
    pub ok: u64,
    pub errors: u64,
    errors_by_kind: BTreeMap<String, u64>,
    statuses: BTreeMap<u16, u64>,
    seconds: Vec<Second>,
    pub connections_opened: u64,
    last_done: Option<Instant>,
}

/// Latency figures in milliseconds, of successful requests only.
#[derive(Debug, Default, Clone, Serialize)]
pub struct LatencyMs {
    pub count: u64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

/// The parts of a summary every mode shares.
#[derive(Debug, Clone, Serialize)]
pub struct Totals {
    pub sent: u64,
    pub ok: u64,
    pub errors: u64,
    /// From the start until the last answer (at least the scheduled duration).
    pub wall_secs: f64,
    pub latency_ms: LatencyMs,
    /// Answers by HTTP status (200 included).
    pub statuses: BTreeMap<String, u64>,
    /// Failures by kind: `connect_refused`, `tls_reset`, `timeout`, `http_429`, …
    pub errors_by_kind: BTreeMap<String, u64>,
    pub per_second: Vec<Second>,
    pub connections_opened: u64,
}

impl Stats {
    pub fn shared(start: Instant) -> Shared {
        Arc::new(Mutex::new(Stats {
            start,
            latency: Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("valid bounds"),
            sent: 0,
            ok: 0,
            errors: 0,
            errors_by_kind: BTreeMap::new(),
            statuses: BTreeMap::new(),
            seconds: Vec::new(),
            connections_opened: 0,
            last_done: None,
        }))
    }

    fn second(&mut self, at: Instant) -> &mut Second {
        let i = at.saturating_duration_since(self.start).as_secs() as usize;
        if self.seconds.len() <= i {
            self.seconds.resize(i + 1, Second::default());
        }
        &mut self.seconds[i]
    }

    pub fn sent(&mut self, at: Instant) {
        self.sent += 1;
        self.second(at).sent += 1;
    }

    /// A 200, `latency` measured from when the request was due (not when it went out).
    pub fn ok(&mut self, latency: Duration, done: Instant) {
        self.ok += 1;
        *self.statuses.entry(200).or_default() += 1;
        self.second(done).ok += 1;
        let micros = (latency.as_micros() as u64).clamp(1, MAX_MICROS);
        self.latency.record(micros).expect("clamped into bounds");
        self.done(done);
    }

    pub fn error(&mut self, kind: String, status: Option<u16>, done: Instant) {
        self.errors += 1;
        if let Some(status) = status {
            *self.statuses.entry(status).or_default() += 1;
        }
        *self.errors_by_kind.entry(kind).or_default() += 1;
        self.second(done).errors += 1;
        self.done(done);
    }

    fn done(&mut self, at: Instant) {
        if self.last_done.is_none_or(|t| at > t) {
            self.last_done = Some(at);
        }
    }

    pub fn connections(&mut self, opened: u32) {
        self.connections_opened += u64::from(opened);
    }

    pub fn latency_ms(&self) -> LatencyMs {
        let h = &self.latency;
        if h.is_empty() {
            return LatencyMs::default();
        }
        let ms = |micros: u64| micros as f64 / 1000.0;
        LatencyMs {
            count: h.len(),
            mean: h.mean() / 1000.0,
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }

    /// The summary's shared parts; `scheduled` is how long requests were being sent.
    pub fn totals(&self, scheduled: Duration) -> Totals {
        let wall = self
            .last_done
            .map(|t| t.saturating_duration_since(self.start))
            .unwrap_or_default()
            .max(scheduled);
        Totals {
            sent: self.sent,
            ok: self.ok,
            errors: self.errors,
            wall_secs: wall.as_secs_f64(),
            latency_ms: self.latency_ms(),
            statuses: self
                .statuses
                .iter()
                .map(|(s, n)| (s.to_string(), *n))
                .collect(),
            errors_by_kind: self.errors_by_kind.clone(),
            per_second: self.seconds.clone(),
            connections_opened: self.connections_opened,
        }
    }
}

impl Totals {
    /// Successful answers per second over the whole run.
    pub fn achieved_rate(&self) -> f64 {
        if self.wall_secs > 0.0 {
            self.ok as f64 / self.wall_secs
        } else {
            0.0
        }
    }

    /// The human-readable lines every mode prints.
    pub fn print(&self) {
        let l = &self.latency_ms;
        println!(
            "requests: {} sent, {} ok, {} errors in {:.1} s ({:.1} ok/s)",
            self.sent,
            self.ok,
            self.errors,
            self.wall_secs,
            self.achieved_rate()
        );
        println!(
            "latency of successful requests (ms): p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}  mean {:.2}",
            l.p50, l.p90, l.p99, l.p999, l.max, l.mean
        );
        let statuses: Vec<String> = self
            .statuses
            .iter()
            .map(|(s, n)| format!("{s}: {n}"))
            .collect();
        println!("HTTP statuses: {}", or_none(&statuses));
        let kinds: Vec<String> = self
            .errors_by_kind
            .iter()
            .map(|(k, n)| format!("{k}: {n}"))
            .collect();
        println!("errors by kind: {}", or_none(&kinds));
        println!("connections opened: {}", self.connections_opened);
        let per_second: Vec<String> = self.per_second.iter().map(|s| s.ok.to_string()).collect();
        println!("ok per second: {}", per_second.join(" "));
    }
}

fn or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

/// Peak resident memory of this process (VmHWM), in MiB; 0 where unknown.
pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Prints `elapsed, sent, ok, errors, rate` to stderr once a second until dropped.
pub struct Progress(Option<tokio::task::JoinHandle<()>>);

impl Progress {
    pub fn start(stats: Shared, start: Instant, quiet: bool) -> Progress {
        if quiet {
            return Progress(None);
        }
        Progress(Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(
                tokio::time::Instant::from_std(start) + Duration::from_secs(1),
                Duration::from_secs(1),
            );
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last = (start, 0u64);
            loop {
                let now = tick.tick().await.into_std();
                let (sent, ok, errors) = {
                    let s = stats.lock().expect("stats lock");
                    (s.sent, s.ok, s.errors)
                };
                let rate = (ok - last.1) as f64 / now.duration_since(last.0).as_secs_f64();
                eprintln!(
                    "{:>7.1}s  sent {sent:>9}  ok {ok:>9}  errors {errors:>7}  rate {rate:>9.1}/s",
                    now.duration_since(start).as_secs_f64()
                );
                last = (now, ok);
            }
        })))
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_land_in_their_second_and_latency_is_counted_for_successes_only() {
        let start = Instant::now();
        let stats = Stats::shared(start);
        let mut s = stats.lock().unwrap();
        s.sent(start);
        s.sent(start + Duration::from_millis(1500));
        s.ok(Duration::from_millis(20), start + Duration::from_millis(20));
        s.error(
            "http_429".into(),
            Some(429),
            start + Duration::from_millis(2100),
        );
        let t = s.totals(Duration::from_secs(1));
        assert_eq!((t.sent, t.ok, t.errors), (2, 1, 1));
        assert_eq!(
            t.per_second,
            vec![
                Second {
                    sent: 1,
                    ok: 1,
                    errors: 0
                },
                Second {
                    sent: 1,
                    ok: 0,
                    errors: 0
                },
                Second {
                    sent: 0,
                    ok: 0,
                    errors: 1
                },
            ]
        );
        assert_eq!(t.statuses["200"], 1);
        assert_eq!(t.statuses["429"], 1);
        assert_eq!(t.errors_by_kind["http_429"], 1);
        assert_eq!(t.latency_ms.count, 1);
        assert!((t.latency_ms.p50 - 20.0).abs() < 0.1, "{:?}", t.latency_ms);
        assert!((t.wall_secs - 2.1).abs() < 1e-6, "{}", t.wall_secs);
    }

    #[test]
    fn the_wall_time_is_at_least_the_scheduled_time() {
        let start = Instant::now();
        let stats = Stats::shared(start);
        let t = stats.lock().unwrap().totals(Duration::from_secs(5));
        assert_eq!(t.wall_secs, 5.0);
        assert_eq!(t.achieved_rate(), 0.0);
    }
}
