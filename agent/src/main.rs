//! Parses the command line and hands over to the library.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = contera_agent::cli::Cli::parse();
    contera_agent::cli::run(cli).await
}
