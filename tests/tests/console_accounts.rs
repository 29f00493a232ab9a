//! The web console's account pages over loopback, driven by `curl` with a cookie jar as a
//! browser without JavaScript would: logging in with the login form, a partner's account
//! page with its code, sub-accounts and recorders (online after a heartbeat, in the live
//! fragment too), new accounts, the code and recorder forms, CSRF refusals, the 404 of
//! anything outside the user's accounts, a user without `codes.view`, and the security
//! headers of every page.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use contera_e2e::admin::{
    administrator_of, first_administrator, mailed_token, outbox_mail_to, AdminClient, GOOD_PASSWORD,
};
use contera_e2e::*;
use serde_json::{json, Value};

/// Heartbeat interval of these servers: one heartbeat keeps a recorder online far longer
/// than any test.
const INTERVAL: u32 = 60;
/// Room for the presence flush (1 s) on a slow machine.
const WAIT: Duration = Duration::from_secs(15);
/// An id nobody has.
const UNKNOWN: &str = "00000000-0000-4000-8000-000000000000";

/// A page as the console answered it.
#[derive(Debug, Clone)]
struct Html {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Html {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Where a redirect goes (the path, without scheme and host).
    fn location(&self) -> String {
        let location = self.header("location").unwrap_or_else(|| {
            panic!("no Location in {} {:?}", self.status, self.headers);
        });
        match location.find("://") {
            Some(i) => {
                let rest = &location[i + 3..];
                rest[rest.find('/').unwrap_or(rest.len())..].to_owned()
            }
            None => location.to_owned(),
        }
    }

    #[track_caller]
    fn expect(self, status: u16) -> Html {
        assert_eq!(
            self.status, status,
            "unexpected answer {}: {}",
            self.status, self.body
        );
        self
    }

    #[track_caller]
    fn has(&self, text: &str) -> &Html {
        assert!(
            self.body.contains(text),
            "{text:?} is not on the page:\n{}",
            self.body
        );
        self
    }

    #[track_caller]
    fn lacks(&self, text: &str) -> &Html {
        assert!(
            !self.body.contains(text),
            "{text:?} is on the page:\n{}",
            self.body
        );
        self
    }

    /// The text between `start` (after it) and the next `end`.
    #[track_caller]
    fn between(&self, start: &str, end: &str) -> String {
        let from = self
            .body
            .find(start)
            .unwrap_or_else(|| panic!("{start:?} is not on the page:\n{}", self.body))
            + start.len();
        let to = self.body[from..]
            .find(end)
            .unwrap_or_else(|| panic!("no {end:?} after {start:?}"));
        self.body[from..from + to].to_owned()
    }

    /// The element from `<tag …marker…` to its closing tag (no nesting of the same tag).
    #[track_caller]
    fn element(&self, tag: &str, marker: &str) -> String {
        let at = self
            .body
            .find(marker)
            .unwrap_or_else(|| panic!("{marker:?} is not on the page:\n{}", self.body));
        let start = self.body[..at]
            .rfind(&format!("<{tag}"))
            .expect("opening tag");
        let close = format!("</{tag}>");
        let end = self.body[start..].find(&close).expect("closing tag") + start + close.len();
        self.body[start..end].to_owned()
    }

    /// The session's CSRF token, from the hidden field of the page's forms.
    fn csrf(&self) -> String {
        self.between("name=\"csrf\" value=\"", "\"")
    }
}

/// A browser without JavaScript: `curl` with its own cookie jar, not following redirects.
struct Browser {
    base: String,
    ca: PathBuf,
    jar: tempfile::TempDir,
}

impl Browser {
    fn new(server: &Server) -> Browser {
        Browser {
            base: server.console_url(),
            ca: server.ca_file(),
            jar: tempfile::tempdir().expect("cookie jar dir"),
        }
    }

    fn request(&self, path: &str, form: Option<&[(&str, &str)]>) -> Html {
        let scratch = tempfile::tempdir().expect("scratch dir");
        let head = scratch.path().join("head");
        let jar = self.jar.path().join("cookies");
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "-w", "\n%{http_code}", "--cacert"])
            .arg(&self.ca)
            .arg("-D")
            .arg(&head)
            .arg("-b")
            .arg(&jar)
            .arg("-c")
            .arg(&jar);
        if let Some(fields) = form {
            // An empty form is still a POST.
            cmd.args(["-X", "POST", "-H"])
                .arg("content-type: application/x-www-form-urlencoded");
            for (name, value) in fields {
                cmd.arg("--data-urlencode").arg(format!("{name}={value}"));
            }
        }
        let out = cmd
            .arg(format!("{}{path}", self.base))
            .output()
            .expect("curl runs");
        assert!(
            out.status.success(),
            "curl {path}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let all = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, status) = all.rsplit_once('\n').expect("status line");
        let headers = std::fs::read_to_string(&head)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        Html {
            status: status.trim().parse().expect("HTTP status"),
            headers,
            body: body.to_owned(),
        }
    }

    fn get(&self, path: &str) -> Html {
        self.request(path, None)
    }

    fn post(&self, path: &str, form: &[(&str, &str)]) -> Html {
        self.request(path, Some(form))
    }

