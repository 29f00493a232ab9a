//! The HTTP API: every route in [`router`], thin handlers, and the one error shape.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use contera_protocol::v1::{
    EnrollPreviewRequest, EnrollPreviewResponse, EnrollRequest, GoodbyeRequest, HeartbeatRequest,
    RenewRequest, ENROLL_PATH, ENROLL_PREVIEW_PATH, GOODBYE_PATH, HEALTH_PATH, HEARTBEAT_PATH,
    MAX_BODY_BYTES, RENEW_PATH,
};
use contera_protocol::{ErrorBody, ErrorCode, RegistrationCode};
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;

use crate::accounts;
use crate::limits::{EnrollLimits, FailedAttempts, LimitHit, Refused};
use crate::metrics::{self, Metrics};
use crate::peer_cert::PeerCertificate;
use crate::recorders::{RecorderError, Recorders};

/// The TLS client certificate of the connection a request came on, if any, parsed once per
/// connection. The TLS layer verified it chains to the device CA before the request got
/// here.
#[derive(Clone, Debug, Default)]
pub struct ClientCert(pub Option<Arc<PeerCertificate>>);

/// The TCP peer of the connection, for rate limiting.
#[derive(Clone, Copy, Debug)]
pub struct PeerAddr(pub SocketAddr);

pub struct AppState {
    pub recorders: Recorders,
    pub enroll_limits: EnrollLimits,
    /// Wrong or unknown codes, written to the audit log in aggregate.
    pub failed_attempts: FailedAttempts,
    pub metrics: Arc<Metrics>,
    pub admission: Admission,
}

/// Overload protection: past `max_in_flight` requests being served at once, a request is
/// answered 429 with `Retry-After` at once, before its body is read, instead of queueing
/// behind the others until every one of them times out.
#[derive(Debug, Clone, Copy)]
pub struct Admission {
    pub max_in_flight: usize,
    pub retry_after_secs: u64,
}

impl AppState {
    pub fn new(
        recorders: Recorders,
        enroll_limits: EnrollLimits,
        metrics: Arc<Metrics>,
        admission: Admission,
    ) -> Self {
        AppState {
            recorders,
            enroll_limits,
            failed_attempts: FailedAttempts::default(),
            metrics,
            admission,
        }
    }
}

/// Every route the server has: the device endpoints here and the admin API (`admin`,
/// from [`crate::admin::router`]). Around them, from the outside in: every error answer in
/// the one error shape; the body read in whole (bounded) before anything answers, so no
/// answer races the client's upload; the enrollment limits that need no parsing.
pub fn router(state: Arc<AppState>, admin: Router) -> Router {
    let device = Router::new()
        .route(HEALTH_PATH, get(health))
        .route(ENROLL_PATH, post(enroll))
        .route(ENROLL_PREVIEW_PATH, post(enroll_preview))
        .route(HEARTBEAT_PATH, post(heartbeat))
        .route(RENEW_PATH, post(renew))
        .route(GOODBYE_PATH, post(goodbye))
        .with_state(state.clone());
    device
        .merge(admin)
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), enroll_gate))
        .layer(middleware::from_fn(read_body))
        .layer(middleware::from_fn_with_state(state, admit_and_observe))
        .layer(middleware::map_response(error_shape))
}

/// Which entry of [`metrics::ROUTES`] a request counts under.
fn route_index(path: &str) -> usize {
    let name = match path {
        ENROLL_PATH | ENROLL_PREVIEW_PATH => "enroll",
        HEARTBEAT_PATH => "heartbeat",
        RENEW_PATH => "renew",
        GOODBYE_PATH => "goodbye",
        p if p.starts_with("/api/v1/admin") => "admin",
        _ => "other",
    };
    metrics::ROUTES.iter().position(|r| *r == name).unwrap_or(0)
}

