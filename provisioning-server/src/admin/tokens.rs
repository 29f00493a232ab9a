//! Bearer API tokens of the calling user: shown once, stored hashed, holding a subset of
//! the user's permissions, optionally expiring, revocable, with when they were last used.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::page::{paginate, ApiPath, ApiQuery, Page, PageQuery};
use super::ErrorDoc;
use super::{bad_request, not_found, Caller, Shared};
use crate::api::{ApiError, ApiJson};
use crate::auth;
use crate::permissions::{Permission, PermissionSet};
use crate::store::ApiToken;
use contera_protocol::ErrorCode;

/// Longest token name, in characters.
const MAX_NAME_CHARS: usize = 200;

pub fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(revoke))
}

/// The caller's tokens, newest first (revoked ones too, marked).
#[utoipa::path(
    get, path = "/tokens", tag = "tokens", operation_id = "list_tokens", params(PageQuery),
    responses(
        (status = 200, body = Page<ApiToken>),
        (status = 401, body = ErrorDoc),
        (status = 403, description = "Called with an API token: tokens are managed from a session", body = ErrorDoc),
    ),
    security(("session" = []))
)]
async fn list(
    State(state): State<Shared>,
    caller: Caller,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Result<Json<Page<ApiToken>>, ApiError> {
    caller.require_session()?;
    let tokens = state.store.api_tokens(&caller.user.id).await?;
    // Newest first: sort on the negated creation time, then the id.
    Ok(Json(paginate(
        tokens,
        |t| format!("{:020}/{}", i64::MAX - t.created_at, t.id),
        &page,
    )?))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct NewTokenRequest {
    /// What the token is for, e.g. "inventory script".
    pub name: String,
    /// A subset of the caller's own permissions.
    pub permissions: Vec<Permission>,
    /// When the token stops working (Unix seconds); none for no expiry.
    pub expires_at: Option<i64>,
}

/// A token just made. `secret` is shown only now: use it as `Authorization: Bearer …`.
#[derive(Debug, Serialize, ToSchema)]
pub struct NewTokenResponse {
    pub token: ApiToken,
    pub secret: String,
}

/// Makes a token for the caller holding some of their permissions.
#[utoipa::path(
    post, path = "/tokens", tag = "tokens", operation_id = "create_token", request_body = NewTokenRequest,
    responses(
        (status = 201, body = NewTokenResponse),
        (status = 400, body = ErrorDoc),
        (status = 401, body = ErrorDoc),
        (status = 403, description = "A permission the caller does not hold, or called with an API token", body = ErrorDoc),
    ),
    security(("session" = []))
)]
async fn create(
    State(state): State<Shared>,
    caller: Caller,
    ApiJson(req): ApiJson<NewTokenRequest>,
) -> Result<(StatusCode, Json<NewTokenResponse>), ApiError> {
    caller.require_session()?;
    let name = req.name.trim();
    if name.is_empty()
        || name.chars().count() > MAX_NAME_CHARS
        || name.chars().any(char::is_control)
    {
        return Err(bad_request(format!(
            "name: give the token a name of 1 to {MAX_NAME_CHARS} characters on one line"
        )));
    }
    let permissions: PermissionSet = req.permissions.iter().copied().collect();
    if permissions.is_empty() {
        return Err(bad_request(
            "permissions: list at least one, e.g. [\"recorders.view\"]",
        ));
    }
    if !permissions.is_subset(&caller.permissions()) {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "a token can hold only permissions you hold yourself",
        ));
    }
    if req.expires_at.is_some_and(|at| at <= super::now()) {
        return Err(bad_request(
            "expires_at is in the past: give a Unix time in the future, or leave it out",
        ));
    }
    let made = auth::create_token(
        &state.store,
        &caller.user,
        name,
        permissions,
        req.expires_at,
        &caller.actor(),
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(NewTokenResponse {
            token: made.token,
            secret: made.secret,
        }),
    ))
}

/// Revokes one of the caller's tokens; it stops working at once.
#[utoipa::path(
    delete, path = "/tokens/{id}", tag = "tokens", operation_id = "revoke_token",
    params(("id" = String, Path, description = "The token's id")),
    responses(
        (status = 204),
        (status = 401, body = ErrorDoc),
        (status = 403, description = "Called with an API token: tokens are managed from a session", body = ErrorDoc),
        (status = 404, body = ErrorDoc),
    ),
    security(("session" = []))
)]
async fn revoke(
    State(state): State<Shared>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    caller.require_session()?;
    let token = state
        .store
        .api_token(&id)
        .await?
        .filter(|t| t.user_id == caller.user.id)
        .ok_or_else(not_found)?;
    state
        .store
        .revoke_api_token(&token.id, super::now(), &caller.actor())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
