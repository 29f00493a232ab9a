//! Recorders in the admin API over loopback, enrolled and heartbeating with curl and
//! openssl: the subtree list with its filters and pages, one recorder with its status and
//! history, renaming, moving, revoking and confirming a replacement, and the one 404 for
//! ids outside the caller's accounts.

use std::collections::BTreeSet;
use std::time::Duration;

use contera_e2e::admin::{administrator_of, first_administrator, AdminClient, Answer};
use contera_e2e::*;
use serde_json::{json, Value};

/// Room for the presence flush (1 s) on a slow machine.
const WAIT: Duration = Duration::from_secs(15);
/// Heartbeat interval of these servers: one heartbeat keeps a recorder online for three
/// intervals, far longer than any test, so "online" does not lapse mid-test.
const INTERVAL: u32 = 60;
/// An id nobody has.
const UNKNOWN: &str = "00000000-0000-4000-8000-000000000000";

/// A heartbeat with `status`, sent with the recorder's certificate; (HTTP status, body).
fn heartbeat(server: &Server, nvr: &CurlRecorder, status: Value) -> (u16, Value) {
    let body = json!({ "status": status }).to_string();
    let (code, text) = curl_post(
        server,
        "/api/v1/heartbeat",
        body.as_bytes(),
        Some((&nvr.cert, &nvr.key)),
    )
    .expect("an HTTP answer");
    (code, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn ids(items: &Value) -> Vec<String> {
    items
        .as_array()
        .expect("an array")
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}

fn set<'a>(ids: impl IntoIterator<Item = &'a String>) -> BTreeSet<String> {
    ids.into_iter().cloned().collect()
}

/// Every id of a list, walking its pages; checks each page's size and the order.
fn walk(client: &AdminClient, query: &str, limit: usize) -> (Vec<String>, usize) {
    let mut all = Vec::new();
    let mut pages = 0;
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/recorders?{query}&limit={limit}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page = client.get(&path).expect(200);
        pages += 1;
        let items = ids(&page.body["items"]);
        assert!(items.len() <= limit, "{}", page.text);
        all.extend(items);
        match page.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
        assert!(pages < 100, "the cursor does not advance");
    }
    let mut sorted = all.clone();
    sorted.sort();
    assert_eq!(all, sorted, "in id order");
    (all, pages)
}

/// The answer's status and its exact bytes, for comparing 404s.
fn exact(answer: &Answer) -> (u16, String) {
    (answer.status, answer.text.clone())
}

