//! Every form of the web console refuses a POST without its `csrf` field or with a wrong
//! one (403, and a page saying so), the login form too, and nothing happens when it does;
//! and every page forbids inline scripts and framing. Over HTTP with `curl`, an
//! independent client, no browser needed: the forms are found by fetching each page with a
//! logged-in session and reading its `<form method="post">` elements.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::process::Command;

use contera_e2e::admin::{first_administrator, invite_and_accept, sql, GOOD_PASSWORD};
use contera_e2e::browser::Console;
use contera_e2e::enroll_with_curl;
use serde_json::json;

/// One answer: status, headers (lowercase names), body.
#[derive(Debug)]
struct Page {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Page {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A visitor of the console with its own cookie jar, as a browser is; sends the console's
/// own `Origin` with every POST, as a browser does for a form of the page.
struct Visitor {
    base: String,
    ca: PathBuf,
    jar: tempfile::TempDir,
}

impl Visitor {
    fn new(console: &Console) -> Visitor {
        Visitor {
            base: console.url.clone(),
            ca: console.server.ca_file(),
            jar: tempfile::tempdir().expect("cookie jar"),
        }
    }

    fn request(&self, path: &str, form: Option<&[(String, String)]>) -> Page {
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
            cmd.arg("-H").arg(format!("origin: {}", self.base));
            if fields.is_empty() {
                cmd.args(["--data", ""]);
            }
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
        let head = std::fs::read_to_string(&head).unwrap_or_default();
        Page {
            status: status.trim().parse().expect("HTTP status"),
            headers: head
                .lines()
                .filter_map(|l| l.split_once(':'))
                .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
                .collect(),
            body: body.to_string(),
        }
    }

    fn get(&self, path: &str) -> Page {
        self.request(path, None)
    }

    fn post(&self, path: &str, fields: &[(String, String)]) -> Page {
        self.request(path, Some(fields))
    }

    /// Logs in through the console's login form (with its csrf field); panics unless the
    /// answer is a redirect.
    fn log_in(&self, email: &str, password: &str) {
        let page = self.get("/login");
        assert_eq!(page.status, 200, "GET /login: {}", page.body);
        let form = forms(&page.body, "/login")
            .into_iter()
            .find(|f| f.field_by_id("password").is_some())
            .unwrap_or_else(|| panic!("no login form with #password on /login:\n{}", page.body));
        let mut fields = form.fields.clone();
        form.set_by_id(&mut fields, "email", email);
        form.set_by_id(&mut fields, "password", password);
        let answer = self.post(&form.action, &fields);
        assert!(
            matches!(answer.status, 302 | 303),
            "logging in answered {}: {}",
            answer.status,
            answer.body
        );
    }
}

/// A `<form method="post">` as found on a page: where it posts, and the fields a browser
/// would send without anyone touching it (hidden fields, values, ticked boxes, the
/// selected option), with the ids of the controls by name.
#[derive(Debug, Clone)]
struct Form {
    page: String,
    action: String,
    fields: Vec<(String, String)>,
    ids: BTreeMap<String, String>,
}

impl Form {
    fn field_by_id(&self, id: &str) -> Option<&str> {
        self.ids.get(id).map(String::as_str)
    }

    fn set_by_id(&self, fields: &mut Vec<(String, String)>, id: &str, value: &str) {
        let name = self
            .field_by_id(id)
            .unwrap_or_else(|| panic!("no #{id} in the form of {}", self.page))
            .to_string();
        fields.retain(|(n, _)| *n != name);
        fields.push((name, value.to_string()));
    }

    fn has_csrf(&self) -> bool {
        self.fields.iter().any(|(n, _)| n == "csrf")
    }

    /// The form's fields without `csrf`, or with its value replaced by `csrf`.
    fn with_csrf(&self, csrf: Option<&str>) -> Vec<(String, String)> {
        let mut fields: Vec<(String, String)> = self
            .fields
            .iter()
            .filter(|(n, _)| n != "csrf")
            .cloned()
            .collect();
        if let Some(value) = csrf {
            fields.push(("csrf".into(), value.into()));
        }
        fields
    }

    fn csrf(&self) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == "csrf")
            .map(|(_, v)| v.as_str())
    }
}

