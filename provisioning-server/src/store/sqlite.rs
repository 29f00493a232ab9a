//! The embedded SQLite store: one file under the data directory, in WAL mode so the admin
//! CLI can write while the server runs.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, Sqlite, SqlitePool, Transaction};

use super::*;

mod accounts;
mod auth;
mod recorders;
mod users;

pub struct SqliteStore {
    pool: SqlitePool,
}

const RECORDER_COLUMNS: &str = "id, account_id, key_fingerprint, serial, mac, model, firmware, \
    agent_version, replaces, enrolled_at, cert_serial, cert_not_after, last_seen, online_until, \
    status, revoked_at, offline_reason, name, replacement_confirmed_at, uptime_secs";

/// Every account read carries `disabled_via`, the nearest disabled account up its
/// ancestry, from a recursive CTE in the same statement. The heartbeat already reads the
/// recorder's account once per heartbeat; this keeps it one indexed query (primary-key
/// lookups, as many as the tree is deep, capped at 64 levels as a guard against a cycle,
/// which the schema cannot make since a parent is set only at creation) instead of adding
/// one, and needs no cache: a disable or enable by the admin CLI, which is another
/// process, holds from the very next heartbeat, enrollment or renewal, on every server
/// replica.
const ACCOUNT_SELECT: &str = "SELECT a.id, a.name, a.kind, a.parent_id, a.created_at, \
    a.address, a.contact, a.disabled_at, a.disabled_by, \
    (SELECT c.public_id FROM registration_codes c WHERE c.account_id = a.id AND c.disabled_at IS NULL \
     ORDER BY c.created_at DESC LIMIT 1) AS code_public_id, \
    (WITH RECURSIVE up(id, parent_id, disabled_at, depth) AS ( \
       SELECT b.id, b.parent_id, b.disabled_at, 0 FROM accounts b WHERE b.id = a.id \
       UNION ALL \
       SELECT p.id, p.parent_id, p.disabled_at, up.depth + 1 FROM accounts p \
       JOIN up ON p.id = up.parent_id WHERE up.depth < 64) \
     SELECT id FROM up WHERE disabled_at IS NOT NULL ORDER BY depth LIMIT 1) AS disabled_via \
    FROM accounts a";

/// Starts a write transaction that takes SQLite's write lock at once (`BEGIN IMMEDIATE`).
/// A deferred transaction that reads first and writes later cannot wait for the lock when
/// another connection (the admin CLI, the presence flush) committed in between: SQLite
/// answers "database is locked" at once instead of honouring the busy timeout. Taking the
/// lock first makes every writer wait its turn.
async fn begin_write(pool: &SqlitePool) -> Result<Transaction<'static, Sqlite>, sqlx::Error> {
    pool.begin_with("BEGIN IMMEDIATE").await
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and runs the migrations.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        Ok(SqliteStore { pool })
    }
}

fn account_from_row(row: &SqliteRow) -> Result<Account, sqlx::Error> {
    Ok(Account {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        kind: AccountKind::parse(row.try_get::<&str, _>("kind")?),
        parent_id: row.try_get("parent_id")?,
        code_public_id: row.try_get("code_public_id")?,
        created_at: row.try_get("created_at")?,
        address: row.try_get("address")?,
        contact: row.try_get("contact")?,
        disabled_at: row.try_get("disabled_at")?,
        disabled_by: row.try_get("disabled_by")?,
        disabled_via: row.try_get("disabled_via")?,
    })
}

fn recorder_from_row(row: &SqliteRow) -> Result<Recorder, sqlx::Error> {
    Ok(Recorder {
        id: row.try_get("id")?,
        account_id: row.try_get("account_id")?,
        key_fingerprint: row.try_get("key_fingerprint")?,
        serial: row.try_get("serial")?,
        mac: row.try_get("mac")?,
        model: row.try_get("model")?,
        firmware: row.try_get("firmware")?,
        agent_version: row.try_get("agent_version")?,
        replaces: row.try_get("replaces")?,
        enrolled_at: row.try_get("enrolled_at")?,
        cert_serial: row.try_get("cert_serial")?,
        cert_not_after: row.try_get("cert_not_after")?,
        last_seen: row.try_get("last_seen")?,
        online_until: row.try_get("online_until")?,
        status: merge_uptime(row.try_get("status")?, row.try_get("uptime_secs")?),
        revoked_at: row.try_get("revoked_at")?,
        offline_reason: row.try_get("offline_reason")?,
        name: row.try_get("name")?,
        replacement_confirmed_at: row.try_get("replacement_confirmed_at")?,
    })
}

