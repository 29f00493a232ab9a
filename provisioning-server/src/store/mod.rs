//! Storage: the `Store` trait the domain modules use, and its SQLite implementation.
//! Timestamps are Unix seconds; ids are UUID strings, so a later PostgreSQL store can
//! share the schema.

mod postgres;
mod sqlite;

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// The database a server or the admin CLI works on, from `database_url`.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// One file, embedded: the default, for one server process (and the CLI beside it).
    Sqlite(PathBuf),
    /// A PostgreSQL server, shared by any number of server replicas. Kept whole, password
    /// included: show it with [`DatabaseUrl::redacted`] only.
    Postgres(String),
}

#[derive(Debug, thiserror::Error)]
pub enum DatabaseUrlError {
    #[error("database_url = {0:?}: use sqlite://PATH (e.g. sqlite:///var/lib/contera-provisioning/contera.db) or postgres://USER:PASSWORD@HOST:PORT/DATABASE")]
    Scheme(String),
    #[error("database_url = \"sqlite://\" names no file: use sqlite:///absolute/path/contera.db")]
    EmptyPath,
}

impl std::str::FromStr for DatabaseUrl {
    type Err = DatabaseUrlError;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        if let Some(path) = url.strip_prefix("sqlite://") {
            let path = path.split('?').next().unwrap_or_default();
            if path.is_empty() {
                return Err(DatabaseUrlError::EmptyPath);
            }
            Ok(DatabaseUrl::Sqlite(PathBuf::from(path)))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(DatabaseUrl::Postgres(url.to_string()))
        } else {
            // Only the scheme is echoed: the rest may hold a password.
            let scheme = url.split("://").next().unwrap_or_default();
            Err(DatabaseUrlError::Scheme(format!("{scheme}://…")))
        }
    }
}

impl DatabaseUrl {
    /// The URL with any password replaced, for logs and error messages.
    pub fn redacted(&self) -> String {
        match self {
            DatabaseUrl::Sqlite(path) => format!("sqlite://{}", path.display()),
            DatabaseUrl::Postgres(url) => redact_password(url),
        }
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// `scheme://user:secret@host/db` → `scheme://user:***@host/db`.
fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "***".into();
    };
    let (authority, tail) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    // Query parameters may carry `password=` too: drop the query whole.
    let tail = tail.split('?').next().unwrap_or_default();
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{host}{tail}")
        }
        None => format!("{scheme}://{authority}{tail}"),
    }
}

/// Opens the database `url` names and brings its schema up to date.
pub async fn open(url: &DatabaseUrl, max_connections: u32) -> Result<Arc<dyn Store>, StoreError> {
    match url {
        DatabaseUrl::Sqlite(path) => Ok(Arc::new(SqliteStore::open(path).await?)),
        DatabaseUrl::Postgres(full) => Ok(Arc::new(
            PostgresStore::open(full, &url.redacted(), max_connections).await?,
        )),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{what} {id} does not exist")]
    NotFound { what: &'static str, id: String },
    #[error("{0}")]
    Conflict(String),
    #[error("the recorder's key was revoked")]
    Revoked,
    /// The certificate given to [`Store::enroll`] was signed for an id the key no longer
    /// maps to: a concurrent enrollment of the same key won the race (`recorder_id` is
    /// Some: sign for that id), or the key is new but the id it was signed for now holds
    /// another key (None: sign for a fresh id). Nothing was written; sign again and retry.
    #[error("the key's recorder changed during enrollment; retry")]
    EnrollmentRaced { recorder_id: Option<String> },
    /// The code was disabled, expired or used up by the time the enrollment committed
    /// (a concurrent enrollment took its last use): nothing was written. Answered exactly
    /// like an unknown code.
    #[error("the registration code is disabled, expired or used up")]
    CodeRefused,
    /// The change would leave the account without an active user holding both
    /// `users.manage` and `groups.manage`: nobody could add users or repair groups.
    /// Nothing was written.
    #[error("account {account_id} would have no active administrator left")]
    LastAdministrator { account_id: String },
    /// The invitation is unknown, already used, replaced by a newer one, or expired at the
    /// moment of accepting. Nothing was written.
    #[error("the invitation is not valid any more")]
    InvitationRefused,
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// What an account is for: partners hold sub-partners and customers; customers hold
/// recorders.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Serialize,
    serde::Deserialize,
    clap::ValueEnum,
    utoipa::ToSchema,
)]
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Account {
    pub id: String,
    pub name: String,
    pub kind: AccountKind,
    pub parent_id: Option<String>,
    /// The public id of the account's newest active registration code (`codes list` shows
    /// all of them).
    pub code_public_id: Option<String>,
    pub created_at: i64,
    /// Postal address, free text (may span lines); empty when not given.
    pub address: String,
    /// Who to call about the account (name, phone, e-mail), free text.
    pub contact: Option<String>,
    /// When an admin disabled this account itself (not an ancestor); None while enabled.
    pub disabled_at: Option<i64>,
    /// The audit actor who disabled it.
    pub disabled_by: Option<String>,
    /// The nearest account, this one or an ancestor, that is disabled: computed when read,
    /// so disabling a partner disables its whole subtree and enabling it restores it.
    /// Ignored when creating an account.
    pub disabled_via: Option<String>,
}

impl Account {
    /// Whether enrollments into this account are refused and its recorders are told so:
    /// it or an ancestor is disabled.
    pub fn effectively_disabled(&self) -> bool {
        self.disabled_via.is_some()
    }
}

/// The fields [`Store::update_account`] changes; `None` leaves one as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountUpdate {
    pub name: Option<String>,
    pub address: Option<String>,
    /// `Some(None)` clears the contact.
    pub contact: Option<Option<String>>,
}

