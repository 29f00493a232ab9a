//! Enrollment by key: one transaction with its certificate and audit rows, races named,
//! replacements flagged, code uses counted; renewal; leftovers of interrupted enrollments.

use crate::fixtures::*;
use contera_provisioning::store::*;

store_test!(
    enrollment_stores_the_recorder_its_certificate_and_both_audit_rows_together,
    |db| async move {
        let store = &*db.store;
        account(store, "a").await;
        let outcome = store.enroll(&record("r1", "a", "k1", "S1")).await.unwrap();
        assert_eq!(outcome.kind, EnrollKind::New { replaces: None });
        assert_eq!(outcome.recorder.id, "r1");
        assert_eq!(
            outcome.recorder.cert_serial.as_deref(),
            Some("serial-of-r1-k1")
        );
        assert_eq!(outcome.recorder.cert_not_after, Some(1000));
        assert_eq!(
            store.recorder("r1").await.unwrap(),
            Some(outcome.recorder.clone())
        );
        assert_eq!(
            actions(store).await,
            ["account.created", "recorder.enrolled", "certificate.issued"]
        );

        // Again with the same key: same row, the new certificate recorded with it.
        let mut again = record("r1", "a", "k1", "S1");
        again.cert_serial = "second".into();
        again.cert_not_after = 2000;
        let outcome = store.enroll(&again).await.unwrap();
        assert_eq!(outcome.kind, EnrollKind::Again);
        assert_eq!(outcome.recorder.cert_serial.as_deref(), Some("second"));
        assert_eq!(outcome.recorder.cert_not_after, Some(2000));
        assert_eq!(
            actions(store).await[3..],
            ["recorder.re_enrolled", "certificate.issued"]
        );
        assert_eq!(store.recorders(None).await.unwrap().len(), 1);
    }
);

store_test!(
    a_key_enrolled_under_another_id_writes_nothing_and_names_that_id,
    |db| async move {
        let store = &*db.store;
        account(store, "a").await;
        account(store, "b").await;
        store
            .enroll(&record("winner", "a", "k1", "S1"))
            .await
            .unwrap();
        let before = store.recorders(None).await.unwrap();
        let audit_before = actions(store).await;

        // The loser of a race signed for its own fresh id, here even with another
        // account's code: nothing may change, and the store names the id to sign for.
        let err = store
            .enroll(&record("loser", "b", "k1", "S1"))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, StoreError::EnrollmentRaced { recorder_id: Some(id) } if id == "winner"),
            "{err:?}"
        );
        assert_eq!(store.recorders(None).await.unwrap(), before);
        assert_eq!(actions(store).await, audit_before);
        assert_eq!(
            store.code_info("Cb").await.unwrap().unwrap().uses,
            0,
            "no use counted"
        );

        // Signed again for the winner's id, it moves the recorder, audited.
        let outcome = store
            .enroll(&record("winner", "b", "k1", "S1"))
            .await
            .unwrap();
        assert_eq!(
            outcome.kind,
            EnrollKind::Moved {
                from_account: "a".into()
            }
        );
        assert_eq!(outcome.recorder.account_id, "b");
        assert_eq!(store.recorders(None).await.unwrap().len(), 1);
        assert_eq!(
            actions(store).await[audit_before.len()..],
            ["recorder.moved", "certificate.issued"]
        );
        assert_eq!(
            history(store, "winner").await[1],
            (
                "recorder.moved".to_owned(),
                serde_json::json!({ "from_account": "a", "to_account": "b" })
            )
        );
    }
);

store_test!(
    a_new_key_signed_for_an_id_that_now_holds_another_key_is_told_to_take_a_new_id,
    |db| async move {
        let store = &*db.store;
        account(store, "a").await;
        store.enroll(&record("r1", "a", "k1", "S1")).await.unwrap();
        let err = store
            .enroll(&record("r1", "a", "k2", "S1"))
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::EnrollmentRaced { recorder_id: None }),
            "{err:?}"
        );
        assert_eq!(store.recorders(None).await.unwrap().len(), 1);
        assert!(store.recorder_by_key("k2").await.unwrap().is_none());
    }
);

store_test!(
    a_revoked_key_is_refused_and_nothing_is_written,
    |db| async move {
        let store = &*db.store;
        account(store, "a").await;
        store.enroll(&record("r1", "a", "k1", "S1")).await.unwrap();
        assert!(store.revoke_recorder("r1", 20, "test").await.unwrap());
        assert!(
            !store.revoke_recorder("r1", 21, "test").await.unwrap(),
            "once only"
        );
        assert!(matches!(
            store.revoke_recorder("nope", 21, "test").await,
            Err(StoreError::NotFound { .. })
        ));
        let before = store.recorders(None).await.unwrap();
        let audit_before = actions(store).await;
        let err = store
            .enroll(&record("r1", "a", "k1", "S1"))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Revoked), "{err:?}");
        assert_eq!(store.recorders(None).await.unwrap(), before);
        assert_eq!(actions(store).await, audit_before);
        // The revoked recorder is still found by its key.
        let revoked = store.recorder_by_key("k1").await.unwrap().unwrap();
        assert_eq!(revoked.revoked_at, Some(20));
    }
);

