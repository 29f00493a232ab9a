//! The web console in headless Chromium, as people use it: the whole flow from
//! the operator's first partner administrator to a recorder online on a customer's page,
//! at a laptop's and a phone's size, with two people in two browser profiles at once,
//! every page screenshotted and checked with axe-core.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use contera_e2e::admin::{find_link, is_hex, outbox, GOOD_PASSWORD};
use contera_e2e::browser::{
    assert_no_failing_violations, keep_screenshot, tools_or_skip, Browser, Console, Recording,
    Viewport, STEP_TIMEOUT,
};
use contera_e2e::{wait_for, Agent};
use contera_protocol::code::RegistrationCode;
use serde_json::{json, Value};

/// A tiny HTTP server on loopback for the harness's own test: fixed pages under a strict
/// CSP (no inline script), a form that echoes what was posted, a cookie setter.
fn fixture_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request = String::new();
                if reader.read_line(&mut request).is_err() {
                    return;
                }
                let mut length = 0usize;
                loop {
                    let mut header = String::new();
                    if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
                        break;
                    }
                    if let Some(v) = header.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0u8; length];
                let _ = reader.read_exact(&mut body);
                let body = String::from_utf8_lossy(&body).into_owned();
                let path = request.split_whitespace().nth(1).unwrap_or("/").to_string();
                let page = |title: &str, main: &str| {
                    format!(
                        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
                         <title>{title}</title></head><body><main><h1>{title}</h1>{main}\
                         </main></body></html>"
                    )
                };
                let (cookie, html) = match path.as_str() {
                    "/form" => (
                        None,
                        page(
                            "Form",
                            "<form method=\"post\" action=\"/done\">\
                             <label for=\"email\">Email</label><input id=\"email\" name=\"email\">\
                             <label for=\"kind\">Kind</label><select id=\"kind\" name=\"kind\">\
                             <option value=\"partner\">Partner</option>\
                             <option value=\"customer\">Customer</option></select>\
                             <input type=\"checkbox\" id=\"age\" name=\"age\">\
                             <label for=\"age\">I confirm I am at least 18 years old</label>\
                             <button type=\"submit\">Log in</button></form>",
                        ),
                    ),
                    "/done" => (
                        None,
                        page(
                            "Done",
                            &format!("<p id=\"echo\">{}</p>", body.replace('<', "&lt;")),
                        ),
                    ),
                    "/bad" => (None, page("Bad", "<img src=\"/nothing.png\">")),
                    "/set" => (Some("who=one; Path=/"), page("Set", "<p>set</p>")),
                    "/copy" => (
                        None,
                        page(
                            "Copy",
                            "<code id=\"code\">K7QD-2M9X</code><button type=\"button\" \
                             id=\"copy\">Copy</button><script src=\"/copy.js\"></script>",
                        ),
                    ),
                    "/copy.js" => (
                        None,
                        "document.getElementById('copy').addEventListener('click', () => \
                         navigator.clipboard.writeText(document.getElementById('code').textContent));"
                            .to_string(),
                    ),
                    _ => (None, page("Home", "<p>home</p>")),
                };
                let mut head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/html; charset=utf-8\r\n\
                     content-security-policy: default-src 'self'; frame-ancestors 'none'\r\n\
                     content-length: {}\r\nconnection: close\r\n",
                    html.len()
                );
                if let Some(cookie) = cookie {
                    head.push_str(&format!("set-cookie: {cookie}\r\n"));
                }
                head.push_str("\r\n");
                let mut stream = stream;
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(html.as_bytes());
            });
        }
    });
    port
}

