//! Server configuration: built-in defaults, an optional TOML file, then command-line flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Everything `serve` needs. Every field has a default, so no file is required.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Holds the SQLite database and `tls/`. Created on first start.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Address and port the HTTPS API listens on.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Extra DNS names or IP addresses to put in the server certificate, besides the
    /// listen address, `localhost`, 127.0.0.1 and ::1 (e.g. the host name recorders use).
    #[serde(default)]
    pub server_names: Vec<String>,
    /// How often recorders send a heartbeat, in seconds. A recorder is offline once three
    /// intervals pass without one.
    #[serde(default = "default_heartbeat_interval_secs")]
    pub heartbeat_interval_secs: u32,
    /// Lifetime of recorder certificates, in days.
    #[serde(default = "default_certificate_lifetime_days")]
    pub certificate_lifetime_days: u32,
    /// Overrides `certificate_lifetime_days` with seconds; for labs and tests.
    #[serde(default)]
    pub certificate_lifetime_secs: Option<u64>,
    /// Days after expiry during which a recorder may still renew with its expired
    /// certificate (proving it holds its enrolled key). Later it needs a code again.
    #[serde(default = "default_expired_renewal_grace_days")]
    pub expired_renewal_grace_days: u32,
    /// Enrollment attempts allowed per client address and minute (IPv6 counted per /64),
    /// as a burst that refills evenly over the minute. Counted before the body is parsed,
    /// so malformed requests count too. Over it, the answer is 429 with `Retry-After`.
    #[serde(default = "default_enroll_attempts_per_minute")]
    pub enroll_attempts_per_minute: u32,
    /// Enrollment attempts allowed per registration code (keyed by the code's public id,
    /// whatever the secret) and minute, from all addresses together: guessing one code's
    /// secret from many addresses is held to this.
    #[serde(default = "default_enroll_attempts_per_code_per_minute")]
    pub enroll_attempts_per_code_per_minute: u32,
    /// Enrollment attempts per minute for the whole server, from everyone: each one costs a
    /// signature, so a storm is answered 429 quickly instead of queueing into timeouts.
    #[serde(default = "default_enroll_attempts_total_per_minute")]
    pub enroll_attempts_total_per_minute: u32,
    /// Failed enrollment attempts (wrong or unknown codes) are written to the audit log as
    /// one row per code public id and period of this many seconds, not one per attempt.
    #[serde(default = "default_failed_attempts_audit_secs")]
    pub failed_attempts_audit_secs: u64,
    /// How often coalesced heartbeat times are written to the database, in milliseconds.
    #[serde(default = "default_presence_flush_millis")]
    pub presence_flush_millis: u64,
    /// Connections served at once; more wait to be accepted. Each recorder keeps one.
    /// Lowered at start (with a log line) to what the open-file limit allows after a
    /// reserve for the database and files.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Connections one client address may hold open at once (IPv6 counted per /64).
    /// Recorders of one site behind one NAT share an address: raise it for sites with
    /// more recorders than this.
    #[serde(default = "default_max_connections_per_address")]
    pub max_connections_per_address: usize,
    /// Seconds a new connection has to complete its TLS handshake.
    #[serde(default = "default_tls_handshake_timeout_secs")]
    pub tls_handshake_timeout_secs: u64,
    /// Seconds from the end of the TLS handshake to the first complete request head
    /// (covers protocol detection, HTTP/1 headers and the HTTP/2 preface).
    #[serde(default = "default_first_request_timeout_secs")]
    pub first_request_timeout_secs: u64,
    /// Seconds a connection may stay without a request in progress before it is closed
    /// (HTTP/1 keep-alive and HTTP/2 alike, PINGs do not count). Must exceed the heartbeat
    /// interval plus its jitter, so recorders keep their connection between heartbeats.
    #[serde(default = "default_idle_timeout_secs")]
    pub idle_timeout_secs: u64,
    /// Seconds one request may take from its head to its answer, body included: past it
    /// the connection is closed, so a client that trickles its body frees its slot.
    #[serde(default = "default_request_timeout_secs")]
    pub request_timeout_secs: u64,
    /// Requests one HTTP/2 connection may have in flight at once. A recorder sends one.
    #[serde(default = "default_http2_max_concurrent_streams")]
    pub http2_max_concurrent_streams: u32,
    #[serde(default)]
    pub mdns: MdnsSection,
}

