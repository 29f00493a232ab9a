//! Bad requests get the API's one error shape with the right status, and leave nothing
//! behind: no recorder row, no audit entry, no file.

use std::process::Command;

use contera_e2e::*;
use serde_json::Value;

fn error_code(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    v["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error.code: {body}"))
        .to_string()
}

fn assert_nothing_stored(server: &Server) {
    assert!(server.recorders(None).is_empty());
    let audit = server.audit_actions();
    assert!(audit.iter().all(|a| a == "account.created"), "{audit:?}");
}

#[test]
fn malformed_and_incomplete_enrollments_get_400_and_store_nothing() {
    let server = Server::start();
    let (_, code) = server.create_account("Store", "customer", None);
    let scratch = tempfile::tempdir().unwrap();
    let (_, csr) = openssl_key_and_csr(scratch.path(), "k");

    let (status, body) = curl_post(&server, "/api/v1/enroll", b"{not json", None).unwrap();
    assert_eq!(
        (status, error_code(&body).as_str()),
        (400, "malformed_request"),
        "{body}"
    );

    let missing = serde_json::json!({ "registration_code": code, "hardware": {"serial": "S", "model": "M"}, "agent_version": "1" });
    let (status, body) = curl_post(
        &server,
        "/api/v1/enroll",
        missing.to_string().as_bytes(),
        None,
    )
    .unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("csr_pem"),
        "the message names the missing field: {body}"
    );

    let garbage = enroll_body(
        &code,
        "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
        "S",
    );
    let (status, body) = curl_post(&server, "/api/v1/enroll", &garbage, None).unwrap();
    assert_eq!(
        (status, error_code(&body).as_str()),
        (400, "malformed_request"),
        "{body}"
    );

    let not_pem = enroll_body(&code, "hello", "S");
    let (status, body) = curl_post(&server, "/api/v1/enroll", &not_pem, None).unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("CERTIFICATE REQUEST"), "{body}");

    let empty_serial = enroll_body(&code, &csr, "  ");
    let (status, body) = curl_post(&server, "/api/v1/enroll", &empty_serial, None).unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("hardware.serial"), "{body}");

    assert_nothing_stored(&server);
}

#[test]
fn a_body_over_64_kib_gets_413() {
    let server = Server::start();
    let (_, code) = server.create_account("Store", "customer", None);
    let huge = enroll_body(&code, &"A".repeat(70 * 1024), "S");
    let (status, body) = curl_post(&server, "/api/v1/enroll", &huge, None).unwrap();
    assert_eq!(
        (status, error_code(&body).as_str()),
        (413, "payload_too_large"),
        "{body}"
    );
    assert_nothing_stored(&server);
}

#[test]
fn unknown_mistyped_and_rotated_codes_get_one_indistinguishable_answer() {
    let server = Server::start();
    let (account, code) = server.create_account("Store", "customer", None);
    server.admin_json(&["codes", "rotate", "--account", &account]);
    let scratch = tempfile::tempdir().unwrap();
    let (_, csr) = openssl_key_and_csr(scratch.path(), "k");
    let mut mistyped = code.clone().into_bytes();
    mistyped[0] = if mistyped[0] == b'A' { b'B' } else { b'A' };
    let mistyped = String::from_utf8(mistyped).unwrap();
    let answers: Vec<(u16, String)> = [
        code.as_str(),
        mistyped.as_str(),
        "0000-0000-0000-0000-0000-0000",
        "x",
    ]
    .iter()
    .map(|c| curl_post(&server, "/api/v1/enroll", &enroll_body(c, &csr, "S"), None).unwrap())
    .collect();
    for (status, body) in &answers {
        assert_eq!(*status, 403, "{body}");
        assert_eq!(body, &answers[0].1);
    }
    assert_eq!(error_code(&answers[0].1), "invalid_registration_code");
    assert!(server.recorders(None).is_empty());
}

