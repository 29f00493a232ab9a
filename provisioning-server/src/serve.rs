//! The HTTPS server: TLS with optional client certificates, the presence flusher, and
//! graceful shutdown. `launch` takes its listener and shutdown signal as arguments so that
//! tests can hand in a port-0 listener.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::{self, AppState};
use crate::ca::Pki;
use crate::client_auth::GraceVerifier;
use crate::config::ServerConfig;
use crate::connection;
use crate::descriptors::{self, ConnectionBudget};
use crate::limits::{ConnectionSlots, EnrollLimits};
use crate::recorders::{PresenceBuffer, Recorders};
use crate::store::NewAuditEntry;

/// How long open connections may finish their requests once shutdown began.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The names the server certificate must carry for this configuration.
pub fn certificate_names(config: &ServerConfig, listen: SocketAddr) -> Vec<String> {
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    if listen.ip().is_unspecified() {
        if let Ok(host) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
            let host = host.trim().to_string();
            // mDNS answers carry host.local.; agents may use either name.
            names.push(format!("{host}.local"));
            names.push(host);
        }
    } else {
        names.push(listen.ip().to_string());
    }
    names.extend(config.server_names.iter().cloned());
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| {
        !n.is_empty()
            && seen.insert(
                n.parse::<IpAddr>()
                    .map(|ip| ip.to_string())
                    .unwrap_or_else(|_| n.to_lowercase()),
            )
    });
    names
}

fn tls_config(pki: &Pki, grace_secs: u64) -> anyhow::Result<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    roots
        .add(pki.device_ca.cert_der().clone())
        .context("loading the device CA into the client verifier")?;
    // Certificates are optional at the TLS layer (enrollment has none); the recorder
    // routes demand one. A certificate that does not chain to the device CA fails the
    // handshake.
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .context("building the client certificate verifier")?;
    let verifier = Arc::new(GraceVerifier::new(verifier, grace_secs));
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(pki.server_chain.clone(), pki.server_key.clone_key())
        .context("loading the server certificate")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// TLS for the console's listener: the console's own certificate when configured, else
/// the server certificate; never a client-certificate request, so no browser asks its user
/// to pick one.
fn console_tls_config(
    console: &crate::config::ConsoleSection,
    pki: &Pki,
) -> anyhow::Result<rustls::ServerConfig> {
    let (chain, key) = match (&console.certificate_file, &console.key_file) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .with_context(|| format!("reading the console certificate {}", cert.display()))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .with_context(|| format!("reading the console key {}", key.display()))?;
            (chain, key)
        }
        _ => (pki.server_chain.clone(), pki.server_key.clone_key()),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("loading the console certificate")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Runs the server on `listener` until `shutdown` is cancelled, then drains connections and
