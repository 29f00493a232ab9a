//! Registration codes: an account's codes with their limits and uses, new codes, rotation,
//! showing a code again (audited), changing limits and disabling.
//!
//! A code's whole text is in an answer only where the caller asked for it: when it is made
//! (create, rotate, a new account) or shown (`GET /codes/{public_id}`, audited as
//! `code.shown`). Those answers carry `Cache-Control: no-store`. Lists never hold it.

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::accounts::account_error;
use super::page::{paginate, ApiPath, ApiQuery, Page, PageQuery};
use super::ErrorDoc;
use super::{not_found, now, Caller, Shared};
use crate::accounts::{self, AccountError, CodeLimits, CodeState, CodeUpdate};
use crate::api::{ApiError, ApiJson};
use crate::permissions::Permission;
use crate::secrets::CodeKey;
use crate::store::CodeInfo;
use contera_protocol::{ErrorCode, RegistrationCode};

pub fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(rotate))
        .routes(routes!(show, update))
        .routes(routes!(disable))
}

/// A registration code without the code itself: its label, limits, uses and state.
#[derive(Debug, Serialize, ToSchema)]
pub struct CodeView {
    /// The code's first four characters, which name it without giving it away.
    pub public_id: String,
    pub account_id: String,
    pub label: String,
    /// Whether it still enrolls: `active`, or why not.
    pub state: CodeState,
    pub created_at: i64,
    /// Who made it, as the audit actor with the address it came from
    /// (`user:<id>@192.0.2.7`, `cli:root`, …); empty for codes from before this was kept.
    pub created_by: String,
    /// When it stops enrolling (Unix seconds); none for never.
    pub expires_at: Option<i64>,
    /// How many enrollments it allows in all; none for no limit.
    pub max_uses: Option<i64>,
    /// Enrollments made with it so far.
    pub uses: i64,
    pub disabled_at: Option<i64>,
    pub last_used_at: Option<i64>,
    /// The recorder that enrolled with it last.
    pub last_used_recorder: Option<String>,
    /// False for codes made before codes were kept sealed: only rotating gives a code that
    /// can be shown.
    pub can_be_shown: bool,
}

impl CodeView {
    pub fn new(code: &CodeInfo, now: i64) -> CodeView {
        CodeView {
            public_id: code.public_id.clone(),
            account_id: code.account_id.clone(),
            label: code.label.clone(),
            state: CodeState::of(code, now),
            created_at: code.created_at,
            created_by: code.created_by.clone(),
            expires_at: code.expires_at,
            max_uses: code.max_uses,
            uses: code.uses,
            disabled_at: code.disabled_at,
            last_used_at: code.last_used_at,
            last_used_recorder: code.last_used_recorder.clone(),
            can_be_shown: code.sealed.is_some(),
        }
    }
}

/// A registration code with the whole code, for the one who made it or asked to see it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ShownCode {
    #[serde(flatten)]
    pub info: CodeView,
    /// The whole code, as an installer types it, e.g. `K7QD-…`.
    pub registration_code: String,
}

impl ShownCode {
    pub fn new(info: &CodeInfo, code: &RegistrationCode) -> ShownCode {
        ShownCode {
            info: CodeView::new(info, now()),
            registration_code: code.to_string(),
        }
    }
}

