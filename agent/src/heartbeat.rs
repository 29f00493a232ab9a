//! Heartbeat and renewal I/O: report the recorder's status, and get a new certificate
//! for the same key. When to do either, and what the answers change, is the lifecycle's
//! call.

use contera_protocol::v1::{HeartbeatRequest, HeartbeatResponse, RecorderStatus, RenewRequest};
use rcgen::KeyPair;

use crate::client::{CallError, ServerClient};
use crate::config::RecorderSection;
use crate::failure::{Failure, FailureKind};
use crate::hardware;
use crate::identity;
use crate::lifecycle::Certificate;

/// The recorder's current status (an NVR command may take seconds: the shell pets the
/// watchdog between this and [`send`]).
pub async fn status(recorder: &RecorderSection) -> RecorderStatus {
    hardware::status(recorder).await
}

/// One heartbeat with `status`.
pub async fn send(
    client: &ServerClient,
    status: RecorderStatus,
) -> Result<HeartbeatResponse, CallError> {
    client.heartbeat(&HeartbeatRequest { status }).await
}

/// A new certificate for `key`, checked against it. The old certificate stays in use
/// until the lifecycle has stored the new one.
pub async fn renew(client: &ServerClient, key: &KeyPair) -> Result<Certificate, Failure> {
    let internal =
        |e: identity::IdentityError| Failure::new(FailureKind::Internal, format!("renewal: {e}"));
    let csr_pem = identity::csr_pem(key).map_err(internal)?;
    let response = client
        .renew(&RenewRequest { csr_pem })
        .await
        .map_err(|e| Failure::of_report(&e))?;
    let validity = identity::check_certificate(&response.certificate_pem, key).map_err(internal)?;
    Ok(Certificate {
        certificate_pem: response.certificate_pem,
        ca_chain_pem: response.ca_chain_pem,
        validity,
    })
}