/// writes pending heartbeats. Once ready it prints `contera-provisioning listening on
/// https://ADDR` on stdout and tells systemd `READY=1`.
pub async fn launch(
    config: ServerConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let local = listener.local_addr()?;
    let fd_limit = descriptors::raise_soft_limit().context("reading the open-file limit")?;
    if let Some(from) = fd_limit.raised_from {
        log::info!(
            "raised the open-file limit from {from} to {}",
            fd_limit.soft
        );
    }
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    let database = config.database()?;
    let store = crate::store::open(&database, config.database_max_connections)
        .await
        .with_context(|| format!("opening database {}", database.redacted()))?;
    // The key that seals registration codes is made on first start, so it exists to be
    // backed up with the database. The server itself only checks codes by their hash, so a
    // key lost while sealed codes exist is reported and serving goes on: codes still enroll,
    // they just cannot be shown again until the key is restored.
    match store.sealed_codes_exist().await {
        Ok(sealed) => {
            if let Err(e) = crate::secrets::CodeKey::load_or_create(&config.data_dir, sealed) {
                log::warn!("{e}; registration codes still enroll but cannot be shown again");
            }
        }
        Err(e) => return Err(e).context("checking for sealed registration codes"),
    }
    // Only at start, before serving: rows an interrupted enrollment of an older version
    // left without a certificate were never answered 200 and can never be used.
    let removed = store
        .remove_incomplete_enrollments(time::OffsetDateTime::now_utc().unix_timestamp())
        .await
        .context("removing recorders left without a certificate")?;
    if removed > 0 {
        log::warn!(
            "removed {removed} recorder rows left without a certificate by an interrupted enrollment"
        );
    }
    let pki = Pki::load_or_create(
        &Pki::tls_dir(&config.data_dir),
        &certificate_names(&config, local),
    )?;
    let grace_secs = u64::from(config.expired_renewal_grace_days) * 86_400;
    let acceptor = TlsAcceptor::from(Arc::new(tls_config(&pki, grace_secs)?));
    let facts = crate::facts::Facts::new(Duration::from_millis(config.facts_refresh_millis));
    let metrics = Arc::new(crate::metrics::Metrics::new());
    let metrics_listener = if config.metrics.enabled {
        Some(
            TcpListener::bind(config.metrics.listen)
                .await
                .with_context(|| {
                    format!(
                        "cannot listen on {} for metrics ([metrics] listen, --metrics-listen; \
                         or [metrics] enabled = false)",
                        config.metrics.listen
                    )
                })?,
        )
    } else {
        None
    };
    let state = Arc::new(AppState::new(
        Recorders {
            facts: facts.clone(),
            store: store.clone(),
            ca: pki.device_ca.clone(),
            heartbeat_interval_secs: config.heartbeat_interval_secs,
            certificate_lifetime: config.certificate_lifetime(),
            expired_renewal_grace: time::Duration::seconds(grace_secs as i64),
            presence: PresenceBuffer::default(),
            renew_limiter: crate::recorders::renew_limiter(),
        },
        EnrollLimits::new(
            config.enroll_attempts_per_minute,
            config.enroll_attempts_per_code_per_minute,
            config.enroll_attempts_total_per_minute,
        ),
        metrics.clone(),
        crate::api::Admission {
            max_in_flight: config.max_requests_in_flight,
            retry_after_secs: config.overload_retry_after_secs,
        },
    ));
    let console_listener = TcpListener::bind(config.console.listen)
        .await
        .with_context(|| format!("cannot listen on {} for the console", config.console.listen))?;
    let console_local = console_listener.local_addr()?;
    let mailer = crate::mail::Mailer::from_config(&config.mail, config.data_dir.join("outbox"))
        .context("setting up outgoing mail")?;
    let admin_state = Arc::new(crate::admin::AdminState {
        store: store.clone(),
        config: config.admin.clone(),
        mailer,
        base_url: config
            .mail
            // Links in mail open the console's pages (accept, reset).
            .public_base_url(console_local)
            .trim_end_matches('/')
            .to_owned(),
        login_limits: crate::auth::LoginLimits::new(&config.admin),
        reset_limits: crate::auth::LoginLimits::resets(),
        data_dir: config.data_dir.clone(),
        facts: facts.clone(),
    });
    let admin = crate::admin::router(admin_state);
    let router = api::router(state.clone(), admin.clone());
    let console_acceptor = TlsAcceptor::from(Arc::new(console_tls_config(&config.console, &pki)?));
    let console = crate::console::router(
        Arc::new(crate::console::ConsoleState {
            api: crate::console::Api::new(admin.clone()),
            minimum_age: config.admin.minimum_age,
            terms_url: config.admin.terms_url.clone(),
            terms_version: config.admin.terms_version.clone(),
            refresh_millis: u64::from(config.heartbeat_interval_secs).min(5) * 1000,
        }),
        admin,
    );

    let follower = tokio::spawn(facts.clone().follow(store.clone(), shutdown.clone()));
    let flusher = tokio::spawn(flush_presence(
        state.clone(),
        Duration::from_millis(config.presence_flush_millis),
        Duration::from_secs(config.failed_attempts_audit_secs),
        shutdown.clone(),
    ));

    let advertisement = if config.mdns.advertise {
        // The name agents should verify: an explicit server name, else the listen address
        // (always in the certificate), else the host name.
        let names = certificate_names(&config, local);
        let tls_name = config
            .server_names
            .first()
            .cloned()
            .or_else(|| (!local.ip().is_unspecified()).then(|| local.ip().to_string()))
            .unwrap_or_else(|| names.last().cloned().unwrap_or_else(|| "localhost".into()));
        match crate::mdns::Advertisement::start(local, &tls_name) {
            Ok(ad) => Some(ad),
            Err(e) => {
                log::warn!("mDNS announcement failed: {e}");
                None
            }
        }
    } else {
        None
    };
    let budget = match descriptors::connection_budget(config.max_connections, fd_limit.soft) {
        ConnectionBudget::Fits(n) => n,
        ConnectionBudget::Lowered { configured, to } => {
            log::warn!(
                "max_connections = {configured} does not fit the open-file limit of {} with {} descriptors kept for the database and files: serving at most {to} connections (raise LimitNOFILE= to serve more)",
                fd_limit.soft,
                descriptors::RESERVED
            );
            to
        }
        ConnectionBudget::TooLow { limit } => anyhow::bail!(
            "the open-file limit of {limit} leaves fewer than {} connections after {} descriptors for the database and files: raise it (LimitNOFILE= in the unit, or ulimit -n)",
            descriptors::MIN_CONNECTIONS,
            descriptors::RESERVED
        ),
    };
    log::info!(
        "listening on https://{local}: at most {budget} connections, {} per address; open-file limit {}",
        config.max_connections_per_address,
        fd_limit.soft
    );
    // Ready: the database, TLS material and limits are in place. Scripts and tests read
    // this stdout line to learn the port when listening on port 0, so it comes only now.
    let metrics_server = match metrics_listener {
        Some(listener) => {
            let addr = listener.local_addr()?;
            log::info!("metrics on http://{addr}/metrics");
            println!("contera-provisioning metrics on http://{addr}/metrics");
            Some(tokio::spawn(crate::metrics::serve(
                listener,
                metrics.clone(),
                store.clone(),
                facts.clone(),
                shutdown.clone(),
            )))
        }
        None => None,
    };
    log::info!("web console on https://{console_local}/");
    println!("contera-provisioning console on https://{console_local}");
    println!("contera-provisioning listening on https://{local}");
    let _ = sd_notify::notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(&format!("serving on {local}")),
    ]);
    let policy = Arc::new(connection::Policy {
        tls_handshake: Duration::from_secs(config.tls_handshake_timeout_secs),
        first_request: Duration::from_secs(config.first_request_timeout_secs),
        idle: Duration::from_secs(config.idle_timeout_secs),
        http2_max_concurrent_streams: config.http2_max_concurrent_streams,
        request: Duration::from_secs(config.request_timeout_secs),
        drain: DRAIN_TIMEOUT,
    });
    let per_address = ConnectionSlots::new(config.max_connections_per_address);
    let connections = Arc::new(tokio::sync::Semaphore::new(budget));
    let tracker = TaskTracker::new();
    let accepting = Accepting {
        policy,
        per_address,
        max_per_address: config.max_connections_per_address,
        connections,
        tracker: tracker.clone(),
        shutdown: shutdown.clone(),
    };
    // The device port and the console share the connection budget and the per-address
    // slots: a flood on one cannot take the descriptors the other needs.
    tokio::join!(
        accepting.run(&listener, acceptor, router),
        accepting.run(&console_listener, console_acceptor, console),
    );
    drop(listener);
    drop(console_listener);
    log::info!("shutting down: draining connections");
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    tracker.close();
    // Each connection gets DRAIN_TIMEOUT for its requests, then a short lingering close.
    if tokio::time::timeout(DRAIN_TIMEOUT + Duration::from_secs(6), tracker.wait())
        .await
        .is_err()
    {
        log::warn!("connections still open after {DRAIN_TIMEOUT:?}; closing them");
    }
    flusher.await.ok();
    follower.await.ok();
    if let Some(metrics_server) = metrics_server {
        metrics_server.await.ok();
    }
    if let Some(ad) = advertisement {
        let _ = tokio::task::spawn_blocking(move || ad.stop()).await;
    }
    // Heartbeats that arrived while connections drained are written too.
    if let Err(e) = state
        .recorders
        .presence
        .flush(state.recorders.store.as_ref())
        .await
    {
        log::error!("writing the last heartbeats failed: {e}");
    }
    Ok(())
}

