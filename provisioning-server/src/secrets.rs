//! The data directory's secrets: the key that seals registration codes at rest, so that a
//! user allowed to see codes can read one again while a database dump alone reveals none.

use std::fs::{self, DirBuilder, Permissions};
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

use crate::files::{write_atomic, DATA_DIR_MODE, DATA_FILE_MODE};

/// Length of the code key in bytes (AES-256).
pub const KEY_LEN: usize = 32;
/// Domain separation for the associated data, so a ciphertext made for something else
/// under the same key could never open as a code.
const AAD_PREFIX: &[u8] = b"contera registration code v1\0";

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the code key {path} is {len} bytes long, not {KEY_LEN}: restore it from the backup taken with the database")]
    BadLength { path: PathBuf, len: usize },
    #[error("the code key {path} is missing but the database holds sealed codes: restore the key from the backup taken with the database (a new key could not open them)")]
    Missing { path: PathBuf },
    #[error("the system random generator failed")]
    Random,
    #[error("the code cannot be decrypted: the code key is not the one it was sealed with, or the row was altered")]
    Open,
}

/// A registration code sealed for storage: a fresh 96-bit nonce and the AES-256-GCM
/// ciphertext with its tag.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedCode {
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

impl std::fmt::Debug for SealedCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SealedCode({} bytes)", self.ciphertext.len())
    }
}

/// The key that seals registration codes. Its `Debug` prints `***` so it cannot reach a log.
pub struct CodeKey {
    key: LessSafeKey,
}

impl std::fmt::Debug for CodeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CodeKey(***)")
    }
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SecretsError {
    let path = path.to_owned();
    move |source| SecretsError::Io {
        action,
        path,
        source,
    }
}

/// `DATA/secrets/codes.key`.
pub fn code_key_path(data_dir: &Path) -> PathBuf {
    data_dir.join("secrets").join("codes.key")
}

fn aad(public_id: &str) -> Vec<u8> {
    let mut aad = AAD_PREFIX.to_vec();
    aad.extend_from_slice(public_id.as_bytes());
    aad
}

impl CodeKey {
    /// A key from its raw bytes.
    pub fn from_bytes(bytes: &[u8]) -> Option<CodeKey> {
        let unbound = UnboundKey::new(&AES_256_GCM, bytes).ok()?;
        Some(CodeKey {
            key: LessSafeKey::new(unbound),
        })
    }

