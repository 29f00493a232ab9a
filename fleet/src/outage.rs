//! Outage and recovery: recorders heartbeat as the agent does (interval ±10 %); when a
//! heartbeat fails each waits as the agent's `Backoff` says (or the server's
//! `Retry-After`) and tries again. Once the server is back, the first successful
//! heartbeat of each recorder that lost it is counted per second: how many arrive in
//! the busiest second is the thundering herd the backoff's jitter is meant to prevent.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use contera_agent::retry::{after_retry_after, interval_with_jitter, Backoff};
use serde::Serialize;

use crate::identity::Identity;
use crate::recorder::Recorder;
use crate::stats::{self, Progress, Stats};
use crate::steady::RunSummary;
use crate::target::Target;

/// One recorder's first failure, and its first success after it (if any).
type Episode = (Instant, Option<Instant>);

pub struct OutageOptions {
    pub interval: Duration,
    pub duration: Duration,
    pub max_backoff: Duration,
    pub quiet: bool,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct OutageReport {
    pub max_backoff_secs: f64,
    /// Recorders that had at least one failed heartbeat.
    pub recorders_disconnected: usize,
    /// Of those, how many got through again before the run ended.
    pub reconnected: usize,
    pub still_disconnected: usize,
    /// Seconds from the start to the first failure anyone saw.
    pub first_failure_at_secs: Option<f64>,
    /// Seconds from the start to the first reconnection; the histogram starts there.
    pub first_reconnection_at_secs: Option<f64>,
    /// From the first reconnection to the last.
    pub reconnection_spread_secs: f64,
    /// First reconnections in each second from the first one on.
    pub reconnections_per_second: Vec<u64>,
    pub max_reconnections_in_one_second: u64,
    /// `max_reconnections_in_one_second` over the fleet's size.
    pub max_share_of_recorders: f64,
}

impl OutageReport {
    /// From each disconnected recorder's first failure and first success after it.
    fn from_events(
        recorders: usize,
        max_backoff: Duration,
        start: Instant,
        events: &[Episode],
    ) -> OutageReport {
        let secs = |t: Instant| t.saturating_duration_since(start).as_secs_f64();
        let mut back: Vec<Instant> = events.iter().filter_map(|(_, up)| *up).collect();
        back.sort();
        let first_back = back.first().copied();
        let mut per_second: Vec<u64> = Vec::new();
        if let Some(first) = first_back {
            for t in &back {
                let i = t.duration_since(first).as_secs() as usize;
                if per_second.len() <= i {
                    per_second.resize(i + 1, 0);
                }
                per_second[i] += 1;
            }
        }
        let max = per_second.iter().copied().max().unwrap_or(0);
        OutageReport {
            max_backoff_secs: max_backoff.as_secs_f64(),
            recorders_disconnected: events.len(),
            reconnected: back.len(),
            still_disconnected: events.len() - back.len(),
            first_failure_at_secs: events.iter().map(|(down, _)| *down).min().map(secs),
            first_reconnection_at_secs: first_back.map(secs),
            reconnection_spread_secs: match (back.first(), back.last()) {
                (Some(a), Some(b)) => b.duration_since(*a).as_secs_f64(),
                _ => 0.0,
            },
            reconnections_per_second: per_second,
            max_reconnections_in_one_second: max,
            max_share_of_recorders: if recorders == 0 {
                0.0
            } else {
                max as f64 / recorders as f64
            },
        }
    }

