//! Users, groups and invitations, and the rule that an account always keeps an active
//! user who can manage users and groups.

use crate::fixtures::*;
use contera_provisioning::permissions::{Permission, PermissionSet};
use contera_provisioning::store::*;

/// Accounts `a` and `b`, each with its Administrators group.
async fn setup(store: &dyn Store) {
    account(store, "a").await;
    account(store, "b").await;
}

store_test!(
    an_invitation_is_accepted_once_before_it_expires_and_only_the_newest_one,
    |db| async move {
        let store = &*db.store;
        setup(store).await;
        let admins = group_named(store, "a", ADMINISTRATORS_GROUP).await;
        let (user, first) = invited_user(store, "a", "Jo@Example.com", &admins.id, 100).await;
        let stored = store.user(&user.id).await.unwrap().unwrap();
        assert_eq!(stored.status, UserStatus::Invited);
        assert_eq!(stored.groups, [ADMINISTRATORS_GROUP]);
        assert_eq!(
            store.user_by_email("jo@example.COM").await.unwrap(),
            Some(stored.clone())
        );
        assert_eq!(
            store.users(Some("a")).await.unwrap(),
            std::slice::from_ref(&stored)
        );
        assert!(store.users(Some("b")).await.unwrap().is_empty());
        assert_eq!(store.users(None).await.unwrap().len(), 1);
        assert_eq!(store.password_hash(&user.id).await.unwrap(), None);
        assert_eq!(last_audit(store).await.action, "user.invited");

        // The same address in any case is taken, in any account.
        let again = User {
            id: "other".into(),
            account_id: "b".into(),
            email: "JO@example.com".into(),
            ..user.clone()
        };
        let other_invitation = Invitation {
            token_hash: b"other".to_vec(),
            user_id: "other".into(),
            ..first.clone()
        };
        let b_admins = group_named(store, "b", ADMINISTRATORS_GROUP).await;
        let taken = store
            .create_invited_user(&again, &b_admins.id, &other_invitation, "t")
            .await;
        assert!(matches!(taken, Err(StoreError::Conflict(_))), "{taken:?}");
        assert!(store.user("other").await.unwrap().is_none());

        // Resent: the first link is replaced and refused from then on.
        let second = Invitation {
            token_hash: b"second".to_vec(),
            created_at: 50,
            expires_at: 150,
            ..first.clone()
        };
        store
            .replace_invitation(&second, "user:boss@192.0.2.7")
            .await
            .unwrap();
        let entry = last_audit(store).await;
        assert_eq!(
            (entry.action.as_str(), entry.source.as_deref()),
            ("invitation.resent", Some("192.0.2.7"))
        );
        assert_eq!(
            store
                .invitation(&first.token_hash)
                .await
                .unwrap()
                .unwrap()
                .replaced_at,
            Some(50)
        );
        let accept = |token: &'static [u8], now| Acceptance {
            token_hash: token,
            password_hash: "$argon2id$not-a-real-hash",
            terms_version: "2026-01",
            now,
        };
        let replaced = store
            .accept_invitation(&accept(b"Jo@Example.com", 60))
            .await;
        assert!(
            matches!(replaced, Err(StoreError::InvitationRefused)),
            "{replaced:?}"
        );
        // The newest one, but too late: refused, and nothing written.
        let expired = store.accept_invitation(&accept(b"second", 150)).await;
        assert!(
            matches!(expired, Err(StoreError::InvitationRefused)),
            "{expired:?}"
        );
        assert_eq!(
            store.user(&user.id).await.unwrap().unwrap().status,
            UserStatus::Invited
        );
        assert_eq!(
            store.invitation(b"second").await.unwrap().unwrap().used_at,
            None
        );
        let unknown = store.accept_invitation(&accept(b"never-sent", 60)).await;
        assert!(
            matches!(unknown, Err(StoreError::InvitationRefused)),
            "{unknown:?}"
        );

        let active = store
            .accept_invitation(&accept(b"second", 149))
            .await
            .unwrap();
        assert_eq!(active.status, UserStatus::Active);
        assert_eq!(active.terms_version.as_deref(), Some("2026-01"));
        assert_eq!(
            (active.terms_accepted_at, active.age_confirmed_at),
            (Some(149), Some(149))
        );
        assert_eq!(
            store.invitation(b"second").await.unwrap().unwrap().used_at,
            Some(149)
        );
        assert_eq!(
            store.password_hash(&user.id).await.unwrap().as_deref(),
            Some("$argon2id$not-a-real-hash")
        );
        let entry = last_audit(store).await;
        assert_eq!(
            (entry.action.as_str(), entry.actor.clone()),
            ("invitation.accepted", format!("user:{}", user.id))
        );
        assert!(!entry.detail.contains("argon2"), "{}", entry.detail);

        // Used: refused the second time; an active user gets no new invitation.
        let twice = store.accept_invitation(&accept(b"second", 149)).await;
        assert!(
            matches!(twice, Err(StoreError::InvitationRefused)),
            "{twice:?}"
        );
        let third = Invitation {
            token_hash: b"third".to_vec(),
            ..second
        };
        let not_invited = store.replace_invitation(&third, "t").await;
        assert!(
            matches!(not_invited, Err(StoreError::NotFound { .. })),
            "{not_invited:?}"
        );
        assert!(store.invitation(b"third").await.unwrap().is_none());
    }
);

