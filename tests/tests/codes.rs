//! Registration codes against the real server, enrolled into with curl: a code past its
//! expiry, at its maximum uses or disabled is answered exactly like a code the server never
//! issued; the last use names the recorder; and the database files on disk hold none of the
//! codes created, in any form, while `codes show` still prints each.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use contera_e2e::*;
use contera_protocol::RegistrationCode;
use serde_json::Value;

/// Enrolls a fresh key with `code` over HTTPS; returns (HTTP status, body).
fn enroll(server: &Server, scratch: &Path, code: &str, serial: &str) -> (u16, String) {
    let (_, csr) = openssl_key_and_csr(scratch, serial);
    curl_post(
        server,
        "/api/v1/enroll",
        &enroll_body(code, &csr, serial),
        None,
    )
    .unwrap()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Unix seconds as RFC 3339 UTC, through `date` (the test crate has no time library).
fn rfc3339(secs: u64) -> String {
    let out = Command::new("date")
        .args(["-u", "-d", &format!("@{secs}"), "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn create_code(server: &Server, account: &str, extra: &[&str]) -> String {
    let mut args = vec!["codes", "create", "--account", account];
    args.extend_from_slice(extra);
    server.admin_json(&args)["registration_code"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn limits_disable_and_last_use_hold_and_no_code_is_readable_in_the_database_files() {
    let server = Server::start();
    let scratch = tempfile::tempdir().unwrap();
    let (account, initial) = server.create_account("Store", "customer", None);

    // The answer for a well-formed code this server never issued.
    let unknown = RegistrationCode::from_random([9; 23]).to_string();
    let refused = enroll(&server, scratch.path(), &unknown, "UNKNOWN");
    assert_eq!(refused.0, 403, "{refused:?}");

    // At most two uses: the third enrollment is refused like the unknown code.
    let twice = create_code(
        &server,
        &account,
        &["--label", "Two boxes", "--max-uses", "2"],
    );
    let first = enroll(&server, scratch.path(), &twice, "TWICE-1");
    assert_eq!(first.0, 200, "{first:?}");
    let second = enroll(&server, scratch.path(), &twice, "TWICE-2");
    assert_eq!(second.0, 200, "{second:?}");
    let second_id = serde_json::from_str::<Value>(&second.1).unwrap()["recorder_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(enroll(&server, scratch.path(), &twice, "TWICE-3"), refused);

    // The last use names the recorder, in JSON and in the human listing.
    let listed = server.admin_json(&["codes", "list", "--account", &account]);
    let twice_public = &twice[..4];
    let entry = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["public_id"] == twice_public)
        .unwrap();
    assert_eq!(entry["uses"], 2);
    assert_eq!(entry["state"], "used up");
    assert_eq!(entry["last_used_recorder"], second_id.as_str());
    let human = String::from_utf8(
        server
            .admin(&["codes", "list", "--account", &account])
            .stdout,
    )
    .unwrap();
    assert!(human.contains(&format!("by {second_id}")), "{human}");

    // Expiring a few seconds from now: enrolls before, refused like unknown after.
    let expires = now() + 4;
    let short = create_code(&server, &account, &["--expires-at", &rfc3339(expires)]);
    let before = enroll(&server, scratch.path(), &short, "SHORT-1");
    assert_eq!(before.0, 200, "{before:?}");
    while now() <= expires {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(enroll(&server, scratch.path(), &short, "SHORT-2"), refused);

    // Disabled: refused like unknown at the next attempt, while the server runs.
    let out = server.admin(&["codes", "disable", &initial[..4]]);
    assert!(out.status.success());
    assert_eq!(enroll(&server, scratch.path(), &initial, "OFF"), refused);

    // Nothing on disk in the database gives a code away, in any spelling; the key does.
    let mut files = Vec::new();
    for name in ["contera.db", "contera.db-wal"] {
        if let Ok(bytes) = std::fs::read(server.data_dir().join(name)) {
            files.push((name, bytes.to_ascii_uppercase()));
        }
    }
    assert!(!files.is_empty());
    for code in [&initial, &twice, &short] {
        let parsed: RegistrationCode = code.parse().unwrap();
        let forms = [parsed.to_string(), parsed.compact(), parsed.secret()];
        for (name, bytes) in &files {
            for form in &forms {
                let form = form.to_ascii_uppercase();
                assert!(
                    !bytes.windows(form.len()).any(|w| w == form.as_bytes()),
                    "{name} holds {form}"
                );
            }
        }
        let shown = server.admin_json(&["codes", "show", &parsed.public_id()]);
        assert_eq!(shown["registration_code"], parsed.to_string().as_str());
    }
}
