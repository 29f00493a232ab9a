//! The admin API's users and groups over loopback, against the real server: invitations
//! by mail, resending and expiry, groups that limit what a user sees, the grant rules, the
//! last administrator, disabling, and the one 404 for everything outside a subtree.

use contera_e2e::admin::{
    accept_token_in, first_administrator, mailed_token, outbox_texts, sqlite, AdminClient, Answer,
    GOOD_PASSWORD,
};
use contera_e2e::Server;
use serde_json::{json, Value};

/// Ids no account, user or group has.
const UNKNOWN_IDS: [&str; 2] = [
    "00000000-0000-4000-8000-000000000000",
    "3f9c2a51-7d1e-4b8a-9c60-1e2d3c4b5a69",
];

/// Invites `email` into `account` through the API (in `group_id`, or Administrators),
/// accepts the link from the mail, and returns the new user's logged-in client and id.
fn invite_and_accept(
    server: &Server,
    inviter: &AdminClient,
    account: &str,
    email: &str,
    group_id: Option<&str>,
) -> (AdminClient, String) {
    let mut body = json!({ "email": email, "name": format!("User {email}") });
    if let Some(group) = group_id {
        body["group_id"] = json!(group);
    }
    let invited = inviter
        .post(&format!("/accounts/{account}/users"), &body)
        .expect(201);
    assert_eq!(
        invited.body["invitation_sent"],
        json!(true),
        "{}",
        invited.text
    );
    let user_id = invited.body["user"]["id"].as_str().unwrap().to_owned();
    let mut client = inviter.fresh();
    client
        .accept(&mailed_token(server, email), GOOD_PASSWORD)
        .expect(200);
    (client, user_id)
}

fn create_group(client: &AdminClient, account: &str, name: &str, permissions: &[&str]) -> String {
    let made = client
        .post(
            &format!("/accounts/{account}/groups"),
            &json!({ "name": name, "permissions": permissions }),
        )
        .expect(201);
    made.body["id"].as_str().unwrap().to_owned()
}

fn group_id(client: &AdminClient, account: &str, name: &str) -> String {
    let groups = client
        .get(&format!("/accounts/{account}/groups"))
        .expect(200);
    groups.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == name)
        .and_then(|g| g["id"].as_str())
        .unwrap_or_else(|| panic!("no group {name}: {}", groups.text))
        .to_owned()
}

