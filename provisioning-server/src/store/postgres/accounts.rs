//! Accounts and registration codes for the admin API: an account created together with its
//! first user, code limits changed after the fact, and recorder counts per account.

use sqlx::{PgPool, Row};

use super::{audit, code_info_from_row, insert_account, insert_invited_user, CODE_INFO_SELECT};
use crate::accounts::{CodeUpdate, RecorderCounts};
use crate::store::*;

pub(super) async fn create_account_with_first_user(
    pool: &PgPool,
    account: &Account,
    code: &NewCode,
    user: &User,
    invitation: &Invitation,
    actor: Actor<'_>,
) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    insert_account(&mut tx, account, code, actor).await?;
    let group_id: String =
        sqlx::query_scalar("SELECT id FROM groups WHERE account_id = $1 AND name = $2")
            .bind(&account.id)
            .bind(ADMINISTRATORS_GROUP)
            .fetch_one(&mut *tx)
            .await?;
    insert_invited_user(&mut tx, user, &group_id, invitation, actor).await?;
    tx.commit().await?;
    Ok(())
}

pub(super) async fn update_code(
    pool: &PgPool,
    public_id: &str,
    update: &CodeUpdate,
    now: i64,
    actor: Actor<'_>,
) -> Result<CodeInfo, StoreError> {
    let mut tx = pool.begin().await?;
    // The row is locked as it is read: two concurrent updates then audit what each really
    // changed (an enrollment counting a use waits too, and vice versa).
    let row = sqlx::query(&format!(
        "{CODE_INFO_SELECT} WHERE public_id = $1 FOR NO KEY UPDATE"
    ))
    .bind(public_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else {
        return Err(StoreError::NotFound {
            what: "registration code",
            id: public_id.to_owned(),
        });
    };
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
        // Dropping the transaction rolls it back, releasing the lock.
        return Ok(info);
    }
    sqlx::query(
        "UPDATE registration_codes SET label = $1, expires_at = $2, max_uses = $3 WHERE public_id = $4",
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
    pool: &PgPool,
    now: i64,
) -> Result<Vec<RecorderCounts>, StoreError> {
    let rows = sqlx::query(
        "SELECT account_id, COUNT(*) AS total, \
         COALESCE(SUM(CASE WHEN online_until > $1 THEN 1 ELSE 0 END), 0) AS online \
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
