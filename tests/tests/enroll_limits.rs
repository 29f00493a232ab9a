//! Enrollment limits that hold: per registration code across many source addresses, per
//! address before the body is parsed (malformed attempts count), and for the whole
//! server; each answered 429 with `Retry-After` in the error shape. Failed attempts on a
//! code reach the audit log as one row per code and period, not one per attempt.

use std::net::IpAddr;
use std::time::Duration;

use contera_e2e::tls_client::{client_config, post_http1, tls_connect};
use contera_e2e::*;
use contera_protocol::RegistrationCode;
use serde_json::Value;

const ALPHABET: &str = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// The same public id as `code`, another secret, a valid check symbol: passes the
/// recorder's typo check, fails on the server.
fn wrong_secret(code: &str, n: usize) -> String {
    let compact = code.parse::<RegistrationCode>().unwrap().compact();
    let mut symbols: Vec<char> = compact.chars().collect();
    let alphabet: Vec<char> = ALPHABET.chars().collect();
    let pos = 4 + n % 19;
    let now = alphabet.iter().position(|c| *c == symbols[pos]).unwrap();
    symbols[pos] = alphabet[(now + 1 + n / 19) % 32];
    for check in &alphabet {
        let last = symbols.len() - 1;
        symbols[last] = *check;
        let candidate: String = symbols.iter().collect();
        if candidate.parse::<RegistrationCode>().is_ok() {
            return candidate;
        }
    }
    unreachable!("one check symbol fits")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn error_code(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    v["error"]["code"].as_str().unwrap().to_string()
}

#[test]
fn many_source_addresses_cannot_exceed_the_per_code_limit() {
    let server = Server::start_configured(
        1,
        "enroll_attempts_per_code_per_minute = 10\nfailed_attempts_audit_secs = 2\n",
        &[],
    );
    let (account, code) = server.create_account("Store", "customer", None);
    let public_id = code.parse::<RegistrationCode>().unwrap().public_id();
    let scratch = tempfile::tempdir().unwrap();
    let (_, csr) = openssl_key_and_csr(scratch.path(), "guess");
    let config = client_config(&server.ca_file(), None, &[b"http/1.1"]);
    let addr = server.addr();
    // 19 addresses, 6 guesses each: far below each address's own limit of 60.
    let started = std::time::Instant::now();
    let answers = runtime().block_on(async {
        let mut answers = Vec::new();
        for a in 0..19 {
            let from: IpAddr = format!("127.0.0.{}", 2 + a).parse().unwrap();
            let mut tls = tls_connect(Some(from), addr, config.clone()).await.unwrap();
            for g in 0..6 {
                let body = enroll_body(&wrong_secret(&code, a * 6 + g), &csr, "GUESS");
                answers.push(post_http1(&mut tls, "/api/v1/enroll", &body).await.unwrap());
            }
        }
        answers
    });
    let checked = answers.iter().filter(|(s, _)| *s == 403).count();
    let limited: Vec<_> = answers.iter().filter(|(s, _)| *s == 429).collect();
    // A burst of 10, refilling at one per 6 s while the guesses went on.
    let refilled = (started.elapsed().as_secs() / 6) as usize + 1;
    assert!(
        (10..=10 + refilled).contains(&checked),
        "{checked} guesses reached the code check in {:?}",
        started.elapsed()
    );
    assert_eq!(checked + limited.len(), answers.len(), "{answers:?}");
    for (_, body) in &limited {
        assert_eq!(error_code(body), "rate_limited");
        assert!(body.contains("registration code"), "{body}");
    }
    // The code itself is held too, from a fresh address: an admin rotates a code under
    // attack (the new one has a new public id).
    let (status, body) = curl_post(
        &server,
        "/api/v1/enroll",
        &enroll_body(&code, &csr, "REAL"),
        None,
    )
    .unwrap();
    assert_eq!(status, 429, "{body}");

    // The failures reach the audit log in aggregate: a row per code and 2 s period,
    // together counting every failure, none holding the code.
    let rows = wait_for(Duration::from_secs(10), "aggregated audit rows", || {
        let rows: Vec<Value> = server
            .admin_json(&["audit", "--limit", "1000"])
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["action"] == "code.failed_attempts")
            .cloned()
            .collect();
        let counted: u64 = rows
            .iter()
            .map(|r| detail(r)["failures"].as_u64().unwrap())
            .sum();
        (counted == checked as u64).then_some(rows)
    });
    assert!(
        rows.len() <= 4 && rows.len() < checked,
        "{} rows for {checked} failures",
        rows.len()
    );
    for row in &rows {
        assert_eq!(row["account_id"], account.as_str());
        assert_eq!(detail(row)["code_public_id"], public_id.as_str());
        assert!(detail(row)["addresses"].as_u64().unwrap() >= 1);
        assert!(!row.to_string().contains(&code), "no code in the audit log");
    }
}

