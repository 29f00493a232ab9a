//! Mail leaves the server as a real RFC 5322 message: written to the outbox without a
//! relay, and accepted by a real SMTP server (Python's aiosmtpd) with one.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use contera_provisioning::config::{MailSection, ServerConfig, SmtpTls};
use contera_provisioning::mail::{self, Delivery, Mailer};
use mail_parser::{MessageParser, MimeHeaders};

const LINK: &str = "https://prov.example.com/invitations/accept?token=tok_0123456789";

/// Checks a delivered or written invitation: headers, both parts, names and the link.
fn assert_invitation(bytes: &[u8]) {
    let message = MessageParser::default()
        .parse(bytes)
        .expect("a parsable RFC 5322 message");
    assert_eq!(message.subject(), Some("Account Invitation"));
    let from = message.from().and_then(|a| a.first()).expect("From");
    assert_eq!(from.address(), Some("contera@localhost"));
    assert_eq!(from.name(), Some("Contera"));
    let to = message.to().and_then(|a| a.first()).expect("To");
    assert_eq!(to.address(), Some("ada@example.com"));
    assert!(message.message_id().is_some(), "Message-ID");
    assert!(message.date().is_some(), "Date");
    let content_type = message.content_type().expect("Content-Type");
    assert_eq!(content_type.ctype(), "multipart");
    assert_eq!(content_type.subtype(), Some("alternative"));
    assert_eq!(message.text_body_count(), 1, "one text/plain part");
    assert_eq!(message.html_body_count(), 1, "one text/html part");
    let plain = message.body_text(0).expect("text/plain part");
    let html = message.body_html(0).expect("text/html part");
    assert!(plain.contains(LINK), "{plain}");
    assert!(
        plain.contains("Harbour Site") && plain.contains("Grace"),
        "{plain}"
    );
    assert!(
        html.contains("href=\"https://prov.example.com/invitations/accept?token=tok_0123456789\""),
        "{html}"
    );
    assert!(
        html.contains("Harbour Site &amp; Co") && html.contains("Grace"),
        "{html}"
    );
}

fn invitation() -> mail::Email {
    mail::invitation("Ada", "ada@example.com", "Harbour Site & Co", "Grace", LINK).unwrap()
}

