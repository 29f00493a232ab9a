//! One client connection from accept to close: TLS handshake under a deadline, HTTP/1
//! or HTTP/2 with a deadline for the first request and an idle limit that PINGs do not
//! reset, and a lingering close so an answer sent before the request body was read
//! reaches the client instead of a reset.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::api::{ClientCert, PeerAddr};

/// How long an idle connection told to close (HTTP/2 gets a GOAWAY) has before it is
/// dropped; one that is half-way through a request head is not waited for longer.
const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(1);
/// Lingering close: how long to keep reading (and discarding) what a client still sends
/// after the server closed its side, in all and per read, and how much at most.
const LINGER_TOTAL: Duration = Duration::from_secs(5);
const LINGER_READ: Duration = Duration::from_secs(1);
const LINGER_BYTES: u64 = 64 << 20;
/// Largest HTTP/1 request head (and read buffer): like HTTP/2's header list limit.
const MAX_HTTP1_BUFFER: usize = 16 * 1024;
/// Most header fields in one HTTP/1 request head.
const MAX_HTTP1_HEADERS: usize = 64;

/// The deadlines and limits of every connection, from the configuration.
#[derive(Debug, Clone)]
pub struct Policy {
    pub tls_handshake: Duration,
    pub first_request: Duration,
    pub idle: Duration,
    pub http2_max_concurrent_streams: u32,
    /// Longest a request may take, body included: a connection with a request older than
    /// this is closed, so a client trickling its body cannot hold a slot longer. Enforced
    /// here, per connection, rather than with a timer per request.
    pub request: Duration,
    /// How long connections may drain after shutdown began.
    pub drain: Duration,
}

/// When the connection last changed between busy and idle, and how busy it is.
struct Activity {
    origin: Instant,
    in_flight: AtomicUsize,
    seen_request: AtomicBool,
    /// Milliseconds since `origin` of the last request start or end.
    last_change_ms: AtomicU64,
}

impl Activity {
    fn new() -> Arc<Self> {
        Arc::new(Activity {
            origin: Instant::now(),
            in_flight: AtomicUsize::new(0),
            seen_request: AtomicBool::new(false),
            last_change_ms: AtomicU64::new(0),
        })
    }

    fn stamp(&self) {
        let ms = self.origin.elapsed().as_millis() as u64;
        self.last_change_ms.fetch_max(ms, Ordering::Relaxed);
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.seen_request.store(true, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.stamp();
        InFlight(self.clone())
    }

    /// When the connection is closed if nothing happens before: the first-request or idle
    /// limit while no request is in progress; while one is, the request limit since the
    /// last request began or ended.
    fn deadline(&self, policy: &Policy) -> Instant {
        let last = self.origin + Duration::from_millis(self.last_change_ms.load(Ordering::Relaxed));
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return last + policy.request;
        }
        if !self.seen_request.load(Ordering::Relaxed) {
            return self.origin + policy.first_request;
        }
        last + policy.idle
    }

    fn busy(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) > 0
    }
}

