//! Throughput and latency of enrollment and heartbeats over real HTTPS with mutual TLS,
//! against a server launched in this process on a loopback port. Prints figures; asserts
//! nothing about speed.
//!
//!     cargo bench -p contera-provisioning --bench api
//!     RECORDERS=500 HEARTBEATS=50000 CONCURRENCY=64 cargo bench -p contera-provisioning --bench api

use std::sync::Arc;
use std::time::{Duration, Instant};

use contera_protocol::v1::{
    EnrollRequest, EnrollResponse, Hardware, HeartbeatRequest, RecorderStatus,
};
use contera_provisioning::config::ServerConfig;
use contera_provisioning::store::{AccountKind, SqliteStore, Store};
use rcgen::{CertificateParams, KeyPair};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn client(ca_pem: &str, identity: Option<(&str, &str)>) -> reqwest::Client {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let tls = match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
    };
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .build()
        .unwrap()
}

struct Latencies(Vec<Duration>);

impl Latencies {
    fn report(mut self, what: &str, wall: Duration) {
        self.0.sort();
        let n = self.0.len();
        let pct = |p: f64| self.0[((n as f64 * p) as usize).min(n - 1)];
        println!(
            "{what:<28} {n:>7} requests in {:>7.2} s = {:>8.0}/s   p50 {:>6.2} ms   p99 {:>6.2} ms   max {:>6.2} ms",
            wall.as_secs_f64(),
            n as f64 / wall.as_secs_f64(),
            pct(0.50).as_secs_f64() * 1e3,
            pct(0.99).as_secs_f64() * 1e3,
            self.0[n - 1].as_secs_f64() * 1e3,
        );
    }
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

#[tokio::main]
async fn main() {
    let recorders = env_usize("RECORDERS", 200);
    let heartbeats = env_usize("HEARTBEATS", 20_000);
    let concurrency = env_usize("CONCURRENCY", 32);
    println!(
        "recorders={recorders} heartbeats={heartbeats} concurrency={concurrency} cores={}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );

    let dir = tempfile::tempdir().unwrap();
    let config = ServerConfig {
        data_dir: dir.path().to_owned(),
        // A storm from one address with one code: every limit out of the way.
        enroll_attempts_per_minute: 1_000_000,
        enroll_attempts_per_code_per_minute: 1_000_000,
        enroll_attempts_total_per_minute: 1_000_000,
        ..ServerConfig::default()
    };
    let store = SqliteStore::open(&config.database_path()).await.unwrap();
    let store: Arc<dyn Store> = Arc::new(store);
    let (_, code) = contera_provisioning::accounts::create(
        &store,
        &contera_provisioning::secrets::CodeKey::load_or_create(dir.path(), false).unwrap(),
        "Bench",
        AccountKind::Customer,
        None,
        "bench",
    )
    .await
    .unwrap();
    drop(store);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!(
        "https://localhost:{}",
        listener.local_addr().unwrap().port()
    );
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(contera_provisioning::serve::launch(
        config,
        listener,
        shutdown.clone(),
    ));
    let ca_path = dir.path().join("tls/ca.pem");
    let ca_pem = loop {
        if let Ok(pem) = std::fs::read_to_string(&ca_path) {
            if client(&pem, None)
                .get(format!("{base}/healthz"))
                .send()
                .await
                .is_ok()
            {
                break pem;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    // Keys and CSRs are the recorders' work, made before the clock starts.
    let keys: Vec<KeyPair> = (0..recorders)
        .map(|_| KeyPair::generate().unwrap())
        .collect();
    let csrs: Vec<String> = keys
        .iter()
        .map(|k| {
            CertificateParams::default()
                .serialize_request(k)
                .unwrap()
                .pem()
                .unwrap()
        })
        .collect();

    let anonymous = client(&ca_pem, None);
    let limit = Arc::new(Semaphore::new(concurrency));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (i, csr) in csrs.into_iter().enumerate() {
        let http = anonymous.clone();
        let url = format!("{base}/api/v1/enroll");
        let req = EnrollRequest {
            registration_code: code.to_string(),
            csr_pem: csr,
            hardware: Hardware {
                serial: format!("BENCH-{i}"),
                mac: None,
                model: "bench".into(),
                firmware: None,
            },
            agent_version: "bench".into(),
        };
        let permit = limit.clone().acquire_owned().await.unwrap();
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let resp: EnrollResponse = http
                .post(url)
                .json(&req)
                .send()
                .await
                .unwrap()
                .error_for_status()
                .unwrap()
                .json()
                .await
                .unwrap();
            drop(permit);
            (t.elapsed(), resp.certificate_pem)
        }));
    }
    let mut enroll_lat = Vec::new();
    let mut certs = Vec::new();
    for t in tasks {
        let (lat, cert) = t.await.unwrap();
        enroll_lat.push(lat);
        certs.push(cert);
    }
    Latencies(enroll_lat).report("enroll (CSR signed)", started.elapsed());

    let clients: Vec<reqwest::Client> = certs
        .iter()
        .zip(&keys)
        .map(|(cert, key)| client(&ca_pem, Some((cert, &key.serialize_pem()))))
        .collect();
    let body = HeartbeatRequest {
        status: RecorderStatus {
            uptime_secs: Some(1),
            ..Default::default()
        },
    };
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..heartbeats {
        let http = clients[i % clients.len()].clone();
        let url = format!("{base}/api/v1/heartbeat");
        let body = body.clone();
        let permit = limit.clone().acquire_owned().await.unwrap();
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            http.post(url)
                .json(&body)
                .send()
                .await
                .unwrap()
                .error_for_status()
                .unwrap();
            drop(permit);
            t.elapsed()
        }));
    }
    let mut hb_lat = Vec::new();
    for t in tasks {
        hb_lat.push(t.await.unwrap());
    }
    Latencies(hb_lat).report("heartbeat (mutual TLS)", started.elapsed());
    println!(
        "peak RSS of this process (server and all clients): {:.1} MiB",
        peak_rss_mib()
    );

    shutdown.cancel();
    server.await.unwrap().unwrap();
}
