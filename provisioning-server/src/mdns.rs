//! mDNS announcement of the server (`[mdns] advertise = true`), so agents on the site LAN
//! without a configured URL can find it. TXT `tls_name` tells them which name its
//! certificate carries; they verify TLS before trusting the answer.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use contera_protocol::v1::{API_PREFIX, SERVER_SERVICE_TYPE};
use mdns_sd::{ServiceDaemon, ServiceInfo};

pub struct Advertisement {
    daemon: ServiceDaemon,
    fullname: String,
}

fn host_name() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let clean: String = raw
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if clean.is_empty() {
        "contera-provisioning".into()
    } else {
        clean
    }
}

impl Advertisement {
    /// Announces the server listening on `local`; `tls_name` is a name its certificate has.
    pub fn start(local: SocketAddr, tls_name: &str) -> Result<Advertisement, mdns_sd::Error> {
        let daemon = ServiceDaemon::new()?;
        let host = host_name();
        let txt: HashMap<String, String> = [
            ("tls_name", tls_name.to_string()),
            ("path", API_PREFIX.to_string()),
            ("version", env!("CARGO_PKG_VERSION").to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let instance = format!("contera-prov-{host}");
        let hostname = format!("{host}.local.");
        let info = if local.ip().is_unspecified() {
            ServiceInfo::new(
                SERVER_SERVICE_TYPE,
                &instance,
                &hostname,
                "",
                local.port(),
                txt,
            )?
            .enable_addr_auto()
        } else {
            ServiceInfo::new(
                SERVER_SERVICE_TYPE,
                &instance,
                &hostname,
                local.ip(),
                local.port(),
                txt,
            )?
        };
        let fullname = info.get_fullname().to_string();
        daemon.register(info)?;
        log::info!("announcing {fullname} by mDNS (port {})", local.port());
        Ok(Advertisement { daemon, fullname })
    }

    pub fn stop(self) {
        if let Ok(done) = self.daemon.unregister(&self.fullname) {
            let _ = done.recv_timeout(Duration::from_secs(1));
        }
        if let Ok(done) = self.daemon.shutdown() {
            let _ = done.recv_timeout(Duration::from_secs(1));
        }
    }
}
