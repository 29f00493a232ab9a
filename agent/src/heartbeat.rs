//! Heartbeats and renewal: report in at the server's interval (±10 %), back off while the
//! server is away, obey `Retry-After`, renew the certificate when due, and drop the
//! credential when the server says the recorder is revoked.

use std::time::{Duration, Instant};

use contera_protocol::v1::{HeartbeatRequest, Instruction, RenewRequest};
use time::OffsetDateTime;

use crate::client::CallError;
use crate::daemon::Agent;
use crate::enroll::describe;
use crate::hardware;
use crate::identity;
use crate::retry::{self, Backoff};
use crate::state::Revocation;

impl Agent {
    /// One heartbeat (with a renewal first when due), then schedules the next.
    pub(crate) async fn beat(&mut self) {
        let Some(enrollment) = self.state.enrollment.clone() else {
            self.zero_touch().await;
            return;
        };
        self.pet_watchdog();
        if OffsetDateTime::now_utc() >= enrollment.renew_at
            && self.renew().await.is_err()
            && self.state.enrollment.is_none()
        {
            return;
        }
        self.pet_watchdog();
        if let Err(e) = self.ensure_server().await {
            self.heartbeat_failed(&e);
            return;
        }
        let Some(client) = self.authenticated.clone() else {
            self.next_beat = None;
            return;
        };
        let request = HeartbeatRequest {
            status: hardware::status(&self.config.recorder).await,
        };
        self.pet_watchdog();
        match client.heartbeat(&request).await {
            Ok(response) => {
                if self.last_error.take().is_some() {
                    crate::agent_log!(
                        self,
                        log::Level::Info,
                        "server reachable again; heartbeats resumed"
                    );
                }
                self.last_heartbeat = Some(OffsetDateTime::now_utc());
                self.backoff =
                    Backoff::new(Duration::from_secs(self.config.agent.max_backoff_secs));
                let interval = response.heartbeat_interval_secs.max(1);
                if response.account != enrollment.account
                    || interval != enrollment.heartbeat_interval_secs
                {
                    let mut next = self.state.clone();
                    if let Some(e) = next.enrollment.as_mut() {
                        if e.account != response.account {
                            crate::agent_log!(
                                self,
                                log::Level::Info,
                                "recorder moved to account \"{}\" ({})",
                                response.account.name,
                                response.account.id
                            );
                        }
                        e.account = response.account.clone();
                        e.heartbeat_interval_secs = interval;
                    }
                    match self.state_file.save(&mut next) {
                        Ok(()) => self.state = next,
                        Err(e) => crate::agent_log!(self, log::Level::Error, "{e}"),
                    }
                }
                if response.instructions.contains(&Instruction::Renew) {
                    crate::agent_log!(
                        self,
                        log::Level::Info,
                        "the server asked for a certificate renewal"
                    );
                    let _ = self.renew().await;
                }
                let wait = retry::interval_with_jitter(
                    Duration::from_secs(interval.into()),
                    rand::random(),
                );
                self.next_beat = Some(Instant::now() + wait);
            }
            Err(e) if e.is_revoked() => self.revoked(&enrollment.recorder_id),
            Err(e) => self.heartbeat_failed(&e),
        }
    }

    fn heartbeat_failed(&mut self, e: &CallError) {
        if matches!(e, CallError::Unreachable(_)) {
            self.forget_discovered_server();
        }
        let wait = match e.retry_after() {
            Some(after) => retry::after_retry_after(after, rand::random()),
            None => self.backoff.next_delay(),
        };
        let (_, message) = describe(e, self.server_url());
        crate::agent_log!(
            self,
            log::Level::Warn,
            "heartbeat failed: {message}; next try in {} s",
            wait.as_secs()
        );
        let expired = self
            .state
            .enrollment
            .as_ref()
            .is_some_and(|en| en.certificate_expires <= OffsetDateTime::now_utc());
        self.last_error = Some(match e {
            CallError::Unreachable(_) => "server unreachable".to_string(),
            // Renewal was tried first and refused: the grace period is over.
            _ if expired => "the certificate expired and the server refused its renewal: enter a registration code (the recorder keeps its identity)".to_string(),
            other => other.to_string(),
        });
        self.next_beat = Some(Instant::now() + wait);
    }

    /// The server revoked this recorder: drop certificate and key, stop heartbeats, and
    /// wait for a new code.
    pub(crate) fn revoked(&mut self, recorder_id: &str) {
        crate::agent_log!(self, log::Level::Warn,
            "recorder {recorder_id} was revoked by the server: credential dropped, heartbeats stopped; enter a new registration code to enroll again"
        );
        let mut next = self.state.clone();
        next.enrollment = None;
        next.revoked = Some(Revocation {
            recorder_id: recorder_id.to_string(),
            at: OffsetDateTime::now_utc(),
        });
        if let Err(e) = self.state_file.save(&mut next) {
            crate::agent_log!(self, log::Level::Error, "{e}");
        }
        // In memory the credential is gone either way: no more heartbeats.
        self.drop_credential(next);
    }

    /// Gets a new certificate for the same key. The old certificate stays in use until the
    /// new one is safely stored.
    pub(crate) async fn renew(&mut self) -> Result<(), ()> {
        self.pet_watchdog();
        let (Some(client), Some(key)) = (self.authenticated.clone(), self.key.as_ref()) else {
            return Err(());
        };
        let csr_pem = identity::csr_pem(key)
            .map_err(|e| crate::agent_log!(self, log::Level::Error, "renewal: {e}"))?;
        let response = match client.renew(&RenewRequest { csr_pem }).await {
            Ok(r) => r,
            Err(e) if e.is_revoked() => {
                let id = self
                    .state
                    .enrollment
                    .as_ref()
                    .map(|e| e.recorder_id.clone())
                    .unwrap_or_default();
                self.revoked(&id);
                return Err(());
            }
            Err(e) => {
                crate::agent_log!(
                    self,
                    log::Level::Warn,
                    "certificate renewal failed, will retry at the next heartbeat: {e}"
                );
                return Err(());
            }
        };
        let validity = identity::check_certificate(&response.certificate_pem, key)
            .map_err(|e| crate::agent_log!(self, log::Level::Error, "renewal: {e}"))?;
        let mut next = self.state.clone();
        if let Some(e) = next.enrollment.as_mut() {
            e.certificate_pem = response.certificate_pem;
            e.ca_chain_pem = response.ca_chain_pem;
            e.certificate_not_before = validity.not_before;
            e.certificate_expires = validity.not_after;
            e.renew_at = identity::renewal_time(
                OffsetDateTime::now_utc(),
                validity,
                identity::random_renewal_fraction(),
            );
        }
        self.state_file.save(&mut next).map_err(|e| {
            crate::agent_log!(
                self,
                log::Level::Error,
                "renewal: keeping the old certificate: {e}"
            )
        })?;
        self.state = next;
        if let Err(e) = self.rebuild_clients() {
            crate::agent_log!(self, log::Level::Error, "renewal: {e}");
            return Err(());
        }
        crate::agent_log!(
            self,
            log::Level::Info,
            "certificate renewed; valid until {}",
            crate::daemon::rfc3339(validity.not_after)
        );
        Ok(())
    }
}
