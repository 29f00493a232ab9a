//! The admin API's accounts and registration codes over loopback, against the real server:
//! a partner administrator builds a tree of accounts whose first administrators are invited
//! by mail, walks, searches and pages it, changes and disables accounts (enrollment
//! follows), and makes, shows, limits, rotates and disables codes (enrollment follows
//! again). Outside one's subtree every id answers like one that does not exist.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use contera_e2e::admin::{
    first_administrator, link_token, outbox, outbox_mail_to, AdminClient, Answer, GOOD_PASSWORD,
};
use contera_e2e::*;
use serde_json::{json, Value};

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Creates an account through the API; panics unless 201.
fn create(
    client: &AdminClient,
    kind: &str,
    name: &str,
    parent: Option<&str>,
    first_email: &str,
) -> Value {
    let mut body = json!({
        "kind": kind,
        "name": name,
        "address": "",
        "first_user": { "name": format!("Admin of {name}"), "email": first_email },
    });
    if let Some(parent) = parent {
        body["parent_id"] = json!(parent);
    }
    client.post("/accounts", &body).expect(201).body
}

fn id(account: &Value) -> String {
    account["account"]["id"].as_str().unwrap().to_owned()
}

/// The whole code of an account just created (the creator holds codes.view).
fn first_code(account: &Value) -> String {
    account["registration_code"]["registration_code"]
        .as_str()
        .unwrap_or_else(|| panic!("no code in {account}"))
        .to_owned()
}

/// The invited user accepts with the token from their invitation mail and is logged in.
fn accept_mailed_invitation(server: &Server, email: &str) -> AdminClient {
    let mail = outbox_mail_to(server, email);
    let token = link_token(&mail.plain).expect("accept link in the mail");
    let mut client = AdminClient::new(server);
    client.accept(&token, GOOD_PASSWORD).expect(200);
    client
}

/// Every item of a paged list, following `next_cursor`; also returns how many pages.
fn all_pages(client: &AdminClient, path: &str) -> (Vec<Value>, usize) {
    let mut items = Vec::new();
    let mut pages = 0;
    let mut cursor: Option<String> = None;
    loop {
        let sep = if path.contains('?') { '&' } else { '?' };
        let url = match &cursor {
            Some(c) => format!("{path}{sep}cursor={c}"),
            None => path.to_owned(),
        };
        let page = client.get(&url).expect(200).body;
        pages += 1;
        items.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return (items, pages),
        }
    }
}

fn names(items: &[Value]) -> Vec<&str> {
    items.iter().map(|i| i["name"].as_str().unwrap()).collect()
}

/// An enrollment with a fresh key and `code`: the HTTP status and the error code, if any.
fn try_enroll(server: &Server, code: &str, serial: &str, dir: &Path) -> (u16, String) {
    let (_, csr) = openssl_key_and_csr(dir, serial);
    let (status, body) = curl_post(
        server,
        "/api/v1/enroll",
        &enroll_body(code, &csr, serial),
        None,
    )
    .unwrap();
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    (
        status,
        v["error"]["code"].as_str().unwrap_or_default().to_owned(),
    )
}

fn public_id(code: &str) -> &str {
    &code[..4]
}

