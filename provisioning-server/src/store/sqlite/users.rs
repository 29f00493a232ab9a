//! Users and groups for the admin API: one group by id, renaming a user, replacing a
//! user's groups, deleting a group. Each write is one transaction with its audit row.

use std::collections::BTreeSet;

use sqlx::{Sqlite, SqlitePool, Transaction};

use super::{administrators, audit, user_where, SqliteStore};
use crate::store::*;

pub(super) async fn group(store: &SqliteStore, id: &str) -> Result<Option<Group>, StoreError> {
    let account_id: Option<String> =
        sqlx::query_scalar("SELECT account_id FROM groups WHERE id = ?")
            .bind(id)
            .fetch_optional(&store.pool)
            .await?;
    let Some(account_id) = account_id else {
        return Ok(None);
    };
    // One mapping of group rows (permissions, member count): the account's list.
    Ok(store
        .groups(&account_id)
        .await?
        .into_iter()
        .find(|g| g.id == id))
}

/// A write transaction that takes the write lock at once (`BEGIN IMMEDIATE`). A deferred
/// one reads first and then upgrades, and SQLite refuses that upgrade at once ("database
/// is locked", without waiting the busy timeout) while another connection writes; an
/// immediate one waits for the lock like any other statement.
async fn write(pool: &SqlitePool) -> Result<Transaction<'static, Sqlite>, sqlx::Error> {
    super::begin_write(pool).await
}

/// The user as stored now, read inside the transaction.
async fn user_in(tx: &mut Transaction<'_, Sqlite>, user_id: &str) -> Result<User, StoreError> {
    user_where(tx, "u.id = ?", Some(user_id))
        .await?
        .pop()
        .ok_or_else(|| StoreError::NotFound {
            what: "user",
            id: user_id.to_owned(),
        })
}

pub(super) async fn update_user(
    pool: &SqlitePool,
    user_id: &str,
    name: &str,
    now: i64,
    actor: Actor<'_>,
) -> Result<User, StoreError> {
    let mut tx = write(pool).await?;
    let before = user_in(&mut tx, user_id).await?;
    if before.name == name {
        return Ok(before);
    }
    sqlx::query("UPDATE users SET name = ? WHERE id = ?")
        .bind(name)
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
    audit(
        &mut tx,
        now,
        actor,
        "user.updated",
        Some(&before.account_id),
        None,
        serde_json::json!({
            "user_id": user_id,
            "name": { "old": before.name, "new": name },
        }),
    )
    .await?;
    let user = user_in(&mut tx, user_id).await?;
    tx.commit().await?;
    Ok(user)
}

pub(super) async fn set_user_groups(
    pool: &SqlitePool,
    user_id: &str,
    group_ids: &[String],
    now: i64,
    actor: Actor<'_>,
) -> Result<User, StoreError> {
    let wanted: BTreeSet<&str> = group_ids.iter().map(String::as_str).collect();
    if wanted.is_empty() {
        return Err(StoreError::Conflict(
            "a user must be in at least one group".into(),
        ));
    }
    let mut tx = write(pool).await?;
    let user = user_in(&mut tx, user_id).await?;
    for group_id in &wanted {
        let found: Option<String> =
            sqlx::query_scalar("SELECT id FROM groups WHERE id = ? AND account_id = ?")
                .bind(group_id)
                .bind(&user.account_id)
                .fetch_optional(&mut *tx)
                .await?;
        if found.is_none() {
            return Err(StoreError::NotFound {
                what: "group in the user's account",
                id: (*group_id).to_owned(),
            });
        }
    }
    let current: Vec<String> =
        sqlx::query_scalar("SELECT group_id FROM user_groups WHERE user_id = ? ORDER BY group_id")
            .bind(user_id)
            .fetch_all(&mut *tx)
            .await?;
    if current
        .iter()
        .map(String::as_str)
        .eq(wanted.iter().copied())
    {
        return Ok(user);
    }
    let before = administrators(&mut tx, &user.account_id).await?;
    sqlx::query("DELETE FROM user_groups WHERE user_id = ?")
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
    for group_id in &wanted {
        sqlx::query("INSERT INTO user_groups (user_id, group_id) VALUES (?, ?)")
            .bind(user_id)
            .bind(group_id)
            .execute(&mut *tx)
            .await?;
    }
    if before > 0 && administrators(&mut tx, &user.account_id).await? == 0 {
        return Err(StoreError::LastAdministrator {
            account_id: user.account_id,
        });
    }
    audit(
        &mut tx,
        now,
        actor,
        "user.groups_set",
        Some(&user.account_id),
        None,
        serde_json::json!({
            "user_id": user_id,
            "group_ids": { "old": current, "new": wanted },
        }),
    )
    .await?;
    let user = user_in(&mut tx, user_id).await?;
    tx.commit().await?;
    Ok(user)
}

