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

#[cfg(test)]
mod tests {
    use super::super::SqliteStore;
    use crate::store::*;

    async fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("t.db")).await.unwrap();
        (dir, store)
    }

    async fn account(store: &SqliteStore, id: &str, parent: Option<&str>) {
        let account = Account {
            id: id.to_owned(),
            name: id.to_owned(),
            kind: AccountKind::Customer,
            parent_id: parent.map(str::to_owned),
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
            label: "code".into(),
            expires_at: None,
            max_uses: None,
            created_by: "test".into(),
            created_at: 1,
        };
        store.create_account(&account, &code, "test").await.unwrap();
    }

    async fn enroll(store: &SqliteStore, id: &str, account: &str, serial: &str) -> Recorder {
        store
            .enroll(&EnrollRecord {
                recorder_id: id.to_owned(),
                account_id: account.to_owned(),
                key_fingerprint: format!("key-{id}"),
                serial: serial.to_owned(),
                mac: Some(format!("00:11:22:33:44:{id}")),
                model: "NV-16".into(),
                firmware: None,
                agent_version: "test".into(),
                code_public_id: format!("C{account}"),
                cert_serial: format!("cert-{id}"),
                cert_not_after: 1000,
                now: 10,
            })
            .await
            .unwrap()
            .recorder
    }

    fn query(accounts: &[&str]) -> RecorderQuery {
        RecorderQuery {
            accounts: accounts.iter().map(|a| a.to_string()).collect(),
            now: 100,
            limit: 100,
            ..RecorderQuery::default()
        }
    }

    async fn ids(store: &SqliteStore, q: &RecorderQuery) -> Vec<String> {
        store
            .recorder_page(q)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect()
    }

    async fn history(store: &SqliteStore, id: &str) -> Vec<(String, serde_json::Value)> {
        store
            .audit_entries(&AuditFilter {
                recorder_id: Some(id.to_owned()),
                limit: 100,
                ..AuditFilter::default()
            })
            .await
            .unwrap()
            .into_iter()
            .map(|e| (e.action, serde_json::from_str(&e.detail).unwrap()))
            .collect()
    }

    #[tokio::test]
    async fn a_page_filters_in_the_given_accounts_and_continues_after_the_cursor() {
        let (_dir, store) = store().await;
        account(&store, "a", None).await;
        account(&store, "b", None).await;
        for (id, acc) in [
            ("r1", "a"),
            ("r2", "b"),
            ("r3", "a"),
            ("r4", "a"),
            ("r5", "b"),
        ] {
            enroll(&store, id, acc, &format!("SER-{id}")).await;
        }
        store
            .record_presence(&[Presence {
                recorder_id: "r3".into(),
                last_seen: 90,
                online_until: 150,
                status: None,
                uptime_secs: None,
            }])
            .await
            .unwrap();
        store.revoke_recorder("r4", 20, "test").await.unwrap();
        store
            .rename_recorder("r1", Some("Lobby Camera"), 30, "test")
            .await
            .unwrap();

        assert_eq!(ids(&store, &query(&["a"])).await, ["r1", "r3", "r4"]);
        let page = RecorderQuery {
            limit: 2,
            ..query(&["a", "b"])
        };
        assert_eq!(ids(&store, &page).await, ["r1", "r2"]);
        let next = RecorderQuery {
            after_id: Some("r2".into()),
            ..page
        };
        assert_eq!(ids(&store, &next).await, ["r3", "r4"]);

        let online = |on| RecorderQuery {
            online: Some(on),
            ..query(&["a"])
        };
        assert_eq!(ids(&store, &online(true)).await, ["r3"]);
        assert_eq!(ids(&store, &online(false)).await, ["r1", "r4"]);
        let later = RecorderQuery {
            now: 150,
            ..online(true)
        };
        assert!(ids(&store, &later).await.is_empty(), "online_until passed");
        let revoked = |r| RecorderQuery {
            revoked: Some(r),
            ..query(&["a"])
        };
        assert_eq!(ids(&store, &revoked(true)).await, ["r4"]);
        assert_eq!(ids(&store, &revoked(false)).await, ["r1", "r3"]);

        let text = |t: &str| RecorderQuery {
            text: Some(t.into()),
            ..query(&["a", "b"])
        };
        assert_eq!(ids(&store, &text("lobby")).await, ["r1"], "by name");
        assert_eq!(ids(&store, &text("ser-R5")).await, ["r5"], "by serial");
        assert_eq!(ids(&store, &text("44:r2")).await, ["r2"], "by MAC");
        assert_eq!(ids(&store, &text("nv-16")).await.len(), 5, "by model");
        assert!(ids(&store, &text("%")).await.is_empty(), "no wildcards");
    }

    #[tokio::test]
    async fn renaming_audits_old_and_new_and_the_same_name_writes_nothing() {
        let (_dir, store) = store().await;
        account(&store, "a", None).await;
        enroll(&store, "r1", "a", "S1").await;
        let named = store
            .rename_recorder("r1", Some("Gate"), 20, "user:u1@192.0.2.7")
            .await
            .unwrap();
        assert_eq!(named.name.as_deref(), Some("Gate"));
        store
            .rename_recorder("r1", Some("Gate"), 30, "user:u1")
            .await
            .unwrap();
        let cleared = store
            .rename_recorder("r1", None, 40, "user:u1")
            .await
            .unwrap();
        assert_eq!(cleared.name, None);
        let renames: Vec<_> = history(&store, "r1")
            .await
            .into_iter()
            .filter(|(a, _)| a == "recorder.renamed")
            .map(|(_, d)| d)
            .collect();
        assert_eq!(
            renames,
            [
                serde_json::json!({"from": "Gate", "to": null}),
                serde_json::json!({"from": null, "to": "Gate"}),
            ]
        );
        let unknown = store
            .rename_recorder("nope", Some("x"), 50, "user:u1")
            .await;
        assert!(matches!(unknown, Err(StoreError::NotFound { .. })));
    }

    #[tokio::test]
    async fn a_move_is_audited_and_refused_into_a_disabled_account_or_from_a_stale_one() {
        let (_dir, store) = store().await;
        account(&store, "p", None).await;
        account(&store, "a", Some("p")).await;
        account(&store, "b", Some("p")).await;
        account(&store, "c", Some("p")).await;
        enroll(&store, "r1", "a", "S1").await;
        let moved = store
            .move_recorder("r1", "a", "b", 20, "user:u1")
            .await
            .unwrap();
        assert_eq!(moved.account_id, "b");
        assert_eq!(moved.key_fingerprint, "key-r1", "keeps its key");
        assert_eq!(moved.cert_serial.as_deref(), Some("cert-r1"));
        assert_eq!(
            history(&store, "r1").await[0],
            (
                "recorder.moved".to_owned(),
                serde_json::json!({"from_account": "a", "to_account": "b"})
            )
        );

        let stale = store.move_recorder("r1", "a", "c", 30, "user:u1").await;
        assert!(matches!(stale, Err(StoreError::Conflict(_))), "{stale:?}");
        let same = store.move_recorder("r1", "b", "b", 30, "user:u1").await;
        assert!(matches!(same, Err(StoreError::Conflict(_))), "{same:?}");
        let nowhere = store.move_recorder("r1", "b", "zz", 30, "user:u1").await;
        assert!(matches!(nowhere, Err(StoreError::NotFound { .. })));

        store
            .set_account_disabled("p", true, 30, "test")
            .await
            .unwrap();
        let disabled = store.move_recorder("r1", "b", "c", 40, "user:u1").await;
        match disabled {
            Err(StoreError::Conflict(m)) => assert!(m.contains("above"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(store.recorder("r1").await.unwrap().unwrap().account_id, "b");
        assert_eq!(history(&store, "r1").await[0].0, "recorder.moved");

        store
            .set_account_disabled("p", false, 50, "test")
            .await
            .unwrap();
        store.revoke_recorder("r1", 60, "test").await.unwrap();
        let revoked = store.move_recorder("r1", "b", "c", 70, "user:u1").await;
        assert!(
            matches!(revoked, Err(StoreError::Conflict(_))),
            "{revoked:?}"
        );
    }

    #[tokio::test]
    async fn confirming_a_replacement_revokes_the_old_recorder_once() {
        let (_dir, store) = store().await;
        account(&store, "a", None).await;
        enroll(&store, "old", "a", "S1").await;
        let new = enroll(&store, "new", "a", "S1").await;
        assert_eq!(new.replaces.as_deref(), Some("old"));

        let not_flagged = store.confirm_replacement("old", "new", 20, "user:u1").await;
        assert!(matches!(not_flagged, Err(StoreError::Conflict(_))));
        let confirmed = store
            .confirm_replacement("new", "old", 20, "user:u1")
            .await
            .unwrap();
        assert_eq!(confirmed.replacement_confirmed_at, Some(20));
        assert_eq!(confirmed.revoked_at, None);
        assert_eq!(
            store.recorder("old").await.unwrap().unwrap().revoked_at,
            Some(20)
        );
        assert_eq!(
            history(&store, "old").await[0],
            (
                "recorder.revoked".to_owned(),
                serde_json::json!({"serial": "S1", "replaced_by": "new"})
            )
        );
        assert_eq!(
            history(&store, "new").await[0].0,
            "recorder.replacement_confirmed"
        );
        let again = store.confirm_replacement("new", "old", 30, "user:u1").await;
        assert!(matches!(again, Err(StoreError::Conflict(_))));
    }
}
