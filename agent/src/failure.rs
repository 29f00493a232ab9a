//! Why something did not happen, as one typed value: what the lifecycle decides on, what
//! the control socket carries (`{"kind": "unreachable", "message": "…"}`) and what the CLI
//! reads back. Also the classification of a failed server call into one.

use std::time::Duration;

use contera_protocol::ErrorCode;
use serde::{Deserialize, Serialize};

use crate::client::CallError;

/// The kind of a failure; its serde name is the stable `kind` on the control socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The code is mistyped: caught before any request.
    Typo,
    /// The server refused for good (unknown, rotated or disabled code; forbidden).
    Rejected,
    /// The server says this recorder's key was revoked.
    Revoked,
    /// The server could not be reached, did not answer, or failed (5xx).
    Unreachable,
    /// The server's certificate is not valid yet or expired: a wrong clock here.
    Clock,
    /// TLS failed for another reason (untrusted server, name mismatch).
    Tls,
    /// The server asked to come back later (429 with `Retry-After`).
    Busy,
    /// The certificate expired and its renewal was refused: a code is needed.
    Expired,
    /// The code is right but its account is disabled by its administrator. Retried for a
    /// provisioned code: re-enabling the account must not need a site visit.
    AccountDisabled,
    /// A state change could not be stored (full or read-only disk).
    Storage,
    /// The control request was not one this agent knows (malformed JSON, an unknown `op`
    /// from a newer client, a line over 4 KiB).
    BadRequest,
    /// Something in the agent itself failed.
    Internal,
    /// A kind from a newer agent this CLI does not know.
    #[serde(other)]
    Unknown,
}