#[test]
fn a_partner_creates_accounts_whose_invited_administrators_see_only_their_subtree() {
    let server = Server::start();
    let (boss, acme, boss_id) = first_administrator(&server, "Acme", "boss@acme.test");

    let west = boss
        .post(
            "/accounts",
            &json!({
                "kind": "partner",
                "name": "Acme West",
                "address": "1 Main St\r\nSpringfield",
                "contact": "Jo, 555 0100",
                "first_user": { "name": "Wes", "email": "wes@west.test" },
            }),
        )
        .expect(201);
    assert_eq!(west.header("cache-control"), Some("no-store"));
    let account = &west.body["account"];
    assert_eq!(account["parent_id"], json!(acme));
    assert_eq!(account["kind"], "partner");
    assert_eq!(account["address"], "1 Main St\nSpringfield");
    assert_eq!(account["depth"], 1);
    assert_eq!(account["path"], json!(["Acme", "Acme West"]));
    assert_eq!(account["children"], json!([]));
    assert_eq!(west.body["invitation_sent"], true, "{}", west.text);
    let user = &west.body["first_user"];
    assert_eq!(
        (&user["status"], &user["groups"], &user["account_id"]),
        (
            &json!("invited"),
            &json!(["Administrators"]),
            &account["id"]
        )
    );
    let code = &west.body["registration_code"];
    assert_eq!(code["label"], "Initial code");
    assert_eq!(code["state"], "active");
    assert_eq!(code["created_by"], json!(format!("user:{boss_id}")));
    assert_eq!(
        code["public_id"].as_str(),
        Some(public_id(code["registration_code"].as_str().unwrap()))
    );
    let west_id = id(&west.body);

    let store = create(
        &boss,
        "customer",
        "Store 12",
        Some(&west_id),
        "cust@store12.test",
    );
    assert_eq!(
        store["account"]["path"],
        json!(["Acme", "Acme West", "Store 12"])
    );
    assert_eq!(store["account"]["depth"], 2);
    let store_id = id(&store);

    // The invitation: both parts name the account, the inviter and the accept link, whose
    // token no API answer holds.
    let mail = outbox_mail_to(&server, "cust@store12.test");
    assert_eq!(mail.subject, "Account Invitation");
    // Links open the console's accept page.
    let link_start = format!(
        "https://127.0.0.1:{}/invitations/accept#token=",
        server.console_port
    );
    let token = link_token(&mail.plain).expect("link in the plain part");
    assert_eq!(token.len(), 64);
    let link = format!("{link_start}{token}");
    for part in [&mail.plain, &mail.html] {
        for expected in ["Store 12", "First Admin", &link] {
            assert!(part.contains(expected), "{expected:?} missing in {part}");
        }
    }
    assert!(!west.text.contains(&token));
    let wes_token = link_token(&outbox_mail_to(&server, "wes@west.test").plain).unwrap();
    assert!(!west.text.contains(&wes_token));

    // The customer's administrator sees their account and nothing above it.
    let cust = accept_mailed_invitation(&server, "cust@store12.test");
    let me = cust.get("/session").expect(200).body;
    assert_eq!(me["account"]["id"], json!(store_id));
    let (items, _) = all_pages(&cust, "/accounts");
    assert_eq!(names(&items), ["Store 12"]);
    assert_eq!(items[0]["depth"], 0);
    assert_eq!(items[0]["path"], json!(["Store 12"]));
    let unknown = cust
        .get("/accounts/00000000-0000-4000-8000-000000000000")
        .expect(404);
    for above in [&acme, &west_id] {
        let answer = cust.get(&format!("/accounts/{above}")).expect(404);
        assert_eq!(answer.text, unknown.text);
    }
    // And the partner's administrator sees the whole tree below Acme West only.
    let wes = accept_mailed_invitation(&server, "wes@west.test");
    let (items, _) = all_pages(&wes, "/accounts");
    assert_eq!(names(&items), ["Acme West", "Store 12"]);
    assert_eq!(items[1]["path"], json!(["Acme West", "Store 12"]));

    // Who created them, and from where, is in the audit log.
    let audit = boss
        .get(&format!(
            "/audit?action=account.created&actor=user:{boss_id}"
        ))
        .expect(200)
        .body;
    let created: Vec<&Value> = audit["items"].as_array().unwrap().iter().collect();
    assert_eq!(created.len(), 2, "{audit}");
    for entry in created {
        assert_eq!(entry["actor"], json!(format!("user:{boss_id}")));
        assert_eq!(entry["source"], "127.0.0.1");
    }
}