/// mDNS announcement of this server on the local network.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MdnsSection {
    /// Announce `_contera-prov._tcp.local.` so agents without a configured URL find this
    /// server (they still verify its TLS certificate).
    #[serde(default)]
    pub advertise: bool,
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("/var/lib/contera-provisioning")
}
fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8443))
}
fn default_heartbeat_interval_secs() -> u32 {
    30
}
fn default_certificate_lifetime_days() -> u32 {
    90
}
fn default_expired_renewal_grace_days() -> u32 {
    365
}
fn default_enroll_attempts_per_minute() -> u32 {
    60
}
fn default_enroll_attempts_per_code_per_minute() -> u32 {
    120
}
fn default_enroll_attempts_total_per_minute() -> u32 {
    30_000
}
fn default_failed_attempts_audit_secs() -> u64 {
    60
}
fn default_max_connections() -> usize {
    20_000
}
fn default_max_connections_per_address() -> usize {
    256
}
fn default_tls_handshake_timeout_secs() -> u64 {
    10
}
fn default_first_request_timeout_secs() -> u64 {
    10
}
fn default_idle_timeout_secs() -> u64 {
    90
}
fn default_request_timeout_secs() -> u64 {
    30
}
fn default_http2_max_concurrent_streams() -> u32 {
    32
}
fn default_presence_flush_millis() -> u64 {
    1000
}

impl Default for ServerConfig {
    fn default() -> Self {
        toml::from_str("").expect("an empty file gives the defaults")
    }
}

/// A configuration that cannot be used, with where and why.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid configuration:\n  {}", .problems.join("\n  "))]
    Invalid { problems: Vec<String> },
}

impl ServerConfig {
    /// Reads a TOML file; unknown keys are errors that name the key.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }

