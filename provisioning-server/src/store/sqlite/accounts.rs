//! Accounts and registration codes for the admin API: an account created together with its
//! first user, code limits changed after the fact, and recorder counts per account.

use sqlx::{Row, SqlitePool};

use super::{audit, code_info_from_row, insert_account, insert_invited_user, CODE_INFO_SELECT};
use crate::accounts::{CodeUpdate, RecorderCounts};
use crate::store::*;

pub(super) async fn create_account_with_first_user(
    pool: &SqlitePool,
    account: &Account,
    code: &NewCode,
    user: &User,
    invitation: &Invitation,
    actor: Actor<'_>,
) -> Result<(), StoreError> {
    let mut tx = super::begin_write(pool).await?;
    insert_account(&mut tx, account, code, actor).await?;
    let group_id: String =
        sqlx::query_scalar("SELECT id FROM groups WHERE account_id = ? AND name = ?")
            .bind(&account.id)
            .bind(ADMINISTRATORS_GROUP)
            .fetch_one(&mut *tx)
            .await?;
    insert_invited_user(&mut tx, user, &group_id, invitation, actor).await?;
    tx.commit().await?;
    Ok(())
}

pub(super) async fn update_code(
    pool: &SqlitePool,
    public_id: &str,
    update: &CodeUpdate,
    now: i64,
    actor: Actor<'_>,
) -> Result<CodeInfo, StoreError> {
    let mut tx = super::begin_write(pool).await?;
    // A write first, so the transaction holds the write lock before it reads: two
    // concurrent updates then audit what each really changed.
    let touched = sqlx::query("UPDATE registration_codes SET label = label WHERE public_id = ?")
        .bind(public_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if touched == 0 {
        return Err(StoreError::NotFound {
            what: "registration code",
            id: public_id.to_owned(),
        });
    }
    let row = sqlx::query(&format!("{CODE_INFO_SELECT} WHERE public_id = ?"))
        .bind(public_id)
        .fetch_one(&mut *tx)
        .await?;
    let mut info = code_info_from_row(&row)?;
    let mut changed = serde_json::Map::new();
    if let Some(label) = update.label.as_ref().filter(|l| **l != info.label) {
        changed.insert(
            "label".into(),
            serde_json::json!({ "old": info.label, "new": label }),
        );
        info.label = label.clone();
    }
    if let Some(at) = update.expires_at.filter(|at| *at != info.expires_at) {
        changed.insert(
            "expires_at".into(),
            serde_json::json!({ "old": info.expires_at, "new": at }),
        );
        info.expires_at = at;
    }
    if let Some(max) = update.max_uses.filter(|max| *max != info.max_uses) {
        changed.insert(
            "max_uses".into(),
            serde_json::json!({ "old": info.max_uses, "new": max }),
        );
        info.max_uses = max;
    }
    if changed.is_empty() {
        // Dropping the transaction rolls the no-op write back.
        return Ok(info);
    }
    sqlx::query(
        "UPDATE registration_codes SET label = ?, expires_at = ?, max_uses = ? WHERE public_id = ?",
    )
    .bind(&info.label)
    .bind(info.expires_at)
    .bind(info.max_uses)
    .bind(public_id)
    .execute(&mut *tx)
    .await?;
    changed.insert("code_public_id".into(), serde_json::json!(public_id));
    audit(
        &mut tx,
        now,
        actor,
        "code.updated",
        Some(&info.account_id),
        None,
        serde_json::Value::Object(changed),
    )
    .await?;
    tx.commit().await?;
    Ok(info)
}

pub(super) async fn recorder_counts(
    pool: &SqlitePool,
    now: i64,
) -> Result<Vec<RecorderCounts>, StoreError> {
    let rows = sqlx::query(
        "SELECT account_id, COUNT(*) AS total, \
         COALESCE(SUM(CASE WHEN online_until > ? THEN 1 ELSE 0 END), 0) AS online \
         FROM recorders WHERE revoked_at IS NULL GROUP BY account_id",
    )
    .bind(now)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(RecorderCounts {
                account_id: r.try_get("account_id")?,
                total: r.try_get("total")?,
                online: r.try_get("online")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(StoreError::from)
}

#[cfg(test)]
mod tests {
    use super::super::SqliteStore;
    use super::*;

    async fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("t.db")).await.unwrap();
        (dir, store)
    }

    fn new_code(public_id: &str) -> NewCode {
        NewCode {
            public_id: public_id.to_string(),
            secret_hash: vec![0; 32],
            sealed: crate::secrets::SealedCode {
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

    fn new_account(id: &str) -> Account {
        Account {
            id: id.to_string(),
            name: id.to_string(),
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

    fn invited(id: &str, account: &str, email: &str) -> (User, Invitation) {
        let user = User {
            id: id.into(),
            account_id: account.into(),
            email: email.into(),
            name: "First".into(),
            status: UserStatus::Invited,
            created_at: 1,
            created_by: "test".into(),
            terms_version: None,
            terms_accepted_at: None,
            age_confirmed_at: None,
            groups: vec![ADMINISTRATORS_GROUP.into()],
        };
        let invitation = Invitation {
            token_hash: id.as_bytes().to_vec(),
            user_id: id.into(),
            created_at: 1,
            expires_at: 100,
            used_at: None,
            replaced_at: None,
        };
        (user, invitation)
    }

    async fn actions(store: &SqliteStore) -> Vec<String> {
        store
            .audit_log(100)
            .await
            .unwrap()
            .into_iter()
            .rev()
            .map(|e| e.action)
            .collect()
    }

    #[tokio::test]
    async fn an_account_and_its_first_user_are_written_together_or_not_at_all() {
        let (_dir, store) = store().await;
        let (user, invitation) = invited("u1", "a1", "jo@example.com");
        store
            .create_account_with_first_user(
                &new_account("a1"),
                &new_code("AAAA"),
                &user,
                &invitation,
                "test",
            )
            .await
            .unwrap();
        let stored = store.user("u1").await.unwrap().unwrap();
        assert_eq!(stored.groups, vec![ADMINISTRATORS_GROUP.to_string()]);
        assert_eq!(stored.status, UserStatus::Invited);
        assert!(store.invitation(b"u1").await.unwrap().is_some());
        assert_eq!(actions(&store).await, ["account.created", "user.invited"]);

        // The same email in another case: refused, and the account is not left behind.
        let (user, invitation) = invited("u2", "a2", "JO@example.com");
        let err = store
            .create_account_with_first_user(
                &new_account("a2"),
                &new_code("BBBB"),
                &user,
                &invitation,
                "test",
            )
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{err}");
        assert!(store.account("a2").await.unwrap().is_none());
        assert!(store.code("BBBB").await.unwrap().is_none());
        assert!(store.user("u2").await.unwrap().is_none());
        assert_eq!(store.accounts().await.unwrap().len(), 1);
        assert_eq!(actions(&store).await.len(), 2);
    }

    #[tokio::test]
    async fn a_code_update_writes_and_audits_only_what_changed() {
        let (_dir, store) = store().await;
        store
            .create_account(&new_account("a1"), &new_code("AAAA"), "test")
            .await
            .unwrap();
        let update = CodeUpdate {
            label: Some("Installer".into()),
            expires_at: Some(Some(500)),
            max_uses: Some(Some(3)),
        };
        let info = store
            .update_code("AAAA", &update, 10, "user:u1@192.0.2.7")
            .await
            .unwrap();
        assert_eq!(
            (info.label.as_str(), info.expires_at, info.max_uses),
            ("Installer", Some(500), Some(3))
        );
        assert_eq!(store.code_info("AAAA").await.unwrap().unwrap(), info);
        let entry = store.audit_log(1).await.unwrap().remove(0);
        assert_eq!(entry.action, "code.updated");
        assert_eq!(entry.actor, "user:u1");
        assert_eq!(entry.source.as_deref(), Some("192.0.2.7"));
        assert_eq!(entry.account_id.as_deref(), Some("a1"));
        let detail: serde_json::Value = serde_json::from_str(&entry.detail).unwrap();
        assert_eq!(
            detail,
            serde_json::json!({
                "code_public_id": "AAAA",
                "label": { "old": "Initial code", "new": "Installer" },
                "expires_at": { "old": null, "new": 500 },
                "max_uses": { "old": null, "new": 3 },
            })
        );

        // Clearing one limit audits that one only; the same values again audit nothing.
        let clear = CodeUpdate {
            label: Some("Installer".into()),
            max_uses: Some(None),
            ..CodeUpdate::default()
        };
        let info = store.update_code("AAAA", &clear, 11, "t").await.unwrap();
        assert_eq!((info.expires_at, info.max_uses), (Some(500), None));
        let entry = store.audit_log(1).await.unwrap().remove(0);
        let detail: serde_json::Value = serde_json::from_str(&entry.detail).unwrap();
        assert_eq!(
            detail,
            serde_json::json!({ "code_public_id": "AAAA", "max_uses": { "old": 3, "new": null } })
        );
        let before = actions(&store).await.len();
        store.update_code("AAAA", &clear, 12, "t").await.unwrap();
        assert_eq!(actions(&store).await.len(), before);

        assert!(matches!(
            store.update_code("ZZZZ", &clear, 12, "t").await,
            Err(StoreError::NotFound { .. })
        ));
    }

    #[tokio::test]
    async fn recorders_are_counted_per_account_without_the_revoked_ones() {
        let (_dir, store) = store().await;
        for id in ["a1", "a2"] {
            store
                .create_account(&new_account(id), &new_code(&format!("C{}", &id[1..])), "t")
                .await
                .unwrap();
        }
        for (id, account, code) in [("r1", "a1", "C1"), ("r2", "a1", "C1"), ("r3", "a1", "C1")] {
            store
                .enroll(&EnrollRecord {
                    recorder_id: id.into(),
                    account_id: account.into(),
                    key_fingerprint: format!("k{id}"),
                    serial: format!("S{id}"),
                    mac: None,
                    model: "M".into(),
                    firmware: None,
                    agent_version: "t".into(),
                    code_public_id: code.into(),
                    cert_serial: format!("c{id}"),
                    cert_not_after: 1000,
                    now: 10,
                })
                .await
                .unwrap();
        }
        store
            .record_presence(&[Presence {
                recorder_id: "r1".into(),
                last_seen: 10,
                online_until: 40,
                status: None,
                uptime_secs: None,
            }])
            .await
            .unwrap();
        assert!(store.revoke_recorder("r3", 20, "t").await.unwrap());
        let counts = store.recorder_counts(30).await.unwrap();
        assert_eq!(
            counts,
            vec![RecorderCounts {
                account_id: "a1".into(),
                total: 2,
                online: 1,
            }]
        );
        assert_eq!(store.recorder_counts(40).await.unwrap()[0].online, 0);
    }
}