/// A registration code as stored: its public id and the SHA-256 of its secret.
#[derive(Debug, Clone)]
pub struct StoredCode {
    pub public_id: String,
    pub account_id: String,
    pub secret_hash: Vec<u8>,
    pub disabled: bool,
    /// Unix seconds after which the code no longer enrolls.
    pub expires_at: Option<i64>,
    /// How many enrollments the code allows in all.
    pub max_uses: Option<i64>,
    /// Successful enrollments with the code so far.
    pub uses: i64,
}

/// A registration code to store: its hash for enrollment, and the whole code sealed under
/// the code key (see [`crate::secrets`]) so it can be shown again.
#[derive(Debug, Clone)]
pub struct NewCode {
    pub public_id: String,
    pub secret_hash: Vec<u8>,
    pub sealed: crate::secrets::SealedCode,
    pub label: String,
    pub expires_at: Option<i64>,
    pub max_uses: Option<i64>,
    /// The actor that created it.
    pub created_by: String,
    pub created_at: i64,
}

/// A registration code for listing: everything but the hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeInfo {
    pub public_id: String,
    pub account_id: String,
    pub label: String,
    pub created_at: i64,
    /// Empty for codes created before who created them was kept.
    pub created_by: String,
    pub expires_at: Option<i64>,
    pub max_uses: Option<i64>,
    pub uses: i64,
    pub disabled_at: Option<i64>,
    pub last_used_at: Option<i64>,
    pub last_used_recorder: Option<String>,
    /// None for codes created before codes were kept sealed: only their hash exists.
    pub sealed: Option<crate::secrets::SealedCode>,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
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
    /// What people call it, set in the admin API (migration 0007); None: no name.
    pub name: Option<String>,
    /// When an admin confirmed that it replaces the recorder in `replaces` (which that
    /// revoked); None while the flag is unconfirmed or there is none.
    pub replacement_confirmed_at: Option<i64>,
}

impl Recorder {
    pub fn online(&self, now: i64) -> bool {
        self.revoked_at.is_none() && self.online_until.is_some_and(|until| until > now)
    }
}

/// What [`Store::recorder_page`] lists: the recorders of some accounts (a subtree the
/// caller computed from the account tree), filtered, in id order, one page at a time.
#[derive(Debug, Clone, Default)]
pub struct RecorderQuery {
    pub accounts: Vec<String>,
    /// Only recorders online (true) or not (false) at `now`, as [`Recorder::online`].
    pub online: Option<bool>,
    /// Only revoked recorders (true) or only those not revoked (false).
    pub revoked: Option<bool>,
    /// Only recorders whose name, serial, model or MAC contains this, ignoring the case of
    /// ASCII letters.
    pub text: Option<String>,
    pub now: i64,
    /// Only recorders with an id after this one (the last id of the previous page).
    pub after_id: Option<String>,
    pub limit: i64,
}

