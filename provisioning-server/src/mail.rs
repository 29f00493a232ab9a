//! Outgoing mail: invitation and password-reset messages, delivered over SMTP or, with no
//! relay configured, written to `DATA/outbox/` so a new server works out of the box.

use std::path::{Path, PathBuf};
use std::time::Duration;

use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::config::{MailSection, SmtpSection, SmtpTls};

/// Why a message could not be built or delivered.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("{address:?} is not a valid mail address: {source}")]
    Address {
        address: String,
        #[source]
        source: lettre::address::AddressError,
    },
    #[error("cannot build the message: {0}")]
    Build(#[from] lettre::error::Error),
    #[error("cannot set up SMTP to {host}: {source}")]
    Transport {
        host: String,
        #[source]
        source: lettre::transport::smtp::Error,
    },
    #[error("cannot deliver mail through {host}:{port}: {source}")]
    Smtp {
        host: String,
        port: u16,
        #[source]
        source: lettre::transport::smtp::Error,
    },
    #[error("cannot write {path}: {source}")]
    Outbox {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One message before it gets a sender and a transport: who it is for, its two bodies, and
/// the link it carries (kept apart so the outbox can log it).
#[derive(Debug, Clone)]
pub struct Email {
    pub to: Mailbox,
    pub subject: &'static str,
    pub plain: String,
    pub html: String,
    pub link: String,
    /// Whether the outbox logs the link. Invitations: yes, so an operator without a relay
    /// can pass it on. Password resets: no, since anyone can ask for one, and a reset link
    /// for any administrator must not land in the server's log; it stays in the 0600
    /// outbox file.
    pub log_link: bool,
}

/// An invitation to join `account_name`, sent by `inviter_name`; `link` accepts it.
pub fn invitation(
    to_name: &str,
    to_email: &str,
    account_name: &str,
    inviter_name: &str,
    link: &str,
) -> Result<Email, MailError> {
    let plain = format!(
        "Hello {to_name},\n\n\
         {inviter_name} invited you to the account \"{account_name}\" on Contera.\n\n\
         Accept the invitation by opening this link:\n\n\
         {link}\n\n\
         If you did not expect this invitation, you can ignore this message.\n"
    );
    let html = format!(
        "<!DOCTYPE html>\n<html><body>\n\
         <p>Hello {to_name},</p>\n\
         <p>{inviter_name} invited you to the account <strong>{account_name}</strong> on Contera.</p>\n\
         <p><a href=\"{link}\">Accept the invitation</a></p>\n\
         <p>Or open this link: {link}</p>\n\
         <p>If you did not expect this invitation, you can ignore this message.</p>\n\
         </body></html>\n",
        to_name = escape_html(to_name),
        inviter_name = escape_html(inviter_name),
        account_name = escape_html(account_name),
        link = escape_html(link),
    );
    Ok(Email {
        to: mailbox(to_name, to_email)?,
        subject: "Account Invitation",
        plain,
        html,
        link: link.to_owned(),
        log_link: true,
    })
}

/// A link to choose a new password, for a user who asked for one.
pub fn password_reset(to_name: &str, to_email: &str, link: &str) -> Result<Email, MailError> {
    let plain = format!(
        "Hello {to_name},\n\n\
         Someone, hopefully you, asked to reset your Contera password. \
         Choose a new one by opening this link:\n\n\
         {link}\n\n\
         If you did not ask for this, ignore this message: your password stays as it is.\n"
    );
    let html = format!(
        "<!DOCTYPE html>\n<html><body>\n\
         <p>Hello {to_name},</p>\n\
         <p>Someone, hopefully you, asked to reset your Contera password.</p>\n\
         <p><a href=\"{link}\">Choose a new password</a></p>\n\
         <p>Or open this link: {link}</p>\n\
         <p>If you did not ask for this, ignore this message: your password stays as it is.</p>\n\
         </body></html>\n",
        to_name = escape_html(to_name),
        link = escape_html(link),
    );
    Ok(Email {
        to: mailbox(to_name, to_email)?,
        subject: "Reset your password",
        plain,
        html,
        link: link.to_owned(),
        log_link: false,
    })
}

/// A message that checks the mail settings (`mail test`).
pub fn test_message(to_email: &str) -> Result<Email, MailError> {
    let plain = "This is a test message from contera-provisioning: mail settings work.\n";
    let html = "<!DOCTYPE html>\n<html><body>\n<p>This is a test message from \
                contera-provisioning: mail settings work.</p>\n</body></html>\n";
    Ok(Email {
        to: mailbox("", to_email)?,
        subject: "Contera mail test",
        plain: plain.into(),
        html: html.into(),
        link: String::new(),
        log_link: false,
    })
}

fn mailbox(name: &str, email: &str) -> Result<Mailbox, MailError> {
    let address = email.parse().map_err(|source| MailError::Address {
        address: email.to_owned(),
        source,
    })?;
    let name = name.trim();
    Ok(Mailbox::new(
        (!name.is_empty()).then(|| name.to_owned()),
        address,
    ))
}

/// Escapes text for HTML element content and quoted attribute values: names and account
/// names come from users and must not become markup in someone else's mail client.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Where a message went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Accepted by the SMTP relay.
    Sent { relay: String },
    /// Written to the outbox as this file.
    Written(PathBuf),
}

/// Sends messages from the configured `From:` through SMTP or into the outbox.
#[derive(Clone)]
pub struct Mailer {
    from: Mailbox,
    transport: Transport,
}

#[derive(Clone)]
enum Transport {
    Smtp {
        transport: AsyncSmtpTransport<Tokio1Executor>,
        host: String,
        port: u16,
    },
    Outbox(PathBuf),
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.transport {
            Transport::Smtp { host, port, .. } => write!(f, "Mailer(smtp {host}:{port})"),
            Transport::Outbox(dir) => write!(f, "Mailer(outbox {})", dir.display()),
        }
    }
}

