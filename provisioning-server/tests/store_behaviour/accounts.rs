//! Accounts: the tree, details, disabling a subtree, creation with a first user, and the
//! per-account recorder counts.

use crate::fixtures::*;
use contera_provisioning::accounts::RecorderCounts;
use contera_provisioning::permissions::PermissionSet;
use contera_provisioning::store::*;

async fn disabled_via(store: &dyn Store, id: &str) -> Option<String> {
    store.account(id).await.unwrap().unwrap().disabled_via
}

store_test!(
    an_account_is_created_with_its_code_and_an_administrators_group,
    |db| async move {
        let store = &*db.store;
        let partner = Account {
            kind: AccountKind::Partner,
            address: "1 Main St\nSpringfield".into(),
            contact: Some("Ann, 555-0100".into()),
            ..new_account("p")
        };
        store
            .create_account(&partner, &new_code("Cp"), "cli:admin")
            .await
            .unwrap();
        child(store, "c", "p", AccountKind::Customer).await;

        let stored = store.account("p").await.unwrap().unwrap();
        assert_eq!(
            stored,
            Account {
                code_public_id: Some("Cp".into()),
                ..partner
            }
        );
        let c = store.account("c").await.unwrap().unwrap();
        assert_eq!(
            (c.parent_id.as_deref(), c.kind),
            (Some("p"), AccountKind::Customer)
        );
        let mut ids: Vec<String> = store
            .accounts()
            .await
            .unwrap()
            .into_iter()
            .map(|a| a.id)
            .collect();
        ids.sort();
        assert_eq!(ids, ["c", "p"]);
        assert!(store.account("nope").await.unwrap().is_none());

        let groups = store.groups("p").await.unwrap();
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].name, ADMINISTRATORS_GROUP);
        assert_eq!(groups[0].permissions, PermissionSet::all());
        assert_eq!(groups[0].members, 0);
        let entry = store.audit_log(2).await.unwrap().pop().unwrap();
        assert_eq!(
            (entry.action.as_str(), entry.actor.as_str()),
            ("account.created", "cli:admin")
        );
        assert_eq!(entry.account_id.as_deref(), Some("p"));
        assert!(!entry.detail.contains("ciphertext"), "{}", entry.detail);

        // A taken code id: nothing of the second account is written.
        let taken = store
            .create_account(&new_account("x"), &new_code("Cp"), "t")
            .await;
        assert!(taken.is_err(), "{taken:?}");
        assert!(store.account("x").await.unwrap().is_none());
        assert!(store.groups("x").await.unwrap().is_empty());
    }
);

store_test!(
    disabling_an_account_disables_its_subtree_until_enabled,
    |db| async move {
        let store = &*db.store;
        let partner = Account {
            kind: AccountKind::Partner,
            ..new_account("p")
        };
        store
            .create_account(&partner, &new_code("Cp"), "test")
            .await
            .unwrap();
        child(store, "sub", "p", AccountKind::Partner).await;
        child(store, "c", "sub", AccountKind::Customer).await;
        account(store, "other").await;

        assert!(store
            .set_account_disabled("p", true, 50, "cli:admin")
            .await
            .unwrap());
        assert!(!store
            .set_account_disabled("p", true, 60, "cli:admin")
            .await
            .unwrap());
        for id in ["p", "sub", "c"] {
            assert_eq!(disabled_via(store, id).await.as_deref(), Some("p"), "{id}");
        }
        assert_eq!(disabled_via(store, "other").await, None);
        let p = store.account("p").await.unwrap().unwrap();
        assert_eq!(p.disabled_at, Some(50));
        assert_eq!(p.disabled_by.as_deref(), Some("cli:admin"));
        let c = store.account("c").await.unwrap().unwrap();
        assert_eq!(
            c.disabled_at, None,
            "only the switched account carries the time"
        );
        let listed: Vec<(String, bool)> = store
            .accounts()
            .await
            .unwrap()
            .into_iter()
            .map(|a| (a.id.clone(), a.effectively_disabled()))
            .collect();
        assert!(listed.contains(&("c".into(), true)));
        assert!(listed.contains(&("other".into(), false)));

        // The nearest disabled account is named.
        store
            .set_account_disabled("sub", true, 70, "t")
            .await
            .unwrap();
        assert_eq!(disabled_via(store, "c").await.as_deref(), Some("sub"));
        store
            .set_account_disabled("p", false, 80, "t")
            .await
            .unwrap();
        assert_eq!(disabled_via(store, "p").await, None);
        assert_eq!(disabled_via(store, "c").await.as_deref(), Some("sub"));
        store
            .set_account_disabled("sub", false, 90, "t")
            .await
            .unwrap();
        assert_eq!(disabled_via(store, "c").await, None);
        assert!(!store
            .set_account_disabled("sub", false, 95, "t")
            .await
            .unwrap());
        let sub = store.account("sub").await.unwrap().unwrap();
        assert_eq!((sub.disabled_at, sub.disabled_by), (None, None));

        let log = actions(store).await;
        assert_eq!(
            log[log.len() - 4..],
            [
                "account.disabled",
                "account.disabled",
                "account.enabled",
                "account.enabled"
            ]
        );
        assert!(matches!(
            store.set_account_disabled("nope", true, 1, "t").await,
            Err(StoreError::NotFound { .. })
        ));
    }
);