fn emails(page: &Answer) -> Vec<String> {
    page.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["email"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn an_invited_user_gets_the_mail_accepts_it_and_logs_in() {
    let server = Server::start();
    let (admin, account, _) = first_administrator(&server, "Acme Partner", "boss@acme.test");
    let invited = admin
        .post(
            &format!("/accounts/{account}/users"),
            &json!({ "email": "Jo@Acme.test", "name": "Jo Example" }),
        )
        .expect(201);
    assert_eq!(invited.body["invitation_sent"], json!(true));
    assert_eq!(invited.body["user"]["status"], json!("invited"));
    assert_eq!(invited.body["user"]["groups"], json!(["Administrators"]));
    assert!(invited.body["invitation_expires_at"].as_i64().is_some());

    let mails = outbox_texts(&server, "Jo@Acme.test");
    assert_eq!(mails.len(), 1, "{mails:?}");
    let mail = &mails[0];
    assert!(mail.contains("Hello Jo Example"), "{mail}");
    assert!(
        mail.contains("First Admin invited you to the account \"Acme Partner\""),
        "{mail}"
    );
    let token = accept_token_in(mail);
    assert_eq!(token.len(), 64);
    assert!(
        // The link opens the console's accept page.
        mail.contains(&format!(
            "https://127.0.0.1:{}/invitations/accept#token={token}",
            server.console_port
        )),
        "{mail}"
    );
    assert!(
        !invited.text.contains(&token),
        "the answer never holds the token"
    );

    let mut jo = admin.fresh();
    let accepted = jo.accept(&token, GOOD_PASSWORD).expect(200);
    assert_eq!(accepted.body["user"]["status"], json!("active"));
    let mut again = admin.fresh();
    again.login("jo@acme.test", GOOD_PASSWORD).expect(200);
    let me = again.get("/session").expect(200);
    assert_eq!(me.body["user"]["name"], json!("Jo Example"));

    // The email is taken now, in any case.
    let taken = admin
        .post(
            &format!("/accounts/{account}/users"),
            &json!({ "email": "JO@acme.test", "name": "Another Jo" }),
        )
        .expect(409);
    assert!(taken.text.contains("email"), "{}", taken.text);
    let bad = admin
        .post(
            &format!("/accounts/{account}/users"),
            &json!({ "email": "not-an-email", "name": "X" }),
        )
        .expect(400);
    assert!(bad.text.contains("email"), "{}", bad.text);

    // Listed by email, with status and groups, one page at a time.
    admin
        .post(
            &format!("/accounts/{account}/users"),
            &json!({ "email": "al@acme.test", "name": "Al" }),
        )
        .expect(201);
    let first = admin
        .get(&format!("/accounts/{account}/users?limit=2"))
        .expect(200);
    assert_eq!(emails(&first), ["al@acme.test", "boss@acme.test"]);
    assert_eq!(first.body["items"][0]["status"], json!("invited"));
    assert_eq!(first.body["items"][1]["status"], json!("active"));
    let cursor = first.body["next_cursor"].as_str().expect("a next page");
    let second = admin
        .get(&format!(
            "/accounts/{account}/users?limit=2&cursor={cursor}"
        ))
        .expect(200);
    assert_eq!(emails(&second), ["Jo@Acme.test"]);
    assert_eq!(second.body["items"][0]["groups"], json!(["Administrators"]));
    assert!(second.body.get("next_cursor").is_none());
}

#[test]
fn a_resent_invitation_replaces_the_old_link_and_an_expired_link_fails() {
    let server = Server::start();
    let (admin, account, _) = first_administrator(&server, "Acme", "boss@acme.test");
    let invited = admin
        .post(
            &format!("/accounts/{account}/users"),
            &json!({ "email": "jo@acme.test", "name": "Jo" }),
        )
        .expect(201);
    let jo = invited.body["user"]["id"].as_str().unwrap().to_owned();
    let old = mailed_token(&server, "jo@acme.test");

    let resent = admin
        .post(&format!("/users/{jo}/resend"), &json!({}))
        .expect(200);
    assert_eq!(resent.body["invitation_sent"], json!(true));
    // Two mails now; the new link is the one that is not the old (file times are too
    // coarse to order two mails written within milliseconds).
    let tokens: Vec<String> = outbox_texts(&server, "jo@acme.test")
        .iter()
        .map(|text| accept_token_in(text))
        .collect();
    assert_eq!(tokens.len(), 2);
    let new = tokens.into_iter().find(|t| *t != old).expect("a new token");
    assert!(
        !resent.text.contains(&new),
        "the answer never holds the token"
    );

    let mut client = admin.fresh();
    let refused = client.accept(&old, GOOD_PASSWORD).expect(404);
    assert_eq!(refused.error_code(), "not_found");
    client.accept(&new, GOOD_PASSWORD).expect(200);
    let again = admin
        .post(&format!("/users/{jo}/resend"), &json!({}))
        .expect(409);
    assert!(again.text.contains("accepted"), "{}", again.text);

    // An invitation past its 72 hours, as the clock would make it.
    let invited = admin
        .post(
            &format!("/accounts/{account}/users"),
            &json!({ "email": "late@acme.test", "name": "Late" }),
        )
        .expect(201);
    let late = invited.body["user"]["id"].as_str().unwrap();
    let token = mailed_token(&server, "late@acme.test");
    sqlite(
        &server,
        &format!(
            "UPDATE invitations SET expires_at = strftime('%s','now') - 1 WHERE user_id = '{late}'"
        ),
    );
    client.fresh().accept(&token, GOOD_PASSWORD).expect(404);
    let user = admin.get(&format!("/users/{late}")).expect(200);
    assert_eq!(user.body["status"], json!("invited"));
}

#[test]
fn a_limited_group_sees_403_in_its_own_account_and_404_elsewhere() {
    let server = Server::start();
    let (admin, account, admin_id) = first_administrator(&server, "Acme", "boss@acme.test");
    let (other_admin, other, other_id) = first_administrator(&server, "Other", "boss@other.test");
    let viewers = create_group(&admin, &account, "Viewers", &["recorders.view"]);
    let listed = admin
        .get(&format!("/accounts/{account}/groups"))
        .expect(200);
    let groups = listed.body["items"].as_array().unwrap();
    assert_eq!(groups.len(), 2);
    assert_eq!(groups[1]["name"], json!("Viewers"));
    assert_eq!(groups[1]["permissions"], json!(["recorders.view"]));
    assert_eq!(groups[1]["members"], json!(0));

    let (viewer, viewer_id) =
        invite_and_accept(&server, &admin, &account, "v@acme.test", Some(&viewers));
    let me = viewer.get("/session").expect(200);
    assert_eq!(me.body["permissions"], json!(["recorders.view"]));
    let members = admin.get(&format!("/groups/{viewers}/members")).expect(200);
    assert_eq!(emails(&members), ["v@acme.test"]);

    let own = [
        viewer.get(&format!("/accounts/{account}/users")),
        viewer.get(&format!("/accounts/{account}/groups")),
        viewer.get(&format!("/users/{admin_id}")),
        viewer.get(&format!("/users/{viewer_id}")),
        viewer.get(&format!("/groups/{viewers}/members")),
        viewer.post(
            &format!("/accounts/{account}/users"),
            &json!({"email": "x@acme.test", "name": "X", "group_id": viewers}),
        ),
        viewer.post(
            &format!("/accounts/{account}/groups"),
            &json!({"name": "Mine", "permissions": []}),
        ),
        viewer.post(&format!("/users/{admin_id}/disable"), &json!({})),
        viewer.patch(&format!("/users/{viewer_id}"), &json!({"name": "Me"})),
        viewer.delete(&format!("/groups/{viewers}")),
    ];
    for answer in own {
        assert_eq!(answer.status, 403, "{}", answer.text);
        assert_eq!(answer.error_code(), "forbidden");
    }
    let admins = group_id(&other_admin, &other, "Administrators");
    let elsewhere = [
        viewer.get(&format!("/accounts/{other}/users")),
        viewer.get(&format!("/accounts/{other}/groups")),
        viewer.get(&format!("/users/{other_id}")),
        viewer.get(&format!("/groups/{admins}/members")),
    ];
    for answer in elsewhere {
        assert_eq!(answer.status, 404, "{}", answer.text);
    }
    // The account's admin sees them all.
    admin.get(&format!("/users/{viewer_id}")).expect(200);
}

#[test]
fn a_user_manager_cannot_grant_or_place_beyond_their_own_permissions() {
    let server = Server::start();
    let (admin, account, _) = first_administrator(&server, "Acme", "boss@acme.test");
    let all_but_codes_manage = [
        "accounts.view",
        "accounts.manage",
        "users.view",
        "users.manage",
        "groups.manage",
        "codes.view",
        "recorders.view",
        "recorders.manage",
        "audit.view",
    ];
    let managers = create_group(&admin, &account, "Managers", &all_but_codes_manage);
    let viewers = create_group(&admin, &account, "Viewers", &["recorders.view"]);
    let (manager, _) = invite_and_accept(&server, &admin, &account, "m@acme.test", Some(&managers));

    let refused = manager
        .post(
            &format!("/accounts/{account}/groups"),
            &json!({"name": "Coders", "permissions": ["codes.view", "codes.manage"]}),
        )
        .expect(403);
    assert_eq!(refused.error_code(), "forbidden");
    manager
        .put(
            &format!("/groups/{viewers}/permissions"),
            &json!({"permissions": ["recorders.view", "codes.manage"]}),
        )
        .expect(403);
    // Into Administrators (every permission): neither by default nor by id.
    manager
        .post(
            &format!("/accounts/{account}/users"),
            &json!({"email": "a@acme.test", "name": "A"}),
        )
        .expect(403);
    let administrators = group_id(&admin, &account, "Administrators");
    manager
        .post(
            &format!("/accounts/{account}/users"),
            &json!({"email": "a@acme.test", "name": "A", "group_id": administrators}),
        )
        .expect(403);
    let users = admin.get(&format!("/accounts/{account}/users")).expect(200);
    assert!(
        !emails(&users).contains(&"a@acme.test".to_owned()),
        "a refused invitation stores nobody"
    );

    // Within their own permissions, all of it works.
    let made = manager
        .post(
            &format!("/accounts/{account}/groups"),
            &json!({"name": "Operators", "permissions": ["recorders.view", "recorders.manage"]}),
        )
        .expect(201);
    assert_eq!(
        made.body["permissions"],
        json!(["recorders.view", "recorders.manage"])
    );
    let invited = manager
        .post(
            &format!("/accounts/{account}/users"),
            &json!({"email": "v@acme.test", "name": "V", "group_id": viewers}),
        )
        .expect(201);
    let v = invited.body["user"]["id"].as_str().unwrap();
    // Moving that user up into Administrators is placing them there too.
    manager
        .put(
            &format!("/users/{v}/groups"),
            &json!({"group_ids": [administrators]}),
        )
        .expect(403);
    let moved = manager
        .put(
            &format!("/users/{v}/groups"),
            &json!({"group_ids": [viewers, made.body["id"]]}),
        )
        .expect(200);
    assert_eq!(moved.body["groups"], json!(["Operators", "Viewers"]));
}

#[test]
fn disabling_a_user_ends_their_session_and_api_token_at_once() {
    let server = Server::start();
    let (admin, account, _) = first_administrator(&server, "Acme", "boss@acme.test");
    let (second, second_id) = invite_and_accept(&server, &admin, &account, "b@acme.test", None);
    let made = second
        .post(
            "/tokens",
            &json!({"name": "script", "permissions": ["users.view"]}),
        )
        .expect(201);
    let script = second.with_token(made.body["secret"].as_str().unwrap());
    second.get("/session").expect(200);
    script
        .get(&format!("/accounts/{account}/users"))
        .expect(200);

    let disabled = admin
        .post(&format!("/users/{second_id}/disable"), &json!({}))
        .expect(200);
    assert_eq!(disabled.body["status"], json!("disabled"));
    second.get("/session").expect(401);
    script
        .get(&format!("/accounts/{account}/users"))
        .expect(401);
    second
        .fresh()
        .login("b@acme.test", GOOD_PASSWORD)
        .expect(401);

    let enabled = admin
        .post(&format!("/users/{second_id}/enable"), &json!({}))
        .expect(200);
    assert_eq!(enabled.body["status"], json!("active"));
    second
        .fresh()
        .login("b@acme.test", GOOD_PASSWORD)
        .expect(200);
    script
        .get(&format!("/accounts/{account}/users"))
        .expect(401);

    // An invited user is neither active nor disabled.
    let invited = admin
        .post(
            &format!("/accounts/{account}/users"),
            &json!({"email": "c@acme.test", "name": "C"}),
        )
        .expect(201);
    let c = invited.body["user"]["id"].as_str().unwrap();
    admin
        .post(&format!("/users/{c}/disable"), &json!({}))
        .expect(409);

    let audit = admin.get("/audit?action=user.disabled").expect(200);
    let entry = &audit.body["items"][0];
    assert_eq!(entry["actor"], json!(format!("user:{}", user_id(&admin))));
    assert_eq!(entry["source"], json!("127.0.0.1"));
}

fn user_id(client: &AdminClient) -> String {
    client.get("/session").expect(200).body["user"]["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn the_last_administrator_cannot_be_disabled_nor_moved_out_of_administrators() {
    let server = Server::start();
    let (admin, account, admin_id) = first_administrator(&server, "Acme", "boss@acme.test");
    let viewers = create_group(&admin, &account, "Viewers", &["recorders.view"]);
    let administrators = group_id(&admin, &account, "Administrators");
    // An invited administrator does not count: they cannot act yet.
    admin
        .post(
            &format!("/accounts/{account}/users"),
            &json!({"email": "later@acme.test", "name": "Later"}),
        )
        .expect(201);

    let refused = admin
        .post(&format!("/users/{admin_id}/disable"), &json!({}))
        .expect(409);
    assert_eq!(refused.error_code(), "conflict");
    assert!(
        refused.text.contains("users.manage") && refused.text.contains("groups.manage"),
        "says what to do: {}",
        refused.text
    );
    admin
        .put(
            &format!("/users/{admin_id}/groups"),
            &json!({"group_ids": [viewers]}),
        )
        .expect(409);
    admin
        .put(
            &format!("/groups/{administrators}/permissions"),
            &json!({"permissions": ["recorders.view"]}),
        )
        .expect(409);
    let me = admin.get("/session").expect(200);
    assert_eq!(me.body["user"]["groups"], json!(["Administrators"]));
    assert_eq!(me.body["permissions"].as_array().unwrap().len(), 10);

    // With a second active administrator, the first can step down.
    invite_and_accept(&server, &admin, &account, "second@acme.test", None);
    let moved = admin
        .put(
            &format!("/users/{admin_id}/groups"),
            &json!({"group_ids": [viewers]}),
        )
        .expect(200);
    assert_eq!(moved.body["groups"], json!(["Viewers"]));
}

#[test]
fn groups_are_deleted_only_when_empty_and_never_administrators() {
    let server = Server::start();
    let (admin, account, _) = first_administrator(&server, "Acme", "boss@acme.test");
    let viewers = create_group(&admin, &account, "Viewers", &["recorders.view"]);
    let administrators = group_id(&admin, &account, "Administrators");
    admin
        .post(
            &format!("/accounts/{account}/groups"),
            &json!({"name": "Viewers", "permissions": []}),
        )
        .expect(409);
    admin
        .post(
            &format!("/accounts/{account}/groups"),
            &json!({"name": "Bad", "permissions": ["users.delete"]}),
        )
        .expect(400);
    let invited = admin
        .post(
            &format!("/accounts/{account}/users"),
            &json!({"email": "v@acme.test", "name": "V", "group_id": viewers}),
        )
        .expect(201);
    let v = invited.body["user"]["id"].as_str().unwrap();

    let refused = admin.delete(&format!("/groups/{viewers}")).expect(409);
    assert!(refused.text.contains("member"), "{}", refused.text);
    admin
        .delete(&format!("/groups/{administrators}"))
        .expect(409);
    admin
        .put(&format!("/users/{v}/groups"), &json!({"group_ids": []}))
        .expect(400);
    admin
        .put(
            &format!("/users/{v}/groups"),
            &json!({"group_ids": [administrators]}),
        )
        .expect(200);
    admin.delete(&format!("/groups/{viewers}")).expect(204);
    admin.get(&format!("/groups/{viewers}/members")).expect(404);

    let renamed = admin
        .patch(&format!("/users/{v}"), &json!({"name": "Vera"}))
        .expect(200);
    assert_eq!(renamed.body["name"], json!("Vera"));
    let actions: Vec<Value> = admin.get("/audit?limit=20").expect(200).body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].clone())
        .collect();
    for action in ["user.updated", "group.deleted", "user.groups_set"] {
        assert!(actions.contains(&json!(action)), "{action} in {actions:?}");
    }
}

#[test]
fn a_sibling_accounts_admin_gets_byte_identical_404s() {
    let server = Server::start();
    let (parent_admin, parent, _) = first_administrator(&server, "Parent", "boss@parent.test");
    let (home, _) = server.create_account("Home", "customer", Some(&parent));
    let (sibling, _) = server.create_account("Sibling", "customer", Some(&parent));
    let (home_admin, home_user) =
        invite_and_accept(&server, &parent_admin, &home, "boss@home.test", None);
    let (outsider, _) =
        invite_and_accept(&server, &parent_admin, &sibling, "boss@sibling.test", None);
    let group = create_group(&home_admin, &home, "Viewers", &["recorders.view"]);

    // Every route, with an id of the home account and with ids nobody has.
    let probes = |client: &AdminClient, account: &str, user: &str, group: &str| {
        vec![
            client.get(&format!("/accounts/{account}/users")),
            client.post(
                &format!("/accounts/{account}/users"),
                &json!({"email": "new@home.test", "name": "New"}),
            ),
            client.get(&format!("/accounts/{account}/groups")),
            client.post(
                &format!("/accounts/{account}/groups"),
                &json!({"name": "G", "permissions": []}),
            ),
            client.get(&format!("/users/{user}")),
            client.patch(&format!("/users/{user}"), &json!({"name": "N"})),
            client.post(&format!("/users/{user}/resend"), &json!({})),
            client.post(&format!("/users/{user}/disable"), &json!({})),
            client.post(&format!("/users/{user}/enable"), &json!({})),
            client.put(
                &format!("/users/{user}/groups"),
                &json!({"group_ids": [group]}),
            ),
            client.get(&format!("/groups/{group}/members")),
            client.put(
                &format!("/groups/{group}/permissions"),
                &json!({"permissions": []}),
            ),
            client.delete(&format!("/groups/{group}")),
        ]
    };
    let reference = probes(&outsider, &home, &home_user, &group);
    for unknown in UNKNOWN_IDS {
        let answers = probes(&outsider, unknown, unknown, unknown);
        for (known, unknown) in reference.iter().zip(&answers) {
            assert_eq!(known.status, 404, "{}", known.text);
            assert_eq!(
                known.text, unknown.text,
                "a home id and an unknown id answer the same"
            );
        }
    }
    assert!(reference.windows(2).all(|w| w[0].text == w[1].text));

    // Nothing was changed, and the parent still sees the home account.
    let user = parent_admin.get(&format!("/users/{home_user}")).expect(200);
    assert_eq!(user.body["status"], json!("active"));
    assert_eq!(user.body["name"], json!("User boss@home.test"));
    let members = parent_admin
        .get(&format!("/groups/{group}/members"))
        .expect(200);
    assert_eq!(members.body["items"], json!([]));
    // And the sibling's admin does see their own account.
    outsider
        .get(&format!("/accounts/{sibling}/users"))
        .expect(200);
}

#[test]
fn an_invitation_whose_mail_fails_stands_and_says_to_resend() {
    // A relay on a loopback port nobody listens on: every delivery fails at once.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = format!(
        "[mail.smtp]\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\ntimeout_secs = 5\n"
    );
    let server = Server::start_configured(1, &config, &[]);
    let (admin, account, _) = first_administrator(&server, "Acme", "boss@acme.test");
    let invited = admin
        .post(
            &format!("/accounts/{account}/users"),
            &json!({ "email": "jo@acme.test", "name": "Jo" }),
        )
        .expect(201);
    assert_eq!(invited.body["invitation_sent"], json!(false));
    let jo = invited.body["user"]["id"].as_str().unwrap();
    let message = invited.body["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("/users/{jo}/resend")),
        "{message}"
    );
    assert!(outbox_texts(&server, "jo@acme.test").is_empty());
    let user = admin.get(&format!("/users/{jo}")).expect(200);
    assert_eq!(user.body["status"], json!("invited"));
    let resent = admin
        .post(&format!("/users/{jo}/resend"), &json!({}))
        .expect(200);
    assert_eq!(resent.body["invitation_sent"], json!(false));
}
