//! Accounts and their registration codes: minting (sealed for showing again), rotation,
//! limits, and checking a typed code in constant time without telling unknown, rotated,
//! disabled, expired, used-up and wrong codes apart.

use std::sync::Arc;

use contera_protocol::RegistrationCode;
use serde::Serialize;
use subtle::ConstantTimeEq;
use time::OffsetDateTime;

use crate::secrets::{CodeKey, SecretsError};
use crate::store::{
    Account, AccountKind, AccountUpdate, Actor, CodeInfo, NewAuditEntry, NewCode, Store,
    StoreError, ADMINISTRATORS_GROUP,
};
use crate::users::{self, Invited, UserError};

/// Longest account name accepted, in characters.
pub const MAX_NAME_CHARS: usize = 200;
/// Longest postal address accepted, in characters (several lines fit).
pub const MAX_ADDRESS_CHARS: usize = 500;
/// Longest contact accepted, in characters.
pub const MAX_CONTACT_CHARS: usize = 200;
/// Longest code label accepted, in characters.
pub const MAX_LABEL_CHARS: usize = 100;
/// The label of the code an account is created with.
pub const INITIAL_LABEL: &str = "Initial code";
/// The label of the code `codes rotate` creates.
pub const ROTATED_LABEL: &str = "Rotated code";
/// Minting retries when a fresh public id collides with an existing one.
const MINT_ATTEMPTS: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("account name is empty: give the account a name with --name")]
    EmptyName,
    #[error("account name is {0} characters long; use at most {MAX_NAME_CHARS}")]
    NameTooLong(usize),
    #[error("parent account {0} does not exist: list accounts with `accounts list`")]
    NoParent(String),
    #[error(
        "parent account {0} is a customer account; only partner accounts can hold other accounts"
    )]
    ParentNotPartner(String),
    #[error("account {0} does not exist: list accounts with `accounts list`")]
    NotFound(String),
    #[error("registration code {0} does not exist: list an account's codes with `codes list --account ID`")]
    CodeNotFound(String),
    #[error("registration code {0} was created before codes were kept; rotate to see one")]
    CodeNotKept(String),
    #[error("code label is {0} characters long; use at most {MAX_LABEL_CHARS}")]
    LabelTooLong(usize),
    #[error("code label contains control characters; keep it to one line of text")]
    LabelControlCharacters,
    #[error("nothing to change: give a label, an expiry or a maximum number of uses")]
    NothingToUpdateCode,
    #[error("maximum uses must be at least 1")]
    ZeroMaxUses,
    #[error("the expiry is in the past: give a time in the future")]
    ExpiryInPast,
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    #[error("account {field} is {chars} characters long; use at most {max}")]
    TooLong {
        field: &'static str,
        chars: usize,
        max: usize,
    },
    #[error("account {field} contains control characters; only the address may span lines (\\n)")]
    ControlCharacters { field: &'static str },
    #[error("nothing to change: give --name, --address or --contact")]
    NothingToUpdate,
    /// The first user of an account created with [`create_with_first_user`].
    #[error(transparent)]
    FirstUser(#[from] UserError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The hash that is stored for a code's secret. The secret carries 95 random bits, so a
/// fast hash is enough (as for API tokens); a slow password hash would only add latency.
pub fn hash_secret(secret: &str) -> Vec<u8> {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(b"contera registration code v1\0");
    ctx.update(secret.as_bytes());
    ctx.finish().as_ref().to_vec()
}

fn fresh_code() -> RegistrationCode {
    RegistrationCode::from_random(rand::random())
}

/// What a new code allows: its label and optional limits.
#[derive(Debug, Clone, Default)]
pub struct CodeLimits<'a> {
    pub label: &'a str,
    /// Unix seconds after which it no longer enrolls.
    pub expires_at: Option<i64>,
    /// How many enrollments it allows in all.
    pub max_uses: Option<i64>,
}

/// A fresh code and its row: the hash for enrollment, the whole code sealed for showing.
fn mint(
    key: &CodeKey,
    limits: &CodeLimits<'_>,
    actor: Actor<'_>,
    now: i64,
) -> Result<(RegistrationCode, NewCode), AccountError> {
    let code = fresh_code();
    let public_id = code.public_id();
    let sealed = key.seal(&public_id, &code.compact())?;
    let row = NewCode {
        secret_hash: hash_secret(&code.secret()),
        public_id,
        sealed,
        label: limits.label.trim().to_string(),
        expires_at: limits.expires_at,
        max_uses: limits.max_uses,
        created_by: crate::store::split_actor(actor).0.to_string(),
        created_at: now,
    };
    Ok((code, row))
}

fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// Creates an account with its first code (labelled [`INITIAL_LABEL`], no limits). Only
/// the code's hash and its sealed form are stored.
pub async fn create(
    store: &Arc<dyn Store>,
    key: &CodeKey,
    name: &str,
    kind: AccountKind,
    parent_id: Option<&str>,
    actor: Actor<'_>,
) -> Result<(Account, RegistrationCode), AccountError> {
    create_with_details(
        store,
        key,
        name,
        kind,
        parent_id,
        &Details::default(),
        actor,
    )
    .await
}

/// [`create`] with an address and a contact, each checked like [`update`] checks them.
pub async fn create_with_details(
    store: &Arc<dyn Store>,
    key: &CodeKey,
    name: &str,
    kind: AccountKind,
    parent_id: Option<&str>,
    details: &Details,
    actor: Actor<'_>,
) -> Result<(Account, RegistrationCode), AccountError> {
    let mut account = new_account(store, name, kind, parent_id, details).await?;
    let stored = store_fresh_code(store, key, &INITIAL, actor, account.created_at, |row| {
        let account = &account;
        async move { store.create_account(account, &row, actor).await }
    })
    .await;
    let code = parent_missing(stored)?;
    account.code_public_id = Some(code.public_id());
    Ok((account, code))
}

/// The first user of a new account: invited into its Administrators group.
#[derive(Debug, Clone, Copy)]
pub struct FirstUser<'a> {
    pub name: &'a str,
    pub email: &'a str,
}

