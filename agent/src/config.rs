//! Agent configuration (TOML): strict keys, defaults from named functions, and a
//! `validate` pass that reports every problem with its key and the fix.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Where the packaged agent reads its configuration.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/contera/agent.toml";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    #[serde(default)]
    pub server: ServerSection,
    #[serde(default)]
    pub agent: AgentSection,
    #[serde(default)]
    pub recorder: RecorderSection,
    #[serde(default)]
    pub enrollment: EnrollmentSection,
    #[serde(default)]
    pub discovery: DiscoverySection,
}

/// mDNS on the site LAN. Off unless turned on.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoverySection {
    /// Announce this recorder (`_contera-nvr._tcp`) and, without `[server] url`, look for
    /// provisioning servers (`_contera-prov._tcp`).
    #[serde(default)]
    pub enabled: bool,
    /// How long one search for servers listens, in seconds.
    #[serde(default = "default_browse_secs")]
    pub browse_secs: u64,
}

fn default_browse_secs() -> u64 {
    5
}

impl Default for DiscoverySection {
    fn default() -> Self {
        DiscoverySection {
            enabled: false,
            browse_secs: default_browse_secs(),
        }
    }
}

/// Zero-touch enrollment for mass-deployed images. A systemd credential named
/// `registration-code` (`LoadCredential=`) is used first, then `code_file`, then `code`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollmentSection {
    /// A file holding the code; deleted once the code was used.
    #[serde(default)]
    pub code_file: Option<PathBuf>,
    /// The code itself. Prefer `code_file` or a credential: this one stays in the config.
    #[serde(default)]
    pub code: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// Base URL of the provisioning server, e.g. `https://provisioning.example:8443`.
    /// Leave it out to find the server by mDNS (`[discovery] enabled = true`).
    #[serde(default)]
    pub url: Option<String>,
    /// Extra CA certificate (PEM) to trust for the server, besides the system roots: the
    /// server's `tls/ca.pem` when it uses its own CA.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Seconds to wait for a TCP connection to the server.
    #[serde(default = "default_connect_timeout_secs")]
    pub connect_timeout_secs: u64,
    /// Seconds a whole request may take.
    #[serde(default = "default_request_timeout_secs")]
    pub request_timeout_secs: u64,
    /// HTTP(S) proxy for reaching the server, e.g. `http://proxy.site:3128`. A systemd
    /// service does not see a shell's `HTTPS_PROXY`, so it can be set here; when unset the
    /// `HTTPS_PROXY`/`NO_PROXY` environment is honoured.
    #[serde(default)]
    pub proxy: Option<String>,
    /// Hosts that bypass `proxy`, comma-separated, as in `NO_PROXY`.
    #[serde(default)]
    pub no_proxy: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSection {
    /// Holds the recorder's private key (`key.pem`, 0600) and its state (`state.json`).
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Unix socket the `enroll`, `status` and `unenroll` commands talk to the daemon on.
    #[serde(default = "default_control_socket")]
    pub control_socket: PathBuf,
    /// Longest wait between retries while the server is unreachable, in seconds.
    #[serde(default = "default_max_backoff_secs")]
    pub max_backoff_secs: u64,
    /// Log level (error, warn, info, debug, trace); `RUST_LOG` overrides it.
    #[serde(default = "default_log_level")]
    pub log_level: String,
    /// Where logs go: `auto` (the journal when systemd connected stderr to it, else
    /// stderr), `journal` or `stderr`.
    #[serde(default)]
    pub log_target: LogTarget,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogTarget {
    #[default]
    Auto,
    Journal,
    Stderr,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecorderSection {
    /// The recorder's serial number; empty means read it from the machine
    /// (DMI product serial, else the machine id).
    #[serde(default)]
    pub serial: Option<String>,
    /// The recorder's model; empty means the DMI product name, else "unknown".
    #[serde(default)]
    pub model: Option<String>,
    /// MAC address to report; empty means the first non-loopback interface's.
    #[serde(default)]
    pub mac: Option<String>,
    /// Firmware version to report.
    #[serde(default)]
    pub firmware: Option<String>,
    /// Recording volumes whose size and free space go into every heartbeat.
    #[serde(default)]
    pub volumes: Vec<PathBuf>,
    /// A JSON file the NVR firmware keeps up to date; forwarded in the heartbeat.
    #[serde(default)]
    pub status_file: Option<PathBuf>,
    /// Or a command (program and arguments) that prints the NVR's status as JSON.
    #[serde(default)]
    pub status_command: Option<Vec<String>>,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            url: None,
            ca_file: None,
            connect_timeout_secs: default_connect_timeout_secs(),
            request_timeout_secs: default_request_timeout_secs(),
            proxy: None,
            no_proxy: None,
        }
    }
}

