//! Rows the tests start from, made only through public `Store` methods so that every
//! backend starts from the same state.

use contera_provisioning::permissions::{Permission, PermissionSet};
use contera_provisioning::secrets::SealedCode;
use contera_provisioning::store::*;

/// A code as the server would store it; `C<account>` is the code made with an account.
pub fn new_code(public_id: &str) -> NewCode {
    NewCode {
        public_id: public_id.to_owned(),
        secret_hash: vec![0; 32],
        sealed: SealedCode {
            nonce: vec![0; 12],
            ciphertext: vec![1; 40],
        },
        label: "Initial code".into(),
        expires_at: None,
        max_uses: None,
        created_by: "test".into(),
        created_at: 1,
    }
}

/// A customer account at the top of its own tree, not yet stored.
pub fn new_account(id: &str) -> Account {
    Account {
        id: id.to_owned(),
        name: id.to_owned(),
        kind: AccountKind::Customer,
        parent_id: None,
        code_public_id: None,
        created_at: 1,
        address: String::new(),
        contact: None,
        disabled_at: None,
        disabled_by: None,
        disabled_via: None,
    }
}

/// Stores a top-level customer account `id` with its code `C<id>`.
pub async fn account(store: &dyn Store, id: &str) {
    store
        .create_account(&new_account(id), &new_code(&format!("C{id}")), "test")
        .await
        .unwrap();
}

/// Stores account `id` under `parent`, with its code `C<id>`.
pub async fn child(store: &dyn Store, id: &str, parent: &str, kind: AccountKind) {
    let account = Account {
        kind,
        parent_id: Some(parent.to_owned()),
        ..new_account(id)
    };
    store
        .create_account(&account, &new_code(&format!("C{id}")), "test")
        .await
        .unwrap();
}

/// An enrollment of key `key` into `account` with that account's code, signed for `id`.
pub fn record(id: &str, account: &str, key: &str, serial: &str) -> EnrollRecord {
    EnrollRecord {
        recorder_id: id.to_owned(),
        account_id: account.to_owned(),
        key_fingerprint: key.to_owned(),
        serial: serial.to_owned(),
        mac: None,
        model: "NV-16".into(),
        firmware: None,
        agent_version: "test".into(),
        code_public_id: format!("C{account}"),
        cert_serial: format!("serial-of-{id}-{key}"),
        cert_not_after: 1000,
        now: 10,
    }
}

/// Enrolls recorder `id` (key `key-<id>`, MAC ending in the id, certificate `cert-<id>`).
pub async fn enroll(store: &dyn Store, id: &str, account: &str, serial: &str) -> Recorder {
    let record = EnrollRecord {
        mac: Some(format!("00:11:22:33:44:{id}")),
        cert_serial: format!("cert-{id}"),
        ..record(id, account, &format!("key-{id}"), serial)
    };
    store.enroll(&record).await.unwrap().recorder
}

/// Every audit action so far, oldest first.
pub async fn actions(store: &dyn Store) -> Vec<String> {
    let mut all: Vec<String> = store
        .audit_log(10_000)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .collect();
    all.reverse();
    all
}

/// The newest audit entry.
pub async fn last_audit(store: &dyn Store) -> AuditEntry {
    store.audit_log(1).await.unwrap().remove(0)
}

pub fn detail(entry: &AuditEntry) -> serde_json::Value {
    serde_json::from_str(&entry.detail).unwrap()
}

/// The audit entries about one recorder, newest first, as (action, detail).
pub async fn history(store: &dyn Store, id: &str) -> Vec<(String, serde_json::Value)> {
    store
        .audit_entries(&AuditFilter {
            recorder_id: Some(id.to_owned()),
            limit: 100,
            ..AuditFilter::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.action.clone(), detail(&e)))
        .collect()
}

pub async fn group_named(store: &dyn Store, account: &str, name: &str) -> Group {
    store
        .groups(account)
        .await
        .unwrap()
        .into_iter()
        .find(|g| g.name == name)
        .unwrap_or_else(|| panic!("no group {name} in {account}"))
}

pub async fn new_group(store: &dyn Store, account: &str, name: &str, p: &[Permission]) -> Group {
    let group = Group {
        id: uuid::Uuid::new_v4().to_string(),
        account_id: account.into(),
        name: name.into(),
        created_at: 1,
        permissions: p.iter().copied().collect::<PermissionSet>(),
        members: 0,
    };
    store.create_group(&group, "test").await.unwrap();
    group
}

/// An invited user of `account` in `group_id`, and the invitation (token hash = email).
pub async fn invited_user(
    store: &dyn Store,
    account: &str,
    email: &str,
    group_id: &str,
    expires_at: i64,
) -> (User, Invitation) {
    let user = User {
        id: uuid::Uuid::new_v4().to_string(),
        account_id: account.into(),
        email: email.into(),
        name: "Old Name".into(),
        status: UserStatus::Invited,
        created_at: 1,
        created_by: "test".into(),
        terms_version: None,
        terms_accepted_at: None,
        age_confirmed_at: None,
        groups: vec![],
    };
    let invitation = Invitation {
        token_hash: email.as_bytes().to_vec(),
        user_id: user.id.clone(),
        created_at: 1,
        expires_at,
        used_at: None,
        replaced_at: None,
    };
    store
        .create_invited_user(&user, group_id, &invitation, "test")
        .await
        .unwrap();
    (user, invitation)
}

/// An active user of `account` in `group_id`, with password hash `hash-of-<email>`.
pub async fn active_user(store: &dyn Store, account: &str, email: &str, group_id: &str) -> User {
    let (_, invitation) = invited_user(store, account, email, group_id, i64::MAX).await;
    store
        .accept_invitation(&Acceptance {
            token_hash: &invitation.token_hash,
            password_hash: &format!("hash-of-{email}"),
            terms_version: "1",
            now: 2,
        })
        .await
        .unwrap()
}

/// A heartbeat flush row for `id` seen at `last_seen`, online for 30 s more.
pub fn presence(id: &str, last_seen: i64) -> Presence {
    Presence {
        recorder_id: id.to_owned(),
        last_seen,
        online_until: last_seen + 30,
        status: None,
        uptime_secs: None,
    }
}
