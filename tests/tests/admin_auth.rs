//! Black-box tests of the admin API's authentication over loopback, driven by curl, the
//! CLI and the server's SQLite file: logins that tell nothing about which emails exist,
//! lockouts, CSRF, the session cookie, session and token lifetimes, disabled users,
//! password resets by mail, scoped API tokens, and the audit log they leave.

use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use contera_e2e::admin::{
    find_link, first_administrator, invite_and_accept, is_hex, sql, wait_for_mail, AdminClient,
    Answer, GOOD_PASSWORD, SESSION_COOKIE,
};
use contera_e2e::Server;
use mail_parser::MessageParser;
use serde_json::{json, Value};

/// Another password that passes the policy, for resets.
const NEW_PASSWORD: &str = "a brand new passphrase for 2026";
const WRONG_PASSWORD: &str = "definitely not the password";

fn server_with_admin_settings(settings: &str) -> Server {
    Server::start_configured(1, &format!("[admin]\n{settings}\n"), &[])
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// SHA-256 of a secret as upper-case hex, as SQLite's `hex(token_hash)` shows it.
fn sha256_hex(secret: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, secret.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect()
}

/// Asserts the one error shape, `{"error": {"code", "message"}}` and nothing else, with
/// `code` and a message.
#[track_caller]
fn assert_error(answer: &Answer, status: u16, code: &str) {
    assert_eq!(answer.status, status, "{}", answer.text);
    let object = answer.body.as_object().expect("a JSON object");
    assert_eq!(object.len(), 1, "only `error`: {}", answer.text);
    let error = answer.body["error"].as_object().expect("an error object");
    assert_eq!(error.len(), 2, "only code and message: {}", answer.text);
    assert_eq!(answer.error_code(), code, "{}", answer.text);
    assert!(
        answer.body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.trim().is_empty()),
        "{}",
        answer.text
    );
}

fn login_attempt(client: &AdminClient, email: &str, password: &str) -> Answer {
    client.post(
        "/session/login",
        &json!({ "email": email, "password": password }),
    )
}

/// One login attempt by curl: (status, body, time from sending the request to the end of
/// the answer as curl measures it, so neither starting curl nor the TLS handshake adds
/// noise).
fn timed_login(server: &Server, email: &str, password: &str) -> (u16, String, Duration) {
    let scratch = tempfile::tempdir().unwrap();
    let request = scratch.path().join("request");
    let answer = scratch.path().join("answer");
    std::fs::write(
        &request,
        json!({ "email": email, "password": password }).to_string(),
    )
    .unwrap();
    let out = Command::new("curl")
        .args([
            "-sS",
            "-w",
            "%{http_code} %{time_pretransfer} %{time_total}",
            "-o",
        ])
        .arg(&answer)
        .arg("--cacert")
        .arg(server.ca_file())
        .args(["-H", "content-type: application/json", "--data-binary"])
        .arg(format!("@{}", request.display()))
        .arg(format!("{}/api/v1/admin/session/login", server.url()))
        .output()
        .expect("curl runs");
    assert!(out.status.success(), "{out:?}");
    let written = String::from_utf8(out.stdout).unwrap();
    let fields: Vec<&str> = written.split_whitespace().collect();
    let seconds = |s: &str| s.parse::<f64>().expect("curl time in seconds");
    (
        fields[0].parse().expect("HTTP status"),
        std::fs::read_to_string(&answer).unwrap(),
        Duration::from_secs_f64(seconds(fields[2]) - seconds(fields[1])),
    )
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times[times.len() / 2]
}

