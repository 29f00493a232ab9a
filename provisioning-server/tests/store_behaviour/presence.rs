//! Heartbeats as the server flushes them, goodbyes, and the fact changes every server
//! polls to keep what it answers heartbeats with coherent.

use std::time::Duration;

use crate::fixtures::*;
use contera_provisioning::store::*;

fn status_of(recorder: &Recorder) -> Option<serde_json::Value> {
    recorder
        .status
        .as_deref()
        .map(|s| serde_json::from_str(s).unwrap())
}

store_test!(
    a_flush_writes_every_row_of_a_batch_of_any_size_and_ignores_unknown_ids,
    |db| async move {
        let store = &*db.store;
        account(store, "a").await;
        for id in ["r1", "r2", "r3"] {
            enroll(store, id, "a", id).await;
        }
        store.record_presence(&[]).await.unwrap();
        // More rows than any statement could take as bound parameters one value each;
        // nearly all of them name recorders that do not exist (removed since).
        let mut batch: Vec<Presence> = (0..20_000)
            .map(|i| presence(&format!("gone-{i:05}"), 50))
            .collect();
        batch.insert(7_000, presence("r3", 70));
        batch.insert(3, presence("r1", 60));
        store.record_presence(&batch).await.unwrap();
        let r1 = store.recorder("r1").await.unwrap().unwrap();
        assert_eq!((r1.last_seen, r1.online_until), (Some(60), Some(90)));
        assert!(r1.online(89) && !r1.online(90));
        let r3 = store.recorder("r3").await.unwrap().unwrap();
        assert_eq!((r3.last_seen, r3.online_until), (Some(70), Some(100)));
        let r2 = store.recorder("r2").await.unwrap().unwrap();
        assert_eq!(
            (r2.last_seen, r2.online_until),
            (None, None),
            "not in the batch"
        );
        assert!(store.recorder("gone-00001").await.unwrap().is_none());

        // A late flush never moves last seen back.
        store.record_presence(&[presence("r1", 55)]).await.unwrap();
        assert_eq!(
            store.recorder("r1").await.unwrap().unwrap().last_seen,
            Some(60)
        );
    }
);

store_test!(
    a_revoked_recorder_stays_offline_whatever_heartbeats_were_in_flight,
    |db| async move {
        let store = &*db.store;
        account(store, "a").await;
        enroll(store, "r1", "a", "S1").await;
        store.record_presence(&[presence("r1", 10)]).await.unwrap();
        assert!(store.recorder("r1").await.unwrap().unwrap().online(20));
        assert!(store.revoke_recorder("r1", 20, "test").await.unwrap());
        let revoked = store.recorder("r1").await.unwrap().unwrap();
        assert!(!revoked.online(21), "offline from the revocation");

        store.record_presence(&[presence("r1", 25)]).await.unwrap();
        let after = store.recorder("r1").await.unwrap().unwrap();
        assert_eq!(after.online_until, None);
        assert!(!after.online(26));
        assert_eq!(after.revoked_at, Some(20));
        let page = store
            .recorder_page(&RecorderQuery {
                accounts: vec!["a".into()],
                online: Some(true),
                now: 26,
                limit: 10,
                ..RecorderQuery::default()
            })
            .await
            .unwrap();
        assert!(page.is_empty(), "{page:?}");
    }
);

store_test!(
    a_goodbye_newer_than_the_heartbeat_stands_until_a_later_heartbeat,
    |db| async move {
        let store = &*db.store;
        account(store, "a").await;
        enroll(store, "r1", "a", "S1").await;
        store.record_presence(&[presence("r1", 10)]).await.unwrap();
        store.record_goodbye("r1", 20, "shutdown").await.unwrap();
        let gone = store.recorder("r1").await.unwrap().unwrap();
        assert_eq!(gone.offline_reason.as_deref(), Some("shutdown"));
        assert_eq!((gone.last_seen, gone.online_until), (Some(20), Some(20)));
        assert!(!gone.online(20));

        // Heartbeats coalesced before the goodbye and flushed after it: the goodbye stands.
        for seen in [15, 20] {
            store
                .record_presence(&[presence("r1", seen)])
                .await
                .unwrap();
            let still = store.recorder("r1").await.unwrap().unwrap();
            assert_eq!(
                still, gone,
                "a heartbeat seen at {seen} after a goodbye at 20"
            );
        }

        // The recorder came back: online again, the reason gone.
        store.record_presence(&[presence("r1", 25)]).await.unwrap();
        let back = store.recorder("r1").await.unwrap().unwrap();
        assert_eq!(back.offline_reason, None);
        assert_eq!((back.last_seen, back.online_until), (Some(25), Some(55)));
        assert!(back.online(30));
    }
);

