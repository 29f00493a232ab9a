//! Sign-in state: browser sessions, API tokens, password resets and changes. Only hashes
//! of tokens are stored, and ending a user's password ends everything they were signed
//! in with.

use crate::fixtures::*;
use contera_provisioning::permissions::{Permission, PermissionSet};
use contera_provisioning::store::*;

/// Account `a` with an active administrator (`boss`) and an active viewer (`jo`).
async fn setup(store: &dyn Store) -> (User, User) {
    account(store, "a").await;
    let admins = group_named(store, "a", ADMINISTRATORS_GROUP).await;
    let viewers = new_group(store, "a", "Viewers", &[Permission::RecordersView]).await;
    let boss = active_user(store, "a", "boss@example.com", &admins.id).await;
    let jo = active_user(store, "a", "jo@example.com", &viewers.id).await;
    (boss, jo)
}

fn session(token: &str, user: &User, created_at: i64) -> Session {
    Session {
        token_hash: token.as_bytes().to_vec(),
        user_id: user.id.clone(),
        created_at,
        last_seen_at: created_at,
        expires_at: created_at + 1000,
        source: Some("192.0.2.7".into()),
    }
}

fn token(id: &str, user: &User, created_at: i64) -> ApiToken {
    ApiToken {
        id: id.into(),
        token_hash: format!("hash-{id}").into_bytes(),
        user_id: user.id.clone(),
        name: format!("script {id}"),
        permissions: PermissionSet::from_iter([Permission::RecordersView, Permission::AuditView]),
        created_at,
        expires_at: Some(created_at + 1000),
        last_used_at: None,
        revoked_at: None,
    }
}

fn reset(token: &str, user: &User, created_at: i64) -> PasswordReset {
    PasswordReset {
        token_hash: token.as_bytes().to_vec(),
        user_id: user.id.clone(),
        created_at,
        expires_at: created_at + 100,
        used_at: None,
        replaced_at: None,
    }
}

store_test!(
    a_login_finds_the_user_by_email_in_any_case_with_the_password_hash,
    |db| async move {
        let store = &*db.store;
        let (_, jo) = setup(store).await;
        let (user, hash) = store.login_record("JO@Example.com").await.unwrap().unwrap();
        assert_eq!(user, jo);
        assert_eq!(hash.as_deref(), Some("hash-of-jo@example.com"));
        assert!(store
            .login_record("nobody@example.com")
            .await
            .unwrap()
            .is_none());
    }
);

store_test!(
    a_session_is_found_by_its_hash_touched_forward_only_and_ended_once,
    |db| async move {
        let store = &*db.store;
        let (_, jo) = setup(store).await;
        let s = session("cookie-1", &jo, 100);
        store
            .create_session(
                &s,
                &actor_from(&format!("user:{}", jo.id), "192.0.2.7".parse().unwrap()),
            )
            .await
            .unwrap();
        assert_eq!(store.session(b"cookie-1").await.unwrap(), Some(s.clone()));
        assert!(store.session(b"cookie-2").await.unwrap().is_none());
        let entry = last_audit(store).await;
        assert_eq!(entry.action, "session.login");
        assert_eq!(entry.actor, format!("user:{}", jo.id));
        assert_eq!(entry.source.as_deref(), Some("192.0.2.7"));
        assert_eq!(entry.account_id.as_deref(), Some("a"));

        store.touch_session(b"cookie-1", 160).await.unwrap();
        assert_eq!(
            store
                .session(b"cookie-1")
                .await
                .unwrap()
                .unwrap()
                .last_seen_at,
            160
        );
        store.touch_session(b"cookie-1", 130).await.unwrap();
        assert_eq!(
            store
                .session(b"cookie-1")
                .await
                .unwrap()
                .unwrap()
                .last_seen_at,
            160,
            "a late write never moves it back"
        );

        assert!(store.end_session(b"cookie-1", 170, "t").await.unwrap());
        assert_eq!(last_audit(store).await.action, "session.logout");
        assert!(store.session(b"cookie-1").await.unwrap().is_none());
        let audited = actions(store).await.len();
        assert!(!store.end_session(b"cookie-1", 180, "t").await.unwrap());
        assert_eq!(actions(store).await.len(), audited, "no second logout row");

        let nobody = Session {
            user_id: "nobody".into(),
            ..session("cookie-3", &jo, 100)
        };
        assert!(matches!(
            store.create_session(&nobody, "t").await,
            Err(StoreError::NotFound { .. })
        ));
    }
);

