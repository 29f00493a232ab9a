//! Enrollment: check the code locally, make or load the key, send a CSR, verify and store
//! what comes back. A failure leaves the previous state as it was.

use std::time::Instant;

use contera_protocol::v1::{AccountRef, EnrollRequest};
use contera_protocol::{ErrorCode, RegistrationCode};
use time::OffsetDateTime;

use crate::client::CallError;
use crate::control::Response;
use crate::daemon::Agent;
use crate::hardware;
use crate::identity;
use crate::state::Enrollment;

fn failed(kind: &str, message: impl Into<String>) -> Response {
    Response::Failed {
        kind: kind.to_string(),
        message: message.into(),
    }
}

/// The `kind` a call failure is reported as, and the words for the installer.
pub(crate) fn describe(e: &CallError, server: &str) -> (&'static str, String) {
    match e {
        CallError::Unreachable(_) => (
            "unreachable",
            format!("{e}. Check the network and [server] url ({server}), then enter the code again"),
        ),
        CallError::Clock(_) => ("clock", e.to_string()),
        CallError::Tls(_) => ("tls", e.to_string()),
        CallError::RateLimited(_) => ("busy", format!("{e}; enter the code again then")),
        CallError::Rejected { .. } if e.error_code() == Some(ErrorCode::InvalidRegistrationCode) => (
            "rejected",
            "the server does not accept this registration code (unknown, rotated or disabled): ask the account's admin for the current code".to_string(),
        ),
        CallError::Rejected { .. } if e.is_transient() => (
            "unreachable",
            format!("the server failed: {e}; try again in a minute"),
        ),
        CallError::Rejected { .. } => ("rejected", format!("the server refused the enrollment: {e}")),
        CallError::Protocol(_) => ("unreachable", e.to_string()),
    }
}

/// Why an enrollment did not happen: `kind` as in the control protocol (`rejected`,
/// `revoked`, `unreachable`, `clock`, `tls`, `busy`, `internal`) and words for people.
#[derive(Debug, Clone)]
pub(crate) struct EnrollFailure {
    pub kind: &'static str,
    pub message: String,
}

impl EnrollFailure {
    fn permanent(kind: &'static str, message: impl Into<String>) -> Self {
        EnrollFailure {
            kind,
            message: message.into(),
        }
    }
}

impl Agent {
    /// Enrollment as asked for over the control socket.
    pub(crate) async fn enroll(&mut self, typed: &str) -> Response {
        let code = match typed.parse::<RegistrationCode>() {
            Ok(code) => code,
            Err(e) => return failed("typo", e.to_string()),
        };
        match self.enroll_code(&code).await {
            Ok((recorder_id, account)) => {
                self.code_consumed(&code);
                Response::Enrolled {
                    recorder_id,
                    account,
                }
            }
            Err(f) if f.kind == "revoked" => failed("rejected", f.message),
            Err(f) => failed(f.kind, f.message),
        }
    }

    /// Makes or loads the key, sends the CSR, checks and stores what comes back. On any
    /// failure the stored state is as it was.
    pub(crate) async fn enroll_code(
        &mut self,
        code: &RegistrationCode,
    ) -> Result<(String, AccountRef), EnrollFailure> {
        let internal =
            |e: &dyn std::fmt::Display| EnrollFailure::permanent("internal", e.to_string());
        let dir = self.state_file.dir().to_owned();
        let key = identity::load_or_create_key(&dir).map_err(|e| internal(&e))?;
        let csr_pem = identity::csr_pem(&key).map_err(|e| internal(&e))?;
        let request = EnrollRequest {
            registration_code: code.compact(),
            csr_pem,
            hardware: hardware::detect(&self.config.recorder),
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
        };
        crate::agent_log!(
            self,
            log::Level::Info,
            "enrolling with code {}-… at {}",
            code.public_id(),
            self.server_url()
        );
        self.pet_watchdog();
        if let Err(e) = self.ensure_server().await {
            let (kind, message) = describe(&e, self.server_url());
            return Err(EnrollFailure { kind, message });
        }
        let anonymous = self.anonymous.clone().expect("ensure_server built it");
        self.pet_watchdog();
        let response = match anonymous.enroll(&request).await {
            Ok(response) => response,
            Err(e) if e.is_revoked() => {
                // This key was revoked: only a new key can enroll again.
                if let Err(e) = identity::delete_key(&dir) {
                    crate::agent_log!(self, log::Level::Error, "{e}");
                }
                self.key = None;
                return Err(EnrollFailure {
                    kind: "revoked",
                    message: "this recorder's key was revoked by an admin; a new key has been prepared: enter the code again".into()
                });
            }
            Err(e) => {
                let (kind, message) = describe(&e, self.server_url());
                crate::agent_log!(self, log::Level::Warn, "enrollment failed: {message}");
                return Err(EnrollFailure { kind, message });
            }
        };
        let validity = identity::check_certificate(&response.certificate_pem, &key)
            .map_err(|e| internal(&e))?;
        let mut next = self.state.clone();
        next.enrollment = Some(Enrollment {
            recorder_id: response.recorder_id.clone(),
            account: response.account.clone(),
            server_url: self.server_url().to_string(),
            certificate_pem: response.certificate_pem,
            ca_chain_pem: response.ca_chain_pem,
            certificate_not_before: validity.not_before,
            certificate_expires: validity.not_after,
            renew_at: identity::renewal_time(
                OffsetDateTime::now_utc(),
                validity,
                identity::random_renewal_fraction(),
            ),
            heartbeat_interval_secs: response.heartbeat_interval_secs,
            enrolled_at: OffsetDateTime::now_utc(),
        });
        next.revoked = None;
        if let Err(e) = self.state_file.save(&mut next) {
            return Err(EnrollFailure::permanent(
                "internal",
                format!("the server accepted the recorder but storing its certificate failed: {e}. Fix the disk, then enter the code again (the same recorder is restored)"),
            ));
        }
        let old_key = self.key.replace(key);
        let old_state = std::mem::replace(&mut self.state, next);
        if let Err(e) = self.rebuild_clients() {
            self.key = old_key;
            self.state = old_state;
            return Err(internal(&e));
        }
        self.last_error = None;
        self.last_heartbeat = None;
        self.backoff = crate::retry::Backoff::new(std::time::Duration::from_secs(
            self.config.agent.max_backoff_secs,
        ));
        // First heartbeat right away, so the recorder shows online at once.
        self.next_beat = Some(Instant::now());
        crate::agent_log!(
            self,
            log::Level::Info,
            "enrolled as recorder {} in account \"{}\" ({})",
            response.recorder_id,
            response.account.name,
            response.account.id
        );
        Ok((response.recorder_id, response.account))
    }
}
