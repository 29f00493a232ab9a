//! The web console's settings pages over HTTP, as a browser without JavaScript uses them:
//! `curl` with a cookie jar posts the console's own forms (with their CSRF field) to the
//! console's listener. Users (invite, resend, disable, enable, groups), groups (create,
//! change, delete, what their members then see), API tokens (made on the page, used on
//! the API, revoked), the audit log with its source addresses, forms without their CSRF
//! field, and another account's pages answering 404.

use std::path::PathBuf;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use contera_e2e::admin::{
    accept_token_in, first_administrator, mailed_token, outbox_texts, AdminClient, GOOD_PASSWORD,
};
use contera_e2e::Server;

/// A browser on the console: its own cookie jar.
struct Console {
    base: String,
    ca: PathBuf,
    jar: tempfile::TempDir,
}

/// What the console answered.
#[derive(Debug)]
struct Answer {
    status: u16,
    location: Option<String>,
    html: String,
}

impl Answer {
    #[track_caller]
    fn expect(self, status: u16) -> Answer {
        assert_eq!(
            self.status, status,
            "unexpected status; the page:\n{}",
            self.html
        );
        self
    }

    /// The place a 303 sends the browser to.
    #[track_caller]
    fn redirect(&self) -> &str {
        assert_eq!(self.status, 303, "not a redirect:\n{}", self.html);
        self.location.as_deref().expect("a Location header")
    }
}

impl Console {
    fn new(server: &Server) -> Console {
        Console {
            base: server.console_url(),
            ca: server.ca_file(),
            jar: tempfile::tempdir().expect("cookie jar dir"),
        }
    }

    fn request(&self, path: &str, form: Option<&[(&str, &str)]>) -> Answer {
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
            if fields.is_empty() {
                cmd.args(["--data", ""]);
            }
            for (name, value) in fields {
                cmd.arg("--data-urlencode").arg(format!("{name}={value}"));
            }
        }
        let url = format!("{}{path}", self.base);
        let out = cmd.arg(&url).output().expect("curl runs");
        assert!(
            out.status.success(),
            "curl {url}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let all = String::from_utf8_lossy(&out.stdout).into_owned();
        let (html, status) = all.rsplit_once('\n').expect("status line");
        let head = std::fs::read_to_string(&head).unwrap_or_default();
        let location = head.lines().find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("location")
                .then(|| value.trim().to_owned())
        });
        let answer = Answer {
            status: status.trim().parse().expect("HTTP status"),
            location,
            html: html.to_owned(),
        };
        if answer.html.contains("<html") {
            assert_page_is_clean(&answer.html);
        }
        answer
    }

    fn get(&self, path: &str) -> Answer {
        self.request(path, None)
    }

    fn post(&self, path: &str, fields: &[(&str, &str)]) -> Answer {
        self.request(path, Some(fields))
    }

    /// Logs in with the login form (its double-submit CSRF field and cookie).
    fn login(&self, email: &str, password: &str) {
        let form = self.get("/login").expect(200);
        let csrf = hidden_csrf(&form.html);
        let answer = self.post(
            "/login",
            &[("csrf", &csrf), ("email", email), ("password", password)],
        );
        assert_eq!(answer.redirect(), "/", "logging in {email}");
    }

    /// The session's CSRF token, from the hidden field of a logged-in page.
    fn csrf(&self) -> String {
        hidden_csrf(&self.get("/tokens").expect(200).html)
    }
}

/// No inline script, style attribute or event handler: the CSP would block them.
#[track_caller]
fn assert_page_is_clean(html: &str) {
    for bad in [" style=", "<style", "onclick=", "onsubmit=", "javascript:"] {
        assert!(!html.contains(bad), "{bad} in the page:\n{html}");
    }
    assert!(
        !html.contains("<script>"),
        "an inline script in the page:\n{html}"
    );
}

/// The value of the first hidden `csrf` field.
#[track_caller]
fn hidden_csrf(html: &str) -> String {
    attr_after(html, "name=\"csrf\"", "value").expect("a csrf field")
}