store_test!(
    api_tokens_are_listed_newest_first_touched_and_revoked_once,
    |db| async move {
        let store = &*db.store;
        let (boss, jo) = setup(store).await;
        store
            .create_api_token(&token("t1", &jo, 100), "t")
            .await
            .unwrap();
        store
            .create_api_token(&token("t2", &jo, 200), "t")
            .await
            .unwrap();
        store
            .create_api_token(&token("t3", &boss, 150), "t")
            .await
            .unwrap();
        let entry = last_audit(store).await;
        assert_eq!(entry.action, "token.created");
        assert!(!entry.detail.contains("hash-t3"), "{}", entry.detail);
        assert_eq!(
            detail(&entry)["permissions"],
            serde_json::json!(["recorders.view", "audit.view"])
        );

        assert_eq!(
            store.api_token_by_hash(b"hash-t1").await.unwrap(),
            Some(token("t1", &jo, 100))
        );
        assert_eq!(
            store.api_token("t2").await.unwrap(),
            Some(token("t2", &jo, 200))
        );
        assert!(
            store.api_token_by_hash(b"t1").await.unwrap().is_none(),
            "by hash only"
        );
        assert!(
            store.api_token("hash-t1").await.unwrap().is_none(),
            "by id only"
        );
        let listed: Vec<String> = store
            .api_tokens(&jo.id)
            .await
            .unwrap()
            .into_iter()
            .map(|t| t.id)
            .collect();
        assert_eq!(listed, ["t2", "t1"]);

        store.touch_api_token("t1", 300).await.unwrap();
        assert_eq!(
            store.api_token("t1").await.unwrap().unwrap().last_used_at,
            Some(300)
        );
        assert!(store.revoke_api_token("t1", 310, "t").await.unwrap());
        assert!(!store.revoke_api_token("t1", 320, "t").await.unwrap());
        assert!(!store.revoke_api_token("nope", 320, "t").await.unwrap());
        assert_eq!(last_audit(store).await.action, "token.revoked");
        let listed = store.api_tokens(&jo.id).await.unwrap();
        assert_eq!(listed.len(), 2, "revoked tokens are listed too");
        assert_eq!(listed[1].revoked_at, Some(310));
        assert_eq!(
            store.api_token("t2").await.unwrap().unwrap().revoked_at,
            None
        );
    }
);

