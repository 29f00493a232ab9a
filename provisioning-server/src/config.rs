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
    /// Where the data lives: `sqlite://PATH` (the default is `contera.db` in `data_dir`)
    /// or `postgres://USER:PASSWORD@HOST/DB` for several server replicas on one database.
    #[serde(default)]
    pub database_url: Option<String>,
    /// Most database connections this process holds open at once.
    #[serde(default = "default_database_max_connections")]
    pub database_max_connections: u32,
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
    /// How often this server reads what changed elsewhere (the admin CLI, other replicas)
    /// about recorders and accounts, in milliseconds: heartbeats are answered from memory,
    /// so a revocation or an account disabled elsewhere holds here within this period.
    /// Changes made through this server hold at once.
    #[serde(default = "default_facts_refresh_millis")]
    pub facts_refresh_millis: u64,
    /// Requests (device and admin API) served at once; past it a request is answered 429
    /// with `Retry-After: overload_retry_after_secs` at once instead of queueing. Recorders
    /// keep their connection and obey the wait.
    #[serde(default = "default_max_requests_in_flight")]
    pub max_requests_in_flight: usize,
    /// The `Retry-After` of an overload answer, in seconds; recorders add jitter to it.
    #[serde(default = "default_overload_retry_after_secs")]
    pub overload_retry_after_secs: u64,
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
    /// Where invitation and password-reset mail goes: SMTP when `[mail.smtp]` is set,
    /// otherwise `.eml` files under `DATA/outbox/`.
    #[serde(default)]
    pub mail: MailSection,
    /// The admin API: sessions, login limits, and what accepting an invitation asks.
    #[serde(default)]
    pub admin: AdminSection,
    /// The web console's own HTTPS listener.
    #[serde(default)]
    pub console: ConsoleSection,
    /// Prometheus metrics on a plain-HTTP listener of their own.
    #[serde(default)]
    pub metrics: MetricsSection,
}

/// `GET /metrics` in the Prometheus (OpenMetrics) text format. Plain HTTP without
/// authentication, so it listens on loopback unless told otherwise: put it on an address
/// only the scraper reaches.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    /// Whether to serve metrics at all.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Where the metrics listener listens (port 0 picks a free port); printed at start.
    #[serde(default = "default_metrics_listen")]
    pub listen: SocketAddr,
}

impl Default for MetricsSection {
    fn default() -> Self {
        toml::from_str("").expect("an empty section gives the defaults")
    }
}

fn default_true() -> bool {
    true
}

fn default_metrics_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9464))
}

/// The web console (and the admin API beside it) on a listener of its own. The device
/// port asks TLS clients for an optional certificate, which makes browsers that hold any
/// client certificate ask their user to pick one; this listener never asks.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleSection {
    /// Where the console listens (port 0 picks a free port); printed at start.
    #[serde(default = "default_console_listen")]
    pub listen: SocketAddr,
    /// A certificate chain (PEM) browsers already trust, for the console only. Unset, the
    /// console uses the server certificate from `DATA/tls/`, which browsers trust only
    /// once `ca.pem` is installed.
    #[serde(default)]
    pub certificate_file: Option<PathBuf>,
    /// The private key (PEM) of `certificate_file`.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

impl Default for ConsoleSection {
    fn default() -> Self {
        toml::from_str("").expect("an empty section gives the defaults")
    }
}

fn default_console_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8444))
}

/// The admin API's sessions, login limits and acceptance terms.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    /// A session that makes no request for this long ends (idle timeout).
    #[serde(default = "default_session_idle_minutes")]
    pub session_idle_minutes: u32,
    /// A session ends this long after its login, however busy (absolute timeout).
    #[serde(default = "default_session_absolute_hours")]
    pub session_absolute_hours: u32,
    /// Failed logins for one email before it is refused (429) for the rest of the window.
    #[serde(default = "default_login_failures_per_email")]
    pub login_failures_per_email: u32,
    /// The window for `login_failures_per_email`, in minutes.
    #[serde(default = "default_login_failure_window_minutes")]
    pub login_failure_window_minutes: u32,
    /// Failed logins from one source address (an IPv6 /64 counts as one) per hour.
    #[serde(default = "default_login_failures_per_address_per_hour")]
    pub login_failures_per_address_per_hour: u32,
    /// The version of the terms of use a user accepts with their invitation; recorded
    /// with the time. Change it when the terms change.
    #[serde(default = "default_terms_version")]
    pub terms_version: String,
    /// Where the terms of use can be read; shown with the acceptance.
    #[serde(default = "default_terms_url")]
    pub terms_url: String,
    /// The age a user confirms they have reached when accepting.
    #[serde(default = "default_minimum_age")]
    pub minimum_age: u32,
}

