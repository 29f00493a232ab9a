//! Retry and pacing policies, as named values in one place. Jitter keeps thousands of
//! recorders from arriving in lockstep after an outage.

use std::time::Duration;

use tokio_retry::strategy::ExponentialBackoff;

/// First wait after losing the server, before jitter.
pub const BACKOFF_FIRST: Duration = Duration::from_secs(2);
/// How much a heartbeat interval varies either way (±10 %).
pub const INTERVAL_JITTER: f64 = 0.10;

/// Delays between attempts while the server is unreachable: 2 s, 4 s, 8 s … doubling up
/// to `cap`, each jittered after the cap into [d/2, d), so even the first retry after an
/// outage is spread out and capped delays still differ between recorders.
pub struct Backoff {
    inner: ExponentialBackoff,
}

impl Backoff {
    pub fn new(cap: Duration) -> Self {
        // tokio-retry computes base^n × factor ms: base 2, factor 1000 gives 2 s, 4 s, 8 s.
        Backoff {
            inner: ExponentialBackoff::from_millis(2)
                .factor(BACKOFF_FIRST.as_millis() as u64 / 2)
                .max_delay(cap),
        }
    }

    /// The next delay before jitter (what the cap applies to).
    pub fn next_unjittered(&mut self) -> Duration {
        self.inner.next().expect("exponential backoff never ends")
    }

    /// The next delay to actually wait, jittered by `r` in [0, 1) (the caller draws it,
    /// so a test can pin it).
    pub fn next_delay(&mut self, r: f64) -> Duration {
        equal_jitter(self.next_unjittered(), r)
    }
}

/// Where in a certificate's lifetime it is renewed: a point drawn uniformly between 70 %
/// and 90 %, so recorders installed on the same day do not all renew together.
pub const RENEWAL_WINDOW: std::ops::Range<f64> = 0.7..0.9;

/// The renewal fraction for `r` in [0, 1).
pub fn renewal_fraction(r: f64) -> f64 {
    RENEWAL_WINDOW.start + (RENEWAL_WINDOW.end - RENEWAL_WINDOW.start) * r.clamp(0.0, 1.0)
}

/// `d/2 + r·d/2` for `r` in [0, 1): never less than half the delay, never more than it.
pub fn equal_jitter(d: Duration, r: f64) -> Duration {
    let half = d / 2;
    half + half.mul_f64(r.clamp(0.0, 1.0))
}

/// A heartbeat interval varied by ±10 % (`r` in [0, 1)).
pub fn interval_with_jitter(interval: Duration, r: f64) -> Duration {
    let factor = 1.0 - INTERVAL_JITTER + 2.0 * INTERVAL_JITTER * r.clamp(0.0, 1.0);
    interval.mul_f64(factor)
}

/// What to wait after a 429: the server's `Retry-After`, plus up to 10 % so the
/// recorders it turned away do not all return in the same second.
pub fn after_retry_after(retry_after: Duration, r: f64) -> Duration {
    retry_after + retry_after.mul_f64(INTERVAL_JITTER * r.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_starts_at_two_seconds_and_doubles() {
        let mut b = Backoff::new(Duration::from_secs(900));
        let first: Vec<u64> = (0..5).map(|_| b.next_unjittered().as_secs()).collect();
        assert_eq!(first, vec![2, 4, 8, 16, 32]);
    }

    #[test]
    fn backoff_stops_at_the_cap() {
        let mut b = Backoff::new(Duration::from_secs(900));
        let delays: Vec<u64> = (0..20).map(|_| b.next_unjittered().as_secs()).collect();
        assert_eq!(delays[8], 512);
        assert!(delays[9..].iter().all(|d| *d == 900), "{delays:?}");
    }

    #[test]
    fn jitter_is_applied_after_the_cap() {
        let cap = Duration::from_secs(900);
        let mut b = Backoff::new(cap);
        for _ in 0..15 {
            b.next_unjittered();
        }
        let capped = b.next_unjittered();
        assert_eq!(capped, cap);
        assert_eq!(equal_jitter(capped, 0.0), Duration::from_secs(450));
        assert!(equal_jitter(capped, 0.999) < cap);
        for r in [0.0, 0.25, 0.5, 0.999] {
            let d = b.next_delay(r);
            assert!(d >= cap / 2 && d <= cap, "{d:?}");
        }
    }

    #[test]
    fn heartbeat_interval_varies_by_ten_percent() {
        let i = Duration::from_secs(30);
        assert_eq!(interval_with_jitter(i, 0.0), Duration::from_secs(27));
        assert_eq!(interval_with_jitter(i, 0.5), Duration::from_secs(30));
        assert!(interval_with_jitter(i, 0.9999) <= Duration::from_secs(33));
    }

    #[test]
    fn first_delays_with_jitter_are_pinned() {
        // (r, the first three waits): r = 0 halves, r → 1 keeps the whole step.
        let table = [
            (0.0, [1000, 2000, 4000]),
            (0.5, [1500, 3000, 6000]),
            (0.999, [1999, 3998, 7996]),
        ];
        for (r, want) in table {
            let mut b = Backoff::new(Duration::from_secs(900));
            let got: Vec<u128> = (0..3).map(|_| b.next_delay(r).as_millis()).collect();
            assert_eq!(got, want, "r = {r}");
        }
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