fn default_connect_timeout_secs() -> u64 {
    10
}
fn default_request_timeout_secs() -> u64 {
    30
}
fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/contera-agent")
}
fn default_control_socket() -> PathBuf {
    PathBuf::from("/run/contera-agent/control.sock")
}
fn default_max_backoff_secs() -> u64 {
    900
}
fn default_log_level() -> String {
    "info".to_string()
}

impl Default for AgentSection {
    fn default() -> Self {
        AgentSection {
            state_dir: default_state_dir(),
            control_socket: default_control_socket(),
            max_backoff_secs: default_max_backoff_secs(),
            log_level: default_log_level(),
            log_target: LogTarget::Auto,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path} does not exist: name another with --config PATH, or write the default one with `contera-agent print-default-config > {path}`")]
    Missing { path: PathBuf },
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config file {path} has problems:\n  {}", .problems.join("\n  "))]
    Invalid {
        path: PathBuf,
        problems: Vec<String>,
    },
}

impl AgentConfig {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                ConfigError::Missing {
                    path: path.to_owned(),
                }
            } else {
                ConfigError::Read {
                    path: path.to_owned(),
                    source,
                }
            }
        })?;
        let config = Self::parse(&text, path)?;
        config.validate(path)?;
        Ok(config)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }

    /// Checks every value; the error lists all problems, each with its key.
    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        match self.server.url.as_deref().map(|u| (u, reqwest::Url::parse(u))) {
            None if !self.discovery.enabled => problems.push(
                "[server] url is missing: set it to https://HOST:PORT, or set [discovery] enabled = true to find the server by mDNS".into(),
            ),
            None => {}
            Some((raw, Err(e))) => problems.push(format!(
                "[server] url = {raw:?} is not a valid URL ({e}): use https://HOST:PORT"
            )),
            Some((raw, Ok(url))) if url.scheme() != "https" => problems.push(format!(
                "[server] url = {raw:?} must start with https:// (the agent only talks TLS)"
            )),
            Some((raw, Ok(url))) if url.host_str().is_none() => problems.push(format!(
                "[server] url = {raw:?} has no host: use https://HOST:PORT"
            )),
            Some(_) => {}
        }
        if !(1..=60).contains(&self.discovery.browse_secs) {
            problems.push("[discovery] browse_secs must be from 1 to 60".into());
        }
        if let Some(proxy) = &self.server.proxy {
            match reqwest::Url::parse(proxy) {
                Ok(url) if matches!(url.scheme(), "http" | "https") && url.host_str().is_some() => {
                }
                _ => problems.push(format!(
                    "[server] proxy = {proxy:?} is not a proxy URL: use http://HOST:PORT"
                )),
            }
        }
        if let Some(ca) = &self.server.ca_file {
            if ca.as_os_str().is_empty() {
                problems
                    .push("[server] ca_file is empty: remove the key or name a PEM file".into());
            } else if let Err(e) = std::fs::File::open(ca) {
                problems.push(format!(
                    "[server] ca_file = {ca:?} cannot be read ({e}): copy the server's tls/ca.pem there, readable by the agent"
                ));
            }
        }
        if !(1..=300).contains(&self.server.connect_timeout_secs) {
            problems.push("[server] connect_timeout_secs must be from 1 to 300".into());
        }
        if !(1..=600).contains(&self.server.request_timeout_secs) {
            problems.push("[server] request_timeout_secs must be from 1 to 600".into());
        }
        if !self.agent.state_dir.is_absolute() {
            problems.push(format!(
                "[agent] state_dir = {:?} must be an absolute path",
                self.agent.state_dir
            ));
        }
        if !self.agent.control_socket.is_absolute() {
            problems.push(format!(
                "[agent] control_socket = {:?} must be an absolute path",
                self.agent.control_socket
            ));
        }
        if !(1..=86_400).contains(&self.agent.max_backoff_secs) {
            problems.push(format!(
                "[agent] max_backoff_secs = {} must be from 1 to 86400",
                self.agent.max_backoff_secs
            ));
        }
        if self.agent.log_level.parse::<log::LevelFilter>().is_err() {
            problems.push(format!(
                "[agent] log_level = {:?}: use one of off, error, warn, info, debug, trace",
                self.agent.log_level
            ));
        }
        if self.recorder.status_file.is_some() && self.recorder.status_command.is_some() {
            problems
                .push("[recorder] status_file and status_command are both set: keep one".into());
        }
        if let Some(cmd) = &self.recorder.status_command {
            if cmd.is_empty() || cmd[0].is_empty() {
                problems.push("[recorder] status_command is empty: give the program and its arguments, e.g. [\"/usr/bin/nvr-status\", \"--json\"]".into());
            }
        }
        if let Some(code) = &self.enrollment.code {
            if let Err(e) = code.parse::<contera_protocol::RegistrationCode>() {
                problems.push(format!("[enrollment] code: {e}"));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid {
                path: path.to_owned(),
                problems,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<AgentConfig, ConfigError> {
        let config = AgentConfig::parse(text, Path::new("agent.toml"))?;
        config.validate(Path::new("agent.toml"))?;
        Ok(config)
    }

    #[test]
    fn minimal_config_needs_only_the_server_url() {
        let config = parse("[server]\nurl = \"https://127.0.0.1:8443\"\n").unwrap();
        assert_eq!(
            config.agent.state_dir,
            PathBuf::from("/var/lib/contera-agent")
        );
        assert_eq!(config.agent.max_backoff_secs, 900);
    }

    #[test]
    fn unknown_key_is_named() {
        let err = parse("[server]\nurl = \"https://h\"\nca_fiel = \"/x\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("ca_fiel"), "{err}");
    }

    #[test]
    fn bad_url_is_named_with_the_fix() {
        let err = parse("[server]\nurl = \"not a url\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("[server] url"), "{err}");
        assert!(err.contains("https://HOST:PORT"), "{err}");
        let err = parse("[server]\nurl = \"http://h:1\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("https://"), "{err}");
    }

    #[test]
    fn an_unreadable_ca_file_is_a_config_error() {
        let err = parse("[server]\nurl = \"https://h:1\"\nca_file = \"/nonexistent/ca.pem\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("[server] ca_file") && err.contains("cannot be read"),
            "{err}"
        );
    }

    #[test]
    fn a_config_without_url_needs_discovery() {
        let err = parse("[agent]\nlog_level = \"info\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("[server] url is missing"), "{err}");
        parse("[discovery]\nenabled = true\n").unwrap();
    }

    #[test]
    fn a_missing_config_file_says_how_to_get_one() {
        let err = AgentConfig::load(Path::new("/nonexistent/agent.toml"))
            .unwrap_err()
            .to_string();
        for needle in [
            "/nonexistent/agent.toml",
            "--config",
            "print-default-config",
        ] {
            assert!(err.contains(needle), "{needle} missing from {err}");
        }
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let err = parse(
            "[server]\nurl = \"ftp://x\"\n[agent]\nstate_dir = \"rel\"\nmax_backoff_secs = 0\nlog_level = \"loud\"\n",
        )
        .unwrap_err()
        .to_string();
        for key in ["[server] url", "state_dir", "max_backoff_secs", "log_level"] {
            assert!(err.contains(key), "{key} missing from {err}");
        }
    }
}
