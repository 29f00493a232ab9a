//! Verification of recorder client certificates. The device CA's chain is checked by
//! webpki as usual, with one exception: a certificate that expired less than the grace
//! period ago is still accepted at the TLS layer, so a recorder that was offline past its
//! expiry can prove it holds its enrolled key and renew (the API allows such a certificate
//! only on `/renew`, and on `/goodbye`). Beyond the grace it needs a registration code.

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};

#[derive(Debug)]
pub struct GraceVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    grace_secs: u64,
}

impl GraceVerifier {
    /// Wraps the webpki verifier built for the device CA.
    pub fn new(inner: Arc<dyn ClientCertVerifier>, grace_secs: u64) -> Self {
        GraceVerifier { inner, grace_secs }
    }
}

/// notAfter of a certificate, in Unix seconds.
pub fn not_after(cert: &CertificateDer<'_>) -> Option<i64> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    Some(cert.validity().not_after.timestamp())
}

impl ClientCertVerifier for GraceVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        match self
            .inner
            .verify_client_cert(end_entity, intermediates, now)
        {
            Err(Error::InvalidCertificate(
                CertificateError::Expired | CertificateError::ExpiredContext { .. },
            )) => {
                let expired = Error::InvalidCertificate(CertificateError::Expired);
                let Some(not_after) = not_after(end_entity) else {
                    return Err(expired);
                };
                let now_secs = now.as_secs() as i64;
                if not_after < 1 || now_secs - not_after > self.grace_secs as i64 {
                    return Err(expired);
                }
                // Everything else (chain, signature, usage) must hold at the last valid
                // second of the certificate.
                let at_expiry = UnixTime::since_unix_epoch(std::time::Duration::from_secs(
                    (not_after - 1) as u64,
                ));
                self.inner
                    .verify_client_cert(end_entity, intermediates, at_expiry)
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
