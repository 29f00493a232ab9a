//! Certificate authorities: the TLS CA that agents trust, the server certificate, and the
//! separate device CA that signs recorder client certificates from their CSRs.

use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber, SignatureAlgorithm,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateSigningRequestDer, PrivateKeyDer};
use time::{Duration, OffsetDateTime};
use x509_parser::prelude::FromDer;

use crate::files::write_atomic;

/// How far notBefore is backdated, so a recorder whose clock is a little behind can use a
/// fresh certificate at once.
const BACKDATE: Duration = Duration::minutes(5);
const CA_LIFETIME: Duration = Duration::days(3650);
const SERVER_CERT_LIFETIME: Duration = Duration::days(397);
/// A server certificate this close to expiry is replaced at start.
const SERVER_CERT_RENEW_BEFORE: Duration = Duration::days(30);

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a usable {what}: {message}; move the tls/ directory away to start a new CA (enrolled recorders must then enroll again)")]
    Corrupt {
        path: PathBuf,
        what: &'static str,
        message: String,
    },
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("TLS setup failed: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Why a CSR was refused. Messages go back to the client as they are.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsrError {
    #[error("csr_pem is not a PEM-encoded PKCS#10 certificate request (-----BEGIN CERTIFICATE REQUEST-----)")]
    NotPem,
    #[error("csr_pem does not parse as a PKCS#10 certificate request")]
    NotCsr,
    #[error("the CSR's signature does not verify against its public key: sign it with the key it carries")]
    BadSignature,
    /// Checked before the signature, so a key of another type (RSA, P-521, Ed448, …) is
    /// told what to use instead of being told its signature does not verify.
    #[error("the CSR's key type is not supported: use an ECDSA P-256 or P-384 key, or an Ed25519 key (RSA, DSA, other curves and Ed448 are refused)")]
    UnsupportedKey,
}

/// The public key a recorder proved it holds, taken from a verified CSR. Only this is used
/// from a CSR: subject, names, usages and validity are the server's choice.
#[derive(Debug, Clone)]
pub struct RecorderKey {
    raw: Vec<u8>,
    alg: &'static SignatureAlgorithm,
    /// Hex SHA-256 of the SubjectPublicKeyInfo: the recorder's identity.
    pub fingerprint: String,
}

impl PublicKeyData for RecorderKey {
    fn der_bytes(&self) -> &[u8] {
        &self.raw
    }
    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.alg
    }
}

/// Hex SHA-256 of a DER SubjectPublicKeyInfo, the form recorder identities are kept in.
pub fn spki_fingerprint(spki_der: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, spki_der).as_ref())
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses a PEM CSR, checks its key type and then its self-signature, and returns only its
/// public key. The key type comes first: the signature of an unsupported key type cannot
/// be verified either, and "use another key type" is the answer that helps.
pub fn parse_csr(pem: &str) -> Result<RecorderKey, CsrError> {
    let der = CertificateSigningRequestDer::from_pem_slice(pem.as_bytes())
        .map_err(|_| CsrError::NotPem)?;
    let (_, csr) =
        x509_parser::certification_request::X509CertificationRequest::from_der(der.as_ref())
            .map_err(|_| CsrError::NotCsr)?;
    let spki = &csr.certification_request_info.subject_pki;
    let alg = key_algorithm(spki).ok_or(CsrError::UnsupportedKey)?;
    csr.verify_signature().map_err(|_| CsrError::BadSignature)?;
    Ok(RecorderKey {
        raw: spki.subject_public_key.data.to_vec(),
        alg,
        fingerprint: spki_fingerprint(spki.raw),
    })
}

fn key_algorithm(
    spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>,
) -> Option<&'static SignatureAlgorithm> {
    use x509_parser::oid_registry::{
        OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_SIG_ED25519,
    };
    let alg = &spki.algorithm;
    if alg.algorithm == OID_SIG_ED25519 {
        return Some(&rcgen::PKCS_ED25519);
    }
    if alg.algorithm != OID_KEY_TYPE_EC_PUBLIC_KEY {
        return None;
    }
    let curve = alg.parameters.as_ref()?.as_oid().ok()?;
    if curve == OID_EC_P256 {
        Some(&rcgen::PKCS_ECDSA_P256_SHA256)
    } else if curve == OID_NIST_EC_P384 {
        Some(&rcgen::PKCS_ECDSA_P384_SHA384)
    } else {
        None
    }
}