/// An enrollment to record, with the certificate already issued for it, so that the
/// recorder row, its certificate and the audit rows are committed together or not at all.
#[derive(Debug, Clone)]
pub struct EnrollRecord {
    /// The id the certificate was signed for (its CN): the id of the recorder that holds
    /// the key when it was looked up before signing, or a fresh UUID for a new key.
    pub recorder_id: String,
    pub account_id: String,
    pub key_fingerprint: String,
    pub serial: String,
    pub mac: Option<String>,
    pub model: String,
    pub firmware: Option<String>,
    pub agent_version: String,
    pub code_public_id: String,
    /// Hex serial of the certificate issued for `recorder_id`.
    pub cert_serial: String,
    /// When that certificate expires (Unix seconds).
    pub cert_not_after: i64,
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
    /// The status payload without its clock-driven fields: written only when it changed
    /// since the last write.
    pub status: Option<String>,
    /// The status's clock-driven field, kept apart so that an uptime that grows at every
    /// heartbeat does not rewrite the payload: written at every flush, with `last_seen`.
    pub uptime_secs: Option<i64>,
}

/// Something a heartbeat answer depends on changed: a recorder (revoked, moved, new key,
/// removed) or an account (renamed, disabled or enabled, which covers its subtree).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FactChange {
    Recorder(String),
    Account(String),
}

/// The changes since a time, and the database's own clock when they were read, so that
/// servers with skewed clocks agree on where to continue.
#[derive(Debug, Clone, Default)]
pub struct FactChanges {
    pub changes: Vec<FactChange>,
    pub now_ms: i64,
}

/// Recorders of the whole server by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecorderTotals {
    pub online: i64,
    /// Not revoked and not online.
    pub offline: i64,
    pub revoked: i64,
}

/// How busy the store's connection pool is.
#[derive(Debug, Clone, Copy, Default)]
pub struct PoolUse {
    pub size: u32,
    pub idle: u32,
    pub max: u32,
}

/// Puts the clock-driven field back into a stored status payload (a JSON object) when
/// one was reported, so readers see the payload as the recorder sent it.
pub fn merge_uptime(status: Option<String>, uptime_secs: Option<i64>) -> Option<String> {
    let Some(uptime) = uptime_secs else {
        return status;
    };
    let mut object = match status
        .as_deref()
        .map(serde_json::from_str::<serde_json::Value>)
    {
        Some(Ok(serde_json::Value::Object(map))) => map,
        Some(_) => return status,
        None => serde_json::Map::new(),
    };
    object.insert("uptime_secs".into(), uptime.into());
    Some(serde_json::Value::Object(object).to_string())
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub id: i64,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub account_id: Option<String>,
    pub recorder_id: Option<String>,
    pub detail: String,
    /// The address the action came from; None for the CLI and the server itself.
    pub source: Option<String>,
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

/// The name of the group every account is created with, holding every permission.
pub const ADMINISTRATORS_GROUP: &str = "Administrators";

/// Where a user is in their life cycle: invited (no password yet), active, or disabled
/// (cannot log in; kept for the audit trail and to be enabled again).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum UserStatus {
    Invited,
    Active,
    Disabled,
}

impl UserStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            UserStatus::Invited => "invited",
            UserStatus::Active => "active",
            UserStatus::Disabled => "disabled",
        }
    }

    fn parse(s: &str) -> UserStatus {
        match s {
            "active" => UserStatus::Active,
            "disabled" => UserStatus::Disabled,
            _ => UserStatus::Invited,
        }
    }
}

/// A person who can (once active) log in to their account. The password hash is not part
/// of it, so a `User` can be listed and serialized without leaking it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct User {
    pub id: String,
    pub account_id: String,
    pub email: String,
    pub name: String,
    pub status: UserStatus,
    pub created_at: i64,
    pub created_by: String,
    pub terms_version: Option<String>,
    pub terms_accepted_at: Option<i64>,
    pub age_confirmed_at: Option<i64>,
    /// Names of the groups the user is in, sorted.
    pub groups: Vec<String>,
}

/// A named set of permissions inside one account.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Group {
    pub id: String,
    pub account_id: String,
    pub name: String,
    pub created_at: i64,
    pub permissions: crate::permissions::PermissionSet,
    /// How many users are in it (any status).
    pub members: i64,
}

