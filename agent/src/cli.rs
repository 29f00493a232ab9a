//! The installer's command line: `run` starts the daemon; `enroll`, `status` and
//! `unenroll` talk to it over the control socket.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use contera_protocol::RegistrationCode;

use crate::config::{AgentConfig, DEFAULT_CONFIG_PATH};
use crate::control::{self, Request, Response, Status};
use crate::failure::FailureKind;
use crate::lifecycle::rfc3339;
use crate::state::StateFile;

/// Exit code for usage and configuration errors, and for a mistyped code.
pub const EXIT_USAGE: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "contera-agent",
    version,
    about = "Enrolls this recorder with a Contera provisioning server"
)]
pub struct Cli {
    /// Configuration file
    #[arg(long, global = true, env = "CONTERA_AGENT_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon (what systemd starts)
    Run,
    /// Enroll this recorder with an account's registration code
    Enroll {
        /// The code, as shown for the account (dashes and case do not matter)
        #[arg(long)]
        code: String,
        #[arg(long)]
        json: bool,
        /// Enroll without showing the account first and asking to confirm (asked only
        /// when standard input is a terminal)
        #[arg(long)]
        yes: bool,
    },
    /// Show whether and where this recorder is enrolled
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Forget this recorder's identity (key and certificate)
    Unenroll,
    /// List provisioning servers and recorders announced by mDNS on this network
    Discover {
        /// Seconds to listen
        #[arg(long, default_value_t = 3)]
        timeout: u64,
        #[arg(long)]
        json: bool,
    },
    /// Check the configuration file and exit (0 valid, 2 invalid)
    ValidateConfig,
    /// Test hook: blocks the daemon's main loop (only when it runs with
    /// CONTERA_AGENT_TEST_HOOKS=1), to prove the watchdog restarts a wedged daemon
    #[cfg(feature = "test-hooks")]
    #[command(hide = true)]
    DebugFreeze {
        #[arg(long, default_value_t = 30)]
        secs: u64,
    },
    /// Print a commented default configuration
    PrintDefaultConfig,
}

/// The shipped, commented example configuration.
pub const DEFAULT_CONFIG_TOML: &str = include_str!("../../config/agent.toml");

fn load_config(path: &Path) -> Result<AgentConfig, ExitCode> {
    AgentConfig::load(path).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(EXIT_USAGE)
    })
}