/// A certificate the device CA issued.
#[derive(Debug, Clone)]
pub struct IssuedCertificate {
    pub pem: String,
    pub serial_hex: String,
    pub not_after: OffsetDateTime,
}

/// Signs recorder client certificates. Kept apart from the TLS CA so that a recorder
/// certificate can never pass as a server certificate, and the two can be rotated apart.
pub struct DeviceCa {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    cert_der: CertificateDer<'static>,
}

impl DeviceCa {
    /// The device CA certificate (PEM), sent to recorders as `ca_chain_pem`.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// Issues a client-auth-only certificate for `recorder_id` on `key`, valid from a few
    /// minutes ago for `lifetime`.
    pub fn issue(
        &self,
        key: &RecorderKey,
        recorder_id: &str,
        lifetime: Duration,
        now: OffsetDateTime,
    ) -> Result<IssuedCertificate, CaError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, recorder_id);
        dn.push(DnType::OrganizationName, "Contera recorder");
        params.distinguished_name = dn;
        params.subject_alt_names = vec![SanType::URI(
            format!("urn:contera:recorder:{recorder_id}").try_into()?,
        )];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        let serial = random_serial();
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        params.not_before = now - BACKDATE;
        let not_after = now + lifetime;
        params.not_after = not_after;
        let cert = params.signed_by(key, &self.issuer)?;
        Ok(IssuedCertificate {
            pem: cert.pem(),
            serial_hex: hex(&serial),
            not_after: not_after.replace_nanosecond(0).unwrap_or(not_after),
        })
    }
}

fn random_serial() -> [u8; 16] {
    let mut serial: [u8; 16] = rand::random();
    serial[0] &= 0x7f; // positive
    serial[0] |= 0x01; // no leading zero byte to strip
    serial
}

/// Everything TLS needs, loaded from or created in `DATA_DIR/tls/`.
pub struct Pki {
    pub tls_ca_pem: String,
    pub server_chain: Vec<CertificateDer<'static>>,
    pub server_key: PrivateKeyDer<'static>,
    pub device_ca: Arc<DeviceCa>,
}

struct Paths {
    dir: PathBuf,
}

impl Paths {
    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Pki {
    /// Loads the CAs and server certificate, creating whatever is missing. The server
    /// certificate is re-issued (by the same CA, so agents keep trusting it) when it lacks
    /// one of `names` or is close to expiry.
    pub fn load_or_create(tls_dir: &Path, names: &[String]) -> Result<Pki, CaError> {
        fs::create_dir_all(tls_dir).map_err(|source| CaError::Io {
            action: "create",
            path: tls_dir.to_owned(),
            source,
        })?;
        let paths = Paths {
            dir: tls_dir.to_owned(),
        };
        let now = OffsetDateTime::now_utc();
        let (tls_ca_pem, tls_ca) =
            load_or_create_ca(&paths, "ca", "Contera provisioning TLS CA", now)?;
        let (device_ca_pem, device_ca) =
            load_or_create_ca(&paths, "device-ca", "Contera device CA", now)?;

        let server_pem_path = paths.file("server.pem");
        let server_key_path = paths.file("server.key");
        let reuse = server_pem_path.exists()
            && server_key_path.exists()
            && server_cert_fits(&read(&server_pem_path)?, names, now);
        if !reuse {
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::default();
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, "Contera provisioning server");
            params.distinguished_name = dn;
            params.subject_alt_names =
                names.iter().map(|n| san_for(n)).collect::<Result<_, _>>()?;
            params.is_ca = IsCa::ExplicitNoCa;
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            params.use_authority_key_identifier_extension = true;
            params.serial_number = Some(SerialNumber::from_slice(&random_serial()));
            params.not_before = now - BACKDATE;
            params.not_after = now + SERVER_CERT_LIFETIME;
            let cert = params.signed_by(&key, &tls_ca)?;
            write(&server_key_path, key.serialize_pem().as_bytes(), 0o600)?;
            write(&server_pem_path, cert.pem().as_bytes(), 0o644)?;
        }
        let server_pem = read(&server_pem_path)?;
        let server_chain = CertificateDer::pem_slice_iter(server_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| corrupt(&server_pem_path, "certificate", e))?;
        let server_key = PrivateKeyDer::from_pem_slice(read(&server_key_path)?.as_bytes())
            .map_err(|e| corrupt(&server_key_path, "private key", e))?;
        let device_ca_der = CertificateDer::from_pem_slice(device_ca_pem.as_bytes())
            .map_err(|e| corrupt(&paths.file("device-ca.pem"), "certificate", e))?;
        Ok(Pki {
            tls_ca_pem,
            server_chain,
            server_key,
            device_ca: Arc::new(DeviceCa {
                issuer: device_ca,
                cert_pem: device_ca_pem,
                cert_der: device_ca_der,
            }),
        })
    }