/// An invitation as stored: only the token's SHA-256 is kept.
#[derive(Debug, Clone, PartialEq)]
pub struct Invitation {
    pub token_hash: Vec<u8>,
    pub user_id: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub used_at: Option<i64>,
    pub replaced_at: Option<i64>,
}

/// What accepting an invitation writes.
#[derive(Debug, Clone)]
pub struct Acceptance<'a> {
    pub token_hash: &'a [u8],
    pub password_hash: &'a str,
    pub terms_version: &'a str,
    pub now: i64,
}

/// Who did something, for the audit log: `cli`, `code:K7QD`, `recorder:<id>`, `server`,
/// `user:<id>`; optionally followed by `@` and the source address (see [`actor_from`]),
/// which the store keeps in the audit row's own `source` column.
pub type Actor<'a> = &'a str;

/// The actor for `who` acting from `source`: `user:<id>@192.0.2.7`. Every store write
/// takes one actor string, so the address travels with it without another parameter on
/// every method; [`split_actor`] takes it apart again when the audit row is written.
pub fn actor_from(who: &str, source: std::net::IpAddr) -> String {
    format!("{who}@{source}")
}

/// Splits an actor into who and the source address, if it carries one.
pub fn split_actor(actor: &str) -> (&str, Option<&str>) {
    match actor.rsplit_once('@') {
        Some((who, source)) if source.parse::<std::net::IpAddr>().is_ok() => (who, Some(source)),
        _ => (actor, None),
    }
}

/// A browser session as stored: only the cookie's SHA-256 is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub token_hash: Vec<u8>,
    pub user_id: String,
    pub created_at: i64,
    /// The last request made with it (written at most once a minute).
    pub last_seen_at: i64,
    /// The absolute end, whatever the activity.
    pub expires_at: i64,
    pub source: Option<String>,
}

/// A bearer token for scripts. Only its SHA-256 is kept; the token is shown once.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ApiToken {
    pub id: String,
    #[serde(skip)]
    pub token_hash: Vec<u8>,
    pub user_id: String,
    pub name: String,
    /// What the token may do: a subset of its user's permissions when it was made, and at
    /// each use no more than the user still holds.
    pub permissions: crate::permissions::PermissionSet,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

/// A "forgot password" link as stored; the same rules as [`Invitation`].
pub type PasswordReset = Invitation;

/// What the admin API's lists of recorders and audit entries filter by. The subtree is
/// given as the account ids in it, computed by the caller from the account tree.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Only entries about these accounts (None: all).
    pub accounts: Option<Vec<String>>,
    pub actor: Option<String>,
    pub action: Option<String>,
    pub since: Option<i64>,
    pub until: Option<i64>,
    /// Only entries with an id below this one (the cursor of the previous page).
    pub before_id: Option<i64>,
    pub limit: i64,
    /// Only entries about this recorder.
    pub recorder_id: Option<String>,
}

/// An audit entry the server writes on its own account (not as part of a change it
/// records), e.g. failed enrollments per code counted over a period and written as one
/// row, so that a flood of bad attempts cannot grow the log by one row per request.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAuditEntry {
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub account_id: Option<String>,
    pub recorder_id: Option<String>,
    /// Free-form details; stored as JSON text.
    pub detail: serde_json::Value,
}