/// Why a request was answered 429, for the metrics; set by [`ApiError`].
#[derive(Clone, Copy, Debug)]
pub struct LimitReason(pub &'static str);

/// What an enrollment did (new, again, moved), for the metrics.
#[derive(Clone, Copy, Debug)]
pub struct EnrollOutcomeLabel(pub &'static str);

/// Leaves the in-flight count when the request ends, however it ends.
struct InFlightGuard<'a>(&'a prometheus_client::metrics::gauge::Gauge);

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Admission ([`Admission`]) and the request metrics: latency by route, outcomes of
/// heartbeats and enrollments, 429s by reason.
async fn admit_and_observe(
    State(state): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    let route = route_index(req.uri().path());
    let metrics = &state.metrics;
    let in_flight = metrics.in_flight();
    if in_flight.inc() as usize >= state.admission.max_in_flight && req.uri().path() != HEALTH_PATH
    {
        in_flight.dec();
        metrics.rate_limited("overload");
        count_outcome(metrics, route, StatusCode::TOO_MANY_REQUESTS, None);
        let secs = state.admission.retry_after_secs;
        let refusal = ApiError::new(
            ErrorCode::RateLimited,
            format!("the server is overloaded; retry in {secs} s"),
        )
        .with_retry_after(secs)
        .into_response();
        return discard_body_then(req.into_body(), refusal).await;
    }
    let _guard = InFlightGuard(in_flight);
    let started = std::time::Instant::now();
    let response = next.run(req).await;
    metrics.request_took(route, started.elapsed());
    let status = response.status();
    if status == StatusCode::TOO_MANY_REQUESTS {
        let reason = response
            .extensions()
            .get::<LimitReason>()
            .map_or("other", |r| r.0);
        metrics.rate_limited(reason);
    }
    let label = response
        .extensions()
        .get::<EnrollOutcomeLabel>()
        .map(|l| l.0);
    count_outcome(metrics, route, status, label);
    response
}

fn count_outcome(metrics: &Metrics, route: usize, status: StatusCode, label: Option<&'static str>) {
    let outcome = if status.is_success() {
        label.unwrap_or("ok")
    } else if status == StatusCode::TOO_MANY_REQUESTS {
        "rate_limited"
    } else if status.is_server_error() {
        "error"
    } else {
        "refused"
    };
    match metrics::ROUTES[route] {
        "heartbeat" => metrics.heartbeat(outcome),
        "enroll" => metrics.enrollment(outcome),
        _ => {}
    }
}

async fn health() -> &'static str {
    "ok\n"
}

async fn not_found() -> ApiError {
    ApiError::new(
        ErrorCode::NotFound,
        "no such endpoint; the API lives under /api/v1",
    )
}

/// Counts an enrollment attempt against its address and the global allowance before its
/// body is parsed, so malformed attempts count too.
async fn enroll_gate(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if req.method() == Method::POST && (path == ENROLL_PATH || path == ENROLL_PREVIEW_PATH) {
        if let Some(PeerAddr(peer)) = req.extensions().get::<PeerAddr>() {
            if let Err(refused) = state.enroll_limits.check_client(peer.ip()) {
                return ApiError::refused(refused).into_response();
            }
        }
    }
    next.run(req).await
}

/// Counts an attempt against the code's public id. A code that fails its check symbol is
/// refused without a lookup, so only codes that could be right count; returns the id.
fn check_code_limit(state: &AppState, typed: &str) -> Result<Option<String>, ApiError> {
    let public_id = typed
        .parse::<RegistrationCode>()
        .ok()
        .map(|code| code.public_id());
    if let Some(public_id) = &public_id {
        state
            .enroll_limits
            .check_code(public_id)
            .map_err(ApiError::refused)?;
    }
    Ok(public_id)
}

/// Counts a wrong or unknown code for the audit log's aggregate.
fn record_failed_code(state: &AppState, public_id: Option<&str>, peer: SocketAddr) {
    state.failed_attempts.record(
        public_id.unwrap_or("(mistyped)"),
        peer.ip(),
        time::OffsetDateTime::now_utc().unix_timestamp(),
    );
}