    /// Logs in with the login form, as a browser does: its page sets the form cookie and
    /// holds the matching token.
    fn login(server: &Server, email: &str) -> Browser {
        let browser = Browser::new(server);
        let page = browser.get("/login").expect(200);
        let token = page.csrf();
        let done = browser.post(
            "/login",
            &[
                ("csrf", &token),
                ("email", email),
                ("password", GOOD_PASSWORD),
            ],
        );
        assert_eq!(done.status, 303, "login refused: {}", done.body);
        browser
    }

    /// The CSRF token of this session (from the page of its own account).
    fn csrf(&self) -> String {
        let home = self.get("/").expect(303);
        self.get(&home.location()).expect(200).csrf()
    }
}

/// A heartbeat with `status`, sent with the recorder's certificate; the HTTP status.
fn heartbeat(server: &Server, nvr: &CurlRecorder, status: Value) -> u16 {
    let body = json!({ "status": status }).to_string();
    curl_post(
        server,
        "/api/v1/heartbeat",
        body.as_bytes(),
        Some((&nvr.cert, &nvr.key)),
    )
    .expect("an HTTP answer")
    .0
}

/// Every account the client sees, by id.
fn account_ids(client: &AdminClient) -> Vec<String> {
    client.get("/accounts?limit=500").expect(200).body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_owned())
        .collect()
}

fn code_count(client: &AdminClient, account: &str) -> usize {
    client
        .get(&format!("/accounts/{account}/codes?limit=500"))
        .expect(200)
        .body["items"]
        .as_array()
        .unwrap()
        .len()
}

#[test]
fn a_partner_admins_account_page_lists_its_code_subaccounts_and_recorders_online_after_a_heartbeat()
{
    let server = Server::start_with(INTERVAL, &[]);
    let (_api, partner, _) = first_administrator(&server, "Acme", "boss@acme.test");
    let (store, store_code) = server.create_account("Store 12", "customer", Some(&partner));
    let browser = Browser::login(&server, "boss@acme.test");

    // `/` is the user's own account.
    let home = browser.get("/").expect(303);
    assert_eq!(home.location(), format!("/accounts/{partner}"));
    let page = browser.get(&home.location()).expect(200);
    page.has("<h1>Acme</h1>")
        .has("aria-label=\"Breadcrumb\"")
        .has(&format!(
            "id=\"settings\" href=\"/accounts/{partner}/users\""
        ));

    // Its code, whole, with a copy button naming the element that holds it.
    let codes = page.element("section", "id=\"codes\"");
    let public_id = page.between("<tr data-code=\"", "\"");
    assert_eq!(public_id.len(), 4, "{public_id}");
    let code_id = format!("code-{public_id}");
    let code = page.between(
        &format!("<code class=\"registration-code\" id=\"{code_id}\">"),
        "</code>",
    );
    assert!(code.starts_with(&format!("{public_id}-")), "{code}");
    assert!(
        codes.contains(&format!("data-copy=\"{code_id}\">Copy</button>")),
        "{codes}"
    );
    for form in ["id=\"new-code\"", "id=\"rotate-codes\"", "/disable\""] {
        assert!(codes.contains(form), "{form} missing: {codes}");
    }

    // Its sub-account, with a link, and the way to add another.
    let subaccounts = page.element("section", "id=\"subaccounts\"");
    assert!(
        subaccounts.contains(&format!("<a href=\"/accounts/{store}\">Store 12</a>")),
        "{subaccounts}"
    );
    assert!(
        subaccounts.contains(&format!(
            "href=\"/accounts/new?parent={partner}\">+ Add new account</a>"
        )),
        "{subaccounts}"
    );

    // No recorders yet: the page says what to do, and refreshes the region by itself.
    let recorders = page.element("section", "id=\"recorders\"");
    assert!(
        recorders.contains("No recorders yet: enter this code on the recorder"),
        "{recorders}"
    );
    assert!(
        recorders.contains(&format!(
            "data-refresh-url=\"/accounts/{partner}/recorders/live\" data-refresh-millis=\"5000\""
        )),
        "{recorders}"
    );

    // The code on the page enrolls a recorder into this account.
    let dir = tempfile::tempdir().unwrap();
    let nvr = enroll_with_curl(&server, &code, "NVR-P1", dir.path());
    let sub_nvr = enroll_with_curl(&server, &store_code, "NVR-S1", dir.path());
    let live = format!("/accounts/{partner}/recorders/live");
    let fragment = browser.get(&live).expect(200);
    assert!(
        !fragment.body.contains("<html"),
        "a fragment, not a page: {}",
        fragment.body
    );
    let row = fragment.element("tr", &format!("data-recorder=\"{}\"", nvr.recorder_id));
    assert!(
        row.contains("<span class=\"badge offline\">Offline</span>"),
        "{row}"
    );
    assert!(row.contains("never"), "{row}");
    assert!(row.contains("NVR-P1") && row.contains("curl-box"), "{row}");
    assert!(row.contains("<time datetime=\""), "{row}");
    assert!(
        row.contains("in 89 days") || row.contains("in 90 days"),
        "the certificate's expiry in words: {row}"
    );
    assert!(
        !fragment.body.contains(&sub_nvr.recorder_id),
        "the sub-account's recorder is on its own page"
    );

    // After a heartbeat the fragment says Online, last seen just now.
    assert_eq!(heartbeat(&server, &nvr, json!({ "uptime_secs": 7 })), 200);
    let row = wait_for(WAIT, "the recorder online in the fragment", || {
        let fragment = browser.get(&live).expect(200);
        let row = fragment.element("tr", &format!("data-recorder=\"{}\"", nvr.recorder_id));
        row.contains("<span class=\"badge online\">Online</span>")
            .then_some(row)
    });
    assert!(
        row.contains("just now") || row.contains("seconds ago"),
        "{row}"
    );

    // The account page itself shows it too, and the sub-account's recorder in its count.
    let page = browser.get(&format!("/accounts/{partner}")).expect(200);
    page.element("tr", &format!("data-recorder=\"{}\"", nvr.recorder_id));
    let store_row = page.element("tr", &format!("data-account=\"{store}\""));
    assert!(
        store_row.contains("data-online=\"0\" data-total=\"1\""),
        "{store_row}"
    );

    // The recorder's page: online, with what it reported and its history.
    let shown = browser
        .get(&format!("/recorders/{}", nvr.recorder_id))
        .expect(200);
    shown
        .has("<h1>NVR-P1</h1>")
        .has("<span class=\"badge online\">Online</span>")
        .has("&quot;uptime_secs&quot;: 7")
        .has("Enrolled")
        .has("id=\"rename-recorder\"")
        .has("id=\"move-recorder\"")
        .has("id=\"confirm_revoke\"")
        .has(&format!(
            "<option value=\"{store}\">Acme › Store 12</option>"
        ));

    // The customer's page: breadcrumbs from the partner down, no sub-accounts section.
    let customer = browser.get(&format!("/accounts/{store}")).expect(200);
    customer
        .has("<h1>Store 12</h1>")
        .has(&format!("<a href=\"/accounts/{partner}\">Acme</a>"))
        .has(&format!(
            "<a href=\"/accounts/{store}\" aria-current=\"page\">Store 12</a>"
        ))
        .lacks("id=\"subaccounts\"")
        .lacks("+ Add new account");
    customer.element("tr", &format!("data-recorder=\"{}\"", sub_nvr.recorder_id));
}

