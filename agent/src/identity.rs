//! The recorder's identity: its own ECDSA P-256 key (made here, never sent), the CSRs
//! made with it, and checks on the certificates the server returns.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PublicKeyData};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;

use crate::state::write_atomic;

pub const KEY_FILE: &str = "key.pem";

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot {action} the recorder key {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the recorder key {path} is damaged ({message}); run `contera-agent unenroll` and enroll again to make a new one")]
    BadKey { path: PathBuf, message: String },
    #[error("making a key or CSR failed: {0}")]
    Crypto(#[from] rcgen::Error),
    #[error("the server returned a certificate that {0}")]
    BadCertificate(String),
}

pub fn key_path(state_dir: &Path) -> PathBuf {
    state_dir.join(KEY_FILE)
}

/// Loads the recorder key, if there is one.
pub fn load_key(state_dir: &Path) -> Result<Option<KeyPair>, IdentityError> {
    let path = key_path(state_dir);
    match std::fs::read_to_string(&path) {
        Ok(pem) => KeyPair::from_pem(&pem)
            .map(Some)
            .map_err(|e| IdentityError::BadKey {
                path,
                message: e.to_string(),
            }),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(source) => Err(IdentityError::Io {
            action: "read",
            path,
            source,
        }),
    }
}

/// Loads the key or makes a new one, written 0600 before it is ever used.
pub fn load_or_create_key(state_dir: &Path) -> Result<KeyPair, IdentityError> {
    if let Some(key) = load_key(state_dir)? {
        return Ok(key);
    }
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let path = key_path(state_dir);
    write_atomic(&path, key.serialize_pem().as_bytes(), 0o600).map_err(|source| {
        IdentityError::Io {
            action: "write",
            path,
            source,
        }
    })?;
    Ok(key)
}

/// Forgets the key (after revocation or `unenroll`): the next enrollment makes a new one.
pub fn delete_key(state_dir: &Path) -> Result<(), IdentityError> {
    let path = key_path(state_dir);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(source) => Err(IdentityError::Io {
            action: "delete",
            path,
            source,
        }),
    }
}

/// A PKCS#10 request signed with `key`. The subject is a hint only: the server sets the
/// real one.
pub fn csr_pem(key: &KeyPair) -> Result<String, IdentityError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "contera-recorder");
    params.distinguished_name = dn;
    Ok(params.serialize_request(key)?.pem()?)
}

/// Validity of a certificate the server issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

/// Checks that `cert_pem` is a certificate for `key` and returns its validity.
pub fn check_certificate(cert_pem: &str, key: &KeyPair) -> Result<Validity, IdentityError> {
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
        .map_err(|_| IdentityError::BadCertificate("is not PEM".into()))?;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|_| IdentityError::BadCertificate("does not parse".into()))?;
    if cert.public_key().raw != key.subject_public_key_info().as_slice() {
        return Err(IdentityError::BadCertificate(
            "is not for this recorder's key".into(),
        ));
    }
    Ok(Validity {
        not_before: cert.validity().not_before.to_datetime(),
        not_after: cert.validity().not_after.to_datetime(),
    })
}

/// When to renew: a uniformly random point between 70 % and 90 % of the lifetime, so
/// recorders installed on the same day do not all renew together. The lifetime counts
/// from when the certificate was received, not from its notBefore, which the server
/// backdates a few minutes for clock skew.
pub fn renewal_time(received: OffsetDateTime, validity: Validity, fraction: f64) -> OffsetDateTime {
    let fraction = fraction.clamp(0.7, 0.9);
    let start = received.clamp(validity.not_before, validity.not_after);
    start + (validity.not_after - start) * fraction
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use time::Duration;

    #[test]
    fn key_is_made_once_with_mode_0600_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let key = load_or_create_key(dir.path()).unwrap();
        let again = load_or_create_key(dir.path()).unwrap();
        assert_eq!(
            key.subject_public_key_info(),
            again.subject_public_key_info()
        );
        let mode = std::fs::metadata(key_path(dir.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(key.algorithm(), &rcgen::PKCS_ECDSA_P256_SHA256);
    }

    #[test]
    fn csr_never_contains_the_private_key() {
        let dir = tempfile::tempdir().unwrap();
        let key = load_or_create_key(dir.path()).unwrap();
        let csr = csr_pem(&key).unwrap();
        assert!(csr.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
        assert!(!csr.contains("PRIVATE KEY"));
    }

    #[test]
    fn renewal_lands_between_seventy_and_ninety_percent() {
        let start = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let validity = Validity {
            not_before: start,
            not_after: start + Duration::days(100),
        };
        assert_eq!(
            renewal_time(start, validity, 0.7),
            start + Duration::days(70)
        );
        assert_eq!(
            renewal_time(start, validity, 0.9),
            start + Duration::days(90)
        );
        // Counted from receipt, not from the backdated notBefore.
        let received = start + Duration::days(50);
        assert_eq!(
            renewal_time(received, validity, 0.5),
            received + Duration::days(35)
        );
        assert_eq!(
            renewal_time(received, validity, 0.8),
            received + Duration::days(40)
        );
        for r in [0.0, 0.3, 0.999] {
            let f = crate::retry::renewal_fraction(r);
            assert!((0.7..0.9).contains(&f));
        }
    }

    #[test]
    fn a_certificate_for_another_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let key = load_or_create_key(dir.path()).unwrap();
        let other = KeyPair::generate().unwrap();
        let cert = CertificateParams::default().self_signed(&other).unwrap();
        assert!(matches!(
            check_certificate(&cert.pem(), &key),
            Err(IdentityError::BadCertificate(_))
        ));
        let own = CertificateParams::default().self_signed(&key).unwrap();
        check_certificate(&own.pem(), &key).unwrap();
    }
}