impl Default for AdminSection {
    fn default() -> Self {
        toml::from_str("").expect("an empty section gives the defaults")
    }
}

fn default_session_idle_minutes() -> u32 {
    30
}
fn default_session_absolute_hours() -> u32 {
    12
}
fn default_login_failures_per_email() -> u32 {
    10
}
fn default_login_failure_window_minutes() -> u32 {
    15
}
fn default_login_failures_per_address_per_hour() -> u32 {
    100
}
fn default_terms_version() -> String {
    "1".to_owned()
}
fn default_terms_url() -> String {
    "https://contera.invalid/terms".to_owned()
}
fn default_minimum_age() -> u32 {
    18
}

/// Outgoing mail (invitations, password resets).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailSection {
    /// Base URL put in front of the links in mail, e.g. `https://prov.example.com`. Unset,
    /// it is derived from `[console] listen` (`https://127.0.0.1:8444`): the links open the
    /// console's pages. That only works on the server itself: set it to the console's URL
    /// as users reach it.
    #[serde(default)]
    pub public_base_url: Option<String>,
    /// The `From:` address of every message, with an optional display name.
    #[serde(default = "default_mail_from")]
    pub from: MailFrom,
    /// The SMTP relay. Absent, messages are written to `DATA/outbox/` and their links
    /// logged, so a new server works without one.
    #[serde(default)]
    pub smtp: Option<SmtpSection>,
}

/// The `From:` mailbox, kept as text so the default compares equal in tests and parsed by
/// `validate()` so a typo is reported at start rather than at the first invitation.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct MailFrom(pub String);

fn default_mail_from() -> MailFrom {
    MailFrom("Contera <contera@localhost>".into())
}

impl Default for MailFrom {
    fn default() -> Self {
        default_mail_from()
    }
}

/// How the SMTP connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain text: only for a relay on the same host (credentials and links travel in clear).
    None,
    /// Plain connection upgraded with STARTTLS, which is required (port 587).
    #[default]
    Starttls,
    /// TLS from the first byte ("SMTPS", port 465).
    Implicit,
}

impl SmtpTls {
    /// The usual port for the mode: 25, 587 or 465.
    pub fn default_port(self) -> u16 {
        match self {
            SmtpTls::None => 25,
            SmtpTls::Starttls => 587,
            SmtpTls::Implicit => 465,
        }
    }
}

/// The SMTP relay that delivers mail.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpSection {
    /// Host name (checked against the relay's certificate) or IP address of the relay.
    pub host: String,
    /// TCP port; unset, the usual one for `tls` (25, 587 or 465).
    #[serde(default)]
    pub port: Option<u16>,
    /// `none`, `starttls` or `implicit`.
    #[serde(default)]
    pub tls: SmtpTls,
    /// User name for SMTP AUTH; unset, no authentication.
    #[serde(default)]
    pub user: Option<String>,
    /// File holding the SMTP password (one line; surrounding whitespace is trimmed), read
    /// at start. Unset, the systemd credential `smtp-password` is used when present, so the
    /// secret need not sit in the config file or a world-readable path.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Seconds one delivery (connect, TLS, commands) may take before it fails.
    #[serde(default = "default_smtp_timeout_secs")]
    pub timeout_secs: u64,
    /// The password, filled by [`SmtpSection::read_password`], never by the TOML file.
    #[serde(skip)]
    pub password: Option<Password>,
}

fn default_smtp_timeout_secs() -> u64 {
    30
}

