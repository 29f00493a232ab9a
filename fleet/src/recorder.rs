//! One simulated enrolled recorder: its identity, its TLS configuration (made on first
//! use), and its kept-alive connection. Small: this is multiplied by the fleet's size.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use contera_protocol::v1::{HeartbeatRequest, HeartbeatResponse, RecorderStatus, HEARTBEAT_PATH};
use rustls::ClientConfig;

use crate::connection::{self, CallError, Connection};
use crate::identity::Identity;
use crate::target::Target;

pub struct Recorder {
    pub identity: Identity,
    config: Option<Arc<ClientConfig>>,
    connection: Option<Connection>,
    booted: Instant,
    keep_alive: bool,
}

impl Recorder {
    pub fn new(identity: Identity, keep_alive: bool) -> Recorder {
        Recorder {
            identity,
            config: None,
            connection: None,
            booted: Instant::now(),
            keep_alive,
        }
    }

    fn config(&mut self, target: &Target) -> Result<Arc<ClientConfig>, CallError> {
        if let Some(config) = &self.config {
            return Ok(config.clone());
        }
        let config = target
            .with_identity(&self.identity.certificate_der, &self.identity.key_der)
            .map_err(|e| CallError::Identity(e.to_string()))?;
        self.config = Some(config.clone());
        Ok(config)
    }

    /// Sends one heartbeat and checks the answer is one; returns how many connections
    /// it opened (0 on a kept-alive one) along with the outcome.
    pub async fn heartbeat(
        &mut self,
        target: &Target,
    ) -> (u32, Result<HeartbeatResponse, CallError>) {
        let config = match self.config(target) {
            Ok(config) => config,
            Err(e) => return (0, Err(e)),
        };
        let request = HeartbeatRequest {
            status: RecorderStatus {
                uptime_secs: Some(self.booted.elapsed().as_secs()),
                agent_version: Some(concat!("contera-fleet/", env!("CARGO_PKG_VERSION")).into()),
                ..RecorderStatus::default()
            },
        };
        let body = Bytes::from(serde_json::to_vec(&request).expect("a heartbeat serializes"));
        let mut opened = 0;
        let result = connection::call(
            target,
            &mut self.connection,
            &config,
            HEARTBEAT_PATH,
            body,
            &mut opened,
        )
        .await
        .and_then(|body| {
            serde_json::from_slice::<HeartbeatResponse>(&body)
                .map_err(|e| CallError::Protocol(e.to_string()))
        });
        if !self.keep_alive {
            self.connection = None;
        }
        (opened, result)
    }
}
