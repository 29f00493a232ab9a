//! Retry and pacing policies, as named values in one place. Jitter keeps thousands of
//! recorders from arriving in lockstep after an outage.
//!
//! After a failure the agent waits a "full jitter" delay: uniform between a small floor
//! and the step's ceiling, which doubles from [`BACKOFF_FIRST`] up to the configured cap
//! (`sleep = random(0, min(cap, 2 s × 2^attempt))`). Every step is drawn over its whole
//! range, the first one included: recorders that lost the server in the same second must
//! not come back in the same second, neither on their first retry nor after a long
//! outage when the server returns.

use std::time::Duration;

use tokio_retry::strategy::ExponentialBackoff;

/// The ceiling of the first wait after a failure (the first retry comes anywhere from
/// [`BACKOFF_FLOOR`] to this).
pub const BACKOFF_FIRST: Duration = Duration::from_secs(2);
/// The shortest wait after a failure: a server that fails at once (connection refused)
/// must not be hammered by a recorder that drew a zero.
pub const BACKOFF_FLOOR: Duration = Duration::from_millis(100);
/// How much a heartbeat interval varies either way (±10 %).
pub const INTERVAL_JITTER: f64 = 0.10;

/// Delays between attempts while the server is unreachable. The ceilings go 2 s, 4 s,
/// 8 s … doubling up to `cap`; each delay is drawn uniformly in [floor, ceiling) (full
/// jitter), so the attempts of many recorders spread over the whole step.
pub struct Backoff {
    inner: ExponentialBackoff,
    cap: Duration,
}

impl Backoff {
    pub fn new(cap: Duration) -> Self {
        // tokio-retry computes base^n × factor ms: base 2, factor 1000 gives 2 s, 4 s, 8 s.
        Backoff {
            inner: ExponentialBackoff::from_millis(2)
                .factor(BACKOFF_FIRST.as_millis() as u64 / 2)
                .max_delay(cap),
            cap,
        }
    }

    /// The ceiling of the next step (what the cap applies to), moving on to the step
    /// after it.
    pub fn next_ceiling(&mut self) -> Duration {
        self.inner
            .next()
            .expect("exponential backoff never ends")
            .min(self.cap)
    }

    /// The next delay to actually wait, for `r` uniform in [0, 1) (the caller draws it,
    /// so a test can pin it): anywhere in [floor, ceiling) of this step.
    pub fn next_delay(&mut self, r: f64) -> Duration {
        full_jitter(self.next_ceiling(), r)
    }
}

/// `floor + r·(ceiling − floor)` for `r` in [0, 1): uniform over [floor, ceiling), where
/// the floor is [`BACKOFF_FLOOR`] (or the ceiling itself, were it lower).
pub fn full_jitter(ceiling: Duration, r: f64) -> Duration {
    let floor = BACKOFF_FLOOR.min(ceiling);
    floor + (ceiling - floor).mul_f64(r.clamp(0.0, 1.0))
}

/// Where in a certificate's lifetime it is renewed: a point drawn uniformly between 70 %
/// and 90 %, so recorders installed on the same day do not all renew together.
pub const RENEWAL_WINDOW: std::ops::Range<f64> = 0.7..0.9;

/// The renewal fraction for `r` in [0, 1).
pub fn renewal_fraction(r: f64) -> f64 {
    RENEWAL_WINDOW.start + (RENEWAL_WINDOW.end - RENEWAL_WINDOW.start) * r.clamp(0.0, 1.0)
}

/// A heartbeat interval varied by ±10 % (`r` in [0, 1)).
pub fn interval_with_jitter(interval: Duration, r: f64) -> Duration {
    let factor = 1.0 - INTERVAL_JITTER + 2.0 * INTERVAL_JITTER * r.clamp(0.0, 1.0);
    interval.mul_f64(factor)
}

