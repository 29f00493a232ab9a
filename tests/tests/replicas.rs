//! Several `contera-provisioning serve` processes on one PostgreSQL database, sharing the
//! TLS and device-CA material an operator copied to each, and nothing else: a recorder
//! enrolls through one, heartbeats through another, is revoked through a third, and every
//! one of them sees the right state within the documented bound (facts_refresh_millis,
//! 1 s, plus one query).

use std::time::Duration;

use contera_e2e::postgres::test_database;
use contera_e2e::*;

/// The documented bound for a change made through another replica, with room for a slow
/// machine.
const BOUND: Duration = Duration::from_secs(4);

fn heartbeat(server: &Server, nvr: &CurlRecorder) -> u16 {
    curl_post(
        server,
        "/api/v1/heartbeat",
        br#"{"status":{"uptime_secs":1}}"#,
        Some((&nvr.cert, &nvr.key)),
    )
    .unwrap()
    .0
}

fn config(url: &str) -> String {
    format!("database_url = \"{url}\"\n")
}

#[test]
fn three_replicas_on_one_database_agree_on_enrollment_presence_and_revocation() {
    let Some(db) = test_database("three_replicas_on_one_database_agree") else {
        return;
    };
    let a = Server::start_configured(1, &config(&db.url), &[]);
    let b = Server::start_replica_of(&a, &config(&db.url));
    let c = Server::start_replica_of(&a, &config(&db.url));
    assert_eq!(
        std::fs::read(a.ca_file()).unwrap(),
        std::fs::read(c.ca_file()).unwrap()
    );

    let (account, code) = a.create_account("Store 12", "customer", None);
    let dir = tempfile::tempdir().unwrap();
    // Enrolled through A, heartbeating through B; C lists it online.
    let nvr = enroll_with_curl(&a, &code, "NVR-R1", dir.path());
    assert_eq!(heartbeat(&b, &nvr), 200);
    wait_for(BOUND, "C to list the recorder online", || {
        let listed = c.recorders(Some(&account));
        (listed.len() == 1 && listed[0]["online"] == true).then_some(())
    });
    // Revoked through C (its admin CLI, with C's configuration): B and A refuse it.
    let out = c.admin(&["recorders", "revoke", &nvr.recorder_id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (name, replica) in [("B", &b), ("A", &a)] {
        wait_for(
            BOUND,
            &format!("{name} to refuse the revoked recorder"),
            || (heartbeat(replica, &nvr) == 410).then_some(()),
        );
    }
    // And it stays refused: no replica answers it from a stale memory afterwards.
    for replica in [&a, &b, &c] {
        assert_eq!(heartbeat(replica, &nvr), 410);
    }
    assert_eq!(a.recorder(&nvr.recorder_id)["revoked"], true);
}

#[test]
fn one_key_enrolling_through_three_replicas_at_once_makes_one_recorder() {
    let Some(db) = test_database("one_key_enrolling_through_three_replicas") else {
        return;
    };
    let a = Server::start_configured(1, &config(&db.url), &[]);
    let b = Server::start_replica_of(&a, &config(&db.url));
    let c = Server::start_replica_of(&a, &config(&db.url));
    let (account, code) = a.create_account("Store 7", "customer", None);
    let dir = tempfile::tempdir().unwrap();
    for round in 0..3 {
        let serial = format!("NVR-RACE-{round}");
        let (_, csr) = openssl_key_and_csr(dir.path(), &serial);
        let body = enroll_body(&code, &csr, &serial);
        let answers: Vec<(u16, String)> = std::thread::scope(|scope| {
            let handles: Vec<_> = [&a, &b, &c]
                .into_iter()
                .map(|replica| {
                    let body = body.clone();
                    scope.spawn(move || curl_post(replica, "/api/v1/enroll", &body, None).unwrap())
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let ids: std::collections::BTreeSet<String> = answers
            .iter()
            .map(|(status, body)| {
                assert_eq!(*status, 200, "{body}");
                let v: serde_json::Value = serde_json::from_str(body).unwrap();
                v["recorder_id"].as_str().unwrap().to_string()
            })
            .collect();
        assert_eq!(ids.len(), 1, "one key, one recorder: {ids:?}");
    }
    assert_eq!(b.recorders(Some(&account)).len(), 3);
    let rows = db.query("SELECT count(*) FROM recorders");
    assert_eq!(rows, "3");
}
