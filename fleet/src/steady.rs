//! Steady heartbeats. Open loop by default: each recorder beats at its own phase within
//! the interval whether or not the server keeps up, and a heartbeat's latency runs from
//! when it was due, so a slow answer that delays the next heartbeat is counted against
//! the server, not hidden (no coordinated omission). Closed loop on request: C workers
//! send back to back, for maximum throughput.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::identity::Identity;
use crate::outage::OutageReport;
use crate::recorder::Recorder;
use crate::stats::{self, Progress, Stats, Totals};
use crate::target::Target;

pub struct SteadyOptions {
    pub interval: Duration,
    pub duration: Duration,
    pub rate: Option<f64>,
    pub keep_alive: bool,
    pub closed_loop: Option<usize>,
    pub quiet: bool,
}

#[derive(Debug, Serialize)]
pub struct RunSummary {
    /// `steady`, `closed_loop` or `outage`.
    pub mode: &'static str,
    pub recorders: usize,
    pub open_loop: bool,
    /// One kept-alive connection per recorder (else one per heartbeat).
    pub keep_alive: bool,
    /// One recorder's interval (N / rate when a rate was given).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval_secs: Option<f64>,
    /// Heartbeats per second the schedule asks for (open loop).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_rate_per_sec: Option<f64>,
    /// Workers (closed loop).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<usize>,
    /// How long heartbeats were being scheduled.
    pub duration_secs: f64,
    /// Successful heartbeats per second over `wall_secs`.
    pub achieved_rate_per_sec: f64,
    #[serde(flatten)]
    pub totals: Totals,
    pub peak_rss_mib: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outage: Option<OutageReport>,
}

impl RunSummary {
    pub fn print(&self) {
        let shape = match (self.open_loop, self.concurrency) {
            (true, _) => format!(
                "open loop, {:.1} heartbeats/s scheduled ({} recorders every {:.2} s)",
                self.target_rate_per_sec.unwrap_or_default(),
                self.recorders,
                self.interval_secs.unwrap_or_default()
            ),
            (false, Some(c)) => {
                format!("closed loop, {c} workers over {} recorders", self.recorders)
            }
            (false, None) => format!("{} recorders, agent-like schedule", self.recorders),
        };
        println!(
            "{}: {shape}, {} connections, {:.1} s",
            self.mode,
            if self.keep_alive {
                "kept-alive"
            } else {
                "new per heartbeat"
            },
            self.duration_secs
        );
        self.totals.print();
        println!("peak memory: {:.1} MiB", self.peak_rss_mib);
        if let Some(outage) = &self.outage {
            outage.print(self.recorders);
        }
    }
}

pub async fn run(
    target: Arc<Target>,
    identities: Vec<Identity>,
    options: SteadyOptions,
) -> RunSummary {
    let n = identities.len();
    let start = Instant::now();
    let stats = Stats::shared(start);
    let progress = Progress::start(stats.clone(), start, options.quiet);
    let end = start + options.duration;
    let mut tasks = tokio::task::JoinSet::new();
    let (open_loop, every) = match options.closed_loop {
        Some(workers) => {
            // Worker w speaks as recorder w (mod N), on a connection of its own.
            for w in 0..workers {
                let recorder = Recorder::new(identities[w % n].clone(), options.keep_alive);
                let (target, stats) = (target.clone(), stats.clone());
                tasks.spawn(closed_loop(target, recorder, stats, end));
            }
            (false, None)
        }
        None => {
            let every = match options.rate {
                Some(rate) => Duration::from_secs_f64(n as f64 / rate),
                None => options.interval,
            };
            for (i, identity) in identities.into_iter().enumerate() {
                let phase = every.mul_f64(i as f64 / n as f64);
                let recorder = Recorder::new(identity, options.keep_alive);
                let (target, stats) = (target.clone(), stats.clone());
                tasks.spawn(open_loop(
                    target,
                    recorder,
                    stats,
                    start + phase,
                    every,
                    end,
                ));
            }
            (true, Some(every))
        }
    };
    while tasks.join_next().await.is_some() {}
    drop(progress);
    let totals = stats.lock().expect("stats lock").totals(options.duration);
    RunSummary {
        mode: if open_loop { "steady" } else { "closed_loop" },
        recorders: n,
        open_loop,
        keep_alive: options.keep_alive,
        interval_secs: every.map(|e| e.as_secs_f64()),
        target_rate_per_sec: every.map(|e| n as f64 / e.as_secs_f64()),
        concurrency: options.closed_loop,
        duration_secs: options.duration.as_secs_f64(),
        achieved_rate_per_sec: totals.achieved_rate(),
        totals,
        peak_rss_mib: stats::peak_rss_mib(),
        outage: None,
    }
}

/// Heartbeats due at `first`, `first + every`, … until `end`. A heartbeat that is due
/// while the previous one is still unanswered goes out as soon as it is answered, and
/// its latency still counts from when it was due.
async fn open_loop(
    target: Arc<Target>,
    mut recorder: Recorder,
    stats: stats::Shared,
    first: Instant,
    every: Duration,
    end: Instant,
) {
    let mut due = first;
    let mut k: u32 = 0;
    while due < end {
        tokio::time::sleep_until(due.into()).await;
        stats.lock().expect("stats lock").sent(Instant::now());
        let (opened, result) = recorder.heartbeat(&target).await;
        let done = Instant::now();
        {
            let mut s = stats.lock().expect("stats lock");
            s.connections(opened);
            match result {
                Ok(_) => s.ok(done - due, done),
                Err(e) => s.error(e.kind(), e.status(), done),
            }
        }
        k += 1;
        // From the first due time, so rounding never drifts the schedule.
        due = first + every * k;
    }
}

/// Heartbeats back to back until `end`; latency from each send.
async fn closed_loop(
    target: Arc<Target>,
    mut recorder: Recorder,
    stats: stats::Shared,
    end: Instant,
) {
    while Instant::now() < end {
        let sent = Instant::now();
        stats.lock().expect("stats lock").sent(sent);
        let (opened, result) = recorder.heartbeat(&target).await;
        let done = Instant::now();
        let failed = {
            let mut s = stats.lock().expect("stats lock");
            s.connections(opened);
            match result {
                Ok(_) => {
                    s.ok(done - sent, done);
                    false
                }
                Err(e) => {
                    s.error(e.kind(), e.status(), done);
                    true
                }
            }
        };
        if failed {
            // A failing server is not hammered in a tight loop.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
