//! HTTPS calls to the provisioning server, and the classification of every failure as
//! permanent (do not retry) or transient (retry with backoff).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use contera_protocol::v1::{
    EnrollRequest, EnrollResponse, GoodbyeRequest, HeartbeatRequest, HeartbeatResponse,
    RenewRequest, RenewResponse, ENROLL_PATH, GOODBYE_PATH, HEARTBEAT_PATH, RENEW_PATH,
};
use contera_protocol::{ErrorBody, ErrorCode};
use reqwest::StatusCode;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::config::ServerSection;

#[derive(Debug, thiserror::Error)]
pub enum ClientSetupError {
    #[error("cannot read [server] ca_file {path}: {source}")]
    CaFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("[server] ca_file {path} holds no usable PEM certificate: point it at the server's tls/ca.pem")]
    CaFileEmpty { path: PathBuf },
    #[error("the stored certificate or key cannot be used for TLS: {0}")]
    Identity(String),
    #[error("TLS setup failed: {0}")]
    Tls(#[from] rustls::Error),
    #[error("HTTP client setup failed: {0}")]
    Http(#[from] reqwest::Error),
}

/// Why a call failed, in the terms the agent acts on.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// The server could not be reached or did not answer in time.
    #[error("server unreachable: {0}")]
    Unreachable(String),
    /// The server's certificate is not valid yet or expired: almost always a wrong clock.
    #[error("the clock looks wrong: {0}; set the recorder's date and time (or enable NTP) and try again")]
    Clock(String),
    /// TLS failed for another reason (untrusted server, refused client certificate).
    #[error("TLS failed: {0}")]
    Tls(String),
    /// The server said 429: wait at least this long.
    #[error("the server is busy; asked to retry in {} s", .0.as_secs())]
    RateLimited(Duration),
    /// The server said no, with its error body.
    #[error("{message} (HTTP {status}, {code})")]
    Rejected {
        status: u16,
        code: String,
        message: String,
    },
    /// The answer was not what the protocol says.
    #[error("unexpected answer from the server: {0}")]
    Protocol(String),
}

impl CallError {
    /// Whether trying again later may succeed without anyone changing anything.
    pub fn is_transient(&self) -> bool {
        match self {
            CallError::Unreachable(_) | CallError::RateLimited(_) | CallError::Protocol(_) => true,
            CallError::Rejected { status, .. } => *status >= 500,
            CallError::Clock(_) | CallError::Tls(_) => false,
        }
    }

    pub fn error_code(&self) -> Option<ErrorCode> {
        match self {
            CallError::Rejected { code, .. } => ErrorCode::parse(code),
            _ => None,
        }
    }

    pub fn is_revoked(&self) -> bool {
        matches!(self, CallError::Rejected { status: 410, .. })
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            CallError::RateLimited(d) => Some(*d),
            _ => None,
        }
    }
}

/// Where the server is: its base URL, and optionally the addresses to connect to for the
/// URL's host (a server found by mDNS is reached by its certificate name, at the addresses
/// it announced).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub url: String,
    pub resolve: Option<(String, Vec<std::net::SocketAddr>)>,
    /// Found by mDNS: trusted only through `[server] ca_file`, never the system roots,
    /// since anyone on the LAN can announce a name they hold a public certificate for.
    pub discovered: bool,
}

impl Endpoint {
    pub fn configured(url: &str) -> Endpoint {
        Endpoint {
            url: url.to_string(),
            resolve: None,
            discovered: false,
        }
    }
}

/// A client certificate and its key, both PEM.
pub struct Credential<'a> {
    pub certificate_pem: &'a str,
    pub key_pem: &'a str,
}

/// Talks to one provisioning server, with or without a client certificate.
#[derive(Clone)]
pub struct ServerClient {
    base: String,
    http: reqwest::Client,
}

/// The certificates a server is trusted through, shared by the clients of one endpoint:
/// the system store is some 150 roots parsed from a bundle of about 200 KB, read once for
/// both clients instead of once each (on a recorder the heap it churns stays resident).
pub type Roots = Arc<rustls::RootCertStore>;