#[test]
fn the_new_account_form_creates_a_customer_and_invites_its_first_user() {
    let server = Server::start_with(INTERVAL, &[]);
    let (api, partner, _) = first_administrator(&server, "Acme", "boss@acme.test");
    let browser = Browser::login(&server, "boss@acme.test");

    let form = browser
        .get(&format!("/accounts/new?parent={partner}"))
        .expect(200);
    form.has("<select id=\"kind\" name=\"kind\"")
        .has("<option value=\"partner\">Partner</option>")
        .has("<option value=\"customer\" selected>Customer</option>")
        .has("<input id=\"name\" name=\"name\"")
        .has("<textarea id=\"address\" name=\"address\"")
        .has("<input id=\"contact\" name=\"contact\"")
        .has("<input id=\"first_user_name\" name=\"first_user_name\"")
        .has("<input id=\"first_user_email\" name=\"first_user_email\"")
        .has("<label for=\"first_user_email\">")
        .has(">Create account</button>");
    let csrf = form.csrf();

    // What is wrong is said next to its field, and nothing is made.
    let before = account_ids(&api).len();
    let refused = browser
        .post(
            "/accounts/new",
            &[
                ("csrf", &csrf),
                ("parent", &partner),
                ("kind", "customer"),
                ("name", ""),
                ("first_user_name", "Jo"),
                ("first_user_email", "not an email"),
            ],
        )
        .expect(422);
    refused
        .has("id=\"name-error\"")
        .has("id=\"first_user_email-error\"")
        .has("aria-describedby=\"first_user_email-hint first_user_email-error\"")
        .has("value=\"Jo\"");
    let taken = browser
        .post(
            "/accounts/new",
            &[
                ("csrf", &csrf),
                ("parent", &partner),
                ("kind", "customer"),
                ("name", "Store 7"),
                ("first_user_name", "Jo"),
                ("first_user_email", "boss@acme.test"),
            ],
        )
        .expect(422);
    let error = taken.between(
        "<p class=\"field-error\" id=\"first_user_email-error\">",
        "<",
    );
    assert!(error.contains("already exists"), "{error}");
    assert_eq!(account_ids(&api).len(), before);

    let created = browser
        .post(
            "/accounts/new",
            &[
                ("csrf", &csrf),
                ("parent", &partner),
                ("kind", "customer"),
                ("name", "Store 7"),
                ("address", "Main Street 1\r\n1000 Town"),
                ("contact", "Jo, +1 555 0100"),
                ("first_user_name", "Jo Store"),
                ("first_user_email", "jo@store7.test"),
            ],
        )
        .expect(303);
    let location = created.location();
    let id = location
        .strip_prefix("/accounts/")
        .and_then(|rest| rest.strip_suffix("?done=account-created"))
        .unwrap_or_else(|| panic!("{location}"))
        .to_owned();
    let account = api.get(&format!("/accounts/{id}")).expect(200).body;
    assert_eq!(account["kind"], "customer");
    assert_eq!(account["parent_id"], json!(partner));
    assert_eq!(account["address"], "Main Street 1\n1000 Town");
    assert_eq!(account["contact"], "Jo, +1 555 0100");

    let page = browser.get(&location).expect(200);
    page.has("<h1>Store 7</h1>")
        .has("the invitation was sent to its first user")
        .has("<tr data-code=\"")
        .lacks("jo@store7.test");
    let mail = outbox_mail_to(&server, "jo@store7.test");
    assert!(mail.plain.contains("Store 7"), "{}", mail.plain);

    // The invited user accepts and finds their account.
    let mut jo = api.fresh();
    jo.accept(&mailed_token(&server, "jo@store7.test"), GOOD_PASSWORD)
        .expect(200);
    let jo = Browser::login(&server, "jo@store7.test");
    assert_eq!(
        jo.get("/").expect(303).location(),
        format!("/accounts/{id}")
    );

    // A customer account holds no accounts: its page says so instead of a form.
    browser
        .get(&format!("/accounts/new?parent={id}"))
        .expect(200)
        .has("is a customer account")
        .lacks("id=\"new-account\"");

    // The tree lists it below the partner, and finds it by name.
    let tree = browser.get("/accounts").expect(200);
    let row = tree.element("tr", &format!("data-account=\"{id}\""));
    assert!(row.contains("tree-depth-1"), "{row}");
    let found = browser.get("/accounts?q=store%207").expect(200);
    found.has(&format!("data-account=\"{id}\""));
    assert!(!found.body.contains(&format!("data-account=\"{partner}\"")));
    browser
        .get("/accounts?q=nothing-like-this")
        .expect(200)
        .has("No account's name contains this text");
}

