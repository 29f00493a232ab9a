//! A small TLS client for tests that need what curl cannot do: thousands of kept-open
//! connections, connections from a chosen loopback address, connections that send
//! nothing, and an HTTP/2 client that only answers PINGs.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// A rustls client config trusting `ca_file`, presenting `identity` (certificate and key
/// PEM files) when given, offering the ALPN protocols in `alpn`.
pub fn client_config(
    ca_file: &Path,
    identity: Option<(&Path, &Path)>,
    alpn: &[&[u8]],
) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file).expect("CA file") {
        roots.add(cert.expect("CA certificate")).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_file_iter(cert)
                    .expect("certificate file")
                    .map(|c| c.expect("certificate"))
                    .collect(),
                PrivateKeyDer::from_pem_file(key).expect("key file"),
            )
            .expect("client identity"),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// A TCP connection to `to`, from the loopback address `from` when given.
pub async fn tcp_connect(from: Option<IpAddr>, to: SocketAddr) -> io::Result<TcpStream> {
    let socket = match to {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    if let Some(ip) = from {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    socket.connect(to).await
}

/// A TLS connection to the server at `to` (name "localhost").
pub async fn tls_connect(
    from: Option<IpAddr>,
    to: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> io::Result<TlsStream<TcpStream>> {
    let tcp = tcp_connect(from, to).await?;
    TlsConnector::from(config)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

/// POSTs a JSON body over an HTTP/1.1 keep-alive connection and reads the answer:
/// (status, body). Leaves the connection open for the next request.
pub async fn post_http1<S>(stream: &mut S, path: &str, body: &[u8]) -> io::Result<(u16, String)>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.flush().await?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before an answer",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other(format!("no status in {head:?}")))?;
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .ok_or_else(|| io::Error::other(format!("no content-length in {head:?}")))?;
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed in the body",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok((
        status,
        String::from_utf8_lossy(&buf[head_end..head_end + length]).to_string(),
    ))
}

/// An HTTP/2 connection that completes the handshake and then only answers the server's
/// PINGs and SETTINGS, never sending a request. Resolves when the server closes it.
pub async fn h2_ping_only(
    from: Option<IpAddr>,
    to: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> io::Result<tokio::task::JoinHandle<()>> {
    let tls = tls_connect(from, to, config).await?;
    let (_send, connection) = h2::client::handshake(tls).await.map_err(io::Error::other)?;
    Ok(tokio::spawn(async move {
        let _keep = _send;
        let _ = connection.await;
    }))
}

/// POSTs a JSON body as one HTTP/2 request on `send` and reads the answer.
pub async fn post_http2(
    send: &mut h2::client::SendRequest<Bytes>,
    path: &str,
    body: &[u8],
) -> io::Result<(u16, String)> {
    let request = http::Request::builder()
        .method("POST")
        .uri(format!("https://localhost{path}"))
        .header("content-type", "application/json")
        .body(())
        .unwrap();
    let ready = send.clone().ready().await.map_err(io::Error::other)?;
    *send = ready;
    let (response, mut stream) = send
        .send_request(request, false)
        .map_err(io::Error::other)?;
    stream
        .send_data(Bytes::copy_from_slice(body), true)
        .map_err(io::Error::other)?;
    let response = response.await.map_err(io::Error::other)?;
    let status = response.status().as_u16();
    let mut recv = response.into_body();
    let mut out = Vec::new();
    while let Some(chunk) = recv.data().await {
        let chunk = chunk.map_err(io::Error::other)?;
        let _ = recv.flow_control().release_capacity(chunk.len());
        out.extend_from_slice(&chunk);
    }
    Ok((status, String::from_utf8_lossy(&out).to_string()))
}

/// An HTTP/2 client connection over TLS: the request handle; the connection is driven
/// by a spawned task.
pub async fn h2_connect(
    from: Option<IpAddr>,
    to: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> io::Result<h2::client::SendRequest<Bytes>> {
    let tls = tls_connect(from, to, config).await?;
    let (send, connection) = h2::client::handshake(tls).await.map_err(io::Error::other)?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(send)
}
