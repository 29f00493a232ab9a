//! contera-fleet: parses the command line and hands over to the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = contera_fleet::cli::Cli::parse();
    match contera_fleet::run(cli) {
        Ok(contera_fleet::Finished::AllWell) => ExitCode::SUCCESS,
        Ok(contera_fleet::Finished::SomeFailed) => ExitCode::from(1),
        Err(e) => {
            eprintln!("contera-fleet: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
