//! Protocol v1 messages, served under [`API_PREFIX`].

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Every v1 path starts with this.
pub const API_PREFIX: &str = "/api/v1";
/// `POST`: a registration code and a CSR in, a recorder certificate out.
pub const ENROLL_PATH: &str = "/api/v1/enroll";
/// `POST`, mutual TLS: the recorder is alive; the answer carries instructions.
pub const HEARTBEAT_PATH: &str = "/api/v1/heartbeat";
/// `POST`: a registration code in, the name of the account it enrolls into out, so the
/// installer can confirm before anything is committed. Rate-limited like enroll.
pub const ENROLL_PREVIEW_PATH: &str = "/api/v1/enroll/preview";
/// `POST`, mutual TLS: a fresh CSR in, a new certificate out.
pub const RENEW_PATH: &str = "/api/v1/renew";
/// `POST`, mutual TLS: the agent is stopping cleanly; show the recorder offline now.
pub const GOODBYE_PATH: &str = "/api/v1/goodbye";
/// `GET`: 200 while the server serves.
pub const HEALTH_PATH: &str = "/healthz";

/// The largest request body the server reads; larger ones get 413.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// `POST /api/v1/enroll`. `Debug` hides the registration code.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollRequest {
    /// As typed; the server normalises it the same way the agent does.
    pub registration_code: String,
    /// PKCS#10 request signed with the recorder's own key; only its public key is used.
    pub csr_pem: String,
    pub hardware: Hardware,
    pub agent_version: String,
}

impl std::fmt::Debug for EnrollRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrollRequest")
            .field("registration_code", &"***")
            .field("csr_pem", &self.csr_pem)
            .field("hardware", &self.hardware)
            .field("agent_version", &self.agent_version)
            .finish()
    }
}

/// `POST /api/v1/enroll/preview`. `Debug` hides the registration code.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollPreviewRequest {
    /// As typed, like [`EnrollRequest::registration_code`].
    pub registration_code: String,
}

impl std::fmt::Debug for EnrollPreviewRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrollPreviewRequest")
            .field("registration_code", &"***")
            .finish()
    }
}

/// The account a valid code enrolls into, by name only (and its parent's name, which is
/// how installers know it: "Store 12 (Acme Integrators)"). Nothing else is disclosed:
/// the code's holder may enroll there anyway, and learns no ids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollPreviewResponse {
    pub account_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_name: Option<String>,
}

/// What the recorder says it is. Informational: the recorder's identity is its key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hardware {
    pub serial: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware: Option<String>,
}

/// An account as a recorder sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountRef {
    pub id: String,
    pub name: String,
}

/// Answer to a successful enrollment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollResponse {
    /// Stable for the life of the key: the same key enrolling again gets the same id.
    pub recorder_id: String,
    pub account: AccountRef,
    /// The recorder's client certificate (PEM), to present with mutual TLS.
    pub certificate_pem: String,
    /// The device CA that issued it (PEM), so the recorder can check what it got.
    pub ca_chain_pem: String,
    pub heartbeat_interval_secs: u32,
    #[serde(with = "time::serde::rfc3339")]
    pub server_time: OffsetDateTime,
}

/// `POST /api/v1/heartbeat`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeartbeatRequest {
    pub status: RecorderStatus,
}

/// What the recorder reports about itself. Known fields are typed; anything else an NVR
/// reports travels in `extra` and is stored as is.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RecorderStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware: Option<String>,
    /// Operating system, as `PRETTY_NAME` in os-release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    /// Use of the recording volumes named in the agent's config.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<DiskUsage>,
    /// Whatever the NVR's own status file or command reported (JSON, size-capped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nvr: Option<serde_json::Value>,
    /// Why `nvr` is missing when a source is configured (unreadable, not JSON, too big).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nvr_error: Option<String>,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// Space on one recording volume, in bytes; or why it could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskUsage {
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Answer to a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatResponse {
    /// The interval the server wants from now on.
    pub heartbeat_interval_secs: u32,
    /// The account the recorder belongs to now (it may have been moved).
    pub account: AccountRef,
    #[serde(default)]
    pub instructions: Vec<Instruction>,
    #[serde(with = "time::serde::rfc3339")]
    pub server_time: OffsetDateTime,
}

/// Something the server asks the recorder to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Instruction {
    /// Renew the certificate now (it is close to expiry, or the CA changed).
    Renew,
    /// The recorder's account (or an account above it) is disabled by its administrator:
    /// keep heartbeating at the interval, so that enabling it is noticed, but do not renew
    /// (renewal is refused meanwhile), and tell whoever looks at the recorder. Agents that
    /// predate it read it as [`Instruction::Unknown`] and carry on as before.
    AccountDisabled,
    /// An instruction from a newer server; the agent ignores it.
    #[serde(other)]
    Unknown,
}

/// `POST /api/v1/renew`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenewRequest {
    pub csr_pem: String,
}

/// Answer to a renewal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenewResponse {
    pub certificate_pem: String,
    pub ca_chain_pem: String,
}

/// `POST /api/v1/goodbye`: sent by an agent that stops cleanly, so the recorder shows
/// offline at once and the server can tell a shutdown from a missed heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GoodbyeRequest {
    /// Why: `shutdown` (SIGTERM), `unenroll`, … Free text for the record.
    pub reason: String,
}

/// mDNS service type a provisioning server announces (RFC 6763 limits the name to 15
/// characters). TXT: `tls_name` (the name its certificate carries), `path`, `version`.
pub const SERVER_SERVICE_TYPE: &str = "_contera-prov._tcp.local.";
/// mDNS service type a recorder's agent announces. TXT: `serial`, `model`, `version`,
/// `enrolled` (`yes`/`no`); never the account or any secret.
pub const RECORDER_SERVICE_TYPE: &str = "_contera-nvr._tcp.local.";
