//! A client for the admin API, driving `curl` (an independent HTTP client) with a cookie
//! jar: what a script or a browser does, over loopback against the real server.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

use crate::Server;

/// One admin API user agent: its own cookie jar, the CSRF token of its session, or a
/// bearer token.
pub struct AdminClient {
    base: String,
    ca: PathBuf,
    jar: tempfile::TempDir,
    /// Sent as `X-CSRF-Token` on every request once logged in (tests may clear it).
    pub csrf: Option<String>,
    /// Sent as `Authorization: Bearer …` when set (instead of the cookie).
    pub bearer: Option<String>,
    /// Extra headers for every request, e.g. to test a refusal.
    pub headers: Vec<String>,
}

/// An answer: status, headers (lowercase names) and the body parsed as JSON (Null when
/// empty or not JSON; the raw text is kept too).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Value,
    pub text: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The error code of an error answer (`{"error": {"code"}}`).
    pub fn error_code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }

    /// Panics with the whole answer unless the status is `status`.
    #[track_caller]
    pub fn expect(self, status: u16) -> Answer {
        assert_eq!(
            self.status, status,
            "unexpected answer: {} {}",
            self.status, self.text
        );
        self
    }
}

impl AdminClient {
    pub fn new(server: &Server) -> AdminClient {
        AdminClient {
            base: server.url(),
            ca: server.ca_file(),
            jar: tempfile::tempdir().expect("cookie jar dir"),
            csrf: None,
            bearer: None,
            headers: Vec::new(),
        }
    }

    /// A client with the same server and no session.
    pub fn fresh(&self) -> AdminClient {
        AdminClient {
            base: self.base.clone(),
            ca: self.ca.clone(),
            jar: tempfile::tempdir().expect("cookie jar dir"),
            csrf: None,
            bearer: None,
            headers: Vec::new(),
        }
    }

    /// A client that authenticates with the bearer token only.
    pub fn with_token(&self, token: &str) -> AdminClient {
        let mut c = self.fresh();
        c.bearer = Some(token.to_owned());
        c
    }

    fn jar_file(&self) -> PathBuf {
        self.jar.path().join("cookies")
    }

    /// The raw session cookie value, if the jar holds one.
    pub fn session_cookie(&self) -> Option<String> {
        let text = std::fs::read_to_string(self.jar_file()).ok()?;
        text.lines()
            .map(|l| l.split('\t').collect::<Vec<_>>())
            .find(|f| f.len() == 7 && f[5] == "__Host-contera_session" && !f[6].is_empty())
            .map(|f| f[6].to_owned())
    }

    /// Any request: `path` is below `/api/v1/admin` unless it starts with `/api/`.
    pub fn request(&self, method: &str, path: &str, body: Option<&Value>) -> Answer {
        self.request_with(&[], method, path, body)
    }

    pub fn get(&self, path: &str) -> Answer {
        self.request("GET", path, None)
    }
    pub fn post(&self, path: &str, body: &Value) -> Answer {
        self.request("POST", path, Some(body))
    }
    pub fn patch(&self, path: &str, body: &Value) -> Answer {
        self.request("PATCH", path, Some(body))
    }
    pub fn put(&self, path: &str, body: &Value) -> Answer {
        self.request("PUT", path, Some(body))
    }
    pub fn delete(&self, path: &str) -> Answer {
        self.request("DELETE", path, None)
    }

    /// Logs in; keeps the cookie and the CSRF token. Returns the answer whatever it is.
    pub fn login(&mut self, email: &str, password: &str) -> Answer {
        let answer = self.post(
            "/session/login",
            &serde_json::json!({ "email": email, "password": password }),
        );
        if answer.status == 200 {
            self.csrf = answer.body["csrf_token"].as_str().map(str::to_owned);
        }
        answer
    }