#[allow(clippy::too_many_arguments)]
async fn audit(
    tx: &mut Transaction<'_, Sqlite>,
    at: i64,
    actor: &str,
    action: &str,
    account_id: Option<&str>,
    recorder_id: Option<&str>,
    detail: serde_json::Value,
) -> Result<(), sqlx::Error> {
    let (actor, source) = split_actor(actor);
    sqlx::query(
        "INSERT INTO audit_log (at, actor, action, account_id, recorder_id, detail, source) \
         VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(at)
    .bind(actor)
    .bind(action)
    .bind(account_id)
    .bind(recorder_id)
    .bind(detail.to_string())
    .bind(source)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn audit_entry_from_row(row: &SqliteRow) -> Result<AuditEntry, sqlx::Error> {
    Ok(AuditEntry {
        id: row.try_get("id")?,
        at: row.try_get("at")?,
        actor: row.try_get("actor")?,
        action: row.try_get("action")?,
        account_id: row.try_get("account_id")?,
        recorder_id: row.try_get("recorder_id")?,
        detail: row.try_get("detail")?,
        source: row.try_get("source")?,
    })
}

async fn recorder_by(
    tx: &mut Transaction<'_, Sqlite>,
    column: &str,
    value: &str,
) -> Result<Option<Recorder>, sqlx::Error> {
    let sql = format!("SELECT {RECORDER_COLUMNS} FROM recorders WHERE {column} = ?");
    let row = sqlx::query(&sql)
        .bind(value)
        .fetch_optional(&mut **tx)
        .await?;
    row.as_ref().map(recorder_from_row).transpose()
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_account(
        &self,
        account: &Account,
        code: &NewCode,
        actor: Actor<'_>,
    ) -> Result<(), StoreError> {
        let mut tx = begin_write(&self.pool).await?;
        insert_account(&mut tx, account, code, actor).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn account(&self, id: &str) -> Result<Option<Account>, StoreError> {
        let row = sqlx::query(&format!("{ACCOUNT_SELECT} WHERE a.id = ?"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(account_from_row).transpose()?)
    }

    async fn accounts(&self) -> Result<Vec<Account>, StoreError> {
        let rows = sqlx::query(&format!("{ACCOUNT_SELECT} ORDER BY a.created_at, a.name"))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(account_from_row)
            .collect::<Result<_, _>>()?)
    }

    async fn rotate_code(
        &self,
        account_id: &str,
        code: &NewCode,
        now: i64,
        actor: Actor<'_>,
    ) -> Result<(), StoreError> {
        let mut tx = begin_write(&self.pool).await?;
        let disabled = sqlx::query(
            "UPDATE registration_codes SET disabled_at = ? WHERE account_id = ? AND disabled_at IS NULL RETURNING public_id",
        )
        .bind(now)
        .bind(account_id)
        .fetch_all(&mut *tx)
        .await?;
        let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM accounts WHERE id = ?")
            .bind(account_id)
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_none() {
            return Err(StoreError::NotFound {
                what: "account",
                id: account_id.to_string(),
            });
        }
        insert_code(&mut tx, account_id, code).await?;
        let old: Vec<String> = disabled
            .iter()
            .map(|r| r.try_get::<String, _>("public_id"))
            .collect::<Result<_, _>>()?;
        audit(
            &mut tx,
            now,
            actor,
            "code.rotated",
            Some(account_id),
            None,
            serde_json::json!({ "disabled": old, "code_public_id": code.public_id }),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn code(&self, public_id: &str) -> Result<Option<StoredCode>, StoreError> {
        let row = sqlx::query(
            "SELECT public_id, account_id, secret_hash, disabled_at, expires_at, max_uses, uses \
             FROM registration_codes WHERE public_id = ?",
        )
        .bind(public_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row
            .map(|row| -> Result<StoredCode, sqlx::Error> {
                Ok(StoredCode {
                    public_id: row.try_get("public_id")?,
                    account_id: row.try_get("account_id")?,
                    secret_hash: row.try_get("secret_hash")?,
                    disabled: row.try_get::<Option<i64>, _>("disabled_at")?.is_some(),
                    expires_at: row.try_get("expires_at")?,
                    max_uses: row.try_get("max_uses")?,
                    uses: row.try_get("uses")?,
                })
            })
            .transpose()?)
    }

    async fn enroll(&self, r: &EnrollRecord) -> Result<EnrollOutcome, StoreError> {
        let mut tx = begin_write(&self.pool).await?;
        // The write comes first so the transaction holds the write lock from its start:
        // two racing enrollments of one key serialise here and the loser sees the row. It
        // does nothing when the key (or the id) is taken already.
        let inserted = sqlx::query(
            "INSERT INTO recorders (id, account_id, key_fingerprint, serial, mac, model, firmware, \
             agent_version, enrolled_at, updated_at, cert_serial, cert_not_after) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(&r.recorder_id)
        .bind(&r.account_id)
        .bind(&r.key_fingerprint)
        .bind(&r.serial)
        .bind(&r.mac)
        .bind(&r.model)
        .bind(&r.firmware)
        .bind(&r.agent_version)
        .bind(r.now)
        .bind(r.now)
        .bind(&r.cert_serial)
        .bind(r.cert_not_after)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        // Every successful enrollment is a use of its code. Checked again here, inside the
        // transaction that holds the write lock, so concurrent enrollments cannot exceed
        // max_uses and a code disabled or expired since it was resolved refuses. Returning
        // early rolls everything back.
        let counted = sqlx::query(
            "UPDATE registration_codes SET uses = uses + 1, last_used_at = ?, last_used_recorder = ? \
             WHERE public_id = ? AND disabled_at IS NULL AND (expires_at IS NULL OR expires_at > ?) \
             AND (max_uses IS NULL OR uses < max_uses)",
        )
        .bind(r.now)
        .bind(&r.recorder_id)
        .bind(&r.code_public_id)
        .bind(r.now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if counted != 1 {
            return Err(StoreError::CodeRefused);
        }
        let actor = format!("code:{}", r.code_public_id);
        let kind = if inserted {
            // A new key claiming a serial that is enrolled and not revoked is flagged as a
            // possible replacement of that recorder, in any account of the same tree (the
            // same top-level partner): a device reinstalled, or re-enrolled with another
            // site's code, is still that device, and an admin should see it. A match in the
            // same account is named first. Other trees are never searched: the flag and its
            // audit row would tell one tenant that a serial is enrolled at another, and
            // that recorder's id. The flag is all: the old row is never changed here.
            let replaces: Option<String> = sqlx::query_scalar(
                "WITH RECURSIVE up(id, parent_id, depth) AS ( \
                   SELECT id, parent_id, 0 FROM accounts WHERE id = ?3 \
                   UNION ALL SELECT a.id, a.parent_id, up.depth + 1 FROM accounts a \
                   JOIN up ON a.id = up.parent_id WHERE up.depth < 64), \
                 root(id) AS (SELECT id FROM up ORDER BY depth DESC LIMIT 1), \
                 tree(id, depth) AS ( \
                   SELECT id, 0 FROM root \
                   UNION ALL SELECT a.id, tree.depth + 1 FROM accounts a \
                   JOIN tree ON a.parent_id = tree.id WHERE tree.depth < 64) \
                 SELECT r.id FROM recorders r WHERE r.serial = ?1 AND r.id <> ?2 \
                 AND r.revoked_at IS NULL AND r.account_id IN (SELECT id FROM tree) \
                 ORDER BY r.account_id = ?3 DESC, r.enrolled_at DESC, r.id LIMIT 1",
            )
            .bind(&r.serial)
            .bind(&r.recorder_id)
            .bind(&r.account_id)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(old) = &replaces {
                sqlx::query("UPDATE recorders SET replaces = ? WHERE id = ?")
                    .bind(old)
                    .bind(&r.recorder_id)
                    .execute(&mut *tx)
                    .await?;
            }
            audit(
                &mut tx,
                r.now,
                &actor,
                "recorder.enrolled",
                Some(&r.account_id),
                Some(&r.recorder_id),
                serde_json::json!({ "serial": r.serial, "model": r.model, "replaces": replaces }),
            )
            .await?;
            EnrollKind::New { replaces }
        } else {
            // Returning early drops the transaction, which rolls it back.
            let Some(existing) =
                recorder_by(&mut tx, "key_fingerprint", &r.key_fingerprint).await?
            else {
                // The key is new, but the id the certificate was signed for holds another
                // key now (that recorder renewed with a new key since the lookup).
                return Err(StoreError::EnrollmentRaced { recorder_id: None });
            };
            if existing.revoked_at.is_some() {
                return Err(StoreError::Revoked);
            }
            if existing.id != r.recorder_id {
                // A concurrent enrollment of this key committed first, under another id.
                return Err(StoreError::EnrollmentRaced {
                    recorder_id: Some(existing.id),
                });
            }
            sqlx::query(
                "UPDATE recorders SET account_id = ?, serial = ?, mac = ?, model = ?, firmware = ?, \
                 agent_version = ?, cert_serial = ?, cert_not_after = ?, updated_at = ? WHERE id = ?",
            )
            .bind(&r.account_id)
            .bind(&r.serial)
            .bind(&r.mac)
            .bind(&r.model)
            .bind(&r.firmware)
            .bind(&r.agent_version)
            .bind(&r.cert_serial)
            .bind(r.cert_not_after)
            .bind(r.now)
            .bind(&existing.id)
            .execute(&mut *tx)
            .await?;
            if existing.account_id != r.account_id {
                audit(
                    &mut tx,
                    r.now,
                    &actor,
                    "recorder.moved",
                    Some(&r.account_id),
                    Some(&existing.id),
                    serde_json::json!({ "from_account": existing.account_id, "to_account": r.account_id }),
                )
                .await?;
                EnrollKind::Moved {
                    from_account: existing.account_id,
                }
            } else {
                audit(
                    &mut tx,
                    r.now,
                    &actor,
                    "recorder.re_enrolled",
                    Some(&r.account_id),
                    Some(&existing.id),
                    serde_json::json!({}),
                )
                .await?;
                EnrollKind::Again
            }
        };
        audit(
            &mut tx,
            r.now,
            &actor,
            "certificate.issued",
            None,
            Some(&r.recorder_id),
            serde_json::json!({ "cert_serial": r.cert_serial, "not_after": r.cert_not_after }),
        )
        .await?;
        let recorder = recorder_by(&mut tx, "id", &r.recorder_id)
            .await?
            .ok_or_else(|| StoreError::Conflict("recorder vanished during enrollment".into()))?;
        tx.commit().await?;
        Ok(EnrollOutcome { recorder, kind })
    }

    async fn recorder_by_key(&self, key_fingerprint: &str) -> Result<Option<Recorder>, StoreError> {
        let sql = format!("SELECT {RECORDER_COLUMNS} FROM recorders WHERE key_fingerprint = ?");
        let row = sqlx::query(&sql)
            .bind(key_fingerprint)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(recorder_from_row).transpose()?)
    }

    async fn remove_incomplete_enrollments(&self, now: i64) -> Result<usize, StoreError> {
        const INCOMPLETE: &str =
            "SELECT id FROM recorders WHERE cert_serial IS NULL AND revoked_at IS NULL";
        let mut tx = begin_write(&self.pool).await?;
        // A write first, so the transaction holds the write lock before it reads.
        sqlx::query(&format!(
            "UPDATE recorders SET replaces = NULL WHERE replaces IN ({INCOMPLETE})"
        ))
        .execute(&mut *tx)
        .await?;
        let removed: Vec<String> = sqlx::query_scalar(&format!(
            "DELETE FROM recorders WHERE id IN ({INCOMPLETE}) RETURNING id"
        ))
        .fetch_all(&mut *tx)
        .await?;
        if removed.is_empty() {
            return Ok(0);
        }
        audit(
            &mut tx,
            now,
            "server",
            INCOMPLETE_REMOVED_ACTION,
            None,
            None,
            serde_json::json!({ "recorder_ids": removed }),
        )
        .await?;
        tx.commit().await?;
        Ok(removed.len())
    }

    async fn append_audit(&self, entries: &[NewAuditEntry]) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut tx = begin_write(&self.pool).await?;
        for e in entries {
            audit(
                &mut tx,
                e.at,
                &e.actor,
                &e.action,
                e.account_id.as_deref(),
                e.recorder_id.as_deref(),
                e.detail.clone(),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn set_certificate(&self, c: &CertificateRecord<'_>) -> Result<(), StoreError> {
        let CertificateRecord {
            recorder_id,
            key_fingerprint,
            cert_serial,
            not_after,
            actor,
            action,
            now,
        } = *c;
        let mut tx = begin_write(&self.pool).await?;
        let updated = sqlx::query(
            "UPDATE recorders SET key_fingerprint = ?, cert_serial = ?, cert_not_after = ?, updated_at = ? \
             WHERE id = ? AND revoked_at IS NULL",
        )
        .bind(key_fingerprint)
        .bind(cert_serial)
        .bind(not_after)
        .bind(now)
        .bind(recorder_id)
        .execute(&mut *tx)
        .await;
        match updated {
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(StoreError::Conflict(
                    "that key already belongs to another recorder".into(),
                ))
            }
            Err(e) => return Err(e.into()),
            Ok(done) if done.rows_affected() == 0 => return Err(StoreError::Revoked),
            Ok(_) => {}
        }
        audit(
            &mut tx,
            now,
            actor,
            action,
            None,
            Some(recorder_id),
            serde_json::json!({ "cert_serial": cert_serial, "not_after": not_after }),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn recorder(&self, id: &str) -> Result<Option<Recorder>, StoreError> {
        let sql = format!("SELECT {RECORDER_COLUMNS} FROM recorders WHERE id = ?");
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(recorder_from_row).transpose()?)
    }

    async fn recorders(&self, account_id: Option<&str>) -> Result<Vec<Recorder>, StoreError> {
        let rows = match account_id {
            Some(account) => {
                sqlx::query(&format!(
                    "SELECT {RECORDER_COLUMNS} FROM recorders WHERE account_id = ? ORDER BY enrolled_at, id"
                ))
                .bind(account)
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query(&format!(
                    "SELECT {RECORDER_COLUMNS} FROM recorders ORDER BY enrolled_at, id"
                ))
                .fetch_all(&self.pool)
                .await?
            }
        };
        Ok(rows
            .iter()
            .map(recorder_from_row)
            .collect::<Result<_, _>>()?)
    }

    async fn revoke_recorder(
        &self,
        id: &str,
        now: i64,
        actor: Actor<'_>,
    ) -> Result<bool, StoreError> {
        let mut tx = begin_write(&self.pool).await?;
        let changed = sqlx::query(
            "UPDATE recorders SET revoked_at = ?, online_until = NULL, updated_at = ? WHERE id = ? AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        let Some(recorder) = recorder_by(&mut tx, "id", id).await? else {
            return Err(StoreError::NotFound {
                what: "recorder",
                id: id.to_string(),
            });
        };
        if changed {
            audit(
                &mut tx,
                now,
                actor,
                "recorder.revoked",
                Some(&recorder.account_id),
                Some(id),
                serde_json::json!({ "serial": recorder.serial }),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(changed)
    }

    async fn record_presence(&self, batch: &[Presence]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        // One statement, one bound parameter: the batch as a JSON array, however long (a
        // VALUES list would hit SQLite's limit on bound parameters).
        let mut sorted: Vec<&Presence> = batch.iter().collect();
        sorted.sort_by(|a, b| a.recorder_id.cmp(&b.recorder_id));
        let rows: Vec<serde_json::Value> = sorted
            .iter()
            .map(|p| {
                serde_json::json!([
                    p.recorder_id,
                    p.last_seen,
                    p.online_until,
                    p.uptime_secs,
                    p.status
                ])
            })
            .collect();
        let rows = serde_json::Value::Array(rows).to_string();
        // A revoked recorder stays offline whatever heartbeats were in flight; a goodbye
        // newer than the heartbeat stands.
        sqlx::query(
            "UPDATE recorders SET last_seen = MAX(COALESCE(recorders.last_seen, 0), v.last_seen), \
             online_until = CASE WHEN recorders.revoked_at IS NULL THEN v.online_until ELSE NULL END, \
             offline_reason = NULL, uptime_secs = COALESCE(v.uptime_secs, recorders.uptime_secs), \
             status = COALESCE(v.status, recorders.status) \
             FROM (SELECT value ->> 0 AS id, value ->> 1 AS last_seen, value ->> 2 AS online_until, \
                          value ->> 3 AS uptime_secs, value ->> 4 AS status FROM json_each(?)) AS v \
             WHERE recorders.id = v.id \
             AND NOT (recorders.offline_reason IS NOT NULL AND COALESCE(recorders.last_seen, 0) >= v.last_seen)",
        )
        .bind(rows)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn fact_changes_since(&self, since_ms: i64) -> Result<FactChanges, StoreError> {
        let now_ms: i64 =
            sqlx::query_scalar("SELECT CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)")
                .fetch_one(&self.pool)
                .await?;
        let rows = sqlx::query(
            "SELECT recorder_id, account_id FROM fact_changes WHERE at_ms > ? ORDER BY seq",
        )
        .bind(since_ms)
        .fetch_all(&self.pool)
        .await?;
        let mut changes = Vec::with_capacity(rows.len());
        for row in rows {
            let recorder: Option<String> = row.try_get("recorder_id")?;
            let account: Option<String> = row.try_get("account_id")?;
            changes.extend(recorder.map(FactChange::Recorder));
            changes.extend(account.map(FactChange::Account));
        }
        Ok(FactChanges { changes, now_ms })
    }

    async fn prune_fact_changes(&self, before_ms: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM fact_changes WHERE at_ms < ?")
            .bind(before_ms)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    async fn recorder_totals(&self, now: i64) -> Result<RecorderTotals, StoreError> {
        let row = sqlx::query(
            "SELECT \
             COALESCE(SUM(CASE WHEN revoked_at IS NULL AND online_until > ? THEN 1 ELSE 0 END), 0) AS online, \
             COALESCE(SUM(CASE WHEN revoked_at IS NULL AND (online_until IS NULL OR online_until <= ?) THEN 1 ELSE 0 END), 0) AS offline, \
             COALESCE(SUM(CASE WHEN revoked_at IS NOT NULL THEN 1 ELSE 0 END), 0) AS revoked \
             FROM recorders",
        )
        .bind(now)
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        Ok(RecorderTotals {
            online: row.try_get("online")?,
            offline: row.try_get("offline")?,
            revoked: row.try_get("revoked")?,
        })
    }

    fn pool_use(&self) -> PoolUse {
        PoolUse {
            size: self.pool.size(),
            idle: self.pool.num_idle() as u32,
            max: self.pool.options().get_max_connections(),
        }
    }

    async fn record_goodbye(&self, id: &str, now: i64, reason: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE recorders SET last_seen = MAX(COALESCE(last_seen, 0), ?), online_until = ?, \
             offline_reason = ? WHERE id = ?",
        )
        .bind(now)
        .bind(now)
        .bind(reason)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn audit_log(&self, limit: i64) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, at, actor, action, account_id, recorder_id, detail, source FROM audit_log \
             ORDER BY id DESC LIMIT ?",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(audit_entry_from_row)
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    // Registration codes, several per account (migration 0003).
    async fn create_code(
        &self,
        account_id: &str,
        code: &NewCode,
        actor: Actor<'_>,
    ) -> Result<(), StoreError> {
        let mut tx = begin_write(&self.pool).await?;
        let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM accounts WHERE id = ?")
            .bind(account_id)
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_none() {
            return Err(StoreError::NotFound {
                what: "account",
                id: account_id.to_string(),
            });
        }
        insert_code(&mut tx, account_id, code).await?;
        audit(
            &mut tx,
            code.created_at,
            actor,
            "code.created",
            Some(account_id),
            None,
            serde_json::json!({
                "code_public_id": code.public_id,
                "label": code.label,
                "expires_at": code.expires_at,
                "max_uses": code.max_uses,
            }),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn codes(&self, account_id: &str) -> Result<Vec<CodeInfo>, StoreError> {
        let rows = sqlx::query(&format!(
            "{CODE_INFO_SELECT} WHERE account_id = ? ORDER BY created_at DESC, rowid DESC"
        ))
        .bind(account_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(code_info_from_row)
            .collect::<Result<_, _>>()?)
    }

    async fn code_info(&self, public_id: &str) -> Result<Option<CodeInfo>, StoreError> {
        let row = sqlx::query(&format!("{CODE_INFO_SELECT} WHERE public_id = ?"))
            .bind(public_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(code_info_from_row).transpose()?)
    }

    async fn disable_code(
        &self,
        public_id: &str,
        now: i64,
        actor: Actor<'_>,
    ) -> Result<bool, StoreError> {
        let mut tx = begin_write(&self.pool).await?;
        let changed = sqlx::query(
            "UPDATE registration_codes SET disabled_at = ? WHERE public_id = ? AND disabled_at IS NULL \
             RETURNING account_id",
        )
        .bind(now)
        .bind(public_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = changed else {
            let exists: Option<i64> =
                sqlx::query_scalar("SELECT 1 FROM registration_codes WHERE public_id = ?")
                    .bind(public_id)
                    .fetch_optional(&mut *tx)
                    .await?;
            return match exists {
                Some(_) => Ok(false),
                None => Err(StoreError::NotFound {
                    what: "registration code",
                    id: public_id.to_string(),
                }),
            };
        };
        let account_id: String = row.try_get("account_id")?;
        audit(
            &mut tx,
            now,
            actor,
            "code.disabled",
            Some(&account_id),
            None,
            serde_json::json!({ "code_public_id": public_id }),
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn sealed_codes_exist(&self) -> Result<bool, StoreError> {
        let found: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM registration_codes WHERE code_ciphertext IS NOT NULL LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(found.is_some())
    }

    // Account details and disabling (migration 0004).

    async fn update_account(
        &self,
        id: &str,
        update: &AccountUpdate,
        now: i64,
        actor: Actor<'_>,
    ) -> Result<Account, StoreError> {
        let mut tx = begin_write(&self.pool).await?;
        // A write first, so the transaction holds the write lock before it reads: two
        // concurrent updates then audit what each really changed.
        sqlx::query("UPDATE accounts SET name = name WHERE id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let row = sqlx::query(&format!("{ACCOUNT_SELECT} WHERE a.id = ?"))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(mut account) = row.as_ref().map(account_from_row).transpose()? else {
            return Err(StoreError::NotFound {
                what: "account",
                id: id.to_string(),
            });
        };
        let mut changed = serde_json::Map::new();
        if let Some(name) = update.name.as_ref().filter(|n| **n != account.name) {
            changed.insert(
                "name".into(),
                serde_json::json!({ "old": account.name, "new": name }),
            );
            account.name = name.clone();
        }
        if let Some(address) = update.address.as_ref().filter(|a| **a != account.address) {
            changed.insert(
                "address".into(),
                serde_json::json!({ "old": account.address, "new": address }),
            );
            account.address = address.clone();
        }
        if let Some(contact) = update.contact.as_ref().filter(|c| **c != account.contact) {
            changed.insert(
                "contact".into(),
                serde_json::json!({ "old": account.contact, "new": contact }),
            );
            account.contact = contact.clone();
        }
        if changed.is_empty() {
            return Ok(account);
        }
        sqlx::query("UPDATE accounts SET name = ?, address = ?, contact = ? WHERE id = ?")
            .bind(&account.name)
            .bind(&account.address)
            .bind(&account.contact)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        audit(
            &mut tx,
            now,
            actor,
            "account.updated",
            Some(id),
            None,
            serde_json::Value::Object(changed),
        )
        .await?;
        tx.commit().await?;
        Ok(account)
    }

    async fn set_account_disabled(
        &self,
        id: &str,
        disabled: bool,
        now: i64,
        actor: Actor<'_>,
    ) -> Result<bool, StoreError> {
        let mut tx = begin_write(&self.pool).await?;
        let changed = if disabled {
            sqlx::query(
                "UPDATE accounts SET disabled_at = ?, disabled_by = ? WHERE id = ? AND disabled_at IS NULL",
            )
            .bind(now)
            .bind(split_actor(actor).0)
            .bind(id)
        } else {
            sqlx::query(
                "UPDATE accounts SET disabled_at = NULL, disabled_by = NULL WHERE id = ? AND disabled_at IS NOT NULL",
            )
            .bind(id)
        }
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !changed {
            let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM accounts WHERE id = ?")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
            return match exists {
                Some(_) => Ok(false),
                None => Err(StoreError::NotFound {
                    what: "account",
                    id: id.to_string(),
                }),
            };
        }
        let action = if disabled {
            "account.disabled"
        } else {
            "account.enabled"
        };
        audit(
            &mut tx,
            now,
            actor,
            action,
            Some(id),
            None,
            serde_json::json!({}),
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }
    async fn create_invited_user(
        &self,
        user: &User,
        group_id: &str,
        invitation: &Invitation,
        actor: Actor<'_>,
    ) -> Result<(), StoreError> {
        let mut tx = begin_write(&self.pool).await?;
        insert_invited_user(&mut tx, user, group_id, invitation, actor).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn user(&self, id: &str) -> Result<Option<User>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        Ok(user_where(&mut conn, "u.id = ?", Some(id)).await?.pop())
    }

    async fn user_by_email(&self, email: &str) -> Result<Option<User>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        Ok(
            user_where(&mut conn, "lower(u.email) = lower(?)", Some(email))
                .await?
                .pop(),
        )
    }

    async fn users(&self, account_id: Option<&str>) -> Result<Vec<User>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        Ok(user_where(&mut conn, "(?1 IS NULL OR u.account_id = ?1)", account_id).await?)
    }

    async fn replace_invitation(
        &self,
        invitation: &Invitation,
        actor: Actor<'_>,
    ) -> Result<(), StoreError> {
        let mut tx = begin_write(&self.pool).await?;
        let account_id: Option<String> =
            sqlx::query_scalar("SELECT account_id FROM users WHERE id = ? AND status = 'invited'")
                .bind(&invitation.user_id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(account_id) = account_id else {
            return Err(StoreError::NotFound {
                what: "invited user",
                id: invitation.user_id.clone(),
            });
        };
        sqlx::query(
            "UPDATE invitations SET replaced_at = ? \
             WHERE user_id = ? AND used_at IS NULL AND replaced_at IS NULL",
        )
        .bind(invitation.created_at)
        .bind(&invitation.user_id)
        .execute(&mut *tx)
        .await?;
        insert_invitation(&mut tx, invitation).await?;
        audit(
            &mut tx,
            invitation.created_at,
            actor,
            "invitation.resent",
            Some(&account_id),
            None,
            serde_json::json!({
                "user_id": invitation.user_id,
                "expires_at": invitation.expires_at,
            }),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn invitation(&self, token_hash: &[u8]) -> Result<Option<Invitation>, StoreError> {
        auth::emailed_link(&self.pool, "invitations", token_hash).await
    }

    async fn accept_invitation(&self, acceptance: &Acceptance<'_>) -> Result<User, StoreError> {
        let mut tx = begin_write(&self.pool).await?;
        let user_id: Option<String> = sqlx::query_scalar(
            "UPDATE invitations SET used_at = ? \
             WHERE token_hash = ? AND used_at IS NULL AND replaced_at IS NULL AND expires_at > ? \
             RETURNING user_id",
        )
        .bind(acceptance.now)
        .bind(acceptance.token_hash)
        .bind(acceptance.now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(user_id) = user_id else {
            return Err(StoreError::InvitationRefused);
        };
        let updated = sqlx::query(
            "UPDATE users SET status = 'active', password_hash = ?, terms_version = ?, \
             terms_accepted_at = ?, age_confirmed_at = ? WHERE id = ? AND status = 'invited'",
        )
        .bind(acceptance.password_hash)
        .bind(acceptance.terms_version)
        .bind(acceptance.now)
        .bind(acceptance.now)
        .bind(&user_id)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() != 1 {
            return Err(StoreError::InvitationRefused);
        }
        let user = user_where(&mut tx, "u.id = ?", Some(user_id.as_str()))
            .await?
            .pop()
            .ok_or(StoreError::InvitationRefused)?;
        audit(
            &mut tx,
            acceptance.now,
            &format!("user:{user_id}"),
            "invitation.accepted",
            Some(&user.account_id),
            None,
            serde_json::json!({
                "user_id": user_id,
                "terms_version": acceptance.terms_version,
            }),
        )
        .await?;
        tx.commit().await?;
        Ok(user)
    }

    async fn set_user_disabled(
        &self,
        user_id: &str,
        disabled: bool,
        now: i64,
        actor: Actor<'_>,
    ) -> Result<bool, StoreError> {
        let mut tx = begin_write(&self.pool).await?;
        let account_id: Option<String> =
            sqlx::query_scalar("SELECT account_id FROM users WHERE id = ?")
                .bind(user_id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(account_id) = account_id else {
            return Err(StoreError::NotFound {
                what: "user",
                id: user_id.to_owned(),
            });
        };
        let before = administrators(&mut tx, &account_id).await?;
        let (from, to) = if disabled {
            ("active", "disabled")
        } else {
            ("disabled", "active")
        };
        let changed = sqlx::query("UPDATE users SET status = ? WHERE id = ? AND status = ?")
            .bind(to)
            .bind(user_id)
            .bind(from)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            == 1;
        if !changed {
            return Ok(false);
        }
        if before > 0 && administrators(&mut tx, &account_id).await? == 0 {
            return Err(StoreError::LastAdministrator { account_id });
        }
        if disabled {
            auth::end_all_credentials(&mut tx, user_id, now).await?;
        }
        audit(
            &mut tx,
            now,
            actor,
            if disabled {
                "user.disabled"
            } else {
                "user.enabled"
            },
            Some(&account_id),
            None,
            serde_json::json!({ "user_id": user_id }),
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn groups(&self, account_id: &str) -> Result<Vec<Group>, StoreError> {
        let rows = sqlx::query(
            "SELECT g.id, g.account_id, g.name, g.created_at, \
             (SELECT COUNT(*) FROM user_groups ug WHERE ug.group_id = g.id) AS members, \
             (SELECT group_concat(permission, ' ') FROM group_permissions gp \
              WHERE gp.group_id = g.id) AS permissions \
             FROM groups g WHERE g.account_id = ? ORDER BY g.name",
        )
        .bind(account_id)
        .fetch_all(&self.pool)
        .await?;
        let groups = rows
            .iter()
            .map(|r| -> Result<Group, sqlx::Error> {
                let names: Option<String> = r.try_get("permissions")?;
                Ok(Group {
                    id: r.try_get("id")?,
                    account_id: r.try_get("account_id")?,
                    name: r.try_get("name")?,
                    created_at: r.try_get("created_at")?,
                    members: r.try_get("members")?,
                    // The CHECK constraint keeps only valid names in the table.
                    permissions: names
                        .unwrap_or_default()
                        .split_whitespace()
                        .filter_map(|n| n.parse().ok())
                        .collect(),
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(groups)
    }

    async fn create_group(&self, group: &Group, actor: Actor<'_>) -> Result<(), StoreError> {
        let mut tx = begin_write(&self.pool).await?;
        let inserted = sqlx::query(
            "INSERT INTO groups (id, account_id, name, created_at) VALUES (?, ?, ?, ?)",
        )
        .bind(&group.id)
        .bind(&group.account_id)
        .bind(&group.name)
        .bind(group.created_at)
        .execute(&mut *tx)
        .await;
        account_row(inserted, &group.account_id, || {
            format!("the account already has a group named {:?}", group.name)
        })?;
        insert_permissions(&mut tx, &group.id, &group.permissions).await?;
        audit(
            &mut tx,
            group.created_at,
            actor,
            "group.created",
            Some(&group.account_id),
            None,
            serde_json::json!({
                "group_id": group.id,
                "name": group.name,
                "permissions": group.permissions,
            }),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn set_group_permissions(
        &self,
        group_id: &str,
        permissions: &crate::permissions::PermissionSet,
        now: i64,
        actor: Actor<'_>,
    ) -> Result<(), StoreError> {
        let mut tx = begin_write(&self.pool).await?;
        let account_id: Option<String> =
            sqlx::query_scalar("SELECT account_id FROM groups WHERE id = ?")
                .bind(group_id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(account_id) = account_id else {
            return Err(StoreError::NotFound {
                what: "group",
                id: group_id.to_owned(),
            });
        };
        let before = administrators(&mut tx, &account_id).await?;
        sqlx::query("DELETE FROM group_permissions WHERE group_id = ?")
            .bind(group_id)
            .execute(&mut *tx)
            .await?;
        insert_permissions(&mut tx, group_id, permissions).await?;
        if before > 0 && administrators(&mut tx, &account_id).await? == 0 {
            return Err(StoreError::LastAdministrator { account_id });
        }
        audit(
            &mut tx,
            now,
            actor,
            "group.permissions_set",
            Some(&account_id),
            None,
            serde_json::json!({ "group_id": group_id, "permissions": permissions }),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    // Sessions, API tokens and password resets: see auth.rs.
    async fn login_record(
        &self,
        email: &str,
    ) -> Result<Option<(User, Option<String>)>, StoreError> {
        auth::login_record(&self.pool, email).await
    }
    async fn create_session(&self, session: &Session, actor: Actor<'_>) -> Result<(), StoreError> {
        auth::create_session(&self.pool, session, actor).await
    }
    async fn session(&self, token_hash: &[u8]) -> Result<Option<Session>, StoreError> {
        auth::session(&self.pool, token_hash).await
    }
    async fn touch_session(&self, token_hash: &[u8], now: i64) -> Result<(), StoreError> {
        auth::touch_session(&self.pool, token_hash, now).await
    }
    async fn end_session(
        &self,
        token_hash: &[u8],
        now: i64,
        actor: Actor<'_>,
    ) -> Result<bool, StoreError> {
        auth::end_session(&self.pool, token_hash, now, actor).await
    }
    async fn create_api_token(&self, token: &ApiToken, actor: Actor<'_>) -> Result<(), StoreError> {
        auth::create_api_token(&self.pool, token, actor).await
    }
    async fn api_token_by_hash(&self, token_hash: &[u8]) -> Result<Option<ApiToken>, StoreError> {
        Ok(
            auth::api_token_where(&self.pool, auth::TokenKey::Hash(token_hash))
                .await?
                .pop(),
        )
    }
    async fn api_token(&self, id: &str) -> Result<Option<ApiToken>, StoreError> {
        Ok(auth::api_token_where(&self.pool, auth::TokenKey::Id(id))
            .await?
            .pop())
    }
    async fn api_tokens(&self, user_id: &str) -> Result<Vec<ApiToken>, StoreError> {
        auth::api_token_where(&self.pool, auth::TokenKey::User(user_id)).await
    }
    async fn revoke_api_token(
        &self,
        id: &str,
        now: i64,
        actor: Actor<'_>,
    ) -> Result<bool, StoreError> {
        auth::revoke_api_token(&self.pool, id, now, actor).await
    }
    async fn touch_api_token(&self, id: &str, now: i64) -> Result<(), StoreError> {
        auth::touch_api_token(&self.pool, id, now).await
    }
    async fn create_password_reset(
        &self,
        reset: &PasswordReset,
        actor: Actor<'_>,
    ) -> Result<(), StoreError> {
        auth::create_password_reset(&self.pool, reset, actor).await
    }
    async fn password_reset(&self, token_hash: &[u8]) -> Result<Option<PasswordReset>, StoreError> {
        auth::password_reset(&self.pool, token_hash).await
    }
    async fn reset_password(
        &self,
        token_hash: &[u8],
        password_hash: &str,
        now: i64,
        actor_source: Option<&str>,
    ) -> Result<User, StoreError> {
        auth::reset_password(&self.pool, token_hash, password_hash, now, actor_source).await
    }
    async fn change_password(
        &self,
        user_id: &str,
        password_hash: &str,
        now: i64,
        actor: Actor<'_>,
    ) -> Result<bool, StoreError> {
        auth::change_password(&self.pool, user_id, password_hash, now, actor).await
    }
    async fn password_hash(&self, user_id: &str) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT password_hash FROM users WHERE id = ?")
                .bind(user_id)
                .fetch_optional(&self.pool)
                .await?
                .flatten(),
        )
    }
    async fn audit_entries(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>, StoreError> {
        auth::audit_entries(&self.pool, filter).await
    }

    // ---- admin: accounts and codes ----
    async fn create_account_with_first_user(
        &self,
        account: &Account,
        code: &NewCode,
        user: &User,
        invitation: &Invitation,
        actor: Actor<'_>,
    ) -> Result<(), StoreError> {
        accounts::create_account_with_first_user(&self.pool, account, code, user, invitation, actor)
            .await
    }
    async fn update_code(
        &self,
        public_id: &str,
        update: &crate::accounts::CodeUpdate,
        now: i64,
        actor: Actor<'_>,
    ) -> Result<CodeInfo, StoreError> {
        accounts::update_code(&self.pool, public_id, update, now, actor).await
    }
    async fn recorder_counts(
        &self,
        now: i64,
    ) -> Result<Vec<crate::accounts::RecorderCounts>, StoreError> {
        accounts::recorder_counts(&self.pool, now).await
    }

    // ---- admin: users and groups ----
    async fn group(&self, id: &str) -> Result<Option<Group>, StoreError> {
        users::group(self, id).await
    }
    async fn update_user(
        &self,
        user_id: &str,
        name: &str,
        now: i64,
        actor: Actor<'_>,
    ) -> Result<User, StoreError> {
        users::update_user(&self.pool, user_id, name, now, actor).await
    }
    async fn set_user_groups(
        &self,
        user_id: &str,
        group_ids: &[String],
        now: i64,
        actor: Actor<'_>,
    ) -> Result<User, StoreError> {
        users::set_user_groups(&self.pool, user_id, group_ids, now, actor).await
    }
    async fn delete_group(
        &self,
        group_id: &str,
        now: i64,
        actor: Actor<'_>,
    ) -> Result<(), StoreError> {
        users::delete_group(&self.pool, group_id, now, actor).await
    }

    // ---- admin: recorders ----
    async fn recorder_page(&self, query: &RecorderQuery) -> Result<Vec<Recorder>, StoreError> {
        recorders::recorder_page(&self.pool, query).await
    }
    async fn rename_recorder(
        &self,
        id: &str,
        name: Option<&str>,
        now: i64,
        actor: Actor<'_>,
    ) -> Result<Recorder, StoreError> {
        recorders::rename_recorder(&self.pool, id, name, now, actor).await
    }
    async fn move_recorder(
        &self,
        id: &str,
        from_account: &str,
        to_account: &str,
        now: i64,
        actor: Actor<'_>,
    ) -> Result<Recorder, StoreError> {
        recorders::move_recorder(&self.pool, id, from_account, to_account, now, actor).await
    }
    async fn confirm_replacement(
        &self,
        id: &str,
        replaces: &str,
        now: i64,
        actor: Actor<'_>,
    ) -> Result<Recorder, StoreError> {
        recorders::confirm_replacement(&self.pool, id, replaces, now, actor).await
    }
}

const CODE_INFO_SELECT: &str = "SELECT public_id, account_id, label, created_at, created_by, \
    expires_at, max_uses, uses, disabled_at, last_used_at, last_used_recorder, code_nonce, \
    code_ciphertext FROM registration_codes";

fn code_info_from_row(row: &SqliteRow) -> Result<CodeInfo, sqlx::Error> {
    let nonce: Option<Vec<u8>> = row.try_get("code_nonce")?;
    let ciphertext: Option<Vec<u8>> = row.try_get("code_ciphertext")?;
    Ok(CodeInfo {
        public_id: row.try_get("public_id")?,
        account_id: row.try_get("account_id")?,
        label: row.try_get("label")?,
        created_at: row.try_get("created_at")?,
        created_by: row.try_get("created_by")?,
        expires_at: row.try_get("expires_at")?,
        max_uses: row.try_get("max_uses")?,
        uses: row.try_get("uses")?,
        disabled_at: row.try_get("disabled_at")?,
        last_used_at: row.try_get("last_used_at")?,
        last_used_recorder: row.try_get("last_used_recorder")?,
        sealed: nonce
            .zip(ciphertext)
            .map(|(nonce, ciphertext)| crate::secrets::SealedCode { nonce, ciphertext }),
    })
}

/// An INSERT of a row that belongs to an account: a taken unique key is a conflict with
/// `taken`'s words, a missing account is not found.
fn account_row<T>(
    inserted: Result<T, sqlx::Error>,
    account_id: &str,
    taken: impl FnOnce() -> String,
) -> Result<T, StoreError> {
    match inserted {
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            Err(StoreError::Conflict(taken()))
        }
        Err(sqlx::Error::Database(e)) if e.is_foreign_key_violation() => {
            Err(StoreError::NotFound {
                what: "account",
                id: account_id.to_string(),
            })
        }
        other => Ok(other?),
    }
}

async fn insert_code(
    tx: &mut Transaction<'_, Sqlite>,
    account_id: &str,
    code: &NewCode,
) -> Result<(), StoreError> {
    let result = sqlx::query(
        "INSERT INTO registration_codes (public_id, account_id, secret_hash, created_at, label, \
         expires_at, max_uses, created_by, code_nonce, code_ciphertext) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&code.public_id)
    .bind(account_id)
    .bind(&code.secret_hash)
    .bind(code.created_at)
    .bind(&code.label)
    .bind(code.expires_at)
    .bind(code.max_uses)
    // Who, without the address: that belongs in the audit row, not on the code.
    .bind(split_actor(&code.created_by).0)
    .bind(&code.sealed.nonce)
    .bind(&code.sealed.ciphertext)
    .execute(&mut **tx)
    .await;
    match result {
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(StoreError::Conflict(
            format!("registration code id {} is taken", code.public_id),
        )),
        other => other.map(|_| ()).map_err(StoreError::from),
    }
}

/// Adds the account's Administrators group holding every permission, inside the
/// transaction that creates the account.
async fn insert_administrators_group(
    tx: &mut Transaction<'_, Sqlite>,
    account_id: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    let id = uuid::Uuid::new_v4().to_string();
    sqlx::query("INSERT INTO groups (id, account_id, name, created_at) VALUES (?, ?, ?, ?)")
        .bind(&id)
        .bind(account_id)
        .bind(ADMINISTRATORS_GROUP)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    insert_permissions(tx, &id, &crate::permissions::PermissionSet::all()).await
}

async fn insert_permissions(
    tx: &mut Transaction<'_, Sqlite>,
    group_id: &str,
    permissions: &crate::permissions::PermissionSet,
) -> Result<(), sqlx::Error> {
    for p in permissions.iter() {
        sqlx::query("INSERT INTO group_permissions (group_id, permission) VALUES (?, ?)")
            .bind(group_id)
            .bind(p.as_str())
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

async fn insert_invitation(
    tx: &mut Transaction<'_, Sqlite>,
    invitation: &Invitation,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO invitations (token_hash, user_id, created_at, expires_at) VALUES (?, ?, ?, ?)",
    )
    .bind(&invitation.token_hash)
    .bind(&invitation.user_id)
    .bind(invitation.created_at)
    .bind(invitation.expires_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Inserts an account with its first code and its Administrators group, audited as
/// `account.created`, inside the caller's transaction. A missing parent is `NotFound`.
async fn insert_account(
    tx: &mut Transaction<'_, Sqlite>,
    account: &Account,
    code: &NewCode,
    actor: Actor<'_>,
) -> Result<(), StoreError> {
    let inserted = sqlx::query(
        "INSERT INTO accounts (id, name, kind, parent_id, created_at, address, contact) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&account.id)
    .bind(&account.name)
    .bind(account.kind.as_str())
    .bind(&account.parent_id)
    .bind(account.created_at)
    .bind(&account.address)
    .bind(&account.contact)
    .execute(&mut **tx)
    .await;
    if let Err(sqlx::Error::Database(e)) = &inserted {
        if e.is_foreign_key_violation() {
            return Err(StoreError::NotFound {
                what: "parent account",
                id: account.parent_id.clone().unwrap_or_default(),
            });
        }
    }
    inserted?;
    insert_code(tx, &account.id, code).await?;
    insert_administrators_group(tx, &account.id, account.created_at).await?;
    audit(
        tx,
        account.created_at,
        actor,
        "account.created",
        Some(&account.id),
        None,
        serde_json::json!({
            "name": account.name,
            "kind": account.kind.as_str(),
            "parent_id": account.parent_id,
            "code_public_id": code.public_id,
            "address": account.address,
            "contact": account.contact,
        }),
    )
    .await?;
    Ok(())
}

/// Inserts an invited user into `group_id` (a group of the user's account) with their first
/// invitation, audited as `user.invited`, inside the caller's transaction. A taken email
/// is a `Conflict`.
async fn insert_invited_user(
    tx: &mut Transaction<'_, Sqlite>,
    user: &User,
    group_id: &str,
    invitation: &Invitation,
    actor: Actor<'_>,
) -> Result<(), StoreError> {
    let in_account: Option<String> =
        sqlx::query_scalar("SELECT id FROM groups WHERE id = ? AND account_id = ?")
            .bind(group_id)
            .bind(&user.account_id)
            .fetch_optional(&mut **tx)
            .await?;
    if in_account.is_none() {
        return Err(StoreError::NotFound {
            what: "group in the account",
            id: group_id.to_owned(),
        });
    }
    let inserted = sqlx::query(
        "INSERT INTO users (id, account_id, email, name, status, created_at, created_by) \
             VALUES (?, ?, ?, ?, 'invited', ?, ?)",
    )
    .bind(&user.id)
    .bind(&user.account_id)
    .bind(&user.email)
    .bind(&user.name)
    .bind(user.created_at)
    .bind(split_actor(&user.created_by).0)
    .execute(&mut **tx)
    .await;
    account_row(inserted, &user.account_id, || {
        format!("a user with the email {} already exists", user.email)
    })?;
    sqlx::query("INSERT INTO user_groups (user_id, group_id) VALUES (?, ?)")
        .bind(&user.id)
        .bind(group_id)
        .execute(&mut **tx)
        .await?;
    insert_invitation(tx, invitation).await?;
    audit(
        tx,
        user.created_at,
        actor,
        "user.invited",
        Some(&user.account_id),
        None,
        serde_json::json!({
            "user_id": user.id,
            "email": user.email,
            "name": user.name,
            "group_id": group_id,
            "expires_at": invitation.expires_at,
        }),
    )
    .await?;
    Ok(())
}

/// How many active users of the account hold both `users.manage` and `groups.manage`
/// through their groups (together, possibly from different groups).
async fn administrators(
    tx: &mut Transaction<'_, Sqlite>,
    account_id: &str,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM users u WHERE u.account_id = ? AND u.status = 'active' AND \
         (SELECT COUNT(DISTINCT gp.permission) FROM user_groups ug \
          JOIN group_permissions gp ON gp.group_id = ug.group_id \
          WHERE ug.user_id = u.id AND gp.permission IN ('users.manage', 'groups.manage')) = 2",
    )
    .bind(account_id)
    .fetch_one(&mut **tx)
    .await
}

/// Users matching `condition` (with one bound text parameter), with their group names,
/// ordered by account and email.
async fn user_where(
    conn: &mut sqlx::SqliteConnection,
    condition: &str,
    param: Option<&str>,
) -> Result<Vec<User>, sqlx::Error> {
    let rows = sqlx::query(&format!(
        "SELECT u.id, u.account_id, u.email, u.name, u.status, u.created_at, u.created_by, \
         u.terms_version, u.terms_accepted_at, u.age_confirmed_at, \
         (SELECT group_concat(name, char(10)) FROM (SELECT g.name FROM user_groups ug \
          JOIN groups g ON g.id = ug.group_id WHERE ug.user_id = u.id ORDER BY g.name)) \
          AS group_names \
         FROM users u WHERE {condition} ORDER BY u.account_id, lower(u.email)"
    ))
    .bind(param)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| {
            let groups: Option<String> = r.try_get("group_names")?;
            Ok(User {
                id: r.try_get("id")?,
                account_id: r.try_get("account_id")?,
                email: r.try_get("email")?,
                name: r.try_get("name")?,
                status: UserStatus::parse(r.try_get::<&str, _>("status")?),
                created_at: r.try_get("created_at")?,
                created_by: r.try_get("created_by")?,
                terms_version: r.try_get("terms_version")?,
                terms_accepted_at: r.try_get("terms_accepted_at")?,
                age_confirmed_at: r.try_get("age_confirmed_at")?,
                groups: groups
                    .map(|g| g.split('\n').map(str::to_owned).collect())
                    .unwrap_or_default(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    //! Only what is SQLite's own lives here; the store's behaviour on every backend is in
    //! `tests/store_behaviour.rs`.
    use super::*;

    #[tokio::test]
    async fn upgrading_gives_existing_accounts_an_administrators_group_with_every_permission() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        // A database as the previous release left it: migrations up to 0004, one account.
        let old = tempfile::tempdir().unwrap();
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite");
        for entry in std::fs::read_dir(&shipped).unwrap() {
            let entry = entry.unwrap();
            if entry.file_name().to_string_lossy().as_ref() < "0005" {
                std::fs::copy(entry.path(), old.path().join(entry.file_name())).unwrap();
            }
        }
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true);
        let pool = SqlitePool::connect_with(options).await.unwrap();
        sqlx::migrate::Migrator::new(old.path())
            .await
            .unwrap()
            .run(&pool)
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO accounts (id, name, kind, created_at) VALUES ('a1', 'Old', 'partner', 1)",
        )
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;

        let store = SqliteStore::open(&path).await.unwrap();
        let groups = store.groups("a1").await.unwrap();
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].name, ADMINISTRATORS_GROUP);
        assert_eq!(
            groups[0].permissions,
            crate::permissions::PermissionSet::all()
        );
        assert_eq!(groups[0].id.len(), 36, "UUID-shaped id: {}", groups[0].id);
    }
}
