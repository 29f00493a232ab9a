//! Recorders in the admin API (migration 0007): the paged, filtered list, renaming,
//! moving between accounts and confirming a flagged replacement.
//!
//! Each write locks the recorder's row as it reads it (`FOR NO KEY UPDATE`), so that a
//! concurrent change (another admin, an enrollment, a revocation on another replica)
//! cannot slip in between the check and the write. Returning early drops the transaction,
//! which releases the lock.

use sqlx::PgPool;

use super::{
    account_from_row, audit, recorder_by, recorder_from_row, Lock, Tx, ACCOUNT_SELECT,
    RECORDER_COLUMNS,
};
use crate::store::*;

pub(super) async fn recorder_page(
    pool: &PgPool,
    q: &RecorderQuery,
) -> Result<Vec<Recorder>, StoreError> {
    let text = q.text.as_deref().filter(|t| !t.is_empty());
    // `strpos(lower(..), lower(..))` rather than LIKE: the text is matched as it is, with no
    // wildcard to escape. Under the "C" collation (the columns', and the parameter's, given
    // explicitly) lower() folds ASCII letters only, as SQLite's does, on both sides alike.
    let rows = sqlx::query(&format!(
        "SELECT {RECORDER_COLUMNS} FROM recorders \
         WHERE account_id = ANY($1) \
         AND ($2::text IS NULL OR id > $2) \
         AND ($3::boolean IS NULL OR (revoked_at IS NOT NULL) = $3) \
         AND ($4::boolean IS NULL OR (revoked_at IS NULL AND COALESCE(online_until, 0) > $5) = $4) \
         AND ($6::text IS NULL OR strpos(lower(COALESCE(name, '')), lower($6::text COLLATE \"C\")) > 0 \
              OR strpos(lower(serial), lower($6::text COLLATE \"C\")) > 0 \
              OR strpos(lower(model), lower($6::text COLLATE \"C\")) > 0 \
              OR strpos(lower(COALESCE(mac, '')), lower($6::text COLLATE \"C\")) > 0) \
         ORDER BY id LIMIT $7"
    ))
    .bind(&q.accounts)
    .bind(&q.after_id)
    .bind(q.revoked)
    .bind(q.online)
    .bind(q.now)
    .bind(text)
    .bind(q.limit)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .map(recorder_from_row)
        .collect::<Result<_, _>>()?)
}

/// Reads the recorder and locks its row until the transaction ends; `NotFound` if unknown.
async fn lock_recorder(tx: &mut Tx, id: &str) -> Result<Recorder, StoreError> {
    recorder_by(tx, "id", id, Lock::ForChange)
        .await?
        .ok_or_else(|| StoreError::NotFound {
            what: "recorder",
            id: id.to_owned(),
        })
}

async fn reread(tx: &mut Tx, id: &str) -> Result<Recorder, StoreError> {
    recorder_by(tx, "id", id, Lock::None)
        .await?
        .ok_or_else(|| StoreError::NotFound {
            what: "recorder",
            id: id.to_owned(),
        })
}

pub(super) async fn rename_recorder(
    pool: &PgPool,
    id: &str,
    name: Option<&str>,
    now: i64,
    actor: Actor<'_>,
) -> Result<Recorder, StoreError> {
    let mut tx = pool.begin().await?;
    let recorder = lock_recorder(&mut tx, id).await?;
    if recorder.name.as_deref() == name {
        // Nothing changes: dropping the transaction releases the lock.
        return Ok(recorder);
    }
    sqlx::query("UPDATE recorders SET name = $1, updated_at = $2 WHERE id = $3")
        .bind(name)
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?;
    audit(
        &mut tx,
        now,
        actor,
        "recorder.renamed",
        Some(&recorder.account_id),
        Some(id),
        serde_json::json!({ "from": recorder.name, "to": name }),
    )
    .await?;
    let renamed = reread(&mut tx, id).await?;
    tx.commit().await?;
    Ok(renamed)
}