store_test!(
    a_status_is_written_only_when_given_and_read_back_with_its_uptime,
    |db| async move {
        let store = &*db.store;
        account(store, "a").await;
        enroll(store, "r1", "a", "S1").await;
        let beat = |seen, status: Option<&str>, uptime| Presence {
            status: status.map(str::to_owned),
            uptime_secs: uptime,
            ..presence("r1", seen)
        };
        store
            .record_presence(&[beat(10, Some(r#"{"disk":"ok","channels":16}"#), Some(100))])
            .await
            .unwrap();
        let r1 = store.recorder("r1").await.unwrap().unwrap();
        assert_eq!(
            status_of(&r1),
            Some(serde_json::json!({ "disk": "ok", "channels": 16, "uptime_secs": 100 }))
        );

        // An unchanged status is not sent again; the uptime moves on.
        store
            .record_presence(&[beat(40, None, Some(130))])
            .await
            .unwrap();
        let r1 = store.recorder("r1").await.unwrap().unwrap();
        assert_eq!(
            status_of(&r1),
            Some(serde_json::json!({ "disk": "ok", "channels": 16, "uptime_secs": 130 }))
        );
        assert_eq!(r1.last_seen, Some(40));

        // A changed status replaces the payload; a flush without uptime keeps the last one.
        store
            .record_presence(&[beat(70, Some(r#"{"disk":"failed"}"#), None)])
            .await
            .unwrap();
        let r1 = store.recorder("r1").await.unwrap().unwrap();
        assert_eq!(
            status_of(&r1),
            Some(serde_json::json!({ "disk": "failed", "uptime_secs": 130 }))
        );
        // Every read path merges it.
        let listed = store.recorders(Some("a")).await.unwrap().remove(0);
        assert_eq!(listed, r1);
        assert_eq!(store.recorder_by_key("key-r1").await.unwrap().unwrap(), r1);

        // Uptime alone, with no status ever sent, still reads as a status.
        enroll(store, "r2", "a", "S2").await;
        store
            .record_presence(&[Presence {
                uptime_secs: Some(5),
                ..presence("r2", 10)
            }])
            .await
            .unwrap();
        let r2 = store.recorder("r2").await.unwrap().unwrap();
        assert_eq!(
            status_of(&r2),
            Some(serde_json::json!({ "uptime_secs": 5 }))
        );
    }
);

/// The changes after `since_ms`, skipping none.
async fn changes(store: &dyn Store, since_ms: i64) -> Vec<FactChange> {
    store.fact_changes_since(since_ms).await.unwrap().changes
}

/// The database clock now, then a pause long enough for it to move on, so that a change
/// made after this returns is strictly newer than the mark.
async fn mark(store: &dyn Store) -> i64 {
    let now_ms = store.fact_changes_since(i64::MAX).await.unwrap().now_ms;
    tokio::time::sleep(Duration::from_millis(20)).await;
    now_ms
}

store_test!(
    revoking_moving_a_new_key_and_disabling_an_account_are_reported_as_fact_changes,
    |db| async move {
        let store = &*db.store;
        account(store, "p").await;
        child(store, "a", "p", AccountKind::Customer).await;
        child(store, "b", "p", AccountKind::Customer).await;
        for id in ["r1", "r2", "r3", "r4"] {
            enroll(store, id, "a", id).await;
        }
        // Creating accounts and enrolling new keys change no heartbeat answer; heartbeats
        // and goodbyes do not either.
        store.record_presence(&[presence("r1", 10)]).await.unwrap();
        store.record_goodbye("r2", 11, "shutdown").await.unwrap();
        store
            .rename_recorder("r3", Some("Gate"), 12, "t")
            .await
            .unwrap();
        let start = store.fact_changes_since(0).await.unwrap();
        assert!(
            start.changes.is_empty(),
            "nothing a heartbeat answer depends on changed: {:?}",
            start.changes
        );
        let wall_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        assert!(
            (start.now_ms - wall_ms).abs() < 60_000,
            "the database clock is Unix milliseconds: {} vs {wall_ms}",
            start.now_ms
        );

        let before_revoke = mark(store).await;
        store.revoke_recorder("r1", 20, "t").await.unwrap();
        assert_eq!(
            changes(store, before_revoke).await,
            [FactChange::Recorder("r1".into())]
        );

        let before_move = mark(store).await;
        store.move_recorder("r2", "a", "b", 21, "t").await.unwrap();
        assert_eq!(
            changes(store, before_move).await,
            [FactChange::Recorder("r2".into())]
        );

        let before_enrolled_move = mark(store).await;
        store
            .enroll(&record("r4", "b", "key-r4", "r4"))
            .await
            .unwrap();
        assert_eq!(
            changes(store, before_enrolled_move).await,
            [FactChange::Recorder("r4".into())],
            "a move by enrollment"
        );

        let before_key = mark(store).await;
        store
            .set_certificate(&CertificateRecord {
                recorder_id: "r3",
                key_fingerprint: "key-r3-new",
                cert_serial: "renewed",
                not_after: 5000,
                actor: "recorder:r3",
                action: "certificate.renewed",
                now: 22,
            })
            .await
            .unwrap();
        assert_eq!(
            changes(store, before_key).await,
            [FactChange::Recorder("r3".into())]
        );

        // A renewal with the same key changes no fact.
        let before_same_key = mark(store).await;
        store
            .set_certificate(&CertificateRecord {
                recorder_id: "r3",
                key_fingerprint: "key-r3-new",
                cert_serial: "renewed-again",
                not_after: 6000,
                actor: "recorder:r3",
                action: "certificate.renewed",
                now: 23,
            })
            .await
            .unwrap();
        let none = changes(store, before_same_key).await;
        assert!(none.is_empty(), "{none:?}");

        let before_disable = mark(store).await;
        store
            .set_account_disabled("p", true, 24, "t")
            .await
            .unwrap();
        assert_eq!(
            changes(store, before_disable).await,
            [FactChange::Account("p".into())]
        );
        let before_enable = mark(store).await;
        store
            .set_account_disabled("p", false, 25, "t")
            .await
            .unwrap();
        let before_rename = mark(store).await;
        let rename = AccountUpdate {
            name: Some("Partner".into()),
            ..AccountUpdate::default()
        };
        store.update_account("b", &rename, 26, "t").await.unwrap();
        assert_eq!(
            changes(store, before_enable).await,
            [
                FactChange::Account("p".into()),
                FactChange::Account("b".into())
            ],
            "in the order they happened"
        );
        assert_eq!(
            changes(store, before_rename).await,
            [FactChange::Account("b".into())]
        );

        // Everything since the start, in order.
        assert_eq!(
            changes(store, 0).await,
            [
                FactChange::Recorder("r1".into()),
                FactChange::Recorder("r2".into()),
                FactChange::Recorder("r4".into()),
                FactChange::Recorder("r3".into()),
                FactChange::Account("p".into()),
                FactChange::Account("p".into()),
                FactChange::Account("b".into()),
            ]
        );

        // Pruning forgets what was recorded before the mark and keeps the rest.
        assert_eq!(store.prune_fact_changes(before_disable).await.unwrap(), 4);
        assert_eq!(changes(store, 0).await.len(), 3);
        assert_eq!(store.prune_fact_changes(before_disable).await.unwrap(), 0);
        let everything = store.fact_changes_since(0).await.unwrap().now_ms + 1;
        assert_eq!(store.prune_fact_changes(everything).await.unwrap(), 3);
        let none = changes(store, 0).await;
        assert!(none.is_empty(), "{none:?}");
    }
);