#[test]
fn unknown_email_wrong_password_and_invited_user_get_the_same_answer_in_the_same_time() {
    // Enough failures allowed that the 138 attempts are never refused.
    let server = server_with_admin_settings(
        "login_failures_per_email = 1000\nlogin_failures_per_address_per_hour = 1000",
    );
    let (_, account, _) = first_administrator(&server, "Acme", "active@acme.test");
    server.admin_json(&[
        "users",
        "invite",
        "--account",
        &account,
        "--email",
        "invited@acme.test",
        "--name",
        "Not Yet Accepted",
    ]);
    let cases = [
        ("unknown email", "nobody@acme.test"),
        ("wrong password of an active user", "active@acme.test"),
        ("invited user without a password", "invited@acme.test"),
    ];
    let attempt = |email: &str| timed_login(&server, email, WRONG_PASSWORD);
    // Warm up each path once (the dummy hash is made at its first use).
    let (status, text, _) = attempt(cases[0].1);
    assert_eq!(status, 401, "{text}");
    let reference = (status, text);
    for (_, email) in &cases[1..] {
        attempt(email);
    }
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); cases.len()];
    for round in 0..15 {
        // Interleaved, in a rotating order, so load from elsewhere hits all three alike.
        for k in 0..cases.len() {
            let i = (round + k) % cases.len();
            // A sample is the fastest of three back-to-back attempts: other work on the
            // machine only ever adds time, and the minimum filters most of it out.
            let mut fastest = Duration::MAX;
            for _ in 0..3 {
                let (status, text, took) = attempt(cases[i].1);
                assert_eq!(
                    (status, text.as_str()),
                    (reference.0, reference.1.as_str()),
                    "{}: the answer differs from the unknown email's",
                    cases[i].0
                );
                fastest = fastest.min(took);
            }
            times[i].push(fastest);
        }
    }
    let medians: Vec<Duration> = times.iter_mut().map(|t| median(t)).collect();
    let fastest = *medians.iter().min().unwrap();
    let slowest = *medians.iter().max().unwrap();
    let report: Vec<String> = cases
        .iter()
        .zip(&medians)
        .map(|((what, _), m)| format!("{what}: {m:?}"))
        .collect();
    assert!(
        slowest.as_secs_f64() <= 1.5 * fastest.as_secs_f64(),
        "median times differ by more than a factor of 1.5, so timing tells which emails \
         exist: {report:?}"
    );
}

#[test]
fn ten_failed_logins_lock_the_email_even_for_its_right_password_but_not_other_emails() {
    let server = Server::start();
    let (admin, account, _) = first_administrator(&server, "Acme", "locked@acme.test");
    invite_and_accept(&server, &account, "colleague@acme.test", "Colleague");
    let anonymous = admin.fresh();
    for attempt in 1..=10 {
        let answer = login_attempt(&anonymous, "locked@acme.test", WRONG_PASSWORD);
        assert_eq!(answer.status, 401, "attempt {attempt}: {}", answer.text);
    }
    for email in ["locked@acme.test", "LOCKED@Acme.Test"] {
        let refused = login_attempt(&anonymous, email, GOOD_PASSWORD);
        assert_error(&refused, 429, "rate_limited");
        let retry_after: u64 = refused
            .header("retry-after")
            .expect("Retry-After")
            .parse()
            .expect("Retry-After in seconds");
        assert!(
            (1..=900).contains(&retry_after),
            "Retry-After {retry_after} s is outside the 15-minute window"
        );
    }
    let mut other = admin.fresh();
    other
        .login("colleague@acme.test", GOOD_PASSWORD)
        .expect(200);
    other.get("/session").expect(200);
}

#[test]
fn failures_across_emails_lock_the_address_for_every_email_but_not_other_addresses() {
    let server = server_with_admin_settings("login_failures_per_address_per_hour = 5");
    let (admin, _, _) = first_administrator(&server, "Acme", "admin@acme.test");
    let anonymous = admin.fresh();
    for i in 0..5 {
        let answer = login_attempt(&anonymous, &format!("guess{i}@acme.test"), WRONG_PASSWORD);
        assert_eq!(answer.status, 401, "failure {i}: {}", answer.text);
    }
    for email in ["admin@acme.test", "never-tried@acme.test"] {
        let refused = login_attempt(&anonymous, email, GOOD_PASSWORD);
        assert_error(&refused, 429, "rate_limited");
        let retry_after: u64 = refused
            .header("retry-after")
            .expect("Retry-After")
            .parse()
            .expect("Retry-After in seconds");
        assert!((1..=3600).contains(&retry_after), "{retry_after}");
    }
    // The count is per address: the same user from another loopback address logs in.
    let elsewhere = admin.fresh().request_with(
        &["--interface", "127.0.0.2"],
        "POST",
        "/session/login",
        Some(&json!({ "email": "admin@acme.test", "password": GOOD_PASSWORD })),
    );
    assert_eq!(elsewhere.status, 200, "{}", elsewhere.text);
}

