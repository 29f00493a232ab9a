//! The admin API's sessions over loopback: accepting an invitation logs in, the session
//! answers who is calling, and changes need the CSRF token.

use contera_e2e::admin::{first_administrator, GOOD_PASSWORD};
use contera_e2e::Server;
use serde_json::json;

#[test]
fn an_accepted_invitation_logs_in_and_changes_need_the_csrf_token() {
    let server = Server::start();
    let (mut client, account, user) = first_administrator(&server, "Acme", "boss@acme.test");
    let me = client.get("/session").expect(200);
    assert_eq!(me.body["user"]["id"], json!(user));
    assert_eq!(me.body["account"]["id"], json!(account));
    assert_eq!(me.body["permissions"].as_array().unwrap().len(), 10);

    let csrf = client.csrf.take();
    let refused = client
        .post(
            "/tokens",
            &json!({"name": "n", "permissions": ["accounts.view"]}),
        )
        .expect(403);
    assert!(refused.text.contains("X-CSRF-Token"), "{}", refused.text);
    client.csrf = csrf;
    let made = client
        .post(
            "/tokens",
            &json!({"name": "n", "permissions": ["accounts.view"]}),
        )
        .expect(201);
    let secret = made.body["secret"].as_str().unwrap();
    let scripted = client.with_token(secret);
    let me = scripted.get("/session").expect(200);
    assert_eq!(me.body["permissions"], json!(["accounts.view"]));

    client.post("/session/logout", &json!({})).expect(204);
    client.get("/session").expect(401);
    let mut again = client.fresh();
    again.login("BOSS@acme.test", GOOD_PASSWORD).expect(200);
    again.get("/session").expect(200);
}

#[test]
fn changing_the_password_ends_every_other_session_and_token_and_renews_this_one() {
    let server = Server::start();
    let (client, _, _) = first_administrator(&server, "Acme", "boss@acme.test");
    let mut other = client.fresh();
    other.login("boss@acme.test", GOOD_PASSWORD).expect(200);
    let token = client
        .post(
            "/tokens",
            &json!({"name": "t", "permissions": ["audit.view"]}),
        )
        .expect(201)
        .body["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let scripted = client.with_token(&token);
    scripted.get("/session").expect(200);

    let wrong = client.post(
        "/session/password",
        &json!({"current_password": "not it at all, sorry", "new_password": "another fine passphrase 7"}),
    );
    assert_eq!(wrong.status, 401, "{}", wrong.text);
    other.get("/session").expect(200);

    let mut client = client;
    let changed = client
        .post(
            "/session/password",
            &json!({"current_password": GOOD_PASSWORD, "new_password": "another fine passphrase 7"}),
        )
        .expect(200);
    client.csrf = changed.body["csrf_token"].as_str().map(str::to_owned);
    client.get("/session").expect(200);
    other.get("/session").expect(401);
    scripted.get("/session").expect(401);
    let mut again = client.fresh();
    again.login("boss@acme.test", GOOD_PASSWORD).expect(401);
    again
        .login("boss@acme.test", "another fine passphrase 7")
        .expect(200);
}

#[test]
fn forgot_password_requests_are_limited_per_email_alike_for_known_and_unknown_ones() {
    let server = Server::start();
    let (client, _, _) = first_administrator(&server, "Acme", "boss@acme.test");
    let anonymous = client.fresh();
    for email in ["boss@acme.test", "nobody@acme.test"] {
        for _ in 0..5 {
            anonymous
                .post("/session/forgot", &json!({ "email": email }))
                .expect(202);
        }
        let refused = anonymous
            .post("/session/forgot", &json!({ "email": email }))
            .expect(429);
        let retry: u64 = refused.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=3600).contains(&retry), "{retry}");
        assert!(refused.text.contains("password reset"), "{}", refused.text);
    }
}
