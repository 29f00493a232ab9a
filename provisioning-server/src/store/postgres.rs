//! The PostgreSQL store: one database shared by any number of server replicas and the admin
//! CLI. It behaves exactly as the SQLite store does (same errors, audit rows, ordering and
//! all-or-nothing writes); only the way concurrent writers are kept apart differs.
//!
//! SQLite has one writer at a time (`BEGIN IMMEDIATE`), so a transaction that reads and
//! then writes what it read can never interleave with another. PostgreSQL runs writers side
//! by side in READ COMMITTED, where each statement sees what was committed when it started.
//! Every read-then-write transaction here therefore does one of:
//! * a conditional `UPDATE … WHERE <the check>`: PostgreSQL re-checks the condition on the
//!   newest version of a row another transaction was changing (code uses against
//!   `max_uses`, single-use links, revocation);
//! * a unique constraint with `ON CONFLICT` or a unique-violation error (one key, one
//!   recorder; one email, one user);
//! * `SELECT … FOR UPDATE` (or `FOR NO KEY UPDATE`, which does not block inserts that only
//!   reference the row) on the row it reads, or on the parent row that stands for a set of
//!   rows (the account, for "is there an administrator left?"), taken before the read.
//!
//! Locks are always taken in the same order (account, then user, then the user's links and
//! credentials; code, then recorder) so that two transactions never wait for each other.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{PgPool, Postgres, Row, Transaction};

use super::*;

mod accounts;
mod auth;
mod recorders;
mod users;

pub struct PostgresStore {
    pool: PgPool,
}

type Tx = Transaction<'static, Postgres>;

/// How long opening the pool waits for the server before giving up with an error that
/// names it; a replica started before its database then fails clearly and is restarted.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

const RECORDER_COLUMNS: &str = "id, account_id, key_fingerprint, serial, mac, model, firmware, \
    agent_version, replaces, enrolled_at, cert_serial, cert_not_after, last_seen, online_until, \
    status, revoked_at, offline_reason, name, replacement_confirmed_at, uptime_secs";

/// Every account read carries `disabled_via`, the nearest disabled account up its
/// ancestry, from a recursive CTE in the same statement (as on SQLite: capped at 64 levels,
/// computed when read so that a disable by any replica or the CLI holds at once).
const ACCOUNT_SELECT: &str = "SELECT a.id, a.name, a.kind, a.parent_id, a.created_at, \
    a.address, a.contact, a.disabled_at, a.disabled_by, \
    (SELECT c.public_id FROM registration_codes c WHERE c.account_id = a.id AND c.disabled_at IS NULL \
     ORDER BY c.created_at DESC, c.seq DESC LIMIT 1) AS code_public_id, \
    (WITH RECURSIVE up(id, parent_id, disabled_at, depth) AS ( \
       SELECT b.id, b.parent_id, b.disabled_at, 0 FROM accounts b WHERE b.id = a.id \
       UNION ALL \
       SELECT p.id, p.parent_id, p.disabled_at, up.depth + 1 FROM accounts p \
       JOIN up ON p.id = up.parent_id WHERE up.depth < 64) \
     SELECT id FROM up WHERE disabled_at IS NOT NULL ORDER BY depth LIMIT 1) AS disabled_via \
    FROM accounts a";

/// The database's clock in Unix milliseconds, as the fact_changes triggers write it.
const NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