    /// Loads only the device CA (for admin commands that never serve TLS).
    pub fn tls_dir(data_dir: &Path) -> PathBuf {
        data_dir.join("tls")
    }
}

fn san_for(name: &str) -> Result<SanType, rcgen::Error> {
    Ok(match name.parse::<IpAddr>() {
        Ok(ip) => SanType::IpAddress(ip),
        Err(_) => SanType::DnsName(name.try_into()?),
    })
}

fn server_cert_fits(pem: &str, names: &[String], now: OffsetDateTime) -> bool {
    let Ok(der) = CertificateDer::from_pem_slice(pem.as_bytes()) else {
        return false;
    };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der.as_ref()) else {
        return false;
    };
    if cert.validity().not_after.to_datetime() < now + SERVER_CERT_RENEW_BEFORE {
        return false;
    }
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return false;
    };
    use x509_parser::extensions::GeneralName;
    names.iter().all(|name| {
        san.value
            .general_names
            .iter()
            .any(|g| match (g, name.parse::<IpAddr>()) {
                (GeneralName::DNSName(d), Err(_)) => d.eq_ignore_ascii_case(name),
                (GeneralName::IPAddress(bytes), Ok(ip)) => match ip {
                    IpAddr::V4(v4) => *bytes == v4.octets(),
                    IpAddr::V6(v6) => *bytes == v6.octets(),
                },
                _ => false,
            })
    })
}