/// A logged-in administrator with a second session of the same user: (client whose CSRF
/// token is cleared, its right token, the wrong ones to try: none, the other session's
/// valid token, and a well-formed made-up one).
fn csrf_setup(server: &Server, email: &str) -> (AdminClient, String, Vec<Option<String>>) {
    let (mut admin, _, _) = first_administrator(server, "Acme", email);
    let right = admin.csrf.take().expect("CSRF token from accepting");
    let mut other = admin.fresh();
    other.login(email, GOOD_PASSWORD).expect(200);
    let foreign = other.csrf.clone().unwrap();
    assert_ne!(right, foreign);
    (
        admin,
        right,
        vec![None, Some(foreign), Some("0".repeat(64))],
    )
}

fn audit_token() -> Value {
    json!({ "name": "csrf test", "permissions": ["audit.view"] })
}

#[test]
fn with_a_session_reads_need_no_csrf_token_but_creating_a_token_needs_the_right_one() {
    let server = Server::start();
    let (mut admin, right, wrong_ones) = csrf_setup(&server, "create@acme.test");
    for path in ["/session", "/tokens", "/audit"] {
        admin.get(path).expect(200);
    }
    for csrf in &wrong_ones {
        admin.csrf = csrf.clone();
        let refused = admin.post("/tokens", &audit_token());
        assert_error(&refused, 403, "forbidden");
        assert!(refused.text.contains("X-CSRF-Token"), "{}", refused.text);
    }
    assert_eq!(
        sql(&server, "SELECT count(*) FROM api_tokens;").trim(),
        "0",
        "a refused POST made nothing"
    );
    admin.csrf = Some(right);
    admin.post("/tokens", &audit_token()).expect(201);
}

#[test]
fn with_a_session_revoking_a_token_needs_the_right_csrf_token() {
    let server = Server::start();
    let (mut admin, right, wrong_ones) = csrf_setup(&server, "revoke@acme.test");
    admin.csrf = Some(right.clone());
    let made = admin.post("/tokens", &audit_token()).expect(201);
    let id = made.body["token"]["id"].as_str().unwrap().to_owned();
    let scripted = admin.with_token(made.body["secret"].as_str().unwrap());
    for csrf in &wrong_ones {
        admin.csrf = csrf.clone();
        assert_error(&admin.delete(&format!("/tokens/{id}")), 403, "forbidden");
    }
    scripted.get("/session").expect(200);
    admin.csrf = Some(right);
    admin.delete(&format!("/tokens/{id}")).expect(204);
    scripted.get("/session").expect(401);
}

#[test]
fn with_a_session_logging_out_needs_the_right_csrf_token() {
    let server = Server::start();
    let (mut admin, right, wrong_ones) = csrf_setup(&server, "logout@acme.test");
    let cookie = admin.session_cookie().expect("session cookie");
    for csrf in &wrong_ones {
        admin.csrf = csrf.clone();
        assert_error(&admin.post("/session/logout", &json!({})), 403, "forbidden");
    }
    admin.get("/session").expect(200);
    admin.csrf = Some(right);
    admin.post("/session/logout", &json!({})).expect(204);
    admin.with_cookie(&cookie).get("/session").expect(401);
}