impl Mailer {
    /// SMTP when `[mail.smtp]` is set (with its password already read), the outbox
    /// `outbox_dir` otherwise.
    pub fn from_config(mail: &MailSection, outbox_dir: PathBuf) -> Result<Self, MailError> {
        let from = mail.from.0.parse().map_err(|source| MailError::Address {
            address: mail.from.0.clone(),
            source,
        })?;
        Ok(match &mail.smtp {
            Some(smtp) => Mailer::smtp(from, smtp)?,
            None => Mailer::outbox(from, outbox_dir),
        })
    }

    /// Writes every message to `dir` instead of sending it.
    pub fn outbox(from: Mailbox, dir: PathBuf) -> Self {
        Mailer {
            from,
            transport: Transport::Outbox(dir),
        }
    }

    /// Delivers through the relay in `smtp`. TLS is rustls, checking the relay's
    /// certificate against the system roots and `host`.
    pub fn smtp(from: Mailbox, smtp: &SmtpSection) -> Result<Self, MailError> {
        let host = smtp.host.clone();
        let port = smtp.port();
        let transport_error = |source| MailError::Transport {
            host: host.clone(),
            source,
        };
        let builder = match smtp.tls {
            // Plain text: validate() warns when the relay is not on this host.
            SmtpTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&host),
            SmtpTls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&host)
                .map_err(transport_error)?,
            SmtpTls::Implicit => {
                AsyncSmtpTransport::<Tokio1Executor>::relay(&host).map_err(transport_error)?
            }
        };
        let mut builder = builder
            .port(port)
            .timeout(Some(Duration::from_secs(smtp.timeout_secs)));
        if let Some(user) = &smtp.user {
            let password = smtp
                .password
                .as_ref()
                .map(|p| p.expose().to_owned())
                .unwrap_or_default();
            builder = builder.credentials(Credentials::new(user.clone(), password));
        }
        Ok(Mailer {
            from,
            transport: Transport::Smtp {
                transport: builder.build(),
                host,
                port,
            },
        })
    }

    /// Whether messages go to the outbox rather than a relay.
    pub fn is_outbox(&self) -> bool {
        matches!(self.transport, Transport::Outbox(_))
    }

    /// The full RFC 5322 message for `email`, with a fresh Message-ID.
    pub fn compose(&self, email: &Email) -> Result<Message, MailError> {
        let domain = self.from.email.domain().to_owned();
        Ok(Message::builder()
            .from(self.from.clone())
            .to(email.to.clone())
            .subject(email.subject)
            .message_id(Some(format!(
                "<{}@{domain}>",
                uuid::Uuid::new_v4().simple()
            )))
            .multipart(MultiPart::alternative_plain_html(
                email.plain.clone(),
                email.html.clone(),
            ))?)
    }

    /// Sends `email`, or writes it to the outbox and logs its link there: the link holds a
    /// token, so it is logged only in outbox mode, the documented way to use a server
    /// without a relay.
    pub async fn send(&self, email: &Email) -> Result<Delivery, MailError> {
        let message = self.compose(email)?;
        match &self.transport {
            Transport::Smtp {
                transport,
                host,
                port,
            } => {
                transport
                    .send(message)
                    .await
                    .map_err(|source| MailError::Smtp {
                        host: host.clone(),
                        port: *port,
                        source,
                    })?;
                log::info!(
                    "mail \"{}\" to {} sent through {host}",
                    email.subject,
                    email.to.email
                );
                Ok(Delivery::Sent {
                    relay: format!("{host}:{port}"),
                })
            }
            Transport::Outbox(dir) => {
                let dir = dir.clone();
                let bytes = message.formatted();
                let path = tokio::task::spawn_blocking(move || write_to_outbox(&dir, &bytes))
                    .await
                    .expect("the outbox writer does not panic")?;
                if email.link.is_empty() || !email.log_link {
                    log::info!(
                        "mail \"{}\" to {} written to {} (no SMTP relay configured)",
                        email.subject,
                        email.to.email,
                        path.display()
                    );
                } else {
                    log::info!(
                        "mail \"{}\" to {} written to {} (no SMTP relay configured); its link: {}",
                        email.subject,
                        email.to.email,
                        path.display(),
                        email.link
                    );
                }
                Ok(Delivery::Written(path))
            }
        }
    }
}