#[tokio::test]
async fn without_smtp_an_invitation_is_written_to_the_outbox_as_a_valid_eml() {
    use std::os::unix::fs::PermissionsExt;
    let data = tempfile::tempdir().unwrap();
    let config = ServerConfig {
        data_dir: data.path().to_owned(),
        ..ServerConfig::default()
    };
    let mailer = Mailer::from_config(&config.mail, config.outbox_dir()).unwrap();
    assert!(mailer.is_outbox());
    let Delivery::Written(path) = mailer.send(&invitation()).await.unwrap() else {
        panic!("expected the outbox");
    };
    assert_eq!(path.parent(), Some(data.path().join("outbox").as_path()));
    assert_eq!(path.extension().and_then(|e| e.to_str()), Some("eml"));
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the message holds a live token");
    let entries: Vec<_> = std::fs::read_dir(data.path().join("outbox"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(entries.len(), 1, "no temp file left: {entries:?}");
    assert_invitation(&std::fs::read(&path).unwrap());
}

/// Reports a test that cannot run here; with `CONTERA_REQUIRE_ALL_TESTS` set (CI) it
/// fails instead, like `contera_e2e::skip` (this crate cannot depend on the e2e crate).
fn skip(test: &str, why: &str) {
    let required = std::env::var("CONTERA_REQUIRE_ALL_TESTS")
        .map(|v| !v.is_empty() && v != "0")
        .unwrap_or(false);
    if required {
        panic!("{test} cannot run: {why} (CONTERA_REQUIRE_ALL_TESTS is set)");
    }
    eprintln!("SKIPPED {test}: {why}");
}

/// A Python that can import aiosmtpd: the one on PATH (a pip install), else Debian's
/// (`apt install python3-aiosmtpd`, what `.ci/run` does), which a Python earlier on PATH
/// (pyenv, say) would otherwise hide.
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

fn aiosmtpd_available() -> bool {
    aiosmtpd_python().is_some()
}

/// An aiosmtpd server on a loopback port that writes each message's raw bytes to `dir`;
/// killed on drop.
struct SmtpServer {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
}

/// The handler aiosmtpd loads with `-c`: stores the bytes exactly as received.
const HANDLER: &str = r#"
import os, uuid

class Store:
    def __init__(self, directory):
        self.directory = directory

    @classmethod
    def from_cli(cls, parser, directory):
        return cls(directory)

    async def handle_DATA(self, server, session, envelope):
        name = os.path.join(self.directory, uuid.uuid4().hex)
        with open(name + ".tmp", "wb") as f:
            f.write(envelope.original_content)
        os.rename(name + ".tmp", name + ".eml")
        return "250 Message accepted for delivery"
"#;

impl SmtpServer {
    fn start(work: &Path) -> SmtpServer {
        let dir = work.join("delivered");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(work.join("contera_test_smtp.py"), HANDLER).unwrap();
        let addr = {
            let probe = TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap()
        };
        let python = aiosmtpd_python().expect("checked by the test");
        let child = Command::new(python)
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(addr.to_string())
            .args(["-c", "contera_test_smtp.Store"])
            .arg(&dir)
            .env("PYTHONPATH", work)
            .stdout(Stdio::null())
            .spawn()
            .expect("start python3 -m aiosmtpd");
        let mut server = SmtpServer { child, addr, dir };
        server.wait_until_listening();
        server
    }

    fn wait_until_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("aiosmtpd exited before listening: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "aiosmtpd did not listen on {}",
                self.addr
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn delivered(&self) -> Vec<PathBuf> {
        std::fs::read_dir(&self.dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "eml"))
            .collect()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn invitation_sent_through_smtp_arrives_with_both_parts_and_the_link() {
    const TEST: &str = "invitation_sent_through_smtp_arrives_with_both_parts_and_the_link";
    if !aiosmtpd_available() {
        skip(
            TEST,
            "python3 -m aiosmtpd is missing (apt install python3-aiosmtpd, or pip install aiosmtpd)",
        );
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let server = SmtpServer::start(work.path());
    let config: MailSection = ServerConfig::parse(
        &format!(
            "[mail.smtp]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\ntimeout_secs = 20\n",
            server.addr.port()
        ),
        Path::new("test.toml"),
    )
    .unwrap()
    .mail;
    assert_eq!(config.smtp.as_ref().unwrap().tls, SmtpTls::None);
    let outbox = work.path().join("outbox");
    let mailer = Mailer::from_config(&config, outbox.clone()).unwrap();
    assert!(!mailer.is_outbox());
    let delivery = mailer.send(&invitation()).await.unwrap();
    assert_eq!(
        delivery,
        Delivery::Sent {
            relay: server.addr.to_string()
        }
    );
    let delivered = server.delivered();
    assert_eq!(delivered.len(), 1, "{delivered:?}");
    assert_invitation(&std::fs::read(&delivered[0]).unwrap());
    assert!(!outbox.exists(), "nothing goes to the outbox with SMTP");
}

fn contera(data: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_contera-provisioning"))
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .env_remove("CONTERA_CONFIG")
        .env_remove("CREDENTIALS_DIRECTORY")
        .output()
        .unwrap()
}

#[test]
fn mail_test_without_smtp_writes_to_the_outbox_and_says_so() {
    let data = tempfile::tempdir().unwrap();
    let out = contera(data.path(), &["mail", "test", "--to", "ops@example.com"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("no SMTP relay configured"), "{stdout}");
    let written: Vec<_> = std::fs::read_dir(data.path().join("outbox"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(written.len(), 1, "{written:?}");
    assert!(
        stdout.contains(&written[0].display().to_string()),
        "{stdout}"
    );
    let bytes = std::fs::read(&written[0]).unwrap();
    let message = MessageParser::default().parse(&bytes[..]).unwrap();
    assert_eq!(message.subject(), Some("Contera mail test"));
    assert_eq!(message.text_body_count(), 1);
    assert_eq!(message.html_body_count(), 1);
}

#[test]
fn mail_test_with_smtp_delivers_to_the_relay_and_says_so() {
    const TEST: &str = "mail_test_with_smtp_delivers_to_the_relay_and_says_so";
    if !aiosmtpd_available() {
        skip(
            TEST,
            "python3 -m aiosmtpd is missing (apt install python3-aiosmtpd, or pip install aiosmtpd)",
        );
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let server = SmtpServer::start(work.path());
    let config = work.path().join("provisioning.toml");
    std::fs::write(
        &config,
        format!(
            "[mail.smtp]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\n",
            server.addr.port()
        ),
    )
    .unwrap();
    let data = work.path().join("data");
    let out = contera(
        &data,
        &[
            "--config",
            config.to_str().unwrap(),
            "mail",
            "test",
            "--to",
            "ops@example.com",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("through {}", server.addr)),
        "{stdout}"
    );
    assert_eq!(server.delivered().len(), 1);
    assert!(!data.join("outbox").exists());
}

#[test]
fn unreadable_smtp_password_file_is_a_configuration_error_naming_it() {
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("provisioning.toml");
    std::fs::write(
        &config,
        "[mail.smtp]\nhost = \"127.0.0.1\"\nuser = \"u\"\npassword_file = \"/nonexistent/smtp-pw\"\n",
    )
    .unwrap();
    let out = contera(
        work.path(),
        &["--config", config.to_str().unwrap(), "validate-config"],
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nonexistent/smtp-pw"), "{stderr}");
}
