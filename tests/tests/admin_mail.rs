//! The admin API's mail, end to end: the real server delivers password-reset and
//! invitation messages to a real SMTP server on loopback (Python's aiosmtpd, storing
//! into a maildir), or without a relay writes them to `DATA/outbox/`; the tests read them
//! as a mail client would (mail-parser) and follow their links through the API.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use contera_e2e::admin::{
    find_link, first_administrator, is_hex, mail_files, sql, wait_for_mail, AdminClient, Answer,
    GOOD_PASSWORD,
};
use contera_e2e::{skip, wait_for, Server};
use mail_parser::{Message, MessageParser, MimeHeaders};
use serde_json::{json, Value};

/// Where links in mail point (`[mail] public_base_url`).
const PUBLIC_BASE_URL: &str = "https://prov.example.test";
const FROM_NAME: &str = "Contera Test";
const FROM_ADDRESS: &str = "contera@prov.example.test";
/// A partner account whose name needs escaping in HTML.
const ACCOUNT_NAME: &str = "Harbour & Sons";
/// The name `first_administrator` gives the account's first administrator: the inviter.
const INVITER_NAME: &str = "First Admin";
const NEW_PASSWORD: &str = "a brand new passphrase for 2026";

const AIOSMTPD_MISSING: &str =
    "python3 -m aiosmtpd is missing (apt-get install python3-aiosmtpd, or pip install aiosmtpd)";