/// The roots for `endpoint`: the system's (unless it was found by mDNS) and `ca_file`'s.
pub fn roots(server: &ServerSection, endpoint: &Endpoint) -> Result<Roots, ClientSetupError> {
    root_store(server, endpoint).map(Arc::new)
}

fn root_store(
    server: &ServerSection,
    endpoint: &Endpoint,
) -> Result<rustls::RootCertStore, ClientSetupError> {
    let mut roots = rustls::RootCertStore::empty();
    // System roots first (not for servers found by mDNS); an unreadable system store only
    // means fewer roots.
    if !endpoint.discovered {
        let native = rustls_native_certs::load_native_certs();
        for cert in native.certs {
            let _ = roots.add(cert);
        }
    }
    if let Some(path) = &server.ca_file {
        let pem = std::fs::read(path).map_err(|source| ClientSetupError::CaFile {
            path: path.clone(),
            source,
        })?;
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(&pem).flatten() {
            if roots.add(cert).is_ok() {
                added += 1;
            }
        }
        if added == 0 {
            return Err(ClientSetupError::CaFileEmpty { path: path.clone() });
        }
    }
    Ok(roots)
}

impl ServerClient {
    pub fn new(
        server: &ServerSection,
        endpoint: &Endpoint,
        credential: Option<Credential<'_>>,
    ) -> Result<Self, ClientSetupError> {
        Self::with_roots(server, endpoint, roots(server, endpoint)?, credential)
    }

    /// A client trusting `roots` (from [`roots`] for the same server and endpoint).
    pub fn with_roots(
        server: &ServerSection,
        endpoint: &Endpoint,
        roots: Roots,
        credential: Option<Credential<'_>>,
    ) -> Result<Self, ClientSetupError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots);
        let tls = match credential {
            None => builder.with_no_client_auth(),
            Some(cred) => {
                let chain = CertificateDer::pem_slice_iter(cred.certificate_pem.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| ClientSetupError::Identity(e.to_string()))?;
                let key = PrivateKeyDer::from_pem_slice(cred.key_pem.as_bytes())
                    .map_err(|e| ClientSetupError::Identity(e.to_string()))?;
                builder.with_client_auth_cert(chain, key)?
            }
        };
        let mut http = reqwest::Client::builder();
        if let Some((host, addrs)) = &endpoint.resolve {
            http = http.resolve_to_addrs(host, addrs);
        }
        if let Some(proxy) = &server.proxy {
            let mut proxy = reqwest::Proxy::all(proxy)?;
            if let Some(bypass) = &server.no_proxy {
                proxy = proxy.no_proxy(reqwest::NoProxy::from_string(bypass));
            }
            http = http.proxy(proxy);
        }
        let http = http
            .tls_backend_preconfigured(tls)
            .connect_timeout(Duration::from_secs(server.connect_timeout_secs))
            // The server closes connections idle for 60 s; drop ours first so a
            // heartbeat never goes out on a connection the server just closed.
            .pool_idle_timeout(Duration::from_secs(50))
            .timeout(Duration::from_secs(server.request_timeout_secs))
            .user_agent(concat!("contera-agent/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(ServerClient {
            base: endpoint.url.trim_end_matches('/').to_string(),
            http,
        })
    }

    /// `GET /healthz` over verified TLS: proves the server is one this recorder trusts.
    pub async fn health(&self) -> Result<(), CallError> {
        let response = self
            .http
            .get(format!(
                "{}{}",
                self.base,
                contera_protocol::v1::HEALTH_PATH
            ))
            .send()
            .await
            .map_err(|e| classify_transport(&e))?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(CallError::Protocol(format!(
                "health check answered {}",
                response.status()
            )))
        }
    }

    pub async fn enroll(&self, req: &EnrollRequest) -> Result<EnrollResponse, CallError> {
        self.post(ENROLL_PATH, req).await
    }

    /// Which account a code enrolls into, without enrolling.
    pub async fn enroll_preview(
        &self,
        req: &contera_protocol::v1::EnrollPreviewRequest,
    ) -> Result<contera_protocol::v1::EnrollPreviewResponse, CallError> {
        self.post(contera_protocol::v1::ENROLL_PREVIEW_PATH, req)
            .await
    }

    pub async fn heartbeat(&self, req: &HeartbeatRequest) -> Result<HeartbeatResponse, CallError> {
        self.post(HEARTBEAT_PATH, req).await
    }

    pub async fn renew(&self, req: &RenewRequest) -> Result<RenewResponse, CallError> {
        self.post(RENEW_PATH, req).await
    }

    pub async fn goodbye(&self, req: &GoodbyeRequest) -> Result<serde_json::Value, CallError> {
        self.post(GOODBYE_PATH, req).await
    }

    async fn post<B: Serialize, R: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<R, CallError> {
        let url = format!("{}{}", self.base, path);
        let response = self
            .http
            .post(&url)
            .json(body)
            .send()
            .await
            .map_err(|e| classify_transport(&e))?;
        let status = response.status();
        if status.is_success() {
            return response
                .json::<R>()
                .await
                .map_err(|e| CallError::Protocol(e.to_string()));
        }
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response.text().await.unwrap_or_default();
        Err(classify_refusal(status, retry_after.as_deref(), &body))
    }
}

