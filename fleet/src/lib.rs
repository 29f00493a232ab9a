//! contera-fleet: simulates many recorders with real keys and real TLS against a real
//! provisioning server, as the load generator for the project's benchmarks. Efficient
//! (hyper's client connection over tokio-rustls, one small state per recorder, one core
//! by default) and honest (open loop, latency from when a request was due).

pub mod cli;
pub mod connection;
pub mod enroll;
pub mod identity;
pub mod limits;
pub mod outage;
pub mod recorder;
pub mod stats;
pub mod steady;
pub mod target;

use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

use crate::cli::{Cli, Common, Mode, SteadyArgs};
use crate::identity::{Identity, IdentityError};
use crate::target::{Target, TargetError};

/// How a run that got to its summary ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Finished {
    AllWell,
    /// Some recorders could not enroll (the summary says which way).
    SomeFailed,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The command line asks for something this state directory cannot give.
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
    #[error("{0:#}")]
    Failed(#[from] anyhow::Error),
}

impl RunError {
    /// 2 for usage and configuration errors, 1 for failures while running.
    pub fn exit_code(&self) -> u8 {
        match self {
            RunError::Usage(_)
            | RunError::Target(TargetError::Url(_))
            | RunError::Target(TargetError::CaFile { .. })
            | RunError::Target(TargetError::CaEmpty(_)) => 2,
            _ => 1,
        }
    }
}

pub fn run(cli: Cli) -> Result<Finished, RunError> {
    let threads = match &cli.mode {
        Mode::Enroll(a) => a.common.threads,
        Mode::Steady(a) | Mode::Resume(a) => a.common.threads,
        Mode::Outage(a) => a.common.threads,
    };
    let runtime = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
    .map_err(RunError::Runtime)?;
    runtime.block_on(run_mode(cli.mode))
}

async fn run_mode(mode: Mode) -> Result<Finished, RunError> {
    match mode {
        Mode::Enroll(args) => {
            let common = args.common;
            let recorders = common
                .recorders
                .ok_or_else(|| RunError::Usage("enroll needs --recorders N".into()))?;
            if args.concurrency == 0 {
                return Err(RunError::Usage("--concurrency must be at least 1".into()));
            }
            open_files_for(args.concurrency.min(recorders));
            let target = connect(&common).await?;
            let summary = enroll::run(
                target,
                enroll::EnrollOptions {
                    code: args.code,
                    recorders,
                    concurrency: args.concurrency,
                    max_attempts: args.max_attempts.max(1),
                    max_backoff: args.max_backoff,
                    state: common.state.clone(),
                    quiet: common.quiet,
                },
            )
            .await?;
            report(&summary, common.json, || summary.print());
            Ok(if summary.failed == 0 {
                Finished::AllWell
            } else {
                Finished::SomeFailed
            })
        }
        Mode::Steady(args) | Mode::Resume(args) => steady(args).await,
        Mode::Outage(args) => {
            let common = args.common;
            let identities = saved(&common.state, common.recorders)?;
            open_files_for(identities.len());
            let target = connect(&common).await?;
            let summary = outage::run(
                target,
                identities,
                outage::OutageOptions {
                    interval: args.interval,
                    duration: args.duration,
                    max_backoff: args.max_backoff,
                    quiet: common.quiet,
                },
            )
            .await;
            report(&summary, common.json, || summary.print());
            Ok(Finished::AllWell)
        }
    }
}

async fn steady(args: SteadyArgs) -> Result<Finished, RunError> {
    let common = args.common;
    let identities = saved(&common.state, common.recorders)?;
    let closed_loop = match (args.closed_loop, args.concurrency) {
        (true, Some(0)) => return Err(RunError::Usage("--concurrency must be at least 1".into())),
        (true, c) => c,
        (false, _) => None,
    };
    if let Some(rate) = args.rate {
        if !(rate.is_finite() && rate > 0.0) {
            return Err(RunError::Usage("--rate must be more than 0".into()));
        }
    }
    open_files_for(closed_loop.unwrap_or(identities.len()));
    let target = connect(&common).await?;
    let summary = steady::run(
        target,
        identities,
        steady::SteadyOptions {
            interval: args.interval,
            duration: args.duration,
            rate: args.rate,
            keep_alive: !args.new_connection_per_heartbeat,
            closed_loop,
            quiet: common.quiet,
        },
    )
    .await;
    report(&summary, common.json, || summary.print());
    Ok(Finished::AllWell)
}

/// The saved identities to run with; an empty or too small state directory is a usage
/// error that says what to do.
fn saved(state: &Path, recorders: Option<usize>) -> Result<Vec<Identity>, RunError> {
    let identities = identity::load(state, recorders)?;
    if identities.is_empty() {
        return Err(RunError::Usage(format!(
            "the state directory {} holds no saved identities: enroll a fleet into it first (contera-fleet enroll --state {} --code CODE --recorders N ...)",
            state.display(),
            state.display()
        )));
    }
    if let Some(n) = recorders {
        if identities.len() < n {
            return Err(RunError::Usage(format!(
                "--recorders {n}, but {} holds only {} saved identities: enroll {} more first",
                state.display(),
                identities.len(),
                n - identities.len()
            )));
        }
    }
    Ok(identities)
}

async fn connect(common: &Common) -> Result<Arc<Target>, RunError> {
    Ok(Arc::new(
        Target::new(
            &common.server,
            &common.ca,
            common.bind.clone(),
            common.timeout,
        )
        .await?,
    ))
}

/// Raises the open-file limit for `connections` at once, and says so when it cannot.
fn open_files_for(connections: usize) {
    let want = connections as u64 + limits::MARGIN;
    match limits::raise_open_files(want) {
        Ok(got) if got >= want => {}
        Ok(got) => eprintln!(
            "contera-fleet: the open-file limit is {got}, below the {want} this run needs ({connections} connections + {}); connections past it will fail as `too_many_open_files` (raise the hard limit: ulimit -Hn, LimitNOFILE=)",
            limits::MARGIN
        ),
        Err(e) => eprintln!("contera-fleet: cannot raise the open-file limit: {e}"),
    }
}

/// The summary on stdout: JSON with `--json`, else the human lines.
fn report(summary: &impl Serialize, json: bool, human: impl FnOnce()) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(summary).expect("a summary serializes")
        );
    } else {
        human();
    }
}
