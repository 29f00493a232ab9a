//! Accounts and their registration codes: minting, rotation, and checking a typed code in
//! constant time without telling unknown, rotated and wrong codes apart.

use std::sync::Arc;

use contera_protocol::RegistrationCode;
use subtle::ConstantTimeEq;
use time::OffsetDateTime;

use crate::store::{Account, AccountKind, AccountUpdate, Actor, Store, StoreError};

/// Longest account name accepted, in characters.
pub const MAX_NAME_CHARS: usize = 200;
/// Longest postal address accepted, in characters (several lines fit).
pub const MAX_ADDRESS_CHARS: usize = 500;
/// Longest contact accepted, in characters.
pub const MAX_CONTACT_CHARS: usize = 200;
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

fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// Creates an account with its first code. The code is returned once and never stored.
pub async fn create(
    store: &Arc<dyn Store>,
    name: &str,
    kind: AccountKind,
    parent_id: Option<&str>,
    actor: Actor<'_>,
) -> Result<(Account, RegistrationCode), AccountError> {
    create_with_details(store, name, kind, parent_id, &Details::default(), actor).await
}

/// [`create`] with an address and a contact, each checked like [`update`] checks them.
pub async fn create_with_details(
    store: &Arc<dyn Store>,
    name: &str,
    kind: AccountKind,
    parent_id: Option<&str>,
    details: &Details,
    actor: Actor<'_>,
) -> Result<(Account, RegistrationCode), AccountError> {
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
    let mut account = Account {
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
    };
    for attempt in 1..=MINT_ATTEMPTS {
        let code = fresh_code();
        match store
            .create_account(
                &account,
                &code.public_id(),
                &hash_secret(&code.secret()),
                actor,
            )
            .await
        {
            Ok(()) => {
                account.code_public_id = Some(code.public_id());
                return Ok((account, code));
            }
            Err(StoreError::Conflict(_)) if attempt < MINT_ATTEMPTS => continue,
            Err(StoreError::NotFound { id, .. }) => return Err(AccountError::NoParent(id)),
            Err(e) => return Err(e.into()),
        }
    }
    unreachable!("the last attempt returns")
}

/// Replaces the account's code; the old one stops working with this commit.
pub async fn rotate_code(
    store: &Arc<dyn Store>,
    account_id: &str,
    actor: Actor<'_>,
) -> Result<RegistrationCode, AccountError> {
    for attempt in 1..=MINT_ATTEMPTS {
        let code = fresh_code();
        match store
            .rotate_code(
                account_id,
                &code.public_id(),
                &hash_secret(&code.secret()),
                now(),
                actor,
            )
            .await
        {
            Ok(()) => return Ok(code),
            Err(StoreError::Conflict(_)) if attempt < MINT_ATTEMPTS => continue,
            Err(StoreError::NotFound { .. }) => {
                return Err(AccountError::NotFound(account_id.to_string()))
            }
            Err(e) => return Err(e.into()),
        }
    }
    unreachable!("the last attempt returns")
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
    match stored {
        Some(stored) if matches && !stored.disabled => {
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

    async fn store() -> (tempfile::TempDir, Arc<dyn Store>) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("t.db")).await.unwrap();
        (dir, Arc::new(store))
    }

    #[tokio::test]
    async fn a_code_resolves_to_its_account_until_rotated() {
        let (_dir, store) = store().await;
        let (account, code) = create(&store, "Store 12", AccountKind::Customer, None, "test")
            .await
            .unwrap();
        let (found, public) = resolve_code(&store, &code.to_string().to_lowercase())
            .await
            .unwrap();
        assert_eq!(found.id, account.id);
        assert_eq!(public, code.public_id());
        let new_code = rotate_code(&store, &account.id, "test").await.unwrap();
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
        let (_, code) = create(&store, "A", AccountKind::Customer, None, "test")
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
        let (customer, _) = create(&store, "C", AccountKind::Customer, None, "t")
            .await
            .unwrap();
        let err = create(&store, "X", AccountKind::Customer, Some(&customer.id), "t")
            .await
            .unwrap_err();
        assert!(matches!(err, AccountError::ParentNotPartner(_)));
        let err = create(&store, "X", AccountKind::Customer, Some("nope"), "t")
            .await
            .unwrap_err();
        assert!(matches!(err, AccountError::NoParent(_)));
        assert!(matches!(
            create(&store, "  ", AccountKind::Customer, None, "t").await,
            Err(AccountError::EmptyName)
        ));
        assert_eq!(store.accounts().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn stored_hash_is_not_the_secret() {
        let (_dir, store) = store().await;
        let (_, code) = create(&store, "A", AccountKind::Customer, None, "t")
            .await
            .unwrap();
        let stored = store.code(&code.public_id()).await.unwrap().unwrap();
        assert_ne!(stored.secret_hash, code.secret().as_bytes());
        assert_eq!(stored.secret_hash.len(), 32);
    }

    #[tokio::test]
    async fn details_are_checked_and_an_update_needs_a_field() {
        let (_dir, store) = store().await;
        let details = Details {
            address: Some(" 1 Main St\r\nSpringfield ".into()),
            contact: Some("  ".into()),
        };
        let (account, _) =
            create_with_details(&store, "A", AccountKind::Customer, None, &details, "t")
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
        let (partner, _) = create(&store, "P", AccountKind::Partner, None, "t")
            .await
            .unwrap();
        let (_, code) = create(&store, "C", AccountKind::Customer, Some(&partner.id), "t")
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
}
