//! The admin side of recorders: paged, filtered lists, renaming, moving and confirming a
//! replacement, each change audited in the same transaction.

use crate::fixtures::*;
use contera_provisioning::store::*;

fn query(accounts: &[&str]) -> RecorderQuery {
    RecorderQuery {
        accounts: accounts.iter().map(|a| a.to_string()).collect(),
        now: 100,
        limit: 100,
        ..RecorderQuery::default()
    }
}

async fn ids(store: &dyn Store, q: &RecorderQuery) -> Vec<String> {
    store
        .recorder_page(q)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect()
}

store_test!(
    a_page_filters_in_the_given_accounts_and_continues_after_the_cursor,
    |db| async move {
        let store = &*db.store;
        account(store, "a").await;
        account(store, "b").await;
        for (id, acc) in [
            ("r1", "a"),
            ("r2", "b"),
            ("r3", "a"),
            ("r4", "a"),
            ("r5", "b"),
        ] {
            enroll(store, id, acc, &format!("SER-{id}")).await;
        }
        store
            .record_presence(&[Presence {
                online_until: 150,
                ..presence("r3", 90)
            }])
            .await
            .unwrap();
        store.revoke_recorder("r4", 20, "test").await.unwrap();
        store
            .rename_recorder("r1", Some("Lobby Camera"), 30, "test")
            .await
            .unwrap();

        assert_eq!(ids(store, &query(&["a"])).await, ["r1", "r3", "r4"]);
        assert!(
            ids(store, &query(&[])).await.is_empty(),
            "no accounts, no recorders"
        );
        let page = RecorderQuery {
            limit: 2,
            ..query(&["a", "b"])
        };
        assert_eq!(ids(store, &page).await, ["r1", "r2"]);
        let next = RecorderQuery {
            after_id: Some("r2".into()),
            ..page.clone()
        };
        assert_eq!(ids(store, &next).await, ["r3", "r4"]);
        let last = RecorderQuery {
            after_id: Some("r4".into()),
            ..page
        };
        assert_eq!(ids(store, &last).await, ["r5"]);

        let online = |on| RecorderQuery {
            online: Some(on),
            ..query(&["a"])
        };
        assert_eq!(ids(store, &online(true)).await, ["r3"]);
        assert_eq!(ids(store, &online(false)).await, ["r1", "r4"]);
        let later = RecorderQuery {
            now: 150,
            ..online(true)
        };
        assert!(ids(store, &later).await.is_empty(), "online_until passed");
        let revoked = |r| RecorderQuery {
            revoked: Some(r),
            ..query(&["a"])
        };
        assert_eq!(ids(store, &revoked(true)).await, ["r4"]);
        assert_eq!(ids(store, &revoked(false)).await, ["r1", "r3"]);

        let text = |t: &str| RecorderQuery {
            text: Some(t.into()),
            ..query(&["a", "b"])
        };
        assert_eq!(ids(store, &text("lobby")).await, ["r1"], "by name");
        assert_eq!(ids(store, &text("ser-R5")).await, ["r5"], "by serial");
        assert_eq!(ids(store, &text("44:r2")).await, ["r2"], "by MAC");
        assert_eq!(ids(store, &text("nv-16")).await.len(), 5, "by model");
        assert!(ids(store, &text("%")).await.is_empty(), "no wildcards");
        assert!(
            ids(store, &text("_")).await.is_empty(),
            "no single-character wildcard"
        );

        // Filters combine.
        let combined = RecorderQuery {
            text: Some("ser".into()),
            revoked: Some(false),
            online: Some(false),
            ..query(&["a"])
        };
        assert_eq!(ids(store, &combined).await, ["r1"]);
        let full = store.recorder_page(&query(&["a"])).await.unwrap();
        assert_eq!(full[0], store.recorder("r1").await.unwrap().unwrap());
    }
);

store_test!(
    renaming_audits_old_and_new_and_the_same_name_writes_nothing,
    |db| async move {
        let store = &*db.store;
        account(store, "a").await;
        enroll(store, "r1", "a", "S1").await;
        let named = store
            .rename_recorder("r1", Some("Gate"), 20, "user:u1@192.0.2.7")
            .await
            .unwrap();
        assert_eq!(named.name.as_deref(), Some("Gate"));
        assert_eq!(
            store.recorder("r1").await.unwrap().unwrap().name.as_deref(),
            Some("Gate")
        );
        store
            .rename_recorder("r1", Some("Gate"), 30, "user:u1")
            .await
            .unwrap();
        let cleared = store
            .rename_recorder("r1", None, 40, "user:u1")
            .await
            .unwrap();
        assert_eq!(cleared.name, None);
        let renames: Vec<_> = history(store, "r1")
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
);

store_test!(
    a_move_is_audited_and_refused_into_a_disabled_account_or_from_a_stale_one,
    |db| async move {
        let store = &*db.store;
        account(store, "p").await;
        for id in ["a", "b", "c"] {
            child(store, id, "p", AccountKind::Customer).await;
        }
        enroll(store, "r1", "a", "S1").await;
        let moved = store
            .move_recorder("r1", "a", "b", 20, "user:u1")
            .await
            .unwrap();
        assert_eq!(moved.account_id, "b");
        assert_eq!(moved.key_fingerprint, "key-r1", "keeps its key");
        assert_eq!(moved.cert_serial.as_deref(), Some("cert-r1"));
        assert_eq!(store.recorder("r1").await.unwrap().unwrap(), moved);
        assert_eq!(
            history(store, "r1").await[0],
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
        assert!(
            matches!(nowhere, Err(StoreError::NotFound { .. })),
            "{nowhere:?}"
        );
        let nobody = store.move_recorder("nope", "b", "c", 30, "user:u1").await;
        assert!(
            matches!(nobody, Err(StoreError::NotFound { .. })),
            "{nobody:?}"
        );

        store
            .set_account_disabled("p", true, 30, "test")
            .await
            .unwrap();
        match store.move_recorder("r1", "b", "c", 40, "user:u1").await {
            Err(StoreError::Conflict(m)) => assert!(m.contains("above"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(store.recorder("r1").await.unwrap().unwrap().account_id, "b");
        assert_eq!(history(store, "r1").await[0].0, "recorder.moved");

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
        assert_eq!(store.recorder("r1").await.unwrap().unwrap().account_id, "b");
    }
);

store_test!(
    confirming_a_replacement_revokes_the_old_recorder_once,
    |db| async move {
        let store = &*db.store;
        account(store, "a").await;
        enroll(store, "old", "a", "S1").await;
        let new = enroll(store, "new", "a", "S1").await;
        assert_eq!(new.replaces.as_deref(), Some("old"));

        let not_flagged = store.confirm_replacement("old", "new", 20, "user:u1").await;
        assert!(
            matches!(not_flagged, Err(StoreError::Conflict(_))),
            "{not_flagged:?}"
        );
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
            history(store, "old").await[0],
            (
                "recorder.revoked".to_owned(),
                serde_json::json!({"serial": "S1", "replaced_by": "new"})
            )
        );
        assert_eq!(
            history(store, "new").await[0].0,
            "recorder.replacement_confirmed"
        );
        let again = store.confirm_replacement("new", "old", 30, "user:u1").await;
        assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
        let unknown = store
            .confirm_replacement("nope", "old", 30, "user:u1")
            .await;
        assert!(
            matches!(unknown, Err(StoreError::NotFound { .. })),
            "{unknown:?}"
        );
    }
);