/// [`create_with_details`] together with the account's first user, invited into its
/// Administrators group: account, code, group, user and invitation are written in one
/// transaction, so a taken email ([`UserError::EmailTaken`]) leaves nothing behind. The
/// invitation's token is in the returned [`Invited`], for the accept link.
#[allow(clippy::too_many_arguments)]
pub async fn create_with_first_user(
    store: &Arc<dyn Store>,
    key: &CodeKey,
    name: &str,
    kind: AccountKind,
    parent_id: Option<&str>,
    details: &Details,
    first_user: FirstUser<'_>,
    actor: Actor<'_>,
) -> Result<(Account, RegistrationCode, Invited), AccountError> {
    let mut account = new_account(store, name, kind, parent_id, details).await?;
    let (invited, invitation) = users::new_invited_user(
        &account.id,
        first_user.email,
        first_user.name,
        ADMINISTRATORS_GROUP,
        actor,
        account.created_at,
    )?;
    let email = invited.user.email.clone();
    if store.user_by_email(&email).await?.is_some() {
        return Err(UserError::EmailTaken(email).into());
    }
    let stored = store_fresh_code(store, key, &INITIAL, actor, account.created_at, |row| {
        let (account, user, invitation) = (&account, &invited.user, &invitation);
        async move {
            store
                .create_account_with_first_user(account, &row, user, invitation, actor)
                .await
        }
    })
    .await;
    let code = match parent_missing(stored) {
        // Lost a race with another user of the same email; nothing was written.
        Err(AccountError::Store(StoreError::Conflict(message))) => {
            return Err(match store.user_by_email(&email).await? {
                Some(_) => UserError::EmailTaken(email).into(),
                None => StoreError::Conflict(message).into(),
            })
        }
        other => other?,
    };
    account.code_public_id = Some(code.public_id());
    Ok((account, code, invited))
}

/// The limits of the code an account is created with.
const INITIAL: CodeLimits<'static> = CodeLimits {
    label: INITIAL_LABEL,
    expires_at: None,
    max_uses: None,
};

/// A new account, checked and not stored yet: its name, address and contact, and its
/// parent, which must exist and be a partner.
async fn new_account(
    store: &Arc<dyn Store>,
    name: &str,
    kind: AccountKind,
    parent_id: Option<&str>,
    details: &Details,
) -> Result<Account, AccountError> {
    let name = checked_name(name)?;
    let address = checked_address(details.address.as_deref().unwrap_or(""))?;
    let contact = checked_contact(details.contact.as_deref())?;
    if let Some(parent_id) = parent_id {
        match store.account(parent_id).await? {
            None => return Err(AccountError::NoParent(parent_id.to_string())),
            Some(parent) if parent.kind != AccountKind::Partner => {
                return Err(AccountError::ParentNotPartner(parent_id.to_string()))
            }
            Some(_) => {}
        }
    }
    Ok(Account {
        id: uuid::Uuid::new_v4().to_string(),
        name: name.to_string(),
        kind,
        parent_id: parent_id.map(str::to_string),
        code_public_id: None,
        created_at: now(),
        address,
        contact,
        disabled_at: None,
        disabled_by: None,
        disabled_via: None,
    })
}

/// A parent that disappeared between the check and the write is [`AccountError::NoParent`].
fn parent_missing<T>(result: Result<T, AccountError>) -> Result<T, AccountError> {
    match result {
        Err(AccountError::Store(StoreError::NotFound { id, .. })) => {
            Err(AccountError::NoParent(id))
        }
        other => other,
    }
}