store_test!(
    renaming_audits_old_and_new_name_and_the_same_name_writes_nothing,
    |db| async move {
        let store = &*db.store;
        setup(store).await;
        let admins = group_named(store, "a", ADMINISTRATORS_GROUP).await;
        let user = active_user(store, "a", "jo@example.com", &admins.id).await;
        let renamed = store
            .update_user(&user.id, "New Name", 5, "user:x@192.0.2.7")
            .await
            .unwrap();
        assert_eq!(renamed.name, "New Name");
        assert_eq!(
            store.user(&user.id).await.unwrap().unwrap().name,
            "New Name"
        );
        let entry = last_audit(store).await;
        assert_eq!(entry.action, "user.updated");
        assert_eq!(entry.source.as_deref(), Some("192.0.2.7"));
        assert!(entry.detail.contains("Old Name") && entry.detail.contains("New Name"));
        let count = actions(store).await.len();
        store
            .update_user(&user.id, "New Name", 6, "test")
            .await
            .unwrap();
        assert_eq!(actions(store).await.len(), count, "no change, no audit row");
        assert!(matches!(
            store.update_user("nobody", "X", 7, "test").await,
            Err(StoreError::NotFound { .. })
        ));
    }
);

store_test!(
    groups_are_replaced_only_with_groups_of_the_users_account,
    |db| async move {
        let store = &*db.store;
        setup(store).await;
        let admins = group_named(store, "a", ADMINISTRATORS_GROUP).await;
        let viewers = new_group(store, "a", "Viewers", &[Permission::RecordersView]).await;
        let other = group_named(store, "b", ADMINISTRATORS_GROUP).await;
        active_user(store, "a", "boss@example.com", &admins.id).await;
        let user = active_user(store, "a", "jo@example.com", &admins.id).await;

        assert!(matches!(
            store
                .set_user_groups(&user.id, &[viewers.id.clone(), other.id.clone()], 5, "t")
                .await,
            Err(StoreError::NotFound { .. })
        ));
        assert!(matches!(
            store.set_user_groups(&user.id, &[], 5, "t").await,
            Err(StoreError::Conflict(_))
        ));
        assert_eq!(
            store.user(&user.id).await.unwrap().unwrap().groups,
            vec![ADMINISTRATORS_GROUP.to_string()],
            "refusals write nothing"
        );

        let moved = store
            .set_user_groups(&user.id, std::slice::from_ref(&viewers.id), 5, "t")
            .await
            .unwrap();
        assert_eq!(moved.groups, vec!["Viewers".to_string()]);
        let entry = last_audit(store).await;
        assert_eq!(entry.action, "user.groups_set");
        assert!(entry.detail.contains(&admins.id) && entry.detail.contains(&viewers.id));
        assert_eq!(group_named(store, "a", "Viewers").await.members, 1);
    }
);