fn detail(row: &Value) -> Value {
    match &row["detail"] {
        Value::String(s) => serde_json::from_str(s).unwrap(),
        other => other.clone(),
    }
}

#[test]
fn malformed_bodies_count_against_the_address_before_parsing() {
    let server = Server::start_configured(1, "enroll_attempts_per_minute = 5\n", &[]);
    let config = client_config(&server.ca_file(), None, &[b"http/1.1"]);
    let addr = server.addr();
    runtime().block_on(async {
        let from: IpAddr = "127.0.0.30".parse().unwrap();
        let mut tls = tls_connect(Some(from), addr, config.clone()).await.unwrap();
        for _ in 0..5 {
            let (status, body) = post_http1(&mut tls, "/api/v1/enroll", b"{not json")
                .await
                .unwrap();
            assert_eq!(status, 400, "{body}");
        }
        let (status, body) = post_http1(&mut tls, "/api/v1/enroll", b"{}").await.unwrap();
        assert_eq!(status, 429, "{body}");
        assert_eq!(error_code(&body), "rate_limited");
        assert!(body.contains("address"), "{body}");
        // Another address is not affected.
        let other: IpAddr = "127.0.0.31".parse().unwrap();
        let mut tls = tls_connect(Some(other), addr, config.clone())
            .await
            .unwrap();
        let (status, _) = post_http1(&mut tls, "/api/v1/enroll", b"{}").await.unwrap();
        assert_eq!(status, 400);
    });
    // Retry-After is on the 429, read by curl.
    let out = std::process::Command::new("curl")
        .args(["-sS", "-i", "--interface", "127.0.0.30", "--cacert"])
        .arg(server.ca_file())
        .args(["-H", "content-type: application/json", "-d", "{}"])
        .arg(format!("{}/api/v1/enroll", server.url()))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.starts_with("http/2 429") || text.starts_with("http/1.1 429"),
        "{text}"
    );
    let secs: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("retry-after:"))
        .expect("Retry-After header")
        .trim()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&secs), "{secs}");
}

#[test]
fn the_global_enroll_limit_answers_429_quickly_whoever_asks() {
    let server = Server::start_configured(1, "enroll_attempts_total_per_minute = 5\n", &[]);
    let config = client_config(&server.ca_file(), None, &[b"http/1.1"]);
    let addr = server.addr();
    runtime().block_on(async {
        let mut statuses = Vec::new();
        for a in 0..8 {
            let from: IpAddr = format!("127.0.0.{}", 40 + a).parse().unwrap();
            let mut tls = tls_connect(Some(from), addr, config.clone()).await.unwrap();
            let (status, body) = post_http1(&mut tls, "/api/v1/enroll", b"{}").await.unwrap();
            if status == 429 {
                assert!(body.contains("busy"), "{body}");
            }
            statuses.push(status);
        }
        assert_eq!(statuses[..5], [400; 5]);
        assert_eq!(statuses[5..], [429; 3]);
    });
}
