//! One recorder's HTTP/1.1 connection: TCP (optionally from a chosen source address,
//! `TCP_NODELAY`), TLS with tokio-rustls, hyper's client connection on top. Far lighter
//! than an HTTP client per recorder, which is what lets one process hold 10,000 of them.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::header::{CONTENT_TYPE, HOST, RETRY_AFTER, USER_AGENT};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use tokio::net::TcpSocket;
use tokio_rustls::TlsConnector;

use crate::target::Target;

const AGENT: &str = concat!("contera-fleet/", env!("CARGO_PKG_VERSION"));

/// Why a request got no usable answer, sorted into the kinds the summary counts.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("TLS handshake: {0}")]
    Handshake(std::io::Error),
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("no answer in time")]
    Timeout,
    /// An answer other than 200, with its `Retry-After` in seconds if any.
    #[error("HTTP {0}")]
    Status(StatusCode, Option<Duration>),
    #[error("unexpected answer: {0}")]
    Protocol(String),
    /// The recorder's saved key or certificate cannot be used.
    #[error("identity: {0}")]
    Identity(String),
}

impl CallError {
    /// A short stable name for counting: `connect_refused`, `tls`, `http_429`, ….
    pub fn kind(&self) -> String {
        fn io_kind(prefix: &str, e: &std::io::Error) -> String {
            const EMFILE: i32 = 24;
            if e.raw_os_error() == Some(EMFILE) {
                return format!("{prefix}_too_many_open_files");
            }
            let what = match e.kind() {
                ErrorKind::ConnectionRefused => "refused",
                ErrorKind::ConnectionReset => "reset",
                ErrorKind::ConnectionAborted => "aborted",
                ErrorKind::TimedOut => "timeout",
                ErrorKind::AddrNotAvailable => "no_source_port",
                ErrorKind::AddrInUse => "addr_in_use",
                ErrorKind::UnexpectedEof => "eof",
                ErrorKind::BrokenPipe => "broken_pipe",
                ErrorKind::InvalidData => "invalid",
                _ => "other",
            };
            format!("{prefix}_{what}")
        }
        match self {
            CallError::Connect(e) => io_kind("connect", e),
            CallError::Handshake(e) => io_kind("tls", e),
            CallError::Http(e) if e.is_incomplete_message() || e.is_closed() => {
                "connection_closed".into()
            }
            CallError::Http(e) if e.is_canceled() => "connection_closed".into(),
            CallError::Http(_) => "http_io".into(),
            CallError::Timeout => "timeout".into(),
            CallError::Status(s, _) => format!("http_{}", s.as_u16()),
            CallError::Protocol(_) => "protocol".into(),
            CallError::Identity(_) => "identity".into(),
        }
    }

    /// Whether the server is out of reach (or not answering), as the agent counts it:
    /// anything but a refusal with a status and body.
    pub fn is_transient(&self) -> bool {
        match self {
            CallError::Status(s, _) => s.is_server_error() || *s == StatusCode::TOO_MANY_REQUESTS,
            CallError::Identity(_) => false,
            _ => true,
        }
    }

    /// The HTTP status of a refusal.
    pub fn status(&self) -> Option<u16> {
        match self {
            CallError::Status(s, _) => Some(s.as_u16()),
            _ => None,
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            CallError::Status(StatusCode::TOO_MANY_REQUESTS, after) => {
                Some(after.unwrap_or(Duration::from_secs(60)))
            }
            _ => None,
        }
    }
}

/// An open connection to the server, ready for one request at a time.
pub struct Connection {
    sender: http1::SendRequest<Full<Bytes>>,
}

