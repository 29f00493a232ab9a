//! Logging: to the journal when stderr is connected to it (under systemd), to stderr
//! otherwise. `RUST_LOG` overrides the configured level.

use log::LevelFilter;

use crate::config::LogTarget;

pub const SYSLOG_IDENTIFIER: &str = "contera-agent";

/// Installs the logger. When the journal was asked for but its socket is missing, logs
/// go to stderr (systemd-journal-logger fails without a listener there).
pub fn init(configured_level: &str, target: LogTarget) {
    let level = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.parse::<LevelFilter>().ok())
        .or_else(|| configured_level.parse().ok())
        .unwrap_or(LevelFilter::Info);
    let journal = match target {
        LogTarget::Journal => true,
        LogTarget::Stderr => false,
        LogTarget::Auto => systemd_journal_logger::connected_to_journal(),
    };
    if journal {
        if let Ok(journal) = systemd_journal_logger::JournalLog::new() {
            if journal
                .with_syslog_identifier(SYSLOG_IDENTIFIER.to_string())
                .install()
                .is_ok()
            {
                log::set_max_level(level);
                return;
            }
        }
    }
    let _ = env_logger::Builder::new()
        .filter_level(level)
        .format_target(false)
        .try_init();
}