async fn enroll(
    State(state): State<Arc<AppState>>,
    Extension(PeerAddr(peer)): Extension<PeerAddr>,
    ApiJson(req): ApiJson<EnrollRequest>,
) -> Result<
    (
        Extension<EnrollOutcomeLabel>,
        Json<contera_protocol::v1::EnrollResponse>,
    ),
    ApiError,
> {
    let public_id = check_code_limit(&state, &req.registration_code)?;
    match state.recorders.enroll(req).await {
        Ok((answer, kind)) => Ok((Extension(EnrollOutcomeLabel(kind)), Json(answer))),
        Err(e @ RecorderError::InvalidCode) => {
            record_failed_code(&state, public_id.as_deref(), peer);
            Err(e.into())
        }
        Err(e) => Err(e.into()),
    }
}

/// Which account a code enrolls into, before anything is committed: the same checks,
/// limits and answers for a bad code as enrollment, and only names in the answer.
async fn enroll_preview(
    State(state): State<Arc<AppState>>,
    Extension(PeerAddr(peer)): Extension<PeerAddr>,
    ApiJson(req): ApiJson<EnrollPreviewRequest>,
) -> Result<Json<EnrollPreviewResponse>, ApiError> {
    let public_id = check_code_limit(&state, &req.registration_code)?;
    let store = &state.recorders.store;
    let (account, _) = match accounts::resolve_code(store, &req.registration_code).await {
        Ok(found) => found,
        Err(e) => {
            let e = RecorderError::from(e);
            if matches!(e, RecorderError::InvalidCode) {
                record_failed_code(&state, public_id.as_deref(), peer);
            }
            return Err(e.into());
        }
    };
    let parent_name = match &account.parent_id {
        Some(parent) => store
            .account(parent)
            .await
            .map_err(RecorderError::from)?
            .map(|p| p.name),
        None => None,
    };
    Ok(Json(EnrollPreviewResponse {
        account_name: account.name,
        parent_name,
    }))
}

async fn heartbeat(
    State(state): State<Arc<AppState>>,
    Extension(cert): Extension<ClientCert>,
    ApiJson(req): ApiJson<HeartbeatRequest>,
) -> Result<Json<contera_protocol::v1::HeartbeatResponse>, ApiError> {
    Ok(Json(
        state.recorders.heartbeat(cert.0.as_deref(), req).await?,
    ))
}

async fn renew(
    State(state): State<Arc<AppState>>,
    Extension(cert): Extension<ClientCert>,
    ApiJson(req): ApiJson<RenewRequest>,
) -> Result<Json<contera_protocol::v1::RenewResponse>, ApiError> {
    Ok(Json(state.recorders.renew(cert.0.as_deref(), req).await?))
}

async fn goodbye(
    State(state): State<Arc<AppState>>,
    Extension(cert): Extension<ClientCert>,
    ApiJson(req): ApiJson<GoodbyeRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    state.recorders.goodbye(cert.0.as_deref(), req).await?;
    Ok(Json(serde_json::json!({})))
}

/// An error answer: `{"error": {"code", "message"}}` with the status that goes with it.
#[derive(Debug)]
pub struct ApiError {
    code: ErrorCode,
    message: String,
    retry_after_secs: Option<u64>,
    /// Why a 429 was answered, for the metrics.
    reason: Option<&'static str>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            retry_after_secs: None,
            reason: None,
        }
    }

    /// Names why a request was refused as too many, for the metrics.
    pub fn because(mut self, reason: &'static str) -> Self {
        self.reason = Some(reason);
        self
    }

    /// The same error with a `Retry-After` header.
    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    fn rate_limited(secs: u64) -> Self {
        ApiError {
            retry_after_secs: Some(secs),
            reason: Some("renew"),
            ..ApiError::new(
                ErrorCode::RateLimited,
                format!("too many requests; retry in {secs} s"),
            )
        }
    }

    fn refused(refused: Refused) -> Self {
        let secs = refused.retry_after_secs;
        ApiError {
            retry_after_secs: Some(secs),
            reason: Some(match refused.hit {
                LimitHit::Address => "enroll_address",
                LimitHit::Code => "enroll_code",
                LimitHit::Global => "enroll_total",
            }),
            ..ApiError::new(
                ErrorCode::RateLimited,
                format!("{}; retry in {secs} s", refused.hit.describe()),
            )
        }
    }

    fn too_large() -> Self {
        ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("request body is larger than {MAX_BODY_BYTES} bytes"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, Json(ErrorBody::new(self.code, self.message))).into_response();
        if let Some(secs) = self.retry_after_secs {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Some(reason) = self.reason {
            response.extensions_mut().insert(LimitReason(reason));
        }
        response
    }
}