    pub fn print(&self, recorders: usize) {
        println!(
            "outage: {} of {recorders} recorders lost the server, {} reconnected, {} still disconnected (backoff cap {:.0} s)",
            self.recorders_disconnected, self.reconnected, self.still_disconnected, self.max_backoff_secs
        );
        if let Some(first) = self.first_reconnection_at_secs {
            let counts: Vec<String> = self
                .reconnections_per_second
                .iter()
                .map(u64::to_string)
                .collect();
            println!(
                "first reconnections per second from {first:.1} s: {} (spread {:.1} s; busiest second {} = {:.1} % of the fleet)",
                counts.join(" "),
                self.reconnection_spread_secs,
                self.max_reconnections_in_one_second,
                self.max_share_of_recorders * 100.0
            );
        }
    }
}

pub async fn run(
    target: Arc<Target>,
    identities: Vec<Identity>,
    options: OutageOptions,
) -> RunSummary {
    let n = identities.len();
    let start = Instant::now();
    let stats = Stats::shared(start);
    let progress = Progress::start(stats.clone(), start, options.quiet);
    let end = start + options.duration;
    let events: Arc<Mutex<Vec<Episode>>> = Arc::default();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, identity) in identities.into_iter().enumerate() {
        let first = start + options.interval.mul_f64(i as f64 / n as f64);
        let recorder = Recorder::new(identity, true);
        let (target, stats, events) = (target.clone(), stats.clone(), events.clone());
        let (interval, max_backoff) = (options.interval, options.max_backoff);
        tasks.spawn(async move {
            let event =
                like_an_agent(&target, recorder, &stats, first, interval, max_backoff, end).await;
            if let Some(event) = event {
                events.lock().expect("events lock").push(event);
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    drop(progress);
    let totals = stats.lock().expect("stats lock").totals(options.duration);
    let events = events.lock().expect("events lock");
    RunSummary {
        mode: "outage",
        recorders: n,
        open_loop: false,
        keep_alive: true,
        interval_secs: Some(options.interval.as_secs_f64()),
        target_rate_per_sec: None,
        concurrency: None,
        duration_secs: options.duration.as_secs_f64(),
        achieved_rate_per_sec: totals.achieved_rate(),
        totals,
        peak_rss_mib: stats::peak_rss_mib(),
        outage: Some(OutageReport::from_events(
            n,
            options.max_backoff,
            start,
            &events,
        )),
    }
}

/// Heartbeats until `end` on the agent's schedule. Returns when this recorder first
/// failed and when it first got through after that, if it ever failed.
async fn like_an_agent(
    target: &Target,
    mut recorder: Recorder,
    stats: &stats::Shared,
    first: Instant,
    interval: Duration,
    max_backoff: Duration,
    end: Instant,
) -> Option<Episode> {
    let mut backoff = Backoff::new(max_backoff);
    let mut lost: Option<Instant> = None;
    let mut back: Option<Instant> = None;
    let mut next = first;
    while next < end {
        tokio::time::sleep_until(next.into()).await;
        let sent = Instant::now();
        stats.lock().expect("stats lock").sent(sent);
        let (opened, result) = recorder.heartbeat(target).await;
        let done = Instant::now();
        let mut s = stats.lock().expect("stats lock");
        s.connections(opened);
        let r: f64 = rand::random();
        next = match result {
            Ok(_) => {
                s.ok(done - sent, done);
                if lost.is_some() && back.is_none() {
                    back = Some(done);
                }
                backoff = Backoff::new(max_backoff);
                done + interval_with_jitter(interval, r)
            }
            Err(e) => {
                s.error(e.kind(), e.status(), done);
                lost.get_or_insert(done);
                match e.retry_after() {
                    Some(after) => done + after_retry_after(after, r),
                    None if e.is_transient() => done + backoff.next_delay(r),
                    None => done + interval_with_jitter(interval, r),
                }
            }
        };
    }
    lost.map(|down| (down, back))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnections_are_counted_per_second_from_the_first() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let events = vec![
            (at(1000), Some(at(5000))),
            (at(1100), Some(at(5300))),
            (at(1200), Some(at(7100))),
            (at(1300), None),
        ];
        let report = OutageReport::from_events(10, Duration::from_secs(4), start, &events);
        assert_eq!(report.recorders_disconnected, 4);
        assert_eq!(report.reconnected, 3);
        assert_eq!(report.still_disconnected, 1);
        assert_eq!(report.first_failure_at_secs, Some(1.0));
        assert_eq!(report.first_reconnection_at_secs, Some(5.0));
        assert_eq!(report.reconnections_per_second, vec![2, 0, 1]);
        assert_eq!(report.max_reconnections_in_one_second, 2);
        assert!((report.max_share_of_recorders - 0.2).abs() < 1e-9);
        assert!((report.reconnection_spread_secs - 2.1).abs() < 1e-9);
    }

    #[test]
    fn a_fleet_that_never_lost_the_server_reports_no_reconnections() {
        let report = OutageReport::from_events(5, Duration::from_secs(4), Instant::now(), &[]);
        assert_eq!(report.recorders_disconnected, 0);
        assert!(report.reconnections_per_second.is_empty());
        assert_eq!(report.first_reconnection_at_secs, None);
    }
}