#[test]
fn bearer_token_requests_need_no_csrf_token() {
    let server = Server::start();
    let (admin, _, _) = first_administrator(&server, "Acme", "bearer@acme.test");
    let made = admin.post("/tokens", &audit_token()).expect(201);
    // A bearer token is no ambient credential a browser would add by itself.
    let bearer = admin.with_token(made.body["secret"].as_str().unwrap());
    assert!(bearer.csrf.is_none());
    bearer.get("/audit").expect(200);
    bearer.post("/session/logout", &json!({})).expect(204);
    // A change a token may make needs no CSRF token either: renaming its own account is
    // outside what an audit.view token holds, so the answer is 403 for the permission,
    // not for a missing CSRF token.
    let account = bearer.get("/session").expect(200).body["account"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let refused = bearer.patch(&format!("/accounts/{account}"), &json!({"name": "x"}));
    assert_error(&refused, 403, "forbidden");
    assert!(!refused.text.contains("CSRF"), "{}", refused.text);
}

#[test]
fn tokens_and_the_password_are_managed_only_from_a_session() {
    let server = Server::start();
    let (admin, _, _) = first_administrator(&server, "Acme", "session-only@acme.test");
    let made = admin.post("/tokens", &audit_token()).expect(201);
    let id = made.body["token"]["id"].as_str().unwrap().to_owned();
    let bearer = admin.with_token(made.body["secret"].as_str().unwrap());
    // A token cannot mint another (which could outlive it), list or revoke the user's
    // tokens, nor guess the password to turn itself into a session.
    assert_error(&bearer.post("/tokens", &audit_token()), 403, "forbidden");
    assert_error(&bearer.get("/tokens"), 403, "forbidden");
    assert_error(&bearer.delete(&format!("/tokens/{id}")), 403, "forbidden");
    let guess = bearer.post(
        "/session/password",
        &json!({"current_password": GOOD_PASSWORD, "new_password": "another fine passphrase 7"}),
    );
    assert_error(&guess, 403, "forbidden");
    admin.get("/tokens").expect(200);
}

#[test]
fn the_session_cookie_is_host_only_secure_random_and_stored_only_as_its_hash() {
    let server = Server::start();
    let (admin, _, _) = first_administrator(&server, "Acme", "cookie@acme.test");
    let mut cookies = Vec::new();
    for _ in 0..2 {
        let mut client = admin.fresh();
        let answer = client.login("cookie@acme.test", GOOD_PASSWORD).expect(200);
        let set_cookie = answer.header("set-cookie").expect("Set-Cookie").to_owned();
        let mut parts = set_cookie.split(';').map(str::trim);
        let (name, value) = parts.next().unwrap().split_once('=').unwrap();
        assert_eq!(name, SESSION_COOKIE, "{set_cookie}");
        assert!(
            is_hex(value, 32),
            "the value is 128 random bits as 32 hex digits: {set_cookie}"
        );
        let attributes: Vec<&str> = parts.collect();
        for wanted in ["Secure", "HttpOnly", "SameSite=Lax", "Path=/"] {
            assert!(
                attributes.iter().any(|a| a.eq_ignore_ascii_case(wanted)),
                "{wanted} missing: {set_cookie}"
            );
        }
        assert!(
            !attributes
                .iter()
                .any(|a| a.to_ascii_lowercase().starts_with("domain")),
            "a __Host- cookie has no Domain: {set_cookie}"
        );
        assert_eq!(client.session_cookie().as_deref(), Some(value));
        client.get("/session").expect(200);
        cookies.push((value.to_owned(), client));
    }
    assert_ne!(cookies[0].0, cookies[1].0, "each login gets its own cookie");
    let (cookie, client) = &cookies[0];
    let made = client
        .post(
            "/tokens",
            &json!({ "name": "script", "permissions": ["audit.view"] }),
        )
        .expect(201);
    let secret = made.body["secret"].as_str().unwrap().to_owned();

    // What the database holds: the SHA-256 of each...
    let session_hashes = sql(&server, "SELECT hex(token_hash) FROM sessions;");
    assert!(
        session_hashes.contains(&sha256_hex(cookie)),
        "{session_hashes}"
    );
    let token_hashes = sql(&server, "SELECT hex(token_hash) FROM api_tokens;");
    assert!(
        token_hashes.contains(&sha256_hex(&secret)),
        "{token_hashes}"
    );
    // ...and nowhere in its files (database, WAL, shared memory) the secrets themselves,
    // as text or as the bytes their hex stands for.
    let secret_hex = secret.strip_prefix("contera_").expect("contera_ prefix");
    let mut needles: Vec<Vec<u8>> = Vec::new();
    for hex in [cookie.as_str(), secret_hex] {
        needles.push(hex.as_bytes().to_vec());
        needles.push(hex.to_ascii_uppercase().into_bytes());
        needles.push(
            (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect(),
        );
    }
    let mut files = 0;
    for entry in std::fs::read_dir(server.data_dir()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.starts_with("contera.db") {
            continue;
        }
        files += 1;
        let bytes = std::fs::read(&path).unwrap();
        for needle in &needles {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_slice()),
                "{name} holds a session cookie or API token secret ({})",
                String::from_utf8_lossy(needle)
            );
        }
    }
    assert!(
        files >= 1,
        "no contera.db* in {}",
        server.data_dir().display()
    );
}