impl PostgresStore {
    /// Connects to the database `url` names (shown only as `redacted`) with a pool of at
    /// most `max_connections`, and brings the schema up to date. Replicas starting together
    /// are safe: the migrator holds an advisory lock while it runs.
    pub async fn open(url: &str, redacted: &str, max_connections: u32) -> Result<Self, StoreError> {
        let unreachable = |e: sqlx::Error| {
            let kind = match &e {
                sqlx::Error::Io(io) => io.kind(),
                _ => std::io::ErrorKind::Other,
            };
            StoreError::Database(sqlx::Error::Io(std::io::Error::new(
                kind,
                format!("cannot connect to PostgreSQL at {redacted}: {e}"),
            )))
        };
        let options = PgConnectOptions::from_str(url)
            .map_err(unreachable)?
            .application_name("contera-provisioning")
            // Warnings and errors only: the migrator's "already exists, skipping" notices
            // would otherwise be logged at every start and every CLI command.
            .options([("client_min_messages", "warning")]);
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(CONNECT_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(unreachable)?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(PostgresStore { pool })
    }
}

fn account_from_row(row: &PgRow) -> Result<Account, sqlx::Error> {
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

fn recorder_from_row(row: &PgRow) -> Result<Recorder, sqlx::Error> {
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
    tx: &mut Tx,
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
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
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

fn audit_entry_from_row(row: &PgRow) -> Result<AuditEntry, sqlx::Error> {
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

/// Whether a read also locks the rows it returns until the transaction ends.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Lock {
    None,
    /// `FOR NO KEY UPDATE`: the row is about to be changed (not its key), so a concurrent
    /// change waits, while inserts that merely reference it do not.
    ForChange,
}

impl Lock {
    fn clause(self) -> &'static str {
        match self {
            Lock::None => "",
            Lock::ForChange => " FOR NO KEY UPDATE",
        }
    }
}

async fn recorder_by(
    tx: &mut Tx,
    column: &str,
    value: &str,
    lock: Lock,
) -> Result<Option<Recorder>, sqlx::Error> {
    let sql = format!(
        "SELECT {RECORDER_COLUMNS} FROM recorders WHERE {column} = $1{}",
        lock.clause()
    );
    let row = sqlx::query(&sql)
        .bind(value)
        .fetch_optional(&mut **tx)
        .await?;
    row.as_ref().map(recorder_from_row).transpose()
}

/// Locks the account's row for the rest of the transaction and says whether it exists.
/// Writers that read a set of rows belonging to the account and decide on it (its codes
/// when rotating, its administrators when a user or group changes) take this first, so
/// they run one after another, as SQLite's single writer runs them.
async fn lock_account(tx: &mut Tx, account_id: &str) -> Result<bool, sqlx::Error> {
    let found: Option<String> =
        sqlx::query_scalar("SELECT id FROM accounts WHERE id = $1 FOR NO KEY UPDATE")
            .bind(account_id)
            .fetch_optional(&mut **tx)
            .await?;
    Ok(found.is_some())
}

async fn account_exists(tx: &mut Tx, account_id: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM accounts WHERE id = $1)")
        .bind(account_id)
        .fetch_one(&mut **tx)
        .await
}

#[async_trait]
impl Store for PostgresStore {
    async fn create_account(
        &self,
        account: &Account,
        code: &NewCode,
        actor: Actor<'_>,
    ) -> Result<(), StoreError> {
        // Inserts only: the primary keys and the parent's foreign key decide.
        let mut tx = self.pool.begin().await?;
        insert_account(&mut tx, account, code, actor).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn account(&self, id: &str) -> Result<Option<Account>, StoreError> {
        let row = sqlx::query(&format!("{ACCOUNT_SELECT} WHERE a.id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(account_from_row).transpose()?)
    }

    async fn accounts(&self) -> Result<Vec<Account>, StoreError> {
        let rows = sqlx::query(&format!(
            "{ACCOUNT_SELECT} ORDER BY a.created_at, a.name, a.id"
        ))
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
        let mut tx = self.pool.begin().await?;
        // The account row first: two rotations at once then run one after the other, and
        // the second disables the code the first added, leaving one active code as on
        // SQLite (unlocked, each UPDATE would miss the other's new code).
        if !lock_account(&mut tx, account_id).await? {
            return Err(StoreError::NotFound {
                what: "account",
                id: account_id.to_string(),
            });
        }
        let old: Vec<String> = sqlx::query_scalar(
            "UPDATE registration_codes SET disabled_at = $1 WHERE account_id = $2 AND disabled_at IS NULL \
             RETURNING public_id",
        )
        .bind(now)
        .bind(account_id)
        .fetch_all(&mut *tx)
        .await?;
        insert_code(&mut tx, account_id, code).await?;
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
             FROM registration_codes WHERE public_id = $1",
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
        let mut tx = self.pool.begin().await?;
        // One key, one recorder, whichever replica enrolls it: the unique key decides.
        // While another transaction holds an uncommitted row for this key (or id), this
        // INSERT waits for it to end, then does nothing if it committed; the loser then
        // reads the winner's row below and answers EnrollmentRaced.
        let inserted = sqlx::query(
            "INSERT INTO recorders (id, account_id, key_fingerprint, serial, mac, model, firmware, \
             agent_version, enrolled_at, updated_at, cert_serial, cert_not_after) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) ON CONFLICT DO NOTHING",
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
        // Every successful enrollment is a use of its code. The limits are the UPDATE's own
        // condition: a concurrent enrollment that counted a use first holds the row until it
        // ends, and PostgreSQL then checks the condition again on the row as it committed,
        // so max_uses holds across replicas. Returning early rolls everything back.
        let counted = sqlx::query(
            "UPDATE registration_codes SET uses = uses + 1, last_used_at = $1, last_used_recorder = $2 \
             WHERE public_id = $3 AND disabled_at IS NULL AND (expires_at IS NULL OR expires_at > $4) \
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
            // The flag for a possible replacement, searched in the same tree only: see the
            // SQLite store for why.
            let replaces: Option<String> = sqlx::query_scalar(
                "WITH RECURSIVE up(id, parent_id, depth) AS ( \
                   SELECT id, parent_id, 0 FROM accounts WHERE id = $3 \
                   UNION ALL SELECT a.id, a.parent_id, up.depth + 1 FROM accounts a \
                   JOIN up ON a.id = up.parent_id WHERE up.depth < 64), \
                 root(id) AS (SELECT id FROM up ORDER BY depth DESC LIMIT 1), \
                 tree(id, depth) AS ( \
                   SELECT id, 0 FROM root \
                   UNION ALL SELECT a.id, tree.depth + 1 FROM accounts a \
                   JOIN tree ON a.parent_id = tree.id WHERE tree.depth < 64) \
                 SELECT r.id FROM recorders r WHERE r.serial = $1 AND r.id <> $2 \
                 AND r.revoked_at IS NULL AND r.account_id IN (SELECT id FROM tree) \
                 ORDER BY r.account_id = $3 DESC, r.enrolled_at DESC, r.id LIMIT 1",
            )
            .bind(&r.serial)
            .bind(&r.recorder_id)
            .bind(&r.account_id)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(old) = &replaces {
                sqlx::query("UPDATE recorders SET replaces = $1 WHERE id = $2")
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
            // The row is locked as it is read: a concurrent enrollment, renewal, move or
            // revocation of this recorder finishes first, and what is audited below (moved
            // from where) is what this transaction then overwrites.
            let Some(existing) = recorder_by(
                &mut tx,
                "key_fingerprint",
                &r.key_fingerprint,
                Lock::ForChange,
            )
            .await?
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
                "UPDATE recorders SET account_id = $1, serial = $2, mac = $3, model = $4, firmware = $5, \
                 agent_version = $6, cert_serial = $7, cert_not_after = $8, updated_at = $9 WHERE id = $10",
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
        let recorder = recorder_by(&mut tx, "id", &r.recorder_id, Lock::None)
            .await?
            .ok_or_else(|| StoreError::Conflict("recorder vanished during enrollment".into()))?;
        tx.commit().await?;
        Ok(EnrollOutcome { recorder, kind })
    }

    async fn recorder_by_key(&self, key_fingerprint: &str) -> Result<Option<Recorder>, StoreError> {
        let sql = format!("SELECT {RECORDER_COLUMNS} FROM recorders WHERE key_fingerprint = $1");
        let row = sqlx::query(&sql)
            .bind(key_fingerprint)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(recorder_from_row).transpose()?)
    }

    async fn remove_incomplete_enrollments(&self, now: i64) -> Result<usize, StoreError> {
        let mut tx = self.pool.begin().await?;
        // The incomplete rows are locked FOR UPDATE first: an enrollment flagging one of
        // them as replaced (its foreign key check takes a share lock on it) either
        // committed before, and is cleared below, or waits until they are gone.
        let incomplete: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM recorders WHERE cert_serial IS NULL AND revoked_at IS NULL \
             ORDER BY id FOR UPDATE",
        )
        .fetch_all(&mut *tx)
        .await?;
        if incomplete.is_empty() {
            return Ok(0);
        }
        sqlx::query("UPDATE recorders SET replaces = NULL WHERE replaces = ANY($1)")
            .bind(&incomplete)
            .execute(&mut *tx)
            .await?;
        let removed: Vec<String> =
            sqlx::query_scalar("DELETE FROM recorders WHERE id = ANY($1) RETURNING id")
                .bind(&incomplete)
                .fetch_all(&mut *tx)
                .await?;
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
        let mut tx = self.pool.begin().await?;
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
        // One conditional UPDATE: a concurrent revocation is seen (the condition is checked
        // again on the committed row), a key taken meanwhile is a unique violation.
        let mut tx = self.pool.begin().await?;
        let updated = sqlx::query(
            "UPDATE recorders SET key_fingerprint = $1, cert_serial = $2, cert_not_after = $3, updated_at = $4 \
             WHERE id = $5 AND revoked_at IS NULL",
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
        let sql = format!("SELECT {RECORDER_COLUMNS} FROM recorders WHERE id = $1");
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(recorder_from_row).transpose()?)
    }

    async fn recorders(&self, account_id: Option<&str>) -> Result<Vec<Recorder>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {RECORDER_COLUMNS} FROM recorders WHERE ($1::text IS NULL OR account_id = $1) \
             ORDER BY enrolled_at, id"
        ))
        .bind(account_id)
        .fetch_all(&self.pool)
        .await?;
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
        // The conditional UPDATE decides who revokes: a second revocation waits for the
        // first and then finds the row revoked.
        let mut tx = self.pool.begin().await?;
        let changed = sqlx::query(
            "UPDATE recorders SET revoked_at = $1, online_until = NULL, updated_at = $2 \
             WHERE id = $3 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        let Some(recorder) = recorder_by(&mut tx, "id", id, Lock::None).await? else {
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
        // One statement whatever the batch size: five arrays, unnested side by side.
        let mut sorted: Vec<&Presence> = batch.iter().collect();
        sorted.sort_by(|a, b| a.recorder_id.cmp(&b.recorder_id));
        let ids: Vec<&str> = sorted.iter().map(|p| p.recorder_id.as_str()).collect();
        let last_seen: Vec<i64> = sorted.iter().map(|p| p.last_seen).collect();
        let online_until: Vec<i64> = sorted.iter().map(|p| p.online_until).collect();
        let uptime: Vec<Option<i64>> = sorted.iter().map(|p| p.uptime_secs).collect();
        let status: Vec<Option<&str>> = sorted.iter().map(|p| p.status.as_deref()).collect();
        // The rows are locked in id order first (`locked`: ORDER BY before FOR UPDATE), so
        // two replicas flushing overlapping batches wait for each other instead of
        // deadlocking; an UPDATE … FROM alone locks in whatever order its join runs. Then
        // the same conditions as on SQLite: a revoked recorder stays offline whatever
        // heartbeats were in flight, and a goodbye newer than the heartbeat stands.
        sqlx::query(
            "WITH v AS ( \
               SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::text[]) \
               AS v(id, last_seen, online_until, uptime_secs, status)), \
             locked AS ( \
               SELECT r.id FROM recorders r WHERE r.id IN (SELECT id FROM v) \
               ORDER BY r.id FOR NO KEY UPDATE) \
             UPDATE recorders SET last_seen = GREATEST(COALESCE(recorders.last_seen, 0), v.last_seen), \
             online_until = CASE WHEN recorders.revoked_at IS NULL THEN v.online_until ELSE NULL END, \
             offline_reason = NULL, uptime_secs = COALESCE(v.uptime_secs, recorders.uptime_secs), \
             status = COALESCE(v.status, recorders.status) \
             FROM v WHERE recorders.id = v.id AND recorders.id IN (SELECT id FROM locked) \
             AND NOT (recorders.offline_reason IS NOT NULL AND COALESCE(recorders.last_seen, 0) >= v.last_seen)",
        )
        .bind(&ids)
        .bind(&last_seen)
        .bind(&online_until)
        .bind(&uptime)
        .bind(&status)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn fact_changes_since(&self, since_ms: i64) -> Result<FactChanges, StoreError> {
        let now_ms: i64 = sqlx::query_scalar(&format!("SELECT {NOW_MS}"))
            .fetch_one(&self.pool)
            .await?;
        let rows = sqlx::query(
            "SELECT recorder_id, account_id FROM fact_changes WHERE at_ms > $1 ORDER BY seq",
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
        let done = sqlx::query("DELETE FROM fact_changes WHERE at_ms < $1")
            .bind(before_ms)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    async fn recorder_totals(&self, now: i64) -> Result<RecorderTotals, StoreError> {
        let row = sqlx::query(
            "SELECT \
             COALESCE(SUM(CASE WHEN revoked_at IS NULL AND online_until > $1 THEN 1 ELSE 0 END), 0) AS online, \
             COALESCE(SUM(CASE WHEN revoked_at IS NULL AND (online_until IS NULL OR online_until <= $1) \
                 THEN 1 ELSE 0 END), 0) AS offline, \
             COALESCE(SUM(CASE WHEN revoked_at IS NOT NULL THEN 1 ELSE 0 END), 0) AS revoked \
             FROM recorders",
        )
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
            "UPDATE recorders SET last_seen = GREATEST(COALESCE(last_seen, 0), $1), online_until = $2, \
             offline_reason = $3 WHERE id = $4",
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
             ORDER BY id DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(audit_entry_from_row)
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    async fn create_code(
        &self,
        account_id: &str,
        code: &NewCode,
        actor: Actor<'_>,
    ) -> Result<(), StoreError> {
        // An insert: the primary key and the account's foreign key decide.
        let mut tx = self.pool.begin().await?;
        if !account_exists(&mut tx, account_id).await? {
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
            "{CODE_INFO_SELECT} WHERE account_id = $1 ORDER BY created_at DESC, seq DESC"
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
        let row = sqlx::query(&format!("{CODE_INFO_SELECT} WHERE public_id = $1"))
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
        // The conditional UPDATE decides: of two concurrent disables, one audits.
        let mut tx = self.pool.begin().await?;
        let changed: Option<String> = sqlx::query_scalar(
            "UPDATE registration_codes SET disabled_at = $1 WHERE public_id = $2 AND disabled_at IS NULL \
             RETURNING account_id",
        )
        .bind(now)
        .bind(public_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(account_id) = changed else {
            let exists: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM registration_codes WHERE public_id = $1)",
            )
            .bind(public_id)
            .fetch_one(&mut *tx)
            .await?;
            return match exists {
                true => Ok(false),
                false => Err(StoreError::NotFound {
                    what: "registration code",
                    id: public_id.to_string(),
                }),
            };
        };
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
        Ok(sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM registration_codes WHERE code_ciphertext IS NOT NULL)",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    async fn update_account(
        &self,
        id: &str,
        update: &AccountUpdate,
        now: i64,
        actor: Actor<'_>,
    ) -> Result<Account, StoreError> {
        let mut tx = self.pool.begin().await?;
        // The row is locked before it is read: two concurrent updates then audit what each
        // really changed.
        if !lock_account(&mut tx, id).await? {
            return Err(StoreError::NotFound {
                what: "account",
                id: id.to_string(),
            });
        }
        let row = sqlx::query(&format!("{ACCOUNT_SELECT} WHERE a.id = $1"))
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
        sqlx::query("UPDATE accounts SET name = $1, address = $2, contact = $3 WHERE id = $4")
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
        // The conditional UPDATE decides: of two concurrent disables, one audits.
        let mut tx = self.pool.begin().await?;
        let changed = if disabled {
            sqlx::query(
                "UPDATE accounts SET disabled_at = $1, disabled_by = $2 WHERE id = $3 AND disabled_at IS NULL",
            )
            .bind(now)
            .bind(split_actor(actor).0)
            .bind(id)
        } else {
            sqlx::query(
                "UPDATE accounts SET disabled_at = NULL, disabled_by = NULL WHERE id = $1 AND disabled_at IS NOT NULL",
            )
            .bind(id)
        }
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !changed {
            return match account_exists(&mut tx, id).await? {
                true => Ok(false),
                false => Err(StoreError::NotFound {
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
        let mut tx = self.pool.begin().await?;
        insert_invited_user(&mut tx, user, group_id, invitation, actor).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn user(&self, id: &str) -> Result<Option<User>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        Ok(user_where(&mut conn, "u.id = $1", Some(id)).await?.pop())
    }

    async fn user_by_email(&self, email: &str) -> Result<Option<User>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        Ok(user_where(&mut conn, EMAIL_IS, Some(email)).await?.pop())
    }

    async fn users(&self, account_id: Option<&str>) -> Result<Vec<User>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        Ok(user_where(
            &mut conn,
            "($1::text IS NULL OR u.account_id = $1)",
            account_id,
        )
        .await?)
    }

    async fn replace_invitation(
        &self,
        invitation: &Invitation,
        actor: Actor<'_>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        // The user's row is locked first: two resends at once then run one after the
        // other, and the second replaces the first's invitation, leaving one open.
        let account_id: Option<String> = sqlx::query_scalar(
            "SELECT account_id FROM users WHERE id = $1 AND status = 'invited' FOR NO KEY UPDATE",
        )
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
            "UPDATE invitations SET replaced_at = $1 \
             WHERE user_id = $2 AND used_at IS NULL AND replaced_at IS NULL",
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
        let mut tx = self.pool.begin().await?;
        // The user's row first, then the invitation's, in the order a resend takes them
        // (so neither waits for the other forever); the invitation's own conditional
        // UPDATE then makes it single use.
        let owner: Option<String> =
            sqlx::query_scalar("SELECT user_id FROM invitations WHERE token_hash = $1")
                .bind(acceptance.token_hash)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(owner) = owner else {
            return Err(StoreError::InvitationRefused);
        };
        lock_user(&mut tx, &owner).await?;
        let user_id: Option<String> = sqlx::query_scalar(
            "UPDATE invitations SET used_at = $1 \
             WHERE token_hash = $2 AND used_at IS NULL AND replaced_at IS NULL AND expires_at > $3 \
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
            "UPDATE users SET status = 'active', password_hash = $1, terms_version = $2, \
             terms_accepted_at = $3, age_confirmed_at = $4 WHERE id = $5 AND status = 'invited'",
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
        let user = user_where(&mut tx, "u.id = $1", Some(user_id.as_str()))
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
        let mut tx = self.pool.begin().await?;
        let account_id: Option<String> =
            sqlx::query_scalar("SELECT account_id FROM users WHERE id = $1")
                .bind(user_id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(account_id) = account_id else {
            return Err(StoreError::NotFound {
                what: "user",
                id: user_id.to_owned(),
            });
        };
        // "Is an administrator left?" counts other users' rows, which no row lock on this
        // user covers: two admins disabling each other at once would both see one left.
        // The account's row stands for its administration; every change that can remove
        // an administrator takes it first (a user's account never changes).
        lock_account(&mut tx, &account_id).await?;
        let before = administrators(&mut tx, &account_id).await?;
        let (from, to) = if disabled {
            ("active", "disabled")
        } else {
            ("disabled", "active")
        };
        let changed = sqlx::query("UPDATE users SET status = $1 WHERE id = $2 AND status = $3")
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
             (SELECT string_agg(permission, ' ') FROM group_permissions gp \
              WHERE gp.group_id = g.id) AS permissions \
             FROM groups g WHERE g.account_id = $1 ORDER BY g.name",
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
        // Inserts only: the unique (account, name) and the account's foreign key decide.
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO groups (id, account_id, name, created_at) VALUES ($1, $2, $3, $4)",
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
        let mut tx = self.pool.begin().await?;
        // FOR KEY SHARE keeps the group from being deleted meanwhile (its permissions are
        // rewritten below); the account's row then orders this after any other change to
        // the account's administrators (see set_user_disabled).
        let account_id: Option<String> =
            sqlx::query_scalar("SELECT account_id FROM groups WHERE id = $1 FOR KEY SHARE")
                .bind(group_id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(account_id) = account_id else {
            return Err(StoreError::NotFound {
                what: "group",
                id: group_id.to_owned(),
            });
        };
        lock_account(&mut tx, &account_id).await?;
        let before = administrators(&mut tx, &account_id).await?;
        sqlx::query("DELETE FROM group_permissions WHERE group_id = $1")
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
        auth::emailed_link(&self.pool, "password_resets", token_hash).await
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
            sqlx::query_scalar("SELECT password_hash FROM users WHERE id = $1")
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

fn code_info_from_row(row: &PgRow) -> Result<CodeInfo, sqlx::Error> {
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

async fn insert_code(tx: &mut Tx, account_id: &str, code: &NewCode) -> Result<(), StoreError> {
    let result = sqlx::query(
        "INSERT INTO registration_codes (public_id, account_id, secret_hash, created_at, label, \
         expires_at, max_uses, created_by, code_nonce, code_ciphertext) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
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
    tx: &mut Tx,
    account_id: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    let id = uuid::Uuid::new_v4().to_string();
    sqlx::query("INSERT INTO groups (id, account_id, name, created_at) VALUES ($1, $2, $3, $4)")
        .bind(&id)
        .bind(account_id)
        .bind(ADMINISTRATORS_GROUP)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    insert_permissions(tx, &id, &crate::permissions::PermissionSet::all()).await
}

/// The group's permissions in one INSERT of an array, however many there are.
async fn insert_permissions(
    tx: &mut Tx,
    group_id: &str,
    permissions: &crate::permissions::PermissionSet,
) -> Result<(), sqlx::Error> {
    let names: Vec<&str> = permissions.iter().map(|p| p.as_str()).collect();
    sqlx::query(
        "INSERT INTO group_permissions (group_id, permission) SELECT $1, unnest($2::text[])",
    )
    .bind(group_id)
    .bind(&names)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn insert_invitation(tx: &mut Tx, invitation: &Invitation) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO invitations (token_hash, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
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
    tx: &mut Tx,
    account: &Account,
    code: &NewCode,
    actor: Actor<'_>,
) -> Result<(), StoreError> {
    let inserted = sqlx::query(
        "INSERT INTO accounts (id, name, kind, parent_id, created_at, address, contact) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
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
/// (the unique index on `lower(email)` decides, across replicas) is a `Conflict`.
async fn insert_invited_user(
    tx: &mut Tx,
    user: &User,
    group_id: &str,
    invitation: &Invitation,
    actor: Actor<'_>,
) -> Result<(), StoreError> {
    // FOR KEY SHARE: a concurrent delete of the group waits for this transaction and then
    // finds a member, instead of this one failing on a foreign key afterwards.
    let in_account: Option<String> =
        sqlx::query_scalar("SELECT id FROM groups WHERE id = $1 AND account_id = $2 FOR KEY SHARE")
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
             VALUES ($1, $2, $3, $4, 'invited', $5, $6)",
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
    sqlx::query("INSERT INTO user_groups (user_id, group_id) VALUES ($1, $2)")
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

/// Locks the user's row for the rest of the transaction (see the lock order above).
async fn lock_user(tx: &mut Tx, user_id: &str) -> Result<bool, sqlx::Error> {
    let found: Option<String> =
        sqlx::query_scalar("SELECT id FROM users WHERE id = $1 FOR NO KEY UPDATE")
            .bind(user_id)
            .fetch_optional(&mut **tx)
            .await?;
    Ok(found.is_some())
}

/// How many active users of the account hold both `users.manage` and `groups.manage`
/// through their groups (together, possibly from different groups). Callers hold the
/// account's row lock ([`lock_account`]).
async fn administrators(tx: &mut Tx, account_id: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM users u WHERE u.account_id = $1 AND u.status = 'active' AND \
         (SELECT COUNT(DISTINCT gp.permission) FROM user_groups ug \
          JOIN group_permissions gp ON gp.group_id = ug.group_id \
          WHERE ug.user_id = u.id AND gp.permission IN ('users.manage', 'groups.manage')) = 2",
    )
    .bind(account_id)
    .fetch_one(&mut **tx)
    .await
}

/// The condition that finds a user by email, ignoring the case of ASCII letters only (as
/// SQLite's lower() does): the parameter is lowered under the "C" collation too, since
/// under the database's default collation lower() would fold other letters as well.
const EMAIL_IS: &str = "lower(u.email) = lower($1::text COLLATE \"C\")";

/// Users matching `condition` (with one bound text parameter, `$1`), with their group
/// names, ordered by account and email.
async fn user_where(
    conn: &mut sqlx::PgConnection,
    condition: &str,
    param: Option<&str>,
) -> Result<Vec<User>, sqlx::Error> {
    let rows = sqlx::query(&format!(
        "SELECT u.id, u.account_id, u.email, u.name, u.status, u.created_at, u.created_by, \
         u.terms_version, u.terms_accepted_at, u.age_confirmed_at, \
         (SELECT string_agg(g.name, E'\\n' ORDER BY g.name) FROM user_groups ug \
          JOIN groups g ON g.id = ug.group_id WHERE ug.user_id = u.id) AS group_names \
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
