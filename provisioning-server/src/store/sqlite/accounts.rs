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