#[test]
fn the_code_forms_create_change_disable_and_rotate_codes() {
    let server = Server::start_with(INTERVAL, &[]);
    let (api, partner, _) = first_administrator(&server, "Acme", "boss@acme.test");
    let (store, _) = server.create_account("Store 12", "customer", Some(&partner));
    let browser = Browser::login(&server, "boss@acme.test");
    let csrf = browser.csrf();
    let page = format!("/accounts/{store}");
    let codes = |api: &AdminClient| -> Vec<Value> {
        api.get(&format!("/accounts/{store}/codes"))
            .expect(200)
            .body["items"]
            .as_array()
            .unwrap()
            .clone()
    };

    // Refused limits are said next to their fields.
    let refused = browser
        .post(
            &format!("{page}/codes"),
            &[
                ("csrf", &csrf),
                ("code_label", "Installer Bob"),
                ("code_expires", "2001-01-01"),
                ("code_max_uses", "0"),
            ],
        )
        .expect(422);
    refused
        .has("id=\"code_expires-error\"")
        .has("id=\"code_max_uses-error\"")
        .has("value=\"Installer Bob\"");
    assert_eq!(codes(&api).len(), 1);

    let made = browser
        .post(
            &format!("{page}/codes"),
            &[
                ("csrf", &csrf),
                ("code_label", "Installer Bob"),
                ("code_expires", "2099-12-31"),
                ("code_max_uses", "3"),
            ],
        )
        .expect(303);
    assert_eq!(made.location(), format!("{page}?done=code-created#codes"));
    let listed = codes(&api);
    let new = listed
        .iter()
        .find(|c| c["label"] == "Installer Bob")
        .expect("the new code");
    let public_id = new["public_id"].as_str().unwrap().to_owned();
    assert_eq!(new["max_uses"], 3);
    assert_eq!(new["expires_at"], 4102444799_i64, "end of 2099-12-31 UTC");
    let shown = browser
        .get(&format!("{page}?done=code-created"))
        .expect(200);
    shown.has("A new registration code was made");
    let row = shown.element("tr", &format!("data-code=\"{public_id}\""));
    assert!(
        row.contains("Installer Bob") && row.contains("0 of 3"),
        "{row}"
    );

    // Its limits, changed on its own page.
    let edit = browser
        .get(&format!("{page}/codes/{public_id}"))
        .expect(200);
    edit.has("value=\"2099-12-31\"").has("value=\"3\"");
    browser
        .post(
            &format!("{page}/codes/{public_id}"),
            &[
                ("csrf", &csrf),
                ("code_label", "Installer Bob"),
                ("code_expires", ""),
                ("code_max_uses", "10"),
            ],
        )
        .expect(303);
    let changed = codes(&api)
        .into_iter()
        .find(|c| c["public_id"] == json!(public_id))
        .unwrap();
    assert_eq!(changed["max_uses"], 10);
    assert_eq!(changed["expires_at"], Value::Null);

    // Disabled, it no longer enrolls; rotating disables the rest and makes one more.
    browser
        .post(
            &format!("{page}/codes/{public_id}/disable"),
            &[("csrf", &csrf)],
        )
        .expect(303);
    assert!(codes(&api)
        .iter()
        .any(|c| c["public_id"] == json!(public_id) && c["state"] == "disabled"));
    let rotated = browser
        .post(&format!("{page}/codes/rotate"), &[("csrf", &csrf)])
        .expect(303);
    assert_eq!(
        rotated.location(),
        format!("{page}?done=code-rotated#codes")
    );
    let after = codes(&api);
    assert_eq!(after.len(), 3);
    assert_eq!(
        after.iter().filter(|c| c["state"] == "active").count(),
        1,
        "{after:?}"
    );
}

