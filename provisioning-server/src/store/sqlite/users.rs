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
