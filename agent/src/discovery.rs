//! mDNS (off unless `[discovery] enabled`): announces this recorder as
//! `_contera-nvr._tcp.local.` so an installer on the site LAN can see recorders waiting
//! for a code, and finds provisioning servers (`_contera-prov._tcp.local.`) when no
//! `[server] url` is configured. Discovery only says where a server is; TLS decides
//! whether to trust it.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use contera_protocol::v1::{RECORDER_SERVICE_TYPE, SERVER_SERVICE_TYPE};
use mdns_sd::{ServiceDaemon, ServiceEvent, ServiceInfo};
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("mDNS failed: {0}")]
    Mdns(#[from] mdns_sd::Error),
}

/// A service seen on the LAN.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Found {
    pub instance: String,
    pub host: String,
    pub addresses: Vec<IpAddr>,
    pub port: u16,
    pub txt: BTreeMap<String, String>,
}

impl Found {
    /// The HTTPS endpoint of an announced provisioning server: its certificate name
    /// (from TXT `tls_name`, else the mDNS host) resolved to the announced addresses.
    pub fn server_endpoint(&self) -> crate::client::Endpoint {
        let name = self
            .txt
            .get("tls_name")
            .cloned()
            .unwrap_or_else(|| self.host.trim_end_matches('.').to_string());
        let host = if name.contains(':') {
            format!("[{name}]")
        } else {
            name.clone()
        };
        crate::client::Endpoint {
            url: format!("https://{host}:{}", self.port),
            resolve: Some((
                name,
                self.addresses
                    .iter()
                    .map(|ip| SocketAddr::new(*ip, self.port))
                    .collect(),
            )),
            discovered: true,
        }
    }
}

/// The machine's host name as an mDNS label: anything but letters, digits and `-`
/// becomes `-`.
fn host_name() -> String {
    let raw = nix::unistd::gethostname()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    clean_label(&raw)
}

fn clean_label(raw: &str) -> String {
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
        "contera-recorder".to_string()
    } else {
        clean
    }
}

/// Announces this recorder while it lives.
pub struct Announcer {
    daemon: ServiceDaemon,
    fullname: String,
    serial: String,
    model: String,
}

impl Announcer {
    pub fn start(serial: &str, model: &str, enrolled: bool) -> Result<Announcer, DiscoveryError> {
        let daemon = ServiceDaemon::new()?;
        let mut announcer = Announcer {
            daemon,
            fullname: String::new(),
            serial: serial.to_string(),
            model: model.to_string(),
        };
        announcer.announce(enrolled)?;
        Ok(announcer)
    }

    /// (Re-)registers with the current enrollment state in TXT.
    pub fn announce(&mut self, enrolled: bool) -> Result<(), DiscoveryError> {
        let txt: HashMap<String, String> = [
            ("serial", self.serial.clone()),
            ("model", self.model.clone()),
            ("version", env!("CARGO_PKG_VERSION").to_string()),
            ("enrolled", if enrolled { "yes" } else { "no" }.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let instance = format!("contera-nvr-{}", self.serial);
        let host = format!("{}.local.", host_name());
        // The agent serves nothing; port 9 (discard) fills the SRV record.
        let info = ServiceInfo::new(RECORDER_SERVICE_TYPE, &instance, &host, "", 9, txt)?
            .enable_addr_auto();
        self.fullname = info.get_fullname().to_string();
        self.daemon.register(info)?;
        Ok(())
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

/// The instance part of `INSTANCE.SERVICE_TYPE`.
fn instance_name<'a>(fullname: &'a str, service_type: &str) -> &'a str {
    fullname
        .strip_suffix(service_type)
        .and_then(|rest| rest.strip_suffix('.'))
        .unwrap_or(fullname)
}

/// Browses `service_type` for `wait` and returns what resolved, by instance name.
pub async fn browse(daemon: &ServiceDaemon, service_type: &str, wait: Duration) -> Vec<Found> {
    let Ok(events) = daemon.browse(service_type) else {
        return Vec::new();
    };
    let mut found: BTreeMap<String, Found> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + wait;
    while let Ok(Ok(event)) = tokio::time::timeout_at(deadline, events.recv_async()).await {
        match event {
            ServiceEvent::ServiceResolved(service) => {
                let instance = instance_name(&service.fullname, service_type).to_string();
                let mut addresses: Vec<IpAddr> =
                    service.addresses.iter().map(|ip| ip.to_ip_addr()).collect();
                addresses.sort();
                let txt = service
                    .txt_properties
                    .iter()
                    .map(|p| (p.key().to_string(), p.val_str().to_string()))
                    .collect();
                found.insert(
                    instance.clone(),
                    Found {
                        instance,
                        host: service.host.clone(),
                        addresses,
                        port: service.port,
                        txt,
                    },
                );
            }
            ServiceEvent::ServiceRemoved(_, fullname) => {
                // Exactly this instance: `contera-nvr-10` leaving is not `contera-nvr-1`.
                found.remove(instance_name(&fullname, service_type));
            }
            _ => {}
        }
    }
    let _ = daemon.stop_browse(service_type);
    found.into_values().collect()
}

/// Both kinds, for `contera-agent discover`.
pub async fn discover_all(wait: Duration) -> Result<(Vec<Found>, Vec<Found>), DiscoveryError> {
    let daemon = ServiceDaemon::new()?;
    let (servers, recorders) = tokio::join!(
        browse(&daemon, SERVER_SERVICE_TYPE, wait),
        browse(&daemon, RECORDER_SERVICE_TYPE, wait)
    );
    shut_down(daemon).await;
    Ok((servers, recorders))
}

/// Provisioning servers on the LAN.
pub async fn find_servers(wait: Duration) -> Result<Vec<Found>, DiscoveryError> {
    let daemon = ServiceDaemon::new()?;
    let servers = browse(&daemon, SERVER_SERVICE_TYPE, wait).await;
    shut_down(daemon).await;
    Ok(servers)
}

/// Stops an mDNS daemon; waiting for it to confirm blocks, so not on the runtime thread.
async fn shut_down(daemon: ServiceDaemon) {
    let _ = tokio::task::spawn_blocking(move || {
        if let Ok(done) = daemon.shutdown() {
            let _ = done.recv_timeout(Duration::from_secs(1));
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_names_are_matched_exactly() {
        let table = [
            ("contera-nvr-10._contera-nvr._tcp.local.", "contera-nvr-10"),
            ("contera-nvr-1._contera-nvr._tcp.local.", "contera-nvr-1"),
            ("odd", "odd"),
        ];
        for (fullname, instance) in table {
            assert_eq!(instance_name(fullname, RECORDER_SERVICE_TYPE), instance);
        }
        let mut found: BTreeMap<String, u8> = [
            ("contera-nvr-1".to_string(), 1),
            ("contera-nvr-10".to_string(), 10),
        ]
        .into();
        found.remove(instance_name(
            "contera-nvr-10._contera-nvr._tcp.local.",
            RECORDER_SERVICE_TYPE,
        ));
        assert_eq!(found.keys().collect::<Vec<_>>(), ["contera-nvr-1"]);
    }

    #[test]
    fn host_names_become_mdns_labels() {
        assert_eq!(clean_label("nvr_12.site\n"), "nvr-12-site");
        assert_eq!(clean_label(""), "contera-recorder");
        assert!(!host_name().is_empty());
    }
}