/// A failure with words for people. `retry_after_secs` is set for [`FailureKind::Busy`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_secs: Option<u64>,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl Failure {
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Failure {
        Failure {
            kind,
            message: message.into(),
            retry_after_secs: None,
        }
    }

    /// Whether waiting and trying again may succeed without anyone changing anything
    /// here. A wrong clock, an untrusted server or a full disk count too for a provisioned
    /// code: recorders without an RTC battery often boot with a wrong clock.
    pub fn is_retried(&self) -> bool {
        !matches!(
            self.kind,
            FailureKind::Typo | FailureKind::Rejected | FailureKind::Revoked
        )
    }

    /// How long the server asked us to stay away.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after_secs.map(Duration::from_secs)
    }

    /// A few plain words for `STATUS=` and `status`: the whole message, except for an
    /// outage, whose transport details belong in the log.
    pub fn summary(&self) -> &str {
        match self.kind {
            FailureKind::Unreachable => "server unreachable",
            _ => &self.message,
        }
    }

    /// A failed call while enrolling, in words for the installer at the recorder.
    pub fn of_enrollment(e: &CallError, server: &str) -> Failure {
        let (kind, message) = match e {
            CallError::Unreachable(_) => (
                FailureKind::Unreachable,
                format!("{e}. Check the network and [server] url ({server}), then enter the code again"),
            ),
            CallError::RateLimited(_) => (FailureKind::Busy, format!("{e}; enter the code again then")),
            CallError::Rejected { .. } if e.error_code() == Some(ErrorCode::InvalidRegistrationCode) => (
                FailureKind::Rejected,
                "the server does not accept this registration code (unknown, rotated or disabled): ask the account's admin for the current code".to_string(),
            ),
            CallError::Rejected { .. } if e.error_code() == Some(ErrorCode::AccountDisabled) => (
                FailureKind::AccountDisabled,
                "this account is disabled by its administrator: ask them to enable it, then enter the code again".to_string(),
            ),
            CallError::Rejected { .. } if e.is_revoked() => (
                FailureKind::Revoked,
                "this recorder's key was revoked by an admin; a new key has been prepared: enter the code again".to_string(),
            ),
            CallError::Rejected { .. } if e.is_transient() => (
                FailureKind::Unreachable,
                format!("the server failed: {e}; try again in a minute"),
            ),
            CallError::Rejected { .. } => (
                FailureKind::Rejected,
                format!("the server refused the enrollment: {e}"),
            ),
            _ => return Failure::of_report(e),
        };
        Failure {
            kind,
            message,
            retry_after_secs: e.retry_after().map(|d| d.as_secs()),
        }
    }

    /// A failed heartbeat, renewal or goodbye.
    pub fn of_report(e: &CallError) -> Failure {
        let kind = match e {
            CallError::Unreachable(_) | CallError::Protocol(_) => FailureKind::Unreachable,
            CallError::Clock(_) => FailureKind::Clock,
            CallError::Tls(_) => FailureKind::Tls,
            CallError::RateLimited(_) => FailureKind::Busy,
            CallError::Rejected { .. } if e.is_revoked() => FailureKind::Revoked,
            CallError::Rejected { .. } if e.is_transient() => FailureKind::Unreachable,
            CallError::Rejected { .. } => FailureKind::Rejected,
        };
        Failure {
            kind,
            message: e.to_string(),
            retry_after_secs: e.retry_after().map(|d| d.as_secs()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(status: u16, code: &str) -> CallError {
        CallError::Rejected {
            status,
            code: code.into(),
            message: "no".into(),
        }
    }

    #[test]
    fn every_call_error_has_one_kind_in_each_context() {
        use FailureKind::*;
        let table: Vec<(CallError, FailureKind, FailureKind, bool)> = vec![
            // error, while enrolling, while reporting, retried by zero-touch
            (
                CallError::Unreachable("refused".into()),
                Unreachable,
                Unreachable,
                true,
            ),
            (
                CallError::Protocol("not JSON".into()),
                Unreachable,
                Unreachable,
                true,
            ),
            (CallError::Clock("not valid yet".into()), Clock, Clock, true),
            (CallError::Tls("unknown issuer".into()), Tls, Tls, true),
            (
                CallError::RateLimited(Duration::from_secs(20)),
                Busy,
                Busy,
                true,
            ),
            (
                rejected(403, "invalid_registration_code"),
                Rejected,
                Rejected,
                false,
            ),
            (rejected(403, "forbidden"), Rejected, Rejected, false),
            (
                rejected(403, "account_disabled"),
                AccountDisabled,
                Rejected,
                true,
            ),
            (rejected(401, "unauthenticated"), Rejected, Rejected, false),
            (rejected(410, "revoked"), Revoked, Revoked, false),
            (rejected(500, "internal"), Unreachable, Unreachable, true),
            (rejected(503, "unknown"), Unreachable, Unreachable, true),
        ];
        for (error, enrolling, reporting, retried) in table {
            let f = Failure::of_enrollment(&error, "https://p:1");
            assert_eq!(f.kind, enrolling, "{error:?} while enrolling");
            assert_eq!(f.is_retried(), retried, "{error:?}");
            assert_eq!(Failure::of_report(&error).kind, reporting, "{error:?}");
        }
    }

    #[test]
    fn enrollment_words_tell_the_installer_what_to_do() {
        let f = Failure::of_enrollment(&CallError::Unreachable("x".into()), "https://p:1");
        assert!(f.message.contains("[server] url (https://p:1)"), "{f}");
        assert_eq!(f.summary(), "server unreachable");
        let f = Failure::of_enrollment(&rejected(403, "invalid_registration_code"), "s");
        assert!(f.message.contains("does not accept this registration code"));
        let f = Failure::of_enrollment(&rejected(403, "account_disabled"), "s");
        assert!(
            f.message.starts_with(
                "this account is disabled by its administrator: ask them to enable it"
            ),
            "{f}"
        );
        let f = Failure::of_enrollment(&CallError::RateLimited(Duration::from_secs(7)), "s");
        assert_eq!(f.retry_after(), Some(Duration::from_secs(7)));
    }

    #[test]
    fn the_kind_is_a_stable_tag_on_the_wire() {
        let f = Failure::new(FailureKind::Typo, "bad check symbol");
        assert_eq!(
            serde_json::to_value(&f).unwrap(),
            serde_json::json!({"kind": "typo", "message": "bad check symbol"})
        );
        let newer: Failure =
            serde_json::from_str(r#"{"kind": "approval_pending", "message": "m"}"#).unwrap();
        assert_eq!(newer.kind, FailureKind::Unknown);
    }
}