#[test]
fn the_recorder_page_renames_moves_and_revokes() {
    let server = Server::start_with(INTERVAL, &[]);
    let (api, partner, _) = first_administrator(&server, "Acme", "boss@acme.test");
    let (store_a, code_a) = server.create_account("Store A", "customer", Some(&partner));
    let (store_b, _) = server.create_account("Store B", "customer", Some(&partner));
    let browser = Browser::login(&server, "boss@acme.test");
    let csrf = browser.csrf();
    let dir = tempfile::tempdir().unwrap();
    let nvr = enroll_with_curl(&server, &code_a, "NVR-R1", dir.path());
    let page = format!("/recorders/{}", nvr.recorder_id);

    let renamed = browser
        .post(
            &format!("{page}/rename"),
            &[("csrf", &csrf), ("recorder_name", "Front gate")],
        )
        .expect(303);
    assert_eq!(renamed.location(), format!("{page}?done=recorder-renamed"));
    let too_long = "x".repeat(201);
    browser
        .post(
            &format!("{page}/rename"),
            &[("csrf", &csrf), ("recorder_name", &too_long)],
        )
        .expect(422)
        .has("id=\"recorder_name-error\"");

    browser
        .post(&format!("{page}/move"), &[("csrf", &csrf), ("account", "")])
        .expect(422)
        .has("id=\"account-error\"");
    browser
        .post(
            &format!("{page}/move"),
            &[("csrf", &csrf), ("account", &store_b)],
        )
        .expect(303);
    let moved = api.get(&page).expect(200).body;
    assert_eq!(moved["name"], "Front gate");
    assert_eq!(moved["account_id"], json!(store_b));

    let shown = browser
        .get(&format!("{page}?done=recorder-moved"))
        .expect(200);
    shown
        .has("<h1>Front gate</h1>")
        .has("The recorder was moved")
        .has("Moved from Store A to Store B")
        .has("Renamed from no name to “Front gate”")
        .has(&format!(
            "<li><a href=\"/accounts/{store_b}\">Store B</a></li><li><a href=\"{page}\" aria-current=\"page\">Front gate</a></li>"
        ))
        .lacks(&format!("<option value=\"{store_b}\""));
    let _ = store_a;

    // Revoking wants the box ticked.
    browser
        .post(&format!("{page}/revoke"), &[("csrf", &csrf)])
        .expect(422)
        .has("id=\"confirm_revoke-error\"");
    assert_eq!(api.get(&page).expect(200).body["revoked_at"], Value::Null);
    browser
        .post(
            &format!("{page}/revoke"),
            &[("csrf", &csrf), ("confirm_revoke", "yes")],
        )
        .expect(303);
    assert!(api.get(&page).expect(200).body["revoked_at"].is_i64());
    browser
        .get(&page)
        .expect(200)
        .has("<span class=\"badge revoked\">Revoked</span>")
        .lacks("id=\"revoke-recorder\"");
}

#[test]
fn a_form_without_its_csrf_field_is_refused_and_changes_nothing() {
    let server = Server::start_with(INTERVAL, &[]);
    let (api, partner, _) = first_administrator(&server, "Acme", "boss@acme.test");
    let (store, code) = server.create_account("Store", "customer", Some(&partner));
    let browser = Browser::login(&server, "boss@acme.test");
    let dir = tempfile::tempdir().unwrap();
    let nvr = enroll_with_curl(&server, &code, "NVR-C1", dir.path());
    let accounts = account_ids(&api).len();
    let codes = code_count(&api, &store);
    let recorder = format!("/recorders/{}", nvr.recorder_id);

    let new_account = [
        ("parent", partner.as_str()),
        ("kind", "customer"),
        ("name", "Sneaky"),
        ("first_user_name", "Eve"),
        ("first_user_email", "eve@evil.test"),
    ];
    let attempts: Vec<(String, Vec<(&str, &str)>)> = vec![
        ("/accounts/new".into(), new_account.to_vec()),
        (
            format!("/accounts/{store}/codes"),
            vec![("code_label", "x")],
        ),
        (format!("/accounts/{store}/codes/rotate"), vec![]),
        (
            format!("/accounts/{store}"),
            vec![("account_name", "Renamed")],
        ),
        (
            format!("/accounts/{store}/disable"),
            vec![("confirm_disable", "yes")],
        ),
        (
            format!("{recorder}/rename"),
            vec![("recorder_name", "Renamed")],
        ),
        (
            format!("{recorder}/revoke"),
            vec![("confirm_revoke", "yes")],
        ),
    ];
    for (path, fields) in &attempts {
        let refused = browser.post(path, fields).expect(403);
        refused.has("This form has expired");
        // Another session's token is no better.
        let mut forged = fields.clone();
        forged.push(("csrf", "0123456789abcdef0123456789abcdef"));
        browser.post(path, &forged).expect(403);
    }
    assert_eq!(account_ids(&api).len(), accounts);
    assert_eq!(code_count(&api, &store), codes);
    let account = api.get(&format!("/accounts/{store}")).expect(200).body;
    assert_eq!(account["name"], "Store");
    assert_eq!(account["disabled_at"], Value::Null);
    let recorder = api.get(&recorder).expect(200).body;
    assert_eq!(recorder["name"], Value::Null);
    assert_eq!(recorder["revoked_at"], Value::Null);
    assert!(
        !server.data_dir().join("outbox").exists()
            || admin::outbox(&server)
                .iter()
                .all(|m| !m.to.contains("eve@evil.test"))
    );
}

