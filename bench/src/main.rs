//! `contera-bare`: the least a server can do for a heartbeat, as the baseline the real
//! server is measured against. The same axum, hyper, rustls and tokio versions, the same
//! TLS material (the server certificate and the device CA from a provisioning server's
//! data directory, client certificates verified the same way), and a handler that answers
//! 200 with a small JSON body without looking at the request. Whatever the real server
//! costs beyond this is its own.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use axum::routing::post;
use axum::Router;
use clap::Parser;
use contera_provisioning::ca::Pki;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

/// What the real server answers a heartbeat, as fixed bytes.
const ANSWER: &str = r#"{"heartbeat_interval_secs":60,"account":{"id":"5f0c8e52-8d0e-4f7b-9a53-0c3e8f1b2a77","name":"Bench"},"instructions":[],"server_time":"2026-11-27T00:00:00Z"}"#;

#[derive(Parser)]
#[command(about = "A bare axum + rustls server answering 200, the benchmark baseline")]
struct Args {
    /// A provisioning server's data directory: its tls/ is used as is.
    #[arg(long)]
    data_dir: PathBuf,
    /// Where to listen; port 0 picks one, printed as "contera-bare listening on https://ADDR".
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Leave Nagle's algorithm on (TCP_NODELAY unset), to show what it costs.
    #[arg(long)]
    nagle: bool,
    /// Tokio worker threads (default: one per core this process may use).
    #[arg(long)]
    workers: Option<usize>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(workers) = args.workers {
        runtime.worker_threads(workers);
    }
    runtime.enable_all().build()?.block_on(serve(args))
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let pki = Pki::load_or_create(&args.data_dir.join("tls"), &[])
        .context("loading the server's TLS material")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    roots.add(pki.device_ca.cert_der().clone())?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(pki.server_chain.clone(), pki.server_key.clone_key())?;
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    // A heartbeat answer of the real shape and size, made once: clients parse it.
    let router = Router::new().route(
        "/api/v1/heartbeat",
        post(|_body: axum::body::Bytes| async { ([("content-type", "application/json")], ANSWER) }),
    );
    let listener = TcpListener::bind(args.listen).await?;
    println!(
        "contera-bare listening on https://{}",
        listener.local_addr()?
    );
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(_) => continue,
        };
        if !args.nagle {
            let _ = tcp.set_nodelay(true);
        }
        let acceptor = acceptor.clone();
        let router = router.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let service = hyper::service::service_fn(move |req| router.clone().oneshot(req));
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}
