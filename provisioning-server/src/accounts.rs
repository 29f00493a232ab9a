//! Accounts and their registration codes: minting, rotation, and checking a typed code in
//! constant time without telling unknown, rotated and wrong codes apart.

use std::sync::Arc;

use contera_protocol::RegistrationCode;
use subtle::ConstantTimeEq;
use time::OffsetDateTime;

use crate::store::{Account, AccountKind, Actor, Store, StoreError};

/// Longest account name accepted, in characters.
pub const MAX_NAME_CHARS: usize = 200;
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
    let name = name.trim();
    if name.is_empty() {
        return Err(AccountError::EmptyName);
    }
    let chars = name.chars().count();
    if chars > MAX_NAME_CHARS {
        return Err(AccountError::NameTooLong(chars));
    }
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
            Ok((account, code.public_id()))
        }
        _ => Err(CodeRejected::Invalid),
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

    #[tokio::test]
    async fn a_right_public_id_with_a_wrong_secret_is_rejected() {
        let (_dir, store) = store().await;
        let (_, code) = create(&store, "A", AccountKind::Customer, None, "test")
            .await
            .unwrap();
        let mut secret: Vec<u8> = code.compact().into_bytes()[4..23]
            .iter()
            .map(|b| b & 31)
            .collect();
        secret[0] ^= 1;
        let forged = RegistrationCode::from_parts(
            code.compact().as_bytes()[..4]
                .iter()
                .map(|c| "0123456789ABCDEFGHJKMNPQRSTVWXYZ".find(*c as char).unwrap() as u8)
                .collect::<Vec<_>>()
                .try_into()
                .unwrap(),
            secret.try_into().unwrap(),
        );
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
}
