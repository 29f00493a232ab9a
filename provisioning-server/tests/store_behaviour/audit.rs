//! The audit log: entries the server writes on its own, the source address kept apart
//! from the actor, and the filtered, paged read the admin API lists.

use crate::fixtures::*;
use contera_provisioning::store::*;

store_test!(
    server_audit_entries_are_appended_in_order_with_their_fields,
    |db| async move {
        let store = &*db.store;
        account(store, "a").await;
        let entries = vec![
            NewAuditEntry {
                at: 50,
                actor: "server".into(),
                action: "enrollment.failed".into(),
                account_id: Some("a".into()),
                recorder_id: None,
                detail: serde_json::json!({ "code_public_id": "Ca", "count": 17 }),
            },
            NewAuditEntry {
                at: 51,
                actor: "server".into(),
                action: "enrollment.failed".into(),
                account_id: None,
                recorder_id: Some("r9".into()),
                detail: serde_json::json!({ "count": 1 }),
            },
        ];
        store.append_audit(&entries).await.unwrap();
        store.append_audit(&[]).await.unwrap();
        let mut written = store.audit_log(2).await.unwrap();
        written.reverse();
        let got: Vec<NewAuditEntry> = written
            .iter()
            .map(|e| NewAuditEntry {
                at: e.at,
                actor: e.actor.clone(),
                action: e.action.clone(),
                account_id: e.account_id.clone(),
                recorder_id: e.recorder_id.clone(),
                detail: detail(e),
            })
            .collect();
        assert_eq!(got, entries);
        assert!(
            written[0].id < written[1].id,
            "ids grow in the order written"
        );
        assert_eq!(written[0].source, None);
        assert_eq!(store.audit_log(1000).await.unwrap().len(), 3);
    }
);

fn filter() -> AuditFilter {
    AuditFilter {
        limit: 100,
        ..AuditFilter::default()
    }
}

async fn found(store: &dyn Store, f: &AuditFilter) -> Vec<(String, String, i64)> {
    store
        .audit_entries(f)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.action, e.actor, e.at))
        .collect()
}

store_test!(
    audit_entries_filter_by_accounts_actor_action_time_and_recorder_and_page_by_id,
    |db| async move {
        let store = &*db.store;
        account(store, "a").await; // at 1, "test"
        account(store, "b").await; // at 1, "test"
        let r1 = enroll(store, "r1", "a", "S1").await; // at 10, code:Ca, enrolled + issued
        store
            .rename_recorder(
                &r1.id,
                Some("Gate"),
                20,
                &actor_from("user:u1", "192.0.2.7".parse().unwrap()),
            )
            .await
            .unwrap();
        store
            .rename_recorder(
                &r1.id,
                Some("Door"),
                30,
                &actor_from("user:u1", "2001:db8::1".parse().unwrap()),
            )
            .await
            .unwrap();
        store
            .set_account_disabled("b", true, 40, "cli")
            .await
            .unwrap();

        // The source is kept apart from who acted: the actor filter matches without it.
        let by_u1 = store
            .audit_entries(&AuditFilter {
                actor: Some("user:u1".into()),
                ..filter()
            })
            .await
            .unwrap();
        let sources: Vec<Option<&str>> = by_u1.iter().map(|e| e.source.as_deref()).collect();
        assert_eq!(sources, [Some("2001:db8::1"), Some("192.0.2.7")]);
        assert!(by_u1.iter().all(|e| e.actor == "user:u1"));
        let cli = store
            .audit_entries(&AuditFilter {
                actor: Some("cli".into()),
                ..filter()
            })
            .await
            .unwrap();
        assert_eq!(cli.len(), 1);
        assert_eq!(cli[0].source, None, "the CLI has no address");

        let only_b = AuditFilter {
            accounts: Some(vec!["b".into()]),
            ..filter()
        };
        assert_eq!(
            found(store, &only_b).await,
            [
                ("account.disabled".into(), "cli".into(), 40),
                ("account.created".into(), "test".into(), 1)
            ]
        );
        let no_accounts = AuditFilter {
            accounts: Some(vec![]),
            ..filter()
        };
        assert!(
            found(store, &no_accounts).await.is_empty(),
            "an empty subtree sees nothing"
        );
        assert_eq!(found(store, &filter()).await.len(), 7, "None: all");

        let renamed = AuditFilter {
            action: Some("recorder.renamed".into()),
            ..filter()
        };
        assert_eq!(found(store, &renamed).await.len(), 2);
        let window = AuditFilter {
            since: Some(10),
            until: Some(30),
            ..filter()
        };
        let in_window: Vec<i64> = found(store, &window)
            .await
            .into_iter()
            .map(|(_, _, at)| at)
            .collect();
        assert_eq!(
            in_window,
            [20, 10, 10],
            "since inclusive, until exclusive, newest first"
        );
        let about_r1 = AuditFilter {
            recorder_id: Some("r1".into()),
            ..filter()
        };
        let actions: Vec<String> = found(store, &about_r1)
            .await
            .into_iter()
            .map(|(a, _, _)| a)
            .collect();
        assert_eq!(
            actions,
            [
                "recorder.renamed",
                "recorder.renamed",
                "certificate.issued",
                "recorder.enrolled"
            ]
        );

        // Pages: newest first, each continuing below the last id of the one before.
        let mut seen = Vec::new();
        let mut before_id = None;
        loop {
            let page = store
                .audit_entries(&AuditFilter {
                    limit: 3,
                    before_id,
                    ..filter()
                })
                .await
                .unwrap();
            if page.is_empty() {
                break;
            }
            assert!(page.len() <= 3);
            before_id = page.last().map(|e| e.id);
            seen.extend(page.into_iter().map(|e| e.id));
        }
        let all: Vec<i64> = store
            .audit_log(100)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(seen, all);
        assert!(all.windows(2).all(|w| w[0] > w[1]));

        // Filters combine.
        let combined = AuditFilter {
            accounts: Some(vec!["a".into()]),
            actor: Some("user:u1".into()),
            since: Some(25),
            ..filter()
        };
        assert_eq!(
            found(store, &combined).await,
            [("recorder.renamed".into(), "user:u1".into(), 30)]
        );
    }
);