/// The harness itself, on fixed pages: fields by label and id, a select, a checkbox, a
/// button by its text, waits, both window sizes, two profiles with separate cookies,
/// screenshots, and axe-core injected past a CSP that forbids inline scripts.
#[test]
fn the_browser_harness_drives_pages_at_both_sizes_in_two_profiles() {
    let Some(tools) = contera_e2e::browser::tools_or_skip(
        "the_browser_harness_drives_pages_at_both_sizes_in_two_profiles",
    ) else {
        return;
    };
    let base = format!("http://127.0.0.1:{}", fixture_server());
    let recording = Recording::new("harness");
    let mut one = Browser::start(&tools, &recording, "one", Viewport::Laptop);
    let two = Browser::start(&tools, &recording, "two", Viewport::Phone);
    assert_eq!(one.inner_size(), (1366, 768));
    assert_eq!(two.inner_size(), (390, 844));

    one.open(&format!("{base}/form"));
    one.fill("Email", "jo@example.com");
    one.select("#kind", "customer");
    assert_eq!(one.selected("kind"), "customer");
    one.check("I confirm I am at least 18 years old");
    let shot = one.screenshot("form");
    assert!(shot.ends_with("01-form-laptop.png"), "{}", shot.display());
    assert!(std::fs::metadata(&shot).unwrap().len() > 1000);
    one.assert_accessible("form");
    one.click_button("Log in");
    one.wait_for_element("#echo");
    assert_eq!(one.path(), "/done");
    assert_eq!(
        one.text("#echo"),
        "email=jo%40example.com&kind=customer&age=on"
    );

    // axe-core finds what it should, here an image without a text alternative.
    one.open(&format!("{base}/bad"));
    let violations = one.axe_check("bad");
    assert!(
        violations.iter().any(|v| v.id == "image-alt" && v.fails()),
        "{violations:?}"
    );

    // Two profiles at once share no cookies.
    one.open(&format!("{base}/set"));
    two.open(&format!("{base}/"));
    let cookie = |b: &Browser| b.execute("return document.cookie;", vec![]);
    assert_eq!(cookie(&one), "who=one");
    assert_eq!(cookie(&two), "");
    two.screenshot("home");

    // A button that copies: the clipboard, read back by the page, holds the text.
    two.open(&format!("{base}/copy"));
    two.grant_permission("clipboard-read");
    two.click_button("Copy");
    two.assert_text("#code", "K7QD-2M9X");
    let copied = two.wait_until(STEP_TIMEOUT, "the copied text", |b| {
        b.clipboard_text().ok().filter(|t| !t.is_empty())
    });
    assert_eq!(copied, "K7QD-2M9X");

    one.set_viewport(Viewport::Phone);
    assert_eq!(one.inner_size(), (390, 844));
    let shot = one.screenshot("set");
    assert!(shot.ends_with("03-set-phone.png"), "{}", shot.display());

    let summary = recording.axe_summary();
    println!("{summary}");
    assert!(
        summary.starts_with("axe-core: 2 pages checked"),
        "{summary}"
    );
}

/// Seconds between recorder heartbeats on the flow's server: the recorders table must
/// follow within one.
const HEARTBEAT_SECS: u32 = 2;

/// A page seen in the flow: screenshotted at the laptop's and the phone's size (from its
/// top) and checked with axe-core at both (its violations recorded, the serious ones
/// failing the test at the end); the browser is back at the laptop's size after. Returns
/// both screenshots.
fn visit(browser: &mut Browser, step: &str) -> (PathBuf, PathBuf) {
    visit_at(browser, step, None)
}

/// [`visit`] with the element `anchor` scrolled to the top of the screenshots.
fn visit_at(browser: &mut Browser, step: &str, anchor: Option<&str>) -> (PathBuf, PathBuf) {
    browser.set_viewport(Viewport::Laptop);
    browser.scroll_to(anchor);
    let laptop = browser.screenshot(step);
    browser.axe_check(step);
    browser.set_viewport(Viewport::Phone);
    browser.scroll_to(anchor);
    let phone = browser.screenshot(step);
    browser.axe_check(step);
    browser.set_viewport(Viewport::Laptop);
    (laptop, phone)
}

/// Prints the axe summary where it is seen (straight to stderr, which the test runner does
/// not capture) and keeps it beside the screenshots, also when the test fails half-way.
struct AxeSummary(Arc<Recording>);

impl Drop for AxeSummary {
    fn drop(&mut self) {
        let summary = self.0.axe_summary();
        let _ = std::fs::write(self.0.dir.join("axe-summary.txt"), &summary);
        let _ = writeln!(
            std::io::stderr(),
            "\n{summary}screenshots: {}",
            self.0.dir.display()
        );
    }
}

/// The account id in a path `/accounts/{id}`.
fn account_in(path: &str) -> Option<String> {
    let id = path.strip_prefix("/accounts/")?;
    (!id.is_empty() && !id.contains('/')).then(|| id.to_string())
}

/// The status `curl` gets for `path` on the console with the browser's cookies, and the body.
fn get_with_cookies(console: &Console, browser: &Browser, path: &str) -> (u16, String) {
    let cookies: Vec<String> = browser
        .cookies()
        .into_iter()
        .map(|(n, v)| format!("{n}={v}"))
        .collect();
    let out = Command::new("curl")
        .args(["-sS", "-w", "\n%{http_code}", "--cacert"])
        .arg(console.server.ca_file())
        .arg("-H")
        .arg(format!("cookie: {}", cookies.join("; ")))
        .arg(console.at(path))
        .output()
        .expect("curl runs");
    let all = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = all.rsplit_once('\n').expect("status line");
    (
        status.trim().parse().expect("HTTP status"),
        body.to_string(),
    )
}