store_test!(
    an_update_audits_only_the_fields_that_changed,
    |db| async move {
        let store = &*db.store;
        account(store, "a").await;
        let update = AccountUpdate {
            name: Some("a".into()),
            address: Some("2 Side St".into()),
            contact: Some(Some("Ann, 555-0100".into())),
        };
        let updated = store
            .update_account("a", &update, 20, "cli:admin")
            .await
            .unwrap();
        assert_eq!(updated.address, "2 Side St");
        assert_eq!(updated.contact.as_deref(), Some("Ann, 555-0100"));
        assert_eq!(store.account("a").await.unwrap().unwrap(), updated);
        let entry = last_audit(store).await;
        assert_eq!(
            (entry.action.as_str(), entry.actor.as_str(), entry.at),
            ("account.updated", "cli:admin", 20)
        );
        assert_eq!(entry.account_id.as_deref(), Some("a"));
        assert_eq!(
            detail(&entry),
            serde_json::json!({
                "address": { "old": "", "new": "2 Side St" },
                "contact": { "old": null, "new": "Ann, 555-0100" },
            })
        );

        // The same again changes nothing and writes no audit row; a cleared contact is.
        let before = actions(store).await.len();
        store.update_account("a", &update, 30, "t").await.unwrap();
        assert_eq!(actions(store).await.len(), before);
        let clear = AccountUpdate {
            contact: Some(None),
            ..AccountUpdate::default()
        };
        let cleared = store.update_account("a", &clear, 40, "t").await.unwrap();
        assert_eq!(cleared.contact, None);
        assert_eq!(actions(store).await.len(), before + 1);
        let renamed = AccountUpdate {
            name: Some("Acme".into()),
            ..AccountUpdate::default()
        };
        assert_eq!(
            store
                .update_account("a", &renamed, 50, "t")
                .await
                .unwrap()
                .name,
            "Acme"
        );
        assert!(matches!(
            store.update_account("nope", &clear, 1, "t").await,
            Err(StoreError::NotFound { .. })
        ));
    }
);

fn invited(id: &str, account: &str, email: &str) -> (User, Invitation) {
    let user = User {
        id: id.into(),
        account_id: account.into(),
        email: email.into(),
        name: "First".into(),
        status: UserStatus::Invited,
        created_at: 1,
        created_by: "test".into(),
        terms_version: None,
        terms_accepted_at: None,
        age_confirmed_at: None,
        groups: vec![ADMINISTRATORS_GROUP.into()],
    };
    let invitation = Invitation {
        token_hash: id.as_bytes().to_vec(),
        user_id: id.into(),
        created_at: 1,
        expires_at: 100,
        used_at: None,
        replaced_at: None,
    };
    (user, invitation)
}

store_test!(
    an_account_and_its_first_user_are_written_together_or_not_at_all,
    |db| async move {
        let store = &*db.store;
        let (user, invitation) = invited("u1", "a1", "jo@example.com");
        store
            .create_account_with_first_user(
                &new_account("a1"),
                &new_code("AAAA"),
                &user,
                &invitation,
                "test",
            )
            .await
            .unwrap();
        let stored = store.user("u1").await.unwrap().unwrap();
        assert_eq!(stored.groups, vec![ADMINISTRATORS_GROUP.to_string()]);
        assert_eq!(stored.status, UserStatus::Invited);
        assert_eq!(store.invitation(b"u1").await.unwrap(), Some(invitation));
        assert_eq!(
            group_named(store, "a1", ADMINISTRATORS_GROUP).await.members,
            1
        );
        assert_eq!(actions(store).await, ["account.created", "user.invited"]);

        // The same email in another case: refused, and the account is not left behind.
        let (user, invitation) = invited("u2", "a2", "JO@example.com");
        let err = store
            .create_account_with_first_user(
                &new_account("a2"),
                &new_code("BBBB"),
                &user,
                &invitation,
                "test",
            )
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{err}");
        assert!(store.account("a2").await.unwrap().is_none());
        assert!(store.code("BBBB").await.unwrap().is_none());
        assert!(store.user("u2").await.unwrap().is_none());
        assert!(store.invitation(b"u2").await.unwrap().is_none());
        assert_eq!(store.accounts().await.unwrap().len(), 1);
        assert_eq!(actions(store).await.len(), 2);
    }
);

store_test!(
    recorders_are_counted_per_account_without_the_revoked_ones,
    |db| async move {
        let store = &*db.store;
        account(store, "a1").await;
        account(store, "a2").await;
        for id in ["r1", "r2", "r3"] {
            enroll(store, id, "a1", &format!("S{id}")).await;
        }
        store.record_presence(&[presence("r1", 10)]).await.unwrap();
        assert!(store.revoke_recorder("r3", 20, "t").await.unwrap());
        let counts = store.recorder_counts(30).await.unwrap();
        assert_eq!(
            counts,
            vec![RecorderCounts {
                account_id: "a1".into(),
                total: 2,
                online: 1
            }]
        );
        assert_eq!(
            store.recorder_counts(40).await.unwrap()[0].online,
            0,
            "online until 40"
        );
    }
);