store_test!(
    a_new_key_with_an_enrolled_serial_in_the_same_account_is_flagged_only,
    |db| async move {
        let store = &*db.store;
        account(store, "a").await;
        store.enroll(&record("old", "a", "k1", "S1")).await.unwrap();
        let old_before = store.recorder("old").await.unwrap();
        let outcome = store.enroll(&record("new", "a", "k2", "S1")).await.unwrap();
        assert_eq!(
            outcome.kind,
            EnrollKind::New {
                replaces: Some("old".into())
            }
        );
        assert_eq!(outcome.recorder.replaces.as_deref(), Some("old"));
        assert_eq!(store.recorder("old").await.unwrap(), old_before);
        assert_eq!(
            history(store, "new").await[1].1,
            serde_json::json!({ "serial": "S1", "model": "NV-16", "replaces": "old" })
        );
    }
);

store_test!(
    a_serial_enrolled_in_another_account_of_the_tree_is_flagged_and_the_same_account_wins,
    |db| async move {
        let store = &*db.store;
        account(store, "p").await;
        child(store, "a", "p", AccountKind::Customer).await;
        child(store, "b", "p", AccountKind::Customer).await;
        store
            .enroll(&record("in-b", "b", "k1", "S1"))
            .await
            .unwrap();
        let in_b = store.recorder("in-b").await.unwrap();

        // Only another account holds the serial: flagged, and that row is left alone.
        let outcome = store
            .enroll(&record("new-a", "a", "k2", "S1"))
            .await
            .unwrap();
        assert_eq!(
            outcome.kind,
            EnrollKind::New {
                replaces: Some("in-b".into())
            }
        );
        assert_eq!(store.recorder("in-b").await.unwrap(), in_b);

        // Both accounts hold it (the one in b is newer): the same account's is named.
        let mut newer_b = record("newer-b", "b", "k3", "S1");
        newer_b.now = 20;
        store.enroll(&newer_b).await.unwrap();
        let mut third = record("third-a", "a", "k4", "S1");
        third.now = 30;
        let outcome = store.enroll(&third).await.unwrap();
        assert_eq!(outcome.recorder.replaces.as_deref(), Some("new-a"));

        // A revoked recorder is never named.
        store.revoke_recorder("new-a", 40, "test").await.unwrap();
        store.revoke_recorder("third-a", 40, "test").await.unwrap();
        let mut fourth = record("fourth-a", "a", "k5", "S1");
        fourth.now = 50;
        let outcome = store.enroll(&fourth).await.unwrap();
        assert_eq!(outcome.recorder.replaces.as_deref(), Some("newer-b"));

        // Another partner's tree is never searched: that would tell its tenant the serial
        // is enrolled elsewhere, and the recorder's id.
        account(store, "other").await;
        let mut elsewhere = record("elsewhere", "other", "k6", "S1");
        elsewhere.now = 60;
        let outcome = store.enroll(&elsewhere).await.unwrap();
        assert_eq!(outcome.kind, EnrollKind::New { replaces: None });
    }
);

store_test!(
    every_enrollment_is_a_use_and_a_used_up_code_writes_nothing,
    |db| async move {
        let store = &*db.store;
        account(store, "a").await;
        let limit = contera_provisioning::accounts::CodeUpdate {
            max_uses: Some(Some(2)),
            ..Default::default()
        };
        store.update_code("Ca", &limit, 5, "test").await.unwrap();
        store.enroll(&record("r1", "a", "k1", "S1")).await.unwrap();
        // Enrolling the same key again counts too.
        store.enroll(&record("r1", "a", "k1", "S1")).await.unwrap();
        let info = store.code_info("Ca").await.unwrap().unwrap();
        assert_eq!(info.uses, 2);
        assert_eq!(info.last_used_at, Some(10));
        assert_eq!(info.last_used_recorder.as_deref(), Some("r1"));
        assert_eq!(store.code("Ca").await.unwrap().unwrap().uses, 2);

        let before = store.recorders(None).await.unwrap();
        let audit_before = actions(store).await;
        let err = store
            .enroll(&record("r2", "a", "k2", "S2"))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::CodeRefused), "{err:?}");
        assert_eq!(store.recorders(None).await.unwrap(), before);
        assert_eq!(actions(store).await, audit_before);
        assert_eq!(store.code_info("Ca").await.unwrap().unwrap().uses, 2);

        // Disabled and expired codes are refused the same way at commit.
        account(store, "b").await;
        assert!(store.disable_code("Cb", 11, "test").await.unwrap());
        assert!(matches!(
            store.enroll(&record("r3", "b", "k3", "S3")).await,
            Err(StoreError::CodeRefused)
        ));
        account(store, "c").await;
        let expiry = contera_provisioning::accounts::CodeUpdate {
            expires_at: Some(Some(10)),
            ..Default::default()
        };
        store.update_code("Cc", &expiry, 5, "test").await.unwrap();
        assert!(matches!(
            store.enroll(&record("r4", "c", "k4", "S4")).await,
            Err(StoreError::CodeRefused)
        ));
        let mut earlier = record("r4", "c", "k4", "S4");
        earlier.now = 9;
        store
            .enroll(&earlier)
            .await
            .expect("still valid one second before");
        assert_eq!(store.recorders(None).await.unwrap().len(), 2);
    }
);