fn history_actions(detail: &Value) -> Vec<String> {
    detail["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn the_list_filters_by_state_and_text_and_pages_through_the_callers_subtree_only() {
    let server = Server::start_with(INTERVAL, &[]);
    let (partner_admin, partner, _) = first_administrator(&server, "Acme", "boss@acme.test");
    let (store_a, code_a) = server.create_account("Store A", "customer", Some(&partner));
    let (store_b, code_b) = server.create_account("Store B", "customer", Some(&partner));
    // Users are made before the first heartbeat: `users invite` from the CLI can meet
    // "database is locked" while the server writes heartbeats.
    let (customer_admin, _) = administrator_of(&server, &store_a, "admin@store-a.test");
    let dir = tempfile::tempdir().unwrap();
    let a: Vec<CurlRecorder> = (1..=4)
        .map(|i| enroll_with_curl(&server, &code_a, &format!("NVR-A{i}"), dir.path()))
        .collect();
    let b: Vec<CurlRecorder> = (1..=3)
        .map(|i| enroll_with_curl(&server, &code_b, &format!("NVR-B{i}"), dir.path()))
        .collect();
    let id = |r: &CurlRecorder| r.recorder_id.clone();
    for nvr in [&a[0], &a[1], &b[0]] {
        assert_eq!(heartbeat(&server, nvr, json!({})).0, 200);
    }
    partner_admin
        .post(
            &format!("/recorders/{}/revoke", a[3].recorder_id),
            &json!({}),
        )
        .expect(200);
    let online = wait_for(WAIT, "three recorders listed online", || {
        let page = partner_admin.get("/recorders?online=true").expect(200);
        let online = ids(&page.body["items"]);
        (online.len() == 3).then_some(online)
    });
    assert_eq!(set(&online), set(&[id(&a[0]), id(&a[1]), id(&b[0])]));

    // The partner's whole subtree, three to a page.
    let everyone: BTreeSet<String> = a.iter().chain(&b).map(id).collect();
    let (all, pages) = walk(&partner_admin, "only_account=false", 3);
    assert_eq!((all.len(), pages), (7, 3));
    assert_eq!(set(&all), everyone);

    let list = |client: &AdminClient, query: &str| {
        let page = client.get(&format!("/recorders?{query}")).expect(200);
        set(&ids(&page.body["items"]))
    };
    assert_eq!(
        list(&partner_admin, "online=false"),
        set(&[id(&a[2]), id(&a[3]), id(&b[1]), id(&b[2])])
    );
    assert_eq!(list(&partner_admin, "revoked=true"), set(&[id(&a[3])]));
    assert_eq!(
        list(&partner_admin, "revoked=false&online=false"),
        set(&[id(&a[2]), id(&b[1]), id(&b[2])])
    );
    assert_eq!(
        list(&partner_admin, &format!("account={store_a}&online=true")),
        set(&[id(&a[0]), id(&a[1])])
    );
    assert_eq!(list(&partner_admin, "only_account=true"), BTreeSet::new());
    assert_eq!(
        list(&partner_admin, "q=nvr-b"),
        set(&b.iter().map(id).collect::<Vec<_>>())
    );
    assert_eq!(list(&partner_admin, "q=curl-BOX").len(), 7, "by model");

    let page = partner_admin
        .get(&format!("/recorders?account={store_b}&online=true"))
        .expect(200);
    let item = &page.body["items"][0];
    assert_eq!(item["id"], json!(id(&b[0])));
    assert_eq!(item["account_name"], "Store B");
    assert_eq!(item["online"], true);
    assert!(item["last_seen"].as_i64().is_some(), "{item}");
    assert_eq!(item["flagged_replacement_of"], Value::Null);

    // A customer's administrator sees that customer's recorders and nothing else: the
    // sibling and the partner above are as unknown as an id nobody has.
    let (own, _) = walk(&customer_admin, "only_account=false", 2);
    assert_eq!(set(&own), set(&a.iter().map(id).collect::<Vec<_>>()));
    let unknown = customer_admin.get(&format!("/recorders?account={UNKNOWN}"));
    assert_eq!(unknown.status, 404);
    for outside in [&store_b, &partner] {
        let refused = customer_admin.get(&format!("/recorders?account={outside}"));
        assert_eq!(exact(&refused), exact(&unknown));
    }
    assert_eq!(
        customer_admin
            .get("/recorders?limit=0")
            .expect(400)
            .error_code(),
        "malformed_request"
    );
}

#[test]
fn a_recorder_shows_its_status_payload_online_state_certificate_and_history() {
    let server = Server::start_with(INTERVAL, &[]);
    let (admin, partner, user) = first_administrator(&server, "Acme", "boss@acme.test");
    let (_, code) = server.create_account("Store", "customer", Some(&partner));
    let dir = tempfile::tempdir().unwrap();
    let nvr = enroll_with_curl(&server, &code, "NVR-SHOW", dir.path());
    let status = json!({ "uptime_secs": 4242, "nvr": { "cameras": 8, "recording": true } });
    assert_eq!(heartbeat(&server, &nvr, status).0, 200);
    let path = format!("/recorders/{}", nvr.recorder_id);
    let shown = wait_for(WAIT, "the status to be stored", || {
        let shown = admin.get(&path).expect(200);
        (shown.body["status"]["uptime_secs"] == 4242).then_some(shown.body)
    });
    assert_eq!(
        shown["status"]["nvr"],
        json!({ "cameras": 8, "recording": true })
    );
    assert_eq!(shown["online"], true);
    assert_eq!(shown["serial"], "NVR-SHOW");
    assert_eq!(shown["account_name"], "Store");
    let expires = shown["cert_not_after"].as_i64().unwrap();
    assert!(expires > shown["enrolled_at"].as_i64().unwrap(), "{shown}");
    let actions = history_actions(&shown);
    assert!(
        actions.contains(&"recorder.enrolled".to_owned()),
        "{actions:?}"
    );
    assert!(
        actions.contains(&"certificate.issued".to_owned()),
        "{actions:?}"
    );
    let history_ids: Vec<i64> = shown["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
        .collect();
    assert!(history_ids.windows(2).all(|w| w[0] > w[1]), "newest first");

    // A later change is on top, with who did it and from where.
    admin
        .patch(&path, &json!({ "name": "Back office" }))
        .expect(200);
    let shown = admin.get(&path).expect(200).body;
    let top = &shown["history"][0];
    assert_eq!(top["action"], "recorder.renamed");
    assert_eq!(top["actor"], json!(format!("user:{user}")));
    assert_eq!(top["source"], "127.0.0.1");
    assert_eq!(admin.get(&format!("/recorders/{UNKNOWN}")).status, 404);
}

#[test]
fn renaming_sets_and_clears_the_name_which_the_list_and_the_cli_show() {
    let server = Server::start_with(INTERVAL, &[]);
    let (admin, partner, _) = first_administrator(&server, "Acme", "boss@acme.test");
    let (_, code) = server.create_account("Store", "customer", Some(&partner));
    let dir = tempfile::tempdir().unwrap();
    let nvr = enroll_with_curl(&server, &code, "NVR-NAME", dir.path());
    let path = format!("/recorders/{}", nvr.recorder_id);

    let named = admin
        .patch(&path, &json!({ "name": "  Front door " }))
        .expect(200);
    assert_eq!(named.body["name"], "Front door");
    let found = admin.get("/recorders?q=FRONT").expect(200);
    assert_eq!(ids(&found.body["items"]), vec![nvr.recorder_id.clone()]);
    let cli = server.admin_json(&["recorders", "show", &nvr.recorder_id]);
    assert_eq!(cli["name"], "Front door");
    assert_eq!(server.recorder(&nvr.recorder_id)["name"], "Front door");
    let detail = admin.get(&path).expect(200).body;
    assert_eq!(detail["history"][0]["action"], "recorder.renamed");
    let change: Value =
        serde_json::from_str(detail["history"][0]["detail"].as_str().unwrap()).unwrap();
    assert_eq!(change, json!({ "from": null, "to": "Front door" }));

    for bad in [
        json!({}),
        json!({ "name": "   " }),
        json!({ "name": "two\nlines" }),
        json!({ "name": "x".repeat(201) }),
    ] {
        let refused = admin.patch(&path, &bad).expect(400);
        assert!(refused.text.contains("name"), "{}", refused.text);
    }
    admin
        .patch(&path, &json!({ "name": "x".repeat(200) }))
        .expect(200);

    let cleared = admin.patch(&path, &json!({ "name": null })).expect(200);
    assert_eq!(cleared.body["name"], Value::Null);
    assert_eq!(
        server.admin_json(&["recorders", "show", &nvr.recorder_id])["name"],
        Value::Null
    );

    // Viewing is not managing: a token holding only recorders.view reads but cannot rename.
    let made = admin
        .post(
            "/tokens",
            &json!({ "name": "inventory", "permissions": ["recorders.view"] }),
        )
        .expect(201);
    let viewer = admin.with_token(made.body["secret"].as_str().unwrap());
    viewer.get(&path).expect(200);
    let refused = viewer.patch(&path, &json!({ "name": "Nope" })).expect(403);
    assert_eq!(refused.error_code(), "forbidden");
}

#[test]
fn a_move_to_a_sibling_customer_keeps_the_certificate_and_shows_in_history_and_lists() {
    let server = Server::start_with(INTERVAL, &[]);
    let (admin, partner, _) = first_administrator(&server, "Acme", "boss@acme.test");
    let (store_a, code_a) = server.create_account("Store A", "customer", Some(&partner));
    let (store_b, _) = server.create_account("Store B", "customer", Some(&partner));
    let (closed, _) = server.create_account("Closed", "customer", Some(&partner));
    let (other_partner, _) = server.create_account("Elsewhere", "partner", None);
    assert!(server
        .admin(&["accounts", "disable", &closed])
        .status
        .success());
    // Made before the first heartbeat, as in the list test.
    let (store_a_admin, _) = administrator_of(&server, &store_a, "admin@store-a.test");
    let dir = tempfile::tempdir().unwrap();
    let nvr = enroll_with_curl(&server, &code_a, "NVR-MOVE", dir.path());
    let (status, answer) = heartbeat(&server, &nvr, json!({}));
    assert_eq!(
        (status, answer["account"]["id"].clone()),
        (200, json!(store_a))
    );
    let moving = format!("/recorders/{}/move", nvr.recorder_id);

    let moved = admin
        .post(&moving, &json!({ "account_id": store_b }))
        .expect(200);
    assert_eq!(moved.body["account_id"], json!(store_b));
    assert_eq!(moved.body["account_name"], "Store B");
    let detail = admin
        .get(&format!("/recorders/{}", nvr.recorder_id))
        .expect(200)
        .body;
    let top = &detail["history"][0];
    assert_eq!(top["action"], "recorder.moved");
    let change: Value = serde_json::from_str(top["detail"].as_str().unwrap()).unwrap();
    assert_eq!(
        change,
        json!({ "from_account": store_a, "to_account": store_b })
    );

    // The same certificate keeps working, now for the new account.
    let (status, answer) = heartbeat(&server, &nvr, json!({}));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["account"]["id"], json!(store_b));
    let in_b = admin
        .get(&format!("/recorders?account={store_b}"))
        .expect(200);
    assert_eq!(ids(&in_b.body["items"]), vec![nvr.recorder_id.clone()]);
    let in_a = admin
        .get(&format!("/recorders?account={store_a}"))
        .expect(200);
    assert!(ids(&in_a.body["items"]).is_empty());

    // Outside the caller's subtree is the same 404 as a recorder or account nobody has.
    let unknown_recorder = admin.post(
        &format!("/recorders/{UNKNOWN}/move"),
        &json!({ "account_id": store_a }),
    );
    assert_eq!(unknown_recorder.status, 404);
    let unknown_account = admin.post(&moving, &json!({ "account_id": UNKNOWN }));
    let outside = admin.post(&moving, &json!({ "account_id": other_partner }));
    assert_eq!(exact(&unknown_account), exact(&unknown_recorder));
    assert_eq!(exact(&outside), exact(&unknown_recorder));

    let refused = admin
        .post(&moving, &json!({ "account_id": closed }))
        .expect(409);
    assert!(refused.text.contains("disabled"), "{}", refused.text);
    admin
        .post(&moving, &json!({ "account_id": store_b }))
        .expect(409);

    // Store A's own administrator no longer sees it at all.
    let gone = store_a_admin.get(&format!("/recorders/{}", nvr.recorder_id));
    assert_eq!(
        exact(&gone),
        exact(&store_a_admin.get(&format!("/recorders/{UNKNOWN}")))
    );
}

#[test]
fn a_revoked_recorders_next_heartbeat_is_refused_and_a_second_revoke_conflicts() {
    let server = Server::start_with(INTERVAL, &[]);
    let (admin, partner, _) = first_administrator(&server, "Acme", "boss@acme.test");
    let (_, code) = server.create_account("Store", "customer", Some(&partner));
    let dir = tempfile::tempdir().unwrap();
    let nvr = enroll_with_curl(&server, &code, "NVR-REVOKE", dir.path());
    assert_eq!(heartbeat(&server, &nvr, json!({})).0, 200);

    let revoking = format!("/recorders/{}/revoke", nvr.recorder_id);
    let revoked = admin.post(&revoking, &json!({})).expect(200);
    assert!(
        revoked.body["revoked_at"].as_i64().is_some(),
        "{}",
        revoked.text
    );
    assert_eq!(revoked.body["online"], false);
    let (status, answer) = heartbeat(&server, &nvr, json!({}));
    assert_eq!(
        (status, answer["error"]["code"].as_str().unwrap_or_default()),
        (410, "revoked")
    );
    admin.post(&revoking, &json!({})).expect(409);
    let detail = admin
        .get(&format!("/recorders/{}", nvr.recorder_id))
        .expect(200)
        .body;
    assert_eq!(detail["history"][0]["action"], "recorder.revoked");
    assert_eq!(server.recorder(&nvr.recorder_id)["revoked"], true);
}

#[test]
fn confirming_a_flagged_replacement_revokes_the_old_recorder_and_a_sibling_sees_neither() {
    let server = Server::start_with(INTERVAL, &[]);
    let (admin, partner, _) = first_administrator(&server, "Acme", "boss@acme.test");
    let (_, code) = server.create_account("Store A", "customer", Some(&partner));
    let (store_b, _) = server.create_account("Store B", "customer", Some(&partner));
    // The same serial with a new key: the device was reinstalled.
    let (first, second) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let old = enroll_with_curl(&server, &code, "NVR-SAME", first.path());
    let new = enroll_with_curl(&server, &code, "NVR-SAME", second.path());
    let flagged = admin
        .get(&format!("/recorders/{}", new.recorder_id))
        .expect(200)
        .body;
    assert_eq!(flagged["flagged_replacement_of"], json!(old.recorder_id));
    let listed = admin.get("/recorders?q=nvr-same").expect(200).body;
    let flags: Vec<&Value> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["flagged_replacement_of"])
        .collect();
    assert_eq!(
        flags.iter().filter(|f| f.is_string()).count(),
        1,
        "{listed}"
    );

    // The sibling's administrator gets, for both ids, what an id nobody has gets.
    let (sibling, _) = administrator_of(&server, &store_b, "admin@store-b.test");
    let attempts = |id: &str| -> Vec<(u16, String)> {
        vec![
            exact(&sibling.get(&format!("/recorders/{id}"))),
            exact(&sibling.patch(&format!("/recorders/{id}"), &json!({ "name": "x" }))),
            exact(&sibling.post(
                &format!("/recorders/{id}/move"),
                &json!({ "account_id": store_b }),
            )),
            exact(&sibling.post(&format!("/recorders/{id}/revoke"), &json!({}))),
            exact(&sibling.post(&format!("/recorders/{id}/confirm-replacement"), &json!({}))),
        ]
    };
    let unknown = attempts(UNKNOWN);
    assert!(
        unknown.iter().all(|(status, _)| *status == 404),
        "{unknown:?}"
    );
    assert_eq!(attempts(&old.recorder_id), unknown);
    assert_eq!(attempts(&new.recorder_id), unknown);

    // The old recorder is not flagged: nothing to confirm there.
    admin
        .post(
            &format!("/recorders/{}/confirm-replacement", old.recorder_id),
            &json!({}),
        )
        .expect(409);
    assert_eq!(
        heartbeat(&server, &old, json!({})).0,
        200,
        "untouched so far"
    );

    let confirming = format!("/recorders/{}/confirm-replacement", new.recorder_id);
    let confirmed = admin.post(&confirming, &json!({})).expect(200);
    assert!(confirmed.body["replacement_confirmed_at"]
        .as_i64()
        .is_some());
    assert_eq!(confirmed.body["flagged_replacement_of"], Value::Null);
    assert_eq!(confirmed.body["replaces"], json!(old.recorder_id));
    let old_now = admin
        .get(&format!("/recorders/{}", old.recorder_id))
        .expect(200)
        .body;
    assert!(old_now["revoked_at"].as_i64().is_some(), "{old_now}");
    assert_eq!(old_now["history"][0]["action"], "recorder.revoked");
    let new_now = admin
        .get(&format!("/recorders/{}", new.recorder_id))
        .expect(200)
        .body;
    assert_eq!(
        new_now["history"][0]["action"],
        "recorder.replacement_confirmed"
    );

    let (status, answer) = heartbeat(&server, &old, json!({}));
    assert_eq!(
        (status, answer["error"]["code"].clone()),
        (410, json!("revoked"))
    );
    assert_eq!(heartbeat(&server, &new, json!({})).0, 200);
    admin.post(&confirming, &json!({})).expect(409);
}

