//! Zero-touch enrollment: a registration code provisioned with the image — a systemd
//! credential (`LoadCredential=registration-code:…`), a file, or the config — found here
//! and handed to the lifecycle, which uses it once, retries it while failures are
//! transient (outage, wrong clock, untrusted server, full disk) and never again after the
//! server accepted or refused it. A code file is deleted after use; a credential lives in
//! systemd's private memory; of every code used only a SHA-256 is kept, so the same code
//! is never replayed after `unenroll`.

use std::fmt;
use std::path::{Path, PathBuf};

use contera_protocol::RegistrationCode;

use crate::config::AgentConfig;

/// The credential name to use with `LoadCredential=` / `SetCredential=`.
pub const CREDENTIAL_NAME: &str = "registration-code";

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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingCode {
    pub code: RegistrationCode,
    pub source: CodeSource,
}

/// A one-way fingerprint of a code, to recognise it later without keeping it.
pub fn fingerprint(code: &RegistrationCode) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, code.compact().as_bytes());
    hex::encode(digest)
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

/// The provisioned code, if any: the credential (in systemd's `$CREDENTIALS_DIRECTORY`,
/// passed in) first, then the file, then the config. Problems are logged and the source
/// skipped: a bad provisioned code must not stop the daemon from starting and taking a
/// typed one.
pub fn find(config: &AgentConfig, credentials_dir: Option<&Path>) -> Option<PendingCode> {
    let mut candidates = Vec::new();
    if let Some(dir) = credentials_dir {
        candidates.push(CodeSource::Credential(dir.join(CREDENTIAL_NAME)));
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
