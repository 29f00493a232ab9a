//! The open-file limit: every simulated recorder's connection is a file descriptor, so
//! the soft limit is raised before the run (and the hard one too, where allowed).

use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// Descriptors beyond the connections: the runtime, the state directory, stdio.
pub const MARGIN: u64 = 64;

/// Raises `RLIMIT_NOFILE` towards `want`; returns the soft limit now in force.
pub fn raise_open_files(want: u64) -> nix::Result<u64> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft >= want {
        return Ok(soft);
    }
    // Raising the hard limit needs privilege; try it, then settle for the hard limit.
    if hard < want && setrlimit(Resource::RLIMIT_NOFILE, want, want).is_ok() {
        return Ok(want);
    }
    let target = want.min(hard);
    setrlimit(Resource::RLIMIT_NOFILE, target, hard)?;
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_modest_limit_is_reached() {
        let (soft, _) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        assert!(raise_open_files(soft.min(256)).unwrap() >= soft.min(256));
    }
}