/// Accepts an invitation in `browser` at `link` (on the console): password, age, terms,
/// Save; waits for the account page and returns its path.
fn accept_invitation(browser: &mut Browser, link: &str, step: &str) -> String {
    browser.open(link);
    browser.wait_for_element("#password");
    visit(browser, step);
    // The boxes say what is agreed to; the terms are a link away.
    let labels = |id: &str| {
        browser.execute(
            "const e = document.getElementById(arguments[0]);\
             return Array.from(e.labels || []).map((l) => ({\
               text: l.innerText.replace(/\\s+/g, ' ').trim(),\
               links: l.querySelectorAll('a[href]').length }));",
            vec![json!(id)],
        )
    };
    let age = labels("age");
    assert_eq!(
        age[0]["text"], "I confirm I am at least 18 years old",
        "labels of #age: {age}"
    );
    let terms = labels("terms");
    assert!(
        terms
            .as_array()
            .is_some_and(|ls| ls.iter().any(|l| l["links"].as_u64() > Some(0))),
        "no link to the terms in the label of #terms: {terms}"
    );
    browser.fill("#password", GOOD_PASSWORD);
    browser.check("#age");
    browser.check("#terms");
    browser.click_button("Save");
    browser.wait_for_path("the account page after accepting", |p| {
        account_in(p).is_some()
    })
}