/// Enrollment flags a new key with an enrolled serial whatever account holds that serial,
/// so a flag can point into another partner's tree: confirming it must not revoke a
/// recorder the caller cannot see, and is answered like an id nobody has.
#[test]
fn a_serial_enrolled_in_another_partners_tree_is_never_flagged_nor_named() {
    let server = Server::start_with(INTERVAL, &[]);
    let (admin, partner, _) = first_administrator(&server, "Acme", "boss@acme.test");
    let (_, code) = server.create_account("Store", "customer", Some(&partner));
    let (other_partner, _) = server.create_account("Elsewhere", "partner", None);
    let (_, foreign_code) = server.create_account("Their store", "customer", Some(&other_partner));
    let (first, second) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let theirs = enroll_with_curl(&server, &foreign_code, "NVR-TWICE", first.path());
    let ours = enroll_with_curl(&server, &code, "NVR-TWICE", second.path());
    // Flagging across trees would tell this partner that another tenant has the serial,
    // and that recorder's id: neither the recorder, its history nor the audit names it.
    let shown = admin
        .get(&format!("/recorders/{}", ours.recorder_id))
        .expect(200);
    assert_eq!(shown.body["flagged_replacement_of"], Value::Null);
    assert!(!shown.text.contains(&theirs.recorder_id), "{}", shown.text);
    let audit = admin.get("/audit?limit=500").expect(200);
    assert!(!audit.text.contains(&theirs.recorder_id), "{}", audit.text);

    let refused = admin.post(
        &format!("/recorders/{}/confirm-replacement", ours.recorder_id),
        &json!({}),
    );
    assert_eq!(refused.status, 409, "{}", refused.text);
    assert_eq!(server.recorder(&theirs.recorder_id)["revoked"], false);
    assert_eq!(heartbeat(&server, &theirs, json!({})).0, 200);
}