/// The value of attribute `name` in the tag where `marker` appears.
fn attr_after(html: &str, marker: &str, name: &str) -> Option<String> {
    let at = html.find(marker)?;
    let start = html[..=at].rfind('<')?;
    let end = at + html[at..].find('>')?;
    let tag = &html[start..end];
    let key = format!("{name}=\"");
    let from = tag.find(&key)? + key.len();
    Some(tag[from..from + tag[from..].find('"')?].to_owned())
}

/// The table row (or other element up to its end tag) whose start tag holds `marker`.
#[track_caller]
fn element<'a>(html: &'a str, marker: &str, end: &str) -> &'a str {
    let at = html
        .find(marker)
        .unwrap_or_else(|| panic!("no {marker} in the page:\n{html}"));
    let start = html[..at].rfind('<').expect("a start tag");
    let stop = at + html[at..].find(end).expect("an end tag") + end.len();
    &html[start..stop]
}

fn user_row<'a>(html: &'a str, email: &str) -> &'a str {
    element(html, &format!("data-user=\"{email}\""), "</tr>")
}

/// The id of the user listed as `email` (rows carry `id="user-<id>"`).
#[track_caller]
fn user_id(html: &str, email: &str) -> String {
    let id = attr_after(html, &format!("data-user=\"{email}\""), "id").expect("row id");
    id.strip_prefix("user-").expect("user- prefix").to_owned()
}

/// The id of the group named `name` on a groups page.
#[track_caller]
fn group_id(html: &str, name: &str) -> String {
    let id = attr_after(html, &format!("data-group=\"{name}\""), "id").expect("group id");
    id.strip_prefix("group-").expect("group- prefix").to_owned()
}

/// The value of the `<option>` labelled `label`.
#[track_caller]
fn option_value(html: &str, label: &str) -> String {
    let at = html
        .find(&format!(">{label}</option>"))
        .unwrap_or_else(|| panic!("no option {label}:\n{html}"));
    let start = html[..at].rfind("<option").expect("option tag");
    attr_after(&html[start..], "<option", "value").expect("option value")
}

/// Today plus `days`, as a date field sends it (UTC).
fn date_in(days: i64) -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    // Days to civil date (proleptic Gregorian), after Howard Hinnant's algorithm.
    let z = secs.div_euclid(86_400) + days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