fn load_or_create_ca(
    paths: &Paths,
    stem: &str,
    common_name: &str,
    now: OffsetDateTime,
) -> Result<(String, Issuer<'static, KeyPair>), CaError> {
    let pem_path = paths.file(&format!("{stem}.pem"));
    let key_path = paths.file(&format!("{stem}.key"));
    if pem_path.exists() && key_path.exists() {
        let pem = read(&pem_path)?;
        let key = KeyPair::from_pem(&read(&key_path)?)
            .map_err(|e| corrupt(&key_path, "private key", e))?;
        let issuer = Issuer::from_ca_cert_pem(&pem, key)
            .map_err(|e| corrupt(&pem_path, "CA certificate", e))?;
        return Ok((pem, issuer));
    }
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    // A per-installation suffix keeps CAs of different servers apart by name, so a
    // certificate from another server fails as "unknown issuer", not on its signature.
    let suffix: String = rand::random::<[u8; 4]>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    dn.push(DnType::CommonName, format!("{common_name} {suffix}"));
    dn.push(DnType::OrganizationName, "Contera");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.serial_number = Some(SerialNumber::from_slice(&random_serial()));
    params.not_before = now - BACKDATE;
    params.not_after = now + CA_LIFETIME;
    let cert = params.self_signed(&key)?;
    // Key first: a crash between the two writes leaves a key without a certificate,
    // which the next start simply replaces; never a certificate without its key.
    write(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write(&pem_path, cert.pem().as_bytes(), 0o644)?;
    Ok((cert.pem(), Issuer::new(params, key)))
}

fn read(path: &Path) -> Result<String, CaError> {
    fs::read_to_string(path).map_err(|source| CaError::Io {
        action: "read",
        path: path.to_owned(),
        source,
    })
}

fn write(path: &Path, bytes: &[u8], mode: u32) -> Result<(), CaError> {
    write_atomic(path, bytes, mode).map_err(|source| CaError::Io {
        action: "write",
        path: path.to_owned(),
        source,
    })
}

fn corrupt(path: &Path, what: &'static str, err: impl std::fmt::Display) -> CaError {
    CaError::Corrupt {
        path: path.to_owned(),
        what,
        message: err.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csr_for(key: &KeyPair, params: CertificateParams) -> String {
        params.serialize_request(key).unwrap().pem().unwrap()
    }

    fn pki() -> (tempfile::TempDir, Pki) {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::load_or_create(&dir.path().join("tls"), &["localhost".into()]).unwrap();
        (dir, pki)
    }

    #[test]
    fn issued_certificate_is_client_auth_only_even_when_the_csr_asks_for_a_ca() {
        let (_dir, pki) = pki();
        let key = KeyPair::generate().unwrap();
        let mut wanted = CertificateParams::new(vec!["evil.example".to_string()]).unwrap();
        wanted.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        wanted.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        wanted
            .distinguished_name
            .push(DnType::CommonName, "someone-else");
        let recorder_key = parse_csr(&csr_for(&key, wanted)).unwrap();
        let now = OffsetDateTime::now_utc();
        let issued = pki
            .device_ca
            .issue(&recorder_key, "rec-1", Duration::days(90), now)
            .unwrap();
        let der = CertificateDer::from_pem_slice(issued.pem.as_bytes()).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
        assert!(!cert.is_ca());
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth && !eku.any);
        let cn = cert
            .subject()
            .iter_common_name()
            .next()
            .unwrap()
            .as_str()
            .unwrap();
        assert_eq!(cn, "rec-1");
        let san = cert.subject_alternative_name().unwrap().unwrap().value;
        assert!(format!("{:?}", san.general_names).contains("urn:contera:recorder:rec-1"));
        assert!(!format!("{:?}", san.general_names).contains("evil"));
        assert!(cert.validity().not_before.to_datetime() <= now - Duration::minutes(4));
        let lifetime = cert.validity().not_after.to_datetime() - now;
        assert!((lifetime - Duration::days(90)).abs() < Duration::seconds(2));
        assert_eq!(
            spki_fingerprint(cert.public_key().raw),
            recorder_key.fingerprint,
            "the certificate carries the CSR's key"
        );
    }

    #[test]
    fn csr_signed_by_another_key_is_refused() {
        let key = KeyPair::generate().unwrap();
        let other = KeyPair::generate().unwrap();
        let good = csr_for(&key, CertificateParams::default());
        let other_csr = csr_for(&other, CertificateParams::default());
        // Splice the other key's signature onto this CSR's body.
        let good_der = CertificateSigningRequestDer::from_pem_slice(good.as_bytes()).unwrap();
        let other_der = CertificateSigningRequestDer::from_pem_slice(other_csr.as_bytes()).unwrap();
        let (_, g) = x509_parser::certification_request::X509CertificationRequest::from_der(
            good_der.as_ref(),
        )
        .unwrap();
        let (_, o) = x509_parser::certification_request::X509CertificationRequest::from_der(
            other_der.as_ref(),
        )
        .unwrap();
        let body_len = g.certification_request_info.raw.len();
        let good_bytes = good_der.as_ref();
        let body_start = good_bytes
            .windows(body_len)
            .position(|w| w == g.certification_request_info.raw)
            .unwrap();
        let other_bytes = other_der.as_ref();
        let other_body_end = other_bytes
            .windows(o.certification_request_info.raw.len())
            .position(|w| w == o.certification_request_info.raw)
            .unwrap()
            + o.certification_request_info.raw.len();
        let mut spliced_inner = g.certification_request_info.raw.to_vec();
        spliced_inner.extend_from_slice(&other_bytes[other_body_end..]);
        assert!(body_start > 0);
        let mut spliced = vec![0x30];
        push_der_len(&mut spliced, spliced_inner.len());
        spliced.extend_from_slice(&spliced_inner);
        let pem = CertificateSigningRequestDer::from(spliced);
        let pem = pem_encode("CERTIFICATE REQUEST", pem.as_ref());
        assert_eq!(parse_csr(&pem).unwrap_err(), CsrError::BadSignature);
    }

    fn push_der_len(out: &mut Vec<u8>, len: usize) {
        if len < 128 {
            out.push(len as u8);
        } else if len < 256 {
            out.extend_from_slice(&[0x81, len as u8]);
        } else {
            out.extend_from_slice(&[0x82, (len >> 8) as u8, len as u8]);
        }
    }

    fn pem_encode(label: &str, der: &[u8]) -> String {
        // Minimal base64, enough for a test fixture.
        const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut s = String::new();
        for chunk in der.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
            for i in 0..4 {
                if i <= chunk.len() {
                    s.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    s.push('=');
                }
            }
        }
        format!("-----BEGIN {label}-----\n{s}\n-----END {label}-----\n")
    }

    /// Made with `openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-521 -nodes
    /// -subj /CN=x`: a valid, self-signed CSR whose key type the server does not take.
    const P521_CSR: &str = "-----BEGIN CERTIFICATE REQUEST-----
MIIBTTCBsQIBADAMMQowCAYDVQQDDAF4MIGbMBAGByqGSM49AgEGBSuBBAAjA4GG
AAQANs/poSvz/m7BBdrcwL5Xup6pAcdK7vuEb/ovuJBKNQx2Li6bDKdAdZGHm3jv
zHtMrg7/mCtG77FL0BetVNTOz5wB0f1gtUZivUvZzJc6+WPTI6YhAnOJJ9QDXu8D
IYuirpZvwnI8gM/r8dEr0xFcbHCnXMlBOQQy6Y1bAkllYPAj0SegADAKBggqhkjO
PQQDAgOBigAwgYYCQWYPg0SRBY0WdbdeyJ3NkmivQMkbJd/+HX6gf+SpZnDG5huC
s7AGa7H+McVwFNvKtYXQ2/7niGuXpsRISpt+mz35AkFqO2hC6RgcckDaBNzIbD47
FRR3U8RPt7z+g7rr6V0m3TWqgk5531u2gtD7HKhDW+HbVabHmBbQ588F3+4KRy3/
xA==
-----END CERTIFICATE REQUEST-----
";

    /// Made with `openssl req -new -newkey ed448 -nodes -subj /CN=x`.
    const ED448_CSR: &str = "-----BEGIN CERTIFICATE REQUEST-----
MIHWMFgCAQAwDDEKMAgGA1UEAwwBeDBDMAUGAytlcQM6AKhqlbpq3QaWyR9Udrkd
+Qwo3xpi/cRhQ6ldQpQiDatZAE70J2nEK4Q22D6eus/kBxt5OPjATKIMAKAAMAUG
AytlcQNzANdzaA88xhTEw82gbx0MNBNISM/FL645cSxtREJz38XB/Byya5Vgg6g5
w8wMj67NGfcPIi/ghgE5gC0vpJDpQL4U0r1TosO0tjh8zxIciq/Nv/p025WCjjqO
E83+eE8MriovO3vyBJYHMp6ZpT6wXBYEAA==
-----END CERTIFICATE REQUEST-----
";

    #[test]
    fn an_unsupported_key_type_is_named_as_such_not_as_a_bad_signature() {
        for (name, pem) in [("P-521", P521_CSR), ("Ed448", ED448_CSR)] {
            let err = parse_csr(pem).unwrap_err();
            assert_eq!(err, CsrError::UnsupportedKey, "{name}");
            let message = err.to_string();
            for supported in ["P-256", "P-384", "Ed25519"] {
                assert!(message.contains(supported), "{name}: {message}");
            }
        }
    }

    #[test]
    fn garbage_is_not_a_csr() {
        assert_eq!(parse_csr("hello").unwrap_err(), CsrError::NotPem);
        let junk = pem_encode("CERTIFICATE REQUEST", b"not der at all");
        assert_eq!(parse_csr(&junk).unwrap_err(), CsrError::NotCsr);
    }

    #[test]
    fn ca_material_survives_a_restart_and_server_cert_gains_new_names() {
        let dir = tempfile::tempdir().unwrap();
        let tls = dir.path().join("tls");
        let first = Pki::load_or_create(&tls, &["localhost".into()]).unwrap();
        let again = Pki::load_or_create(&tls, &["localhost".into()]).unwrap();
        assert_eq!(first.tls_ca_pem, again.tls_ca_pem);
        assert_eq!(first.server_chain, again.server_chain);
        assert_eq!(first.device_ca.cert_pem(), again.device_ca.cert_pem());
        let wider = Pki::load_or_create(&tls, &["localhost".into(), "10.1.2.3".into()]).unwrap();
        assert_eq!(first.tls_ca_pem, wider.tls_ca_pem);
        assert_ne!(first.server_chain, wider.server_chain);
        use std::os::unix::fs::PermissionsExt;
        for key in ["ca.key", "device-ca.key", "server.key"] {
            let mode = fs::metadata(tls.join(key)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{key}");
        }
    }
}