/// A Python that can import aiosmtpd: the one on PATH, else Debian's, which a Python
/// earlier on PATH (pyenv, say) would otherwise hide.
fn aiosmtpd_python() -> Option<&'static str> {
    ["python3", "/usr/bin/python3"].into_iter().find(|python| {
        Command::new(python)
            .args(["-c", "import aiosmtpd"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// `python3 -m aiosmtpd` on a free loopback port, storing every message it accepts in a
/// maildir (its `Mailbox` handler); killed on drop.
struct SmtpServer {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
    maildir: PathBuf,
}

impl SmtpServer {
    fn start(python: &str) -> SmtpServer {
        let dir = tempfile::tempdir().unwrap();
        let maildir = dir.path().join("maildir");
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let mut child = Command::new(python)
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(addr.to_string())
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&maildir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start python3 -m aiosmtpd");
        wait_for(Duration::from_secs(30), "aiosmtpd to accept TCP", || {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("aiosmtpd exited before listening: {status}");
            }
            TcpStream::connect_timeout(&addr, Duration::from_millis(200))
                .ok()
                .map(|_| ())
        });
        SmtpServer {
            child,
            addr,
            _dir: dir,
            maildir,
        }
    }

    /// Where delivered messages land.
    fn new_mail(&self) -> PathBuf {
        self.maildir.join("new")
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn mail_settings() -> String {
    format!(
        "[mail]\npublic_base_url = \"{PUBLIC_BASE_URL}\"\nfrom = \"{FROM_NAME} <{FROM_ADDRESS}>\"\n"
    )
}

/// A provisioning server delivering through `smtp`.
fn server_with_smtp(smtp: &SmtpServer) -> Server {
    Server::start_configured(
        1,
        &format!(
            "{}\n[mail.smtp]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\ntimeout_secs = 20\n",
            mail_settings(),
            smtp.addr.port()
        ),
        &[],
    )
}

/// The SMTP server and a provisioning server using it, or None (skipped) without aiosmtpd.
fn smtp_setup(test: &str) -> Option<(SmtpServer, Server)> {
    let Some(python) = aiosmtpd_python() else {
        skip(test, AIOSMTPD_MISSING);
        return None;
    };
    let smtp = SmtpServer::start(python);
    let server = server_with_smtp(&smtp);
    Some((smtp, server))
}

fn parse(bytes: &[u8]) -> Message<'_> {
    MessageParser::default()
        .parse(bytes)
        .expect("an RFC 5322 message")
}

/// Checks the headers and the two parts of a message to `to` about `subject`; returns
/// (plain, HTML).
fn assert_message(message: &Message<'_>, to: &str, subject: &str) -> (String, String) {
    assert_eq!(message.subject(), Some(subject));
    let from = message.from().and_then(|a| a.first()).expect("From");
    assert_eq!(from.address(), Some(FROM_ADDRESS));
    assert_eq!(from.name(), Some(FROM_NAME));
    let recipient = message.to().and_then(|a| a.first()).expect("To");
    assert_eq!(recipient.address(), Some(to));
    let content_type = message.content_type().expect("Content-Type");
    assert_eq!(content_type.ctype(), "multipart");
    assert_eq!(content_type.subtype(), Some("alternative"));
    assert_eq!(message.text_body_count(), 1, "one text/plain part");
    assert_eq!(message.html_body_count(), 1, "one text/html part");
    (
        message.body_text(0).unwrap().into_owned(),
        message.body_html(0).unwrap().into_owned(),
    )
}

/// The token of the link `{PUBLIC_BASE_URL}{path}#token=<64 hex>`, the same in both parts.
fn link_token(plain: &str, html: &str, path: &str) -> String {
    let marker = format!("{path}#token=");
    let (link, token) = find_link(plain, &marker)
        .unwrap_or_else(|| panic!("no {marker} link in the plain part:\n{plain}"));
    assert!(is_hex(&token, 64), "a 256-bit token: {link}");
    assert_eq!(link, format!("{PUBLIC_BASE_URL}{marker}{token}"));
    let (html_link, _) = find_link(html, &marker)
        .unwrap_or_else(|| panic!("no {marker} link in the HTML part:\n{html}"));
    assert_eq!(html_link, link, "{html}");
    assert!(html.contains(&format!("href=\"{link}\"")), "{html}");
    token
}

/// Invites `email` into `account` through the API (the partner administrator's way);
/// returns the answer, checked against the contract.
fn invite(admin: &AdminClient, account: &str, email: &str, name: &str) -> Answer {
    let invited = admin
        .post(
            &format!("/accounts/{account}/users"),
            &json!({ "email": email, "name": name }),
        )
        .expect(201);
    assert_eq!(
        invited.body["user"]["email"],
        json!(email),
        "{}",
        invited.text
    );
    assert_eq!(
        invited.body["user"]["status"],
        json!("invited"),
        "{}",
        invited.text
    );
    assert_eq!(
        invited.body["user"]["account_id"],
        json!(account),
        "{}",
        invited.text
    );
    assert!(
        !invited.body["invitation_expires_at"].is_null(),
        "{}",
        invited.text
    );
    invited
}

fn user_id(invited: &Answer) -> String {
    invited.body["user"]["id"].as_str().unwrap().to_owned()
}

/// Waits for the invitation to `to` and checks what it says; returns its token.
fn invitation_token(new_mail: &Path, seen: &mut Vec<PathBuf>, to: &str) -> String {
    let bytes = wait_for_mail(new_mail, seen);
    let message = parse(&bytes);
    let (plain, html) = assert_message(&message, to, "Account Invitation");
    assert!(plain.contains(ACCOUNT_NAME), "names the account:\n{plain}");
    assert!(plain.contains(INVITER_NAME), "names the inviter:\n{plain}");
    assert!(
        html.contains("Harbour &amp; Sons"),
        "names the account, escaped:\n{html}"
    );
    assert!(html.contains(INVITER_NAME), "names the inviter:\n{html}");
    link_token(&plain, &html, "/invitations/accept")
}

#[test]
fn a_password_reset_mail_arrives_over_smtp_with_both_parts_and_its_link_works() {
    let Some((smtp, server)) =
        smtp_setup("a_password_reset_mail_arrives_over_smtp_with_both_parts_and_its_link_works")
    else {
        return;
    };
    let (admin, _, _) = first_administrator(&server, ACCOUNT_NAME, "reset@harbour.test");
    let anonymous = admin.fresh();
    anonymous
        .post("/session/forgot", &json!({ "email": "reset@harbour.test" }))
        .expect(202);
    let bytes = wait_for_mail(&smtp.new_mail(), &mut Vec::new());
    let message = parse(&bytes);
    assert!(message.message_id().is_some(), "Message-ID");
    assert!(message.date().is_some(), "Date");
    let (plain, html) = assert_message(&message, "reset@harbour.test", "Reset your password");
    let token = link_token(&plain, &html, "/password/reset");

    anonymous
        .post(
            "/session/reset",
            &json!({ "token": token, "password": NEW_PASSWORD }),
        )
        .expect(200);
    let mut again = admin.fresh();
    again.login("reset@harbour.test", NEW_PASSWORD).expect(200);
    again.get("/session").expect(200);
    assert!(
        !server.data_dir().join("outbox").exists(),
        "nothing goes to the outbox with SMTP"
    );
}

#[test]
fn an_invitation_mail_arrives_over_smtp_and_its_link_logs_in_once() {
    let Some((smtp, server)) =
        smtp_setup("an_invitation_mail_arrives_over_smtp_and_its_link_logs_in_once")
    else {
        return;
    };
    let (admin, account, _) = first_administrator(&server, ACCOUNT_NAME, "partner@harbour.test");
    let invited = invite(&admin, &account, "ada@harbour.test", "Ada Lovelace");
    assert_eq!(
        invited.body["invitation_sent"],
        json!(true),
        "{}",
        invited.text
    );
    let token = invitation_token(&smtp.new_mail(), &mut Vec::new(), "ada@harbour.test");

    let mut ada = admin.fresh();
    let accepted = ada.accept(&token, GOOD_PASSWORD).expect(200);
    assert_eq!(accepted.body["user"]["id"], json!(user_id(&invited)));
    let me = ada.get("/session").expect(200);
    assert_eq!(me.body["user"]["email"], json!("ada@harbour.test"));
    assert_eq!(me.body["account"]["id"], json!(account));

    let mut later = admin.fresh();
    later.login("ada@harbour.test", GOOD_PASSWORD).expect(200);
    later.get("/session").expect(200);

    let again = admin.fresh().accept(&token, "another good passphrase 99");
    assert_eq!(again.status, 404, "{}", again.text);
    assert_eq!(again.error_code(), "not_found");
}

#[test]
fn a_resent_invitation_replaces_the_previous_link() {
    let Some((smtp, server)) = smtp_setup("a_resent_invitation_replaces_the_previous_link") else {
        return;
    };
    let (admin, account, _) = first_administrator(&server, ACCOUNT_NAME, "partner@harbour.test");
    let invited = invite(&admin, &account, "bob@harbour.test", "Bob Builder");
    let mut seen = Vec::new();
    let first = invitation_token(&smtp.new_mail(), &mut seen, "bob@harbour.test");

    let resent = admin.post(&format!("/users/{}/resend", user_id(&invited)), &json!({}));
    assert!(
        (200..300).contains(&resent.status),
        "resend: {} {}",
        resent.status,
        resent.text
    );
    let second = invitation_token(&smtp.new_mail(), &mut seen, "bob@harbour.test");
    assert_ne!(first, second);

    let old = admin.fresh().accept(&first, GOOD_PASSWORD);
    assert_eq!(old.status, 404, "{}", old.text);
    assert_eq!(old.error_code(), "not_found");
    let mut bob = admin.fresh();
    bob.accept(&second, GOOD_PASSWORD).expect(200);
    bob.get("/session").expect(200);
}

#[test]
fn an_expired_invitation_link_is_refused() {
    let Some((smtp, server)) = smtp_setup("an_expired_invitation_link_is_refused") else {
        return;
    };
    let (admin, account, _) = first_administrator(&server, ACCOUNT_NAME, "partner@harbour.test");
    let invited = invite(&admin, &account, "eve@harbour.test", "Eve Late");
    let token = invitation_token(&smtp.new_mail(), &mut Vec::new(), "eve@harbour.test");
    sql(
        &server,
        &format!(
            "UPDATE invitations SET expires_at = 0 WHERE user_id = '{}';",
            user_id(&invited)
        ),
    );
    let refused = admin.fresh().accept(&token, GOOD_PASSWORD);
    assert_eq!(refused.status, 404, "{}", refused.text);
    assert_eq!(refused.error_code(), "not_found");
    let login = admin.fresh().login("eve@harbour.test", GOOD_PASSWORD);
    assert_eq!(login.status, 401, "{}", login.text);
}

#[test]
fn without_smtp_an_invitation_is_a_valid_eml_in_the_outbox() {
    let server = Server::start_configured(1, &mail_settings(), &[]);
    let (admin, account, _) = first_administrator(&server, ACCOUNT_NAME, "partner@harbour.test");
    invite(&admin, &account, "ada@harbour.test", "Ada Lovelace");
    let outbox = server.data_dir().join("outbox");
    let mut seen = Vec::new();
    let bytes = wait_for_mail(&outbox, &mut seen);
    assert_eq!(
        seen[0].extension().and_then(|e| e.to_str()),
        Some("eml"),
        "{seen:?}"
    );
    let message = parse(&bytes);
    assert!(
        message
            .message_id()
            .is_some_and(|id| id.contains('@') && !id.contains(' ')),
        "Message-ID: {:?}",
        message.message_id()
    );
    let date = message.date().expect("Date");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (date.to_timestamp() - now).abs() < 600,
        "Date is now: {date}"
    );
    let header_names: Vec<String> = message
        .headers()
        .iter()
        .map(|h| h.name().to_ascii_lowercase())
        .collect();
    for name in [
        "from",
        "to",
        "subject",
        "message-id",
        "date",
        "mime-version",
    ] {
        assert_eq!(
            header_names.iter().filter(|n| *n == name).count(),
            1,
            "exactly one {name} header: {header_names:?}"
        );
    }
    let token = {
        let (plain, html) = assert_message(&message, "ada@harbour.test", "Account Invitation");
        assert!(
            plain.contains(ACCOUNT_NAME) && plain.contains(INVITER_NAME),
            "{plain}"
        );
        link_token(&plain, &html, "/invitations/accept")
    };
    let mut ada = admin.fresh();
    ada.accept(&token, GOOD_PASSWORD).expect(200);
    assert_eq!(mail_files(&outbox).len(), 1, "one message only");
    let me: Value = ada.get("/session").expect(200).body;
    assert_eq!(me["user"]["email"], json!("ada@harbour.test"));
}
