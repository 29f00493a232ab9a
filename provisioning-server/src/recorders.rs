//! Recorders: enrollment by key, heartbeats (coalesced in memory, written in batches),
//! certificate renewal and the checks a client certificate must pass.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use contera_protocol::v1::{
    AccountRef, EnrollRequest, EnrollResponse, GoodbyeRequest, HeartbeatRequest, HeartbeatResponse,
    Instruction, RenewRequest, RenewResponse,
};
use time::{Duration, OffsetDateTime};

use crate::accounts::{self, CodeRejected};
use crate::ca::{self, CaError, CsrError, DeviceCa};
use crate::facts::{Facts, RecorderFacts};
use crate::peer_cert::{PeerCertificate, Presented};
use crate::store::{CertificateRecord, EnrollKind, EnrollRecord, Presence, Store, StoreError};

/// Longest accepted hardware field (serial, model, …), in bytes.
const MAX_FIELD_BYTES: usize = 256;
/// A recorder counts as online for this many heartbeat intervals after its last one.
pub const GRACE_INTERVALS: i64 = 3;
/// How often an enrollment signs and tries to commit when concurrent enrollments of the
/// same key keep changing which recorder id the key belongs to. Two suffice in practice
/// (the winner's id does not change again); the third covers a renewal in between.
const ENROLL_ATTEMPTS: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum RecorderError {
    #[error("registration code not accepted: check the code with the account's admin, or ask for a new one")]
    InvalidCode,
    #[error("{0}")]
    Csr(#[from] CsrError),
    #[error("{0}")]
    BadField(String),
    #[error("a client certificate is required: enroll first, then present the certificate you were given")]
    NoCertificate,
    #[error("the client certificate is not one this server issued for a current recorder key")]
    UnknownCertificate,
    #[error("this recorder was revoked by an admin; enroll again with a registration code and a new key")]
    Revoked,
    #[error("the client certificate expired: renew it (POST /api/v1/renew accepts it for a while after expiry), or enroll again with a registration code")]
    CertificateExpired,
    #[error("{0}")]
    Conflict(String),
    /// The account (or one above it) is disabled: told only to a caller that holds a valid
    /// code for it or the recorder's own certificate.
    #[error("this account is disabled by its administrator: ask them to enable it")]
    AccountDisabled,
    #[error("too many renewals for this recorder; retry in {0} s")]
    RateLimited(u64),
    #[error(transparent)]
    Store(StoreError),
    #[error(transparent)]
    Ca(#[from] CaError),
}

impl From<StoreError> for RecorderError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Revoked => RecorderError::Revoked,
            // Used up, disabled or expired between the check and the commit: the same
            // answer as any other code that is not accepted.
            StoreError::CodeRefused => RecorderError::InvalidCode,
            StoreError::Conflict(m) => RecorderError::Conflict(m),
            StoreError::EnrollmentRaced { .. } => RecorderError::Conflict(
                "concurrent enrollments of this key kept racing; enroll again".into(),
            ),
            other => RecorderError::Store(other),
        }
    }
}

impl From<CodeRejected> for RecorderError {
    fn from(e: CodeRejected) -> Self {
        match e {
            CodeRejected::Invalid => RecorderError::InvalidCode,
            CodeRejected::AccountDisabled => RecorderError::AccountDisabled,
            CodeRejected::Store(s) => s.into(),
        }
    }
}

/// Heartbeats waiting to be written, newest per recorder.
#[derive(Default)]
pub struct PresenceBuffer {
    pending: Mutex<HashMap<String, Presence>>,
    /// A hash of the last status written per recorder (clock-driven fields left out), so
    /// an unchanged status is not rewritten; eight bytes per recorder, not the payload.
    written_status: Mutex<HashMap<String, u64>>,
}

/// The status payload to store, without its clock-driven field, and that field.
fn split_status(mut status: contera_protocol::v1::RecorderStatus) -> (String, Option<i64>) {
    let uptime = status
        .uptime_secs
        .take()
        .map(|secs| i64::try_from(secs).unwrap_or(i64::MAX));
    let payload = serde_json::to_string(&status).unwrap_or_else(|_| "{}".into());
    (payload, uptime)
}

fn status_hash(status: &str) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault};
    BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(status)
}

