//! The admin API under `/api/v1/admin/`: accounts, codes, users, groups, API tokens,
//! recorders and the audit log, for the people who run partner and customer accounts.
//!
//! Every route that acts on something takes a [`Caller`], the one extractor that finds who
//! is calling (session cookie with its CSRF token, or bearer API token) and carries the
//! account tree; handlers then ask [`Caller::require`], which is [`crate::scope::authorize`]
//! and nothing else. Outside the caller's subtree and missing look the same: 404 with the
//! same body ([`not_found`]).
//!
//! The routes are registered through `utoipa-axum`, which takes each handler together
//! with its `#[utoipa::path]` description, so the OpenAPI document served at
//! `/api/v1/openapi.json` lists exactly the routes that exist.

pub mod accounts;
pub mod audit;
pub mod caller;
pub mod codes;
pub mod groups;
pub mod page;
pub mod recorders;
pub mod session;
pub mod tokens;
pub mod users;

use std::path::PathBuf;
use std::sync::Arc;

use axum::routing::get;
use axum::{Json, Router};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;

use crate::api::ApiError;
use crate::auth::LoginLimits;
use crate::config::AdminSection;
use crate::mail::Mailer;
use crate::store::Store;
use contera_protocol::ErrorCode;

pub use caller::Caller;

/// Where the OpenAPI document is served.
pub const OPENAPI_PATH: &str = "/api/v1/openapi.json";
/// The prefix of every admin route.
pub const PREFIX: &str = "/api/v1/admin";

/// What the admin handlers share.
pub struct AdminState {
    pub store: Arc<dyn Store>,
    pub config: AdminSection,
    pub mailer: Mailer,
    /// Put in front of links in mail (`[mail] public_base_url`).
    pub base_url: String,
    pub login_limits: LoginLimits,
    /// "Forgot password" requests per email and per address ([`LoginLimits::resets`]).
    pub reset_limits: LoginLimits,
    /// Holds `secrets/codes.key`, to show registration codes to those allowed.
    pub data_dir: PathBuf,
    /// The heartbeat facts in memory: forgotten here when an admin changes them, so the
    /// recorder's next heartbeat already sees the change.
    pub facts: Arc<crate::facts::Facts>,
}

pub type Shared = Arc<AdminState>;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Contera provisioning admin API",
        description = "Accounts, registration codes, users, groups, API tokens, recorders and \
            the audit log. Authenticate with the session cookie from `POST /session/login` \
            (and send its CSRF token in `X-CSRF-Token` on every state-changing request) or \
            with `Authorization: Bearer contera_…` from `POST /tokens`. Lists are paged: pass \
            the `next_cursor` of one page as `cursor` to get the next.",
        license(name = "Apache-2.0"),
    ),
    modifiers(&SecuritySchemes),
    tags(
        (name = "session", description = "Logging in and out, password resets, invitations"),
        (name = "accounts", description = "The account tree"),
        (name = "codes", description = "Registration codes"),
        (name = "users", description = "Users of an account"),
        (name = "groups", description = "Groups of permissions"),
        (name = "tokens", description = "Bearer API tokens of the calling user"),
        (name = "recorders", description = "Enrolled recorders"),
        (name = "audit", description = "The audit log"),
    )
)]
struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(
                crate::auth::SESSION_COOKIE,
            ))),
        );
        components.add_security_scheme(
            "token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

fn routes() -> OpenApiRouter<Shared> {
    let admin = OpenApiRouter::new()
        .merge(session::routes())
        .merge(tokens::routes())
        .merge(audit::routes())
        .merge(recorders::routes())
        .merge(accounts::routes())
        .merge(codes::routes())
        .merge(users::routes())
        .merge(groups::routes());
    OpenApiRouter::with_openapi(ApiDoc::openapi()).nest(PREFIX, admin)
}

/// The OpenAPI 3.1 document of the admin API, generated from the handlers.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes().into_openapi()
}

/// Every admin route, plus the OpenAPI document at [`OPENAPI_PATH`].
pub fn router(state: Shared) -> Router {
    let (router, api) = routes().split_for_parts();
    let doc = Arc::new(api);
    router
        .route(
            OPENAPI_PATH,
            get(move || {
                let doc = doc.clone();
                async move { Json(doc.as_ref().clone()) }
            }),
        )
        .with_state(state)
}

/// The one answer for anything the caller cannot see: unknown and outside their subtree
/// are the same, byte for byte.
pub fn not_found() -> ApiError {
    ApiError::new(
        ErrorCode::NotFound,
        "not found: nothing with this id is in your accounts",
    )
}

/// A refused request the caller can fix: 400 naming what was wrong.
pub fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::MalformedRequest, message)
}

/// The current time in Unix seconds.
pub fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// The error shape every API answer uses, as documented: `{"error": {"code", "message"}}`
/// (the protocol crate's `ErrorBody`, which the agent shares and so carries no schema).
#[derive(utoipa::ToSchema)]
#[schema(as = Error)]
#[allow(dead_code)]
pub struct ErrorDoc {
    error: ErrorDetailDoc,
}

#[derive(utoipa::ToSchema)]
#[schema(as = ErrorDetail)]
#[allow(dead_code)]
struct ErrorDetailDoc {
    /// A stable snake_case code, e.g. `not_found`, `forbidden`, `rate_limited`.
    code: String,
    /// What went wrong and what to do, for people.
    message: String,
}