    /// Reports every problem at once, each with the key and what to do.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        if !(1..=3600).contains(&self.heartbeat_interval_secs) {
            problems.push(format!(
                "heartbeat_interval_secs = {}: use a value from 1 to 3600",
                self.heartbeat_interval_secs
            ));
        }
        if !(1..=3650).contains(&self.certificate_lifetime_days) {
            problems.push(format!(
                "certificate_lifetime_days = {}: use a value from 1 to 3650",
                self.certificate_lifetime_days
            ));
        }
        if let Some(secs) = self.certificate_lifetime_secs {
            if !(1..=3650 * 86_400).contains(&secs) {
                problems.push(format!(
                    "certificate_lifetime_secs = {secs}: use a value from 1 to 315360000, or remove it"
                ));
            }
        }
        if self.expired_renewal_grace_days > 3650 {
            problems.push(format!(
                "expired_renewal_grace_days = {}: use a value from 0 to 3650",
                self.expired_renewal_grace_days
            ));
        }
        for (key, value) in [
            (
                "enroll_attempts_per_minute",
                self.enroll_attempts_per_minute,
            ),
            (
                "enroll_attempts_per_code_per_minute",
                self.enroll_attempts_per_code_per_minute,
            ),
            (
                "enroll_attempts_total_per_minute",
                self.enroll_attempts_total_per_minute,
            ),
        ] {
            if value == 0 {
                problems.push(format!("{key} = 0: use at least 1"));
            }
        }
        if !(1..=3600).contains(&self.failed_attempts_audit_secs) {
            problems.push(format!(
                "failed_attempts_audit_secs = {}: use a value from 1 to 3600",
                self.failed_attempts_audit_secs
            ));
        }
        if self.max_connections_per_address == 0 {
            problems.push("max_connections_per_address = 0: use at least 1".into());
        }
        for (key, value) in [
            (
                "tls_handshake_timeout_secs",
                self.tls_handshake_timeout_secs,
            ),
            (
                "first_request_timeout_secs",
                self.first_request_timeout_secs,
            ),
        ] {
            if !(1..=300).contains(&value) {
                problems.push(format!("{key} = {value}: use a value from 1 to 300"));
            }
        }
        // A recorder beats every interval plus up to 10 % jitter; its connection must
        // outlive that with room for a slow request.
        let min_idle = u64::from(self.heartbeat_interval_secs) * 11 / 10 + 5;
        if self.idle_timeout_secs < min_idle || self.idle_timeout_secs > 86_400 {
            problems.push(format!(
                "idle_timeout_secs = {}: use a value from {min_idle} (heartbeat_interval_secs = {} plus jitter and 5 s) to 86400",
                self.idle_timeout_secs, self.heartbeat_interval_secs
            ));
        }
        if !(1..=1000).contains(&self.http2_max_concurrent_streams) {
            problems.push(format!(
                "http2_max_concurrent_streams = {}: use a value from 1 to 1000",
                self.http2_max_concurrent_streams
            ));
        }
        if !(10..=60_000).contains(&self.presence_flush_millis) {
            problems.push(format!(
                "presence_flush_millis = {}: use a value from 10 to 60000",
                self.presence_flush_millis
            ));
        }
        if self.max_connections == 0 {
            problems.push("max_connections = 0: use at least 1".into());
        }
        if self.data_dir.as_os_str().is_empty() {
            problems.push("data_dir is empty: name a directory the server may write".into());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid { problems })
        }
    }

    /// The lifetime of recorder certificates.
    pub fn certificate_lifetime(&self) -> time::Duration {
        match self.certificate_lifetime_secs {
            Some(secs) => time::Duration::seconds(secs as i64),
            None => time::Duration::days(self.certificate_lifetime_days.into()),
        }
    }

    /// The SQLite database file inside the data directory.
    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join("contera.db")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_working_defaults() {
        let config = ServerConfig::default();
        config.validate().unwrap();
        assert_eq!(config.heartbeat_interval_secs, 30);
        assert_eq!(config.certificate_lifetime_days, 90);
    }

    #[test]
    fn unknown_key_is_named_in_the_error() {
        let err = ServerConfig::parse("heartbeat_intervall_secs = 3\n", Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("heartbeat_intervall_secs"), "{err}");
    }

    #[test]
    fn validate_lists_every_problem() {
        let config = ServerConfig {
            heartbeat_interval_secs: 0,
            certificate_lifetime_days: 0,
            ..ServerConfig::default()
        };
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("heartbeat_interval_secs"), "{err}");
        assert!(err.contains("certificate_lifetime_days"), "{err}");
    }

    #[test]
    fn idle_timeout_shorter_than_a_heartbeat_is_refused_naming_both_keys() {
        let config = ServerConfig {
            heartbeat_interval_secs: 60,
            idle_timeout_secs: 60,
            ..ServerConfig::default()
        };
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("idle_timeout_secs = 60"), "{err}");
        assert!(err.contains("heartbeat_interval_secs = 60"), "{err}");
        let config = ServerConfig {
            heartbeat_interval_secs: 60,
            idle_timeout_secs: 71,
            ..ServerConfig::default()
        };
        config.validate().unwrap();
    }
}

/// The shipped, commented default configuration (`print-default-config`).
pub const DEFAULT_CONFIG_TOML: &str = include_str!("../../config/provisioning.toml");

#[cfg(test)]
mod shipped {
    use super::*;

    #[test]
    fn shipped_config_is_exactly_the_defaults() {
        let shipped =
            ServerConfig::parse(DEFAULT_CONFIG_TOML, Path::new("config/provisioning.toml"))
                .unwrap();
        shipped.validate().unwrap();
        let defaults = ServerConfig::default();
        assert_eq!(format!("{shipped:?}"), format!("{defaults:?}"));
    }
}