impl PresenceBuffer {
    fn touch(
        &self,
        recorder_id: &str,
        now: i64,
        interval: u32,
        status: String,
        uptime_secs: Option<i64>,
    ) {
        let hash = status_hash(&status);
        let changed = self
            .written_status
            .lock()
            .expect("not poisoned")
            .get(recorder_id)
            != Some(&hash);
        let mut pending = self.pending.lock().expect("not poisoned");
        let entry = match pending.get_mut(recorder_id) {
            Some(entry) => entry,
            None => pending
                .entry(recorder_id.to_string())
                .or_insert_with(|| Presence {
                    recorder_id: recorder_id.to_string(),
                    last_seen: now,
                    online_until: now,
                    status: None,
                    uptime_secs: None,
                }),
        };
        entry.last_seen = now;
        entry.online_until = now + GRACE_INTERVALS * i64::from(interval);
        entry.uptime_secs = uptime_secs;
        // Unchanged since the last write: nothing to write, even if an intermediate
        // status is pending.
        entry.status = changed.then_some(status);
    }

    /// Writes everything pending in one transaction. On failure the batch is put back
    /// (unless newer heartbeats replaced it) so nothing is lost to a busy database.
    pub async fn flush(&self, store: &dyn Store) -> Result<usize, StoreError> {
        let batch: Vec<Presence> = {
            let mut pending = self.pending.lock().expect("not poisoned");
            pending.drain().map(|(_, p)| p).collect()
        };
        if batch.is_empty() {
            return Ok(0);
        }
        match store.record_presence(&batch).await {
            Ok(()) => {
                let mut written = self.written_status.lock().expect("not poisoned");
                for p in &batch {
                    if let Some(status) = &p.status {
                        written.insert(p.recorder_id.clone(), status_hash(status));
                    }
                }
                Ok(batch.len())
            }
            Err(e) => {
                let mut pending = self.pending.lock().expect("not poisoned");
                for p in batch {
                    pending.entry(p.recorder_id.clone()).or_insert(p);
                }
                Err(e)
            }
        }
    }

    /// Drops a pending heartbeat so a flush after a goodbye cannot mark it online again.
    fn forget(&self, recorder_id: &str) {
        self.pending
            .lock()
            .expect("not poisoned")
            .remove(recorder_id);
    }

    pub fn pending(&self) -> usize {
        self.pending.lock().expect("not poisoned").len()
    }
}

/// The recorder a renewal is for.
struct Renewing {
    id: String,
    key_fingerprint: String,
}

/// The recorder-facing service: what the API's recorder routes call.
pub struct Recorders {
    pub store: Arc<dyn Store>,
    pub ca: Arc<DeviceCa>,
    pub heartbeat_interval_secs: u32,
    pub certificate_lifetime: Duration,
    /// How long after expiry a certificate may still renew.
    pub expired_renewal_grace: Duration,
    pub presence: PresenceBuffer,
    /// What heartbeats need to know, in memory (see [`crate::facts`]).
    pub facts: Arc<Facts>,
    /// Renewals per recorder: each one signs, writes and audits, so a recorder (or a
    /// stolen key) cannot grow the database without bound.
    pub renew_limiter: RenewLimiter,
}

/// Per-recorder limit on renewals.
pub type RenewLimiter = governor::DefaultKeyedRateLimiter<String>;

/// Renewals allowed per recorder and hour (as a burst that refills over the hour).
pub const RENEWALS_PER_HOUR: u32 = 12;

pub fn renew_limiter() -> RenewLimiter {
    governor::RateLimiter::keyed(governor::Quota::per_hour(
        std::num::NonZeroU32::new(RENEWALS_PER_HOUR).expect("non-zero"),
    ))
}