#[test]
fn users_are_invited_resent_and_the_last_administrator_stays() {
    let server = Server::start();
    let (api, account, admin_id) =
        first_administrator(&server, "Harbor Partners", "ada@harbor.test");
    let console = Console::new(&server);
    console.login("ada@harbor.test", GOOD_PASSWORD);
    let users = format!("/accounts/{account}/users");

    // The header's settings link leads here; the user is listed, active, an administrator.
    let page = console.get(&users).expect(200);
    assert!(
        page.html.contains(&format!(
            "id=\"settings\" href=\"/accounts/{account}/users\""
        )),
        "{}",
        page.html
    );
    assert!(page.html.contains("aria-current=\"page\">Users</a>"));
    assert!(page
        .html
        .contains(&format!("href=\"/accounts/{account}/groups\">Groups</a>")));
    let row = user_row(&page.html, "ada@harbor.test");
    assert!(row.contains(">Active</span>"), "{row}");
    assert!(row.contains("Administrators"), "{row}");
    assert_eq!(user_id(&page.html, "ada@harbor.test"), admin_id);
    // The add form: Administrators preselected.
    assert!(page.html.contains("id=\"user_name\""));
    assert!(page.html.contains("id=\"user_email\""));
    let admins = option_value(&page.html, "Administrators");
    assert!(
        page.html.contains(&format!(
            "<option value=\"{admins}\" selected>Administrators</option>"
        )),
        "{}",
        page.html
    );
    assert!(page.html.contains(">Add user</button>"));
    let csrf = hidden_csrf(&page.html);

    // Without its CSRF field (or with another) the form is refused and nothing happens.
    let fields = [
        ("user_name", "Jo Rivera"),
        ("user_email", "jo@harbor.test"),
        ("group", admins.as_str()),
    ];
    console.post(&users, &fields).expect(403);
    let mut forged = fields.to_vec();
    forged.push(("csrf", "0123456789abcdef"));
    console.post(&users, &forged).expect(403);
    assert!(outbox_texts(&server, "jo@harbor.test").is_empty());
    assert!(!console
        .get(&users)
        .html
        .contains("data-user=\"jo@harbor.test\""));

    // Obvious mistakes are shown next to their fields.
    let wrong = console
        .post(
            &users,
            &[
                ("csrf", &csrf),
                ("user_name", " "),
                ("user_email", "not an email"),
                ("group", &admins),
            ],
        )
        .expect(422);
    assert!(
        wrong.html.contains("id=\"user_name-error\""),
        "{}",
        wrong.html
    );
    assert!(wrong.html.contains("id=\"user_email-error\""));
    assert!(wrong.html.contains("value=\"not an email\""));

    // Adding a user mails the invitation and lists them as invited.
    let mut with_csrf = fields.to_vec();
    with_csrf.push(("csrf", &csrf));
    let added = console.post(&users, &with_csrf);
    assert_eq!(added.redirect(), format!("{users}?done=invited"));
    let page = console.get(added.redirect()).expect(200);
    assert!(page.html.contains("Invitation sent."), "{}", page.html);
    let row = user_row(&page.html, "jo@harbor.test");
    assert!(row.contains(">Invited</span>"), "{row}");
    assert!(row.contains(">Resend invitation</button>"), "{row}");
    assert!(!row.contains(">Disable</button>"), "{row}");
    let jo = user_id(&page.html, "jo@harbor.test");
    let mails = outbox_texts(&server, "jo@harbor.test");
    assert_eq!(mails.len(), 1);
    let first_link = accept_token_in(&mails[0]);

    // The same email again: the API's refusal, next to the email field.
    let again = console.post(&users, &with_csrf).expect(409);
    let field = element(&again.html, "id=\"user_email-error\"", "</p>");
    assert!(field.contains("already exists"), "{field}");

    // Resending replaces the link: the first one stops working, the new one works.
    let resent = console.post(&format!("{users}/{jo}/resend"), &[("csrf", &csrf)]);
    assert_eq!(resent.redirect(), format!("{users}?done=resent"));
    let mails = outbox_texts(&server, "jo@harbor.test");
    assert_eq!(mails.len(), 2);
    let second_link = accept_token_in(&mails[1]);
    assert_ne!(first_link, second_link);
    AdminClient::new(&server)
        .accept(&first_link, GOOD_PASSWORD)
        .expect(404);

    // Disabling the last administrator: refused next to their row, nothing changes.
    let refused = console
        .post(&format!("{users}/{admin_id}/disable"), &[("csrf", &csrf)])
        .expect(409);
    let row = user_row(&refused.html, "ada@harbor.test");
    assert!(
        row.contains("role=\"alert\"") && row.contains("users.manage and groups.manage"),
        "{row}"
    );
    assert_eq!(
        api.get(&format!("/users/{admin_id}")).expect(200).body["status"],
        "active"
    );
    assert!(
        user_row(&console.get(&users).expect(200).html, "ada@harbor.test")
            .contains(">Active</span>")
    );

    // Once Jo accepts, Jo can be disabled and enabled; the buttons follow the status.
    AdminClient::new(&server)
        .accept(&second_link, GOOD_PASSWORD)
        .expect(200);
    let row_now = |console: &Console| {
        user_row(&console.get(&users).expect(200).html, "jo@harbor.test").to_owned()
    };
    assert!(row_now(&console).contains(">Disable</button>"));
    console
        .post(&format!("{users}/{jo}/disable"), &[])
        .expect(403);
    assert!(row_now(&console).contains(">Active</span>"));
    let disabled = console.post(&format!("{users}/{jo}/disable"), &[("csrf", &csrf)]);
    assert_eq!(disabled.redirect(), format!("{users}?done=disabled"));
    let row = row_now(&console);
    assert!(
        row.contains(">Disabled</span>") && row.contains(">Enable</button>"),
        "{row}"
    );
    let enabled = console.post(&format!("{users}/{jo}/enable"), &[("csrf", &csrf)]);
    assert_eq!(enabled.redirect(), format!("{users}?done=enabled"));
    assert!(row_now(&console).contains(">Active</span>"));

    // A notice is chosen by a fixed key: text in the URL is never shown.
    let odd = console
        .get(&format!("{users}?done=%3Cb%3Eowned%3C%2Fb%3E"))
        .expect(200);
    assert!(!odd.html.contains("owned"));

    // A sibling account's pages, and its users through this account's forms: 404.
    let (sibling, _) = server.create_account("Other Partners", "partner", None);
    let invited = server.admin_json(&[
        "users",
        "invite",
        "--account",
        &sibling,
        "--email",
        "sam@other.test",
        "--name",
        "Sam Other",
    ]);
    let sam = invited["id"]
        .as_str()
        .expect("the invited user's id")
        .to_owned();
    for path in [
        format!("/accounts/{sibling}/users"),
        format!("/accounts/{sibling}/groups"),
    ] {
        let page = console.get(&path).expect(404);
        assert!(page.html.contains("<h1>Not found</h1>"), "{}", page.html);
    }
    for path in [
        format!("{users}/{sam}/resend"),
        format!("/accounts/{sibling}/users/{sam}/resend"),
    ] {
        console.post(&path, &[("csrf", &csrf)]).expect(404);
    }
    assert_eq!(outbox_texts(&server, "sam@other.test").len(), 0);

    // The audit log shows the console login and the invitation, with the source address.
    let audit = console.get("/audit").expect(200);
    let login = element(&audit.html, "data-action=\"session.login\"", "</tr>");
    assert!(login.contains("127.0.0.1"), "{login}");
    let invitation = element(&audit.html, "data-action=\"user.invited\"", "</tr>");
    assert!(
        invitation.contains("127.0.0.1") && invitation.contains("jo@harbor.test"),
        "{invitation}"
    );
    assert!(invitation.contains("First Admin"), "{invitation}");
    // Filtered by action, only that action is listed.
    let only = console.get("/audit?action=user.invited").expect(200);
    assert!(only.html.contains("data-action=\"user.invited\""));
    assert!(!only.html.contains("data-action=\"session.login\""));
    // Paged: "Older" carries the cursor to the next entries.
    let first = console.get("/audit?limit=2").expect(200);
    let older = attr_after(&first.html, "rel=\"next\"", "href")
        .expect("an Older link")
        .replace("&amp;", "&");
    assert!(older.contains("cursor="), "{older}");
    let second = console.get(&older).expect(200);
    assert!(second.html.contains(">Newest</a>"));
    assert_eq!(second.html.matches("data-action=\"").count(), 2);
    // A date filter that is not a date is shown next to its field.
    let bad = console.get("/audit?since=yesterday").expect(422);
    assert!(bad.html.contains("id=\"since-error\""));
}