/// How long to stay away after a 429 without a usable `Retry-After` (seconds only: the
/// server never sends an HTTP date).
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(60);

/// A non-success answer: 429 with its `Retry-After`, or the server's error body.
fn classify_refusal(status: StatusCode, retry_after: Option<&str>, body: &str) -> CallError {
    if status == StatusCode::TOO_MANY_REQUESTS {
        return CallError::RateLimited(
            retry_after
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs)
                .unwrap_or(DEFAULT_RETRY_AFTER),
        );
    }
    match serde_json::from_str::<ErrorBody>(body) {
        Ok(err) => CallError::Rejected {
            status: status.as_u16(),
            code: err.error.code,
            message: err.error.message,
        },
        Err(_) => CallError::Rejected {
            status: status.as_u16(),
            code: "unknown".into(),
            message: format!("HTTP {status} without an error body"),
        },
    }
}

/// The rustls error inside `e`, also when wrapped in (nested) `io::Error`s, whose
/// `source()` skips the error they carry.
fn find_rustls(e: &(dyn std::error::Error + 'static)) -> Option<rustls::Error> {
    if let Some(t) = e.downcast_ref::<rustls::Error>() {
        return Some(t.clone());
    }
    let mut inner = e.downcast_ref::<std::io::Error>()?.get_ref()?;
    loop {
        if let Some(t) = inner.downcast_ref::<rustls::Error>() {
            return Some(t.clone());
        }
        if let Some(io) = inner.downcast_ref::<std::io::Error>() {
            inner = io.get_ref()?;
            continue;
        }
        return inner.source().and_then(find_rustls);
    }
}

/// Turns a transport error into words a person can act on, looking through its causes
/// for the TLS error underneath.
fn classify_transport(err: &reqwest::Error) -> CallError {
    classify_chain(err)
}

/// [`classify_transport`] for any error with causes.
fn classify_chain(err: &(dyn std::error::Error + 'static)) -> CallError {
    let mut chain = String::new();
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    let mut tls: Option<rustls::Error> = None;
    while let Some(e) = source {
        if !chain.is_empty() {
            chain.push_str(": ");
        }
        chain.push_str(&e.to_string());
        if tls.is_none() {
            tls = find_rustls(e);
        }
        source = e.source();
    }
    classify_tls(tls, chain)
}

fn classify_tls(tls: Option<rustls::Error>, chain: String) -> CallError {
    use rustls::CertificateError as C;
    match tls {
        Some(rustls::Error::InvalidCertificate(C::NotValidYet | C::NotValidYetContext { .. })) => {
            CallError::Clock(format!("the server's certificate is not valid yet ({chain})"))
        }
        Some(rustls::Error::InvalidCertificate(C::Expired | C::ExpiredContext { .. })) => {
            CallError::Clock(format!("the server's certificate has expired ({chain})"))
        }
        Some(rustls::Error::InvalidCertificate(C::UnknownIssuer)) => CallError::Tls(format!(
            "the server's certificate is not signed by a trusted CA; set [server] ca_file to the server's tls/ca.pem ({chain})"
        )),
        Some(rustls::Error::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. })) => {
            CallError::Tls(format!(
                "the server's certificate does not name the host in [server] url; add it to the server's server_names ({chain})"
            ))
        }
        Some(other) => CallError::Tls(format!("{other} ({chain})")),
        None => CallError::Unreachable(chain),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::CertificateError as C;

    /// An error whose cause is `inner`, as hyper and reqwest wrap theirs.
    #[derive(Debug)]
    struct Wrapped(&'static str, Box<dyn std::error::Error + Send + Sync>);

    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Wrapped {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(self.1.as_ref())
        }
    }

    fn kind(e: &CallError) -> &'static str {
        match e {
            CallError::Unreachable(_) => "unreachable",
            CallError::Clock(_) => "clock",
            CallError::Tls(_) => "tls",
            CallError::RateLimited(_) => "rate_limited",
            CallError::Rejected { .. } => "rejected",
            CallError::Protocol(_) => "protocol",
        }
    }

    #[test]
    fn transport_errors_are_classified_through_nested_io_errors() {
        let table: Vec<(rustls::Error, &str, &str)> = vec![
            (
                rustls::Error::InvalidCertificate(C::NotValidYet),
                "clock",
                "not valid yet",
            ),
            (
                rustls::Error::InvalidCertificate(C::Expired),
                "clock",
                "has expired",
            ),
            (
                rustls::Error::InvalidCertificate(C::UnknownIssuer),
                "tls",
                "ca_file",
            ),
            (
                rustls::Error::InvalidCertificate(C::NotValidForName),
                "tls",
                "server_names",
            ),
            (rustls::Error::HandshakeNotComplete, "tls", "TLS failed"),
        ];
        for (tls, want, words) in table {
            // rustls → io::Error → io::Error → a wrapper, as in a real reqwest chain.
            let io = std::io::Error::other(std::io::Error::other(tls.clone()));
            let err = Wrapped("error sending request", Box::new(io));
            let got = classify_chain(&err);
            assert_eq!(kind(&got), want, "{tls:?}: {got}");
            assert!(got.to_string().contains(words), "{tls:?}: {got}");
            assert!(got.to_string().contains("error sending request"), "{got}");
        }
        let refused = Wrapped(
            "error sending request",
            Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)),
        );
        assert_eq!(kind(&classify_chain(&refused)), "unreachable");
    }

    #[test]
    fn refusals_are_classified_by_status_and_body() {
        let body = r#"{"error":{"code":"revoked","message":"gone"}}"#;
        let table: Vec<(u16, Option<&str>, &str, &str, bool)> = vec![
            // status, Retry-After, body, kind, transient
            (429, Some("20"), "", "rate_limited", true),
            (429, None, "", "rate_limited", true),
            (
                429,
                Some("Wed, 21 Oct 2015 07:28:00 GMT"),
                "",
                "rate_limited",
                true,
            ),
            (410, None, body, "rejected", false),
            (403, None, "not json", "rejected", false),
            (500, None, "", "rejected", true),
            (503, None, body, "rejected", true),
        ];
        for (status, retry_after, body, want, transient) in table {
            let status = StatusCode::from_u16(status).unwrap();
            let got = classify_refusal(status, retry_after, body);
            assert_eq!(kind(&got), want, "{status}");
            assert_eq!(got.is_transient(), transient, "{status}");
        }
        let busy = classify_refusal(StatusCode::TOO_MANY_REQUESTS, Some(" 20 "), "");
        assert_eq!(busy.retry_after(), Some(Duration::from_secs(20)));
        let busy = classify_refusal(StatusCode::TOO_MANY_REQUESTS, None, "");
        assert_eq!(busy.retry_after(), Some(DEFAULT_RETRY_AFTER));
        let gone = classify_refusal(StatusCode::GONE, None, body);
        assert!(gone.is_revoked());
        assert_eq!(gone.error_code(), Some(ErrorCode::Revoked));
    }
}