fn check_field(name: &str, value: &str, required: bool) -> Result<(), RecorderError> {
    if required && value.trim().is_empty() {
        return Err(RecorderError::BadField(format!("hardware.{name} is empty")));
    }
    if value.len() > MAX_FIELD_BYTES {
        return Err(RecorderError::BadField(format!(
            "hardware.{name} is longer than {MAX_FIELD_BYTES} bytes"
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(RecorderError::BadField(format!(
            "hardware.{name} contains control characters"
        )));
    }
    Ok(())
}

impl Recorders {
    /// Enrolls a recorder; answers with what it did too (`new`, `again`, `moved`).
    pub async fn enroll(
        &self,
        req: EnrollRequest,
    ) -> Result<(EnrollResponse, &'static str), RecorderError> {
        let hw = &req.hardware;
        check_field("serial", &hw.serial, true)?;
        check_field("model", &hw.model, true)?;
        check_field("mac", hw.mac.as_deref().unwrap_or(""), false)?;
        check_field("firmware", hw.firmware.as_deref().unwrap_or(""), false)?;
        if req.agent_version.len() > MAX_FIELD_BYTES {
            return Err(RecorderError::BadField("agent_version is too long".into()));
        }
        let (account, code_public_id) =
            accounts::resolve_code(&self.store, &req.registration_code).await?;
        let key = ca::parse_csr(&req.csr_pem)?;
        let now = OffsetDateTime::now_utc();
        // The certificate's CN is the recorder id, and it is signed before the one
        // transaction that stores the recorder with it, so a crash never leaves a recorder
        // without a certificate. The id: the one that holds the key already, else a new one.
        let mut recorder_id = match self.store.recorder_by_key(&key.fingerprint).await? {
            Some(existing) if existing.revoked_at.is_some() => return Err(RecorderError::Revoked),
            Some(existing) => existing.id,
            None => uuid::Uuid::new_v4().to_string(),
        };
        let mut attempt = 1;
        let (outcome, issued) = loop {
            let issued = self
                .ca
                .issue(&key, &recorder_id, self.certificate_lifetime, now)?;
            let record = EnrollRecord {
                recorder_id: recorder_id.clone(),
                account_id: account.id.clone(),
                key_fingerprint: key.fingerprint.clone(),
                serial: hw.serial.trim().to_string(),
                mac: hw.mac.clone(),
                model: hw.model.trim().to_string(),
                firmware: hw.firmware.clone(),
                agent_version: req.agent_version.clone(),
                code_public_id: code_public_id.clone(),
                cert_serial: issued.serial_hex.clone(),
                cert_not_after: issued.not_after.unix_timestamp(),
                now: now.unix_timestamp(),
            };
            match self.store.enroll(&record).await {
                Ok(outcome) => break (outcome, issued),
                // Another enrollment of this key got there first (or the id is taken):
                // nothing was written; sign for the id the store names and try again.
                Err(StoreError::EnrollmentRaced { recorder_id: owner })
                    if attempt < ENROLL_ATTEMPTS =>
                {
                    attempt += 1;
                    recorder_id = owner.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
                }
                Err(e) => return Err(e.into()),
            }
        };
        let recorder = outcome.recorder;
        self.facts.forget_recorder(&recorder.id);
        match &outcome.kind {
            EnrollKind::New { replaces: Some(old) } => log::info!(
                "recorder {} enrolled into account {} with code {code_public_id}; possible replacement of {old}",
                recorder.id, account.id
            ),
            EnrollKind::New { replaces: None } => log::info!(
                "recorder {} enrolled into account {} with code {code_public_id}",
                recorder.id, account.id
            ),
            EnrollKind::Again => log::info!("recorder {} enrolled again into account {}", recorder.id, account.id),
            EnrollKind::Moved { from_account } => log::info!(
                "recorder {} moved from account {from_account} to {}",
                recorder.id, account.id
            ),
        }
        let kind = match &outcome.kind {
            EnrollKind::New { .. } => "new",
            EnrollKind::Again => "again",
            EnrollKind::Moved { .. } => "moved",
        };
        let answer = EnrollResponse {
            recorder_id: recorder.id,
            account: AccountRef {
                id: account.id,
                name: account.name,
            },
            certificate_pem: issued.pem,
            ca_chain_pem: self.ca.cert_pem().to_string(),
            heartbeat_interval_secs: self.heartbeat_interval_secs,
            server_time: now,
        };
        Ok((answer, kind))
    }

    /// The recorder a client certificate belongs to, if it is current and not revoked.
    /// An expired certificate passes only when `allow_expired` (renewal, goodbye) and only
    /// within the grace period. Reads no database while the recorder's facts are cached.
    async fn authenticate<'c>(
        &self,
        cert: Option<&'c PeerCertificate>,
        allow_expired: bool,
    ) -> Result<(Arc<RecorderFacts>, &'c Presented), RecorderError> {
        let cert = cert.ok_or(RecorderError::NoCertificate)?;
        let presented = cert
            .presented
            .as_ref()
            .ok_or(RecorderError::UnknownCertificate)?;
        let now = OffsetDateTime::now_utc().unix_timestamp();
        if presented.not_after < now
            && (!allow_expired
                || now - presented.not_after > self.expired_renewal_grace.whole_seconds())
        {
            return Err(RecorderError::CertificateExpired);
        }
        let recorder = self
            .facts
            .recorder(self.store.as_ref(), &presented.recorder_id)
            .await?
            .ok_or(RecorderError::UnknownCertificate)?;
        if recorder.revoked {
            return Err(RecorderError::Revoked);
        }
        if recorder.key_fingerprint != presented.key_fingerprint {
            return Err(RecorderError::UnknownCertificate);
        }
        Ok((recorder, presented))
    }

    pub async fn heartbeat(
        &self,
        cert: Option<&PeerCertificate>,
        req: HeartbeatRequest,
    ) -> Result<HeartbeatResponse, RecorderError> {
        let (recorder, presented) = self.authenticate(cert, false).await?;
        let now = OffsetDateTime::now_utc();
        let (status, uptime_secs) = split_status(req.status);
        self.presence.touch(
            &presented.recorder_id,
            now.unix_timestamp(),
            self.heartbeat_interval_secs,
            status,
            uptime_secs,
        );
        let account = self
            .facts
            .account(self.store.as_ref(), &recorder.account_id)
            .await?
            .ok_or_else(|| RecorderError::Conflict("the recorder's account is gone".into()))?;
        let mut instructions = Vec::new();
        let remaining = presented.not_after - now.unix_timestamp();
        // A disabled account's recorder is still answered (200) and still counted as
        // alive above, so that it notices enabling at its next heartbeat; it is told why
        // nothing else happens, and is not asked to renew (renewal is refused meanwhile).
        if account.disabled {
            instructions.push(Instruction::AccountDisabled);
        } else if remaining < self.certificate_lifetime.whole_seconds() / 10 {
            instructions.push(Instruction::Renew);
        }
        Ok(HeartbeatResponse {
            heartbeat_interval_secs: self.heartbeat_interval_secs,
            account: AccountRef {
                id: recorder.account_id.clone(),
                name: account.name.clone(),
            },
            instructions,
            server_time: now,
        })
    }

    /// The agent is stopping cleanly: offline now, recorded as a shutdown.
    pub async fn goodbye(
        &self,
        cert: Option<&PeerCertificate>,
        req: GoodbyeRequest,
    ) -> Result<(), RecorderError> {
        let (_, presented) = self.authenticate(cert, true).await?;
        let recorder_id = &presented.recorder_id;
        let reason: String = req
            .reason
            .chars()
            .filter(|c| !c.is_control())
            .take(64)
            .collect();
        let reason = if reason.is_empty() {
            "shutdown".to_string()
        } else {
            reason
        };
        self.presence.forget(recorder_id);
        self.store
            .record_goodbye(
                recorder_id,
                OffsetDateTime::now_utc().unix_timestamp(),
                &reason,
            )
            .await?;
        log::info!("recorder {recorder_id} said goodbye ({reason})");
        Ok(())
    }

    /// Issues a new certificate to an authenticated recorder. The CSR may carry a new key:
    /// the recorder keeps its id because its current certificate vouches for it.
    pub async fn renew(
        &self,
        cert: Option<&PeerCertificate>,
        req: RenewRequest,
    ) -> Result<RenewResponse, RecorderError> {
        let (facts, presented) = self.authenticate(cert, true).await?;
        let recorder = Renewing {
            id: presented.recorder_id.clone(),
            key_fingerprint: facts.key_fingerprint.clone(),
        };
        // Checked before the rate limit, so that a refused renewal does not use up the
        // allowance the recorder needs once its account is enabled again.
        let account = self
            .facts
            .account(self.store.as_ref(), &facts.account_id)
            .await?;
        if account.is_some_and(|a| a.disabled) {
            return Err(RecorderError::AccountDisabled);
        }
        if let Err(not_until) = self.renew_limiter.check_key(&recorder.id) {
            use governor::clock::{Clock, DefaultClock};
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            return Err(RecorderError::RateLimited(wait.as_secs().max(1)));
        }
        let key = ca::parse_csr(&req.csr_pem)?;
        let now = OffsetDateTime::now_utc();
        let issued = self
            .ca
            .issue(&key, &recorder.id, self.certificate_lifetime, now)?;
        let action = if key.fingerprint == recorder.key_fingerprint {
            "certificate.renewed"
        } else {
            "certificate.renewed_with_new_key"
        };
        self.store
            .set_certificate(&CertificateRecord {
                recorder_id: &recorder.id,
                key_fingerprint: &key.fingerprint,
                cert_serial: &issued.serial_hex,
                not_after: issued.not_after.unix_timestamp(),
                actor: &format!("recorder:{}", recorder.id),
                action,
                now: now.unix_timestamp(),
            })
            .await?;
        self.facts.forget_recorder(&recorder.id);
        log::info!(
            "recorder {} renewed its certificate ({action})",
            recorder.id
        );
        Ok(RenewResponse {
            certificate_pem: issued.pem,
            ca_chain_pem: self.ca.cert_pem().to_string(),
        })
    }
}