/// One HTML tag: its name (lowercase, `/form` for an end tag), its attributes, and where
/// it ends in the text.
struct Tag {
    name: String,
    attrs: BTreeMap<String, String>,
    end: usize,
}

fn decode_entities(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#34;", "\"")
        .replace("&#39;", "'")
        .replace("&#x27;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// The tag starting at `at` (a `<`), or None for comments, doctypes and stray `<`.
fn tag_at(html: &str, at: usize) -> Option<Tag> {
    let bytes = html.as_bytes();
    let mut i = at + 1;
    let start = i;
    while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'/') {
        i += 1;
    }
    let name = html[start..i].to_ascii_lowercase();
    if name.is_empty() || name == "/" {
        return None;
    }
    let mut attrs = BTreeMap::new();
    loop {
        while i < bytes.len() && (bytes[i].is_ascii_whitespace() || bytes[i] == b'/') {
            i += 1;
        }
        if i >= bytes.len() {
            return None;
        }
        if bytes[i] == b'>' {
            return Some(Tag {
                name,
                attrs,
                end: i + 1,
            });
        }
        let key_start = i;
        while i < bytes.len() && !b" \t\r\n=>/".contains(&bytes[i]) {
            i += 1;
        }
        let key = html[key_start..i].to_ascii_lowercase();
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let mut value = String::new();
        if i < bytes.len() && bytes[i] == b'=' {
            i += 1;
            while i < bytes.len() && bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            if i < bytes.len() && (bytes[i] == b'"' || bytes[i] == b'\'') {
                let quote = bytes[i];
                let value_start = i + 1;
                i = value_start;
                while i < bytes.len() && bytes[i] != quote {
                    i += 1;
                }
                value = decode_entities(&html[value_start..i.min(bytes.len())]);
                i += 1;
            } else {
                let value_start = i;
                while i < bytes.len() && !bytes[i].is_ascii_whitespace() && bytes[i] != b'>' {
                    i += 1;
                }
                value = decode_entities(&html[value_start..i]);
            }
        }
        if !key.is_empty() {
            attrs.insert(key, value);
        }
    }
}

/// Every tag of a page, in order, with the text that follows each up to the next tag.
fn tags(html: &str) -> Vec<(Tag, String)> {
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(offset) = html[i..].find('<') {
        let at = i + offset;
        if html[at..].starts_with("<!--") {
            i = html[at..]
                .find("-->")
                .map(|e| at + e + 3)
                .unwrap_or(html.len());
            continue;
        }
        match tag_at(html, at) {
            Some(tag) => {
                let text_end = html[tag.end..]
                    .find('<')
                    .map(|e| tag.end + e)
                    .unwrap_or(html.len());
                let text = html[tag.end..text_end].to_string();
                i = tag.end;
                out.push((tag, text));
            }
            None => i = at + 1,
        }
    }
    out
}

/// Where a form or link on `page` leads: its path (with query), on this console only.
fn resolve(page: &str, target: &str) -> Option<String> {
    let target = target.split('#').next().unwrap_or("");
    if target.is_empty() {
        return Some(page.to_string());
    }
    if let Some(rest) = target
        .strip_prefix("https://localhost:")
        .or_else(|| target.strip_prefix("https://127.0.0.1:"))
    {
        // Absolute links to the console itself (any port: the page only knows its own).
        let path = rest.find('/').map(|i| &rest[i..]).unwrap_or("/");
        return Some(path.to_string());
    }
    if target.starts_with('/') && !target.starts_with("//") {
        return Some(target.to_string());
    }
    if target.contains(':') || target.starts_with("//") {
        return None;
    }
    let dir = page.split('?').next().unwrap_or("/");
    let dir = &dir[..dir.rfind('/').map(|i| i + 1).unwrap_or(0)];
    Some(format!("{dir}{target}"))
}

/// The `<form method="post">` elements of a page at `page`.
fn forms(html: &str, page: &str) -> Vec<Form> {
    let mut found = Vec::new();
    let mut current: Option<Form> = None;
    let mut select: Option<(String, Option<String>, Option<String>)> = None;
    for (tag, text) in tags(html) {
        match tag.name.as_str() {
            "form" => {
                let post = tag
                    .attrs
                    .get("method")
                    .is_some_and(|m| m.eq_ignore_ascii_case("post"));
                current = post.then(|| Form {
                    page: page.to_string(),
                    action: resolve(page, tag.attrs.get("action").map_or("", |a| a))
                        .unwrap_or_else(|| page.to_string()),
                    fields: Vec::new(),
                    ids: BTreeMap::new(),
                });
            }
            "/form" => {
                if let Some(form) = current.take() {
                    found.push(form);
                }
            }
            _ => {}
        }
        let Some(form) = current.as_mut() else {
            continue;
        };
        let name = tag.attrs.get("name").cloned();
        if let (Some(id), Some(name)) = (tag.attrs.get("id"), &name) {
            form.ids.insert(id.clone(), name.clone());
        }
        match tag.name.as_str() {
            "input" => {
                let Some(name) = name else { continue };
                let kind = tag
                    .attrs
                    .get("type")
                    .map(|t| t.to_ascii_lowercase())
                    .unwrap_or_else(|| "text".into());
                let value = tag.attrs.get("value").cloned();
                match kind.as_str() {
                    "submit" | "button" | "image" | "reset" | "file" => {}
                    "checkbox" | "radio" => {
                        if tag.attrs.contains_key("checked") {
                            form.fields
                                .push((name, value.unwrap_or_else(|| "on".into())));
                        }
                    }
                    _ => form.fields.push((name, value.unwrap_or_default())),
                }
            }
            "select" => select = name.map(|n| (n, None, None)),
            "option" => {
                if let Some((_, first, chosen)) = select.as_mut() {
                    let value = tag
                        .attrs
                        .get("value")
                        .cloned()
                        .unwrap_or_else(|| decode_entities(text.trim()));
                    if first.is_none() {
                        *first = Some(value.clone());
                    }
                    if tag.attrs.contains_key("selected") {
                        *chosen = Some(value);
                    }
                }
            }
            "/select" => {
                if let Some((name, first, chosen)) = select.take() {
                    if let Some(value) = chosen.or(first) {
                        form.fields.push((name, value));
                    }
                }
            }
            // Its text (up to the next tag) is its value.
            "textarea" => {
                if let Some(name) = name {
                    form.fields.push((name, decode_entities(&text)));
                }
            }
            _ => {}
        }
    }
    found
}

/// The links (`<a href>`) of a page at `page` that stay on the console.
fn links(html: &str, page: &str) -> Vec<String> {
    tags(html)
        .into_iter()
        .filter(|(t, _)| t.name == "a")
        .filter_map(|(t, _)| resolve(page, t.attrs.get("href")?))
        .collect()
}

/// What a logged-in administrator can reach: the console's pages from `seeds`, following
/// links breadth-first (at most `limit` pages; one page per kind of path, ids aside, past
/// the seeds), never a link that logs out. Returns each page fetched with its answer.
fn crawl(visitor: &Visitor, seeds: &[String], limit: usize) -> Vec<(String, Page)> {
    let shape = |path: &str| -> String {
        path.split('?')
            .next()
            .unwrap_or("")
            .split('/')
            .map(|seg| {
                if seg.len() >= 8 && seg.chars().any(|c| c.is_ascii_digit()) {
                    "{id}"
                } else {
                    seg
                }
            })
            .collect::<Vec<_>>()
            .join("/")
    };
    let mut queue: VecDeque<String> = seeds.iter().cloned().collect();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut shapes: BTreeSet<String> = BTreeSet::new();
    let mut pages = Vec::new();
    let mut seeded = seeds.len();
    while let Some(path) = queue.pop_front() {
        let is_seed = seeded > 0;
        seeded = seeded.saturating_sub(1);
        if pages.len() >= limit || !seen.insert(path.clone()) {
            continue;
        }
        if !is_seed && !shapes.insert(shape(&path)) {
            continue;
        }
        if is_seed {
            shapes.insert(shape(&path));
        }
        if path.contains("logout") || path.starts_with("/api/") {
            continue;
        }
        let page = visitor.get(&path);
        if page.status == 200 {
            for link in links(&page.body, &path) {
                if !seen.contains(&link) {
                    queue.push_back(link);
                }
            }
        }
        pages.push((path, page));
    }
    pages
}

/// A partner with an administrator, a customer with its first user, a group, an API token
/// and an enrolled recorder: pages with every kind of form. Returns the console, the
/// administrator's email, and the console paths to start from.
fn populated_console() -> (Console, String, Vec<String>) {
    let console = Console::start(1);
    let server = &console.server;
    let (api, partner, _) = first_administrator(server, "Acme Integrators", "jo@acme.example");
    let created = api
        .post(
            "/accounts",
            &json!({
                "kind": "customer", "name": "Store 12", "address": "1 Main St",
                "first_user": {"name": "Ann Lee", "email": "ann@store12.example"},
            }),
        )
        .expect(201);
    let customer = created.body["account"]["id"]
        .as_str()
        .expect("account id")
        .to_string();
    let group = api
        .post(
            &format!("/accounts/{customer}/groups"),
            &json!({"name": "Viewers", "permissions": ["recorders.view"]}),
        )
        .status;
    assert!(matches!(group, 200 | 201), "group: {group}");
    let token = api
        .post(
            "/tokens",
            &json!({"name": "script", "permissions": ["accounts.view"]}),
        )
        .status;
    assert!(matches!(token, 200 | 201), "token: {token}");
    let code = api
        .get(&format!("/accounts/{customer}/codes"))
        .expect(200)
        .body["items"][0]["public_id"]
        .as_str()
        .expect("a code")
        .to_string();
    let code = api.get(&format!("/codes/{code}")).expect(200).body["registration_code"]
        .as_str()
        .expect("registration_code")
        .to_string();
    // A disabled user and a disabled account, whose pages offer "Enable".
    let (_, kim) = invite_and_accept(server, &partner, "kim@acme.example", "Kim Cho");
    api.post(&format!("/users/{kim}/disable"), &json!({}))
        .expect(200);
    let (closed, _) = server.create_account("Store 14", "customer", Some(&partner));
    api.post(&format!("/accounts/{closed}/disable"), &json!({}))
        .expect(200);
    let scratch = tempfile::tempdir().unwrap();
    let recorder = enroll_with_curl(server, &code, "NVR-CSRF", scratch.path()).recorder_id;
    let seeds = [
        "/".to_string(),
        format!("/accounts/{partner}"),
        format!("/accounts/new?parent={partner}"),
        format!("/accounts/{partner}/users"),
        format!("/accounts/{partner}/groups"),
        format!("/accounts/{customer}"),
        format!("/accounts/{customer}/users"),
        format!("/accounts/{customer}/groups"),
        format!("/recorders/{recorder}"),
        format!("/accounts/{closed}"),
        "/tokens".to_string(),
        "/audit".to_string(),
    ]
    .to_vec();
    (console, "jo@acme.example".to_string(), seeds)
}

/// Pages anyone can open: the login page and those its links and mails lead to.
const ANONYMOUS_PAGES: [&str; 4] = [
    "/login",
    "/password/forgot",
    "/invitations/accept",
    "/password/reset",
];

/// Checks a refusal: 403, an HTML page that says the form was refused.
fn assert_refused(page: &Page, what: &str) {
    assert_eq!(
        page.status, 403,
        "{what}: answered {}:\n{}",
        page.status, page.body
    );
    assert!(
        page.header("content-type")
            .is_some_and(|t| t.starts_with("text/html")),
        "{what}: the refusal is no page: {:?}",
        page.header("content-type")
    );
    let text = page.body.to_lowercase();
    assert!(
        [
            "csrf",
            "security token",
            "expired",
            "refused",
            "forbidden",
            "could not be"
        ]
        .iter()
        .any(|w| text.contains(w)),
        "{what}: the 403 page does not say why:\n{}",
        page.body
    );
}

#[test]
fn every_console_form_refuses_a_post_without_or_with_a_wrong_csrf_field() {
    let (console, email, seeds) = populated_console();
    let server = &console.server;

    // The login form first, as anyone sees it.
    let visitor = Visitor::new(&console);
    let login = visitor.get("/login");
    assert_eq!(login.status, 200);
    let login_form = forms(&login.body, "/login")
        .into_iter()
        .find(|f| f.field_by_id("password").is_some())
        .unwrap_or_else(|| panic!("no login form on /login:\n{}", login.body));
    assert!(login_form.has_csrf(), "the login form has no csrf field");
    let mut fields = login_form.with_csrf(None);
    login_form.set_by_id(&mut fields, "email", &email);
    login_form.set_by_id(&mut fields, "password", GOOD_PASSWORD);
    let logins_before = sql(server, "SELECT count(*) FROM sessions;");
    assert_refused(
        &visitor.post(&login_form.action, &fields),
        "login without csrf",
    );
    let mut wrong = fields.clone();
    wrong.push(("csrf".into(), "0".repeat(64)));
    assert_refused(
        &visitor.post(&login_form.action, &wrong),
        "login with a wrong csrf",
    );
    assert_eq!(
        sql(server, "SELECT count(*) FROM sessions;"),
        logins_before,
        "a refused login made a session"
    );
    // With its own csrf field the same login goes through.
    visitor.log_in(&email, GOOD_PASSWORD);

    // A second session of the same person: its csrf value is a wrong one for the first.
    let other = Visitor::new(&console);
    other.log_in(&email, GOOD_PASSWORD);
    let other_csrf = crawl(&other, &seeds, seeds.len())
        .iter()
        .flat_map(|(path, page)| forms(&page.body, path))
        .find_map(|f| f.csrf().map(str::to_string));

    // Every post form on every page the administrator can reach, and the anonymous ones.
    let mut pages = crawl(&visitor, &seeds, 80);
    let anonymous = Visitor::new(&console);
    for path in ANONYMOUS_PAGES {
        pages.push((format!("{path} (anonymous)"), anonymous.get(path)));
    }
    let mut all_forms: Vec<(bool, Form)> = Vec::new();
    let mut kinds = BTreeSet::new();
    for (path, page) in &pages {
        let is_anonymous = path.ends_with(" (anonymous)");
        let path = path.trim_end_matches(" (anonymous)");
        for form in forms(&page.body, path) {
            let names: Vec<&str> = form.fields.iter().map(|(n, _)| n.as_str()).collect();
            if kinds.insert((form.action.clone(), format!("{names:?}"))) {
                all_forms.push((is_anonymous, form));
            }
        }
    }
    let missing: Vec<String> = all_forms
        .iter()
        .filter(|(_, f)| !f.has_csrf())
        .map(|(_, f)| format!("{} on {}", f.action, f.page))
        .collect();
    assert!(
        missing.is_empty(),
        "forms without a csrf field: {missing:#?}"
    );
    assert!(
        all_forms.len() >= 5,
        "only {} post forms found on {} pages: {:#?}",
        all_forms.len(),
        pages.len(),
        all_forms.iter().map(|(_, f)| &f.action).collect::<Vec<_>>()
    );

    let audit_before = server.audit_actions().len();
    let mut refused = Vec::new();
    for (is_anonymous, form) in &all_forms {
        let who = if *is_anonymous { &anonymous } else { &visitor };
        let without = who.post(&form.action, &form.with_csrf(None));
        assert_refused(
            &without,
            &format!("POST {} (from {}) without csrf", form.action, form.page),
        );
        let garbage = who.post(&form.action, &form.with_csrf(Some("not-a-token")));
        assert_refused(
            &garbage,
            &format!(
                "POST {} (from {}) with a wrong csrf",
                form.action, form.page
            ),
        );
        if !is_anonymous {
            let other_csrf = other_csrf
                .as_deref()
                .expect("a form with a csrf field in the other session");
            let foreign = who.post(&form.action, &form.with_csrf(Some(other_csrf)));
            assert_refused(
                &foreign,
                &format!(
                    "POST {} (from {}) with another session's csrf",
                    form.action, form.page
                ),
            );
        }
        refused.push(format!("{} (from {})", form.action, form.page));
    }
    // Nothing happened: no audit entry for any refused form.
    assert_eq!(
        server.audit_actions().len(),
        audit_before,
        "a refused form changed something"
    );
    // The session still works after all that (a refusal does not end it).
    let home = visitor.get(&seeds[1]);
    assert_eq!(home.status, 200);
    eprintln!(
        "{} forms refused without and with a wrong csrf field:\n  {}",
        refused.len(),
        refused.join("\n  ")
    );
}

#[test]
fn every_console_page_forbids_inline_scripts_and_framing() {
    let (console, email, seeds) = populated_console();
    let visitor = Visitor::new(&console);
    visitor.log_in(&email, GOOD_PASSWORD);
    let mut pages = crawl(&visitor, &seeds, 80);
    let anonymous = Visitor::new(&console);
    for path in ANONYMOUS_PAGES {
        pages.push((path.to_string(), anonymous.get(path)));
    }
    // A page that does not exist, and one outside the administrator's scope, too.
    pages.push((
        "/accounts/00000000-0000-4000-8000-000000000000".into(),
        visitor.get("/accounts/00000000-0000-4000-8000-000000000000"),
    ));
    let mut bad = Vec::new();
    for (path, page) in &pages {
        let csp = page.header("content-security-policy").unwrap_or("");
        let xfo = page.header("x-frame-options").unwrap_or("");
        if csp.is_empty() {
            bad.push(format!(
                "{path} ({}): no Content-Security-Policy",
                page.status
            ));
        } else if csp.contains("unsafe-inline") || csp.contains("unsafe-eval") {
            bad.push(format!("{path}: CSP allows inline or eval: {csp}"));
        }
        let framing_denied = xfo.eq_ignore_ascii_case("deny")
            || csp
                .split(';')
                .any(|d| d.trim().replace("  ", " ") == "frame-ancestors 'none'");
        if !framing_denied {
            bad.push(format!(
                "{path}: framing allowed (X-Frame-Options {xfo:?}, CSP {csp:?})"
            ));
        }
    }
    assert!(bad.is_empty(), "{bad:#?}");
    let not_found = &pages.last().unwrap().1;
    assert_eq!(not_found.status, 404);
    assert!(not_found.body.contains("Not found"), "{}", not_found.body);
    eprintln!(
        "{} console pages checked: {}",
        pages.len(),
        pages
            .iter()
            .map(|(p, _)| p.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
}

#[test]
fn the_form_reader_finds_fields_as_a_browser_would_send_them() {
    let html = r##"<!doctype html><form method="get" action="/audit"><input name="q"></form>
        <!-- <form method="post" action="/commented"> -->
        <form class=x method=POST action="/accounts/a1/users">
          <input type="hidden" name="csrf" value="ab&amp;cd">
          <label for="user_name">Name</label><input id="user_name" name="name">
          <input type='email' id='user_email' name='email' value='x@y'>
          <select id="group" name="group"><option value="g1">Viewers</option>
            <option value="g2" selected>Administrators</option></select>
          <input type="checkbox" name="permissions" value="recorders.view" checked>
          <input type="checkbox" name="permissions" value="codes.view">
          <textarea name="note">hello</textarea>
          <button type="submit" name="go">Add user</button>
        </form>
        <form method="post"><input type="hidden" name="csrf" value="t"></form>
        <a href="/accounts/a1">A</a><a href="https://elsewhere.example/">x</a>
        <a href="groups">g</a><a href="#top">t</a>"##;
    let found = forms(html, "/accounts/a1/users?x=1");
    assert_eq!(found.len(), 2, "{found:#?}");
    assert_eq!(found[0].action, "/accounts/a1/users");
    assert_eq!(
        found[0].fields,
        [
            ("csrf", "ab&cd"),
            ("name", ""),
            ("email", "x@y"),
            ("group", "g2"),
            ("permissions", "recorders.view"),
            ("note", "hello"),
        ]
        .map(|(n, v)| (n.to_string(), v.to_string()))
    );
    assert_eq!(found[0].field_by_id("user_email"), Some("email"));
    assert_eq!(found[0].csrf(), Some("ab&cd"));
    assert_eq!(found[1].action, "/accounts/a1/users?x=1");
    assert_eq!(
        links(html, "/accounts/a1/users"),
        ["/accounts/a1", "/accounts/a1/groups", "/accounts/a1/users"]
    );
}
