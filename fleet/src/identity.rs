//! Saved recorder identities: one JSON file per recorder in the state directory (key,
//! certificate, recorder id), written atomically and readable only by its owner, so a
//! fleet enrolled once can heartbeat in many later runs.

use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};

/// Serial numbers of simulated recorders: `FLEET-000001`, `FLEET-000002`, …
pub const SERIAL_PREFIX: &str = "FLEET-";

const FORMAT_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot read the state directory {path}: {source}")]
    ReadDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a saved fleet identity: {reason}")]
    Damaged { path: PathBuf, reason: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The file's contents. `Debug` leaves the key out.
#[derive(Clone, Serialize, Deserialize)]
pub struct SavedIdentity {
    pub version: u32,
    pub serial: String,
    pub recorder_id: String,
    pub account_id: String,
    pub key_pem: String,
    pub certificate_pem: String,
}

impl std::fmt::Debug for SavedIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SavedIdentity")
            .field("serial", &self.serial)
            .field("recorder_id", &self.recorder_id)
            .finish_non_exhaustive()
    }
}

impl SavedIdentity {
    pub fn new(
        serial: String,
        recorder_id: String,
        account_id: String,
        key_pem: String,
        certificate_pem: String,
    ) -> Self {
        SavedIdentity {
            version: FORMAT_VERSION,
            serial,
            recorder_id,
            account_id,
            key_pem,
            certificate_pem,
        }
    }
}

/// A loaded identity, kept small: DER only (about 600 bytes a recorder).
#[derive(Clone)]
pub struct Identity {
    pub serial: String,
    pub recorder_id: String,
    pub certificate_der: Box<[u8]>,
    pub key_der: Box<[u8]>,
}

pub fn serial(index: usize) -> String {
    format!("{SERIAL_PREFIX}{index:06}")
}

fn path_for(dir: &Path, serial: &str) -> PathBuf {
    dir.join(format!("{serial}.json"))
}

/// Writes one identity (temp file, fsync, rename, fsync the directory; mode 0600).
pub fn save(dir: &Path, identity: &SavedIdentity) -> Result<(), IdentityError> {
    let path = path_for(dir, &identity.serial);
    let bytes = serde_json::to_vec_pretty(identity).expect("an identity serializes");
    contera_agent::state::write_atomic(&path, &bytes, 0o600)
        .map_err(|source| IdentityError::Write { path, source })
}

/// The identity files in `dir`, sorted by name; none when it does not exist.
fn files(dir: &Path) -> Result<Vec<PathBuf>, IdentityError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(IdentityError::ReadDir {
                path: dir.to_owned(),
                source,
            })
        }
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(SERIAL_PREFIX) && n.ends_with(".json"))
        })
        .collect();
    paths.sort();
    Ok(paths)
}

/// The index after the highest saved serial, so a second `enroll` adds recorders.
pub fn next_index(dir: &Path) -> Result<usize, IdentityError> {
    Ok(files(dir)?
        .iter()
        .filter_map(|p| {
            p.file_stem()?
                .to_str()?
                .strip_prefix(SERIAL_PREFIX)?
                .parse::<usize>()
                .ok()
        })
        .max()
        .map_or(1, |i| i + 1))
}

/// Loads up to `limit` saved identities (all when None), in serial order.
pub fn load(dir: &Path, limit: Option<usize>) -> Result<Vec<Identity>, IdentityError> {
    let paths = files(dir)?;
    let take = limit.unwrap_or(paths.len());
    paths.iter().take(take).map(|path| load_one(path)).collect()
}

fn load_one(path: &Path) -> Result<Identity, IdentityError> {
    let damaged = |reason: String| IdentityError::Damaged {
        path: path.to_owned(),
        reason,
    };
    let text = std::fs::read(path).map_err(|source| IdentityError::Read {
        path: path.to_owned(),
        source,
    })?;
    let saved: SavedIdentity = serde_json::from_slice(&text).map_err(|e| damaged(e.to_string()))?;
    if saved.version != FORMAT_VERSION {
        return Err(damaged(format!("format version {}", saved.version)));
    }
    let certificate = CertificateDer::from_pem_slice(saved.certificate_pem.as_bytes())
        .map_err(|e| damaged(format!("certificate: {e}")))?;
    let key = PrivateKeyDer::from_pem_slice(saved.key_pem.as_bytes())
        .map_err(|e| damaged(format!("key: {e}")))?;
    Ok(Identity {
        serial: saved.serial,
        recorder_id: saved.recorder_id,
        certificate_der: certificate.as_ref().into(),
        key_der: key.secret_der().into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saved(index: usize) -> SavedIdentity {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["r".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        SavedIdentity::new(
            serial(index),
            format!("rec-{index}"),
            "acct".into(),
            key.serialize_pem(),
            cert.pem(),
        )
    }

    #[test]
    fn saved_identities_load_back_in_serial_order_and_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path(), None).unwrap().is_empty());
        assert_eq!(next_index(dir.path()).unwrap(), 1);
        for i in [3, 1, 2] {
            save(dir.path(), &saved(i)).unwrap();
        }
        std::fs::write(dir.path().join("notes.txt"), "not an identity").unwrap();
        let all = load(dir.path(), None).unwrap();
        let ids: Vec<&str> = all.iter().map(|i| i.recorder_id.as_str()).collect();
        assert_eq!(ids, ["rec-1", "rec-2", "rec-3"]);
        assert_eq!(load(dir.path(), Some(2)).unwrap().len(), 2);
        assert_eq!(next_index(dir.path()).unwrap(), 4);
        let mode = std::fs::metadata(dir.path().join("FLEET-000001.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_missing_state_dir_holds_no_identities() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(&dir.path().join("absent"), None).unwrap().is_empty());
    }

    #[test]
    fn a_damaged_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("FLEET-000001.json"), "{").unwrap();
        let err = load(dir.path(), None).err().unwrap().to_string();
        assert!(err.contains("FLEET-000001.json"), "{err}");
    }
}
