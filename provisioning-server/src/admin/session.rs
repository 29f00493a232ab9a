//! Logging in and out, who am I, forgotten passwords, and accepting an invitation.

use axum::extract::State;
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::caller::{self, Credential};
use super::ErrorDoc;
use super::{Caller, Shared};
use crate::api::{ApiError, ApiJson};
use crate::auth::{self, LoggedIn};
use crate::mail;
use crate::permissions::PermissionSet;
use crate::store::{Account, User};
use crate::users::{self, AcceptRequest};

pub fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new()
        .routes(routes!(login))
        .routes(routes!(logout))
        .routes(routes!(me))
        .routes(routes!(forgot))
        .routes(routes!(reset))
        .routes(routes!(accept))
        .routes(routes!(terms))
        .routes(routes!(change_password))
}

/// Request extensions as a `Parts`-like view: the handlers below need the peer address.
pub struct Source(pub std::net::IpAddr);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Source {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Ok(Source(caller::source(parts)))
    }
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct LoginRequest {
    pub email: String,
    pub password: String,
}

/// A new session. The cookie comes in `Set-Cookie`; send `csrf_token` as `X-CSRF-Token`
/// with every state-changing request.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionStarted {
    pub user: User,
    pub csrf_token: String,
    /// When the session ends at the latest (Unix seconds); it ends earlier when idle.
    pub expires_at: i64,
}

fn session_cookie(token: &str, max_age: i64) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{}={token}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age={max_age}",
        auth::SESSION_COOKIE
    ))
    .expect("hex token and fixed text make a valid header")
}

fn started(logged_in: LoggedIn) -> Response {
    let max_age = (logged_in.expires_at - super::now()).max(0);
    let mut response = Json(SessionStarted {
        user: logged_in.user,
        csrf_token: logged_in.csrf_token,
        expires_at: logged_in.expires_at,
    })
    .into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        session_cookie(&logged_in.token, max_age),
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Logs in with email and password. A wrong password and an unknown email get the same
/// answer in the same time; 10 failures per email in 15 minutes or 100 per address in an
/// hour are answered 429 with `Retry-After`.
#[utoipa::path(
    post, path = "/session/login", tag = "session", operation_id = "login", request_body = LoginRequest,
    responses(
        (status = 200, description = "Logged in; the session cookie is set", body = SessionStarted),
        (status = 401, description = "Wrong email or password", body = ErrorDoc),
        (status = 429, description = "Too many failed logins", body = ErrorDoc),
    )
)]
async fn login(
    State(state): State<Shared>,
    Source(source): Source,
    ApiJson(req): ApiJson<LoginRequest>,
) -> Result<Response, ApiError> {
    let logged_in = auth::login(
        &state.store,
        &state.config,
        &state.login_limits,
        &req.email,
        &req.password,
        source,
    )
    .await?;
    Ok(started(logged_in))
}

/// Ends the calling session (or nothing, for an API token) and clears the cookie.
#[utoipa::path(
    post, path = "/session/logout", tag = "session", operation_id = "logout",
    responses((status = 204, description = "Logged out")),
    security(("session" = []), ("token" = []))
)]
async fn logout(State(state): State<Shared>, caller: Caller) -> Result<Response, ApiError> {
    if let Credential::Session { token } = &caller.credential {
        state
            .store
            .end_session(&auth::secret_hash(token), super::now(), &caller.actor())
            .await?;
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, session_cookie("", 0));
    Ok(response)
}

/// Who is calling: the user, their account, what they may do, and (for a session) the
/// CSRF token to send with changes.
#[derive(Debug, Serialize, ToSchema)]
pub struct Me {
    pub user: User,
    pub account: Account,
    pub permissions: PermissionSet,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub csrf_token: Option<String>,
}

