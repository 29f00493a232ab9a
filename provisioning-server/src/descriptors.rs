//! Open-file budget: every connection is a descriptor, and so are the database, its
//! journal and the TLS files. Running out of them must cost new connections only, never
//! the database, so connections get what the limit allows minus a reserve.

use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// Descriptors kept back from connections: the SQLite pool (a handful of connections,
/// each with the database, its WAL and shared-memory files), the listener, epoll, the
/// journal, mDNS sockets, stdio and files opened now and then (TLS material, config).
pub const RESERVED: u64 = 128;

/// Connections below this are no server: the limit is too low to be useful.
pub const MIN_CONNECTIONS: u64 = 16;

/// The open-file limit after [`raise_soft_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFileLimit {
    /// The soft limit in force now.
    pub soft: u64,
    pub hard: u64,
    /// The soft limit found at start, when it was raised.
    pub raised_from: Option<u64>,
}

/// Raises the soft open-file limit to the hard one: the soft default (1024 on most
/// systems) is a relic of `select()`, which this server does not use. When raising is
/// refused (a seccomp filter, say), the current limit stays and is reported.
pub fn raise_soft_limit() -> std::io::Result<OpenFileLimit> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(std::io::Error::from)?;
    if soft >= hard {
        return Ok(OpenFileLimit {
            soft,
            hard,
            raised_from: None,
        });
    }
    match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
        Ok(()) => Ok(OpenFileLimit {
            soft: hard,
            hard,
            raised_from: Some(soft),
        }),
        Err(e) => {
            log::warn!("could not raise the open-file limit from {soft} to {hard}: {e}");
            Ok(OpenFileLimit {
                soft,
                hard,
                raised_from: None,
            })
        }
    }
}

/// What becomes of the configured `max_connections` under an open-file limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionBudget {
    /// The configured figure fits.
    Fits(usize),
    /// Lowered to what fits after the reserve.
    Lowered { configured: usize, to: usize },
    /// The limit leaves fewer than [`MIN_CONNECTIONS`] after the reserve.
    TooLow { limit: u64 },
}

/// Fits `max_connections` under `soft_limit` with [`RESERVED`] descriptors kept back.
pub fn connection_budget(max_connections: usize, soft_limit: u64) -> ConnectionBudget {
    let available = soft_limit.saturating_sub(RESERVED);
    if available < MIN_CONNECTIONS {
        return ConnectionBudget::TooLow { limit: soft_limit };
    }
    if max_connections as u64 <= available {
        ConnectionBudget::Fits(max_connections)
    } else {
        ConnectionBudget::Lowered {
            configured: max_connections,
            to: available as usize,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_connections_is_lowered_to_the_limit_minus_the_reserve() {
        assert_eq!(connection_budget(500, 1024), ConnectionBudget::Fits(500));
        assert_eq!(
            connection_budget(20_000, 1024),
            ConnectionBudget::Lowered {
                configured: 20_000,
                to: 1024 - RESERVED as usize
            }
        );
        assert_eq!(
            connection_budget(20_000, 100),
            ConnectionBudget::TooLow { limit: 100 }
        );
    }

    #[test]
    fn the_packaged_unit_allows_the_default_max_connections_and_the_reserve() {
        let unit = include_str!("../../packaging/contera-provisioning.service");
        let limit: u64 = unit
            .lines()
            .find_map(|l| l.strip_prefix("LimitNOFILE="))
            .expect("the unit sets LimitNOFILE=")
            .trim()
            .parse()
            .unwrap();
        let default = crate::config::ServerConfig::default().max_connections;
        assert_eq!(
            connection_budget(default, limit),
            ConnectionBudget::Fits(default)
        );
    }

    #[test]
    fn raising_the_soft_limit_never_lowers_it() {
        let (soft, _) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        let limit = raise_soft_limit().unwrap();
        assert!(limit.soft >= soft);
        assert!(limit.soft <= limit.hard);
    }
}