/// A JSON answer holding a whole code: no cache may keep it.
pub(super) fn no_store(status: StatusCode, body: impl Serialize) -> Response {
    let mut response = (status, Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The key that seals codes (`secrets/codes.key` in the data directory), loaded as the CLI
/// loads it: created when missing only while no sealed code exists.
pub(super) async fn code_key(state: &Shared) -> Result<CodeKey, ApiError> {
    let sealed = state.store.sealed_codes_exist().await?;
    let dir = state.data_dir.clone();
    tokio::task::spawn_blocking(move || CodeKey::load_or_create(&dir, sealed))
        .await
        .map_err(|e| {
            log::error!("loading the registration code key failed: {e}");
            ApiError::new(ErrorCode::Internal, "internal error; try again later")
        })?
        .map_err(|e| account_error(AccountError::Secrets(e)))
}

/// For an `Option<Option<T>>` field marked `#[serde(default)]`: absent is `None` (leave it
/// as it is), `null` is `Some(None)` (clear it).
pub(super) fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// A code by its public id, wherever the caller may see it: an unknown code and one of an
/// account outside the caller's subtree get the same 404; inside it, `permission` is needed.
async fn visible_code(
    state: &Shared,
    caller: &Caller,
    public_id: &str,
    permission: Permission,
) -> Result<CodeInfo, ApiError> {
    let public_id = public_id.trim().to_ascii_uppercase();
    let info = state
        .store
        .code_info(&public_id)
        .await?
        .ok_or_else(not_found)?;
    caller.require(&info.account_id, permission)?;
    Ok(info)
}

/// The account's registration codes, newest first, without the codes themselves. Needs
/// `codes.view`.
#[utoipa::path(
    get, path = "/accounts/{id}/codes", tag = "codes", operation_id = "list_account_codes",
    params(("id" = String, Path, description = "The account's id"), PageQuery),
    responses(
        (status = 200, body = Page<CodeView>),
        (status = 403, body = ErrorDoc),
        (status = 404, body = ErrorDoc),
    ),
    security(("session" = []), ("token" = []))
)]
async fn list(
    State(state): State<Shared>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Result<Json<Page<CodeView>>, ApiError> {
    caller.require(&id, Permission::CodesView)?;
    let codes = accounts::list_codes(&state.store, &id)
        .await
        .map_err(account_error)?;
    let now = now();
    Ok(Json(paginate(
        codes.iter().map(|c| CodeView::new(c, now)).collect(),
        // Newest first: the negated creation time, then the public id.
        |c| format!("{:020}/{}", i64::MAX - c.created_at, c.public_id),
        &page,
    )?))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCodeRequest {
    /// What the code is for, e.g. the installer or site it goes to (at most 100 characters).
    pub label: Option<String>,
    /// When it stops enrolling (Unix seconds, in the future); none for never.
    pub expires_at: Option<i64>,
    /// How many enrollments it allows in all (at least 1); none for no limit.
    pub max_uses: Option<i64>,
}

/// Adds a registration code to the account, next to its other codes (which keep working).
/// The answer holds the whole code. Needs `codes.manage`.
#[utoipa::path(
    post, path = "/accounts/{id}/codes", tag = "codes", operation_id = "create_account_code",
    params(("id" = String, Path, description = "The account's id")),
    request_body = NewCodeRequest,
    responses(
        (status = 201, body = ShownCode),
        (status = 400, body = ErrorDoc),
        (status = 403, body = ErrorDoc),
        (status = 404, body = ErrorDoc),
    ),
    security(("session" = []), ("token" = []))
)]
async fn create(
    State(state): State<Shared>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<NewCodeRequest>,
) -> Result<Response, ApiError> {
    caller.require(&id, Permission::CodesManage)?;
    let key = code_key(&state).await?;
    let limits = CodeLimits {
        label: req.label.as_deref().unwrap_or(""),
        expires_at: req.expires_at,
        max_uses: req.max_uses,
    };
    let code = accounts::create_code(&state.store, &key, &id, &limits, &caller.actor())
        .await
        .map_err(account_error)?;
    shown(&state, &code, StatusCode::CREATED).await
}

/// A code just made, with its stored information.
async fn shown(
    state: &Shared,
    code: &RegistrationCode,
    status: StatusCode,
) -> Result<Response, ApiError> {
    let info = state
        .store
        .code_info(&code.public_id())
        .await?
        .ok_or_else(not_found)?;
    Ok(no_store(status, ShownCode::new(&info, code)))
}

/// Disables every active code of the account and makes one new code, at once: the old
/// codes stop enrolling with this. The answer holds the new code. Needs `codes.manage`.
#[utoipa::path(
    post, path = "/accounts/{id}/codes/rotate", tag = "codes", operation_id = "rotate_account_codes",
    params(("id" = String, Path, description = "The account's id")),
    responses(
        (status = 201, body = ShownCode),
        (status = 403, body = ErrorDoc),
        (status = 404, body = ErrorDoc),
    ),
    security(("session" = []), ("token" = []))
)]
async fn rotate(
    State(state): State<Shared>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    caller.require(&id, Permission::CodesManage)?;
    let key = code_key(&state).await?;
    let code = accounts::rotate_code(&state.store, &key, &id, &caller.actor())
        .await
        .map_err(account_error)?;
    shown(&state, &code, StatusCode::CREATED).await
}