#[utoipa::path(
    get, path = "/session", tag = "session", operation_id = "get_session",
    responses(
        (status = 200, body = Me),
        (status = 401, description = "Not logged in", body = ErrorDoc),
    ),
    security(("session" = []), ("token" = []))
)]
async fn me(caller: Caller) -> Result<Json<Me>, ApiError> {
    let account = caller.account(&caller.user.account_id)?.clone();
    let csrf_token = match &caller.credential {
        Credential::Session { token } => Some(auth::csrf_token(token)),
        Credential::Token { .. } => None,
    };
    Ok(Json(Me {
        permissions: caller.permissions(),
        user: caller.user,
        account,
        csrf_token,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ForgotRequest {
    pub email: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Accepted {
    pub message: String,
}

/// Sends a reset link to the email if it belongs to an active user. The answer is the
/// same, and as fast, either way: the link is made and mailed after answering.
#[utoipa::path(
    post, path = "/session/forgot", tag = "session", operation_id = "forgot_password", request_body = ForgotRequest,
    responses(
        (status = 202, description = "A link was sent if the email is known", body = Accepted),
        (status = 429, description = "Too many requests for this email or from this address", body = ErrorDoc),
    )
)]
async fn forgot(
    State(state): State<Shared>,
    Source(source): Source,
    ApiJson(req): ApiJson<ForgotRequest>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    if let Err(auth::AuthError::TooManyFailures { retry_after_secs }) =
        state.reset_limits.check(&req.email, source)
    {
        return Err(ApiError::new(
            contera_protocol::ErrorCode::RateLimited,
            format!(
                "too many password reset requests for this email or from this address; retry in {retry_after_secs} s"
            ),
        )
        .with_retry_after(retry_after_secs)
        .because("password_reset"));
    }
    state.reset_limits.fail(&req.email, source);
    tokio::spawn(async move {
        match auth::request_reset(&state.store, &req.email, source).await {
            Ok(Some((user, token))) => {
                let link = format!("{}/password/reset#token={token}", state.base_url);
                let sent = match mail::password_reset(&user.name, &user.email, &link) {
                    Ok(email) => state.mailer.send(&email).await.map(|_| ()),
                    Err(e) => Err(e),
                };
                if let Err(e) = sent {
                    log::warn!(
                        "could not send the password reset mail for user {}: {e}",
                        user.id
                    );
                }
            }
            Ok(None) => {}
            Err(e) => log::error!("password reset request failed: {e}"),
        }
    });
    Ok((
        StatusCode::ACCEPTED,
        Json(Accepted {
            message:
                "if this email belongs to a user, a link to choose a new password is on its way"
                    .into(),
        }),
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ResetRequest {
    /// The token from the reset link.
    pub token: String,
    /// The new password: 12 to 128 characters, not a common one.
    pub password: String,
}

/// Sets a new password with a reset link. Every session and API token of the user ends;
/// log in again with the new password.
#[utoipa::path(
    post, path = "/session/reset", tag = "session", operation_id = "reset_password", request_body = ResetRequest,
    responses(
        (status = 200, body = User),
        (status = 400, description = "The password does not meet the rules", body = ErrorDoc),
        (status = 404, description = "The link is used, replaced or expired", body = ErrorDoc),
    )
)]
async fn reset(
    State(state): State<Shared>,
    Source(source): Source,
    ApiJson(req): ApiJson<ResetRequest>,
) -> Result<Json<User>, ApiError> {
    Ok(Json(
        auth::reset_password(&state.store, &req.token, &req.password, source).await?,
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct AcceptInvitation {
    /// The token from the invitation link.
    pub token: String,
    /// 12 to 128 characters, not a common one, not the email or the name.
    pub password: String,
    /// "I confirm I am at least N years old" (N from `GET /terms`).
    pub age_confirmed: bool,
    /// The version of the terms of use accepted, as `GET /terms` gives it.
    pub terms_version: Option<String>,
}

/// Accepts an invitation: sets the password, records the age confirmation and the terms
/// version accepted, and logs the user in.
#[utoipa::path(
    post, path = "/invitations/accept", tag = "session", operation_id = "accept_invitation", request_body = AcceptInvitation,
    responses(
        (status = 200, description = "Active and logged in", body = SessionStarted),
        (status = 400, description = "Password rules, age or terms", body = ErrorDoc),
        (status = 404, description = "The link is used, replaced or expired", body = ErrorDoc),
    )
)]
async fn accept(
    State(state): State<Shared>,
    Source(source): Source,
    ApiJson(req): ApiJson<AcceptInvitation>,
) -> Result<Response, ApiError> {
    if let Some(v) = req.terms_version.as_deref() {
        if v.trim() != state.config.terms_version {
            return Err(super::bad_request(format!(
                "terms_version {v:?} is not the current version {:?}; read the terms at {} and accept that version",
                state.config.terms_version, state.config.terms_url
            )));
        }
    }
    let user = users::accept(
        &state.store,
        &AcceptRequest {
            token: &req.token,
            password: &req.password,
            age_confirmed: req.age_confirmed,
            terms_version: req.terms_version.as_deref(),
        },
    )
    .await?;
    let logged_in = auth::start_session(&state.store, &state.config, user, source).await?;
    Ok(started(logged_in))
}

/// What accepting an invitation asks for.
#[derive(Debug, Serialize, ToSchema)]
pub struct Terms {
    pub version: String,
    pub url: String,
    pub minimum_age: u32,
    pub password_min_chars: usize,
    pub password_max_chars: usize,
}

#[utoipa::path(get, path = "/terms", tag = "session", operation_id = "get_terms", responses((status = 200, body = Terms)))]
async fn terms(State(state): State<Shared>) -> Json<Terms> {
    Json(Terms {
        version: state.config.terms_version.clone(),
        url: state.config.terms_url.clone(),
        minimum_age: state.config.minimum_age,
        password_min_chars: crate::passwords::MIN_CHARS,
        password_max_chars: crate::passwords::MAX_CHARS,
    })
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct PasswordChange {
    pub current_password: String,
    /// 12 to 128 characters, not a common one, not the email or the name.
    pub new_password: String,
}

/// Changes the caller's password. Every session and API token of the user ends, this one
/// included; the answer starts a new session (cookie and CSRF token) for the caller.
#[utoipa::path(
    post, path = "/session/password", tag = "session", operation_id = "change_password", request_body = PasswordChange,
    responses(
        (status = 200, description = "Changed; a new session is set", body = SessionStarted),
        (status = 400, description = "The new password does not meet the rules", body = ErrorDoc),
        (status = 401, description = "The current password is wrong", body = ErrorDoc),
        (status = 403, description = "Called with an API token: log in", body = ErrorDoc),
        (status = 429, description = "Too many wrong passwords", body = ErrorDoc),
    ),
    security(("session" = []))
)]
async fn change_password(
    State(state): State<Shared>,
    caller: Caller,
    ApiJson(req): ApiJson<PasswordChange>,
) -> Result<Response, ApiError> {
    caller.require_session()?;
    auth::change_password(
        &state.store,
        &state.login_limits,
        &caller.user,
        &req.current_password,
        &req.new_password,
        caller.source,
    )
    .await?;
    let logged_in =
        auth::start_session(&state.store, &state.config, caller.user, caller.source).await?;
    Ok(started(logged_in))
}
