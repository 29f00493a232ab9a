//! Users and groups for the admin API: one group by id, renaming a user, replacing a
//! user's groups, deleting a group. Each write is one transaction with its audit row.

use std::collections::BTreeSet;

use sqlx::PgPool;

use super::{administrators, audit, lock_account, lock_user, user_where, PostgresStore, Tx};
use crate::store::*;

pub(super) async fn group(store: &PostgresStore, id: &str) -> Result<Option<Group>, StoreError> {
    let account_id: Option<String> =
        sqlx::query_scalar("SELECT account_id FROM groups WHERE id = $1")
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

/// The user as stored now, read inside the transaction.
async fn user_in(tx: &mut Tx, user_id: &str) -> Result<User, StoreError> {
    user_where(tx, "u.id = $1", Some(user_id))
        .await?
        .pop()
        .ok_or_else(|| StoreError::NotFound {
            what: "user",
            id: user_id.to_owned(),
        })
}

pub(super) async fn update_user(
    pool: &PgPool,
    user_id: &str,
    name: &str,
    now: i64,
    actor: Actor<'_>,
) -> Result<User, StoreError> {
    let mut tx = pool.begin().await?;
    // The user's row is locked before it is read: the old name audited is the one this
    // rename replaces.
    lock_user(&mut tx, user_id).await?;
    let before = user_in(&mut tx, user_id).await?;
    if before.name == name {
        return Ok(before);
    }
    sqlx::query("UPDATE users SET name = $1 WHERE id = $2")
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
    pool: &PgPool,
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
    let mut tx = pool.begin().await?;
    let user = user_in(&mut tx, user_id).await?;
    // The account's row orders this after any other change to its administrators (see
    // set_user_disabled); FOR KEY SHARE keeps each wanted group from being deleted until
    // this commits (a concurrent delete then finds a member and refuses).
    lock_account(&mut tx, &user.account_id).await?;
    for group_id in &wanted {
        let found: Option<String> = sqlx::query_scalar(
            "SELECT id FROM groups WHERE id = $1 AND account_id = $2 FOR KEY SHARE",
        )
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
        sqlx::query_scalar("SELECT group_id FROM user_groups WHERE user_id = $1 ORDER BY group_id")
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
    sqlx::query("DELETE FROM user_groups WHERE user_id = $1")
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
    for group_id in &wanted {
        sqlx::query("INSERT INTO user_groups (user_id, group_id) VALUES ($1, $2)")
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
    pool: &PgPool,
    group_id: &str,
    now: i64,
    actor: Actor<'_>,
) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    // FOR UPDATE: a concurrent insert of a member (which share-locks the group) either
    // committed before, and is counted below, or waits and then finds the group gone.
    let row: Option<(String, String)> =
        sqlx::query_as("SELECT account_id, name FROM groups WHERE id = $1 FOR UPDATE")
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
    let members: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM user_groups WHERE group_id = $1")
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
        "SELECT permission FROM group_permissions WHERE group_id = $1 ORDER BY permission",
    )
    .bind(group_id)
    .fetch_all(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM group_permissions WHERE group_id = $1")
        .bind(group_id)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM groups WHERE id = $1")
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