/// The whole flow. The operator makes a partner and its first administrator with the
/// CLI; in one browser profile that administrator accepts, logs in and creates a customer
/// with its first user; in a second profile the customer's administrator accepts from the
/// mail, logs in, copies the registration code, watches a real agent enroll with it come
/// online without reloading, and adds a user in a group that may only view recorders; the
/// partner sees the recorder in the customer's page; a user of a sibling account typing the
/// customer's URLs gets "Not found". Every page is screenshotted at 1366×768 and 390×844 and
/// checked with axe-core.
#[test]
fn a_partner_onboards_a_customer_whose_recorder_shows_online_in_the_console() {
    const TEST: &str = "a_partner_onboards_a_customer_whose_recorder_shows_online_in_the_console";
    let Some(tools) = tools_or_skip(TEST) else {
        return;
    };
    let console = Console::start(HEARTBEAT_SECS);
    let server = &console.server;
    let recording = Recording::new("whole_flow");
    let summary = AxeSummary(recording.clone());
    let mut docs: Vec<(PathBuf, &str)> = Vec::new();

    // The operator: the partner account and its first administrator, with the CLI.
    let (partner, _) = server.create_account("Acme Integrators", "partner", None);
    let invited = server.admin_json(&[
        "users",
        "invite",
        "--account",
        &partner,
        "--email",
        "jo@acme.example",
        "--name",
        "Jo Doe",
        "--base-url",
        &console.url,
    ]);
    let link = invited["accept_link"].as_str().expect("accept_link");
    let token = invited["token"].as_str().expect("token");
    assert!(is_hex(token, 64), "{token}");
    assert_eq!(
        link,
        console.at(&format!("/invitations/accept#token={token}"))
    );

    // Profile 1: Jo accepts, which logs her in on her account's page.
    let mut jo = Browser::start(&tools, &recording, "jo", Viewport::Laptop);
    let landed = accept_invitation(&mut jo, link, "accept-invitation");
    assert_eq!(landed, format!("/accounts/{partner}"));

    // Jo logs in again from the login page, as she will every day.
    jo.delete_cookies();
    jo.open(&console.at("/login"));
    jo.wait_for_element("#email");
    let (login, _) = visit(&mut jo, "login");
    docs.push((login, "login.png"));
    let forgot = jo
        .link_href("Forgot password?")
        .unwrap_or_else(|| jo.fail("no \"Forgot password?\" link"));
    assert_eq!(forgot, console.at("/password/forgot"));
    jo.fill("#email", "jo@acme.example");
    jo.fill("#password", GOOD_PASSWORD);
    jo.click_button("Log in");
    let landed = jo.wait_for_path("the account page after logging in", |p| {
        account_in(p).is_some()
    });
    assert_eq!(landed, format!("/accounts/{partner}"));
    jo.wait_for_element("h1");
    jo.assert_text("h1", "Acme Integrators");
    jo.ensure(jo.exists("nav[aria-label=\"Breadcrumb\"]"), || {
        format!("no {}", "nav[aria-label=\"Breadcrumb\"]")
    });
    jo.ensure(jo.exists("#codes"), || format!("no {}", "#codes"));
    jo.ensure(jo.exists("#subaccounts"), || {
        format!("no {}", "#subaccounts")
    });
    assert!(
        jo.text("#recorders").contains("No recorders yet"),
        "{}",
        jo.text("#recorders")
    );
    assert_eq!(
        jo.attr("a#settings", "href")
            .map(|h| h.ends_with(&format!("/accounts/{partner}/users"))),
        Some(true)
    );
    visit(&mut jo, "partner-account");

    // Jo creates the customer with its first user.
    assert_eq!(
        jo.link_href("+ Add new account"),
        Some(console.at(&format!("/accounts/new?parent={partner}")))
    );
    jo.click_link("+ Add new account");
    jo.wait_for_element("select#kind");
    assert_eq!(jo.path(), format!("/accounts/new?parent={partner}"));
    jo.select("#kind", "customer");
    jo.fill("#name", "Store 12");
    jo.fill("#address", "1 Main St, Springfield");
    jo.fill("#contact", "Ann Lee, +1 555 0100");
    jo.fill("#first_user_name", "Ann Lee");
    jo.fill("#first_user_email", "ann@store12.example");
    let (add_account, _) = visit(&mut jo, "add-account");
    docs.push((add_account, "add-account.png"));
    jo.click_button("Create account");
    let customer_path = jo.wait_for_path("the new account's page", |p| {
        account_in(p).is_some_and(|id| id != partner)
    });
    let customer = account_in(&customer_path).unwrap();
    jo.wait_for_element("h1");
    jo.assert_text("h1", "Store 12");
    assert!(
        jo.text("nav[aria-label=\"Breadcrumb\"]")
            .contains("Acme Integrators"),
        "breadcrumbs: {}",
        jo.text("nav[aria-label=\"Breadcrumb\"]")
    );
    visit(&mut jo, "customer-account-created");

    // The customer's first user got the "Account Invitation" mail with a link.
    let mail = wait_for(Duration::from_secs(30), "the mail to Ann", || {
        outbox(server)
            .into_iter()
            .find(|m| m.to.contains("ann@store12.example"))
    });
    assert!(
        mail.subject.contains("Account Invitation"),
        "{}",
        mail.subject
    );
    let (ann_link, ann_token) =
        find_link(&mail.plain, "/invitations/accept#token=").expect("accept link in the mail");
    assert!(is_hex(&ann_token, 64), "{ann_link}");
    // The link opens the console (not the device port, whose client-certificate request
    // makes browsers ask their user to pick a certificate).
    assert!(
        ann_link.contains(&format!(":{}/invitations/accept#token=", console.port)),
        "{ann_link} is not on the console's port {}",
        console.port
    );

    // Profile 2, at the same time: Ann accepts from the mail, then logs in.
    let mut ann = Browser::start(&tools, &recording, "ann", Viewport::Laptop);
    let landed = accept_invitation(&mut ann, &console.rebase(&ann_link), "ann-accepts");
    assert_eq!(landed, format!("/accounts/{customer}"));
    ann.delete_cookies();
    ann.open(&console.at("/login"));
    ann.wait_for_element("#email");
    ann.fill("#email", "ann@store12.example");
    ann.fill("#password", GOOD_PASSWORD);
    ann.click_button("Log in");
    let landed = ann.wait_for_path("Ann's account page", |p| account_in(p).is_some());
    assert_eq!(landed, format!("/accounts/{customer}"));
    ann.wait_for_element("#codes tr[data-code]");
    ann.assert_text("h1", "Store 12");

    // She sees the registration code whole, and copies it.
    let public_id = ann
        .attr("#codes tr[data-code]", "data-code")
        .expect("data-code");
    let row = format!("#codes tr[data-code=\"{public_id}\"]");
    let shown = ann.text(&format!("{row} code.registration-code"));
    let code: RegistrationCode = shown
        .parse()
        .unwrap_or_else(|e| ann.fail(&format!("{shown:?} is no registration code: {e:?}")));
    assert_eq!(code.public_id(), public_id);
    ann.grant_permission("clipboard-read");
    ann.click_button_in(Some(&row), "Copy");
    let copied = ann.wait_until(STEP_TIMEOUT, "the code on the clipboard", |b| {
        b.clipboard_text().ok().filter(|t| !t.is_empty())
    });
    assert_eq!(
        copied.parse::<RegistrationCode>().ok().map(|c| c.compact()),
        Some(code.compact()),
        "copied {copied:?}, shown {shown:?}"
    );
    assert!(ann.text("#recorders").contains("No recorders yet"));
    visit(&mut ann, "customer-account-code");

    // A real agent enrolls with the code Ann copied; her open page follows by itself.
    ann.execute("window.__conteraNotReloaded = true;", vec![]);
    let agent = Agent::start(server, "NVR-0001");
    let joined = agent
        .enroll(&copied)
        .expect("the agent enrolls with the copied code");
    assert_eq!(joined["account"]["id"], customer.as_str());
    let recorder = joined["recorder_id"].as_str().unwrap().to_string();
    wait_for(
        Duration::from_secs(30),
        "the server to list it online",
        || (server.recorder(&recorder)["online"] == true).then_some(()),
    );
    let online_at = Instant::now();
    let badge = format!("#recorders tr[data-recorder=\"{recorder}\"] .badge");
    ann.wait_until(
        Duration::from_secs(u64::from(HEARTBEAT_SECS) + 1),
        "the recorder shown Online within one heartbeat interval",
        |b| (b.exists(&badge) && b.text(&badge) == "Online").then_some(()),
    );
    let took = online_at.elapsed();
    assert_eq!(
        ann.execute("return window.__conteraNotReloaded === true;", vec![]),
        Value::Bool(true),
        "the page was reloaded instead of updating itself"
    );
    assert!(!ann.text("#recorders").contains("No recorders yet"));
    assert!(ann
        .text(&format!("#recorders tr[data-recorder=\"{recorder}\"]"))
        .contains("NVR-0001"));
    visit_at(&mut ann, "customer-account-online", Some("#recorders"));
    // The whole page for the README, at both sizes.
    docs.push((
        ann.full_page_screenshot("customer-account-online-full"),
        "account-online.png",
    ));
    ann.set_viewport(Viewport::Phone);
    docs.push((
        ann.screenshot("customer-account-online-top"),
        "account-phone.png",
    ));
    ann.set_viewport(Viewport::Laptop);
    eprintln!("the recorders table showed the recorder online {took:?} after the server did");

    // Ann makes a group that may only view recorders, then adds a user to it.
    ann.open(&console.at(&format!("/accounts/{customer}/groups")));
    ann.wait_for_element("#group_name");
    visit(&mut ann, "groups");
    ann.fill("#group_name", "Viewers");
    // Each group's "Change permissions" form has the same boxes: these are the new group's.
    ann.execute(
        "document.getElementById('group_name').form.setAttribute('data-new-group', '');",
        vec![],
    );
    let permission =
        |p: &str| format!("form[data-new-group] input[name=\"permissions\"][value=\"{p}\"]");
    let all = ann.values("form[data-new-group] input[name=\"permissions\"]");
    assert!(
        all.iter().any(|p| p == "recorders.view"),
        "permissions offered: {all:?}"
    );
    for p in &all {
        if p == "recorders.view" {
            ann.check(&permission(p));
        } else {
            ann.uncheck(&permission(p));
        }
    }
    ann.click_button("Create group");
    ann.wait_for_text("Viewers");

    ann.open(&console.at(&format!("/accounts/{customer}")));
    ann.wait_for_element("a#settings");
    ann.click("a#settings");
    ann.wait_for_path("the users page", |p| {
        p == format!("/accounts/{customer}/users")
    });
    ann.wait_for_element("#user_name");
    assert_eq!(ann.selected_text("#group"), "Administrators");
    ann.fill("#user_name", "Sam Viewer");
    ann.fill("#user_email", "sam@store12.example");
    ann.select("#group", "Viewers");
    ann.click_button("Add user");
    let sam_row = "tr[data-user=\"sam@store12.example\"]";
    ann.wait_for_element(sam_row);
    // Still invited: the invitation can be sent again (the API disables only active users).
    let buttons = ann.texts(&format!("{sam_row} button"));
    ann.ensure(buttons.iter().any(|b| b == "Resend invitation"), || {
        format!("no \"Resend invitation\" for an invited user: {buttons:?}")
    });
    ann.ensure(ann.text(sam_row).contains("Viewers"), || {
        format!("Sam's row does not show the group: {}", ann.text(sam_row))
    });
    let (users, _) = visit(&mut ann, "users");
    docs.push((users, "users.png"));
    let sam_mail = wait_for(Duration::from_secs(30), "the mail to Sam", || {
        outbox(server)
            .into_iter()
            .find(|m| m.to.contains("sam@store12.example"))
    });
    let (sam_link, _) = find_link(&sam_mail.plain, "/invitations/accept#token=").expect("link");

    // Sam, who may only view recorders, sees the recorder online but not the code.
    let mut sam = Browser::start(&tools, &recording, "sam", Viewport::Laptop);
    let landed = accept_invitation(&mut sam, &console.rebase(&sam_link), "sam-accepts");
    assert_eq!(landed, format!("/accounts/{customer}"));
    sam.wait_for_element(&badge);
    sam.assert_text(&badge, "Online");
    assert_eq!(
        sam.count("code.registration-code"),
        0,
        "Sam may not see codes"
    );
    visit(&mut sam, "viewer-account");

    // Now active, Sam can be disabled; his open session ends with it.
    ann.open(&console.at(&format!("/accounts/{customer}/users")));
    ann.wait_for_element(sam_row);
    let buttons = ann.texts(&format!("{sam_row} button"));
    ann.ensure(buttons.iter().any(|b| b == "Disable"), || {
        format!("no \"Disable\" for an active user: {buttons:?}")
    });
    ann.click_button_in(Some(sam_row), "Disable");
    ann.wait_until(STEP_TIMEOUT, "Sam's row to say Disabled", |b| {
        (b.exists(sam_row) && b.text(sam_row).contains("Disabled")).then_some(())
    });
    sam.reload();
    sam.wait_for_path("the login page for a disabled user's session", |p| {
        p == "/login"
    });
    drop(sam);

    // Jo, in the partner's page, finds the customer and its recorder.
    jo.open(&console.at(&format!("/accounts/{partner}")));
    jo.wait_for_element("#subaccounts");
    jo.click(&format!("#subaccounts a[href$=\"/accounts/{customer}\"]"));
    jo.wait_for_path("the customer's page from the partner's", |p| {
        p == format!("/accounts/{customer}")
    });
    jo.wait_for_element(&badge);
    jo.assert_text(&badge, "Online");
    visit_at(&mut jo, "partner-sees-recorder", Some("#recorders"));
    drop(jo);

    // A user of a sibling account types the customer's URLs by hand: "Not found", exactly
    // as for ids that do not exist.
    let (sibling, _) = server.create_account("Store 13", "customer", Some(&partner));
    let invited = server.admin_json(&[
        "users",
        "invite",
        "--account",
        &sibling,
        "--email",
        "lee@store13.example",
        "--name",
        "Lee Park",
        "--base-url",
        &console.url,
    ]);
    let mut lee = Browser::start(&tools, &recording, "lee", Viewport::Laptop);
    let landed = accept_invitation(
        &mut lee,
        invited["accept_link"].as_str().unwrap(),
        "sibling-accepts",
    );
    assert_eq!(landed, format!("/accounts/{sibling}"));
    let unknown = "00000000-0000-4000-8000-000000000000";
    for path in [
        format!("/accounts/{customer}"),
        format!("/accounts/{customer}/users"),
        format!("/accounts/{customer}/groups"),
        format!("/accounts/new?parent={customer}"),
        format!("/recorders/{recorder}"),
        format!("/accounts/{unknown}"),
        format!("/recorders/{unknown}"),
    ] {
        lee.open(&console.at(&path));
        lee.wait_for_text("Not found");
        let text = lee.body_text();
        for secret in [
            "Store 12",
            "NVR-0001",
            shown.as_str(),
            "ann@store12.example",
        ] {
            assert!(
                !text.contains(secret),
                "{path} shows {secret:?} to a sibling:\n{text}"
            );
        }
        let (status, _) = get_with_cookies(&console, &lee, &path);
        assert_eq!(status, 404, "{path}");
    }
    visit(&mut lee, "sibling-not-found");
    drop(lee);
    drop(ann);
    drop(agent);

    // The pictures for the README, when asked for.
    if std::env::var_os("CONTERA_UPDATE_DOCS_SCREENSHOTS").is_some_and(|v| v == "1") {
        let docs_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/console");
        for (from, name) in &docs {
            keep_screenshot(from, &docs_dir.join(name));
        }
    }
    drop(summary);
    assert_no_failing_violations(&recording);
}
