//! Writes racing each other, from two pools on one database as two server replicas (or a
//! server and the admin CLI) make them: limits hold, one key stays one recorder, and
//! nobody fails for having waited.

use std::sync::Arc;

use crate::fixtures::*;
use contera_provisioning::permissions::Permission;
use contera_provisioning::store::*;

/// Two handles on the test's database: the one it was opened with and a second pool.
async fn replicas(db: &crate::backend::TestDb) -> [Arc<dyn Store>; 2] {
    [db.store.clone(), db.open_again().await]
}

store_test!(
    concurrent_enrollments_never_exceed_max_uses,
    |db| async move {
        let replicas = replicas(&db).await;
        account(&*db.store, "a").await;
        let limit = contera_provisioning::accounts::CodeUpdate {
            max_uses: Some(Some(3)),
            ..Default::default()
        };
        db.store.update_code("Ca", &limit, 5, "test").await.unwrap();
        let tasks: Vec<_> = (0..12)
            .map(|i| {
                let store = replicas[i % 2].clone();
                tokio::spawn(async move {
                    store
                        .enroll(&record(&format!("r{i}"), "a", &format!("k{i}"), "S"))
                        .await
                })
            })
            .collect();
        let mut ok = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(_) => ok += 1,
                Err(StoreError::CodeRefused) => {}
                Err(e) => panic!("{:?}: {e:?}", db.backend),
            }
        }
        assert_eq!(ok, 3);
        assert_eq!(db.store.recorders(None).await.unwrap().len(), 3);
        assert_eq!(db.store.code_info("Ca").await.unwrap().unwrap().uses, 3);
        let enrolled = actions(&*db.store)
            .await
            .iter()
            .filter(|a| *a == "recorder.enrolled")
            .count();
        assert_eq!(enrolled, 3, "no audit row of a refused enrollment survives");
    }
);

store_test!(
    concurrent_enrollments_of_one_key_make_one_recorder,
    |db| async move {
        let replicas = replicas(&db).await;
        account(&*db.store, "a").await;
        // Each request looked the key up, found nothing and signed for a fresh id; the
        // losers are told the winner's id, sign for it and retry, as the server does.
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let store = replicas[i % 2].clone();
                tokio::spawn(async move {
                    let mut attempt = record(&format!("fresh-{i}"), "a", "the-key", "S1");
                    for _ in 0..3 {
                        match store.enroll(&attempt).await {
                            Err(StoreError::EnrollmentRaced {
                                recorder_id: Some(id),
                            }) => {
                                attempt.recorder_id = id;
                            }
                            other => return other,
                        }
                    }
                    panic!("still racing after three attempts")
                })
            })
            .collect();
        let mut ids = Vec::new();
        let mut new = 0;
        for task in tasks {
            let outcome = match task.await.unwrap() {
                Ok(outcome) => outcome,
                Err(e) => panic!("{:?}: {e:?}", db.backend),
            };
            if matches!(outcome.kind, EnrollKind::New { .. }) {
                new += 1;
            } else {
                assert_eq!(outcome.kind, EnrollKind::Again);
            }
            ids.push(outcome.recorder.id);
        }
        assert_eq!(new, 1, "one enrollment made the recorder");
        ids.dedup();
        assert_eq!(
            ids.len(),
            1,
            "every request ended with the same recorder: {ids:?}"
        );
        let recorders = db.store.recorders(None).await.unwrap();
        assert_eq!(recorders.len(), 1);
        assert_eq!(recorders[0].id, ids[0]);
        assert_eq!(
            recorders[0].replaces, None,
            "not flagged as replacing itself"
        );
        assert_eq!(db.store.code_info("Ca").await.unwrap().unwrap().uses, 8);
    }
);

store_test!(
    concurrent_changes_wait_for_each_other_instead_of_failing,
    |db| async move {
        let replicas = replicas(&db).await;
        let store = &*db.store;
        account(store, "a").await;
        let admins = group_named(store, "a", ADMINISTRATORS_GROUP).await;
        let viewers = new_group(store, "a", "Viewers", &[Permission::RecordersView]).await;
        active_user(store, "a", "boss@example.com", &admins.id).await;
        let mut users = Vec::new();
        for i in 0..8 {
            users.push(active_user(store, "a", &format!("u{i}@example.com"), &admins.id).await);
        }
        let mut tasks = Vec::new();
        for (i, user) in users.into_iter().enumerate() {
            let store = replicas[i % 2].clone();
            let viewers = viewers.id.clone();
            tasks.push(tokio::spawn(async move {
                store
                    .update_user(&user.id, &format!("Name {i}"), 5, "t")
                    .await?;
                store.set_user_groups(&user.id, &[viewers], 5, "t").await
            }));
        }
        for task in tasks {
            match task.await.unwrap() {
                Ok(user) => assert_eq!(user.groups, vec!["Viewers".to_string()]),
                Err(e) => panic!("{:?}: {e:?}", db.backend),
            }
        }
        assert_eq!(group_named(store, "a", "Viewers").await.members, 8);
    }
);

store_test!(
    the_last_administrators_removed_at_once_leave_one,
    |db| async move {
        let replicas = replicas(&db).await;
        let store = &*db.store;
        account(store, "a").await;
        let admins = group_named(store, "a", ADMINISTRATORS_GROUP).await;
        let mut bosses = Vec::new();
        for i in 0..4 {
            bosses.push(active_user(store, "a", &format!("boss{i}@example.com"), &admins.id).await);
        }
        // Each replica checks "another administrator is left": only a check and a write in
        // one transaction that waits for the others keeps one.
        let tasks: Vec<_> = bosses
            .iter()
            .enumerate()
            .map(|(i, boss)| {
                let store = replicas[i % 2].clone();
                let id = boss.id.clone();
                tokio::spawn(async move { store.set_user_disabled(&id, true, 10, "t").await })
            })
            .collect();
        let mut disabled = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(true) => disabled += 1,
                Err(StoreError::LastAdministrator { .. }) => {}
                other => panic!("{:?}: {other:?}", db.backend),
            }
        }
        assert_eq!(disabled, 3);
        let active = store
            .users(Some("a"))
            .await
            .unwrap()
            .into_iter()
            .filter(|u| u.status == UserStatus::Active)
            .count();
        assert_eq!(active, 1);
    }
);

store_test!(
    presence_flushes_of_two_replicas_over_the_same_recorders_both_land,
    |db| async move {
        let replicas = replicas(&db).await;
        let store = &*db.store;
        account(store, "a").await;
        let ids: Vec<String> = (0..20).map(|i| format!("r{i:02}")).collect();
        for id in &ids {
            enroll(store, id, "a", id).await;
        }
        // The same recorders in opposite orders, many times at once: rows are locked in one
        // order, so neither replica deadlocks the other.
        let tasks: Vec<_> = (0..10)
            .map(|round| {
                let store = replicas[round % 2].clone();
                let mut batch: Vec<Presence> = ids
                    .iter()
                    .map(|id| presence(id, 100 + round as i64))
                    .collect();
                if round % 2 == 1 {
                    batch.reverse();
                }
                tokio::spawn(async move { store.record_presence(&batch).await })
            })
            .collect();
        for task in tasks {
            if let Err(e) = task.await.unwrap() {
                panic!("{:?}: {e:?}", db.backend);
            }
        }
        for recorder in store.recorders(Some("a")).await.unwrap() {
            assert_eq!(
                recorder.last_seen,
                Some(109),
                "{}: the newest flush wins",
                recorder.id
            );
        }
    }
);