#[test]
fn the_tree_is_listed_in_path_order_with_recorder_counts_searched_and_paged() {
    let server = Server::start();
    let (boss, acme, _) = first_administrator(&server, "Acme", "boss@acme.test");
    let alpha = create(&boss, "customer", "alpha store", None, "a@x.test");
    let beta = create(&boss, "partner", "Beta Partners", None, "b@x.test");
    let beta_id = id(&beta);
    let gamma = create(&boss, "customer", "Gamma Shop", Some(&beta_id), "g@x.test");
    let kiosk = create(&boss, "customer", "beta kiosk", Some(&beta_id), "k@x.test");
    create(&boss, "customer", "delta", Some(&acme), "d@x.test");

    let expected = [
        "Acme",
        "alpha store",
        "Beta Partners",
        "beta kiosk",
        "Gamma Shop",
        "delta",
    ];
    let (items, pages) = all_pages(&boss, "/accounts?limit=2");
    assert_eq!(names(&items), expected);
    assert_eq!(pages, 3);
    let depths: Vec<i64> = items.iter().map(|i| i["depth"].as_i64().unwrap()).collect();
    assert_eq!(depths, [0, 1, 1, 2, 2, 1]);
    assert_eq!(
        items[4]["path"],
        json!(["Acme", "Beta Partners", "Gamma Shop"])
    );
    assert_eq!(items[4]["id"], json!(id(&gamma)));

    // Search keeps each match's path; it pages like the whole list.
    let (found, pages) = all_pages(&boss, "/accounts?q=BETA&limit=1");
    assert_eq!(names(&found), ["Beta Partners", "beta kiosk"]);
    assert_eq!(pages, 2);
    assert_eq!(
        found[1]["path"],
        json!(["Acme", "Beta Partners", "beta kiosk"])
    );
    let (found, _) = all_pages(&boss, "/accounts?q=%20shop%20");
    assert_eq!(names(&found), ["Gamma Shop"]);
    let (found, _) = all_pages(&boss, "/accounts?q=nothing-like-this");
    assert!(found.is_empty());

    let detail = boss.get(&format!("/accounts/{beta_id}")).expect(200).body;
    assert_eq!(detail["children"], json!([id(&kiosk), id(&gamma)]));
    assert_eq!(detail["path"], json!(["Acme", "Beta Partners"]));
    assert_eq!(detail["parent_id"], json!(acme));

    // A recorder enrolled into alpha store counts there, and online once it reports.
    let scratch = tempfile::tempdir().unwrap();
    let recorder = enroll_with_curl(&server, &first_code(&alpha), "NVR-T-1", scratch.path());
    let alpha_path = format!("/accounts/{}", id(&alpha));
    let enrolled = boss.get(&alpha_path).expect(200).body;
    assert_eq!(
        (&enrolled["recorders_total"], &enrolled["recorders_online"]),
        (&json!(1), &json!(0))
    );
    let counted = wait_for(
        Duration::from_secs(20),
        "alpha store's recorder online",
        || {
            let (status, body) = curl_post(
                &server,
                "/api/v1/heartbeat",
                br#"{"status":{}}"#,
                Some((&recorder.cert, &recorder.key)),
            )
            .unwrap();
            assert_eq!(status, 200, "{body}");
            let a = boss.get(&alpha_path).expect(200).body;
            (a["recorders_online"] == 1).then_some(a)
        },
    );
    assert_eq!(counted["recorders_total"], 1);
    let (items, _) = all_pages(&boss, "/accounts");
    for item in &items {
        let mine = item["name"] == "alpha store";
        assert_eq!(item["recorders_total"], json!(mine as i64), "{item}");
    }

    let bad = boss.get("/accounts?cursor=zz").expect(400);
    assert_eq!(bad.error_code(), "malformed_request");
    boss.get("/accounts?limit=0").expect(400);
}

