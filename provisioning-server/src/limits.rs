//! Limits that keep one client, one code or one storm from starving everyone else:
//! enrollment rate limits (per address, per code, global), the per-address connection
//! cap, and the tally of failed code attempts that the audit log receives in aggregate.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};

/// The unit a limit counts a client by: an IPv4 address, or the /64 prefix of an IPv6
/// address (one host usually holds a whole /64, so counting single IPv6 addresses would
/// give it 2^64 allowances). IPv4-mapped IPv6 addresses count as the IPv4 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientKey(IpAddr);

impl ClientKey {
    pub fn of(ip: IpAddr) -> ClientKey {
        match ip {
            IpAddr::V4(v4) => ClientKey(IpAddr::V4(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => ClientKey(IpAddr::V4(v4)),
                None => {
                    let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                    ClientKey(IpAddr::V6(Ipv6Addr::from(prefix)))
                }
            },
        }
    }
}

impl std::fmt::Display for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            IpAddr::V4(v4) => write!(f, "{v4}"),
            IpAddr::V6(v6) => write!(f, "{v6}/64"),
        }
    }
}

/// Which enrollment limit was hit, for the answer and the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitHit {
    Address,
    Code,
    Global,
}

impl LimitHit {
    pub fn describe(self) -> &'static str {
        match self {
            LimitHit::Address => "too many enrollment attempts from this address",
            LimitHit::Code => "too many enrollment attempts with this registration code",
            LimitHit::Global => "the server is busy with enrollments",
        }
    }
}

/// A refusal: which limit, and whole seconds until a retry can pass (at least 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    pub hit: LimitHit,
    pub retry_after_secs: u64,
}

fn per_minute(n: u32) -> Quota {
    Quota::per_minute(NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN))
}

fn wait_secs(not_until: governor::NotUntil<governor::clock::QuantaInstant>) -> u64 {
    not_until
        .wait_time_from(DefaultClock::default().now())
        .as_secs_f64()
        .ceil()
        .max(1.0) as u64
}

/// Enrollment attempts per address, per code and for the whole server. Each is a burst
/// of its per-minute figure that refills evenly over the minute.
pub struct EnrollLimits {
    per_address: DefaultKeyedRateLimiter<ClientKey>,
    per_code: DefaultKeyedRateLimiter<String>,
    global: DefaultDirectRateLimiter,
}

impl EnrollLimits {
    pub fn new(per_address: u32, per_code: u32, global: u32) -> Self {
        EnrollLimits {
            per_address: RateLimiter::keyed(per_minute(per_address)),
            per_code: RateLimiter::keyed(per_minute(per_code)),
            global: RateLimiter::direct(per_minute(global)),
        }
    }

    /// Counts an attempt from `ip` before anything of its body is read. The address is
    /// checked first, so one client spends only its own allowance of the global one.
    pub fn check_client(&self, ip: IpAddr) -> Result<(), Refused> {
        self.per_address
            .check_key(&ClientKey::of(ip))
            .map_err(|n| Refused {
                hit: LimitHit::Address,
                retry_after_secs: wait_secs(n),
            })?;
        self.global.check().map_err(|n| Refused {
            hit: LimitHit::Global,
            retry_after_secs: wait_secs(n),
        })
    }

    /// Counts an attempt on the code whose public id is `public_id`, before its secret is
    /// checked.
    pub fn check_code(&self, public_id: &str) -> Result<(), Refused> {
        self.per_code
            .check_key(&public_id.to_ascii_uppercase())
            .map_err(|n| Refused {
                hit: LimitHit::Code,
                retry_after_secs: wait_secs(n),
            })
    }

    /// Forgets keys whose allowance is full again, so memory stays bounded.
    pub fn retain_recent(&self) {
        self.per_address.retain_recent();
        self.per_code.retain_recent();
    }
}

/// Open connections per client, capped. A slot is held by the guard [`ConnectionSlots::take`]
/// returns and given back when it drops.
pub struct ConnectionSlots {
    cap: usize,
    open: Mutex<HashMap<ClientKey, usize>>,
}

/// One open connection of one client; dropping it frees the slot.
pub struct Slot {
    slots: Arc<ConnectionSlots>,
    key: ClientKey,
}

