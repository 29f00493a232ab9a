//! The client certificate of a connection, read once when the TLS handshake completes
//! rather than at every request that comes over the connection.

use rustls_pki_types::CertificateDer;

use crate::ca;

/// Who a client certificate says it is. The TLS layer verified that it chains to the
/// device CA; whether it belongs to a current recorder key is for the request to check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presented {
    pub recorder_id: String,
    pub key_fingerprint: String,
    pub not_after: i64,
}

/// A connection's client certificate, parsed; `presented` is None when it does not name a
/// recorder (no common name, or not X.509 this server can read).
#[derive(Debug, Clone)]
pub struct PeerCertificate {
    pub presented: Option<Presented>,
}

impl PeerCertificate {
    pub fn parse(cert: &CertificateDer<'_>) -> Self {
        PeerCertificate {
            presented: presented(cert),
        }
    }
}

fn presented(cert: &CertificateDer<'_>) -> Option<Presented> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let recorder_id = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())?
        .to_string();
    Some(Presented {
        recorder_id,
        key_fingerprint: ca::spki_fingerprint(cert.public_key().raw),
        not_after: cert.validity().not_after.timestamp(),
    })
}