#[test]
fn accounts_are_changed_and_disabled_below_the_caller_and_enrollment_follows() {
    let server = Server::start();
    let (boss, acme, boss_id) = first_administrator(&server, "Acme", "boss@acme.test");
    let store = create(&boss, "customer", "Store 12", None, "s@x.test");
    let store_id = id(&store);
    let code = first_code(&store);
    let path = format!("/accounts/{store_id}");

    let changed = boss
        .patch(
            &path,
            &json!({"name": " Store 12 North ", "address": "2 Side St", "contact": "Ann"}),
        )
        .expect(200)
        .body;
    assert_eq!(
        (&changed["name"], &changed["address"], &changed["contact"]),
        (&json!("Store 12 North"), &json!("2 Side St"), &json!("Ann"))
    );
    assert_eq!(changed["path"], json!(["Acme", "Store 12 North"]));
    let cleared = boss
        .patch(&path, &json!({"contact": null}))
        .expect(200)
        .body;
    assert_eq!(cleared["contact"], Value::Null);
    assert_eq!(cleared["name"], "Store 12 North");
    let shown = boss.get(&path).expect(200).body;
    assert_eq!(shown["contact"], Value::Null);
    for (body, words) in [
        (json!({}), "nothing to change"),
        (
            json!({"name": "a\u{1b}[2J"}),
            "name contains control characters",
        ),
        (json!({"name": "x".repeat(201)}), "name is 201 characters"),
        (json!({"nmae": "x"}), "unknown field"),
    ] {
        let refused = boss.patch(&path, &body).expect(400);
        assert!(refused.text.contains(words), "{words}: {}", refused.text);
    }

    // One's own account is not one's to switch off (or on).
    for action in ["disable", "enable"] {
        let refused = boss
            .post(&format!("/accounts/{acme}/{action}"), &json!({}))
            .expect(409);
        assert!(
            refused.text.contains("your own account"),
            "{}",
            refused.text
        );
    }

    let scratch = tempfile::tempdir().unwrap();
    enroll_with_curl(&server, &code, "NVR-D-1", scratch.path());
    let disabled = boss
        .post(&format!("{path}/disable"), &json!({}))
        .expect(200)
        .body;
    assert_eq!(disabled["disabled_via"], json!(store_id));
    assert_eq!(disabled["disabled_by"], json!(format!("user:{boss_id}")));
    assert!(disabled["disabled_at"].is_i64());
    // Again: nothing changes.
    let again = boss
        .post(&format!("{path}/disable"), &json!({}))
        .expect(200)
        .body;
    assert_eq!(again["disabled_at"], disabled["disabled_at"]);
    assert_eq!(
        try_enroll(&server, &code, "NVR-D-2", scratch.path()),
        (403, "account_disabled".to_owned())
    );

    let enabled = boss
        .post(&format!("{path}/enable"), &json!({}))
        .expect(200)
        .body;
    assert_eq!(enabled["disabled_via"], Value::Null);
    assert_eq!(enabled["disabled_at"], Value::Null);
    assert_eq!(
        try_enroll(&server, &code, "NVR-D-3", scratch.path()),
        (200, String::new())
    );
    let actions = server.audit_actions();
    for action in ["account.updated", "account.disabled", "account.enabled"] {
        assert!(actions.iter().any(|a| a == action), "{action}: {actions:?}");
    }
}

