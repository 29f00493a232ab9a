//! Zero-touch enrollment: a registration code provisioned with the image — a systemd
//! credential (`LoadCredential=registration-code:…`), a file, or the config — is used once
//! on first boot, retried while the server is unreachable, and then not used again. A code
//! file is deleted after use; a credential lives in systemd's private memory; of every code
//! used only a SHA-256 is kept, so the same code is never replayed after `unenroll`.

use std::fmt;
use std::path::{Path, PathBuf};

use contera_protocol::RegistrationCode;

use crate::config::AgentConfig;
use crate::daemon::Agent;

/// The credential name to use with `LoadCredential=` / `SetCredential=`.
pub const CREDENTIAL_NAME: &str = "registration-code";
/// Fingerprints of used codes kept in the state, newest last.
const MAX_REMEMBERED: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeSource {
    Credential(PathBuf),
    File(PathBuf),
    Config,
}

impl fmt::Display for CodeSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodeSource::Credential(p) => write!(f, "systemd credential {}", p.display()),
            CodeSource::File(p) => write!(f, "file {}", p.display()),
            CodeSource::Config => f.write_str("[enrollment] code in the config"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct PendingCode {
    pub code: RegistrationCode,
    pub source: CodeSource,
}

/// A one-way fingerprint of a code, to recognise it later without keeping it.
pub fn fingerprint(code: &RegistrationCode) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, code.compact().as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn read_code(path: &Path) -> Option<Result<RegistrationCode, String>> {
    match std::fs::read_to_string(path) {
        // Empty means "no code": the packaged unit's SetCredential= fallback when no
        // registration-code file was provisioned.
        Ok(text) if text.trim().is_empty() => None,
        Ok(text) => Some(
            text.trim()
                .parse::<RegistrationCode>()
                .map_err(|e| format!("{}: {e}", path.display())),
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => Some(Err(format!("cannot read {}: {e}", path.display()))),
    }
}

/// The provisioned code, if any: the credential first, then the file, then the config.
/// Problems are logged and the source skipped: a bad provisioned code must not stop the
/// daemon from starting and taking a typed one.
pub fn find(config: &AgentConfig) -> Option<PendingCode> {
    let mut candidates = Vec::new();
    if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") {
        candidates.push(CodeSource::Credential(
            Path::new(&dir).join(CREDENTIAL_NAME),
        ));
    }
    if let Some(file) = &config.enrollment.code_file {
        candidates.push(CodeSource::File(file.clone()));
    }
    for source in candidates {
        let path = match &source {
            CodeSource::Credential(p) | CodeSource::File(p) => p.clone(),
            CodeSource::Config => unreachable!("not a file"),
        };
        match read_code(&path) {
            None => continue,
            Some(Ok(code)) => return Some(PendingCode { code, source }),
            Some(Err(e)) => log::error!("ignoring the provisioned registration code: {e}"),
        }
    }
    let typed = config.enrollment.code.as_deref()?;
    match typed.parse::<RegistrationCode>() {
        Ok(code) => Some(PendingCode {
            code,
            source: CodeSource::Config,
        }),
        Err(e) => {
            log::error!("ignoring [enrollment] code: {e}");
            None
        }
    }
}

impl Agent {
    /// Remembers that `code` was used, and deletes the code file it came from.
    pub(crate) fn code_consumed(&mut self, code: &RegistrationCode) {
        let fp = fingerprint(code);
        let mut next = self.state.clone();
        if !next.consumed_codes.contains(&fp) {
            next.consumed_codes.push(fp);
            let excess = next.consumed_codes.len().saturating_sub(MAX_REMEMBERED);
            next.consumed_codes.drain(..excess);
            match self.state_file.save(&mut next) {
                Ok(()) => self.state = next,
                Err(e) => crate::agent_log!(self, log::Level::Error, "{e}"),
            }
        }
        if let Some(pending) = self.pending_code.take() {
            if &pending.code != code {
                self.pending_code = Some(pending);
                return;
            }
            match &pending.source {
                CodeSource::File(path) => match std::fs::remove_file(path) {
                    Ok(()) => crate::agent_log!(
                        self,
                        log::Level::Info,
                        "registration code file {} used and deleted",
                        path.display()
                    ),
                    Err(e) => crate::agent_log!(
                        self,
                        log::Level::Warn,
                        "registration code used, but its file {} could not be deleted ({e}): delete it by hand",
                        path.display()
                    ),
                },
                CodeSource::Config => crate::agent_log!(
                    self,
                    log::Level::Warn,
                    "registration code from the config used; it will not be used again: remove [enrollment] code from the config"
                ),
                CodeSource::Credential(_) => {}
            }
        }
    }

    /// One zero-touch attempt; transient failures are retried with backoff.
    pub(crate) async fn zero_touch(&mut self) {
        let Some(pending) = self.pending_code.clone() else {
            self.next_beat = None;
            return;
        };
        match self.enroll_code(&pending.code).await {
            Ok(_) => self.code_consumed(&pending.code),
            // Only the server saying no to the code (or to this revoked key) ends the
            // code's life. A wrong clock, an untrusted server, a full disk or an outage is
            // retried: recorders without an RTC battery often boot with a wrong clock.
            Err(f) if f.kind == "rejected" || f.kind == "revoked" => {
                crate::agent_log!(
                    self,
                    log::Level::Error,
                    "the registration code from the {} was refused: {}; enter a code with `contera-agent enroll --code …`",
                    pending.source,
                    f.message
                );
                if f.kind == "revoked" {
                    // A provisioned code must never undo an admin's revocation.
                    let mut next = self.state.clone();
                    next.revoked = Some(crate::state::Revocation {
                        recorder_id: String::new(),
                        at: time::OffsetDateTime::now_utc(),
                    });
                    match self.state_file.save(&mut next) {
                        Ok(()) => self.state = next,
                        Err(e) => crate::agent_log!(self, log::Level::Error, "{e}"),
                    }
                }
                // Not retried at every start: remembered like a used code.
                self.code_consumed(&pending.code);
                self.pending_code = None;
                self.last_error = None;
                self.next_beat = None;
            }
            Err(f) => {
                let wait = self.backoff.next_delay();
                self.last_error = Some(f.message);
                self.next_beat = Some(std::time::Instant::now() + wait);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_code_file_means_no_code() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registration-code");
        std::fs::write(&path, "\n").unwrap();
        assert!(read_code(&path).is_none());
        std::fs::write(&path, "ABCD").unwrap();
        assert!(read_code(&path).unwrap().is_err());
        assert!(read_code(&dir.path().join("missing")).is_none());
    }

    #[test]
    fn fingerprint_is_stable_and_hides_the_code() {
        let code = RegistrationCode::from_random([5; 23]);
        let fp = fingerprint(&code);
        assert_eq!(fp, fingerprint(&code.to_string().parse().unwrap()));
        assert_eq!(fp.len(), 64);
        assert!(!fp.to_uppercase().contains(&code.secret()));
    }
}