pub(super) async fn move_recorder(
    pool: &PgPool,
    id: &str,
    from_account: &str,
    to_account: &str,
    now: i64,
    actor: Actor<'_>,
) -> Result<Recorder, StoreError> {
    let mut tx = pool.begin().await?;
    let recorder = lock_recorder(&mut tx, id).await?;
    if recorder.revoked_at.is_some() {
        return Err(StoreError::Conflict(
            "this recorder is revoked and stays where it was revoked; a device that should \
             work again enrolls with the target account's registration code"
                .into(),
        ));
    }
    if recorder.account_id != from_account {
        return Err(StoreError::Conflict(
            "this recorder was moved to another account meanwhile; load it again and retry".into(),
        ));
    }
    if recorder.account_id == to_account {
        return Err(StoreError::Conflict(
            "account_id: the recorder is in that account already; give another account".into(),
        ));
    }
    // The target and every account above it are share-locked before they are read: a
    // concurrent disable of any of them (an UPDATE) waits until the move committed, or
    // the move waits and then sees it, never a move into an account disabled meanwhile.
    sqlx::query(
        "WITH RECURSIVE up(id, parent_id, depth) AS ( \
           SELECT id, parent_id, 0 FROM accounts WHERE id = $1 \
           UNION ALL SELECT a.id, a.parent_id, up.depth + 1 FROM accounts a \
           JOIN up ON a.id = up.parent_id WHERE up.depth < 64) \
         SELECT a.id FROM accounts a WHERE a.id IN (SELECT id FROM up) ORDER BY a.id FOR SHARE OF a",
    )
    .bind(to_account)
    .execute(&mut *tx)
    .await?;
    let target = sqlx::query(&format!("{ACCOUNT_SELECT} WHERE a.id = $1"))
        .bind(to_account)
        .fetch_optional(&mut *tx)
        .await?
        .as_ref()
        .map(account_from_row)
        .transpose()?
        .ok_or_else(|| StoreError::NotFound {
            what: "account",
            id: to_account.to_owned(),
        })?;
    if target.effectively_disabled() {
        let why = if target.disabled_via.as_deref() == Some(to_account) {
            "that account is disabled".to_owned()
        } else {
            "an account above that one is disabled".to_owned()
        };
        return Err(StoreError::Conflict(format!(
            "account_id: {why}, so its recorders could not renew; enable it first, or move \
             the recorder to another account"
        )));
    }
    sqlx::query("UPDATE recorders SET account_id = $1, updated_at = $2 WHERE id = $3")
        .bind(to_account)
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?;
    audit(
        &mut tx,
        now,
        actor,
        "recorder.moved",
        Some(to_account),
        Some(id),
        serde_json::json!({ "from_account": from_account, "to_account": to_account }),
    )
    .await?;
    let moved = reread(&mut tx, id).await?;
    tx.commit().await?;
    Ok(moved)
}

pub(super) async fn confirm_replacement(
    pool: &PgPool,
    id: &str,
    replaces: &str,
    now: i64,
    actor: Actor<'_>,
) -> Result<Recorder, StoreError> {
    let mut tx = pool.begin().await?;
    let recorder = lock_recorder(&mut tx, id).await?;
    if recorder.revoked_at.is_some() {
        return Err(StoreError::Conflict(
            "this recorder is revoked itself, so it replaces nothing; nothing to confirm".into(),
        ));
    }
    if recorder.replacement_confirmed_at.is_some() {
        return Err(StoreError::Conflict(
            "this replacement was confirmed already; nothing to do".into(),
        ));
    }
    if recorder.replaces.as_deref() != Some(replaces) {
        return Err(StoreError::Conflict(
            "this recorder is not flagged as a possible replacement (a new key with the serial \
             of an enrolled recorder); nothing to confirm"
                .into(),
        ));
    }
    // The old recorder is locked too (after this one, always in this order), so its
    // account and serial audited below are those it is revoked with.
    let old = recorder_by(&mut tx, "id", replaces, Lock::ForChange)
        .await?
        .ok_or_else(|| StoreError::NotFound {
            what: "recorder",
            id: replaces.to_owned(),
        })?;
    let revoked = sqlx::query(
        "UPDATE recorders SET revoked_at = $1, online_until = NULL, updated_at = $2 \
         WHERE id = $3 AND revoked_at IS NULL",
    )
    .bind(now)
    .bind(now)
    .bind(replaces)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if revoked {
        audit(
            &mut tx,
            now,
            actor,
            "recorder.revoked",
            Some(&old.account_id),
            Some(replaces),
            serde_json::json!({ "serial": old.serial, "replaced_by": id }),
        )
        .await?;
    }
    sqlx::query(
        "UPDATE recorders SET replacement_confirmed_at = $1, updated_at = $2 WHERE id = $3",
    )
    .bind(now)
    .bind(now)
    .bind(id)
    .execute(&mut *tx)
    .await?;
    audit(
        &mut tx,
        now,
        actor,
        "recorder.replacement_confirmed",
        Some(&recorder.account_id),
        Some(id),
        serde_json::json!({ "replaces": replaces, "serial": recorder.serial, "revoked_old": revoked }),
    )
    .await?;
    let confirmed = reread(&mut tx, id).await?;
    tx.commit().await?;
    Ok(confirmed)
}
