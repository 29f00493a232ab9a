//! Parses the command line, builds the runtime and hands over to the library.
//!
//! One thread: the daemon does one thing at a time, so a runtime with a worker per core
//! (3 threads on 2 cores, 5 on 4) buys nothing on a recorder. Blocking work (state
//! fsyncs, mDNS shutdown) goes to tokio's blocking pool, which starts threads only when
//! asked and lets them go when idle.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = contera_agent::cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(2)
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(contera_agent::cli::run(cli))
}