#[test]
fn codes_are_made_shown_limited_rotated_and_disabled_and_enrollment_follows() {
    let server = Server::start();
    let (boss, _, boss_id) = first_administrator(&server, "Acme", "boss@acme.test");
    let store = create(&boss, "customer", "Store 12", None, "s@x.test");
    let store_id = id(&store);
    let codes_path = format!("/accounts/{store_id}/codes");
    let c0 = first_code(&store);
    let scratch = tempfile::tempdir().unwrap();

    // A limited code, shown once to its maker.
    let made = boss
        .post(
            &codes_path,
            &json!({"label": " Installer Bob ", "max_uses": 1, "expires_at": unix_now() + 3600}),
        )
        .expect(201);
    assert_eq!(made.header("cache-control"), Some("no-store"));
    let c1 = made.body["registration_code"].as_str().unwrap().to_owned();
    let c1_path = format!("/codes/{}", public_id(&c1));
    assert_eq!(made.body["label"], "Installer Bob");
    assert_eq!(made.body["max_uses"], 1);
    assert_eq!(made.body["uses"], 0);
    assert_eq!(made.body["state"], "active");
    assert_eq!(made.body["account_id"], json!(store_id));
    assert_eq!(made.body["created_by"], json!(format!("user:{boss_id}")));

    let first = enroll_with_curl(&server, &c1, "NVR-C-1", scratch.path());
    assert_eq!(
        try_enroll(&server, &c1, "NVR-C-2", scratch.path()),
        (403, "invalid_registration_code".to_owned())
    );
    let shown = boss.get(&c1_path).expect(200);
    assert_eq!(shown.header("cache-control"), Some("no-store"));
    assert_eq!(shown.body["registration_code"], json!(c1));
    assert_eq!(shown.body["state"], "used_up");
    assert_eq!(shown.body["uses"], 1);
    assert_eq!(shown.body["last_used_recorder"], json!(first.recorder_id));
    assert!(shown.body["last_used_at"].is_i64());
    // Lower-case ids name the same code.
    let lower = boss.get(&c1_path.to_lowercase()).expect(200);
    assert_eq!(lower.body["registration_code"], json!(c1));

    // Lifting the limit holds from the next attempt.
    let lifted = boss
        .patch(&c1_path, &json!({"max_uses": null, "label": "Bob's van"}))
        .expect(200)
        .body;
    assert_eq!(lifted["max_uses"], Value::Null);
    assert_eq!(lifted["label"], "Bob's van");
    assert_eq!(lifted["state"], "active");
    assert!(lifted.get("registration_code").is_none());
    assert_eq!(
        try_enroll(&server, &c1, "NVR-C-3", scratch.path()),
        (200, String::new())
    );
    let no_expiry = boss
        .patch(&c1_path, &json!({"expires_at": null}))
        .expect(200)
        .body;
    assert_eq!(no_expiry["expires_at"], Value::Null);
    assert_eq!(no_expiry["label"], "Bob's van");
    // Limits are checked alike when changed and when made, and nothing is made then.
    for (body, words) in [
        (json!({"max_uses": 0}), "max_uses must be at least 1"),
        (
            json!({"expires_at": unix_now() - 10}),
            "expires_at is in the past",
        ),
        (json!({"label": "x".repeat(101)}), "label is 101 characters"),
        (
            json!({"label": "a\nb"}),
            "label contains control characters",
        ),
        (json!({"lable": "x"}), "unknown field"),
    ] {
        let refused = boss.patch(&c1_path, &body).expect(400);
        assert!(refused.text.contains(words), "{words}: {}", refused.text);
        let refused = boss.post(&codes_path, &body).expect(400);
        assert!(refused.text.contains(words), "{words}: {}", refused.text);
    }
    let refused = boss.patch(&c1_path, &json!({})).expect(400);
    assert!(
        refused.text.contains("nothing to change"),
        "{}",
        refused.text
    );

    // The list: newest first, paged, without any code.
    let (listed, pages) = all_pages(&boss, &format!("{codes_path}?limit=1"));
    assert_eq!(pages, 2);
    let mut ids: Vec<&str> = listed
        .iter()
        .map(|c| c["public_id"].as_str().unwrap())
        .collect();
    ids.sort();
    let mut expected = vec![public_id(&c0), public_id(&c1)];
    expected.sort();
    assert_eq!(ids, expected);
    let times: Vec<i64> = listed
        .iter()
        .map(|c| c["created_at"].as_i64().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "{times:?}");
    let list_text = boss.get(&codes_path).expect(200).text;
    for code in [&c0, &c1] {
        assert!(!list_text.contains(&code[5..]), "a code in the list");
    }

    // Disabling one code stops it alone.
    let c0_path = format!("/codes/{}", public_id(&c0));
    let disabled = boss
        .post(&format!("{c0_path}/disable"), &json!({}))
        .expect(200)
        .body;
    assert_eq!(disabled["state"], "disabled");
    assert!(disabled["disabled_at"].is_i64());
    boss.post(&format!("{c0_path}/disable"), &json!({}))
        .expect(200);
    assert_eq!(
        try_enroll(&server, &c0, "NVR-C-4", scratch.path()),
        (403, "invalid_registration_code".to_owned())
    );
    assert_eq!(
        try_enroll(&server, &c1, "NVR-C-5", scratch.path()),
        (200, String::new())
    );

    // Rotating disables every active code and makes one new code.
    let rotated = boss
        .post(&format!("{codes_path}/rotate"), &json!({}))
        .expect(201);
    assert_eq!(rotated.header("cache-control"), Some("no-store"));
    let c2 = rotated.body["registration_code"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(rotated.body["label"], "Rotated code");
    let (listed, _) = all_pages(&boss, &codes_path);
    for code in &listed {
        let current = code["public_id"] == json!(public_id(&c2));
        let state = if current { "active" } else { "disabled" };
        assert_eq!(code["state"], state, "{code}");
    }
    assert_eq!(
        try_enroll(&server, &c1, "NVR-C-6", scratch.path()),
        (403, "invalid_registration_code".to_owned())
    );
    assert_eq!(
        try_enroll(&server, &c2, "NVR-C-7", scratch.path()),
        (200, String::new())
    );
    let account = boss.get(&format!("/accounts/{store_id}")).expect(200).body;
    assert_eq!(account["code_public_id"], json!(public_id(&c2)));
    assert_eq!(account["recorders_total"], 4);

    // Unknown codes are 404s, whatever the verb.
    let unknown = boss.get("/codes/0000").expect(404);
    assert_eq!(unknown.error_code(), "not_found");
    boss.patch("/codes/0000", &json!({"label": "x"}))
        .expect(404);
    boss.post("/codes/0000/disable", &json!({})).expect(404);

    let actions = server.audit_actions();
    for action in [
        "code.created",
        "code.shown",
        "code.updated",
        "code.disabled",
        "code.rotated",
    ] {
        assert!(actions.iter().any(|a| a == action), "{action}: {actions:?}");
    }

    // No code made through the API is anywhere in the database files.
    assert_eq!(listed.len(), 3);
    assert_codes_not_stored(&server, &[c0, c1, c2]);
}

/// Neither the whole code (with or without dashes) nor its secret part is in
/// `DATA/contera.db` or its write-ahead log.
fn assert_codes_not_stored(server: &Server, codes: &[String]) {
    let mut files = Vec::new();
    for name in ["contera.db", "contera.db-wal"] {
        if let Ok(bytes) = std::fs::read(server.data_dir().join(name)) {
            files.push((name, bytes));
        }
    }
    let stored = |needle: &str| -> Vec<&str> {
        files
            .iter()
            .filter(|(_, bytes)| bytes.windows(needle.len()).any(|w| w == needle.as_bytes()))
            .map(|(name, _)| *name)
            .collect()
    };
    for code in codes {
        // The search finds what is stored: the public id, which is no secret.
        assert!(!stored(&code[..4]).is_empty(), "{} not found", &code[..4]);
        let compact = code.replace('-', "");
        for needle in [code.as_str(), &compact, &compact[4..23]] {
            assert!(
                stored(needle).is_empty(),
                "{needle} is in {:?}",
                stored(needle)
            );
        }
    }
}

#[test]
fn outside_the_callers_subtree_every_id_answers_like_an_unknown_one() {
    let server = Server::start();
    let (boss, _, _) = first_administrator(&server, "Acme", "boss@acme.test");
    let a = create(&boss, "customer", "Store A", None, "a@x.test");
    let b = create(&boss, "customer", "Store B", None, "b@x.test");
    let a_id = id(&a);
    let a_code = public_id(&first_code(&a)).to_owned();
    let b_admin = accept_mailed_invitation(&server, "b@x.test");
    let (mine, _) = all_pages(&b_admin, "/accounts");
    assert_eq!(names(&mine), ["Store B"]);
    assert_eq!(mine[0]["id"], json!(id(&b)));

    let random_account = "3f2b8c1e-0000-4000-8000-000000000000";
    let random_code = "0000";
    let requests = |account: &str, code: &str| -> Vec<Answer> {
        vec![
            b_admin.get(&format!("/accounts/{account}")),
            b_admin.patch(&format!("/accounts/{account}"), &json!({"name": "Mine"})),
            b_admin.post(&format!("/accounts/{account}/disable"), &json!({})),
            b_admin.post(&format!("/accounts/{account}/enable"), &json!({})),
            b_admin.get(&format!("/accounts/{account}/codes")),
            b_admin.post(&format!("/accounts/{account}/codes"), &json!({})),
            b_admin.post(&format!("/accounts/{account}/codes/rotate"), &json!({})),
            b_admin.get(&format!("/codes/{code}")),
            b_admin.patch(&format!("/codes/{code}"), &json!({"label": "x"})),
            b_admin.post(&format!("/codes/{code}/disable"), &json!({})),
            b_admin.post(
                "/accounts",
                &json!({
                    "kind": "customer", "name": "Sneaky", "address": "", "parent_id": account,
                    "first_user": {"name": "S", "email": "s@sneaky.test"},
                }),
            ),
        ]
    };
    let outside = requests(&a_id, &a_code);
    let unknown = requests(random_account, random_code);
    for (o, u) in outside.iter().zip(&unknown) {
        assert_eq!(o.status, 404, "{}", o.text);
        assert_eq!(o.text, u.text);
        assert_eq!(o.text, outside[0].text);
    }
    // Nothing of Store A changed.
    let a_now = boss.get(&format!("/accounts/{a_id}")).expect(200).body;
    assert_eq!(a_now["name"], "Store A");
    assert_eq!(a_now["disabled_at"], Value::Null);
    let (codes, _) = all_pages(&boss, &format!("/accounts/{a_id}/codes"));
    assert_eq!(codes.len(), 1);
    assert_eq!(codes[0]["state"], "active");
    assert_eq!(codes[0]["label"], "Initial code");
}

#[test]
fn without_codes_view_codes_are_forbidden_and_no_account_with_an_all_powerful_first_user_is_made() {
    let server = Server::start();
    let (boss, acme, _) = first_administrator(&server, "Acme", "boss@acme.test");
    server.admin_json(&[
        "groups",
        "create",
        "--account",
        &acme,
        "--name",
        "Account managers",
        "--permission",
        "accounts.view",
        "--permission",
        "accounts.manage",
    ]);
    let invited = server.admin_json(&[
        "users",
        "invite",
        "--account",
        &acme,
        "--email",
        "manager@acme.test",
        "--name",
        "Manager",
        "--group",
        "Account managers",
    ]);
    let mut manager = AdminClient::new(&server);
    manager
        .accept(invited["token"].as_str().unwrap(), GOOD_PASSWORD)
        .expect(200);

    let acme_codes = all_pages(&boss, &format!("/accounts/{acme}/codes")).0;
    let acme_code = acme_codes[0]["public_id"].as_str().unwrap();
    for answer in [
        manager.get(&format!("/accounts/{acme}/codes")),
        manager.post(&format!("/accounts/{acme}/codes"), &json!({})),
        manager.post(&format!("/accounts/{acme}/codes/rotate"), &json!({})),
        manager.get(&format!("/codes/{acme_code}")),
        manager.patch(&format!("/codes/{acme_code}"), &json!({"label": "x"})),
        manager.post(&format!("/codes/{acme_code}/disable"), &json!({})),
    ] {
        assert_eq!(answer.status, 403, "{}", answer.text);
        assert_eq!(answer.error_code(), "forbidden");
    }
    assert_eq!(
        all_pages(&boss, &format!("/accounts/{acme}/codes")).0,
        acme_codes
    );

    // The manager may not make accounts either: the first user of a new account joins its
    // Administrators group, which holds every permission, and the manager lacks
    // codes.view, so that would hand out more than the manager holds.
    let before = all_pages(&boss, "/accounts").0.len();
    let refused = manager.post(
        "/accounts",
        &json!({
            "kind": "customer", "name": "Store 9", "address": "",
            "first_user": {"name": "Nine", "email": "nine@x.test"},
        }),
    );
    assert_eq!(refused.status, 403, "{}", refused.text);
    assert_eq!(refused.error_code(), "forbidden");
    assert_eq!(all_pages(&boss, "/accounts").0.len(), before);
    assert!(outbox(&server)
        .iter()
        .all(|m| !m.to.contains("nine@x.test")));

    // Without accounts.manage, no account is made at all.
    let view_only = server.admin_json(&[
        "groups",
        "create",
        "--account",
        &acme,
        "--name",
        "Viewers",
        "--permission",
        "accounts.view",
    ]);
    assert_eq!(view_only["name"], "Viewers");
    let invited = server.admin_json(&[
        "users",
        "invite",
        "--account",
        &acme,
        "--email",
        "viewer@acme.test",
        "--name",
        "Viewer",
        "--group",
        "Viewers",
    ]);
    let mut viewer = AdminClient::new(&server);
    viewer
        .accept(invited["token"].as_str().unwrap(), GOOD_PASSWORD)
        .expect(200);
    let refused = viewer
        .post(
            "/accounts",
            &json!({
                "kind": "customer", "name": "Store 10", "address": "",
                "first_user": {"name": "Ten", "email": "ten@x.test"},
            }),
        )
        .expect(403);
    assert_eq!(refused.error_code(), "forbidden");
    let made_id = id(&create(&boss, "customer", "Store 9", None, "nine@x.test"));
    viewer
        .post(&format!("/accounts/{made_id}/disable"), &json!({}))
        .expect(403);
    let (listed, _) = all_pages(&viewer, "/accounts");
    assert_eq!(names(&listed), ["Acme", "Store 9"]);
}

#[test]
fn a_refused_new_account_leaves_nothing_behind() {
    let server = Server::start();
    let (boss, _, _) = first_administrator(&server, "Acme", "boss@acme.test");
    let customer = create(&boss, "customer", "Store 1", None, "one@x.test");
    let before = all_pages(&boss, "/accounts").0;
    let mails_before = outbox(&server).len();
    let created_before = server
        .audit_actions()
        .iter()
        .filter(|a| *a == "account.created")
        .count();

    let attempt = |parent: Option<String>, email: &str, name: &str| -> Answer {
        let mut body = json!({
            "kind": "customer", "name": name, "address": "",
            "first_user": {"name": "Someone", "email": email},
        });
        if let Some(parent) = parent {
            body["parent_id"] = json!(parent);
        }
        boss.post("/accounts", &body)
    };
    let taken = attempt(None, "BOSS@Acme.test", "Store 2").expect(409);
    assert_eq!(taken.error_code(), "conflict");
    assert!(taken.text.contains("first_user.email"), "{}", taken.text);
    let taken = attempt(None, "one@x.test", "Store 2").expect(409);
    assert!(taken.text.contains("one@x.test"), "{}", taken.text);
    let bad = attempt(None, "not-an-email", "Store 2").expect(400);
    assert!(bad.text.contains("first_user.email"), "{}", bad.text);
    let bad = attempt(Some(id(&customer)), "new@x.test", "Store 2").expect(400);
    assert!(bad.text.contains("parent_id"), "{}", bad.text);
    assert!(bad.text.contains("partner"), "{}", bad.text);
    let bad = attempt(None, "new@x.test", " ").expect(400);
    assert!(bad.text.contains("name is empty"), "{}", bad.text);

    assert_eq!(all_pages(&boss, "/accounts").0, before);
    assert_eq!(outbox(&server).len(), mails_before);
    let created_after = server
        .audit_actions()
        .iter()
        .filter(|a| *a == "account.created")
        .count();
    assert_eq!(created_after, created_before);
    let accounts = server.admin_json(&["accounts", "list"]);
    assert_eq!(accounts.as_array().unwrap().len(), before.len());
}

#[test]
fn an_invitation_that_cannot_be_mailed_leaves_the_account_and_says_to_resend() {
    // The relay: a loopback port just freed, so every delivery is refused at once.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = format!(
        "[mail.smtp]\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\ntimeout_secs = 5\n"
    );
    let server = Server::start_configured(1, &config, &[]);
    let (boss, _, _) = first_administrator(&server, "Acme", "boss@acme.test");
    let made = boss
        .post(
            "/accounts",
            &json!({
                "kind": "customer", "name": "Store 5", "address": "",
                "first_user": {"name": "Five", "email": "five@x.test"},
            }),
        )
        .expect(201)
        .body;
    assert_eq!(made["invitation_sent"], false);
    let user_id = made["first_user"]["id"].as_str().unwrap();
    let message = made["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("/api/v1/admin/users/{user_id}/resend")),
        "{message}"
    );
    assert!(outbox(&server).is_empty());
    let (listed, _) = all_pages(&boss, "/accounts");
    assert_eq!(names(&listed), ["Acme", "Store 5"]);

    // The invited user is there to be sent a new link, which works.
    let resent = server.admin_json(&["users", "resend", "five@x.test"]);
    let mut five = AdminClient::new(&server);
    five.accept(resent["token"].as_str().unwrap(), GOOD_PASSWORD)
        .expect(200);
    let (mine, _) = all_pages(&five, "/accounts");
    assert_eq!(names(&mine), ["Store 5"]);
}