impl From<RecorderError> for ApiError {
    fn from(e: RecorderError) -> Self {
        let code = match &e {
            RecorderError::InvalidCode => ErrorCode::InvalidRegistrationCode,
            RecorderError::Csr(_) | RecorderError::BadField(_) => ErrorCode::MalformedRequest,
            RecorderError::NoCertificate | RecorderError::CertificateExpired => {
                ErrorCode::Unauthenticated
            }
            RecorderError::UnknownCertificate => ErrorCode::Forbidden,
            RecorderError::Revoked => ErrorCode::Revoked,
            RecorderError::AccountDisabled => ErrorCode::AccountDisabled,
            RecorderError::Conflict(_) => ErrorCode::Conflict,
            RecorderError::RateLimited(secs) => return ApiError::rate_limited(*secs),
            RecorderError::Store(_) | RecorderError::Ca(_) => {
                log::error!("request failed: {e}");
                return ApiError::new(ErrorCode::Internal, "internal error; try again later");
            }
        };
        ApiError::new(code, e.to_string())
    }
}

/// `Json<T>` whose rejections use the API's error shape: 400 for bad JSON or missing
/// fields, 413 for bodies over the limit.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match &rejection {
        JsonRejection::BytesRejection(_) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::too_large()
        }
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "send the body as JSON with Content-Type: application/json",
        ),
        JsonRejection::JsonDataError(e) => ApiError::new(
            ErrorCode::MalformedRequest,
            format!("invalid request: {}", e.body_text()),
        ),
        JsonRejection::JsonSyntaxError(e) => ApiError::new(
            ErrorCode::MalformedRequest,
            format!("malformed JSON: {}", e.body_text()),
        ),
        _ => ApiError::new(ErrorCode::MalformedRequest, rejection.body_text()),
    }
}

/// Reads the request body in whole, up to [`MAX_BODY_BYTES`], before routing, so that
/// every answer (404 and 405 included) goes out after the client finished sending and
/// HTTP/2 ends the stream cleanly. A body over the limit is answered 413: over HTTP/1 at
/// once (the connection's lingering close drains the rest); over HTTP/2 after the rest
/// was read and discarded, up to [`DISCARD_BYTES`], because many clients treat a stream
/// reset during their upload as a failure even when the answer already came.
async fn read_body(req: Request, next: Next) -> Response {
    let (parts, mut body) = req.into_parts();
    let http2 = parts.version == axum::http::Version::HTTP_2;
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let over = |len: u64| len > MAX_BODY_BYTES as u64;
    if declared.is_some_and(over) && (!http2 || declared.is_some_and(|l| l > DISCARD_BYTES)) {
        return hold_until_sent(ApiError::too_large().into_response(), body);
    }
    let mut bytes = Vec::new();
    let mut total = 0u64;
    let started = std::time::Instant::now();
    loop {
        // No timer here (it would cost one per request): a body that trickles in is cut
        // off with its connection at request_timeout_secs (see connection.rs).
        let frame = match body.frame().await {
            Some(frame) => frame,
            None => break,
        };
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    total += data.len() as u64;
                    if !over(total) {
                        bytes.extend_from_slice(&data);
                    } else if !http2 || total > DISCARD_BYTES || started.elapsed() > DISCARD_TIME {
                        return hold_until_sent(ApiError::too_large().into_response(), body);
                    } else {
                        bytes = Vec::new();
                    }
                }
            }
            Err(e) => {
                return ApiError::new(
                    ErrorCode::MalformedRequest,
                    format!("the request body could not be read: {e}"),
                )
                .into_response()
            }
        }
    }
    if over(total) {
        return ApiError::too_large().into_response();
    }
    next.run(Request::from_parts(parts, Body::from(Bytes::from(bytes))))
        .await
}