/// A secret whose `Debug` prints `***`, so logging a config never leaks it.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    pub fn new(secret: impl Into<String>) -> Self {
        Password(secret.into())
    }
    /// The secret itself, for the SMTP login only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// The systemd credential name (`LoadCredential=smtp-password:…`) read when no
/// `password_file` is set.
pub const SMTP_PASSWORD_CREDENTIAL: &str = "smtp-password";

impl SmtpSection {
    /// The port to connect to: the configured one or the usual one for the TLS mode.
    pub fn port(&self) -> u16 {
        self.port.unwrap_or_else(|| self.tls.default_port())
    }

    /// Reads the password from `password_file`, or else from `smtp-password` in the
    /// systemd credentials directory when the caller found one (the binary passes
    /// `$CREDENTIALS_DIRECTORY`; the library does not read the environment).
    pub fn read_password(&mut self, credentials_dir: Option<&Path>) -> Result<(), ConfigError> {
        let path = match (&self.password_file, credentials_dir) {
            (Some(path), _) => path.clone(),
            (None, Some(dir)) if dir.join(SMTP_PASSWORD_CREDENTIAL).exists() => {
                dir.join(SMTP_PASSWORD_CREDENTIAL)
            }
            // A user without a password would fail at the first invitation, far from here.
            _ if self.user.is_some() => {
                return Err(ConfigError::Invalid {
                    problems: vec![format!(
                        "mail.smtp.user is set but there is no password: set mail.smtp.password_file, or provide the systemd credential {SMTP_PASSWORD_CREDENTIAL} (LoadCredential=)"
                    )],
                })
            }
            _ => return Ok(()),
        };
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        self.password = Some(Password::new(text.trim()));
        Ok(())
    }
}

impl MailSection {
    /// The base of links in mail, without a trailing slash.
    pub fn public_base_url(&self, listen: SocketAddr) -> String {
        match &self.public_base_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => format!("https://{listen}"),
        }
    }

    fn problems(&self, problems: &mut Vec<String>) {
        if let Some(url) = &self.public_base_url {
            let rest = url
                .strip_prefix("https://")
                .or_else(|| url.strip_prefix("http://"));
            if rest.is_none_or(|host| host.is_empty() || host.contains(char::is_whitespace)) {
                problems.push(format!(
                    "mail.public_base_url = {url:?}: use an http:// or https:// URL such as \"https://prov.example.com\""
                ));
            }
        }
        if let Err(e) = self.from.0.parse::<lettre::message::Mailbox>() {
            problems.push(format!(
                "mail.from = {:?}: {e}; use an address such as \"Contera <contera@example.com>\"",
                self.from.0
            ));
        }
        if let Some(smtp) = &self.smtp {
            if smtp.host.trim().is_empty() {
                problems.push("mail.smtp.host is empty: name the SMTP relay".into());
            }
            if smtp.port == Some(0) {
                problems.push(
                    "mail.smtp.port = 0: use the relay's port, or remove it for the usual one"
                        .into(),
                );
            }
            if !(1..=600).contains(&smtp.timeout_secs) {
                problems.push(format!(
                    "mail.smtp.timeout_secs = {}: use a value from 1 to 600",
                    smtp.timeout_secs
                ));
            }
            if let Some(path) = &smtp.password_file {
                if let Err(e) = std::fs::File::open(path) {
                    problems.push(format!(
                        "mail.smtp.password_file = {:?}: cannot be read ({e}); fix the path or its permissions",
                        path.display().to_string()
                    ));
                }
                if smtp.user.is_none() {
                    problems.push(
                        "mail.smtp.password_file is set without mail.smtp.user: set the user name, or remove password_file".into(),
                    );
                }
            }
        }
    }

    /// Settings that work but are probably a mistake, for the log.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if let Some(smtp) = &self.smtp {
            if smtp.tls == SmtpTls::None && !is_loopback_host(&smtp.host) {
                warnings.push(format!(
                    "mail.smtp.tls = \"none\" with host {:?}: mail (with its links) and the SMTP password travel unencrypted; use \"starttls\" or \"implicit\" for a relay that is not on this host",
                    smtp.host
                ));
            }
        }
        warnings
    }
}

