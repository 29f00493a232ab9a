//! Recorders in the admin API (migration 0007): the paged, filtered list, renaming,
//! moving between accounts and confirming a flagged replacement.
//!
//! Each write starts with a write (it touches `updated_at`), so that its transaction holds
//! the write lock before it reads what it then checks: a concurrent change cannot slip in
//! between the check and the write. Returning early drops the transaction, which rolls
//! that first write back.

use sqlx::{Sqlite, SqlitePool, Transaction};

use super::{
    account_from_row, audit, recorder_by, recorder_from_row, ACCOUNT_SELECT, RECORDER_COLUMNS,
};
use crate::store::*;

pub(super) async fn recorder_page(
    pool: &SqlitePool,
    q: &RecorderQuery,
) -> Result<Vec<Recorder>, StoreError> {
    let accounts = serde_json::to_string(&q.accounts).expect("a list of strings serializes");
    let text = q.text.as_deref().filter(|t| !t.is_empty());
    // `instr(lower(..), lower(..))` rather than LIKE: the text is matched as it is, with no
    // wildcard to escape. SQLite's lower() folds ASCII letters only, on both sides alike.
    let rows = sqlx::query(&format!(
        "SELECT {RECORDER_COLUMNS} FROM recorders \
         WHERE account_id IN (SELECT value FROM json_each(?1)) \
         AND (?2 IS NULL OR id > ?2) \
         AND (?3 IS NULL OR (revoked_at IS NOT NULL) = ?3) \
         AND (?4 IS NULL OR (revoked_at IS NULL AND COALESCE(online_until, 0) > ?5) = ?4) \
         AND (?6 IS NULL OR instr(lower(COALESCE(name, '')), lower(?6)) > 0 \
              OR instr(lower(serial), lower(?6)) > 0 OR instr(lower(model), lower(?6)) > 0 \
              OR instr(lower(COALESCE(mac, '')), lower(?6)) > 0) \
         ORDER BY id LIMIT ?7"
    ))
    .bind(accounts)
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

/// Takes the write lock by touching the recorder, then reads it; `NotFound` if unknown.
async fn lock_recorder(
    tx: &mut Transaction<'_, Sqlite>,
    id: &str,
    now: i64,
) -> Result<Recorder, StoreError> {
    let touched = sqlx::query("UPDATE recorders SET updated_at = ? WHERE id = ?")
        .bind(now)
        .bind(id)
        .execute(&mut **tx)
        .await?
        .rows_affected();
    let found = if touched == 1 {
        recorder_by(tx, "id", id).await?
    } else {
        None
    };
    found.ok_or_else(|| StoreError::NotFound {
        what: "recorder",
        id: id.to_owned(),
    })
}

async fn reread(tx: &mut Transaction<'_, Sqlite>, id: &str) -> Result<Recorder, StoreError> {
    recorder_by(tx, "id", id)
        .await?
        .ok_or_else(|| StoreError::NotFound {
            what: "recorder",
            id: id.to_owned(),
        })
}

pub(super) async fn rename_recorder(
    pool: &SqlitePool,
    id: &str,
    name: Option<&str>,
    now: i64,
    actor: Actor<'_>,
) -> Result<Recorder, StoreError> {
    let mut tx = super::begin_write(pool).await?;
    let recorder = lock_recorder(&mut tx, id, now).await?;
    if recorder.name.as_deref() == name {
        // Nothing changes: the touch is rolled back with the transaction.
        return Ok(recorder);
    }
    sqlx::query("UPDATE recorders SET name = ? WHERE id = ?")
        .bind(name)
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
    pool: &SqlitePool,
    id: &str,
    from_account: &str,
    to_account: &str,
    now: i64,
    actor: Actor<'_>,
) -> Result<Recorder, StoreError> {
    let mut tx = super::begin_write(pool).await?;
    let recorder = lock_recorder(&mut tx, id, now).await?;
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
    let target = sqlx::query(&format!("{ACCOUNT_SELECT} WHERE a.id = ?"))
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
    sqlx::query("UPDATE recorders SET account_id = ? WHERE id = ?")
        .bind(to_account)
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
    pool: &SqlitePool,
    id: &str,
    replaces: &str,
    now: i64,
    actor: Actor<'_>,
) -> Result<Recorder, StoreError> {
    let mut tx = super::begin_write(pool).await?;
    let recorder = lock_recorder(&mut tx, id, now).await?;
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
    let old = reread(&mut tx, replaces).await?;
    let revoked = sqlx::query(
        "UPDATE recorders SET revoked_at = ?, online_until = NULL, updated_at = ? \
         WHERE id = ? AND revoked_at IS NULL",
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
    sqlx::query("UPDATE recorders SET replacement_confirmed_at = ? WHERE id = ?")
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