#[test]
fn sessions_end_when_idle_when_past_their_absolute_end_and_at_logout() {
    let server = Server::start();
    let (admin, _, _) = first_administrator(&server, "Acme", "sessions@acme.test");
    let login = || {
        let mut c = admin.fresh();
        c.login("sessions@acme.test", GOOD_PASSWORD).expect(200);
        let cookie = c.session_cookie().unwrap();
        (c, cookie)
    };
    let age = |cookie: &str, set: &str| {
        sql(
            &server,
            &format!(
                "UPDATE sessions SET {set} WHERE token_hash = X'{}';",
                sha256_hex(cookie)
            ),
        );
    };

    // Idle for 31 minutes (the default limit is 30) ends it; for 29 it does not.
    let (idle, idle_cookie) = login();
    let (busy, busy_cookie) = login();
    age(&idle_cookie, "last_seen_at = last_seen_at - 31 * 60");
    age(&busy_cookie, "last_seen_at = last_seen_at - 29 * 60");
    assert_error(&idle.get("/session"), 401, "unauthenticated");
    busy.get("/session").expect(200);

    // Past the absolute end, however recently used.
    let (old, old_cookie) = login();
    old.get("/session").expect(200);
    age(
        &old_cookie,
        "expires_at = CAST(strftime('%s', 'now') AS INTEGER) - 1",
    );
    assert_error(&old.get("/session"), 401, "unauthenticated");

    // Logged out: the cookie, replayed as it was, no longer works.
    let (mut leaving, cookie) = login();
    let replay = admin.with_cookie(&cookie);
    replay.get("/session").expect(200);
    leaving.post("/session/logout", &json!({})).expect(204);
    assert_error(&replay.get("/session"), 401, "unauthenticated");
    assert_error(&leaving.get("/session"), 401, "unauthenticated");
    leaving
        .login("sessions@acme.test", GOOD_PASSWORD)
        .expect(200);
    leaving.get("/session").expect(200);
}

#[test]
fn disabling_a_user_ends_their_session_and_tokens_at_once_and_enabling_revives_neither() {
    let server = Server::start();
    let (admin, account, _) = first_administrator(&server, "Acme", "boss@acme.test");
    let (worker, _) = invite_and_accept(&server, &account, "worker@acme.test", "Worker");
    let made = worker
        .post(
            "/tokens",
            &json!({ "name": "cron", "permissions": ["audit.view"] }),
        )
        .expect(201);
    let scripted = worker.with_token(made.body["secret"].as_str().unwrap());
    let cookie = worker.session_cookie().unwrap();
    worker.get("/session").expect(200);
    scripted.get("/session").expect(200);

    let out = server.admin(&["users", "disable", "worker@acme.test"]);
    assert!(out.status.success(), "{out:?}");
    assert_error(&worker.get("/session"), 401, "unauthenticated");
    assert_error(&scripted.get("/session"), 401, "unauthenticated");
    let unknown = login_attempt(&admin.fresh(), "nobody@acme.test", GOOD_PASSWORD);
    let disabled = login_attempt(&admin.fresh(), "worker@acme.test", GOOD_PASSWORD);
    assert_eq!(
        (disabled.status, &disabled.text),
        (unknown.status, &unknown.text),
        "a disabled user cannot log in, and is not told apart from an unknown email"
    );

    let out = server.admin(&["users", "enable", "worker@acme.test"]);
    assert!(out.status.success(), "{out:?}");
    assert_error(
        &admin.with_cookie(&cookie).get("/session"),
        401,
        "unauthenticated",
    );
    assert_error(&scripted.get("/session"), 401, "unauthenticated");
    let mut back = worker.fresh();
    back.login("worker@acme.test", GOOD_PASSWORD).expect(200);
    back.get("/session").expect(200);
    admin.get("/session").expect(200);
}

