//! The claim preview: a valid code names the account it enrolls into (and its parent),
//! commits nothing, and gets the same limits and the same refusal as enrollment.

use contera_e2e::*;
use serde_json::Value;

#[test]
fn a_valid_code_previews_its_account_and_parent_without_enrolling() {
    let server = Server::start();
    let (partner, _) = server.create_account("Acme Integrators", "partner", None);
    let (_, code) = server.create_account("Store 12", "customer", Some(&partner));
    let body = serde_json::json!({ "registration_code": code.to_lowercase() }).to_string();
    let (status, answer) =
        curl_post(&server, "/api/v1/enroll/preview", body.as_bytes(), None).unwrap();
    assert_eq!(status, 200, "{answer}");
    let preview: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(
        preview,
        serde_json::json!({ "account_name": "Store 12", "parent_name": "Acme Integrators" }),
        "names only, no ids"
    );
    assert!(server.recorders(None).is_empty());
    let audit = server.audit_actions();
    assert!(audit.iter().all(|a| a == "account.created"), "{audit:?}");

    // A top-level account has no parent to name.
    let (_, top) = server.create_account("Solo", "customer", None);
    let body = serde_json::json!({ "registration_code": top }).to_string();
    let (status, answer) =
        curl_post(&server, "/api/v1/enroll/preview", body.as_bytes(), None).unwrap();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        serde_json::from_str::<Value>(&answer).unwrap(),
        serde_json::json!({ "account_name": "Solo" })
    );
}

#[test]
fn a_wrong_code_gets_the_same_refusal_as_enrollment_and_previews_are_rate_limited() {
    let server = Server::start_configured(1, "enroll_attempts_per_minute = 4\n", &[]);
    let (_, code) = server.create_account("Store", "customer", None);
    // Rotated: the old code is now as unknown as a made-up one.
    let rotated = server.admin_json(&["codes", "rotate", "--account", &{
        server.admin_json(&["accounts", "list"]).as_array().unwrap()[0]["id"]
            .as_str()
            .unwrap()
            .to_string()
    }]);
    assert!(rotated["registration_code"].is_string());
    let scratch = tempfile::tempdir().unwrap();
    let (_, csr) = openssl_key_and_csr(scratch.path(), "k");
    let preview = serde_json::json!({ "registration_code": code }).to_string();
    let (p_status, p_body) =
        curl_post(&server, "/api/v1/enroll/preview", preview.as_bytes(), None).unwrap();
    let (e_status, e_body) = curl_post(
        &server,
        "/api/v1/enroll",
        &enroll_body(&code, &csr, "S"),
        None,
    )
    .unwrap();
    assert_eq!((p_status, e_status), (403, 403));
    assert_eq!(p_body, e_body, "no oracle: the same answer either way");

    // Previews and enrollments share the address's allowance (4 per minute).
    let (status, _) =
        curl_post(&server, "/api/v1/enroll/preview", preview.as_bytes(), None).unwrap();
    assert_eq!(status, 403);
    let (status, _) =
        curl_post(&server, "/api/v1/enroll/preview", preview.as_bytes(), None).unwrap();
    assert_eq!(status, 403);
    let (status, body) =
        curl_post(&server, "/api/v1/enroll/preview", preview.as_bytes(), None).unwrap();
    assert_eq!(status, 429, "{body}");
}
