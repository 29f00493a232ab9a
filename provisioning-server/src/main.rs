//! Parses the command line, sets up logging and hands over to the library.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = contera_provisioning::cli::Cli::parse();
    contera_provisioning::cli::run(cli).await
}