pub async fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::PrintDefaultConfig => {
            print!("{DEFAULT_CONFIG_TOML}");
            ExitCode::SUCCESS
        }
        Command::Discover { timeout, json } => {
            let wait = std::time::Duration::from_secs(timeout.clamp(1, 60));
            match crate::discovery::discover_all(wait).await {
                Err(e) => fail(&e.to_string()),
                Ok((servers, recorders)) => {
                    if json {
                        println!(
                            "{:#}",
                            serde_json::json!({ "servers": servers, "recorders": recorders })
                        );
                    } else {
                        print_discovered(&servers, &recorders);
                    }
                    ExitCode::SUCCESS
                }
            }
        }
        #[cfg(feature = "test-hooks")]
        Command::DebugFreeze { secs } => {
            let config = match load_config(&cli.config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            match control::call(&config.agent.control_socket, &Request::Freeze { secs }).await {
                Ok(Response::Done) => ExitCode::SUCCESS,
                Ok(Response::Failed(f)) => fail(&f.message),
                Ok(other) => fail(&format!("unexpected answer from the daemon: {other:?}")),
                Err(e) => fail(&e.to_string()),
            }
        }
        Command::ValidateConfig => match load_config(&cli.config) {
            Ok(_) => {
                println!("{}: configuration is valid", cli.config.display());
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Run => {
            let config = match load_config(&cli.config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            crate::logging::init(&config.agent.log_level, config.agent.log_target);
            let launch = match crate::process::launch(cli.config) {
                Ok(launch) => launch,
                Err(e) => return fail(&format!("cannot install the signal handlers: {e}")),
            };
            match crate::daemon::run(config, launch).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    log::error!("cannot start: {e}");
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Enroll { code, json, yes } => {
            // Catch typos before anything else, even before reading the config.
            if let Err(e) = code.parse::<RegistrationCode>() {
                eprintln!("error: {e}");
                return ExitCode::from(EXIT_USAGE);
            }
            let config = match load_config(&cli.config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            // A person at a terminal sees the account first: a valid code of the wrong
            // customer is the costliest mistake at a site. Scripts are not asked.
            if !yes && !json && std::io::stdin().is_terminal() {
                match confirm_account(&config, &code).await {
                    Ok(true) => {}
                    Ok(false) => {
                        eprintln!("Not enrolled: nothing was changed.");
                        return ExitCode::FAILURE;
                    }
                    Err(exit) => return exit,
                }
            }
            match control::call(&config.agent.control_socket, &Request::Enroll { code }).await {
                Err(e) => fail(&e.to_string()),
                Ok(Response::Enrolled {
                    recorder_id,
                    account,
                }) => {
                    if json {
                        println!(
                            "{:#}",
                            serde_json::json!({ "recorder_id": recorder_id, "account": account })
                        );
                    } else {
                        println!(
                            "Enrolled: this recorder joined the account \"{}\".",
                            account.name
                        );
                        println!("  account id:  {}", account.id);
                        println!("  recorder id: {recorder_id}");
                    }
                    ExitCode::SUCCESS
                }
                Ok(Response::Failed(failure)) => {
                    if json {
                        println!("{:#}", serde_json::json!({ "error": failure }));
                    }
                    if failure.kind == FailureKind::Typo {
                        eprintln!("error: {failure}");
                        return ExitCode::from(EXIT_USAGE);
                    }
                    fail(&format!("not enrolled: {failure}"))
                }
                Ok(other) => fail(&format!("unexpected answer from the daemon: {other:?}")),
            }
        }
        Command::Status { json } => {
            let config = match load_config(&cli.config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let status = match control::call(&config.agent.control_socket, &Request::Status).await {
                Ok(Response::Status(status)) => status,
                Ok(other) => return fail(&format!("unexpected answer from the daemon: {other:?}")),
                Err(control::ControlError::NotRunning { .. }) => offline_status(&config),
                Err(e) => return fail(&e.to_string()),
            };
            if json {
                println!(
                    "{:#}",
                    serde_json::to_value(&status).expect("status serialises")
                );
            } else {
                print_status(&status, &config);
            }
            ExitCode::SUCCESS
        }
        Command::Unenroll => {
            let config = match load_config(&cli.config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            match control::call(&config.agent.control_socket, &Request::Unenroll).await {
                Ok(Response::Unenrolled { was_enrolled: true }) => {
                    println!("Identity forgotten: the recorder needs a registration code to enroll again.");
                    ExitCode::SUCCESS
                }
                Ok(Response::Unenrolled {
                    was_enrolled: false,
                }) => {
                    println!("The recorder was not enrolled; nothing to forget.");
                    ExitCode::SUCCESS
                }
                Ok(Response::Failed(f)) => fail(&f.message),
                Ok(other) => fail(&format!("unexpected answer from the daemon: {other:?}")),
                Err(e) => fail(&e.to_string()),
            }
        }
    }
}

fn print_discovered(servers: &[crate::discovery::Found], recorders: &[crate::discovery::Found]) {
    let addrs = |f: &crate::discovery::Found| {
        f.addresses
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!("Provisioning servers ({}):", servers.len());
    for s in servers {
        println!(
            "  {}  {}  ({})",
            s.instance,
            s.server_endpoint().url,
            addrs(s)
        );
    }
    println!("Recorders ({}):", recorders.len());
    for r in recorders {
        let txt = |k: &str| r.txt.get(k).map(String::as_str).unwrap_or("?");
        // key=value, as the TXT record has them and the README shows them.
        println!(
            "  serial={} model={} version={} enrolled={}  ({})",
            txt("serial"),
            txt("model"),
            txt("version"),
            txt("enrolled"),
            addrs(r)
        );
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::FAILURE
}

/// Status read from the state file when the daemon is not running.
fn offline_status(config: &AgentConfig) -> Status {
    let state = StateFile::new(&config.agent.state_dir).peek();
    let enrollment = state.enrollment.as_ref();
    Status {
        enrolled: enrollment.is_some(),
        revoked: state.revoked.is_some() && enrollment.is_none(),
        recorder_id: enrollment
            .map(|e| e.recorder_id.clone())
            .or_else(|| state.revoked.as_ref().and_then(|r| r.recorder_id.clone())),
        account: enrollment.map(|e| e.account.clone()),
        server: config
            .server
            .url
            .clone()
            .or_else(|| state.enrollment.as_ref().map(|e| e.server_url.clone()))
            .unwrap_or_default(),
        last_heartbeat: None,
        certificate_expires: enrollment.map(|e| rfc3339(e.certificate_expires)),
        renew_at: enrollment.map(|e| rfc3339(e.renew_at)),
        last_error: None,
        last_failure: None,
        daemon_running: false,
        account_disabled: false,
    }
}

fn print_status(status: &Status, config: &AgentConfig) {
    if !status.daemon_running {
        println!(
            "The daemon is not running (start it with `systemctl start contera-agent`); from {}:",
            config.agent.state_dir.display()
        );
    }
    match (&status.account, status.revoked) {
        (Some(account), _) => {
            println!("Enrolled in \"{}\"", account.name);
            println!("  account id:          {}", account.id);
            println!("  recorder id:         {}", status.recorder_id.as_deref().unwrap_or("-"));
            println!("  server:              {}", status.server);
            println!("  last heartbeat:      {}", status.last_heartbeat.as_deref().unwrap_or("none yet"));
            println!("  certificate expires: {}", status.certificate_expires.as_deref().unwrap_or("-"));
            if status.account_disabled {
                println!("  account:             disabled by its administrator: ask them to enable it (heartbeats go on; renewal waits)");
            }
            if let Some(error) = &status.last_error {
                println!("  problem:             {error}");
            }
        }
        (None, true) => println!(
            "Revoked by the server: enter a new code with `contera-agent enroll --code XXXX-…`"
        ),
        (None, false) => println!(
            "Not enrolled: waiting for a registration code. Enter it with `contera-agent enroll --code XXXX-…`"
        ),
    }
}

/// Shows which account `code` enrolls into and asks to go on. `Err` carries the exit code
/// when the preview itself failed (the reason is printed).
async fn confirm_account(config: &AgentConfig, code: &str) -> Result<bool, ExitCode> {
    let request = Request::Preview {
        code: code.to_string(),
    };
    let (account, parent) = match control::call(&config.agent.control_socket, &request).await {
        Ok(Response::Preview {
            account_name,
            parent_name,
        }) => (account_name, parent_name),
        Ok(Response::Failed(failure)) => {
            if failure.kind == FailureKind::Typo {
                eprintln!("error: {failure}");
                return Err(ExitCode::from(EXIT_USAGE));
            }
            return Err(fail(&format!("not enrolled: {failure}")));
        }
        Ok(other) => {
            return Err(fail(&format!(
                "unexpected answer from the daemon: {other:?}"
            )))
        }
        Err(e) => return Err(fail(&e.to_string())),
    };
    let place = match parent {
        Some(parent) => format!("{} ({})", safe_text(&account), safe_text(&parent)),
        None => safe_text(&account),
    };
    print!("This recorder will join {place}. Continue? [y/N] ");
    let _ = std::io::Write::flush(&mut std::io::stdout());
    let mut answer = String::new();
    if std::io::stdin().read_line(&mut answer).is_err() {
        return Ok(false);
    }
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

/// Account names come from the server: no control characters reach the terminal.
fn safe_text(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect()
}