#[test]
fn heartbeat_without_a_client_certificate_gets_401() {
    let server = Server::start();
    let (status, body) =
        curl_post(&server, "/api/v1/heartbeat", br#"{"status":{}}"#, None).unwrap();
    assert_eq!(
        (status, error_code(&body).as_str()),
        (401, "unauthenticated"),
        "{body}"
    );
    let (status, _) = curl_post(&server, "/api/v1/renew", br#"{"csr_pem":"x"}"#, None).unwrap();
    assert_eq!(status, 401);
}

#[test]
fn a_client_certificate_from_another_ca_is_refused_in_the_handshake() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-subj",
        "/CN=Rogue CA",
        "-days",
        "2",
    ]);
    // The client's own key and CSR, made as any standard client would.
    openssl_key_and_csr(dir.path(), "c");
    std::fs::write(dir.path().join("ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "c.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "c.pem",
        "-days",
        "1",
        "-extfile",
        "ext",
    ]);
    let result = curl_post(
        &server,
        "/api/v1/heartbeat",
        br#"{"status":{}}"#,
        Some((&dir.path().join("c.pem"), &dir.path().join("c.key"))),
    );
    match result {
        // 35: handshake failed; 55/56: the server's alert or close arrived while sending or
        // receiving (TLS 1.3 checks the client certificate after the client thinks the
        // handshake is done). Not 58: curl loaded the certificate and key fine.
        Err((exit, stderr)) => assert!(matches!(exit, 35 | 55 | 56), "curl exit {exit}: {stderr}"),
        Ok((status, body)) => panic!("a foreign certificate got an HTTP answer: {status} {body}"),
    }
}

#[test]
fn a_revoked_recorder_gets_410_on_heartbeat_and_renewal() {
    let server = Server::start();
    let (_, code) = server.create_account("Store", "customer", None);
    let dir = tempfile::tempdir().unwrap();
    let (key, csr) = openssl_key_and_csr(dir.path(), "r");
    let (status, body) = curl_post(
        &server,
        "/api/v1/enroll",
        &enroll_body(&code, &csr, "S"),
        None,
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let cert = dir.path().join("r.pem");
    std::fs::write(&cert, v["certificate_pem"].as_str().unwrap()).unwrap();
    let id = v["recorder_id"].as_str().unwrap();
    assert!(server.admin(&["recorders", "revoke", id]).status.success());
    let (status, body) = curl_post(
        &server,
        "/api/v1/heartbeat",
        br#"{"status":{}}"#,
        Some((&cert, &key)),
    )
    .unwrap();
    assert_eq!(
        (status, error_code(&body).as_str()),
        (410, "revoked"),
        "{body}"
    );
    let renew = serde_json::json!({ "csr_pem": csr }).to_string();
    let (status, _) = curl_post(
        &server,
        "/api/v1/renew",
        renew.as_bytes(),
        Some((&cert, &key)),
    )
    .unwrap();
    assert_eq!(status, 410);
    // The same key cannot come back with a code either.
    let (status, body) = curl_post(
        &server,
        "/api/v1/enroll",
        &enroll_body(&code, &csr, "S"),
        None,
    )
    .unwrap();
    assert_eq!(
        (status, error_code(&body).as_str()),
        (410, "revoked"),
        "{body}"
    );
}

#[test]
fn enrollment_attempts_over_the_limit_get_429_with_retry_after() {
    let scratch = tempfile::tempdir().unwrap();
    let config = scratch.path().join("limited.toml");
    std::fs::write(&config, "enroll_attempts_per_minute = 2\n").unwrap();
    let limited = Server::start_with(1, &["--config", config.to_str().unwrap()]);
    let body = enroll_body("0000-0000-0000-0000-0000-0000", "x", "S");
    let statuses: Vec<u16> = (0..3)
        .map(|_| {
            curl_post(&limited, "/api/v1/enroll", &body, None)
                .unwrap()
                .0
        })
        .collect();
    assert_eq!(statuses[2], 429, "{statuses:?}");
    let out = Command::new("curl")
        .args([
            "-sS",
            "-D",
            "-",
            "-o",
            "/dev/null",
            "-H",
            "content-type: application/json",
            "--data-binary",
        ])
        .arg(String::from_utf8(body).unwrap())
        .arg("--cacert")
        .arg(limited.ca_file())
        .arg(format!("{}/api/v1/enroll", limited.url()))
        .output()
        .unwrap();
    let headers = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(headers.contains("retry-after:"), "{headers}");
}