/// The one reset message in the outbox since `seen`: checks both parts carry the same
/// link and returns its token.
fn reset_token_from_outbox(
    server: &Server,
    seen: &mut Vec<std::path::PathBuf>,
    to: &str,
) -> String {
    let bytes = wait_for_mail(&server.data_dir().join("outbox"), seen);
    let message = MessageParser::default()
        .parse(&bytes[..])
        .expect("an RFC 5322 message");
    let recipient = message.to().and_then(|a| a.first()).expect("To");
    assert_eq!(recipient.address(), Some(to));
    assert_eq!(message.text_body_count(), 1, "one text/plain part");
    assert_eq!(message.html_body_count(), 1, "one text/html part");
    let plain = message.body_text(0).unwrap();
    let html = message.body_html(0).unwrap();
    let (link, token) =
        find_link(&plain, "/password/reset#token=").expect("a reset link in the plain part");
    assert!(link.starts_with("https://"), "{link}");
    assert!(is_hex(&token, 64), "a 256-bit token: {link}");
    let (_, html_token) =
        find_link(&html, "/password/reset#token=").expect("a reset link in the HTML part");
    assert_eq!(html_token, token, "{html}");
    token
}

fn reset(client: &AdminClient, token: &str, password: &str) -> Answer {
    client.post(
        "/session/reset",
        &json!({ "token": token, "password": password }),
    )
}

#[test]
fn a_mailed_reset_link_sets_a_new_password_once_and_ends_every_old_session_and_token() {
    let server = Server::start();
    let (admin, _, user_id) = first_administrator(&server, "Acme", "forgetful@acme.test");
    let made = admin
        .post(
            "/tokens",
            &json!({ "name": "script", "permissions": ["audit.view"] }),
        )
        .expect(201);
    let scripted = admin.with_token(made.body["secret"].as_str().unwrap());
    let anonymous = admin.fresh();

    let unknown = anonymous.post("/session/forgot", &json!({ "email": "nobody@acme.test" }));
    let known = anonymous.post(
        "/session/forgot",
        &json!({ "email": "forgetful@acme.test" }),
    );
    assert_eq!(unknown.status, 202, "{}", unknown.text);
    assert_eq!(
        (known.status, &known.text),
        (unknown.status, &unknown.text),
        "forgot tells nothing about which emails exist"
    );
    let mut seen = Vec::new();
    let token = reset_token_from_outbox(&server, &mut seen, "forgetful@acme.test");
    assert_eq!(
        contera_e2e::admin::mail_files(&server.data_dir().join("outbox")).len(),
        1,
        "no mail for the unknown email"
    );

    let too_short = reset(&anonymous, &token, "short pw");
    assert_error(&too_short, 400, "malformed_request");
    assert!(
        too_short.text.contains("at least 12"),
        "names the rule: {}",
        too_short.text
    );
    let common = reset(&anonymous, &token, "password1234");
    assert_error(&common, 400, "malformed_request");
    assert!(common.text.contains("common"), "{}", common.text);
    admin.get("/session").expect(200);

    let done = reset(&anonymous, &token, NEW_PASSWORD).expect(200);
    assert_eq!(done.body["id"], json!(user_id));
    assert_error(&admin.get("/session"), 401, "unauthenticated");
    assert_error(&scripted.get("/session"), 401, "unauthenticated");
    assert_eq!(
        login_attempt(&anonymous, "forgetful@acme.test", GOOD_PASSWORD).status,
        401
    );
    let mut again = admin.fresh();
    again.login("forgetful@acme.test", NEW_PASSWORD).expect(200);
    again.get("/session").expect(200);

    assert_error(
        &reset(&anonymous, &token, "yet another passphrase 77"),
        404,
        "not_found",
    );
    again
        .fresh()
        .login("forgetful@acme.test", NEW_PASSWORD)
        .expect(200);
}

#[test]
fn a_second_forgot_replaces_the_first_link() {
    let server = Server::start();
    let (admin, _, _) = first_administrator(&server, "Acme", "twice@acme.test");
    let anonymous = admin.fresh();
    let mut seen = Vec::new();
    anonymous
        .post("/session/forgot", &json!({ "email": "twice@acme.test" }))
        .expect(202);
    let first = reset_token_from_outbox(&server, &mut seen, "twice@acme.test");
    anonymous
        .post("/session/forgot", &json!({ "email": "twice@acme.test" }))
        .expect(202);
    let second = reset_token_from_outbox(&server, &mut seen, "twice@acme.test");
    assert_ne!(first, second);
    assert_error(&reset(&anonymous, &first, NEW_PASSWORD), 404, "not_found");
    reset(&anonymous, &second, NEW_PASSWORD).expect(200);
    anonymous
        .fresh()
        .login("twice@acme.test", NEW_PASSWORD)
        .expect(200);
}