pub(super) async fn delete_group(
    pool: &SqlitePool,
    group_id: &str,
    now: i64,
    actor: Actor<'_>,
) -> Result<(), StoreError> {
    let mut tx = write(pool).await?;
    let row: Option<(String, String)> =
        sqlx::query_as("SELECT account_id, name FROM groups WHERE id = ?")
            .bind(group_id)
            .fetch_optional(&mut *tx)
            .await?;
    let Some((account_id, name)) = row else {
        return Err(StoreError::NotFound {
            what: "group",
            id: group_id.to_owned(),
        });
    };
    if name == ADMINISTRATORS_GROUP {
        return Err(StoreError::Conflict(format!(
            "the {ADMINISTRATORS_GROUP} group cannot be deleted: every account keeps it"
        )));
    }
    let members: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM user_groups WHERE group_id = ?")
        .bind(group_id)
        .fetch_one(&mut *tx)
        .await?;
    if members > 0 {
        return Err(StoreError::Conflict(format!(
            "the group {name:?} still has {members} member(s); move them to other groups \
             first, then delete it"
        )));
    }
    let permissions: Vec<String> = sqlx::query_scalar(
        "SELECT permission FROM group_permissions WHERE group_id = ? ORDER BY permission",
    )
    .bind(group_id)
    .fetch_all(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM group_permissions WHERE group_id = ?")
        .bind(group_id)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM groups WHERE id = ?")
        .bind(group_id)
        .execute(&mut *tx)
        .await?;
    audit(
        &mut tx,
        now,
        actor,
        "group.deleted",
        Some(&account_id),
        None,
        serde_json::json!({
            "group_id": group_id,
            "name": name,
            "permissions": permissions,
        }),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::permissions::{Permission, PermissionSet};

    async fn setup() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("t.db")).await.unwrap();
        for id in ["a", "b"] {
            let account = Account {
                id: id.into(),
                name: id.into(),
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
            let code = NewCode {
                public_id: format!("C{id}"),
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
            };
            store.create_account(&account, &code, "test").await.unwrap();
        }
        (dir, store)
    }

    async fn group_named(store: &SqliteStore, account: &str, name: &str) -> Group {
        store
            .groups(account)
            .await
            .unwrap()
            .into_iter()
            .find(|g| g.name == name)
            .unwrap()
    }

    async fn new_group(store: &SqliteStore, account: &str, name: &str, p: &[Permission]) -> Group {
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

    /// An active user of `account` in `group_id`.
    async fn active_user(store: &SqliteStore, account: &str, email: &str, group_id: &str) -> User {
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
        let hash = email.as_bytes().to_vec();
        let invitation = Invitation {
            token_hash: hash.clone(),
            user_id: user.id.clone(),
            created_at: 1,
            expires_at: i64::MAX,
            used_at: None,
            replaced_at: None,
        };
        store
            .create_invited_user(&user, group_id, &invitation, "test")
            .await
            .unwrap();
        store
            .accept_invitation(&Acceptance {
                token_hash: &hash,
                password_hash: "$argon2id$not-a-real-hash",
                terms_version: "1",
                now: 2,
            })
            .await
            .unwrap()
    }

    async fn actions(store: &SqliteStore) -> Vec<String> {
        store
            .audit_log(1000)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.action)
            .collect()
    }

    #[tokio::test]
    async fn renaming_audits_old_and_new_name_and_the_same_name_writes_nothing() {
        let (_dir, store) = setup().await;
        let admins = group_named(&store, "a", ADMINISTRATORS_GROUP).await;
        let user = active_user(&store, "a", "jo@example.com", &admins.id).await;
        let renamed = store
            .update_user(&user.id, "New Name", 5, "user:x@192.0.2.7")
            .await
            .unwrap();
        assert_eq!(renamed.name, "New Name");
        assert_eq!(
            store.user(&user.id).await.unwrap().unwrap().name,
            "New Name"
        );
        let entry = store.audit_log(1).await.unwrap().remove(0);
        assert_eq!(entry.action, "user.updated");
        assert_eq!(entry.source.as_deref(), Some("192.0.2.7"));
        assert!(entry.detail.contains("Old Name") && entry.detail.contains("New Name"));
        let count = actions(&store).await.len();
        store
            .update_user(&user.id, "New Name", 6, "test")
            .await
            .unwrap();
        assert_eq!(
            actions(&store).await.len(),
            count,
            "no change, no audit row"
        );
        assert!(matches!(
            store.update_user("nobody", "X", 7, "test").await,
            Err(StoreError::NotFound { .. })
        ));
    }

    #[tokio::test]
    async fn groups_are_replaced_only_with_groups_of_the_users_account() {
        let (_dir, store) = setup().await;
        let admins = group_named(&store, "a", ADMINISTRATORS_GROUP).await;
        let viewers = new_group(&store, "a", "Viewers", &[Permission::RecordersView]).await;
        let other = group_named(&store, "b", ADMINISTRATORS_GROUP).await;
        active_user(&store, "a", "boss@example.com", &admins.id).await;
        let user = active_user(&store, "a", "jo@example.com", &admins.id).await;

        assert!(matches!(
            store
                .set_user_groups(&user.id, &[viewers.id.clone(), other.id.clone()], 5, "t")
                .await,
            Err(StoreError::NotFound { .. })
        ));
        assert!(matches!(
            store.set_user_groups(&user.id, &[], 5, "t").await,
            Err(StoreError::Conflict(_))
        ));
        assert_eq!(
            store.user(&user.id).await.unwrap().unwrap().groups,
            vec![ADMINISTRATORS_GROUP.to_string()],
            "refusals write nothing"
        );

        let moved = store
            .set_user_groups(&user.id, std::slice::from_ref(&viewers.id), 5, "t")
            .await
            .unwrap();
        assert_eq!(moved.groups, vec!["Viewers".to_string()]);
        let entry = store.audit_log(1).await.unwrap().remove(0);
        assert_eq!(entry.action, "user.groups_set");
        assert!(entry.detail.contains(&admins.id) && entry.detail.contains(&viewers.id));
        assert_eq!(group_named(&store, "a", "Viewers").await.members, 1);
    }

    #[tokio::test]
    async fn the_last_administrator_cannot_be_moved_out_of_administration() {
        let (_dir, store) = setup().await;
        let admins = group_named(&store, "a", ADMINISTRATORS_GROUP).await;
        let viewers = new_group(&store, "a", "Viewers", &[Permission::RecordersView]).await;
        let boss = active_user(&store, "a", "boss@example.com", &admins.id).await;
        let before = actions(&store).await.len();
        assert!(matches!(
            store
                .set_user_groups(&boss.id, std::slice::from_ref(&viewers.id), 5, "t")
                .await,
            Err(StoreError::LastAdministrator { .. })
        ));
        assert_eq!(
            store.user(&boss.id).await.unwrap().unwrap().groups,
            vec![ADMINISTRATORS_GROUP.to_string()]
        );
        assert_eq!(actions(&store).await.len(), before, "nothing written");
        // Adding a group while keeping Administrators is fine.
        let both = store
            .set_user_groups(&boss.id, &[viewers.id.clone(), admins.id.clone()], 5, "t")
            .await
            .unwrap();
        assert_eq!(both.groups.len(), 2);
    }

    #[tokio::test]
    async fn only_an_empty_group_other_than_administrators_is_deleted() {
        let (_dir, store) = setup().await;
        let admins = group_named(&store, "a", ADMINISTRATORS_GROUP).await;
        let viewers = new_group(&store, "a", "Viewers", &[Permission::RecordersView]).await;
        let user = active_user(&store, "a", "v@example.com", &viewers.id).await;
        active_user(&store, "a", "boss@example.com", &admins.id).await;

        let err = store.delete_group(&admins.id, 5, "t").await.unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{err}");
        let err = store.delete_group(&viewers.id, 5, "t").await.unwrap_err();
        assert!(
            matches!(&err, StoreError::Conflict(m) if m.contains("1 member")),
            "{err}"
        );
        store
            .set_user_groups(&user.id, std::slice::from_ref(&admins.id), 5, "t")
            .await
            .unwrap();
        store.delete_group(&viewers.id, 6, "t").await.unwrap();
        assert!(store.group(&viewers.id).await.unwrap().is_none());
        assert_eq!(store.groups("a").await.unwrap().len(), 1);
        let entry = store.audit_log(1).await.unwrap().remove(0);
        assert_eq!(entry.action, "group.deleted");
        assert_eq!(entry.account_id.as_deref(), Some("a"));
        assert!(entry.detail.contains("recorders.view"));
        assert!(matches!(
            store.delete_group(&viewers.id, 7, "t").await,
            Err(StoreError::NotFound { .. })
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_changes_wait_for_each_other_instead_of_failing() {
        let (_dir, store) = setup().await;
        let store = std::sync::Arc::new(store);
        let admins = group_named(&store, "a", ADMINISTRATORS_GROUP).await;
        let viewers = new_group(&store, "a", "Viewers", &[Permission::RecordersView]).await;
        active_user(&store, "a", "boss@example.com", &admins.id).await;
        let mut users = Vec::new();
        for i in 0..8 {
            users.push(active_user(&store, "a", &format!("u{i}@example.com"), &admins.id).await);
        }
        let mut tasks = Vec::new();
        for (i, user) in users.into_iter().enumerate() {
            let store = store.clone();
            let viewers = viewers.id.clone();
            tasks.push(tokio::spawn(async move {
                store
                    .update_user(&user.id, &format!("Name {i}"), 5, "t")
                    .await?;
                store.set_user_groups(&user.id, &[viewers], 5, "t").await
            }));
        }
        for task in tasks {
            let user = task.await.unwrap().unwrap();
            assert_eq!(user.groups, vec!["Viewers".to_string()]);
        }
        assert_eq!(group_named(&store, "a", "Viewers").await.members, 8);
    }

    #[tokio::test]
    async fn a_group_is_found_by_id_with_its_permissions_and_members() {
        let (_dir, store) = setup().await;
        let admins = group_named(&store, "a", ADMINISTRATORS_GROUP).await;
        active_user(&store, "a", "boss@example.com", &admins.id).await;
        let found = store.group(&admins.id).await.unwrap().unwrap();
        assert_eq!(found.account_id, "a");
        assert_eq!(found.permissions, PermissionSet::all());
        assert_eq!(found.members, 1);
        assert!(store.group("nope").await.unwrap().is_none());
    }
}
