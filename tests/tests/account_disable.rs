//! Disabling an account, with the real binaries: disabling a partner reaches the agent of
//! a recorder in its customer at the next heartbeats, refuses enrollment and the claim
//! preview with `account_disabled`, and enabling it restores all of it within the bound
//! in which a server sees changes made by another process.

use std::time::Duration;

use contera_e2e::*;
use serde_json::Value;

/// A few heartbeats at the 1 s interval of `Server::start`, with room for a slow machine.
const WAIT: Duration = Duration::from_secs(15);
/// The documented bound for a change made by another process (1 s refresh), with room
/// for one slow database read.
const FACTS_BOUND: Duration = Duration::from_secs(3);

fn error_code(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    v["error"]["code"].as_str().unwrap_or_default().to_string()
}

#[test]
fn disabling_a_partner_reaches_its_customers_recorders_and_enabling_restores_them() {
    let server = Server::start();
    let (partner, _) = server.create_account("Acme Integrators", "partner", None);
    let (customer, code) = server.create_account("Store 12", "customer", Some(&partner));
    let agent = Agent::start(&server, "NVR-DIS-1");
    let recorder_id = agent.enroll(&code).unwrap()["recorder_id"]
        .as_str()
        .unwrap()
        .to_string();
    wait_for(WAIT, "a first heartbeat", || {
        agent.status()["last_heartbeat"].as_str().map(|_| ())
    });
    assert_eq!(agent.status()["account_disabled"], false);

    let out = server.admin(&["accounts", "disable", &partner]);
    assert!(out.status.success());

    let status = wait_for(WAIT, "the agent to report the account disabled", || {
        let status = agent.status();
        (status["account_disabled"] == true).then_some(status)
    });
    assert_eq!(status["enrolled"], true, "{status}");
    assert_eq!(status["last_error"], Value::Null, "{status}");
    wait_for(WAIT, "STATUS= to say so", || {
        agent
            .last_status()
            .filter(|s| s.contains("account disabled by its administrator"))
    });
    // Still alive to the server: last seen keeps moving, and the list says why nothing
    // else happens.
    let seen = server.recorder(&recorder_id)["last_seen"].clone();
    wait_for(WAIT, "last seen to move on while disabled", || {
        let r = server.recorder(&recorder_id);
        (r["last_seen"] != seen && r["online"] == true).then_some(())
    });
    let listed = server.recorders(Some(&customer));
    assert_eq!(listed[0]["account_disabled"], true, "{listed:?}");

    // A new enrollment into the customer, and its preview, are refused with words the
    // installer can act on.
    let other = Agent::start(&server, "NVR-DIS-2");
    let (exit, words) = other.enroll(&code).unwrap_err();
    assert_ne!(exit, 0);
    assert!(
        words.contains("this account is disabled by its administrator: ask them to enable it"),
        "{words}"
    );
    let preview = serde_json::json!({ "registration_code": code }).to_string();
    let (status, body) =
        curl_post(&server, "/api/v1/enroll/preview", preview.as_bytes(), None).unwrap();
    assert_eq!(
        (status, error_code(&body).as_str()),
        (403, "account_disabled")
    );
    let scratch = tempfile::tempdir().unwrap();
    let (_, csr) = openssl_key_and_csr(scratch.path(), "k");
    let (status, body) = curl_post(
        &server,
        "/api/v1/enroll",
        &enroll_body(&code, &csr, "NVR-DIS-3"),
        None,
    )
    .unwrap();
    assert_eq!(
        (status, error_code(&body).as_str()),
        (403, "account_disabled")
    );
    assert_eq!(server.recorders(None).len(), 1, "nothing was enrolled");

    let out = server.admin(&["accounts", "enable", &partner]);
    assert!(out.status.success());
    wait_for(WAIT, "the agent to see the account enabled", || {
        (agent.status()["account_disabled"] == false).then_some(())
    });
    wait_for(WAIT, "STATUS= to drop it", || {
        agent
            .last_status()
            .filter(|s| !s.contains("disabled") && s.contains("last heartbeat"))
    });
    let enrolled = other.enroll(&code).unwrap();
    assert_eq!(enrolled["account"]["id"], customer.as_str(), "{enrolled}");
    let (status, body) =
        curl_post(&server, "/api/v1/enroll/preview", preview.as_bytes(), None).unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(server
        .recorders(Some(&customer))
        .iter()
        .all(|r| r["account_disabled"] == false));
    let audit = server.audit_actions();
    assert!(audit.contains(&"account.disabled".to_string()), "{audit:?}");
    assert!(audit.contains(&"account.enabled".to_string()), "{audit:?}");
}

/// The wire form, from a client that is not our agent: a heartbeat in a disabled account
/// is answered 200 with `{"type":"account_disabled"}` and no renewal request; a renewal is
/// refused 403 `account_disabled`; both are back to normal once it is enabled.
#[test]
fn a_disabled_accounts_recorder_is_answered_but_cannot_renew_until_enabled() {
    let server = Server::start();
    let (account, code) = server.create_account("Store", "customer", None);
    let dir = tempfile::tempdir().unwrap();
    let nvr = enroll_with_curl(&server, &code, "NVR-CURL", dir.path());
    let (cert, key) = (nvr.cert.clone(), nvr.key.clone());
    // Renewals send the same key's CSR again (openssl wrote it beside the key).
    let csr = std::fs::read_to_string(dir.path().join("NVR-CURL.csr")).unwrap();
    let heartbeat = |cert: &std::path::Path| {
        let (status, body) = curl_post(
            &server,
            "/api/v1/heartbeat",
            br#"{"status":{}}"#,
            Some((cert, &key)),
        )
        .unwrap();
        assert_eq!(status, 200, "{body}");
        serde_json::from_str::<Value>(&body).unwrap()["instructions"].clone()
    };
    // Renewed with the same key, so the certificate on disk keeps working.
    let renew_body = serde_json::json!({ "csr_pem": csr }).to_string();
    let renew = || {
        curl_post(
            &server,
            "/api/v1/renew",
            renew_body.as_bytes(),
            Some((&cert, &key)),
        )
        .unwrap()
    };

    assert_eq!(heartbeat(&cert), serde_json::json!([]));
    // The CLI is another process: the server answers heartbeats from memory and reads
    // what others changed every `facts_refresh_millis` (1 s by default).
    assert!(server
        .admin(&["accounts", "disable", &account])
        .status
        .success());
    wait_for(FACTS_BOUND, "the disable to reach heartbeats", || {
        (heartbeat(&cert) == serde_json::json!([{ "type": "account_disabled" }])).then_some(())
    });
    let (status, body) = renew();
    assert_eq!(
        (status, error_code(&body).as_str()),
        (403, "account_disabled")
    );

    assert!(server
        .admin(&["accounts", "enable", &account])
        .status
        .success());
    wait_for(FACTS_BOUND, "the enable to reach heartbeats", || {
        (heartbeat(&cert) == serde_json::json!([])).then_some(())
    });
    let (status, body) = renew();
    assert_eq!(status, 200, "{body}");
}