impl Connection {
    /// TCP (from the target's next source address), then TLS with `config`, then HTTP/1.1.
    pub async fn open(target: &Target, config: Arc<ClientConfig>) -> Result<Connection, CallError> {
        let socket = match target.addr {
            SocketAddr::V4(_) => TcpSocket::new_v4(),
            SocketAddr::V6(_) => TcpSocket::new_v6(),
        }
        .map_err(CallError::Connect)?;
        if let Some(ip) = target.next_source() {
            socket
                .bind(SocketAddr::new(ip, 0))
                .map_err(CallError::Connect)?;
        }
        socket.set_nodelay(true).map_err(CallError::Connect)?;
        let tcp = socket
            .connect(target.addr)
            .await
            .map_err(CallError::Connect)?;
        let tls = TlsConnector::from(config)
            .connect(target.server_name.clone(), tcp)
            .await
            .map_err(CallError::Handshake)?;
        let (sender, connection) = http1::handshake(TokioIo::new(tls)).await?;
        // Drives the connection; ends when the server closes it or the sender is dropped.
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Connection { sender })
    }

    /// Whether the server has closed it (idle timeout, restart): open a new one first.
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }

    /// POSTs a JSON body and returns the body of a 200 answer; any other answer is a
    /// [`CallError::Status`].
    pub async fn post(
        &mut self,
        target: &Target,
        path: &str,
        body: Bytes,
    ) -> Result<Bytes, CallError> {
        self.sender.ready().await?;
        let request = Request::post(path)
            .header(HOST, &target.authority)
            .header(CONTENT_TYPE, "application/json")
            .header(USER_AGENT, AGENT)
            .body(Full::new(body))
            .map_err(|e| CallError::Protocol(e.to_string()))?;
        let response = self.sender.send_request(request).await?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = response.into_body().collect().await?.to_bytes();
        if status == StatusCode::OK {
            Ok(body)
        } else {
            Err(CallError::Status(status, retry_after))
        }
    }
}

/// One request with everything bounded by the target's timeout: reuses `slot`'s
/// connection when it is still open (keep-alive), else opens one and leaves it there.
/// A request the server never saw because it had just closed the kept connection is
/// sent once more on a new one, as HTTP clients do for idempotent retries of unsent
/// requests.
pub async fn call(
    target: &Target,
    slot: &mut Option<Connection>,
    config: &Arc<ClientConfig>,
    path: &str,
    body: Bytes,
    opened: &mut u32,
) -> Result<Bytes, CallError> {
    tokio::time::timeout(target.timeout, async {
        let reused = match slot {
            Some(c) if !c.is_closed() => true,
            _ => {
                *slot = Some(Connection::open(target, config.clone()).await?);
                *opened += 1;
                false
            }
        };
        let conn = slot.as_mut().expect("connection just checked or opened");
        match conn.post(target, path, body.clone()).await {
            Err(CallError::Http(e)) if reused && e.is_canceled() => {
                *slot = Some(Connection::open(target, config.clone()).await?);
                *opened += 1;
                slot.as_mut()
                    .expect("connection just opened")
                    .post(target, path, body)
                    .await
            }
            other => other,
        }
    })
    .await
    .unwrap_or(Err(CallError::Timeout))
    .inspect_err(|e| {
        // A refusal with a status leaves the connection usable; anything else does not.
        if !matches!(e, CallError::Status(..)) {
            *slot = None;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_counted_by_a_stable_kind() {
        let refused = CallError::Connect(ErrorKind::ConnectionRefused.into());
        assert_eq!(refused.kind(), "connect_refused");
        assert!(refused.is_transient());
        let reset = CallError::Handshake(ErrorKind::ConnectionReset.into());
        assert_eq!(reset.kind(), "tls_reset");
        let busy = CallError::Status(StatusCode::TOO_MANY_REQUESTS, Some(Duration::from_secs(7)));
        assert_eq!(busy.kind(), "http_429");
        assert!(busy.is_transient());
        assert_eq!(busy.retry_after(), Some(Duration::from_secs(7)));
        let gone = CallError::Status(StatusCode::GONE, None);
        assert!(!gone.is_transient());
        assert_eq!(gone.retry_after(), None);
        assert!(CallError::Status(StatusCode::SERVICE_UNAVAILABLE, None).is_transient());
        assert_eq!(CallError::Timeout.kind(), "timeout");
    }
}