/// Mints a code and stores it with `store_it`, minting again (up to [`MINT_ATTEMPTS`])
/// while the fresh public id collides with an existing one. Any other failure (another
/// conflict, such as a taken email, included), or the last collision, comes back as
/// [`AccountError::Store`].
async fn store_fresh_code<F, Fut>(
    store: &Arc<dyn Store>,
    key: &CodeKey,
    limits: &CodeLimits<'_>,
    actor: Actor<'_>,
    now: i64,
    mut store_it: F,
) -> Result<RegistrationCode, AccountError>
where
    F: FnMut(NewCode) -> Fut,
    Fut: std::future::Future<Output = Result<(), StoreError>>,
{
    let mut attempt = 1;
    loop {
        let (code, row) = mint(key, limits, actor, now)?;
        let public_id = row.public_id.clone();
        match store_it(row).await {
            Ok(()) => return Ok(code),
            Err(StoreError::Conflict(message)) => {
                if attempt < MINT_ATTEMPTS && store.code(&public_id).await?.is_some() {
                    attempt += 1;
                } else {
                    return Err(StoreError::Conflict(message).into());
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Replaces all of the account's active codes with one new code; the old ones stop
/// working with this commit.
pub async fn rotate_code(
    store: &Arc<dyn Store>,
    key: &CodeKey,
    account_id: &str,
    actor: Actor<'_>,
) -> Result<RegistrationCode, AccountError> {
    let rotated = CodeLimits {
        label: ROTATED_LABEL,
        ..CodeLimits::default()
    };
    let now = now();
    let stored = store_fresh_code(store, key, &rotated, actor, now, |row| async move {
        store.rotate_code(account_id, &row, now, actor).await
    })
    .await;
    in_account(stored, account_id)
}

/// Maps a missing account to [`AccountError::NotFound`] naming it.
fn in_account<T>(result: Result<T, AccountError>, account_id: &str) -> Result<T, AccountError> {
    match result {
        Err(AccountError::Store(StoreError::NotFound { .. })) => {
            Err(AccountError::NotFound(account_id.to_string()))
        }
        other => other,
    }
}

/// Adds a code to an account, next to its other codes.
pub async fn create_code(
    store: &Arc<dyn Store>,
    key: &CodeKey,
    account_id: &str,
    limits: &CodeLimits<'_>,
    actor: Actor<'_>,
) -> Result<RegistrationCode, AccountError> {
    checked_label(limits.label)?;
    let now = now();
    checked_limits(limits.expires_at, limits.max_uses, now)?;
    let stored = store_fresh_code(store, key, limits, actor, now, |row| async move {
        store.create_code(account_id, &row, actor).await
    })
    .await;
    in_account(stored, account_id)
}

/// The account's codes, newest first, without the codes themselves.
pub async fn list_codes(
    store: &Arc<dyn Store>,
    account_id: &str,
) -> Result<Vec<CodeInfo>, AccountError> {
    if store.account(account_id).await?.is_none() {
        return Err(AccountError::NotFound(account_id.to_string()));
    }
    Ok(store.codes(account_id).await?)
}

/// One code with the whole code decrypted, for a user allowed to see codes. Audited as
/// `code.shown` (without the code), since showing it hands out its power to enroll.
pub async fn show_code(
    store: &Arc<dyn Store>,
    key: &CodeKey,
    public_id: &str,
    actor: Actor<'_>,
) -> Result<(CodeInfo, RegistrationCode), AccountError> {
    let public_id = public_id.trim().to_ascii_uppercase();
    let info = store
        .code_info(&public_id)
        .await?
        .ok_or_else(|| AccountError::CodeNotFound(public_id.clone()))?;
    let sealed = info
        .sealed
        .as_ref()
        .ok_or_else(|| AccountError::CodeNotKept(public_id.clone()))?;
    let code: RegistrationCode = key
        .open(&info.public_id, sealed)?
        .parse()
        .map_err(|_| SecretsError::Open)?;
    store
        .append_audit(&[NewAuditEntry {
            at: now(),
            actor: actor.to_string(),
            action: "code.shown".into(),
            account_id: Some(info.account_id.clone()),
            recorder_id: None,
            detail: serde_json::json!({ "code_public_id": info.public_id }),
        }])
        .await?;
    Ok((info, code))
}

/// Disables one code from the next enrollment attempt on; false when it already was.
pub async fn disable_code(
    store: &Arc<dyn Store>,
    public_id: &str,
    actor: Actor<'_>,
) -> Result<bool, AccountError> {
    let public_id = public_id.trim().to_ascii_uppercase();
    match store.disable_code(&public_id, now(), actor).await {
        Err(StoreError::NotFound { .. }) => Err(AccountError::CodeNotFound(public_id)),
        other => Ok(other?),
    }
}

/// A code's label, trimmed: at most [`MAX_LABEL_CHARS`] characters on one line.
fn checked_label(label: &str) -> Result<String, AccountError> {
    let label = label.trim();
    let chars = label.chars().count();
    if chars > MAX_LABEL_CHARS {
        return Err(AccountError::LabelTooLong(chars));
    }
    if label.chars().any(char::is_control) {
        return Err(AccountError::LabelControlCharacters);
    }
    Ok(label.to_string())
}

/// An expiry must be in the future and a use limit at least 1.
fn checked_limits(
    expires_at: Option<i64>,
    max_uses: Option<i64>,
    now: i64,
) -> Result<(), AccountError> {
    if max_uses.is_some_and(|n| n < 1) {
        return Err(AccountError::ZeroMaxUses);
    }
    if expires_at.is_some_and(|at| at <= now) {
        return Err(AccountError::ExpiryInPast);
    }
    Ok(())
}

/// What [`update_code`] changes; `None` leaves a field as it is, `Some(None)` removes a
/// limit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CodeUpdate {
    pub label: Option<String>,
    pub expires_at: Option<Option<i64>>,
    pub max_uses: Option<Option<i64>>,
}

/// Changes a code's label and limits, each checked as when creating a code, audited as
/// `code.updated` with what changed. It holds from the next enrollment attempt on, since
/// every attempt reads the code's row. Returns the code as it is now.
pub async fn update_code(
    store: &Arc<dyn Store>,
    public_id: &str,
    update: &CodeUpdate,
    actor: Actor<'_>,
) -> Result<CodeInfo, AccountError> {
    if *update == CodeUpdate::default() {
        return Err(AccountError::NothingToUpdateCode);
    }
    let public_id = public_id.trim().to_ascii_uppercase();
    let now = now();
    checked_limits(update.expires_at.flatten(), update.max_uses.flatten(), now)?;
    let checked = CodeUpdate {
        label: update.label.as_deref().map(checked_label).transpose()?,
        ..update.clone()
    };
    match store.update_code(&public_id, &checked, now, actor).await {
        Err(StoreError::NotFound { .. }) => Err(AccountError::CodeNotFound(public_id)),
        other => Ok(other?),
    }
}

/// Whether a code still enrolls, and if not, why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CodeState {
    Active,
    Disabled,
    Expired,
    UsedUp,
}

impl CodeState {
    /// The state of `code` at `now`: disabled wins over expired, which wins over used up.
    pub fn of(code: &CodeInfo, now: i64) -> CodeState {
        if code.disabled_at.is_some() {
            CodeState::Disabled
        } else if code.expires_at.is_some_and(|at| at <= now) {
            CodeState::Expired
        } else if code.max_uses.is_some_and(|max| code.uses >= max) {
            CodeState::UsedUp
        } else {
            CodeState::Active
        }
    }
}

/// The recorders of one account that are not revoked, and how many of them are online.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecorderCounts {
    pub account_id: String,
    pub total: i64,
    pub online: i64,
}

/// Why a code was not accepted; deliberately one case for the caller, so no answer tells
/// unknown, rotated, disabled and wrong codes apart.
#[derive(Debug, thiserror::Error)]
pub enum CodeRejected {
    #[error("registration code not accepted")]
    Invalid,
    /// The code is right and current, but its account (or an ancestor) is disabled. Told
    /// apart from [`CodeRejected::Invalid`] so the installer knows whom to ask; this is no
    /// oracle, since only a caller holding the whole valid code gets it.
    #[error("the code's account is disabled")]
    AccountDisabled,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The account a typed code enrolls into. Takes about the same time whatever is wrong.
pub async fn resolve_code(
    store: &Arc<dyn Store>,
    typed: &str,
) -> Result<(Account, String), CodeRejected> {
    let Ok(code) = typed.parse::<RegistrationCode>() else {
        return Err(CodeRejected::Invalid);
    };
    let presented = hash_secret(&code.secret());
    let stored = store.code(&code.public_id()).await?;
    // Compare against something even when the id is unknown, so timing says nothing.
    let expected = stored
        .as_ref()
        .map(|s| s.secret_hash.clone())
        .unwrap_or_else(|| vec![0u8; presented.len()]);
    let matches: bool = presented.ct_eq(&expected).into();
    // Every check is evaluated whatever the others say (no short circuit), and all of them
    // lead to the same answer.
    let now = now();
    let usable = stored.as_ref().is_some_and(|s| {
        !s.disabled
            & s.expires_at.is_none_or(|at| at > now)
            & s.max_uses.is_none_or(|max| s.uses < max)
    });
    match stored {
        Some(stored) if matches & usable => {
            let account = store
                .account(&stored.account_id)
                .await?
                .ok_or(CodeRejected::Invalid)?;
            if account.effectively_disabled() {
                return Err(CodeRejected::AccountDisabled);
            }
            Ok((account, code.public_id()))
        }
        _ => Err(CodeRejected::Invalid),
    }
}

/// Optional details of an account, as given to [`create`].
#[derive(Debug, Clone, Default)]
pub struct Details {
    pub address: Option<String>,
    pub contact: Option<String>,
}

fn checked_name(name: &str) -> Result<String, AccountError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(AccountError::EmptyName);
    }
    let chars = name.chars().count();
    if chars > MAX_NAME_CHARS {
        return Err(AccountError::NameTooLong(chars));
    }
    if name.chars().any(char::is_control) {
        return Err(AccountError::ControlCharacters { field: "name" });
    }
    Ok(name.to_string())
}

/// A postal address spans lines, so `\n` is its one allowed control character; `\r\n`
/// from a pasted address becomes `\n`. The CLI escapes it when printing.
fn checked_address(address: &str) -> Result<String, AccountError> {
    let address = address.trim().replace("\r\n", "\n");
    let chars = address.chars().count();
    if chars > MAX_ADDRESS_CHARS {
        return Err(AccountError::TooLong {
            field: "address",
            chars,
            max: MAX_ADDRESS_CHARS,
        });
    }
    if address.chars().any(|c| c.is_control() && c != '\n') {
        return Err(AccountError::ControlCharacters { field: "address" });
    }
    Ok(address)
}

/// An empty contact means none.
fn checked_contact(contact: Option<&str>) -> Result<Option<String>, AccountError> {
    let Some(contact) = contact.map(str::trim).filter(|c| !c.is_empty()) else {
        return Ok(None);
    };
    let chars = contact.chars().count();
    if chars > MAX_CONTACT_CHARS {
        return Err(AccountError::TooLong {
            field: "contact",
            chars,
            max: MAX_CONTACT_CHARS,
        });
    }
    if contact.chars().any(char::is_control) {
        return Err(AccountError::ControlCharacters { field: "contact" });
    }
    Ok(Some(contact.to_string()))
}

/// Changes the given fields (each checked like at creation; an empty `contact` clears
/// it), audited as `account.updated` with what changed. Returns the account as it is now.
pub async fn update(
    store: &Arc<dyn Store>,
    id: &str,
    name: Option<&str>,
    address: Option<&str>,
    contact: Option<&str>,
    actor: Actor<'_>,
) -> Result<Account, AccountError> {
    if name.is_none() && address.is_none() && contact.is_none() {
        return Err(AccountError::NothingToUpdate);
    }
    let update = AccountUpdate {
        name: name.map(checked_name).transpose()?,
        address: address.map(checked_address).transpose()?,
        contact: contact.map(|c| checked_contact(Some(c))).transpose()?,
    };
    match store.update_account(id, &update, now(), actor).await {
        Err(StoreError::NotFound { .. }) => Err(AccountError::NotFound(id.to_string())),
        other => Ok(other?),
    }
}

/// Disables (`true`) or enables an account, audited as `account.disabled`/`enabled`.
/// While disabled, it and its whole subtree refuse enrollments and renewals, and their
/// recorders' heartbeats are answered with `account_disabled`. Returns false when the
/// account already was in that state (nothing written).
pub async fn set_disabled(
    store: &Arc<dyn Store>,
    id: &str,
    disabled: bool,
    actor: Actor<'_>,
) -> Result<bool, AccountError> {
    match store.set_account_disabled(id, disabled, now(), actor).await {
        Err(StoreError::NotFound { .. }) => Err(AccountError::NotFound(id.to_string())),
        other => Ok(other?),
    }
}

/// Every account with its depth in the tree, parents before children, for printing.
pub fn tree(accounts: &[Account]) -> Vec<(usize, &Account)> {
    fn walk<'a>(
        all: &'a [Account],
        parent: Option<&str>,
        depth: usize,
        out: &mut Vec<(usize, &'a Account)>,
    ) {
        for account in all.iter().filter(|a| a.parent_id.as_deref() == parent) {
            out.push((depth, account));
            walk(all, Some(&account.id), depth + 1, out);
        }
    }
    let mut out = Vec::with_capacity(accounts.len());
    walk(accounts, None, 0, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqliteStore;

    fn key() -> CodeKey {
        CodeKey::from_bytes(&[7; crate::secrets::KEY_LEN]).unwrap()
    }

    async fn store() -> (tempfile::TempDir, Arc<dyn Store>) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("t.db")).await.unwrap();
        (dir, Arc::new(store))
    }

    #[tokio::test]
    async fn a_code_resolves_to_its_account_until_rotated() {
        let (_dir, store) = store().await;
        let (account, code) = create(
            &store,
            &key(),
            "Store 12",
            AccountKind::Customer,
            None,
            "test",
        )
        .await
        .unwrap();
        let (found, public) = resolve_code(&store, &code.to_string().to_lowercase())
            .await
            .unwrap();
        assert_eq!(found.id, account.id);
        assert_eq!(public, code.public_id());
        let new_code = rotate_code(&store, &key(), &account.id, "test")
            .await
            .unwrap();
        assert!(matches!(
            resolve_code(&store, &code.to_string()).await,
            Err(CodeRejected::Invalid)
        ));
        assert_eq!(
            resolve_code(&store, &new_code.to_string())
                .await
                .unwrap()
                .0
                .id,
            account.id
        );
    }

    /// A code with `code`'s public id and another secret, with a valid check symbol.
    fn forged(code: &RegistrationCode) -> RegistrationCode {
        let mut secret: Vec<u8> = code.compact().into_bytes()[4..23]
            .iter()
            .map(|b| b & 31)
            .collect();
        secret[0] ^= 1;
        RegistrationCode::from_parts(
            code.compact().as_bytes()[..4]
                .iter()
                .map(|c| "0123456789ABCDEFGHJKMNPQRSTVWXYZ".find(*c as char).unwrap() as u8)
                .collect::<Vec<_>>()
                .try_into()
                .unwrap(),
            secret.try_into().unwrap(),
        )
    }

    #[tokio::test]
    async fn a_right_public_id_with_a_wrong_secret_is_rejected() {
        let (_dir, store) = store().await;
        let (_, code) = create(&store, &key(), "A", AccountKind::Customer, None, "test")
            .await
            .unwrap();
        let forged = forged(&code);
        assert_eq!(forged.public_id(), code.public_id());
        assert_ne!(forged.secret(), code.secret());
        assert!(matches!(
            resolve_code(&store, &forged.to_string()).await,
            Err(CodeRejected::Invalid)
        ));
    }

    #[tokio::test]
    async fn only_partners_hold_accounts() {
        let (_dir, store) = store().await;
        let (customer, _) = create(&store, &key(), "C", AccountKind::Customer, None, "t")
            .await
            .unwrap();
        let err = create(
            &store,
            &key(),
            "X",
            AccountKind::Customer,
            Some(&customer.id),
            "t",
        )
        .await
        .unwrap_err();
        assert!(matches!(err, AccountError::ParentNotPartner(_)));
        let err = create(
            &store,
            &key(),
            "X",
            AccountKind::Customer,
            Some("nope"),
            "t",
        )
        .await
        .unwrap_err();
        assert!(matches!(err, AccountError::NoParent(_)));
        assert!(matches!(
            create(&store, &key(), "  ", AccountKind::Customer, None, "t").await,
            Err(AccountError::EmptyName)
        ));
        assert_eq!(store.accounts().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn stored_hash_is_not_the_secret() {
        let (_dir, store) = store().await;
        let (_, code) = create(&store, &key(), "A", AccountKind::Customer, None, "t")
            .await
            .unwrap();
        let stored = store.code(&code.public_id()).await.unwrap().unwrap();
        assert_ne!(stored.secret_hash, code.secret().as_bytes());
        assert_eq!(stored.secret_hash.len(), 32);
    }

    #[tokio::test]
    async fn disabled_expired_and_used_up_codes_are_refused_like_unknown_ones() {
        let (_dir, store) = store().await;
        let (account, first) = create(&store, &key(), "A", AccountKind::Customer, None, "t")
            .await
            .unwrap();
        let limited = CodeLimits {
            label: " Installer ",
            expires_at: Some(now() + 3600),
            max_uses: Some(1),
        };
        let second = create_code(&store, &key(), &account.id, &limited, "t")
            .await
            .unwrap();
        // Both codes work side by side.
        assert!(resolve_code(&store, &first.to_string()).await.is_ok());
        assert!(resolve_code(&store, &second.to_string()).await.is_ok());
        let listed = list_codes(&store, &account.id).await.unwrap();
        assert_eq!(listed.len(), 2);
        let info = listed
            .iter()
            .find(|c| c.public_id == second.public_id())
            .unwrap();
        assert_eq!(info.label, "Installer");
        assert_eq!(info.max_uses, Some(1));
        assert_eq!(info.created_by, "t");
        assert!(listed.iter().any(|c| c.label == INITIAL_LABEL));

        // Used up: what enrollment counts, set directly here.
        enroll_once(&store, &second.public_id()).await;
        assert!(matches!(
            resolve_code(&store, &second.to_string()).await,
            Err(CodeRejected::Invalid)
        ));

        // Disabled.
        assert!(disable_code(&store, &first.public_id(), "t").await.unwrap());
        assert!(!disable_code(&store, &first.public_id(), "t").await.unwrap());
        assert!(matches!(
            resolve_code(&store, &first.to_string()).await,
            Err(CodeRejected::Invalid)
        ));
        assert!(matches!(
            disable_code(&store, "ZZZZ", "t").await,
            Err(AccountError::CodeNotFound(_))
        ));

        // Bad limits are refused before anything is stored.
        for bad in [
            CodeLimits {
                max_uses: Some(0),
                ..CodeLimits::default()
            },
            CodeLimits {
                expires_at: Some(now() - 1),
                ..CodeLimits::default()
            },
        ] {
            assert!(create_code(&store, &key(), &account.id, &bad, "t")
                .await
                .is_err());
        }
        assert!(matches!(
            create_code(&store, &key(), "nope", &CodeLimits::default(), "t").await,
            Err(AccountError::NotFound(_))
        ));
        assert_eq!(list_codes(&store, &account.id).await.unwrap().len(), 2);
    }

    /// Marks one use of a code through the enrollment path's own statement.
    async fn enroll_once(store: &Arc<dyn Store>, public_id: &str) {
        let stored = store.code(public_id).await.unwrap().unwrap();
        assert_eq!(stored.uses, 0);
        let account = store.account(&stored.account_id).await.unwrap().unwrap();
        let record = crate::store::EnrollRecord {
            recorder_id: "r1".into(),
            account_id: account.id,
            key_fingerprint: "k1".into(),
            serial: "S1".into(),
            mac: None,
            model: "M".into(),
            firmware: None,
            agent_version: "t".into(),
            code_public_id: public_id.into(),
            cert_serial: "c1".into(),
            cert_not_after: now() + 100,
            now: now(),
        };
        store.enroll(&record).await.unwrap();
        assert_eq!(store.code(public_id).await.unwrap().unwrap().uses, 1);
    }

    #[tokio::test]
    async fn a_shown_code_is_the_one_that_was_created_and_needs_its_key() {
        let (dir, store) = store().await;
        let (account, code) = create(&store, &key(), "A", AccountKind::Customer, None, "t")
            .await
            .unwrap();
        let (info, shown) = show_code(&store, &key(), &code.public_id().to_lowercase(), "t")
            .await
            .unwrap();
        assert_eq!(shown.to_string(), code.to_string());
        assert_eq!(info.account_id, account.id);
        let other = CodeKey::from_bytes(&[8; crate::secrets::KEY_LEN]).unwrap();
        assert!(matches!(
            show_code(&store, &other, &code.public_id(), "t").await,
            Err(AccountError::Secrets(SecretsError::Open))
        ));
        // The audit row says it was shown, without the code.
        let log = store.audit_log(10).await.unwrap();
        assert_eq!(log[0].action, "code.shown");
        assert!(log
            .iter()
            .all(|e| !e.detail.contains(&code.compact()) && !e.detail.contains(&code.to_string())));
        // A code from before codes were kept (no ciphertext) says how to get one.
        let old = SqliteStore::open(&dir.path().join("t.db")).await.unwrap();
        let account_row = Account {
            id: "legacy".into(),
            name: "L".into(),
            kind: AccountKind::Customer,
            parent_id: None,
            code_public_id: None,
            created_at: 1,
            address: String::new(),
            contact: None,
            disabled_at: None,
            disabled_by: None,
            disabled_via: None,
        };
        let (_, mut row) = mint(&key(), &CodeLimits::default(), "t", 1).unwrap();
        row.public_id = "LGCY".into();
        old.create_account(&account_row, &row, "t").await.unwrap();
        drop(old);
        // Clearing the ciphertext stands for a row written before migration 0003.
        let pool =
            sqlx::SqlitePool::connect(&format!("sqlite://{}", dir.path().join("t.db").display()))
                .await
                .unwrap();
        sqlx::query("UPDATE registration_codes SET code_nonce = NULL, code_ciphertext = NULL WHERE public_id = 'LGCY'")
            .execute(&pool)
            .await
            .unwrap();
        let err = show_code(&store, &key(), "LGCY", "t").await.unwrap_err();
        assert!(
            err.to_string()
                .contains("created before codes were kept; rotate to see one"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn details_are_checked_and_an_update_needs_a_field() {
        let (_dir, store) = store().await;
        let details = Details {
            address: Some(" 1 Main St\r\nSpringfield ".into()),
            contact: Some("  ".into()),
        };
        let (account, _) = create_with_details(
            &store,
            &key(),
            "A",
            AccountKind::Customer,
            None,
            &details,
            "t",
        )
        .await
        .unwrap();
        assert_eq!(account.address, "1 Main St\nSpringfield");
        assert_eq!(account.contact, None, "a blank contact is none");
        let id = account.id.as_str();
        assert!(matches!(
            update(&store, id, None, None, None, "t").await,
            Err(AccountError::NothingToUpdate)
        ));
        assert!(matches!(
            update(&store, id, Some(" "), None, None, "t").await,
            Err(AccountError::EmptyName)
        ));
        assert!(matches!(
            update(&store, id, Some("a\u{1b}[2J"), None, None, "t").await,
            Err(AccountError::ControlCharacters { field: "name" })
        ));
        assert!(matches!(
            update(&store, id, None, Some(&"x".repeat(501)), None, "t").await,
            Err(AccountError::TooLong {
                field: "address",
                chars: 501,
                ..
            })
        ));
        assert!(matches!(
            update(&store, id, None, Some("a\tb"), None, "t").await,
            Err(AccountError::ControlCharacters { field: "address" })
        ));
        assert!(matches!(
            update(&store, id, None, None, Some("x\ny"), "t").await,
            Err(AccountError::ControlCharacters { field: "contact" })
        ));
        assert!(matches!(
            update(&store, "nope", Some("B"), None, None, "t").await,
            Err(AccountError::NotFound(_))
        ));
        let renamed = update(&store, id, Some(&"é".repeat(200)), None, Some("Bo"), "t")
            .await
            .unwrap();
        assert_eq!(renamed.name.chars().count(), 200);
        assert_eq!(renamed.contact.as_deref(), Some("Bo"));
        assert_eq!(renamed.address, "1 Main St\nSpringfield", "left as it was");
    }

    #[tokio::test]
    async fn a_valid_code_of_a_disabled_subtree_is_told_apart_from_a_wrong_one() {
        let (_dir, store) = store().await;
        let (partner, _) = create(&store, &key(), "P", AccountKind::Partner, None, "t")
            .await
            .unwrap();
        let (_, code) = create(
            &store,
            &key(),
            "C",
            AccountKind::Customer,
            Some(&partner.id),
            "t",
        )
        .await
        .unwrap();
        assert!(set_disabled(&store, &partner.id, true, "t").await.unwrap());
        assert!(matches!(
            resolve_code(&store, &code.to_string()).await,
            Err(CodeRejected::AccountDisabled)
        ));
        // A code with the right public id and a wrong secret learns nothing about it.
        let wrong = forged(&code);
        assert_eq!(wrong.public_id(), code.public_id());
        assert!(matches!(
            resolve_code(&store, &wrong.to_string()).await,
            Err(CodeRejected::Invalid)
        ));
        assert!(set_disabled(&store, &partner.id, false, "t").await.unwrap());
        assert!(resolve_code(&store, &code.to_string()).await.is_ok());
    }

    #[tokio::test]
    async fn an_account_comes_with_its_invited_first_administrator_or_not_at_all() {
        let (_dir, store) = store().await;
        let (partner, _) = create(&store, &key(), "P", AccountKind::Partner, None, "t")
            .await
            .unwrap();
        let first = FirstUser {
            name: " Jo ",
            email: " jo@example.com ",
        };
        let (account, code, invited) = create_with_first_user(
            &store,
            &key(),
            "Store 12",
            AccountKind::Customer,
            Some(&partner.id),
            &Details::default(),
            first,
            "user:x",
        )
        .await
        .unwrap();
        assert_eq!(account.parent_id.as_deref(), Some(partner.id.as_str()));
        assert_eq!(account.code_public_id, Some(code.public_id()));
        assert_eq!(
            resolve_code(&store, &code.to_string()).await.unwrap().0.id,
            account.id
        );
        assert_eq!(invited.user.email, "jo@example.com");
        assert_eq!(invited.user.name, "Jo");
        assert_eq!(invited.user.account_id, account.id);
        let stored = store.user(&invited.user.id).await.unwrap().unwrap();
        assert_eq!(stored, invited.user);
        // The token accepts the invitation.
        let accept = users::AcceptRequest {
            token: &invited.token,
            password: "violet kettle under ninety",
            age_confirmed: true,
            terms_version: Some("1"),
        };
        users::accept(&store, &accept).await.unwrap();

        // A taken email, in any case, and bad first users are refused with nothing written.
        for (name, email) in [
            ("Jo", "JO@example.com"),
            ("Jo", "not an email"),
            (" ", "x@example.com"),
        ] {
            let err = create_with_first_user(
                &store,
                &key(),
                "Store 13",
                AccountKind::Customer,
                Some(&partner.id),
                &Details::default(),
                FirstUser { name, email },
                "t",
            )
            .await
            .unwrap_err();
            assert!(matches!(err, AccountError::FirstUser(_)), "{err}");
        }
        assert_eq!(store.accounts().await.unwrap().len(), 2);
        assert_eq!(store.users(None).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn only_a_taken_public_id_is_minted_again() {
        let (_dir, store) = store().await;
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let count = || calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        // Another conflict (a taken email, say) comes back at once.
        let err = store_fresh_code(&store, &key(), &INITIAL, "t", now(), |_| {
            count();
            async {
                Err(StoreError::Conflict(
                    "a user with the email … exists".into(),
                ))
            }
        })
        .await
        .unwrap_err();
        assert!(matches!(err, AccountError::Store(StoreError::Conflict(_))));
        assert_eq!(calls.swap(0, std::sync::atomic::Ordering::SeqCst), 1);
        // A public id that is taken by the time of the write is minted again.
        let err_then_ok = |row: NewCode| {
            let store = &store;
            let n = count();
            async move {
                if n == 1 {
                    let account = Account {
                        id: "taken".into(),
                        name: "T".into(),
                        kind: AccountKind::Customer,
                        parent_id: None,
                        code_public_id: None,
                        created_at: 1,
                        address: String::new(),
                        contact: None,
                        disabled_at: None,
                        disabled_by: None,
                        disabled_via: None,
                    };
                    store.create_account(&account, &row, "t").await?;
                    Err(StoreError::Conflict("registration code id is taken".into()))
                } else {
                    Ok(())
                }
            }
        };
        store_fresh_code(&store, &key(), &INITIAL, "t", now(), err_then_ok)
            .await
            .unwrap();
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn code_updates_are_checked_like_new_codes_and_hold_at_the_next_attempt() {
        let (_dir, store) = store().await;
        let (_, code) = create(&store, &key(), "A", AccountKind::Customer, None, "t")
            .await
            .unwrap();
        let id = code.public_id().to_lowercase();
        for (bad, expected) in [
            (CodeUpdate::default(), "nothing to change"),
            (
                CodeUpdate {
                    label: Some("x".repeat(101)),
                    ..CodeUpdate::default()
                },
                "101 characters",
            ),
            (
                CodeUpdate {
                    label: Some("a\nb".into()),
                    ..CodeUpdate::default()
                },
                "control characters",
            ),
            (
                CodeUpdate {
                    max_uses: Some(Some(0)),
                    ..CodeUpdate::default()
                },
                "at least 1",
            ),
            (
                CodeUpdate {
                    expires_at: Some(Some(now() - 1)),
                    ..CodeUpdate::default()
                },
                "in the past",
            ),
        ] {
            let err = update_code(&store, &id, &bad, "t").await.unwrap_err();
            assert!(err.to_string().contains(expected), "{err}");
        }
        assert!(matches!(
            update_code(
                &store,
                "ZZZZ",
                &CodeUpdate {
                    label: Some("x".into()),
                    ..CodeUpdate::default()
                },
                "t"
            )
            .await,
            Err(AccountError::CodeNotFound(_))
        ));

        // A limit reached stops the code at once; lifting it lets it enroll again.
        enroll_once(&store, &code.public_id()).await;
        let limited = CodeUpdate {
            label: Some(" Site B ".into()),
            max_uses: Some(Some(1)),
            ..CodeUpdate::default()
        };
        let info = update_code(&store, &id, &limited, "t").await.unwrap();
        assert_eq!(info.label, "Site B");
        assert_eq!(CodeState::of(&info, now()), CodeState::UsedUp);
        assert!(matches!(
            resolve_code(&store, &code.to_string()).await,
            Err(CodeRejected::Invalid)
        ));
        let lifted = CodeUpdate {
            max_uses: Some(None),
            ..CodeUpdate::default()
        };
        let info = update_code(&store, &id, &lifted, "t").await.unwrap();
        assert_eq!(CodeState::of(&info, now()), CodeState::Active);
        assert!(resolve_code(&store, &code.to_string()).await.is_ok());
        let expiring = CodeUpdate {
            expires_at: Some(Some(now() + 2)),
            ..CodeUpdate::default()
        };
        let info = update_code(&store, &id, &expiring, "t").await.unwrap();
        assert_eq!(CodeState::of(&info, now() + 2), CodeState::Expired);
        assert_eq!(CodeState::of(&info, now()), CodeState::Active);
    }
}