    /// Loads the key from the data directory, creating it (directory 0700, file 0600,
    /// written atomically) when there is none yet. `sealed_codes_exist` says whether the
    /// database already holds sealed codes: then a missing key is an error, never a new key
    /// that would silently leave every stored code unreadable.
    pub fn load_or_create(
        data_dir: &Path,
        sealed_codes_exist: bool,
    ) -> Result<CodeKey, SecretsError> {
        let path = code_key_path(data_dir);
        match fs::read(&path) {
            Ok(bytes) => CodeKey::from_bytes(&bytes).ok_or(SecretsError::BadLength {
                path,
                len: bytes.len(),
            }),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                if sealed_codes_exist {
                    return Err(SecretsError::Missing { path });
                }
                let dir = path.parent().expect("the key path has a directory");
                DirBuilder::new()
                    .recursive(true)
                    .mode(DATA_DIR_MODE)
                    .create(dir)
                    .map_err(io("create", dir))?;
                fs::set_permissions(dir, Permissions::from_mode(DATA_DIR_MODE))
                    .map_err(io("restrict permissions of", dir))?;
                let mut bytes = [0u8; KEY_LEN];
                SystemRandom::new()
                    .fill(&mut bytes)
                    .map_err(|_| SecretsError::Random)?;
                write_atomic(&path, &bytes, DATA_FILE_MODE).map_err(io("write", &path))?;
                log::info!("created the registration code key {}", path.display());
                Ok(CodeKey::from_bytes(&bytes).expect("KEY_LEN bytes make a key"))
            }
            Err(e) => Err(io("read", &path)(e)),
        }
    }

    /// Seals `code` with a fresh random nonce; the code's public id is the associated data,
    /// so a ciphertext moved to another row does not open.
    pub fn seal(&self, public_id: &str, code: &str) -> Result<SealedCode, SecretsError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| SecretsError::Random)?;
        let mut in_out = code.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(public_id)),
                &mut in_out,
            )
            .map_err(|_| SecretsError::Open)?;
        Ok(SealedCode {
            nonce: nonce.to_vec(),
            ciphertext: in_out,
        })
    }

    /// Opens a code sealed for `public_id`.
    pub fn open(&self, public_id: &str, sealed: &SealedCode) -> Result<String, SecretsError> {
        let nonce =
            Nonce::try_assume_unique_for_key(&sealed.nonce).map_err(|_| SecretsError::Open)?;
        let mut in_out = sealed.ciphertext.clone();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(aad(public_id)), &mut in_out)
            .map_err(|_| SecretsError::Open)?;
        String::from_utf8(plain.to_vec()).map_err(|_| SecretsError::Open)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_code_opens_with_its_key_and_public_id() {
        let dir = tempfile::tempdir().unwrap();
        let key = CodeKey::load_or_create(dir.path(), false).unwrap();
        let sealed = key.seal("K7QD", "K7QD0000").unwrap();
        assert_eq!(sealed.nonce.len(), 12);
        assert!(!sealed.ciphertext.windows(8).any(|w| w == b"K7QD0000"));
        assert_eq!(key.open("K7QD", &sealed).unwrap(), "K7QD0000");
        // Loaded again from the file: the same key.
        let again = CodeKey::load_or_create(dir.path(), true).unwrap();
        assert_eq!(again.open("K7QD", &sealed).unwrap(), "K7QD0000");
        // Two seals of one code differ (fresh nonce each time).
        assert_ne!(key.seal("K7QD", "K7QD0000").unwrap(), sealed);
    }

    #[test]
    fn another_key_cannot_open_a_code() {
        let key = CodeKey::from_bytes(&[1; KEY_LEN]).unwrap();
        let other = CodeKey::from_bytes(&[2; KEY_LEN]).unwrap();
        let sealed = key.seal("AAAA", "AAAASECRET").unwrap();
        assert!(matches!(
            other.open("AAAA", &sealed),
            Err(SecretsError::Open)
        ));
    }

    #[test]
    fn a_ciphertext_moved_to_another_public_id_does_not_open() {
        let key = CodeKey::from_bytes(&[1; KEY_LEN]).unwrap();
        let sealed = key.seal("AAAA", "AAAASECRET").unwrap();
        assert!(matches!(key.open("BBBB", &sealed), Err(SecretsError::Open)));
        let mut tampered = sealed.clone();
        tampered.ciphertext[0] ^= 1;
        assert!(matches!(
            key.open("AAAA", &tampered),
            Err(SecretsError::Open)
        ));
    }

    #[test]
    fn the_key_file_is_0600_in_a_0700_directory() {
        let dir = tempfile::tempdir().unwrap();
        CodeKey::load_or_create(dir.path(), false).unwrap();
        let path = code_key_path(dir.path());
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        assert_eq!(fs::read(&path).unwrap().len(), KEY_LEN);
    }

    #[test]
    fn a_missing_key_with_sealed_codes_is_an_error_not_a_new_key() {
        let dir = tempfile::tempdir().unwrap();
        let err = CodeKey::load_or_create(dir.path(), true).unwrap_err();
        assert!(matches!(err, SecretsError::Missing { .. }), "{err}");
        assert!(!code_key_path(dir.path()).exists());
        fs::create_dir_all(dir.path().join("secrets")).unwrap();
        fs::write(code_key_path(dir.path()), b"short").unwrap();
        assert!(matches!(
            CodeKey::load_or_create(dir.path(), false),
            Err(SecretsError::BadLength { len: 5, .. })
        ));
    }
}