store_test!(
    a_renewal_records_the_new_key_and_certificate_and_is_refused_when_revoked,
    |db| async move {
        let store = &*db.store;
        account(store, "a").await;
        store.enroll(&record("r1", "a", "k1", "S1")).await.unwrap();
        store.enroll(&record("r2", "a", "k2", "S2")).await.unwrap();
        let renewal = |key, serial| CertificateRecord {
            recorder_id: "r1",
            key_fingerprint: key,
            cert_serial: serial,
            not_after: 5000,
            actor: "recorder:r1@192.0.2.9",
            action: "certificate.renewed",
            now: 40,
        };
        store
            .set_certificate(&renewal("k1-new", "renewed"))
            .await
            .unwrap();
        let r1 = store.recorder_by_key("k1-new").await.unwrap().unwrap();
        assert_eq!(r1.id, "r1");
        assert_eq!(
            (r1.cert_serial.as_deref(), r1.cert_not_after),
            (Some("renewed"), Some(5000))
        );
        assert!(
            store.recorder_by_key("k1").await.unwrap().is_none(),
            "the old key is gone"
        );
        let entry = last_audit(store).await;
        assert_eq!(
            (
                entry.action.as_str(),
                entry.actor.as_str(),
                entry.source.as_deref()
            ),
            ("certificate.renewed", "recorder:r1", Some("192.0.2.9"))
        );
        assert_eq!(entry.recorder_id.as_deref(), Some("r1"));

        // Another recorder's key cannot be taken.
        let taken = store.set_certificate(&renewal("k2", "stolen")).await;
        assert!(matches!(taken, Err(StoreError::Conflict(_))), "{taken:?}");
        assert_eq!(store.recorder_by_key("k2").await.unwrap().unwrap().id, "r2");

        store.revoke_recorder("r1", 50, "test").await.unwrap();
        let audit_before = actions(store).await;
        let revoked = store.set_certificate(&renewal("k1-newer", "late")).await;
        assert!(matches!(revoked, Err(StoreError::Revoked)), "{revoked:?}");
        assert_eq!(actions(store).await, audit_before);
        assert_eq!(
            store
                .recorder("r1")
                .await
                .unwrap()
                .unwrap()
                .cert_serial
                .as_deref(),
            Some("renewed")
        );
    }
);

store_test!(
    recorders_left_without_a_certificate_are_removed_in_one_audited_step,
    |db| async move {
        let store = &*db.store;
        account(store, "a").await;
        // Rows as the old two-transaction enrollment left them when the server died between
        // its transactions: no certificate. No store method makes one any more.
        for (id, key) in [("orphan", "k-orphan"), ("revoked-orphan", "k-revoked")] {
            db.execute_sql(&format!(
                "INSERT INTO recorders (id, account_id, key_fingerprint, serial, model, \
                 enrolled_at, updated_at) VALUES ('{id}', 'a', '{key}', 'S1', 'NV-16', 5, 5)"
            ))
            .await;
        }
        store
            .revoke_recorder("revoked-orphan", 6, "test")
            .await
            .unwrap();
        // A complete recorder enrolled later with the same serial points at the orphan.
        let outcome = store
            .enroll(&record("complete", "a", "k1", "S1"))
            .await
            .unwrap();
        assert_eq!(outcome.recorder.replaces.as_deref(), Some("orphan"));

        assert_eq!(store.remove_incomplete_enrollments(100).await.unwrap(), 1);
        let left: Vec<String> = store
            .recorders(None)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(left, ["revoked-orphan", "complete"]);
        let complete = store.recorder("complete").await.unwrap().unwrap();
        assert_eq!(complete.replaces, None, "no pointer to a removed row");
        let entry = last_audit(store).await;
        assert_eq!(entry.action, INCOMPLETE_REMOVED_ACTION);
        assert_eq!(entry.actor, "server");
        assert_eq!(entry.at, 100);
        assert_eq!(
            detail(&entry),
            serde_json::json!({ "recorder_ids": ["orphan"] })
        );
        // The key is free again: the client that kept it can enroll.
        assert!(store.recorder_by_key("k-orphan").await.unwrap().is_none());

        // Nothing left to remove: no change, no audit row; and it survives a reopen.
        let audit_len = actions(store).await.len();
        assert_eq!(store.remove_incomplete_enrollments(200).await.unwrap(), 0);
        assert_eq!(actions(store).await.len(), audit_len);
        let reopened = db.open_again().await;
        assert_eq!(reopened.recorders(None).await.unwrap().len(), 2);
    }
);