    /// Accepts an invitation with the current terms and logs in (keeps the session).
    pub fn accept(&mut self, token: &str, password: &str) -> Answer {
        let answer = self.post(
            "/invitations/accept",
            &serde_json::json!({
                "token": token, "password": password,
                "age_confirmed": true, "terms_version": "1",
            }),
        );
        if answer.status == 200 {
            self.csrf = answer.body["csrf_token"].as_str().map(str::to_owned);
        }
        answer
    }
}

/// A password that passes the policy.
pub const GOOD_PASSWORD: &str = "correct horse battery staple 42";

/// The operator's way in: creates a partner account with the CLI, invites its first
/// administrator with the CLI, accepts through the API and returns the logged-in client
/// with (account id, user id).
pub fn first_administrator(
    server: &Server,
    account_name: &str,
    email: &str,
) -> (AdminClient, String, String) {
    let (account, _code) = server.create_account(account_name, "partner", None);
    let invited = server.admin_json(&[
        "users",
        "invite",
        "--account",
        &account,
        "--email",
        email,
        "--name",
        "First Admin",
    ]);
    let token = invited["token"]
        .as_str()
        .expect("token in invite --json")
        .to_owned();
    let mut client = AdminClient::new(server);
    let accepted = client.accept(&token, GOOD_PASSWORD).expect(200);
    let user_id = accepted.body["user"]["id"].as_str().unwrap().to_owned();
    (client, account, user_id)
}

/// An administrator of an existing account (a customer under a partner, say): invited with
/// the CLI into the account's Administrators group, accepted through the API. Returns the
/// logged-in client and the user id.
pub fn administrator_of(server: &Server, account: &str, email: &str) -> (AdminClient, String) {
    let invited = server.admin_json(&[
        "users",
        "invite",
        "--account",
        account,
        "--email",
        email,
        "--name",
        "Account Admin",
    ]);
    let token = invited["token"].as_str().expect("token in invite --json");
    let mut client = AdminClient::new(server);
    let accepted = client.accept(token, GOOD_PASSWORD).expect(200);
    let user_id = accepted.body["user"]["id"].as_str().unwrap().to_owned();
    (client, user_id)
}

/// A message the server wrote to `DATA/outbox/` (no SMTP relay configured), decoded: the
/// plain and HTML parts of its multipart/alternative body.
#[derive(Debug, Clone)]
pub struct OutboxMail {
    /// The `To:` header as written, e.g. `"Jo" <jo@example.com>`.
    pub to: String,
    pub subject: String,
    pub plain: String,
    pub html: String,
}

