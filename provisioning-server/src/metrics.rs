//! Prometheus metrics: the counters and histograms the server keeps, and `GET /metrics`
//! on a listener of its own (loopback by default), so that a scraper needs neither a
//! client certificate nor a way into the device or console ports.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::facts::Facts;
use crate::store::Store;

/// The path the metrics are served on.
pub const METRICS_PATH: &str = "/metrics";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Route {
    route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RecorderState {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolState {
    state: &'static str,
}

/// The routes whose latency is kept apart; everything else counts as `other`.
pub const ROUTES: [&str; 6] = ["enroll", "heartbeat", "renew", "goodbye", "admin", "other"];

/// Request latency buckets, seconds: 250 µs to 10 s.
fn latency_buckets() -> impl Iterator<Item = f64> {
    [
        0.000_25, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
        10.0,
    ]
    .into_iter()
}

/// Everything the server counts. Cheap to update from any task: handles are resolved
/// once, so a request costs a few atomic additions.
pub struct Metrics {
    registry: Registry,
    enrollments: Family<Outcome, Counter>,
    heartbeats: Family<Outcome, Counter>,
    rate_limited: Family<Reason, Counter>,
    latency: Vec<Histogram>,
    flush_rows: Histogram,
    flush_seconds: Histogram,
    flush_statements: Counter,
    recorders: Family<RecorderState, Gauge>,
    pool: Family<PoolState, Gauge>,
    pool_max: Gauge,
    facts_lookups: Family<Outcome, Counter>,
    facts_hit_ratio: Gauge<f64, AtomicU64>,
    facts_cached: Gauge,
    in_flight: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("contera");
        let enrollments = Family::<Outcome, Counter>::default();
        registry.register(
            "enrollments",
            "Enrollment requests by outcome (new, again, moved, refused, rate_limited, error)",
            enrollments.clone(),
        );
        let heartbeats = Family::<Outcome, Counter>::default();
        registry.register(
            "heartbeats",
            "Heartbeat requests by outcome (ok, refused, rate_limited, error)",
            heartbeats.clone(),
        );
        let rate_limited = Family::<Reason, Counter>::default();
        registry.register(
            "rate_limited",
            "Requests answered 429 Too Many Requests, by reason",
            rate_limited.clone(),
        );
        let latency_family =
            Family::<Route, Histogram>::new_with_constructor(|| Histogram::new(latency_buckets()));
        registry.register(
            "request_duration_seconds",
            "Time from a request's head to its answer, by route",
            latency_family.clone(),
        );
        let latency = ROUTES
            .iter()
            .map(|route| latency_family.get_or_create(&Route { route }).clone())
            .collect();
        let flush_rows =
            Histogram::new([1.0, 10.0, 100.0, 1_000.0, 10_000.0, 100_000.0, 1_000_000.0]);
        registry.register(
            "presence_flush_rows",
            "Recorders written per presence flush",
            flush_rows.clone(),
        );
        let flush_seconds = Histogram::new(latency_buckets());
        registry.register(
            "presence_flush_duration_seconds",
            "Time one presence flush took",
            flush_seconds.clone(),
        );
        let flush_statements = Counter::default();
        registry.register(
            "presence_flush_statements",
            "Database statements written by presence flushes (one per flush)",
            flush_statements.clone(),
        );
        let recorders = Family::<RecorderState, Gauge>::default();
        registry.register(
            "recorders",
            "Recorders by state (online, offline, revoked), read from the database at scrape time",
            recorders.clone(),
        );
        let pool = Family::<PoolState, Gauge>::default();
        registry.register(
            "store_pool_connections",
            "Database connections held by this process, by state (in_use, idle)",
            pool.clone(),
        );
        let pool_max = Gauge::default();
        registry.register(
            "store_pool_max_connections",
            "The most database connections this process opens",
            pool_max.clone(),
        );
        let facts_lookups = Family::<Outcome, Counter>::default();
        registry.register(
            "facts_lookups",
            "Heartbeat fact lookups, by outcome (hit: from memory, miss: from the database)",
            facts_lookups.clone(),
        );
        let facts_hit_ratio = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "facts_cache_hit_ratio",
            "Share of heartbeat fact lookups served from memory since start",
            facts_hit_ratio.clone(),
        );
        let facts_cached = Gauge::default();
        registry.register(
            "facts_cached_recorders",
            "Recorders whose heartbeat facts are held in memory",
            facts_cached.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "requests_in_flight",
            "Device and admin API requests being served now",
            in_flight.clone(),
        );
        Metrics {
            registry,
            enrollments,
            heartbeats,
            rate_limited,
            latency,
            flush_rows,
            flush_seconds,
            flush_statements,
            recorders,
            pool,
            pool_max,
            facts_lookups,
            facts_hit_ratio,
            facts_cached,
            in_flight,
        }
    }

    pub fn enrollment(&self, outcome: &'static str) {
        self.enrollments.get_or_create(&Outcome { outcome }).inc();
    }

    pub fn heartbeat(&self, outcome: &'static str) {
        self.heartbeats.get_or_create(&Outcome { outcome }).inc();
    }

    pub fn rate_limited(&self, reason: &'static str) {
        self.rate_limited.get_or_create(&Reason { reason }).inc();
    }

    /// `route` is an index into [`ROUTES`].
    pub fn request_took(&self, route: usize, took: Duration) {
        self.latency[route.min(ROUTES.len() - 1)].observe(took.as_secs_f64());
    }

    pub fn flushed(&self, rows: usize, took: Duration) {
        self.flush_rows.observe(rows as f64);
        self.flush_seconds.observe(took.as_secs_f64());
        self.flush_statements.inc();
    }

    /// A gauge of requests in flight, for the admission check.
    pub fn in_flight(&self) -> &Gauge {
        &self.in_flight
    }

    /// Reads the figures kept elsewhere (store, cache) and encodes everything.
    pub async fn render(&self, store: &dyn Store, facts: &Facts) -> Result<String, String> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let totals = store
            .recorder_totals(now)
            .await
            .map_err(|e| e.to_string())?;
        for (state, value) in [
            ("online", totals.online),
            ("offline", totals.offline),
            ("revoked", totals.revoked),
        ] {
            self.recorders
                .get_or_create(&RecorderState { state })
                .set(value);
        }
        let pool = store.pool_use();
        self.pool
            .get_or_create(&PoolState { state: "idle" })
            .set(i64::from(pool.idle));
        self.pool
            .get_or_create(&PoolState { state: "in_use" })
            .set(i64::from(pool.size.saturating_sub(pool.idle)));
        self.pool_max.set(i64::from(pool.max));
        let (hits, misses) = facts.lookups();
        for (outcome, value) in [("hit", hits), ("miss", misses)] {
            let counter = self.facts_lookups.get_or_create(&Outcome { outcome });
            // Counters only go up: add what happened since the last scrape.
            counter.inc_by(value.saturating_sub(counter.get()));
        }
        let lookups = hits + misses;
        self.facts_hit_ratio.set(if lookups == 0 {
            0.0
        } else {
            hits as f64 / lookups as f64
        });
        self.facts_cached.set(facts.sizes().0 as i64);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .map_err(|e| e.to_string())?;
        Ok(text)
    }
}

struct Scrape {
    metrics: Arc<Metrics>,
    store: Arc<dyn Store>,
    facts: Arc<Facts>,
}

async fn scrape(State(scrape): State<Arc<Scrape>>) -> Response {
    match scrape
        .metrics
        .render(scrape.store.as_ref(), &scrape.facts)
        .await
    {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => {
            log::warn!("metrics scrape failed: {e}");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("metrics are unavailable: {e}\n"),
            )
                .into_response()
        }
    }
}

/// Serves `GET /metrics` in plain HTTP on `listener` until shutdown.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    store: Arc<dyn Store>,
    facts: Arc<Facts>,
    shutdown: CancellationToken,
) {
    let router = Router::new()
        .route(METRICS_PATH, get(scrape))
        .with_state(Arc::new(Scrape {
            metrics,
            store,
            facts,
        }));
    if let Err(e) = axum::serve(listener, router)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
    {
        log::warn!("the metrics listener stopped: {e}");
    }
}
