//! Enrollment's I/O: check the code locally, make or load the key, send a CSR, and check
//! the certificate that comes back. What is stored, and when, is the lifecycle's call: a
//! failure here changes nothing but a newly made key.

use std::path::Path;

use contera_protocol::v1::EnrollRequest;
use contera_protocol::RegistrationCode;
use rcgen::KeyPair;

use crate::client::ServerClient;
use crate::config::RecorderSection;
use crate::failure::{Failure, FailureKind};
use crate::hardware;
use crate::identity;
use crate::lifecycle::{Certificate, Issued};

fn internal(e: impl std::fmt::Display) -> Failure {
    Failure::new(FailureKind::Internal, e.to_string())
}

/// The recorder's key (made now if there is none, and stored 0600) and the request.
pub fn prepare(
    state_dir: &Path,
    code: &RegistrationCode,
    recorder: &RecorderSection,
) -> Result<(KeyPair, EnrollRequest), Failure> {
    let key = identity::load_or_create_key(state_dir).map_err(internal)?;
    let request = EnrollRequest {
        registration_code: code.compact(),
        csr_pem: identity::csr_pem(&key).map_err(internal)?,
        hardware: hardware::detect(recorder),
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    Ok((key, request))
}

/// Sends the request and checks that the certificate is for `key`.
pub async fn send(
    client: &ServerClient,
    request: &EnrollRequest,
    key: &KeyPair,
    server: &str,
) -> Result<Issued, Failure> {
    let response = client
        .enroll(request)
        .await
        .map_err(|e| Failure::of_enrollment(&e, server))?;
    let validity = identity::check_certificate(&response.certificate_pem, key).map_err(internal)?;
    Ok(Issued {
        recorder_id: response.recorder_id,
        account: response.account,
        certificate: Certificate {
            certificate_pem: response.certificate_pem,
            ca_chain_pem: response.ca_chain_pem,
            validity,
        },
        heartbeat_interval_secs: response.heartbeat_interval_secs,
    })
}