/// Makes a token holding only `audit.view` (and `extra` fields): (id, its client, answer).
fn audit_view_token(
    admin: &AdminClient,
    name: &str,
    extra: Value,
) -> (String, AdminClient, Answer) {
    let mut body = json!({ "name": name, "permissions": ["audit.view"] });
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    let made = admin.post("/tokens", &body).expect(201);
    (
        made.body["token"]["id"].as_str().unwrap().to_owned(),
        admin.with_token(made.body["secret"].as_str().unwrap()),
        made,
    )
}

#[test]
fn an_api_token_acts_with_only_its_own_permissions() {
    let server = Server::start();
    let (admin, _, _) = first_administrator(&server, "Acme", "scoped@acme.test");
    let (_, auditor, _) = audit_view_token(&admin, "auditor", json!({}));
    let me = auditor.get("/session").expect(200);
    assert_eq!(me.body["permissions"], json!(["audit.view"]));
    assert!(me.body.get("csrf_token").is_none(), "{}", me.text);
    auditor.get("/audit").expect(200);
    let refused = auditor.post(
        "/tokens",
        &json!({ "name": "wider", "permissions": ["accounts.view"] }),
    );
    assert_error(&refused, 403, "forbidden");
    let refused = auditor.get("/accounts");
    assert_error(&refused, 403, "forbidden");
}

#[test]
fn an_api_token_lists_when_it_was_last_used() {
    let server = Server::start();
    let (admin, _, _) = first_administrator(&server, "Acme", "used@acme.test");
    let (id, auditor, made) = audit_view_token(&admin, "auditor", json!({}));
    assert!(
        made.body["token"]["last_used_at"].is_null(),
        "{}",
        made.text
    );
    auditor.get("/session").expect(200);
    let listed = admin.get("/tokens").expect(200);
    let row = listed.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == json!(id))
        .unwrap_or_else(|| panic!("token {id} is not listed: {}", listed.text))
        .clone();
    let used_at = row["last_used_at"].as_i64().expect("last_used_at");
    assert!(
        used_at >= row["created_at"].as_i64().unwrap() && used_at <= unix_now(),
        "{row}"
    );
}

#[test]
fn a_revoked_api_token_is_refused_at_once() {
    let server = Server::start();
    let (admin, _, _) = first_administrator(&server, "Acme", "revoked@acme.test");
    let (id, revoked, _) = audit_view_token(&admin, "revoked", json!({}));
    let (_, kept, _) = audit_view_token(&admin, "kept", json!({}));
    revoked.get("/session").expect(200);
    admin.delete(&format!("/tokens/{id}")).expect(204);
    assert_error(&revoked.get("/session"), 401, "unauthenticated");
    kept.get("/session").expect(200);
}

#[test]
fn an_expired_api_token_is_refused() {
    let server = Server::start();
    let (admin, _, _) = first_administrator(&server, "Acme", "expired@acme.test");
    let (id, expiring, _) = audit_view_token(
        &admin,
        "expiring",
        json!({ "expires_at": unix_now() + 3600 }),
    );
    let (_, lasting, _) = audit_view_token(&admin, "lasting", json!({}));
    expiring.get("/session").expect(200);
    sql(
        &server,
        &format!(
            "UPDATE api_tokens SET expires_at = CAST(strftime('%s', 'now') AS INTEGER) - 1 \
             WHERE id = '{id}';"
        ),
    );
    assert_error(&expiring.get("/session"), 401, "unauthenticated");
    lasting.get("/session").expect(200);
}

/// Every audit entry visible to `client`, walking pages of `limit`.
fn audit_walk(client: &AdminClient, limit: u32) -> Vec<Value> {
    let mut entries = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..1000 {
        let path = match &cursor {
            None => format!("/audit?limit={limit}"),
            Some(c) => format!("/audit?limit={limit}&cursor={c}"),
        };
        let page = client.get(&path).expect(200);
        let items = page.body["items"].as_array().expect("items").clone();
        assert!(items.len() <= limit as usize, "{}", page.text);
        entries.extend(items);
        match page.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return entries,
        }
    }
    panic!("the audit pages never ended");
}