#[test]
fn groups_limit_what_their_members_see_and_grant_only_what_one_holds() {
    let server = Server::start();
    let (api, account, admin_id) =
        first_administrator(&server, "Lighthouse Partners", "lee@lighthouse.test");
    let (sibling, _) = server.create_account("Other Partners", "partner", None);
    let admin = Console::new(&server);
    admin.login("lee@lighthouse.test", GOOD_PASSWORD);
    let groups = format!("/accounts/{account}/groups");
    let users = format!("/accounts/{account}/users");

    let page = admin.get(&groups).expect(200);
    assert!(page.html.contains("aria-current=\"page\">Groups</a>"));
    let administrators = element(&page.html, "data-group=\"Administrators\"", "</article>");
    assert!(administrators.contains("First Admin"), "{administrators}");
    assert!(!administrators.contains(">Delete group</button>"));
    // An administrator holds all ten permissions, so all ten are offered.
    for permission in [
        "accounts.view",
        "accounts.manage",
        "users.view",
        "users.manage",
        "groups.manage",
        "codes.view",
        "codes.manage",
        "recorders.view",
        "recorders.manage",
        "audit.view",
    ] {
        let id = format!("perm-new-{}", permission.replace('.', "-"));
        assert!(
            page.html.contains(&format!(
                "id=\"{id}\" name=\"permissions\" value=\"{permission}\""
            )),
            "{permission}"
        );
        assert!(page.html.contains(&format!("<label for=\"{id}\">")));
    }
    let csrf = hidden_csrf(&page.html);

    // Without the CSRF field: refused, no group.
    admin
        .post(
            &groups,
            &[("group_name", "Viewers"), ("permissions", "recorders.view")],
        )
        .expect(403);
    assert!(!admin.get(&groups).html.contains("data-group=\"Viewers\""));
    // Missing name and permissions: shown next to them.
    let wrong = admin
        .post(&groups, &[("csrf", &csrf), ("group_name", "")])
        .expect(422);
    assert!(wrong.html.contains("id=\"group_name-error\""));
    assert!(wrong.html.contains("id=\"permissions-error\""));

    // A group holding recorders.view only.
    let created = admin.post(
        &groups,
        &[
            ("csrf", &csrf),
            ("group_name", "Viewers"),
            ("permissions", "recorders.view"),
        ],
    );
    assert_eq!(created.redirect(), format!("{groups}?done=created"));
    let page = admin.get(created.redirect()).expect(200);
    let viewers = group_id(&page.html, "Viewers");
    let card = element(&page.html, "data-group=\"Viewers\"", "</article>");
    assert!(card.contains("No members yet"), "{card}");
    assert!(card.contains(">Delete group</button>"), "{card}");
    assert!(
        card.contains("value=\"recorders.view\" checked")
            && !card.contains("value=\"audit.view\" checked"),
        "{card}"
    );
    // The same name again: the API's conflict, next to the name field.
    let taken = admin
        .post(
            &groups,
            &[
                ("csrf", &csrf),
                ("group_name", "Viewers"),
                ("permissions", "codes.view"),
            ],
        )
        .expect(409);
    assert!(element(&taken.html, "id=\"group_name-error\"", "</p>").contains("Viewers"));

    // A user invited into it from the users page, who accepts.
    let added = admin.post(
        &users,
        &[
            ("csrf", &csrf),
            ("user_name", "Vic Viewer"),
            ("user_email", "vic@lighthouse.test"),
            ("group", &viewers),
        ],
    );
    assert_eq!(added.redirect(), format!("{users}?done=invited"));
    let page = admin.get(&users).expect(200);
    assert!(user_row(&page.html, "vic@lighthouse.test").contains("Viewers"));
    let vic_id = user_id(&page.html, "vic@lighthouse.test");
    AdminClient::new(&server)
        .accept(&mailed_token(&server, "vic@lighthouse.test"), GOOD_PASSWORD)
        .expect(200);
    let card = element(
        &admin.get(&groups).html,
        "data-group=\"Viewers\"",
        "</article>",
    )
    .to_owned();
    assert!(
        card.contains("Vic Viewer") && !card.contains(">Delete group</button>"),
        "{card}"
    );

    // What Vic sees: no users, groups or audit (403), nothing outside (404), own tokens.
    let vic = Console::new(&server);
    vic.login("vic@lighthouse.test", GOOD_PASSWORD);
    for path in [users.as_str(), groups.as_str(), "/audit"] {
        let page = vic.get(path).expect(403);
        assert!(page.html.contains("Not allowed"), "{path}: {}", page.html);
    }
    for path in [
        format!("/accounts/{sibling}/users"),
        format!("/accounts/{sibling}/groups"),
    ] {
        assert!(vic.get(&path).expect(404).html.contains("Not found"));
    }
    let tokens = vic.get("/tokens").expect(200);
    assert!(tokens.html.contains("value=\"recorders.view\""));
    assert!(!tokens.html.contains("value=\"users.manage\""));
    assert!(!tokens.html.contains("href=\"/audit\""));
    // Vic's own session cannot add a user either: the API's 403, nothing added.
    let vic_csrf = vic.csrf();
    vic.post(
        &users,
        &[
            ("csrf", &vic_csrf),
            ("user_name", "Mallory"),
            ("user_email", "mallory@lighthouse.test"),
            ("group", &viewers),
        ],
    )
    .expect(403);
    let listed = api.get(&format!("/accounts/{account}/users")).expect(200);
    assert!(!listed.text.contains("mallory@lighthouse.test"));

    // Giving the group audit.view opens the audit log to Vic.
    let saved = admin.post(
        &format!("{groups}/{viewers}/permissions"),
        &[
            ("csrf", &csrf),
            ("permissions", "recorders.view"),
            ("permissions", "audit.view"),
        ],
    );
    assert_eq!(saved.redirect(), format!("{groups}?done=saved"));
    vic.get("/audit").expect(200);

    // Taking the last administrator out of Administrators: refused in their row.
    let refused = admin
        .post(
            &format!("{users}/{admin_id}/groups"),
            &[("csrf", &csrf), ("group_ids", &viewers)],
        )
        .expect(409);
    let row = user_row(&refused.html, "lee@lighthouse.test");
    assert!(
        row.contains("<details class=\"inline-edit\" open>"),
        "{row}"
    );
    assert!(row.contains("users.manage and groups.manage"), "{row}");
    // No group at all: refused before asking the API.
    admin
        .post(&format!("{users}/{vic_id}/groups"), &[("csrf", &csrf)])
        .expect(422);
    // Vic into Administrators too: now Vic sees the users page.
    let admins_id = group_id(&admin.get(&groups).html, "Administrators");
    let moved = admin.post(
        &format!("{users}/{vic_id}/groups"),
        &[
            ("csrf", &csrf),
            ("group_ids", &viewers),
            ("group_ids", &admins_id),
        ],
    );
    assert_eq!(moved.redirect(), format!("{users}?done=groups"));
    let row = user_row(&vic.get(&users).expect(200).html, "vic@lighthouse.test").to_owned();
    assert!(row.contains("Administrators, Viewers"), "{row}");

    // Deleting: a group with members is refused, an empty one goes.
    let kept = admin
        .post(&format!("{groups}/{viewers}/delete"), &[("csrf", &csrf)])
        .expect(409);
    let refusal = element(
        &kept.html,
        &format!("id=\"delete-error-{viewers}\""),
        "</p>",
    );
    assert!(refusal.contains("still has 1 member"), "{refusal}");
    let temp = admin.post(
        &groups,
        &[
            ("csrf", &csrf),
            ("group_name", "Temporary"),
            ("permissions", "codes.view"),
        ],
    );
    let temp_id = group_id(&admin.get(temp.redirect()).html, "Temporary");
    admin
        .post(&format!("{groups}/{temp_id}/delete"), &[])
        .expect(403);
    let deleted = admin.post(&format!("{groups}/{temp_id}/delete"), &[("csrf", &csrf)]);
    assert_eq!(deleted.redirect(), format!("{groups}?done=deleted"));
    assert!(!admin.get(&groups).html.contains("data-group=\"Temporary\""));

    // Someone holding groups.manage and users.view only is offered just those two, and
    // the API refuses (403, shown on the form) a group holding more.
    let made = admin.post(
        &groups,
        &[
            ("csrf", &csrf),
            ("group_name", "Group keepers"),
            ("permissions", "groups.manage"),
            ("permissions", "users.view"),
        ],
    );
    let keepers = group_id(&admin.get(made.redirect()).html, "Group keepers");
    admin.post(
        &users,
        &[
            ("csrf", &csrf),
            ("user_name", "Gus Keeper"),
            ("user_email", "gus@lighthouse.test"),
            ("group", &keepers),
        ],
    );
    AdminClient::new(&server)
        .accept(&mailed_token(&server, "gus@lighthouse.test"), GOOD_PASSWORD)
        .expect(200);
    let gus = Console::new(&server);
    gus.login("gus@lighthouse.test", GOOD_PASSWORD);
    let page = gus.get(&groups).expect(200);
    let create = element(&page.html, "id=\"create-group\"", "</section>");
    assert!(create.contains("value=\"groups.manage\"") && create.contains("value=\"users.view\""));
    assert!(!create.contains("value=\"audit.view\""), "{create}");
    let gus_csrf = hidden_csrf(&page.html);
    let over = gus
        .post(
            &groups,
            &[
                ("csrf", &gus_csrf),
                ("group_name", "Sneaky"),
                ("permissions", "audit.view"),
            ],
        )
        .expect(403);
    let form = element(&over.html, "id=\"create-group\"", "</section>");
    assert!(
        form.contains("role=\"alert\"") && form.contains("only permissions you hold"),
        "{form}"
    );
    assert!(!admin.get(&groups).html.contains("data-group=\"Sneaky\""));
    // Nor can Gus widen a group beyond what Gus holds.
    gus.post(
        &format!("{groups}/{keepers}/permissions"),
        &[
            ("csrf", &gus_csrf),
            ("permissions", "groups.manage"),
            ("permissions", "audit.view"),
        ],
    )
    .expect(403);
    let card = element(
        &admin.get(&groups).html,
        "data-group=\"Group keepers\"",
        "</article>",
    )
    .to_owned();
    assert!(!card.contains("value=\"audit.view\" checked"), "{card}");
}

