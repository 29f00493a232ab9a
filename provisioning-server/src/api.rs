//! The HTTP API: every route in [`router`], thin handlers, and the one error shape.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use contera_protocol::v1::{
    EnrollRequest, GoodbyeRequest, HeartbeatRequest, RenewRequest, ENROLL_PATH, GOODBYE_PATH,
    HEALTH_PATH, HEARTBEAT_PATH, MAX_BODY_BYTES, RENEW_PATH,
};
use contera_protocol::{ErrorBody, ErrorCode};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use rustls_pki_types::CertificateDer;
use serde::de::DeserializeOwned;

use crate::recorders::{RecorderError, Recorders};

/// The TLS client certificate of the connection a request came on, if any. The TLS layer
/// verified it chains to the device CA before the request got here.
#[derive(Clone, Debug, Default)]
pub struct ClientCert(pub Option<Arc<CertificateDer<'static>>>);

/// The TCP peer of the connection, for rate limiting.
#[derive(Clone, Copy, Debug)]
pub struct PeerAddr(pub SocketAddr);

pub struct AppState {
    pub recorders: Recorders,
    pub enroll_limiter: DefaultKeyedRateLimiter<IpAddr>,
}

impl AppState {
    pub fn new(recorders: Recorders, enroll_attempts_per_minute: u32) -> Self {
        let per_minute = NonZeroU32::new(enroll_attempts_per_minute).unwrap_or(NonZeroU32::MIN);
        AppState {
            recorders,
            enroll_limiter: RateLimiter::keyed(Quota::per_minute(per_minute)),
        }
    }
}

/// Every route the server has.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route(HEALTH_PATH, get(health))
        .route(ENROLL_PATH, post(enroll))
        .route(HEARTBEAT_PATH, post(heartbeat))
        .route(RENEW_PATH, post(renew))
        .route(GOODBYE_PATH, post(goodbye))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
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

async fn enroll(
    State(state): State<Arc<AppState>>,
    Extension(PeerAddr(peer)): Extension<PeerAddr>,
    ApiJson(req): ApiJson<EnrollRequest>,
) -> Result<Json<contera_protocol::v1::EnrollResponse>, ApiError> {
    if let Err(not_until) = state.enroll_limiter.check_key(&peer.ip()) {
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        return Err(ApiError::rate_limited(wait.as_secs().max(1)));
    }
    Ok(Json(state.recorders.enroll(req).await?))
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
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            retry_after_secs: None,
        }
    }

    fn rate_limited(secs: u64) -> Self {
        ApiError {
            retry_after_secs: Some(secs),
            ..ApiError::new(
                ErrorCode::RateLimited,
                format!("too many requests; retry in {secs} s"),
            )
        }
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
            ApiError::new(
                ErrorCode::PayloadTooLarge,
                format!("request body is larger than {MAX_BODY_BYTES} bytes"),
            )
        }
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            ErrorCode::MalformedRequest,
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
