//! The server under load: its URL taken apart, the one address connections go to, the
//! TLS settings every simulated recorder shares, and the local source addresses.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("--server {0}: expected https://HOST:PORT")]
    Url(String),
    #[error("cannot read --ca {path}: {source}")]
    CaFile {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--ca {0} holds no usable PEM certificate: point it at the server's tls/ca.pem")]
    CaEmpty(std::path::PathBuf),
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        host: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no address of {authority} accepts connections ({last}); is the server running?")]
    Unreachable { authority: String, last: String },
    #[error("TLS setup: {0}")]
    Tls(#[from] rustls::Error),
    #[error("a saved identity cannot be used for TLS: {0}")]
    Identity(String),
}

/// Everything a connection needs that is the same for every recorder.
pub struct Target {
    /// `HOST:PORT`, for the `Host` header.
    pub authority: String,
    pub server_name: ServerName<'static>,
    pub addr: SocketAddr,
    binds: Vec<IpAddr>,
    next_bind: AtomicUsize,
    pub timeout: Duration,
    roots: Arc<RootCertStore>,
    provider: Arc<rustls::crypto::CryptoProvider>,
    /// For enrollment (no client certificate): one for all recorders.
    pub anonymous: Arc<ClientConfig>,
}

/// `https://HOST:PORT[/]` → (host, port). IPv6 hosts in brackets.
pub fn parse_url(url: &str) -> Result<(String, u16), TargetError> {
    let bad = || TargetError::Url(url.to_string());
    let rest = url.strip_prefix("https://").ok_or_else(bad)?;
    let authority = rest.trim_end_matches('/');
    if authority.contains('/') || authority.is_empty() {
        return Err(bad());
    }
    let (host, port) = authority.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(bad());
    }
    Ok((host.to_string(), port))
}

impl Target {
    /// Reads the CA, resolves the host and keeps the first address that accepts a TCP
    /// connection (so `localhost` works whichever of ::1 and 127.0.0.1 the server has).
    pub async fn new(
        url: &str,
        ca: &Path,
        binds: Vec<IpAddr>,
        timeout: Duration,
    ) -> Result<Target, TargetError> {
        let (host, port) = parse_url(url)?;
        let pem = std::fs::read(ca).map_err(|source| TargetError::CaFile {
            path: ca.to_owned(),
            source,
        })?;
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&pem).flatten() {
            let _ = roots.add(cert);
        }
        if roots.is_empty() {
            return Err(TargetError::CaEmpty(ca.to_owned()));
        }
        let server_name =
            ServerName::try_from(host.clone()).map_err(|_| TargetError::Url(url.to_string()))?;
        let authority = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let candidates: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|source| TargetError::Resolve {
                host: host.clone(),
                source,
            })?
            // With source addresses given, only their family can be used.
            .filter(|a| binds.first().is_none_or(|b| b.is_ipv4() == a.is_ipv4()))
            .collect();
        let mut last = "no address".to_string();
        let mut addr = None;
        for candidate in candidates {
            match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(candidate)).await {
                Ok(Ok(_)) => {
                    addr = Some(candidate);
                    break;
                }
                Ok(Err(e)) => last = format!("{candidate}: {e}"),
                Err(_) => last = format!("{candidate}: timed out"),
            }
        }
        let addr = addr.ok_or(TargetError::Unreachable {
            authority: authority.clone(),
            last,
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = Arc::new(roots);
        let mut anonymous = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots.clone())
            .with_no_client_auth();
        anonymous.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Target {
            authority,
            server_name,
            addr,
            binds,
            next_bind: AtomicUsize::new(0),
            timeout,
            roots,
            provider,
            anonymous: Arc::new(anonymous),
        })
    }

    /// A TLS configuration presenting one recorder's certificate. Built when that
    /// recorder first connects (it parses the key), then kept by the recorder so that
    /// later connections can resume their TLS session, as the agent's would.
    pub fn with_identity(
        &self,
        certificate_der: &[u8],
        key_der: &[u8],
    ) -> Result<Arc<ClientConfig>, TargetError> {
        let key = PrivateKeyDer::try_from(key_der.to_vec())
            .map_err(|e| TargetError::Identity(e.to_string()))?;
        let mut config = ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(self.roots.clone())
            .with_client_auth_cert(vec![CertificateDer::from(certificate_der.to_vec())], key)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// The source address for the next connection, in turn; None: the system picks.
    pub fn next_source(&self) -> Option<IpAddr> {
        if self.binds.is_empty() {
            return None;
        }
        let i = self.next_bind.fetch_add(1, Ordering::Relaxed);
        Some(self.binds[i % self.binds.len()])
    }
}

#[cfg(test)]
mod tests {
    use super::parse_url;

    #[test]
    fn server_urls_are_taken_apart() {
        assert_eq!(
            parse_url("https://localhost:8443").unwrap(),
            ("localhost".into(), 8443)
        );
        assert_eq!(parse_url("https://[::1]:9/").unwrap(), ("::1".into(), 9));
        for bad in [
            "http://localhost:1",
            "https://localhost",
            "https://:1",
            "https://h:1/api",
            "https://h:x",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }
}