/// What to wait after a 429: the server's `Retry-After`, plus up to 10 % so the
/// recorders it turned away do not all return in the same second. Never less than the
/// server asked for; not a backoff step, since a busy server is not a lost one.
pub fn after_retry_after(retry_after: Duration, r: f64) -> Duration {
    retry_after + retry_after.mul_f64(INTERVAL_JITTER * r.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};

    use super::*;

    const CAP: Duration = Duration::from_secs(900);

    #[test]
    fn ceilings_start_at_two_seconds_and_double_up_to_the_cap() {
        let mut b = Backoff::new(CAP);
        let ceilings: Vec<u64> = (0..20).map(|_| b.next_ceiling().as_secs()).collect();
        assert_eq!(ceilings[..5], [2, 4, 8, 16, 32]);
        assert_eq!(ceilings[8], 512);
        assert!(ceilings[9..].iter().all(|d| *d == 900), "{ceilings:?}");
        // A cap below the first step is the ceiling from the start.
        let mut short = Backoff::new(Duration::from_secs(1));
        assert_eq!(short.next_ceiling(), Duration::from_secs(1));
        assert_eq!(short.next_ceiling(), Duration::from_secs(1));
    }

    #[test]
    fn every_step_draws_from_the_floor_to_its_ceiling() {
        // (r, the first three waits in ms): r = 0 is the floor at every step, r -> 1
        // nearly the whole ceiling; the first retry included.
        let table = [
            (0.0, [100, 100, 100]),
            (0.5, [1050, 2050, 4050]),
            (0.999, [1998, 3996, 7992]),
        ];
        for (r, want) in table {
            let mut b = Backoff::new(CAP);
            let got: Vec<u128> = (0..3).map(|_| b.next_delay(r).as_millis()).collect();
            assert_eq!(got, want, "r = {r}");
        }
        let mut b = Backoff::new(CAP);
        for _ in 0..15 {
            b.next_ceiling();
        }
        assert_eq!(b.next_delay(0.0), BACKOFF_FLOOR);
        assert!(b.next_delay(0.9999) < CAP);
        // Out-of-range draws stay in range.
        assert_eq!(full_jitter(CAP, 7.0), CAP);
        assert_eq!(full_jitter(CAP, -1.0), BACKOFF_FLOOR);
        // A ceiling under the floor is not exceeded.
        assert_eq!(
            full_jitter(Duration::from_millis(50), 0.5),
            Duration::from_millis(50)
        );
    }

    /// The delays of 10,000 draws at `step` (0 = the first retry), in a 20-bucket
    /// histogram over [floor, ceiling).
    fn histogram(step: usize, seed: u64) -> (Duration, [u32; 20]) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let at_step = || {
            let mut b = Backoff::new(CAP);
            (0..step).for_each(|_| {
                b.next_ceiling();
            });
            b
        };
        let ceiling = at_step().next_ceiling();
        let span = (ceiling - BACKOFF_FLOOR).as_secs_f64();
        let mut buckets = [0u32; 20];
        for _ in 0..10_000 {
            let d = at_step().next_delay(rng.gen::<f64>());
            assert!(d >= BACKOFF_FLOOR && d < ceiling, "step {step}: {d:?}");
            let at = (d - BACKOFF_FLOOR).as_secs_f64() / span;
            buckets[((at * 20.0) as usize).min(19)] += 1;
        }
        (ceiling, buckets)
    }

    #[test]
    fn delays_spread_evenly_over_each_step_including_the_first() {
        // 10,000 draws in 20 buckets: 500 expected in each. Even spread means no bucket
        // at twice its share and none nearly empty.
        for (step, ceiling) in [(0, 2), (1, 4), (5, 64), (12, 900)] {
            let (got_ceiling, buckets) = histogram(step, 7 + step as u64);
            assert_eq!(got_ceiling, Duration::from_secs(ceiling), "step {step}");
            assert!(
                buckets.iter().all(|n| (250..1000).contains(n)),
                "step {step}: {buckets:?}"
            );
        }
    }

    #[test]
    fn equal_jitter_would_fail_the_spread_check() {
        // The check above can fail: the old policy ([d/2, d)) leaves the lower half of
        // the first step empty.
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut buckets = [0u32; 20];
        for _ in 0..10_000 {
            let d = BACKOFF_FIRST / 2 + (BACKOFF_FIRST / 2).mul_f64(rng.gen::<f64>());
            let at =
                (d - BACKOFF_FLOOR).as_secs_f64() / (BACKOFF_FIRST - BACKOFF_FLOOR).as_secs_f64();
            buckets[((at * 20.0) as usize).min(19)] += 1;
        }
        assert!(buckets.iter().any(|n| !(250..1000).contains(n)));
    }

    /// Reconnections per whole second when `agents` recorders lose the server together
    /// at t = 0 and it is back at `back`: each retries after the delays `delay` gives
    /// (from a fresh backoff and a random draw) until a try lands at or after `back`.
    fn reconnects_per_second(
        agents: usize,
        back: Duration,
        mut draw: impl FnMut() -> f64,
    ) -> std::collections::BTreeMap<u64, u32> {
        let mut per_second = std::collections::BTreeMap::new();
        for _ in 0..agents {
            let mut backoff = Backoff::new(CAP);
            let mut t = Duration::ZERO;
            while t < back {
                t += backoff.next_delay(draw());
            }
            *per_second.entry(t.as_secs()).or_insert(0) += 1;
        }
        per_second
    }

    #[test]
    fn after_a_five_minute_outage_at_most_five_percent_reconnect_in_any_second() {
        let agents = 10_000;
        let back = Duration::from_secs(300);
        let mut rng = rand::rngs::StdRng::seed_from_u64(42);
        let per_second = reconnects_per_second(agents, back, || rng.gen::<f64>());
        let (busiest, most) = per_second.iter().max_by_key(|(_, n)| **n).unwrap();
        assert!(
            *most as usize <= agents / 20,
            "{most} of {agents} reconnected in second {busiest}"
        );
        assert_eq!(per_second.values().sum::<u32>() as usize, agents);
        assert!(*per_second.keys().next().unwrap() >= 300);
        // A pinned draw (no jitter) is the stampede the check is there to catch.
        let pinned = reconnects_per_second(agents, back, || 0.5);
        assert_eq!(pinned.len(), 1, "{pinned:?}");
    }

    #[test]
    fn first_retries_after_a_shared_failure_spread_over_the_first_step() {
        // 10,000 recorders fail in the same instant: their first retries spread over
        // [0.1 s, 2 s), about 526 per 100 ms, nowhere near all in one moment.
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let mut per_100ms = [0u32; 20];
        for _ in 0..10_000 {
            let d = Backoff::new(CAP).next_delay(rng.gen::<f64>());
            per_100ms[(d.as_millis() / 100) as usize] += 1;
        }
        assert_eq!(per_100ms[0], 0, "nothing before the floor");
        assert!(
            per_100ms[1..].iter().all(|n| (263..1052).contains(n)),
            "{per_100ms:?}"
        );
    }

    #[test]
    fn heartbeat_interval_varies_by_ten_percent() {
        let i = Duration::from_secs(30);
        assert_eq!(interval_with_jitter(i, 0.0), Duration::from_secs(27));
        assert_eq!(interval_with_jitter(i, 0.5), Duration::from_secs(30));
        assert!(interval_with_jitter(i, 0.9999) <= Duration::from_secs(33));
    }

    #[test]
    fn renewal_fractions_stay_in_the_window() {
        assert_eq!(renewal_fraction(0.0), 0.7);
        assert!((renewal_fraction(0.5) - 0.8).abs() < 1e-9);
        assert!(renewal_fraction(0.9999) < 0.9);
        assert!(renewal_fraction(7.0) <= 0.9);
    }

    #[test]
    fn retry_after_is_never_shortened() {
        let d = Duration::from_secs(20);
        assert_eq!(after_retry_after(d, 0.0), d);
        assert!(after_retry_after(d, 0.99) <= Duration::from_secs(22));
    }
}
