//! Command-line arguments: the modes and their options, nothing else.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// Simulates a fleet of recorders with real keys and real TLS against a provisioning
/// server: the load generator for the project's benchmarks.
#[derive(Debug, Parser)]
#[command(name = "contera-fleet", version)]
pub struct Cli {
    #[command(subcommand)]
    pub mode: Mode,
}

#[derive(Debug, Subcommand)]
pub enum Mode {
    /// Enrollment storm: N recorders make keys and CSRs, enroll concurrently, and save
    /// their identities in the state directory.
    Enroll(EnrollArgs),
    /// Saved identities heartbeat open loop (each at its own phase), or closed loop with
    /// `--closed-loop` for maximum throughput.
    Steady(SteadyArgs),
    /// Saved identities heartbeat; when the server goes away each follows the agent's
    /// backoff; reports how the reconnections spread over time once it is back.
    Outage(OutageArgs),
    /// `steady` over the identities a previous `enroll` saved; says so plainly when there
    /// are none.
    Resume(SteadyArgs),
}

/// What every mode needs: where the server is, how to trust it, where identities live.
#[derive(Debug, Args, Clone)]
pub struct Common {
    /// The server's device API, `https://HOST:PORT`; HOST is also the TLS name checked.
    #[arg(long, value_name = "URL")]
    pub server: String,
    /// The server's CA certificate (PEM), `DATA/tls/ca.pem` on the server.
    #[arg(long, value_name = "FILE")]
    pub ca: PathBuf,
    /// Directory of saved identities (one file per recorder: key, certificate, id).
    #[arg(long, value_name = "DIR")]
    pub state: PathBuf,
    /// Recorders to simulate: to enroll, or how many saved ones to use (default: all).
    #[arg(long, value_name = "N")]
    pub recorders: Option<usize>,
    /// Local source addresses, comma-separated, used in turn for new connections (one
    /// source address gives about 28,000 connections to one server port).
    #[arg(long, value_name = "IP,IP,...", value_delimiter = ',')]
    pub bind: Vec<IpAddr>,
    /// Seconds one request may take, connection included, before it counts as a timeout.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_secs)]
    pub timeout: Duration,
    /// Runtime worker threads; 1 runs everything on one core (leaving the others to the
    /// server on a small machine).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Print the final summary as JSON on stdout (progress still goes to stderr).
    #[arg(long)]
    pub json: bool,
    /// No per-second progress lines on stderr.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct EnrollArgs {
    #[command(flatten)]
    pub common: Common,
    /// The registration code every simulated recorder enrolls with.
    #[arg(long, env = "CONTERA_FLEET_CODE", hide_env_values = true)]
    pub code: String,
    /// Enrollment requests in flight at once (recorders waiting out a 429 hold none).
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
    /// Attempts per recorder before it counts as failed (429s and transient errors).
    #[arg(long, default_value_t = 20)]
    pub max_attempts: u32,
    /// Backoff cap after transport errors and 5xx, as the agent's `max_backoff_secs`.
    #[arg(long, value_name = "SECS", default_value = "30", value_parser = parse_secs)]
    pub max_backoff: Duration,
}

#[derive(Debug, Args)]
pub struct SteadyArgs {
    #[command(flatten)]
    pub common: Common,
    /// Seconds between one recorder's heartbeats; recorders are spread evenly over it.
    #[arg(long, value_name = "SECS", default_value = "30", value_parser = parse_secs)]
    pub interval: Duration,
    /// Seconds during which heartbeats are scheduled (answers still due are awaited).
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub duration: Duration,
    /// Total heartbeats per second, spread evenly over the recorders (overrides
    /// `--interval`: each recorder then beats every N/R seconds).
    #[arg(long, value_name = "R", conflicts_with = "closed_loop")]
    pub rate: Option<f64>,
    /// A fresh TCP and TLS connection for every heartbeat instead of one kept-alive
    /// connection per recorder.
    #[arg(long)]
    pub new_connection_per_heartbeat: bool,
    /// C workers, each sending its next heartbeat as soon as the previous one answered:
    /// maximum throughput, not a recorder-like load.
    #[arg(long, requires = "concurrency")]
    pub closed_loop: bool,
    /// Workers for `--closed-loop`.
    #[arg(long)]
    pub concurrency: Option<usize>,
}

#[derive(Debug, Args)]
pub struct OutageArgs {
    #[command(flatten)]
    pub common: Common,
    /// Seconds between one recorder's heartbeats while the server answers (±10 % jitter,
    /// as the agent).
    #[arg(long, value_name = "SECS", default_value = "30", value_parser = parse_secs)]
    pub interval: Duration,
    /// Seconds to run; the outage and the recovery must both fall inside.
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub duration: Duration,
    /// The backoff cap, as the agent's `max_backoff_secs` (its default is 900).
    #[arg(long, value_name = "SECS", default_value = "900", value_parser = parse_secs)]
    pub max_backoff: Duration,
}

/// Seconds as a positive decimal number.
fn parse_secs(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if !(secs.is_finite() && secs > 0.0) {
        return Err(format!("`{s}` must be more than 0 seconds"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn seconds_accept_fractions_and_refuse_zero() {
        assert_eq!(parse_secs("0.5"), Ok(Duration::from_millis(500)));
        assert!(parse_secs("0").is_err());
        assert!(parse_secs("-1").is_err());
        assert!(parse_secs("soon").is_err());
    }
}
