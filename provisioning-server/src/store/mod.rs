//! Storage: the `Store` trait the domain modules use, and its SQLite implementation.
//! Timestamps are Unix seconds; ids are UUID strings, so a later PostgreSQL store can
//! share the schema.

mod sqlite;

use async_trait::async_trait;
use serde::Serialize;

pub use sqlite::SqliteStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{what} {id} does not exist")]
    NotFound { what: &'static str, id: String },
    #[error("{0}")]
    Conflict(String),
    #[error("the recorder's key was revoked")]
    Revoked,
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// What an account is for: partners hold sub-partners and customers; customers hold
/// recorders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AccountKind {
    Partner,
    Customer,
}

impl AccountKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountKind::Partner => "partner",
            AccountKind::Customer => "customer",
        }
    }

    fn parse(s: &str) -> AccountKind {
        if s == "partner" {
            AccountKind::Partner
        } else {
            AccountKind::Customer
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Account {
    pub id: String,
    pub name: String,
    pub kind: AccountKind,
    pub parent_id: Option<String>,
    /// The public id of the account's current registration code (the secret is never
    /// stored, so the whole code cannot be shown again).
    pub code_public_id: Option<String>,
    pub created_at: i64,
}

/// A registration code as stored: its public id and the SHA-256 of its secret.
#[derive(Debug, Clone)]
pub struct StoredCode {
    pub public_id: String,
    pub account_id: String,
    pub secret_hash: Vec<u8>,
    pub disabled: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Recorder {
    pub id: String,
    pub account_id: String,
    pub key_fingerprint: String,
    pub serial: String,
    pub mac: Option<String>,
    pub model: String,
    pub firmware: Option<String>,
    pub agent_version: Option<String>,
    pub replaces: Option<String>,
    pub enrolled_at: i64,
    pub cert_serial: Option<String>,
    pub cert_not_after: Option<i64>,
    pub last_seen: Option<i64>,
    /// Online while this is in the future: last heartbeat plus three intervals.
    pub online_until: Option<i64>,
    pub status: Option<String>,
    pub revoked_at: Option<i64>,
    /// `shutdown` when the agent said goodbye; None while online or after heartbeats
    /// simply stopped.
    pub offline_reason: Option<String>,
}

impl Recorder {
    pub fn online(&self, now: i64) -> bool {
        self.revoked_at.is_none() && self.online_until.is_some_and(|until| until > now)
    }
}

/// An enrollment to record. `new_id` is used only when the key is new.
#[derive(Debug, Clone)]
pub struct EnrollRecord {
    pub new_id: String,
    pub account_id: String,
    pub key_fingerprint: String,
    pub serial: String,
    pub mac: Option<String>,
    pub model: String,
    pub firmware: Option<String>,
    pub agent_version: String,
    pub code_public_id: String,
    pub now: i64,
}

/// What an enrollment did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnrollKind {
    /// A key never seen before.
    New { replaces: Option<String> },
    /// The same key into the same account again.
    Again,
    /// The same key with another account's code.
    Moved { from_account: String },
}

#[derive(Debug, Clone)]
pub struct EnrollOutcome {
    pub recorder: Recorder,
    pub kind: EnrollKind,
}

/// A coalesced heartbeat to write.
#[derive(Debug, Clone, PartialEq)]
pub struct Presence {
    pub recorder_id: String,
    pub last_seen: i64,
    pub online_until: i64,
    /// Written only when it changed since the last write.
    pub status: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AuditEntry {
    pub id: i64,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub account_id: Option<String>,
    pub recorder_id: Option<String>,
    pub detail: String,
}

/// A certificate just issued, to record against its recorder.
#[derive(Debug, Clone)]
pub struct CertificateRecord<'a> {
    pub recorder_id: &'a str,
    /// The key the certificate is for; replaces the recorder's key when it was renewed
    /// with a new one.
    pub key_fingerprint: &'a str,
    pub cert_serial: &'a str,
    pub not_after: i64,
    pub actor: Actor<'a>,
    /// The audit action: `certificate.issued`, `certificate.renewed`, …
    pub action: &'a str,
    pub now: i64,
}

/// Who did something, for the audit log: `cli`, `code:K7QD`, `recorder:<id>`.
pub type Actor<'a> = &'a str;

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Creates an account and its first registration code in one transaction.
    async fn create_account(
        &self,
        account: &Account,
        code_public_id: &str,
        code_secret_hash: &[u8],
        actor: Actor<'_>,
    ) -> Result<(), StoreError>;
    async fn account(&self, id: &str) -> Result<Option<Account>, StoreError>;
    async fn accounts(&self) -> Result<Vec<Account>, StoreError>;
    /// Disables the account's current codes and adds a new one, atomically.
    async fn rotate_code(
        &self,
        account_id: &str,
        code_public_id: &str,
        code_secret_hash: &[u8],
        now: i64,
        actor: Actor<'_>,
    ) -> Result<(), StoreError>;
    async fn code(&self, public_id: &str) -> Result<Option<StoredCode>, StoreError>;
    /// Enrolls by key: new key → new recorder (flagged as a replacement when its serial is
    /// taken), known key → same recorder, moved when the account differs. Race-free for
    /// concurrent enrollments of one key. Refuses revoked keys.
    async fn enroll(&self, record: &EnrollRecord) -> Result<EnrollOutcome, StoreError>;
    /// Records the certificate just issued to a recorder (and its key, which may be new).
    async fn set_certificate(&self, issued: &CertificateRecord<'_>) -> Result<(), StoreError>;
    async fn recorder(&self, id: &str) -> Result<Option<Recorder>, StoreError>;
    async fn recorders(&self, account_id: Option<&str>) -> Result<Vec<Recorder>, StoreError>;
    /// Marks a recorder revoked; returns false when it already was.
    async fn revoke_recorder(
        &self,
        id: &str,
        now: i64,
        actor: Actor<'_>,
    ) -> Result<bool, StoreError>;
    /// Writes a batch of coalesced heartbeats in one transaction.
    async fn record_presence(&self, batch: &[Presence]) -> Result<(), StoreError>;
    /// A clean shutdown: offline from now, with the reason kept apart from a missed
    /// heartbeat.
    async fn record_goodbye(&self, id: &str, now: i64, reason: &str) -> Result<(), StoreError>;
    async fn audit_log(&self, limit: i64) -> Result<Vec<AuditEntry>, StoreError>;
}
