//! Any standard client can enroll: a key and CSR from `openssl req`, posted with curl; the
//! certificate verifies with `openssl verify` against the returned chain; curl heartbeats
//! with it. Nothing of ours runs on the client side.

use std::process::Command;

use contera_e2e::*;
use serde_json::Value;

#[test]
fn openssl_and_curl_enroll_verify_and_heartbeat() {
    let server = Server::start();
    let (account, code) = server.create_account("Store 12", "customer", None);
    let dir = tempfile::tempdir().unwrap();
    let (key, csr) = openssl_key_and_csr(dir.path(), "nvr");

    let (status, body) = curl_post(
        &server,
        "/api/v1/enroll",
        &enroll_body(&code, &csr, "CURL-1"),
        None,
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let enrolled: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(enrolled["account"]["id"], account.as_str());
    assert_eq!(enrolled["account"]["name"], "Store 12");
    assert_eq!(enrolled["heartbeat_interval_secs"], 1);
    let cert = dir.path().join("nvr.pem");
    let chain = dir.path().join("chain.pem");
    std::fs::write(&cert, enrolled["certificate_pem"].as_str().unwrap()).unwrap();
    std::fs::write(&chain, enrolled["ca_chain_pem"].as_str().unwrap()).unwrap();

    let verify = Command::new("openssl")
        .args(["verify", "-purpose", "sslclient", "-CAfile"])
        .arg(&chain)
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "openssl verify: {}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    // Not usable as a server certificate, whatever the CSR asked for.
    let as_server = Command::new("openssl")
        .args(["verify", "-purpose", "sslserver", "-CAfile"])
        .arg(&chain)
        .arg(&cert)
        .output()
        .unwrap();
    assert!(!as_server.status.success());

    // The certificate carries the CSR's key: the two public keys are the same.
    let pubkey = |args: &[&str]| {
        let out = Command::new("openssl").args(args).output().unwrap();
        assert!(out.status.success());
        out.stdout
    };
    assert_eq!(
        pubkey(&["x509", "-noout", "-pubkey", "-in", cert.to_str().unwrap()]),
        pubkey(&["pkey", "-pubout", "-in", key.to_str().unwrap()])
    );

    let (status, body) = curl_post(
        &server,
        "/api/v1/heartbeat",
        br#"{"status":{"uptime_secs":5,"nvr":{"channels":16}}}"#,
        Some((&cert, &key)),
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let beat: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(beat["account"]["name"], "Store 12");
    assert!(beat["instructions"].as_array().unwrap().is_empty());
    let id = enrolled["recorder_id"].as_str().unwrap();
    wait_for(
        std::time::Duration::from_secs(10),
        "curl recorder online",
        || (server.recorder(id)["online"] == true).then_some(()),
    );

    // Renewal with a fresh CSR over mutual TLS keeps the recorder id.
    let (_, new_csr) = openssl_key_and_csr(dir.path(), "nvr2");
    let renew = serde_json::json!({ "csr_pem": new_csr }).to_string();
    let (status, body) = curl_post(
        &server,
        "/api/v1/renew",
        renew.as_bytes(),
        Some((&cert, &key)),
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let renewed: Value = serde_json::from_str(&body).unwrap();
    let new_cert = dir.path().join("nvr2.pem");
    std::fs::write(&new_cert, renewed["certificate_pem"].as_str().unwrap()).unwrap();
    let (status, body) = curl_post(
        &server,
        "/api/v1/heartbeat",
        br#"{"status":{}}"#,
        Some((&new_cert, &dir.path().join("nvr2.key"))),
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(server.recorders(None).len(), 1);
    // The old key no longer speaks for the recorder.
    let (status, _) = curl_post(
        &server,
        "/api/v1/heartbeat",
        br#"{"status":{}}"#,
        Some((&cert, &key)),
    )
    .unwrap();
    assert_eq!(status, 403);
}