/// The audit action written when recorder rows left without a certificate are removed.
pub const INCOMPLETE_REMOVED_ACTION: &str = "recorder.incomplete_removed";

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Creates an account and its first registration code in one transaction.
    async fn create_account(
        &self,
        account: &Account,
        code: &NewCode,
        actor: Actor<'_>,
    ) -> Result<(), StoreError>;
    async fn account(&self, id: &str) -> Result<Option<Account>, StoreError>;
    async fn accounts(&self) -> Result<Vec<Account>, StoreError>;
    /// Disables the account's current codes and adds a new one, atomically.
    async fn rotate_code(
        &self,
        account_id: &str,
        code: &NewCode,
        now: i64,
        actor: Actor<'_>,
    ) -> Result<(), StoreError>;
    async fn code(&self, public_id: &str) -> Result<Option<StoredCode>, StoreError>;
    /// Enrolls by key, in one transaction with the certificate already issued for
    /// `record.recorder_id`: the recorder row, its certificate and the audit rows
    /// (`recorder.enrolled`/`moved`/`re_enrolled` and `certificate.issued`) are all
    /// committed or none is, so a crash never leaves a recorder without a certificate.
    ///
    /// New key → new recorder with id `record.recorder_id`, flagged as a possible
    /// replacement when its serial is enrolled and not revoked (in the same account
    /// preferably, else in another one; the old row is never changed). Known key → same
    /// recorder, moved when the account differs. Refuses revoked keys
    /// ([`StoreError::Revoked`]). When the key turns out to belong to another id than the
    /// certificate was signed for (a concurrent enrollment won), nothing is written and
    /// [`StoreError::EnrollmentRaced`] says which id to sign for instead.
    ///
    /// Every successful enrollment counts as a use of `record.code_public_id` (uses + 1,
    /// last used at and by which recorder), in the same transaction; a code disabled,
    /// expired or at its maximum uses by then refuses it ([`StoreError::CodeRefused`]) and
    /// nothing is written, so a use limit holds under concurrent enrollments.
    async fn enroll(&self, record: &EnrollRecord) -> Result<EnrollOutcome, StoreError>;
    /// The recorder that holds this key, if any (revoked or not).
    async fn recorder_by_key(&self, key_fingerprint: &str) -> Result<Option<Recorder>, StoreError>;
    /// Records a certificate issued to an existing recorder on renewal (and its key, which
    /// may be new).
    async fn set_certificate(&self, issued: &CertificateRecord<'_>) -> Result<(), StoreError>;
    /// Deletes recorder rows that have no certificate and are not revoked, which only an
    /// enrollment interrupted between its two transactions (before enrollment became one
    /// transaction) can leave; a client that then made a new key would leave them forever.
    /// Clears `replaces` pointers to them and writes one audit row naming them
    /// ([`INCOMPLETE_REMOVED_ACTION`]), all in one transaction. Call at start, before
    /// serving. Returns how many rows were removed.
    async fn remove_incomplete_enrollments(&self, now: i64) -> Result<usize, StoreError>;
    /// Appends audit entries written by the server itself, all in one transaction.
    async fn append_audit(&self, entries: &[NewAuditEntry]) -> Result<(), StoreError>;
    async fn recorder(&self, id: &str) -> Result<Option<Recorder>, StoreError>;
    async fn recorders(&self, account_id: Option<&str>) -> Result<Vec<Recorder>, StoreError>;
    /// Marks a recorder revoked; returns false when it already was.
    async fn revoke_recorder(
        &self,
        id: &str,
        now: i64,
        actor: Actor<'_>,
    ) -> Result<bool, StoreError>;
    /// Writes a batch of coalesced heartbeats in ONE statement whatever its size (rows
    /// sorted by id, so concurrent flushes of replicas take row locks in one order):
    /// last seen, online until and uptime always; the status only where it is `Some`.
    /// A revoked recorder stays offline, and a goodbye newer than the heartbeat stands.
    async fn record_presence(&self, batch: &[Presence]) -> Result<(), StoreError>;
    /// Changes to heartbeat facts recorded after `since_ms` (database clock, Unix ms).
    async fn fact_changes_since(&self, since_ms: i64) -> Result<FactChanges, StoreError>;
    /// Forgets fact changes recorded before `before_ms`; returns how many.
    async fn prune_fact_changes(&self, before_ms: i64) -> Result<u64, StoreError>;
    /// How many connections the pool holds and how many of them are idle.
    fn pool_use(&self) -> PoolUse;
    /// Recorders of the whole server by state at `now`, in one query.
    async fn recorder_totals(&self, now: i64) -> Result<RecorderTotals, StoreError>;
    /// A clean shutdown: offline from now, with the reason kept apart from a missed
    /// heartbeat.
    async fn record_goodbye(&self, id: &str, now: i64, reason: &str) -> Result<(), StoreError>;
    async fn audit_log(&self, limit: i64) -> Result<Vec<AuditEntry>, StoreError>;

    // Registration codes, several per account (migration 0003).
    /// Adds a code to an existing account ([`StoreError::NotFound`] otherwise), audited as
    /// `code.created` without the code itself.
    async fn create_code(
        &self,
        account_id: &str,
        code: &NewCode,
        actor: Actor<'_>,
    ) -> Result<(), StoreError>;
    /// The account's codes, newest first.
    async fn codes(&self, account_id: &str) -> Result<Vec<CodeInfo>, StoreError>;
    /// One code by its public id, with its sealed form.
    async fn code_info(&self, public_id: &str) -> Result<Option<CodeInfo>, StoreError>;
    /// Disables one code; returns false when it already was. Audited as `code.disabled`.
    async fn disable_code(
        &self,
        public_id: &str,
        now: i64,
        actor: Actor<'_>,
    ) -> Result<bool, StoreError>;
    /// Whether any code is stored sealed, so that a missing code key is an error rather
    /// than a new key that could open none of them.
    async fn sealed_codes_exist(&self) -> Result<bool, StoreError>;

    // Account details and disabling (migration 0004).

    /// Changes the given fields and audits `account.updated` with the fields that really
    /// changed (old and new), in one transaction. Returns the account as stored now, and
    /// writes nothing (no audit row either) when no field changes.
    async fn update_account(
        &self,
        id: &str,
        update: &AccountUpdate,
        now: i64,
        actor: Actor<'_>,
    ) -> Result<Account, StoreError>;
    /// Sets or clears the account's own `disabled_at`/`disabled_by` and audits
    /// `account.disabled`/`account.enabled`; returns false (and writes nothing) when it
    /// already was in that state.
    async fn set_account_disabled(
        &self,
        id: &str,
        disabled: bool,
        now: i64,
        actor: Actor<'_>,
    ) -> Result<bool, StoreError>;

    // Users, groups and invitations (migration 0005). Every write is one transaction with
    // its audit row; audit details never hold a password, a password hash or a token.

    /// Inserts an invited user into `group_id` with their first invitation; audits
    /// `user.invited`. A taken email (in any case) is a `Conflict`.
    async fn create_invited_user(
        &self,
        user: &User,
        group_id: &str,
        invitation: &Invitation,
        actor: Actor<'_>,
    ) -> Result<(), StoreError>;
    async fn user(&self, id: &str) -> Result<Option<User>, StoreError>;
    /// Looks the email up case-insensitively.
    async fn user_by_email(&self, email: &str) -> Result<Option<User>, StoreError>;
    async fn users(&self, account_id: Option<&str>) -> Result<Vec<User>, StoreError>;
    /// Marks the user's open invitations replaced and stores `invitation`; audits
    /// `invitation.resent`.
    async fn replace_invitation(
        &self,
        invitation: &Invitation,
        actor: Actor<'_>,
    ) -> Result<(), StoreError>;
    async fn invitation(&self, token_hash: &[u8]) -> Result<Option<Invitation>, StoreError>;
    /// Uses the invitation (refused with `InvitationRefused` unless it is unused, not
    /// replaced and not expired at `now`), makes its user active with the password and the
    /// terms and age confirmations; audits `invitation.accepted` as `user:<id>`.
    async fn accept_invitation(&self, acceptance: &Acceptance<'_>) -> Result<User, StoreError>;
    /// Sets an active user disabled or a disabled user active; returns false when the user
    /// was not in the other state (invited users are left alone). Refused with
    /// `LastAdministrator` when it would leave the account without one.
    async fn set_user_disabled(
        &self,
        user_id: &str,
        disabled: bool,
        now: i64,
        actor: Actor<'_>,
    ) -> Result<bool, StoreError>;
    async fn groups(&self, account_id: &str) -> Result<Vec<Group>, StoreError>;
    /// Inserts the group and its permissions; audits `group.created`. A taken name in the
    /// account is a `Conflict`.
    async fn create_group(&self, group: &Group, actor: Actor<'_>) -> Result<(), StoreError>;
    /// Replaces the group's permissions; audits `group.permissions_set`. Refused with
    /// `LastAdministrator` when it would leave the account without one.
    async fn set_group_permissions(
        &self,
        group_id: &str,
        permissions: &crate::permissions::PermissionSet,
        now: i64,
        actor: Actor<'_>,
    ) -> Result<(), StoreError>;

    // Sessions, API tokens and password resets (migration 0006).

    /// The user with this email (case-insensitively) and their password hash, for login.
    async fn login_record(&self, email: &str)
        -> Result<Option<(User, Option<String>)>, StoreError>;
    /// Stores a new session; audits `session.login`.
    async fn create_session(&self, session: &Session, actor: Actor<'_>) -> Result<(), StoreError>;
    async fn session(&self, token_hash: &[u8]) -> Result<Option<Session>, StoreError>;
    /// Moves the session's `last_seen_at` forward (idle timeout).
    async fn touch_session(&self, token_hash: &[u8], now: i64) -> Result<(), StoreError>;
    /// Deletes the session; audits `session.logout` when it existed.
    async fn end_session(
        &self,
        token_hash: &[u8],
        now: i64,
        actor: Actor<'_>,
    ) -> Result<bool, StoreError>;
    /// Stores a new API token; audits `token.created` (without the token).
    async fn create_api_token(&self, token: &ApiToken, actor: Actor<'_>) -> Result<(), StoreError>;
    async fn api_token_by_hash(&self, token_hash: &[u8]) -> Result<Option<ApiToken>, StoreError>;
    async fn api_token(&self, id: &str) -> Result<Option<ApiToken>, StoreError>;
    /// The user's tokens, newest first, revoked ones included.
    async fn api_tokens(&self, user_id: &str) -> Result<Vec<ApiToken>, StoreError>;
    /// Revokes a token; false when it already was. Audits `token.revoked`.
    async fn revoke_api_token(
        &self,
        id: &str,
        now: i64,
        actor: Actor<'_>,
    ) -> Result<bool, StoreError>;
    async fn touch_api_token(&self, id: &str, now: i64) -> Result<(), StoreError>;
    /// Replaces the user's open reset links with this one; audits `password.reset_requested`.
    async fn create_password_reset(
        &self,
        reset: &PasswordReset,
        actor: Actor<'_>,
    ) -> Result<(), StoreError>;
    async fn password_reset(&self, token_hash: &[u8]) -> Result<Option<PasswordReset>, StoreError>;
    /// Uses the reset link (refused with `InvitationRefused` unless unused, not replaced,
    /// not expired and its user active), sets the password, and ends every session and
    /// token of the user, in one transaction; audits `password.reset`.
    async fn reset_password(
        &self,
        token_hash: &[u8],
        password_hash: &str,
        now: i64,
        actor_source: Option<&str>,
    ) -> Result<User, StoreError>;
    /// Sets an active user's password and ends every session and token they hold, in one
    /// transaction; audits `password.changed`. False when the user is not active.
    async fn change_password(
        &self,
        user_id: &str,
        password_hash: &str,
        now: i64,
        actor: Actor<'_>,
    ) -> Result<bool, StoreError>;
    /// The stored password hash of a user, if they have one.
    async fn password_hash(&self, user_id: &str) -> Result<Option<String>, StoreError>;
    /// Audit entries matching the filter, newest first.
    async fn audit_entries(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>, StoreError>;

    // Admin: recorders (migration 0007). Every write is one transaction with its audit
    // row(s), and refuses with `NotFound` an unknown recorder and with `Conflict`, saying
    // why and what to do, a change that does not apply.

    /// One page of recorders matching the query, in id order.
    async fn recorder_page(&self, query: &RecorderQuery) -> Result<Vec<Recorder>, StoreError>;
    /// Sets (Some) or clears (None) the recorder's name; audits `recorder.renamed` with the
    /// old and new names. Writes nothing when the name stays the same. Returns the recorder
    /// as stored now.
    async fn rename_recorder(
        &self,
        id: &str,
        name: Option<&str>,
        now: i64,
        actor: Actor<'_>,
    ) -> Result<Recorder, StoreError>;
    /// Moves a recorder from `from_account`, where the caller found it, to `to_account`;
    /// audits `recorder.moved` with both (as an enrollment's move does). Refused when the
    /// recorder is revoked or no longer in `from_account`, when it is in `to_account`
    /// already, and when `to_account` or an account above it is disabled; `NotFound` when
    /// `to_account` does not exist. It keeps its key and certificate.
    async fn move_recorder(
        &self,
        id: &str,
        from_account: &str,
        to_account: &str,
        now: i64,
        actor: Actor<'_>,
    ) -> Result<Recorder, StoreError>;
    /// Confirms that the recorder replaces `replaces`, the recorder it was flagged as a
    /// possible replacement of (and the caller checked): revokes that one unless it already
    /// is (audited `recorder.revoked`) and sets `replacement_confirmed_at`, audited
    /// `recorder.replacement_confirmed`. Refused when the recorder is revoked, not flagged
    /// as replacing `replaces`, or confirmed already. Returns the recorder as stored now.
    async fn confirm_replacement(
        &self,
        id: &str,
        replaces: &str,
        now: i64,
        actor: Actor<'_>,
    ) -> Result<Recorder, StoreError>;
    // Admin: accounts and codes.

    /// Creates an account as [`Store::create_account`] does (its first code and its
    /// Administrators group) and its first user, invited into that Administrators group
    /// with `invitation` (as [`Store::create_invited_user`]), all in one transaction:
    /// audits `account.created` and `user.invited`. A taken email is a `Conflict` and
    /// nothing is written; so is a taken code id (mint another and retry).
    async fn create_account_with_first_user(
        &self,
        account: &Account,
        code: &NewCode,
        user: &User,
        invitation: &Invitation,
        actor: Actor<'_>,
    ) -> Result<(), StoreError>;
    /// Changes a code's label and limits as given, audited as `code.updated` with the old
    /// and new value of each field that really changed, in one transaction; writes nothing
    /// when none does. Returns the code as stored now; `NotFound` for an unknown code.
    async fn update_code(
        &self,
        public_id: &str,
        update: &crate::accounts::CodeUpdate,
        now: i64,
        actor: Actor<'_>,
    ) -> Result<CodeInfo, StoreError>;
    /// Per account that has any: its recorders that are not revoked, and how many of them
    /// are online at `now`.
    async fn recorder_counts(
        &self,
        now: i64,
    ) -> Result<Vec<crate::accounts::RecorderCounts>, StoreError>;
    // Admin API: users and groups. Every write is one transaction with its audit row.

    /// One group by id, with its permissions and member count.
    async fn group(&self, id: &str) -> Result<Option<Group>, StoreError>;
    /// Renames the user; audits `user.updated` with the old and the new name. Returns the
    /// user as stored now, and writes nothing (no audit row either) when the name is the
    /// same. `NotFound` for an unknown user.
    async fn update_user(
        &self,
        user_id: &str,
        name: &str,
        now: i64,
        actor: Actor<'_>,
    ) -> Result<User, StoreError>;
    /// Replaces the user's groups with `group_ids` (at least one, every one a group of the
    /// user's account: `NotFound` otherwise); audits `user.groups_set` with the old and the
    /// new group ids. Refused with `LastAdministrator` when it would leave the account
    /// without an active user holding `users.manage` and `groups.manage`. Returns the user
    /// as stored now.
    async fn set_user_groups(
        &self,
        user_id: &str,
        group_ids: &[String],
        now: i64,
        actor: Actor<'_>,
    ) -> Result<User, StoreError>;
    /// Deletes a group and its permissions; audits `group.deleted`. A group that still has
    /// members, and the account's Administrators group, are refused with `Conflict`.
    async fn delete_group(
        &self,
        group_id: &str,
        now: i64,
        actor: Actor<'_>,
    ) -> Result<(), StoreError>;
}

#[cfg(test)]
mod url_tests {
    use super::*;

    #[test]
    fn a_postgres_password_never_reaches_the_redacted_form() {
        let url: DatabaseUrl = "postgres://contera:s3cret@db.example:5432/contera?password=s3cret"
            .parse()
            .unwrap();
        let shown = url.redacted();
        assert_eq!(shown, "postgres://contera:***@db.example:5432/contera");
        assert!(!format!("{url:?}").contains("s3cret"));
    }

    #[test]
    fn an_unknown_scheme_is_refused_naming_the_forms_that_work() {
        let err = "mysql://root:pw@host/db"
            .parse::<DatabaseUrl>()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("sqlite://") && err.contains("postgres://"),
            "{err}"
        );
        assert!(!err.contains("pw"), "{err}");
        assert!(matches!(
            "sqlite://".parse::<DatabaseUrl>(),
            Err(DatabaseUrlError::EmptyPath)
        ));
        assert_eq!(
            "sqlite:///var/lib/x.db".parse::<DatabaseUrl>().unwrap(),
            DatabaseUrl::Sqlite("/var/lib/x.db".into())
        );
    }
}