store_test!(a_group_name_is_taken_once_per_account, |db| async move {
    let store = &*db.store;
    setup(store).await;
    let viewers = new_group(store, "a", "Viewers", &[Permission::RecordersView]).await;
    assert_eq!(last_audit(store).await.action, "group.created");
    let twin = Group {
        id: uuid::Uuid::new_v4().to_string(),
        ..viewers.clone()
    };
    assert!(matches!(
        store.create_group(&twin, "t").await,
        Err(StoreError::Conflict(_))
    ));
    new_group(store, "b", "Viewers", &[]).await;
    let nowhere = Group {
        id: uuid::Uuid::new_v4().to_string(),
        account_id: "zz".into(),
        ..viewers
    };
    assert!(matches!(
        store.create_group(&nowhere, "t").await,
        Err(StoreError::NotFound { .. })
    ));
    let names: Vec<String> = store
        .groups("a")
        .await
        .unwrap()
        .into_iter()
        .map(|g| g.name)
        .collect();
    assert_eq!(names, [ADMINISTRATORS_GROUP, "Viewers"]);
});

store_test!(
    the_last_administrator_cannot_be_moved_out_of_administration,
    |db| async move {
        let store = &*db.store;
        setup(store).await;
        let admins = group_named(store, "a", ADMINISTRATORS_GROUP).await;
        let viewers = new_group(store, "a", "Viewers", &[Permission::RecordersView]).await;
        let boss = active_user(store, "a", "boss@example.com", &admins.id).await;
        let before = actions(store).await.len();
        assert!(matches!(
            store
                .set_user_groups(&boss.id, std::slice::from_ref(&viewers.id), 5, "t")
                .await,
            Err(StoreError::LastAdministrator { .. })
        ));
        assert_eq!(
            store.user(&boss.id).await.unwrap().unwrap().groups,
            vec![ADMINISTRATORS_GROUP.to_string()]
        );
        assert_eq!(actions(store).await.len(), before, "nothing written");
        // Adding a group while keeping Administrators is fine.
        let both = store
            .set_user_groups(&boss.id, &[viewers.id.clone(), admins.id.clone()], 5, "t")
            .await
            .unwrap();
        assert_eq!(both.groups.len(), 2);
    }
);