impl ConnectionSlots {
    pub fn new(cap: usize) -> Arc<Self> {
        Arc::new(ConnectionSlots {
            cap: cap.max(1),
            open: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for a connection from `ip`, or None when that client already holds `cap`.
    pub fn take(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let key = ClientKey::of(ip);
        let mut open = self.open.lock().expect("not poisoned");
        let count = open.entry(key).or_insert(0);
        if *count >= self.cap {
            return None;
        }
        *count += 1;
        Some(Slot {
            slots: self.clone(),
            key,
        })
    }

    /// Connections open from the client `ip` belongs to.
    pub fn open_from(&self, ip: IpAddr) -> usize {
        let open = self.open.lock().expect("not poisoned");
        open.get(&ClientKey::of(ip)).copied().unwrap_or(0)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().expect("not poisoned");
        if let Some(count) = open.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// Failed enrollment attempts (a wrong or unknown code), counted per code public id and
/// written to the audit log as one row per code and period instead of one per attempt,
/// so a guessing attack is visible without flooding the log.
#[derive(Default)]
pub struct FailedAttempts {
    tally: Mutex<HashMap<String, Tally>>,
}

/// Public ids tracked at once; beyond, attempts are counted under [`OTHER_CODES`].
pub const MAX_TRACKED_CODES: usize = 10_000;
/// The bucket for attempts past [`MAX_TRACKED_CODES`] distinct public ids.
pub const OTHER_CODES: &str = "*";
/// Distinct addresses remembered per code (for the count in the audit row).
const MAX_ADDRESSES: usize = 1000;

/// Failed attempts on one code public id since the last write.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Tally {
    pub failures: u64,
    pub first_at: i64,
    pub last_at: i64,
    pub addresses: std::collections::HashSet<ClientKey>,
}

impl FailedAttempts {
    pub fn record(&self, public_id: &str, ip: IpAddr, now: i64) {
        let mut tally = self.tally.lock().expect("not poisoned");
        let public_id = public_id.to_ascii_uppercase();
        let key = if tally.contains_key(&public_id) || tally.len() < MAX_TRACKED_CODES {
            public_id
        } else {
            OTHER_CODES.to_string()
        };
        let entry = tally.entry(key).or_insert_with(|| Tally {
            first_at: now,
            ..Tally::default()
        });
        entry.failures += 1;
        entry.last_at = now;
        if entry.addresses.len() < MAX_ADDRESSES {
            entry.addresses.insert(ClientKey::of(ip));
        }
    }

    /// Everything counted since the last call, sorted by public id.
    pub fn take(&self) -> Vec<(String, Tally)> {
        let mut taken: Vec<_> = self.tally.lock().expect("not poisoned").drain().collect();
        taken.sort_by(|a, b| a.0.cmp(&b.0));
        taken
    }

    /// Puts counts back after a failed write, adding to anything counted meanwhile.
    pub fn restore(&self, taken: Vec<(String, Tally)>) {
        let mut tally = self.tally.lock().expect("not poisoned");
        for (key, old) in taken {
            let entry = tally.entry(key).or_insert_with(|| Tally {
                first_at: old.first_at,
                ..Tally::default()
            });
            entry.failures += old.failures;
            entry.first_at = entry.first_at.min(old.first_at);
            entry.last_at = entry.last_at.max(old.last_at);
            entry.addresses.extend(old.addresses);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv6_addresses_of_one_64_prefix_are_one_client() {
        assert_eq!(
            ClientKey::of(ip("2001:db8:1:2::1")),
            ClientKey::of(ip("2001:db8:1:2:ffff:ffff:ffff:ffff"))
        );
        assert_ne!(
            ClientKey::of(ip("2001:db8:1:2::1")),
            ClientKey::of(ip("2001:db8:1:3::1"))
        );
        assert_eq!(
            ClientKey::of(ip("::ffff:192.0.2.7")),
            ClientKey::of(ip("192.0.2.7"))
        );
        assert_ne!(
            ClientKey::of(ip("192.0.2.7")),
            ClientKey::of(ip("192.0.2.8"))
        );
        assert_eq!(
            ClientKey::of(ip("2001:db8:1:2::1")).to_string(),
            "2001:db8:1:2::/64"
        );
    }

    #[test]
    fn per_code_limit_holds_across_addresses() {
        let limits = EnrollLimits::new(100, 3, 1000);
        for n in 0..3 {
            limits
                .check_client(ip(&format!("127.0.0.{}", n + 1)))
                .unwrap();
            limits.check_code("k7qd").unwrap();
        }
        limits.check_client(ip("127.0.0.9")).unwrap();
        let refused = limits.check_code("K7QD").unwrap_err();
        assert_eq!(refused.hit, LimitHit::Code);
        assert!(refused.retry_after_secs >= 1);
        limits.check_code("AAAA").unwrap();
    }

    #[test]
    fn one_address_cannot_spend_the_global_allowance_beyond_its_own() {
        let limits = EnrollLimits::new(2, 100, 3);
        limits.check_client(ip("10.0.0.1")).unwrap();
        limits.check_client(ip("10.0.0.1")).unwrap();
        assert_eq!(
            limits.check_client(ip("10.0.0.1")).unwrap_err().hit,
            LimitHit::Address
        );
        // The refused attempt did not use the third global token.
        limits.check_client(ip("10.0.0.2")).unwrap();
        assert_eq!(
            limits.check_client(ip("10.0.0.3")).unwrap_err().hit,
            LimitHit::Global
        );
    }

    #[test]
    fn connection_slots_cap_one_client_and_come_back_on_drop() {
        let slots = ConnectionSlots::new(2);
        let a = slots.take(ip("2001:db8::1")).unwrap();
        let _b = slots.take(ip("2001:db8::2")).unwrap();
        assert!(slots.take(ip("2001:db8::3")).is_none(), "same /64");
        assert!(slots.take(ip("2001:db9::1")).is_some(), "another /64");
        drop(a);
        assert_eq!(slots.open_from(ip("2001:db8::9")), 1);
        assert!(slots.take(ip("2001:db8::3")).is_some());
    }

    #[test]
    fn failed_attempts_are_counted_per_code_and_restored_after_a_failed_write() {
        let failed = FailedAttempts::default();
        failed.record("k7qd", ip("127.0.0.1"), 100);
        failed.record("K7QD", ip("127.0.0.2"), 105);
        failed.record("AAAA", ip("127.0.0.1"), 106);
        let taken = failed.take();
        assert_eq!(taken.len(), 2);
        assert_eq!(taken[1].0, "K7QD");
        assert_eq!(taken[1].1.failures, 2);
        assert_eq!(taken[1].1.addresses.len(), 2);
        assert_eq!((taken[1].1.first_at, taken[1].1.last_at), (100, 105));
        assert!(failed.take().is_empty());
        failed.record("K7QD", ip("127.0.0.3"), 110);
        failed.restore(taken);
        let again = failed.take();
        assert_eq!(again[1].1.failures, 3);
        assert_eq!((again[1].1.first_at, again[1].1.last_at), (100, 110));
    }
}