/// One code with the whole code, decrypted with the server's code key; audited as
/// `code.shown` (without the code). Needs `codes.view` on the code's account.
#[utoipa::path(
    get, path = "/codes/{public_id}", tag = "codes", operation_id = "show_code",
    params(("public_id" = String, Path, description = "The code's first four characters")),
    responses(
        (status = 200, body = ShownCode),
        (status = 403, body = ErrorDoc),
        (status = 404, body = ErrorDoc),
        (status = 409, description = "A code from before codes were kept: rotate to get one", body = ErrorDoc),
    ),
    security(("session" = []), ("token" = []))
)]
async fn show(
    State(state): State<Shared>,
    caller: Caller,
    ApiPath(public_id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let info = visible_code(&state, &caller, &public_id, Permission::CodesView).await?;
    let key = code_key(&state).await?;
    let (info, code) = accounts::show_code(&state.store, &key, &info.public_id, &caller.actor())
        .await
        .map_err(account_error)?;
    Ok(no_store(StatusCode::OK, ShownCode::new(&info, &code)))
}

/// The fields to change; a field left out stays as it is.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CodeChanges {
    /// At most 100 characters on one line.
    pub label: Option<String>,
    /// A Unix time in the future, or null for no expiry.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>)]
    pub expires_at: Option<Option<i64>>,
    /// At least 1, or null for no limit. A limit at or below the uses so far makes the code
    /// used up.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>)]
    pub max_uses: Option<Option<i64>>,
}

/// Changes a code's label, expiry or use limit; it holds from the next enrollment attempt
/// on. Audited as `code.updated` with the old and new values. Needs `codes.manage`.
#[utoipa::path(
    patch, path = "/codes/{public_id}", tag = "codes", operation_id = "update_code",
    params(("public_id" = String, Path, description = "The code's first four characters")),
    request_body = CodeChanges,
    responses(
        (status = 200, body = CodeView),
        (status = 400, body = ErrorDoc),
        (status = 403, body = ErrorDoc),
        (status = 404, body = ErrorDoc),
    ),
    security(("session" = []), ("token" = []))
)]
async fn update(
    State(state): State<Shared>,
    caller: Caller,
    ApiPath(public_id): ApiPath<String>,
    ApiJson(changes): ApiJson<CodeChanges>,
) -> Result<Json<CodeView>, ApiError> {
    let info = visible_code(&state, &caller, &public_id, Permission::CodesManage).await?;
    let update = CodeUpdate {
        label: changes.label,
        expires_at: changes.expires_at,
        max_uses: changes.max_uses,
    };
    let info = accounts::update_code(&state.store, &info.public_id, &update, &caller.actor())
        .await
        .map_err(account_error)?;
    Ok(Json(CodeView::new(&info, now())))
}

/// Disables one code from the next enrollment attempt on (the account's other codes keep
/// working); disabling a disabled code changes nothing. Needs `codes.manage`.
#[utoipa::path(
    post, path = "/codes/{public_id}/disable", tag = "codes", operation_id = "disable_code",
    params(("public_id" = String, Path, description = "The code's first four characters")),
    responses(
        (status = 200, body = CodeView),
        (status = 403, body = ErrorDoc),
        (status = 404, body = ErrorDoc),
    ),
    security(("session" = []), ("token" = []))
)]
async fn disable(
    State(state): State<Shared>,
    caller: Caller,
    ApiPath(public_id): ApiPath<String>,
) -> Result<Json<CodeView>, ApiError> {
    let info = visible_code(&state, &caller, &public_id, Permission::CodesManage).await?;
    accounts::disable_code(&state.store, &info.public_id, &caller.actor())
        .await
        .map_err(account_error)?;
    let info = state
        .store
        .code_info(&info.public_id)
        .await?
        .ok_or_else(not_found)?;
    Ok(Json(CodeView::new(&info, now())))
}