/// What accepting connections on a listener needs, shared by the device port and the
/// console.
struct Accepting {
    policy: Arc<connection::Policy>,
    per_address: Arc<ConnectionSlots>,
    max_per_address: usize,
    connections: Arc<tokio::sync::Semaphore>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
}

impl Accepting {
    /// Accepts on `listener` until shutdown, serving each connection with `router`.
    async fn run(&self, listener: &TcpListener, acceptor: TlsAcceptor, router: axum::Router) {
        loop {
            // At most the budget at once: past that, new ones wait in the accept queue
            // instead of taking descriptors the database needs.
            let permit = tokio::select! {
                _ = self.shutdown.cancelled() => break,
                permit = self.connections.clone().acquire_owned() => permit.expect("never closed"),
            };
            let (tcp, peer) = tokio::select! {
                _ = self.shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // Out of descriptors (or another transient failure): the
                        // connections already open keep being served while this one waits.
                        log::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            prepare_socket(&tcp);
            let Some(slot) = self.per_address.take(peer.ip()) else {
                log::debug!(
                    "refusing a connection from {peer}: {} already open from that address",
                    self.max_per_address
                );
                drop(tcp);
                continue;
            };
            self.tracker.spawn(connection::serve(
                tcp,
                peer,
                acceptor.clone(),
                router.clone(),
                self.policy.clone(),
                self.shutdown.clone(),
                (permit, slot),
            ));
        }
    }
}

/// Sets TCP_NODELAY on an accepted socket. Requests and answers here are small and
/// strictly alternate (a TLS handshake's last flight, a heartbeat and its answer): with
/// Nagle's algorithm on, each small write after the first waits for the peer's delayed ACK,
/// about 40 ms, which dominated a fresh connection's heartbeat.
fn prepare_socket(tcp: &tokio::net::TcpStream) {
    if let Err(e) = tcp.set_nodelay(true) {
        log::debug!("could not set TCP_NODELAY: {e}");
    }
}

async fn flush_presence(
    state: Arc<AppState>,
    every: Duration,
    audit_every: Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_audit = tokio::time::Instant::now();
    loop {
        let stopping = tokio::select! {
            _ = tick.tick() => false,
            _ = shutdown.cancelled() => true,
        };
        let started = std::time::Instant::now();
        let flushed = state
            .recorders
            .presence
            .flush(state.recorders.store.as_ref())
            .await;
        if let Ok(rows) = flushed {
            if rows > 0 {
                state.metrics.flushed(rows, started.elapsed());
            }
        }
        if let Err(e) = flushed {
            log::warn!(
                "writing heartbeats failed ({} pending, will retry): {e}",
                state.recorders.presence.pending()
            );
        }
        if stopping || last_audit.elapsed() >= audit_every {
            last_audit = tokio::time::Instant::now();
            audit_failed_attempts(&state).await;
        }
        state.enroll_limits.retain_recent();
        state.recorders.renew_limiter.retain_recent();
        if stopping {
            return;
        }
    }
}

/// Writes the failed enrollment attempts counted since the last call: one audit row per
/// code public id, with the count, the period and how many addresses tried. Put back and
/// retried on the next period when the database refuses.
async fn audit_failed_attempts(state: &AppState) {
    let taken = state.failed_attempts.take();
    if taken.is_empty() {
        return;
    }
    let store = state.recorders.store.as_ref();
    let mut entries = Vec::with_capacity(taken.len());
    for (public_id, tally) in &taken {
        // Known codes are audited in their account; unknown ids stay account-less.
        let account_id = match store.code(public_id).await {
            Ok(found) => found.map(|code| code.account_id),
            Err(_) => None,
        };
        entries.push(NewAuditEntry {
            at: tally.last_at,
            actor: "server".to_string(),
            action: "code.failed_attempts".to_string(),
            account_id,
            recorder_id: None,
            detail: serde_json::json!({
                "code_public_id": public_id,
                "failures": tally.failures,
                "addresses": tally.addresses.len(),
                "from": tally.first_at,
                "until": tally.last_at,
            }),
        });
    }
    let total: u64 = taken.iter().map(|(_, t)| t.failures).sum();
    match store.append_audit(&entries).await {
        Ok(()) => log::warn!(
            "{total} failed enrollment attempts on {} registration code id(s) since the last report; see the audit log (code.failed_attempts)",
            entries.len()
        ),
        Err(e) => {
            log::warn!("writing failed enrollment attempts to the audit log failed (will retry): {e}");
            state.failed_attempts.restore(taken);
        }
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn accepted_sockets_send_small_writes_at_once() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        assert!(!accepted.nodelay().unwrap(), "the default keeps Nagle on");
        super::prepare_socket(&accepted);
        assert!(accepted.nodelay().unwrap());
    }
}