#[test]
fn a_token_made_on_the_tokens_page_works_on_the_api_until_revoked() {
    let server = Server::start();
    let (api, _account, _) = first_administrator(&server, "Beacon Partners", "bo@beacon.test");
    let console = Console::new(&server);
    console.login("bo@beacon.test", GOOD_PASSWORD);

    let page = console.get("/tokens").expect(200);
    assert!(page.html.contains("No API tokens yet"), "{}", page.html);
    assert!(page.html.contains("id=\"token_name\""));
    assert!(page
        .html
        .contains("id=\"token_expires\" name=\"token_expires\" type=\"date\""));
    let csrf = hidden_csrf(&page.html);
    let fields = [
        ("token_name", "inventory script"),
        ("permissions", "accounts.view"),
        ("permissions", "recorders.view"),
    ];

    // Without the CSRF field: refused, no token.
    console.post("/tokens", &fields).expect(403);
    assert_eq!(
        api.get("/tokens").expect(200).body["items"],
        serde_json::json!([])
    );

    // Mistakes next to their fields: no name, no permission, a day that is over.
    let yesterday = date_in(-1);
    let wrong = console
        .post(
            "/tokens",
            &[
                ("csrf", &csrf),
                ("token_name", ""),
                ("token_expires", &yesterday),
            ],
        )
        .expect(422);
    for id in [
        "token_name-error",
        "permissions-error",
        "token_expires-error",
    ] {
        assert!(wrong.html.contains(&format!("id=\"{id}\"")), "{id}");
    }

    // Made: the secret is shown once, with a Copy button.
    let expiry = date_in(30);
    let mut with_csrf = fields.to_vec();
    with_csrf.push(("csrf", &csrf));
    with_csrf.push(("token_expires", &expiry));
    let made = console.post("/tokens", &with_csrf).expect(201);
    let secret = element(&made.html, "id=\"token-secret\"", "</code>");
    let secret = &secret[secret.find('>').unwrap() + 1..secret.len() - "</code>".len()];
    assert!(secret.starts_with("contera_"), "{secret}");
    assert!(made
        .html
        .contains("data-copy=\"token-secret\">Copy</button>"));

    // It works on the API as a bearer, with what it was given and no more.
    let bearer = api.with_token(secret);
    bearer.get("/accounts").expect(200);
    bearer.get("/audit").expect(403);

    // Listed without the secret, expiring in 30 days.
    let page = console.get("/tokens").expect(200);
    assert!(!page.html.contains(secret));
    let token_id = attr_after(&page.html, "data-token=", "data-token").expect("a token row");
    let row = element(&page.html, &format!("data-token=\"{token_id}\""), "</tr>");
    assert!(
        row.contains("inventory script") && row.contains("in 30 days"),
        "{row}"
    );
    assert!(
        row.contains(">Active</span>") && row.contains(">Revoke</button>"),
        "{row}"
    );

    // Revoking without the CSRF field changes nothing; with it, the token stops working.
    let revoke = format!("/tokens/{token_id}/revoke");
    console.post(&revoke, &[]).expect(403);
    bearer.get("/accounts").expect(200);
    let revoked = console.post(&revoke, &[("csrf", &csrf)]);
    assert_eq!(revoked.redirect(), "/tokens?done=revoked");
    bearer.get("/accounts").expect(401);
    let page = console.get(revoked.redirect()).expect(200);
    assert!(page.html.contains("The token is revoked"));
    let row = element(&page.html, &format!("data-token=\"{token_id}\""), "</tr>");
    assert!(
        row.contains(">Revoked</span>") && !row.contains(">Revoke</button>"),
        "{row}"
    );
    // Someone else's (or an unknown) token: 404.
    console
        .post(
            "/tokens/00000000-0000-4000-8000-000000000000/revoke",
            &[("csrf", &csrf)],
        )
        .expect(404);
}