/// A request in progress; dropping it (answered or abandoned) marks the end.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.stamp();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves one accepted TCP connection until it closes, times out or the server stops.
/// `guards` (connection slots) are held until the socket is really closed.
pub async fn serve<G: Send + 'static>(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    router: Router,
    policy: Arc<Policy>,
    shutdown: CancellationToken,
    guards: G,
) {
    // Small answers go out at once instead of waiting for a delayed ACK.
    let _ = tcp.set_nodelay(true);
    let tls = tokio::select! {
        accepted = tokio::time::timeout(policy.tls_handshake, acceptor.accept(tcp)) => match accepted {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                log::debug!("TLS handshake with {peer} failed: {e}");
                return;
            }
            Err(_) => {
                log::debug!("TLS handshake with {peer} timed out");
                return;
            }
        },
        _ = shutdown.cancelled() => return,
    };
    let cert = ClientCert(
        tls.get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|c| Arc::new(crate::peer_cert::PeerCertificate::parse(c))),
    );
    let activity = Activity::new();
    let service = {
        let activity = activity.clone();
        hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(cert.clone());
            req.extensions_mut().insert(PeerAddr(peer));
            let in_flight = activity.begin();
            let router = router.clone();
            async move {
                let response = router.oneshot(req).await;
                drop(in_flight);
                response
            }
        })
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // Runs from the moment hyper waits for a head, so it also bounds keep-alive
        // idleness between requests; the idle limit below is the same figure.
        .header_read_timeout(policy.idle)
        .max_buf_size(MAX_HTTP1_BUFFER)
        .max_headers(MAX_HTTP1_HEADERS)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(policy.http2_max_concurrent_streams)
        // PINGs find dead peers; they do not keep an idle connection open.
        .keep_alive_interval(policy.idle / 2)
        .keep_alive_timeout(Duration::from_secs(20));
    let (returned_tx, returned_rx) = oneshot::channel();
    let io = ReturningIo {
        inner: Some(tls),
        on_drop: Some(returned_tx),
    };
    let mut conn = Box::pin(builder.serve_connection(TokioIo::new(io), service));
    // When the connection is dropped if it has not closed by itself.
    let mut drop_at: Option<Instant> = None;
    loop {
        let wake = drop_at.unwrap_or_else(|| activity.deadline(&policy));
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    log::debug!("connection with {peer} ended: {e}");
                }
                break;
            }
            _ = shutdown.cancelled(), if drop_at.is_none() => {
                conn.as_mut().graceful_shutdown();
                let grace = if activity.busy() { policy.drain } else { IDLE_CLOSE_GRACE };
                drop_at = Some(Instant::now() + grace);
            }
            _ = tokio::time::sleep_until(wake) => {
                if drop_at.is_some() {
                    log::debug!("connection with {peer} did not close in time; dropping it");
                    break;
                }
                if activity.deadline(&policy) <= Instant::now() {
                    log::debug!("closing connection with {peer}: past its deadline");
                    conn.as_mut().graceful_shutdown();
                    drop_at = Some(Instant::now() + IDLE_CLOSE_GRACE);
                }
            }
        }
    }
    drop(conn);
    if let Ok(tls) = returned_rx.await {
        linger(tls).await;
    }
    drop(guards);
}

/// Closes our side, then reads and discards what the client still sends until it closes
/// too (bounded in time and bytes). Closing a socket with unread data makes the kernel
/// send a reset, which can destroy an answer the client has not read yet.
async fn linger(tls: TlsStream<TcpStream>) {
    let (mut tcp, _) = tls.into_inner();
    let _ = tcp.shutdown().await;
    let deadline = Instant::now() + LINGER_TOTAL;
    let mut discarded = 0u64;
    let mut buf = vec![0u8; 16 * 1024];
    while discarded < LINGER_BYTES {
        let wait = LINGER_READ.min(deadline.saturating_duration_since(Instant::now()));
        match tokio::time::timeout(wait, tcp.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => discarded += n as u64,
            _ => break,
        }
    }
}

/// The TLS stream, handed back when hyper is done with it (hyper consumes its IO), so the
/// close can linger.
struct ReturningIo {
    inner: Option<TlsStream<TcpStream>>,
    on_drop: Option<oneshot::Sender<TlsStream<TcpStream>>>,
}

impl ReturningIo {
    fn stream(&mut self) -> Pin<&mut TlsStream<TcpStream>> {
        Pin::new(self.inner.as_mut().expect("present until drop"))
    }
}

impl Drop for ReturningIo {
    fn drop(&mut self) {
        if let (Some(stream), Some(tx)) = (self.inner.take(), self.on_drop.take()) {
            let _ = tx.send(stream);
        }
    }
}

impl AsyncRead for ReturningIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.stream().poll_read(cx, buf)
    }
}

impl AsyncWrite for ReturningIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.stream().poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.stream().poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.stream().poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.stream().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner
            .as_ref()
            .map(|s| s.is_write_vectored())
            .unwrap_or(false)
    }
}