/// Writes one message as `<UTC time>-<random id>.eml`, 0600 in a 0700 directory (the
/// messages hold live tokens), atomically so a reader never sees half a message.
fn write_to_outbox(dir: &Path, bytes: &[u8]) -> Result<PathBuf, MailError> {
    use std::os::unix::fs::DirBuilderExt;
    let outbox_error = |path: &Path| {
        let path = path.to_owned();
        move |source| MailError::Outbox { path, source }
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(outbox_error(dir))?;
    let now = time::OffsetDateTime::now_utc();
    let stamp = format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    );
    let path = dir.join(format!("{stamp}-{}.eml", uuid::Uuid::new_v4().simple()));
    crate::files::write_atomic(&path, bytes, 0o600).map_err(outbox_error(&path))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINK: &str = "https://prov.example.com/invitations/accept?token=abc&x=1";

    #[test]
    fn invitation_names_account_inviter_and_link_in_both_parts() {
        let email = invitation("Ada", "ada@example.com", "Harbour Site", "Grace", LINK).unwrap();
        assert_eq!(email.subject, "Account Invitation");
        for part in [&email.plain, &email.html] {
            assert!(part.contains("Harbour Site"), "{part}");
            assert!(part.contains("Grace"), "{part}");
            assert!(part.contains("Ada"), "{part}");
        }
        assert!(email.plain.contains(LINK), "{}", email.plain);
        assert!(
            email.html.contains(&escape_html(LINK)),
            "the HTML link is escaped: {}",
            email.html
        );
        assert_eq!(email.link, LINK);
    }

    #[test]
    fn html_part_escapes_markup_in_names() {
        let email = invitation(
            "<script>alert(1)</script>",
            "ada@example.com",
            "Acme <script>x</script> & \"Co\"",
            "<b onmouseover='x'>Eve</b>",
            LINK,
        )
        .unwrap();
        assert!(!email.html.contains("<script>"), "{}", email.html);
        assert!(!email.html.contains("<b "), "{}", email.html);
        assert!(
            email.html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{}",
            email.html
        );
        assert!(
            email
                .html
                .contains("Acme &lt;script&gt;x&lt;/script&gt; &amp; &quot;Co&quot;"),
            "{}",
            email.html
        );
        let reset = password_reset("<script>", "ada@example.com", LINK).unwrap();
        assert!(!reset.html.contains("<script>"), "{}", reset.html);
    }

    #[test]
    fn password_reset_carries_the_link_in_both_parts() {
        let email = password_reset("Ada", "ada@example.com", LINK).unwrap();
        assert_eq!(email.subject, "Reset your password");
        assert!(email.plain.contains(LINK));
        assert!(email.html.contains(&escape_html(LINK)));
        assert!(email.html.contains("<a href=\""));
    }

    #[test]
    fn invalid_recipient_address_is_refused_naming_it() {
        let err = invitation("Ada", "not-an-address", "A", "G", LINK)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not-an-address"), "{err}");
    }

    #[test]
    fn composed_message_is_multipart_alternative_with_headers() {
        let mailer = Mailer::outbox(
            "Contera <contera@localhost>".parse().unwrap(),
            PathBuf::from("/nonexistent"),
        );
        let email = invitation("Ada", "ada@example.com", "Harbour", "Grace", LINK).unwrap();
        let text = String::from_utf8(mailer.compose(&email).unwrap().formatted()).unwrap();
        for needle in [
            "From: Contera <contera@localhost>",
            "To: Ada <ada@example.com>",
            "Subject: Account Invitation",
            "Message-ID: <",
            "MIME-Version: 1.0",
            "multipart/alternative",
            "text/plain",
            "text/html",
        ] {
            assert!(text.contains(needle), "{needle} missing from:\n{text}");
        }
    }
}