#[test]
fn a_sibling_account_and_a_recorder_outside_scope_answer_not_found() {
    let server = Server::start_with(INTERVAL, &[]);
    let (api, partner, _) = first_administrator(&server, "Acme", "boss@acme.test");
    let (store_a, _) = server.create_account("Store A", "customer", Some(&partner));
    let (store_b, code_b) = server.create_account("Store B", "customer", Some(&partner));
    let (_customer_api, _) = administrator_of(&server, &store_a, "admin@store-a.test");
    let dir = tempfile::tempdir().unwrap();
    let theirs = enroll_with_curl(&server, &code_b, "NVR-B1", dir.path());
    let customer = Browser::login(&server, "admin@store-a.test");

    let own = customer.get(&format!("/accounts/{store_a}")).expect(200);
    own.has("<h1>Store A</h1>")
        .lacks("Store B")
        .lacks(&partner)
        .lacks("id=\"subaccounts\"");
    let csrf = own.csrf();

    let unknown = customer.get(&format!("/accounts/{UNKNOWN}")).expect(404);
    unknown.has("<h1>Not found</h1>");
    for path in [
        format!("/accounts/{store_b}"),
        format!("/accounts/{partner}"),
        format!("/accounts/{store_b}/recorders/live"),
        format!("/accounts/new?parent={partner}"),
        format!("/recorders/{}", theirs.recorder_id),
        format!("/recorders/{UNKNOWN}"),
    ] {
        let answer = customer.get(&path).expect(404);
        answer
            .has("<h1>Not found</h1>")
            .lacks("Store B")
            .lacks("NVR-B1");
    }
    customer
        .post(
            &format!("/recorders/{}/rename", theirs.recorder_id),
            &[("csrf", &csrf), ("recorder_name", "Mine now")],
        )
        .expect(404)
        .has("<h1>Not found</h1>");
    customer
        .post(
            &format!("/accounts/{store_b}/codes/rotate"),
            &[("csrf", &csrf)],
        )
        .expect(404);
    assert_eq!(
        api.get(&format!("/recorders/{}", theirs.recorder_id))
            .expect(200)
            .body["name"],
        Value::Null
    );
    assert_eq!(code_count(&api, &store_b), 1);

    // The tree holds only their own account.
    let tree = customer.get("/accounts").expect(200);
    tree.has(&format!("data-account=\"{store_a}\""))
        .lacks(&format!("data-account=\"{store_b}\""))
        .lacks(&format!("data-account=\"{partner}\""));
}