/// Every message in the server's outbox, in file name order (oldest first).
pub fn outbox(server: &Server) -> Vec<OutboxMail> {
    let dir = server.data_dir().join("outbox");
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .map(|e| e.expect("outbox entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "eml"))
            .collect(),
        Err(_) => return Vec::new(),
    };
    files.sort();
    files
        .iter()
        .map(|f| parse_mail(&std::fs::read_to_string(f).expect("outbox file")))
        .collect()
}

/// The one outbox message to `email`; panics unless there is exactly one.
pub fn outbox_mail_to(server: &Server, email: &str) -> OutboxMail {
    let mut found: Vec<OutboxMail> = outbox(server)
        .into_iter()
        .filter(|m| {
            m.to.to_lowercase()
                .contains(&format!("<{}>", email.to_lowercase()))
        })
        .collect();
    assert_eq!(found.len(), 1, "messages to {email}: {found:?}");
    found.remove(0)
}

/// The token of an accept link (`…/invitations/accept#token=<hex>`) in `text`.
pub fn link_token(text: &str) -> Option<String> {
    let (_, rest) = text.split_once("/invitations/accept#token=")?;
    let token: String = rest.chars().take_while(char::is_ascii_hexdigit).collect();
    (!token.is_empty()).then_some(token)
}

/// A written message decoded by an independent MIME parser (`mail-parser`), as a mail
/// client would read it.
fn parse_mail(text: &str) -> OutboxMail {
    let message = mail_parser::MessageParser::default()
        .parse(text.as_bytes())
        .unwrap_or_else(|| panic!("not a mail message:\n{text}"));
    OutboxMail {
        to: message.header_raw("To").unwrap_or("").trim().to_owned(),
        subject: message.subject().unwrap_or("").to_owned(),
        plain: message
            .body_text(0)
            .map(|b| b.into_owned())
            .unwrap_or_default(),
        html: message
            .body_html(0)
            .map(|b| b.into_owned())
            .unwrap_or_default(),
    }
}

/// The mails the server wrote to its outbox (no SMTP relay configured) for `to`, oldest
/// first, each as the decoded text of its text/plain part.
pub fn outbox_texts(server: &Server, to: &str) -> Vec<String> {
    let dir = server.data_dir().join("outbox");
    let mut mails: Vec<(std::time::SystemTime, String)> = std::fs::read_dir(&dir)
        .map(|entries| entries.map(|e| e.expect("outbox entry").path()).collect())
        .unwrap_or_else(|_| Vec::new())
        .into_iter()
        .filter(|p: &PathBuf| p.extension().is_some_and(|e| e == "eml"))
        .filter_map(|p| {
            let raw = std::fs::read_to_string(&p).expect("read .eml");
            let addressed = raw
                .lines()
                .take_while(|l| !l.is_empty())
                .any(|l| l.to_ascii_lowercase().starts_with("to:") && l.contains(to));
            let modified = std::fs::metadata(&p).and_then(|m| m.modified()).ok()?;
            addressed.then(|| (modified, mail_text(&raw)))
        })
        .collect();
    mails.sort_by_key(|(at, _)| *at);
    mails.into_iter().map(|(_, text)| text).collect()
}

/// The token of the accept link (`…/invitations/accept#token=<hex>`) in a mail's text.
pub fn accept_token_in(text: &str) -> String {
    link_token(text).unwrap_or_else(|| {
        panic!(
            "no accept link in the mail:
{text}"
        )
    })
}

/// The token of the newest invitation mailed to `to` (by file time, which is coarse: to
/// tell apart two mails written within milliseconds, compare the tokens instead).
pub fn mailed_token(server: &Server, to: &str) -> String {
    let texts = outbox_texts(server, to);
    accept_token_in(texts.last().unwrap_or_else(|| panic!("no mail to {to}")))
}

/// The decoded text/plain part of a MIME message.
fn mail_text(raw: &str) -> String {
    parse_mail(raw).plain
}

/// Runs SQL on the server's database with the `sqlite3` CLI (the server keeps running: the
/// database is in WAL mode), e.g. to age a row the way the clock would. The same as [`sql`].
pub fn sqlite(server: &Server, statements: &str) -> String {
    sql(server, statements)
}

/// Invites another user into `account` with the CLI (default group: Administrators) and
/// accepts through the API; returns their logged-in client and user id.
pub fn invite_and_accept(
    server: &Server,
    account: &str,
    email: &str,
    name: &str,
) -> (AdminClient, String) {
    let invited = server.admin_json(&[
        "users",
        "invite",
        "--account",
        account,
        "--email",
        email,
        "--name",
        name,
    ]);
    let token = invited["token"].as_str().expect("token in invite --json");
    let mut client = AdminClient::new(server);
    let accepted = client.accept(token, GOOD_PASSWORD).expect(200);
    let user_id = accepted.body["user"]["id"].as_str().unwrap().to_owned();
    (client, user_id)
}

/// Runs SQL on the server's database with the `sqlite3` CLI while the server runs (WAL
/// mode allows it): the tests' way to make time pass for sessions, tokens and links.
/// Returns what it printed; panics unless it succeeded.
pub fn sql(server: &Server, statements: &str) -> String {
    let db = server.data_dir().join("contera.db");
    let out = Command::new("sqlite3")
        .args(["-bail", "-cmd", ".timeout 10000"])
        .arg(&db)
        .arg(statements)
        .output()
        .expect("sqlite3 runs (apt-get install sqlite3)");
    assert!(
        out.status.success(),
        "sqlite3 {} {statements:?}: {}",
        db.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The mail files in `dir` (an outbox, or a maildir's `new/`), leaving out the hidden
/// temporary files written before an atomic rename.
pub fn mail_files(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.is_file()
                        && p.file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| !n.starts_with('.') && !n.ends_with(".tmp"))
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// Waits (up to 30 s) for a mail file in `dir` that is not in `seen`, adds it there and
/// returns its bytes. Panics when more than one new file appears: each step of a test
/// expects exactly one message.
pub fn wait_for_mail(dir: &std::path::Path, seen: &mut Vec<PathBuf>) -> Vec<u8> {
    let new = crate::wait_for(
        std::time::Duration::from_secs(30),
        &format!("a new message in {}", dir.display()),
        || {
            let new: Vec<PathBuf> = mail_files(dir)
                .into_iter()
                .filter(|p| !seen.contains(p))
                .collect();
            (!new.is_empty()).then_some(new)
        },
    );
    assert_eq!(new.len(), 1, "one new message expected: {new:?}");
    seen.push(new[0].clone());
    std::fs::read(&new[0]).expect("read the message")
}

/// The link in `text` containing `marker` (e.g. `/password/reset#token=`) and the token
/// after the marker, or None. A link ends at white space, a quote or an angle bracket.
pub fn find_link(text: &str, marker: &str) -> Option<(String, String)> {
    let link = text
        .split(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>'))
        .find(|word| word.contains(marker))?;
    let token = &link[link.find(marker)? + marker.len()..];
    Some((link.to_owned(), token.to_owned()))
}

/// True when `s` is `n` lowercase hex digits.
pub fn is_hex(s: &str, n: usize) -> bool {
    s.len() == n && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl AdminClient {
    /// A request like [`AdminClient::request`] with extra `curl` arguments, e.g.
    /// `["--interface", "127.0.0.2"]` to come from another loopback address.
    pub fn request_with(
        &self,
        curl_args: &[&str],
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Answer {
        let url = if path.starts_with("/api/") {
            format!("{}{path}", self.base)
        } else {
            format!("{}/api/v1/admin{path}", self.base)
        };
        let scratch = tempfile::tempdir().expect("scratch dir");
        let head_file = scratch.path().join("head");
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "-X", method, "-w", "\n%{http_code}", "--cacert"])
            .arg(&self.ca)
            .arg("-D")
            .arg(&head_file)
            .arg("-b")
            .arg(self.jar_file())
            .arg("-c")
            .arg(self.jar_file())
            .args(curl_args);
        if let Some(csrf) = &self.csrf {
            cmd.arg("-H").arg(format!("x-csrf-token: {csrf}"));
        }
        if let Some(token) = &self.bearer {
            cmd.arg("-H").arg(format!("authorization: Bearer {token}"));
        }
        for h in &self.headers {
            cmd.arg("-H").arg(h);
        }
        if let Some(body) = body {
            let file = scratch.path().join("body");
            std::fs::write(&file, body.to_string()).expect("write body");
            cmd.args(["-H", "content-type: application/json", "--data-binary"])
                .arg(format!("@{}", file.display()));
        }
        let out = cmd.arg(&url).output().expect("curl runs");
        assert!(
            out.status.success(),
            "curl {method} {url} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let all = String::from_utf8_lossy(&out.stdout).into_owned();
        let (text, status) = all.rsplit_once('\n').expect("status line");
        let head = std::fs::read_to_string(&head_file).unwrap_or_default();
        let headers = head
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        Answer {
            status: status.trim().parse().expect("HTTP status"),
            headers,
            body: serde_json::from_str(text).unwrap_or(Value::Null),
            text: text.to_owned(),
        }
    }

    /// A client with no session that sends `cookie` as the session cookie: replays a
    /// cookie the server may have ended, whatever the jar did with it.
    pub fn with_cookie(&self, cookie: &str) -> AdminClient {
        let mut c = self.fresh();
        c.headers
            .push(format!("cookie: {}={cookie}", crate::admin::SESSION_COOKIE));
        c
    }
}

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "__Host-contera_session";