/// `localhost`, or an address of the loopback network.
fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
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
fn default_database_max_connections() -> u32 {
    8
}

fn default_max_requests_in_flight() -> usize {
    1024
}

fn default_overload_retry_after_secs() -> u64 {
    5
}

fn default_facts_refresh_millis() -> u64 {
    1000
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
        let admin = &self.admin;
        for (key, value) in [
            ("admin.session_idle_minutes", admin.session_idle_minutes),
            ("admin.session_absolute_hours", admin.session_absolute_hours),
            (
                "admin.login_failures_per_email",
                admin.login_failures_per_email,
            ),
            (
                "admin.login_failure_window_minutes",
                admin.login_failure_window_minutes,
            ),
            (
                "admin.login_failures_per_address_per_hour",
                admin.login_failures_per_address_per_hour,
            ),
        ] {
            if value == 0 {
                problems.push(format!("{key} = 0: use at least 1"));
            }
        }
        if self.console.certificate_file.is_some() != self.console.key_file.is_some() {
            problems.push(
                "console.certificate_file and console.key_file go together: set both, or neither to use the server certificate"
                    .into(),
            );
        }
        if admin.terms_version.trim().is_empty() {
            problems.push(
                "admin.terms_version is empty: give the version of the terms, e.g. \"1\"".into(),
            );
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
        if let Err(e) = self.database() {
            problems.push(e.to_string());
        }
        if self.max_requests_in_flight == 0 {
            problems.push("max_requests_in_flight = 0: use at least 1".into());
        }
        if !(1..=3600).contains(&self.overload_retry_after_secs) {
            problems.push(format!(
                "overload_retry_after_secs = {}: use a value from 1 to 3600",
                self.overload_retry_after_secs
            ));
        }
        if !(50..=60_000).contains(&self.facts_refresh_millis) {
            problems.push(format!(
                "facts_refresh_millis = {}: use a value from 50 to 60000",
                self.facts_refresh_millis
            ));
        }
        if !(1..=1024).contains(&self.database_max_connections) {
            problems.push(format!(
                "database_max_connections = {}: use a value from 1 to 1024",
                self.database_max_connections
            ));
        }
        self.mail.problems(&mut problems);
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

    /// Settings that work but are probably a mistake: the caller logs them.
    pub fn warnings(&self) -> Vec<String> {
        self.mail.warnings()
    }

    /// Where messages go without SMTP.
    pub fn outbox_dir(&self) -> PathBuf {
        self.data_dir.join("outbox")
    }

    /// The SQLite database file inside the data directory: the default database.
    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join("contera.db")
    }

    /// Which database `database_url` names, or the default SQLite file.
    pub fn database(&self) -> Result<crate::store::DatabaseUrl, crate::store::DatabaseUrlError> {
        match &self.database_url {
            None => Ok(crate::store::DatabaseUrl::Sqlite(self.database_path())),
            Some(url) => url.parse(),
        }
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

    fn with_mail(toml_text: &str) -> ServerConfig {
        ServerConfig::parse(toml_text, Path::new("x.toml")).unwrap()
    }

    #[test]
    fn mail_defaults_to_the_outbox_and_links_derived_from_the_console_listener() {
        let config = ServerConfig::default();
        assert!(config.mail.smtp.is_none());
        assert_eq!(config.mail.from.0, "Contera <contera@localhost>");
        assert_eq!(
            config.mail.public_base_url(config.console.listen),
            "https://127.0.0.1:8444"
        );
        assert!(config.warnings().is_empty());
    }

    #[test]
    fn smtp_port_defaults_by_tls_mode() {
        for (tls, port) in [("none", 25), ("starttls", 587), ("implicit", 465)] {
            let config = with_mail(&format!(
                "[mail.smtp]\nhost = \"127.0.0.1\"\ntls = \"{tls}\"\n"
            ));
            assert_eq!(config.mail.smtp.unwrap().port(), port, "{tls}");
        }
        let config = with_mail("[mail.smtp]\nhost = \"mail.example.com\"\n");
        let smtp = config.mail.smtp.unwrap();
        assert_eq!(smtp.tls, SmtpTls::Starttls);
        assert_eq!(smtp.port(), 587);
    }

    #[test]
    fn unknown_mail_key_is_named_in_the_error() {
        let err = ServerConfig::parse(
            "[mail.smtp]\nhost = \"h\"\npasword_file = \"/x\"\n",
            Path::new("x.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("pasword_file"), "{err}");
    }

    #[test]
    fn mail_validation_names_every_problem() {
        let config = with_mail(
            "[mail]\npublic_base_url = \"prov.example.com\"\nfrom = \"not an address\"\n\
             [mail.smtp]\nhost = \"\"\nport = 0\ntimeout_secs = 0\n\
             password_file = \"/nonexistent/contera-smtp-password\"\n",
        );
        let err = config.validate().unwrap_err().to_string();
        for key in [
            "mail.public_base_url",
            "mail.from",
            "mail.smtp.host",
            "mail.smtp.port",
            "mail.smtp.timeout_secs",
            "/nonexistent/contera-smtp-password",
            "without mail.smtp.user",
        ] {
            assert!(err.contains(key), "{key} missing from: {err}");
        }
    }

    #[test]
    fn plain_smtp_to_a_remote_host_warns_but_loopback_does_not() {
        let remote = with_mail("[mail.smtp]\nhost = \"mail.example.com\"\ntls = \"none\"\n");
        remote.validate().unwrap();
        let warnings = remote.warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("mail.smtp.tls"), "{warnings:?}");
        for host in ["localhost", "127.0.0.1", "::1", "[::1]"] {
            let local = with_mail(&format!("[mail.smtp]\nhost = \"{host}\"\ntls = \"none\"\n"));
            assert!(local.warnings().is_empty(), "{host}");
        }
    }

    #[test]
    fn smtp_password_is_read_from_its_file_and_hidden_in_debug() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "hunter2-secret\n").unwrap();
        let mut config = with_mail(&format!(
            "[mail.smtp]\nhost = \"h\"\nuser = \"u\"\npassword_file = {:?}\n",
            file.display().to_string()
        ));
        config.validate().unwrap();
        let smtp = config.mail.smtp.as_mut().unwrap();
        smtp.read_password(None).unwrap();
        assert_eq!(smtp.password.as_ref().unwrap().expose(), "hunter2-secret");
        let debug = format!("{config:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("***"), "{debug}");
    }

    #[test]
    fn smtp_password_falls_back_to_the_systemd_credential() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(SMTP_PASSWORD_CREDENTIAL), "from-credential").unwrap();
        let mut smtp = with_mail("[mail.smtp]\nhost = \"h\"\nuser = \"u\"\n")
            .mail
            .smtp
            .unwrap();
        smtp.read_password(Some(dir.path())).unwrap();
        assert_eq!(smtp.password.unwrap().expose(), "from-credential");
    }

    #[test]
    fn smtp_user_without_any_password_source_is_refused() {
        let mut smtp = with_mail("[mail.smtp]\nhost = \"h\"\nuser = \"u\"\n")
            .mail
            .smtp
            .unwrap();
        let empty = tempfile::tempdir().unwrap();
        let err = smtp
            .read_password(Some(empty.path()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("mail.smtp.user"), "{err}");
        assert!(err.contains(SMTP_PASSWORD_CREDENTIAL), "{err}");
        let mut anonymous = with_mail("[mail.smtp]\nhost = \"h\"\n").mail.smtp.unwrap();
        anonymous.read_password(None).unwrap();
        assert!(anonymous.password.is_none());
    }

    #[test]
    fn unreadable_password_file_is_an_error_naming_the_path() {
        let mut smtp = with_mail(
            "[mail.smtp]\nhost = \"h\"\nuser = \"u\"\npassword_file = \"/nonexistent/pw\"\n",
        )
        .mail
        .smtp
        .unwrap();
        let err = smtp.read_password(None).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/pw"), "{err}");
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