#[test]
fn a_user_without_codes_view_sees_no_code_and_no_controls_they_cannot_use() {
    let server = Server::start_with(INTERVAL, &[]);
    let (api, partner, _) = first_administrator(&server, "Acme", "boss@acme.test");
    let group = api
        .post(
            &format!("/accounts/{partner}/groups"),
            &json!({ "name": "Viewers", "permissions": ["accounts.view", "recorders.view"] }),
        )
        .expect(201)
        .body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    api.post(
        &format!("/accounts/{partner}/users"),
        &json!({ "email": "viewer@acme.test", "name": "Vi Ewer", "group_id": group }),
    )
    .expect(201);
    let mut viewer_api = api.fresh();
    viewer_api
        .accept(&mailed_token(&server, "viewer@acme.test"), GOOD_PASSWORD)
        .expect(200);
    let code = api
        .get(&format!("/accounts/{partner}/codes"))
        .expect(200)
        .body["items"][0]["public_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let whole = api.get(&format!("/codes/{code}")).expect(200).body["registration_code"]
        .as_str()
        .unwrap()
        .to_owned();

    let viewer = Browser::login(&server, "viewer@acme.test");
    let page = viewer.get(&format!("/accounts/{partner}")).expect(200);
    page.has("<h1>Acme</h1>")
        .has("id=\"recorders\"")
        .has("ask an administrator who can see codes")
        .lacks("id=\"codes\"")
        .lacks("registration-code")
        .lacks(&whole)
        .lacks("data-code=")
        .lacks("+ Add new account")
        .lacks("Edit details")
        .lacks("Disable account");
    // The API decides: a code form sent anyway is refused.
    let csrf = page.csrf();
    viewer
        .post(
            &format!("/accounts/{partner}/codes"),
            &[("csrf", &csrf), ("code_label", "mine")],
        )
        .expect(403)
        .has("Not allowed");
    viewer
        .get(&format!("/accounts/new?parent={partner}"))
        .expect(403);
    assert_eq!(code_count(&api, &partner), 1);

    // Without accounts.view, one's own account still shows its recorders.
    let watchers = api
        .post(
            &format!("/accounts/{partner}/groups"),
            &json!({ "name": "Watchers", "permissions": ["recorders.view"] }),
        )
        .expect(201)
        .body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    api.post(
        &format!("/accounts/{partner}/users"),
        &json!({ "email": "watch@acme.test", "name": "Wat Cher", "group_id": watchers }),
    )
    .expect(201);
    api.fresh()
        .accept(&mailed_token(&server, "watch@acme.test"), GOOD_PASSWORD)
        .expect(200);
    let watcher = Browser::login(&server, "watch@acme.test");
    let home = watcher.get("/").expect(303);
    let own = watcher.get(&home.location()).expect(200);
    own.has("<h1>Acme</h1>")
        .has("id=\"recorders-live\"")
        .lacks("id=\"codes\"")
        .lacks("id=\"details\"")
        .lacks("id=\"subaccounts\"")
        .lacks("badge kind");
    watcher.get("/accounts").expect(403).has("Not allowed");
}

#[test]
fn every_page_carries_the_content_security_policy_and_refuses_framing() {
    let server = Server::start_with(INTERVAL, &[]);
    let (_api, partner, _) = first_administrator(&server, "Acme", "boss@acme.test");
    let (store, code) = server.create_account("Store <b>12</b>", "customer", Some(&partner));
    let dir = tempfile::tempdir().unwrap();
    let nvr = enroll_with_curl(&server, &code, "NVR-H1", dir.path());
    let browser = Browser::login(&server, "boss@acme.test");
    let csrf = browser.csrf();
    let public_id = &code[..4];

    let mut pages = vec![
        browser.get("/"),
        browser.get("/accounts"),
        browser.get("/accounts?q=store"),
        browser.get(&format!("/accounts/{partner}")),
        browser.get(&format!("/accounts/{store}")),
        browser.get(&format!("/accounts/{store}/recorders/live")),
        browser.get(&format!("/accounts/new?parent={partner}")),
        browser.get(&format!("/accounts/{store}/codes/{public_id}")),
        browser.get(&format!("/recorders/{}", nvr.recorder_id)),
        browser.get(&format!("/recorders/{UNKNOWN}")),
        browser.post(&format!("/accounts/{store}/codes"), &[]),
        browser.post(
            &format!("/accounts/{store}/codes"),
            &[("csrf", &csrf), ("code_max_uses", "-1")],
        ),
    ];
    pages.push(Browser::new(&server).get(&format!("/accounts/{partner}")));
    let statuses: Vec<u16> = pages.iter().map(|p| p.status).collect();
    assert_eq!(
        statuses,
        [303, 200, 200, 200, 200, 200, 200, 200, 200, 404, 403, 422, 303]
    );
    for page in &pages {
        let csp = page
            .header("content-security-policy")
            .unwrap_or_else(|| panic!("no CSP: {:?}", page.headers));
        assert!(csp.contains("script-src 'self'"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        assert_eq!(page.header("x-frame-options"), Some("DENY"));
        assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
        // Nothing a CSP without inline script and style would block.
        for inline in ["<script>", " style=\"", "<style", " onclick=", " onload="] {
            assert!(!page.body.contains(inline), "{inline} in {}", page.body);
        }
    }
    // Names are text, never markup.
    let store_page = &pages[4];
    store_page
        .has("<h1>Store &lt;b&gt;12&lt;/b&gt;</h1>")
        .lacks("<b>12</b>");
}

#[test]
fn account_details_disabling_enabling_and_a_replacement_are_changed_from_the_pages() {
    let server = Server::start_with(INTERVAL, &[]);
    let (api, partner, _) = first_administrator(&server, "Acme", "boss@acme.test");
    let (store, code) = server.create_account("Store", "customer", Some(&partner));
    let browser = Browser::login(&server, "boss@acme.test");
    let csrf = browser.csrf();
    let page = format!("/accounts/{store}");

    // Details: what is wrong is said next to its field; what changed is saved.
    browser
        .post(
            &page,
            &[
                ("csrf", &csrf),
                ("account_name", " "),
                ("account_address", ""),
            ],
        )
        .expect(422)
        .has("id=\"account_name-error\"")
        .has("<details class=\"edit\" open>");
    let saved = browser
        .post(
            &page,
            &[
                ("csrf", &csrf),
                ("account_name", "Store 12"),
                ("account_address", "Main Street 1\r\nTown"),
                ("account_contact", "Jo"),
            ],
        )
        .expect(303);
    assert_eq!(saved.location(), format!("{page}?done=account-updated"));
    let account = api.get(&page).expect(200).body;
    assert_eq!(
        (&account["name"], &account["address"], &account["contact"]),
        (
            &json!("Store 12"),
            &json!("Main Street 1\nTown"),
            &json!("Jo")
        )
    );
    let same = browser
        .post(
            &page,
            &[
                ("csrf", &csrf),
                ("account_name", "Store 12"),
                ("account_address", "Main Street 1\r\nTown"),
                ("account_contact", "Jo"),
            ],
        )
        .expect(303);
    assert_eq!(same.location(), format!("{page}?done=nothing-changed"));

    // Disabling wants the box ticked; enabling undoes it. One's own account stays.
    browser
        .post(&format!("{page}/disable"), &[("csrf", &csrf)])
        .expect(422)
        .has("id=\"confirm_disable-error\"");
    assert_eq!(api.get(&page).expect(200).body["disabled_at"], Value::Null);
    browser
        .post(
            &format!("{page}/disable"),
            &[("csrf", &csrf), ("confirm_disable", "yes")],
        )
        .expect(303);
    assert!(api.get(&page).expect(200).body["disabled_at"].is_i64());
    browser
        .get(&page)
        .expect(200)
        .has("<span class=\"badge disabled\">Disabled</span>")
        .has(">Enable account</button>");
    browser
        .post(&format!("{page}/enable"), &[("csrf", &csrf)])
        .expect(303);
    assert_eq!(api.get(&page).expect(200).body["disabled_at"], Value::Null);
    browser
        .get(&format!("/accounts/{partner}"))
        .expect(200)
        .lacks("id=\"disable-account\"");
    browser
        .post(
            &format!("/accounts/{partner}/disable"),
            &[("csrf", &csrf), ("confirm_disable", "yes")],
        )
        .expect(422)
        .has("You cannot disable your own account");

    // A new key with an enrolled serial is flagged; confirming revokes the old recorder.
    let (first, second) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let old = enroll_with_curl(&server, &code, "NVR-SWAP", first.path());
    let new = enroll_with_curl(&server, &code, "NVR-SWAP", second.path());
    let flagged = browser
        .get(&format!("/recorders/{}", new.recorder_id))
        .expect(200);
    flagged
        .has("<span class=\"badge flagged\">Replacement?</span>")
        .has(&format!(
            "<a href=\"/recorders/{}\">a recorder enrolled before</a>",
            old.recorder_id
        ))
        .has(">Confirm replacement</button>");
    let confirmed = browser
        .post(
            &format!("/recorders/{}/confirm-replacement", new.recorder_id),
            &[("csrf", &csrf)],
        )
        .expect(303);
    assert_eq!(
        confirmed.location(),
        format!("/recorders/{}?done=replacement-confirmed", new.recorder_id)
    );
    assert!(api
        .get(&format!("/recorders/{}", old.recorder_id))
        .expect(200)
        .body["revoked_at"]
        .is_i64());
    browser
        .get(&format!("/recorders/{}", new.recorder_id))
        .expect(200)
        .lacks("id=\"confirm-replacement\"");
    // Confirming again is refused in place, with the API's reason.
    browser
        .post(
            &format!("/recorders/{}/confirm-replacement", new.recorder_id),
            &[("csrf", &csrf)],
        )
        .expect(422)
        .has("class=\"alert\"");

    // The live fragment without a session: 401, and the page keeps what it shows.
    let anonymous = Browser::new(&server).get(&format!("{page}/recorders/live"));
    assert_eq!(anonymous.status, 401);
    assert!(!anonymous.body.contains("NVR-SWAP"));
}

#[test]
fn the_tree_and_the_sub_accounts_are_paged() {
    let server = Server::start_with(INTERVAL, &[]);
    let (_api, partner, _) = first_administrator(&server, "Acme", "boss@acme.test");
    let ids: Vec<String> = (1..=55)
        .map(|i| {
            server
                .create_account(&format!("Store {i:02}"), "customer", Some(&partner))
                .0
        })
        .collect();
    let browser = Browser::login(&server, "boss@acme.test");
    let rows = |page: &Html| page.body.matches("<tr data-account=\"").count();

    // The tree: the partner and 49 stores, then the other 6 after the API's cursor.
    let first = browser.get("/accounts").expect(200);
    assert_eq!(rows(&first), 50);
    first
        .has(&format!("data-account=\"{partner}\""))
        .has(&format!("data-account=\"{}\"", ids[48]))
        .lacks(&format!("data-account=\"{}\"", ids[49]));
    let next = first.between("<a href=\"/accounts?cursor=", "\"");
    let second = browser.get(&format!("/accounts?cursor={next}")).expect(200);
    assert_eq!(rows(&second), 6);
    second
        .has(&format!("data-account=\"{}\"", ids[54]))
        .has(">First page</a>")
        .lacks(">Next page</a>");
    // A cursor the API did not give is not passed on.
    browser
        .get("/accounts?cursor=not-a-cursor")
        .expect(200)
        .has(&format!("data-account=\"{partner}\""));

    // The partner's page: 50 sub-accounts a page, by name.
    let page = browser.get(&format!("/accounts/{partner}")).expect(200);
    let subaccounts = page.element("section", "id=\"subaccounts\"");
    assert_eq!(subaccounts.matches("<tr data-account=\"").count(), 50);
    assert!(subaccounts.contains("Page 1 of 2"), "{subaccounts}");
    let more = browser
        .get(&format!("/accounts/{partner}?sub=2"))
        .expect(200);
    let subaccounts = more.element("section", "id=\"subaccounts\"");
    assert_eq!(subaccounts.matches("<tr data-account=\"").count(), 5);
    assert!(subaccounts.contains(&format!("data-account=\"{}\"", ids[54])));
}