#[test]
fn the_audit_log_records_who_did_what_from_where_without_any_secret_and_pages_newest_first() {
    let server = Server::start();
    let (admin, account, user_id) = first_administrator(&server, "Acme", "audited@acme.test");
    let mut secrets: Vec<String> = vec![
        GOOD_PASSWORD.into(),
        NEW_PASSWORD.into(),
        WRONG_PASSWORD.into(),
        admin.session_cookie().unwrap(),
        admin.csrf.clone().unwrap(),
    ];

    login_attempt(&admin.fresh(), "audited@acme.test", WRONG_PASSWORD).expect(401);
    let from_elsewhere = admin.fresh().request_with(
        &["--interface", "127.0.0.2"],
        "POST",
        "/session/login",
        Some(&json!({ "email": "audited@acme.test", "password": WRONG_PASSWORD })),
    );
    assert_eq!(from_elsewhere.status, 401, "{}", from_elsewhere.text);
    let mut second = admin.fresh();
    second.login("audited@acme.test", GOOD_PASSWORD).expect(200);
    secrets.push(second.session_cookie().unwrap());
    let made = second
        .post(
            "/tokens",
            &json!({ "name": "nightly export", "permissions": ["audit.view"] }),
        )
        .expect(201);
    secrets.push(made.body["secret"].as_str().unwrap().to_owned());
    let token_id = made.body["token"]["id"].as_str().unwrap().to_owned();
    second
        .post("/session/forgot", &json!({ "email": "audited@acme.test" }))
        .expect(202);
    let reset_token = reset_token_from_outbox(&server, &mut Vec::new(), "audited@acme.test");
    secrets.push(reset_token.clone());
    reset(&second, &reset_token, NEW_PASSWORD).expect(200);
    let mut reader = admin.fresh();
    reader.login("audited@acme.test", NEW_PASSWORD).expect(200);
    secrets.push(reader.session_cookie().unwrap());

    let page = reader.get("/audit?limit=500").expect(200);
    assert!(page.body.get("next_cursor").is_none(), "{}", page.text);
    let entries = page.body["items"].as_array().unwrap().clone();
    let local = |e: &Value| matches!(e["source"].as_str(), Some("127.0.0.1" | "::1"));
    let actor = format!("user:{user_id}");
    let find = |action: &str, check: &dyn Fn(&Value) -> bool| {
        entries
            .iter()
            .find(|e| e["action"] == json!(action) && check(e))
            .unwrap_or_else(|| panic!("no matching {action} in {}", page.text))
            .clone()
    };
    for action in [
        "session.login",
        "login.failed",
        "token.created",
        "password.reset",
    ] {
        let entry = find(action, &|e| local(e));
        assert_eq!(entry["actor"], json!(actor), "{entry}");
        assert_eq!(entry["account_id"], json!(account), "{entry}");
    }
    find("login.failed", &|e| e["source"] == json!("127.0.0.2"));
    let created = find("token.created", &|_| true);
    assert!(
        created["detail"].as_str().unwrap().contains(&token_id),
        "{created}"
    );

    // No secret in any row, through the API or the CLI (which sees every row).
    let cli =
        String::from_utf8(server.admin(&["audit", "--limit", "1000", "--json"]).stdout).unwrap();
    assert!(cli.contains("password.reset"), "{cli}");
    for secret in &secrets {
        assert!(
            !page.text.contains(secret.as_str()),
            "API audit holds {secret}"
        );
        assert!(!cli.contains(secret.as_str()), "CLI audit holds {secret}");
    }

    // Pages of two walk every row once, newest first.
    let walked = audit_walk(&reader, 2);
    let ids =
        |list: &[Value]| -> Vec<i64> { list.iter().map(|e| e["id"].as_i64().unwrap()).collect() };
    assert_eq!(ids(&walked), ids(&entries));
    assert!(
        ids(&walked).windows(2).all(|w| w[0] > w[1]),
        "newest first, no repeats: {:?}",
        ids(&walked)
    );
    assert!(
        walked
            .windows(2)
            .all(|w| w[0]["at"].as_i64() >= w[1]["at"].as_i64()),
        "times do not go up"
    );
    assert!(entries.len() >= 8, "{}", page.text);
}