store_test!(
    a_reset_link_works_once_replaces_older_ones_and_signs_the_user_out_everywhere,
    |db| async move {
        let store = &*db.store;
        let (boss, jo) = setup(store).await;
        store
            .create_session(&session("jo-cookie", &jo, 100), "t")
            .await
            .unwrap();
        store
            .create_session(&session("boss-cookie", &boss, 100), "t")
            .await
            .unwrap();
        store
            .create_api_token(&token("jo-token", &jo, 100), "t")
            .await
            .unwrap();
        store
            .create_api_token(&token("boss-token", &boss, 100), "t")
            .await
            .unwrap();

        store
            .create_password_reset(&reset("first", &jo, 100), "t")
            .await
            .unwrap();
        store
            .create_password_reset(&reset("second", &jo, 110), "t")
            .await
            .unwrap();
        let entry = last_audit(store).await;
        assert_eq!(entry.action, "password.reset_requested");
        assert!(!entry.detail.contains("second"), "{}", entry.detail);
        assert_eq!(
            store
                .password_reset(b"first")
                .await
                .unwrap()
                .unwrap()
                .replaced_at,
            Some(110)
        );
        assert_eq!(
            store.password_reset(b"second").await.unwrap(),
            Some(reset("second", &jo, 110))
        );

        let replaced = store.reset_password(b"first", "new-hash", 120, None).await;
        assert!(
            matches!(replaced, Err(StoreError::InvitationRefused)),
            "{replaced:?}"
        );
        let expired = store.reset_password(b"second", "new-hash", 210, None).await;
        assert!(
            matches!(expired, Err(StoreError::InvitationRefused)),
            "{expired:?}"
        );
        assert_eq!(
            store.password_hash(&jo.id).await.unwrap().as_deref(),
            Some("hash-of-jo@example.com"),
            "refusals write nothing"
        );
        assert!(store.session(b"jo-cookie").await.unwrap().is_some());

        let user = store
            .reset_password(b"second", "new-hash", 150, Some("198.51.100.4"))
            .await
            .unwrap();
        assert_eq!(user.id, jo.id);
        assert_eq!(
            store.password_hash(&jo.id).await.unwrap().as_deref(),
            Some("new-hash")
        );
        assert_eq!(
            store
                .password_reset(b"second")
                .await
                .unwrap()
                .unwrap()
                .used_at,
            Some(150)
        );
        assert!(
            store.session(b"jo-cookie").await.unwrap().is_none(),
            "signed out"
        );
        assert_eq!(
            store
                .api_token("jo-token")
                .await
                .unwrap()
                .unwrap()
                .revoked_at,
            Some(150)
        );
        assert!(
            store.session(b"boss-cookie").await.unwrap().is_some(),
            "others stay"
        );
        assert_eq!(
            store
                .api_token("boss-token")
                .await
                .unwrap()
                .unwrap()
                .revoked_at,
            None
        );
        let entry = last_audit(store).await;
        assert_eq!(
            (
                entry.action.as_str(),
                entry.actor.clone(),
                entry.source.as_deref()
            ),
            (
                "password.reset",
                format!("user:{}", jo.id),
                Some("198.51.100.4")
            )
        );
        assert!(!entry.detail.contains("new-hash"), "{}", entry.detail);
        let again = store
            .reset_password(b"second", "other-hash", 160, None)
            .await;
        assert!(
            matches!(again, Err(StoreError::InvitationRefused)),
            "{again:?}"
        );

        // A disabled user's link does nothing.
        store
            .create_password_reset(&reset("third", &jo, 170), "t")
            .await
            .unwrap();
        store
            .set_user_disabled(&jo.id, true, 171, "t")
            .await
            .unwrap();
        let disabled = store.reset_password(b"third", "x", 172, None).await;
        assert!(
            matches!(disabled, Err(StoreError::InvitationRefused)),
            "{disabled:?}"
        );
        assert_eq!(
            store.password_hash(&jo.id).await.unwrap().as_deref(),
            Some("new-hash")
        );
    }
);

store_test!(
    a_password_change_ends_every_session_and_token_of_an_active_user_only,
    |db| async move {
        let store = &*db.store;
        let (boss, jo) = setup(store).await;
        store
            .create_session(&session("jo-cookie", &jo, 100), "t")
            .await
            .unwrap();
        store
            .create_api_token(&token("jo-token", &jo, 100), "t")
            .await
            .unwrap();
        store
            .create_session(&session("boss-cookie", &boss, 100), "t")
            .await
            .unwrap();

        assert!(store
            .change_password(&jo.id, "changed", 120, "user:x")
            .await
            .unwrap());
        assert_eq!(
            store.password_hash(&jo.id).await.unwrap().as_deref(),
            Some("changed")
        );
        assert!(store.session(b"jo-cookie").await.unwrap().is_none());
        assert_eq!(
            store
                .api_token("jo-token")
                .await
                .unwrap()
                .unwrap()
                .revoked_at,
            Some(120)
        );
        assert!(store.session(b"boss-cookie").await.unwrap().is_some());
        let entry = last_audit(store).await;
        assert_eq!(entry.action, "password.changed");
        assert!(!entry.detail.contains("changed\""), "{}", entry.detail);

        // Disabling signs out too, and a disabled user's password cannot be changed.
        store
            .create_session(&session("jo-cookie-2", &jo, 130), "t")
            .await
            .unwrap();
        store
            .set_user_disabled(&jo.id, true, 140, "t")
            .await
            .unwrap();
        assert!(store.session(b"jo-cookie-2").await.unwrap().is_none());
        let audited = actions(store).await.len();
        assert!(!store
            .change_password(&jo.id, "again", 150, "t")
            .await
            .unwrap());
        assert_eq!(
            store.password_hash(&jo.id).await.unwrap().as_deref(),
            Some("changed")
        );
        assert_eq!(actions(store).await.len(), audited);
        assert!(!store
            .change_password("nobody", "x", 150, "t")
            .await
            .unwrap());
    }
);
