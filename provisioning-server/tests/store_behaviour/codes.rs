//! Registration codes: several per account, listed, disabled, rotated and updated, each
//! change audited with what changed and never the code itself.

use crate::fixtures::*;
use contera_provisioning::accounts::CodeUpdate;
use contera_provisioning::store::*;

store_test!(
    codes_are_listed_newest_first_and_disabled_one_by_one,
    |db| async move {
        let store = &*db.store;
        account(store, "a").await;
        assert!(store.sealed_codes_exist().await.unwrap());
        let mut second = new_code("Ca2");
        second.created_at = 5;
        second.label = "Installer".into();
        second.max_uses = Some(4);
        store.create_code("a", &second, "test").await.unwrap();
        assert!(matches!(
            store.create_code("a", &second, "test").await,
            Err(StoreError::Conflict(_))
        ));
        assert!(matches!(
            store.create_code("nope", &new_code("X"), "test").await,
            Err(StoreError::NotFound { .. })
        ));
        let codes = store.codes("a").await.unwrap();
        let ids: Vec<&str> = codes.iter().map(|c| c.public_id.as_str()).collect();
        assert_eq!(ids, ["Ca2", "Ca"]);
        assert_eq!(codes[0].label, "Installer");
        assert_eq!(codes[0].max_uses, Some(4));
        assert_eq!(codes[0].created_by, "test");
        assert_eq!(codes[0].sealed, Some(new_code("Ca2").sealed));
        let stored = store.code("Ca2").await.unwrap().unwrap();
        assert_eq!(
            (stored.account_id.as_str(), stored.secret_hash.as_slice()),
            ("a", &[0u8; 32][..])
        );
        assert!(!stored.disabled);
        assert_eq!(
            store
                .account("a")
                .await
                .unwrap()
                .unwrap()
                .code_public_id
                .as_deref(),
            Some("Ca2")
        );

        assert!(store.disable_code("Ca2", 6, "test").await.unwrap());
        assert!(!store.disable_code("Ca2", 7, "test").await.unwrap());
        assert!(matches!(
            store.disable_code("none", 7, "test").await,
            Err(StoreError::NotFound { .. })
        ));
        assert_eq!(
            store.code_info("Ca2").await.unwrap().unwrap().disabled_at,
            Some(6)
        );
        assert!(store.code("Ca2").await.unwrap().unwrap().disabled);
        assert!(store
            .code_info("Ca")
            .await
            .unwrap()
            .unwrap()
            .disabled_at
            .is_none());
        assert_eq!(
            store
                .account("a")
                .await
                .unwrap()
                .unwrap()
                .code_public_id
                .as_deref(),
            Some("Ca"),
            "the newest active code is the account's"
        );
        assert_eq!(
            actions(store).await,
            ["account.created", "code.created", "code.disabled"]
        );
        assert!(store.code_info("none").await.unwrap().is_none());
    }
);

store_test!(
    rotating_disables_every_active_code_and_adds_the_new_one_together,
    |db| async move {
        let store = &*db.store;
        account(store, "a").await;
        let mut extra = new_code("Ca2");
        extra.created_at = 5;
        store.create_code("a", &extra, "test").await.unwrap();
        let mut fresh = new_code("Ca3");
        fresh.created_at = 20;
        store
            .rotate_code("a", &fresh, 20, "cli:admin")
            .await
            .unwrap();
        let codes = store.codes("a").await.unwrap();
        let states: Vec<(&str, Option<i64>)> = codes
            .iter()
            .map(|c| (c.public_id.as_str(), c.disabled_at))
            .collect();
        assert_eq!(states, [("Ca3", None), ("Ca2", Some(20)), ("Ca", Some(20))]);
        assert_eq!(
            store
                .account("a")
                .await
                .unwrap()
                .unwrap()
                .code_public_id
                .as_deref(),
            Some("Ca3")
        );
        let entry = last_audit(store).await;
        assert_eq!(entry.action, "code.rotated");
        let mut audited = detail(&entry);
        let mut disabled: Vec<String> = serde_json::from_value(audited["disabled"].take()).unwrap();
        disabled.sort();
        assert_eq!(disabled, ["Ca", "Ca2"]);
        assert_eq!(audited["code_public_id"], "Ca3");

        // An unknown account: nothing written.
        let before = actions(store).await;
        assert!(matches!(
            store.rotate_code("nope", &new_code("X1"), 30, "t").await,
            Err(StoreError::NotFound { .. })
        ));
        assert!(store.code("X1").await.unwrap().is_none());
        assert_eq!(actions(store).await, before);
    }
);

store_test!(
    a_code_update_writes_and_audits_only_what_changed,
    |db| async move {
        let store = &*db.store;
        store
            .create_account(&new_account("a1"), &new_code("AAAA"), "test")
            .await
            .unwrap();
        let update = CodeUpdate {
            label: Some("Installer".into()),
            expires_at: Some(Some(500)),
            max_uses: Some(Some(3)),
        };
        let info = store
            .update_code("AAAA", &update, 10, "user:u1@192.0.2.7")
            .await
            .unwrap();
        assert_eq!(
            (info.label.as_str(), info.expires_at, info.max_uses),
            ("Installer", Some(500), Some(3))
        );
        assert_eq!(store.code_info("AAAA").await.unwrap().unwrap(), info);
        let entry = last_audit(store).await;
        assert_eq!(entry.action, "code.updated");
        assert_eq!(entry.actor, "user:u1");
        assert_eq!(entry.source.as_deref(), Some("192.0.2.7"));
        assert_eq!(entry.account_id.as_deref(), Some("a1"));
        assert_eq!(
            detail(&entry),
            serde_json::json!({
                "code_public_id": "AAAA",
                "label": { "old": "Initial code", "new": "Installer" },
                "expires_at": { "old": null, "new": 500 },
                "max_uses": { "old": null, "new": 3 },
            })
        );

        // Clearing one limit audits that one only; the same values again audit nothing.
        let clear = CodeUpdate {
            label: Some("Installer".into()),
            max_uses: Some(None),
            ..CodeUpdate::default()
        };
        let info = store.update_code("AAAA", &clear, 11, "t").await.unwrap();
        assert_eq!((info.expires_at, info.max_uses), (Some(500), None));
        assert_eq!(
            detail(&last_audit(store).await),
            serde_json::json!({ "code_public_id": "AAAA", "max_uses": { "old": 3, "new": null } })
        );
        let before = actions(store).await.len();
        store.update_code("AAAA", &clear, 12, "t").await.unwrap();
        assert_eq!(actions(store).await.len(), before);

        assert!(matches!(
            store.update_code("ZZZZ", &clear, 12, "t").await,
            Err(StoreError::NotFound { .. })
        ));
    }
);