store_test!(
    the_last_administrator_cannot_be_disabled_nor_their_group_stripped,
    |db| async move {
        let store = &*db.store;
        setup(store).await;
        let admins = group_named(store, "a", ADMINISTRATORS_GROUP).await;
        let boss = active_user(store, "a", "boss@example.com", &admins.id).await;
        let before = actions(store).await.len();

        let disabled = store.set_user_disabled(&boss.id, true, 5, "t").await;
        assert!(
            matches!(disabled, Err(StoreError::LastAdministrator { ref account_id }) if account_id == "a"),
            "{disabled:?}"
        );
        assert_eq!(
            store.user(&boss.id).await.unwrap().unwrap().status,
            UserStatus::Active
        );
        let stripped = PermissionSet::from_iter([Permission::RecordersView]);
        let strip = store
            .set_group_permissions(&admins.id, &stripped, 5, "t")
            .await;
        assert!(
            matches!(strip, Err(StoreError::LastAdministrator { .. })),
            "{strip:?}"
        );
        assert_eq!(
            store.group(&admins.id).await.unwrap().unwrap().permissions,
            PermissionSet::all()
        );
        assert_eq!(actions(store).await.len(), before, "nothing written");

        // With a second administrator the first can be disabled, and enabled again.
        let deputy = active_user(store, "a", "deputy@example.com", &admins.id).await;
        assert!(store
            .set_user_disabled(&boss.id, true, 6, "t")
            .await
            .unwrap());
        assert!(
            !store
                .set_user_disabled(&boss.id, true, 7, "t")
                .await
                .unwrap(),
            "already"
        );
        assert_eq!(
            store.user(&boss.id).await.unwrap().unwrap().status,
            UserStatus::Disabled
        );
        assert_eq!(last_audit(store).await.action, "user.disabled");
        let last = store.set_user_disabled(&deputy.id, true, 8, "t").await;
        assert!(
            matches!(last, Err(StoreError::LastAdministrator { .. })),
            "{last:?}"
        );
        assert!(store
            .set_user_disabled(&boss.id, false, 9, "t")
            .await
            .unwrap());
        assert_eq!(last_audit(store).await.action, "user.enabled");
        assert!(store
            .set_user_disabled(&deputy.id, true, 10, "t")
            .await
            .unwrap());

        // An invited user is left alone either way.
        let (invited, _) = invited_user(store, "a", "new@example.com", &admins.id, 100).await;
        assert!(!store
            .set_user_disabled(&invited.id, true, 11, "t")
            .await
            .unwrap());
        assert!(!store
            .set_user_disabled(&invited.id, false, 11, "t")
            .await
            .unwrap());
        assert!(matches!(
            store.set_user_disabled("nobody", true, 11, "t").await,
            Err(StoreError::NotFound { .. })
        ));

        // Permissions of a group that holds no last administrator are replaced freely.
        let viewers = new_group(store, "a", "Viewers", &[Permission::RecordersView]).await;
        let more = PermissionSet::from_iter([Permission::RecordersView, Permission::AuditView]);
        store
            .set_group_permissions(&viewers.id, &more, 12, "t")
            .await
            .unwrap();
        assert_eq!(
            store.group(&viewers.id).await.unwrap().unwrap().permissions,
            more
        );
        assert_eq!(last_audit(store).await.action, "group.permissions_set");
        assert!(matches!(
            store.set_group_permissions("nope", &more, 12, "t").await,
            Err(StoreError::NotFound { .. })
        ));
    }
);

store_test!(
    only_an_empty_group_other_than_administrators_is_deleted,
    |db| async move {
        let store = &*db.store;
        setup(store).await;
        let admins = group_named(store, "a", ADMINISTRATORS_GROUP).await;
        let viewers = new_group(store, "a", "Viewers", &[Permission::RecordersView]).await;
        let user = active_user(store, "a", "v@example.com", &viewers.id).await;
        active_user(store, "a", "boss@example.com", &admins.id).await;

        let err = store.delete_group(&admins.id, 5, "t").await.unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{err}");
        let err = store.delete_group(&viewers.id, 5, "t").await.unwrap_err();
        assert!(
            matches!(&err, StoreError::Conflict(m) if m.contains("1 member")),
            "{err}"
        );
        store
            .set_user_groups(&user.id, std::slice::from_ref(&admins.id), 5, "t")
            .await
            .unwrap();
        store.delete_group(&viewers.id, 6, "t").await.unwrap();
        assert!(store.group(&viewers.id).await.unwrap().is_none());
        assert_eq!(store.groups("a").await.unwrap().len(), 1);
        let entry = last_audit(store).await;
        assert_eq!(entry.action, "group.deleted");
        assert_eq!(entry.account_id.as_deref(), Some("a"));
        assert!(entry.detail.contains("recorders.view"));
        assert!(matches!(
            store.delete_group(&viewers.id, 7, "t").await,
            Err(StoreError::NotFound { .. })
        ));
    }
);

store_test!(
    a_group_is_found_by_id_with_its_permissions_and_members,
    |db| async move {
        let store = &*db.store;
        setup(store).await;
        let admins = group_named(store, "a", ADMINISTRATORS_GROUP).await;
        active_user(store, "a", "boss@example.com", &admins.id).await;
        let found = store.group(&admins.id).await.unwrap().unwrap();
        assert_eq!(found.account_id, "a");
        assert_eq!(found.permissions, PermissionSet::all());
        assert_eq!(found.members, 1);
        assert!(store.group("nope").await.unwrap().is_none());
    }
);