/// How long a refused request's body is read and discarded before the answer goes out.
const REFUSED_BODY_TIME: std::time::Duration = std::time::Duration::from_secs(1);

/// Reads and drops what is left of a request body (up to [`MAX_BODY_BYTES`], for
/// [`REFUSED_BODY_TIME`] at most) before sending `response`: an HTTP/2 stream answered while
/// its upload goes on is reset, which clients report as a failure instead of the answer.
/// Past either bound the rest is held until the answer is sent.
async fn discard_body_then(mut body: Body, response: Response) -> Response {
    let drained = tokio::time::timeout(REFUSED_BODY_TIME, async {
        let mut total = 0usize;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => {
                    total += frame.data_ref().map_or(0, |d| d.len());
                    if total > MAX_BODY_BYTES {
                        return false;
                    }
                }
                Err(_) => return true,
            }
        }
        true
    })
    .await;
    if drained == Ok(true) {
        response
    } else {
        hold_until_sent(response, body)
    }
}

/// How much of an oversized HTTP/2 body is read and discarded before the 413, and for how
/// long at most; past either, the answer goes out and the stream is reset.
const DISCARD_BYTES: u64 = 16 << 20;
const DISCARD_TIME: std::time::Duration = std::time::Duration::from_secs(10);

/// Keeps the unread rest of a request body alive until the response body is done.
fn hold_until_sent(response: Response, request_body: Body) -> Response {
    let (parts, body) = response.into_parts();
    Response::from_parts(
        parts,
        Body::new(HeldBody {
            inner: body,
            _held: request_body,
        }),
    )
}

struct HeldBody {
    inner: Body,
    _held: Body,
}

impl http_body::Body for HeldBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Gives every error answer that is not already in the one error shape (a 405 from the
/// router, say) that shape, keeping its status and headers (`Allow`, `Retry-After`).
async fn error_shape(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json {
        return response;
    }
    let (code, message) = match status {
        StatusCode::METHOD_NOT_ALLOWED => (
            ErrorCode::MethodNotAllowed,
            "this path does not take that method: the Allow header lists the ones it takes"
                .to_string(),
        ),
        StatusCode::NOT_FOUND => (
            ErrorCode::NotFound,
            "no such endpoint; the API lives under /api/v1".to_string(),
        ),
        StatusCode::PAYLOAD_TOO_LARGE => (
            ErrorCode::PayloadTooLarge,
            format!("request body is larger than {MAX_BODY_BYTES} bytes"),
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            ErrorCode::UnsupportedMediaType,
            "send the body as JSON with Content-Type: application/json".to_string(),
        ),
        StatusCode::TOO_MANY_REQUESTS => (
            ErrorCode::RateLimited,
            "too many requests; wait as Retry-After says".to_string(),
        ),
        s if s.is_server_error() => (
            ErrorCode::Internal,
            "internal error; try again later".to_string(),
        ),
        _ => (
            ErrorCode::MalformedRequest,
            format!(
                "the request was refused ({}): check its method, path, headers and body",
                status
            ),
        ),
    };
    let (mut parts, _) = response.into_parts();
    parts.status = status;
    let shaped = Json(ErrorBody::new(code, message)).into_response();
    let (shaped_parts, body) = shaped.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    for (name, value) in shaped_parts.headers.iter() {
        parts.headers.insert(name.clone(), value.clone());
    }
    Response::from_parts(parts, body)
}
