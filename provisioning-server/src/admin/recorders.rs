//! Enrolled recorders of the caller's subtree: the paged list with its filters, one
//! recorder with its status and history, renaming, moving to another account, revoking,
//! and confirming a flagged replacement.
//!
//! Every route finds the recorder first and asks [`Caller::require`] about the account it
//! is in, so an id outside the caller's subtree gets the same 404 as an unknown one.

use std::collections::HashMap;

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::page::{encode, ApiPath, ApiQuery, Page, PageQuery};
use super::ErrorDoc;
use super::{bad_request, not_found, now, Caller, Shared};
use crate::api::{ApiError, ApiJson};
use crate::permissions::Permission;
use crate::store::{AuditEntry, AuditFilter, Recorder, RecorderQuery};
use contera_protocol::ErrorCode;

/// Longest recorder name, in characters.
const MAX_NAME_CHARS: usize = 200;
/// Longest search text `q`, in characters.
const MAX_QUERY_CHARS: usize = 200;
/// How many history entries one recorder shows.
const HISTORY_LIMIT: i64 = 100;

pub fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(show, rename))
        .routes(routes!(move_recorder))
        .routes(routes!(revoke))
        .routes(routes!(confirm_replacement))
}

/// A recorder as the admin API shows it. Times are Unix seconds.
#[derive(Debug, Serialize, ToSchema)]
pub struct RecorderView {
    pub id: String,
    /// What people call it; null until someone names it.
    pub name: Option<String>,
    pub account_id: String,
    pub account_name: String,
    pub serial: String,
    pub model: String,
    pub mac: Option<String>,
    pub firmware: Option<String>,
    pub agent_version: Option<String>,
    /// SHA-256 of the recorder's public key: its identity.
    pub key_fingerprint: String,
    pub enrolled_at: i64,
    /// Heartbeats arrived in time and it is not revoked.
    pub online: bool,
    /// Its last heartbeat.
    pub last_seen: Option<i64>,
    /// Online until then unless another heartbeat comes.
    pub online_until: Option<i64>,
    /// `shutdown` when its agent said goodbye; null while online or when heartbeats
    /// simply stopped.
    pub offline_reason: Option<String>,
    pub revoked_at: Option<i64>,
    /// Hex serial of its current certificate.
    pub cert_serial: Option<String>,
    /// When its current certificate expires (the agent renews it before).
    pub cert_not_after: Option<i64>,
    /// The recorder it was flagged at enrollment as a possible replacement of (a new key
    /// with an enrolled serial).
    pub replaces: Option<String>,
    /// `replaces` while that flag waits for an admin's confirmation; null otherwise.
    pub flagged_replacement_of: Option<String>,
    /// When an admin confirmed the replacement (which revoked the old recorder).
    pub replacement_confirmed_at: Option<i64>,
    /// What the recorder reported at its last heartbeat, as JSON; null before its first.
    pub status: Option<serde_json::Value>,
}

impl RecorderView {
    fn new(r: Recorder, account_name: &str, now: i64) -> RecorderView {
        let online = r.online(now);
        let status = r
            .status
            .map(|text| serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)));
        let flagged_replacement_of = r
            .replaces
            .clone()
            .filter(|_| r.replacement_confirmed_at.is_none());
        RecorderView {
            id: r.id,
            name: r.name,
            account_id: r.account_id,
            account_name: account_name.to_owned(),
            serial: r.serial,
            model: r.model,
            mac: r.mac,
            firmware: r.firmware,
            agent_version: r.agent_version,
            key_fingerprint: r.key_fingerprint,
            enrolled_at: r.enrolled_at,
            online,
            last_seen: r.last_seen,
            online_until: r.online_until,
            offline_reason: r.offline_reason,
            revoked_at: r.revoked_at,
            cert_serial: r.cert_serial,
            cert_not_after: r.cert_not_after,
            replaces: r.replaces,
            flagged_replacement_of,
            replacement_confirmed_at: r.replacement_confirmed_at,
            status,
        }
    }
}

/// One recorder with its history.
#[derive(Debug, Serialize, ToSchema)]
pub struct RecorderDetail {
    #[serde(flatten)]
    pub recorder: RecorderView,
    /// What happened to it (enrolled, moved, re-enrolled, certificates issued and renewed,
    /// renamed, revoked, …), newest first, at most 100 entries.
    pub history: Vec<AuditEntry>,
}

fn account_name<'a>(caller: &'a Caller, account_id: &str) -> &'a str {
    caller
        .accounts
        .iter()
        .find(|a| a.id == account_id)
        .map(|a| a.name.as_str())
        .unwrap_or("")
}

fn view(caller: &Caller, r: Recorder) -> RecorderView {
    let name = account_name(caller, &r.account_id).to_owned();
    RecorderView::new(r, &name, now())
}

/// The recorder `id` when the caller holds `permission` in its account; the 404 of an
/// unknown id when it is outside the caller's subtree.
async fn find(
    state: &Shared,
    caller: &Caller,
    id: &str,
    permission: Permission,
) -> Result<Recorder, ApiError> {
    let recorder = state.store.recorder(id).await?.ok_or_else(not_found)?;
    caller.require(&recorder.account_id, permission)?;
    Ok(recorder)
}

fn conflict(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::Conflict, message)
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RecorderListQuery {
    /// The account whose subtree to list (default: the caller's own account).
    pub account: Option<String>,
    /// Only that account's recorders, not its descendants'.
    #[serde(default)]
    pub only_account: bool,
    /// Only recorders online (true) or offline or revoked (false).
    pub online: Option<bool>,
    /// Only revoked recorders (true) or only those not revoked (false).
    pub revoked: Option<bool>,
    /// Only recorders whose name, serial, model or MAC contains this (ignoring the case
    /// of ASCII letters).
    pub q: Option<String>,
    /// Items per page, 1 to 500 (default 50).
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// Recorders of an account subtree, in id order. Needs `recorders.view` on the account.
#[utoipa::path(
    get, path = "/recorders", tag = "recorders", operation_id = "list_recorders",
    params(RecorderListQuery),
    responses(
        (status = 200, body = Page<RecorderView>),
        (status = 400, body = ErrorDoc),
        (status = 403, body = ErrorDoc),
        (status = 404, body = ErrorDoc),
    ),
    security(("session" = []), ("token" = []))
)]
async fn list(
    State(state): State<Shared>,
    caller: Caller,
    ApiQuery(q): ApiQuery<RecorderListQuery>,
) -> Result<Json<Page<RecorderView>>, ApiError> {
    let account = q
        .account
        .clone()
        .unwrap_or_else(|| caller.user.account_id.clone());
    caller.require(&account, Permission::RecordersView)?;
    let accounts: Vec<String> = if q.only_account {
        vec![account]
    } else {
        caller
            .accounts
            .iter()
            .filter(|a| caller.tree.is_within(&account, &a.id))
            .map(|a| a.id.clone())
            .collect()
    };
    let page = PageQuery {
        limit: q.limit,
        cursor: q.cursor.clone(),
    };
    let limit = page.limit()?;
    let text = q.q.as_deref().map(str::trim).filter(|t| !t.is_empty());
    if text.is_some_and(|t| t.chars().count() > MAX_QUERY_CHARS) {
        return Err(bad_request(format!(
            "q: search for at most {MAX_QUERY_CHARS} characters"
        )));
    }
    let now = now();
    let mut recorders = state
        .store
        .recorder_page(&RecorderQuery {
            accounts,
            online: q.online,
            revoked: q.revoked,
            text: text.map(str::to_owned),
            now,
            after_id: page.after()?,
            limit: limit as i64 + 1,
        })
        .await?;
    let next_cursor = if recorders.len() > limit {
        recorders.truncate(limit);
        recorders.last().map(|r| encode(&r.id))
    } else {
        None
    };
    let names: HashMap<&str, &str> = caller
        .accounts
        .iter()
        .map(|a| (a.id.as_str(), a.name.as_str()))
        .collect();
    let items = recorders
        .into_iter()
        .map(|r| {
            let name = names.get(r.account_id.as_str()).copied().unwrap_or("");
            RecorderView::new(r, name, now)
        })
        .collect();
    Ok(Json(Page { items, next_cursor }))
}

/// One recorder: its fields, the status it last reported, whether it is online, when its
/// certificate expires, and its history. Needs `recorders.view`.
#[utoipa::path(
    get, path = "/recorders/{id}", tag = "recorders", operation_id = "get_recorder",
    params(("id" = String, Path, description = "The recorder's id")),
    responses(
        (status = 200, body = RecorderDetail),
        (status = 403, body = ErrorDoc),
        (status = 404, body = ErrorDoc),
    ),
    security(("session" = []), ("token" = []))
)]
async fn show(
    State(state): State<Shared>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<RecorderDetail>, ApiError> {
    let recorder = find(&state, &caller, &id, Permission::RecordersView).await?;
    let history = state
        .store
        .audit_entries(&AuditFilter {
            recorder_id: Some(recorder.id.clone()),
            limit: HISTORY_LIMIT,
            ..AuditFilter::default()
        })
        .await?
        .into_iter()
        // A recorder enrolled with another tree's code before it came here: what was done
        // to it there, by whom and from where, is that tree's business.
        .filter(|e| e.account_id.as_deref().is_none_or(|a| caller.sees(a)))
        .collect();
    Ok(Json(RecorderDetail {
        recorder: view(&caller, recorder),
        history,
    }))
}

/// Accepts `"name": null` as Some(None), so that an absent name can be told apart.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct RenameRequest {
    /// 1 to 200 characters on one line; null removes the name.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, required = true)]
    pub name: Option<Option<String>>,
}

/// Names a recorder, or removes its name. Needs `recorders.manage`.
#[utoipa::path(
    patch, path = "/recorders/{id}", tag = "recorders", operation_id = "rename_recorder",
    params(("id" = String, Path, description = "The recorder's id")),
    request_body = RenameRequest,
    responses(
        (status = 200, body = RecorderView),
        (status = 400, body = ErrorDoc),
        (status = 403, body = ErrorDoc),
        (status = 404, body = ErrorDoc),
    ),
    security(("session" = []), ("token" = []))
)]
async fn rename(
    State(state): State<Shared>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<RenameRequest>,
) -> Result<Json<RecorderView>, ApiError> {
    let Some(name) = req.name else {
        return Err(bad_request(
            "name: give the recorder's new name, or null to remove it",
        ));
    };
    let name = name.as_deref().map(str::trim);
    if name.is_some_and(|n| {
        n.is_empty() || n.chars().count() > MAX_NAME_CHARS || n.chars().any(char::is_control)
    }) {
        return Err(bad_request(format!(
            "name: give 1 to {MAX_NAME_CHARS} characters on one line, or null to remove it"
        )));
    }
    let recorder = find(&state, &caller, &id, Permission::RecordersManage).await?;
    let renamed = state
        .store
        .rename_recorder(&recorder.id, name, now(), &caller.actor())
        .await?;
    Ok(Json(view(&caller, renamed)))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct MoveRequest {
    /// The account to move the recorder to, in the caller's subtree.
    pub account_id: String,
}

/// Moves a recorder to another account of the caller's subtree. It keeps its key and
/// certificate; its next heartbeat counts for the new account. Needs `recorders.manage`
/// on both accounts.
#[utoipa::path(
    post, path = "/recorders/{id}/move", tag = "recorders", operation_id = "move_recorder",
    params(("id" = String, Path, description = "The recorder's id")),
    request_body = MoveRequest,
    responses(
        (status = 200, body = RecorderView),
        (status = 403, body = ErrorDoc),
        (status = 404, description = "Unknown recorder or account, or outside your accounts", body = ErrorDoc),
        (status = 409, description = "Revoked, already there, or the account is disabled", body = ErrorDoc),
    ),
    security(("session" = []), ("token" = []))
)]
async fn move_recorder(
    State(state): State<Shared>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<MoveRequest>,
) -> Result<Json<RecorderView>, ApiError> {
    let recorder = find(&state, &caller, &id, Permission::RecordersManage).await?;
    caller.require(&req.account_id, Permission::RecordersManage)?;
    let moved = state
        .store
        .move_recorder(
            &recorder.id,
            &recorder.account_id,
            &req.account_id,
            now(),
            &caller.actor(),
        )
        .await?;
    state.facts.forget_recorder(&recorder.id);
    Ok(Json(view(&caller, moved)))
}

/// Revokes a recorder: its certificate stops working and its next heartbeat is refused.
/// The device can only enroll again, with a new key. Needs `recorders.manage`.
#[utoipa::path(
    post, path = "/recorders/{id}/revoke", tag = "recorders", operation_id = "revoke_recorder",
    params(("id" = String, Path, description = "The recorder's id")),
    responses(
        (status = 200, body = RecorderView),
        (status = 403, body = ErrorDoc),
        (status = 404, body = ErrorDoc),
        (status = 409, description = "Revoked already", body = ErrorDoc),
    ),
    security(("session" = []), ("token" = []))
)]
async fn revoke(
    State(state): State<Shared>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<RecorderView>, ApiError> {
    let recorder = find(&state, &caller, &id, Permission::RecordersManage).await?;
    if !state
        .store
        .revoke_recorder(&recorder.id, now(), &caller.actor())
        .await?
    {
        return Err(conflict("this recorder is revoked already; nothing to do"));
    }
    state.facts.forget_recorder(&recorder.id);
    let revoked = state
        .store
        .recorder(&recorder.id)
        .await?
        .ok_or_else(not_found)?;
    Ok(Json(view(&caller, revoked)))
}

/// Confirms that a recorder flagged as a possible replacement (a new key that came with
/// the serial of an enrolled recorder) does replace that one: the old recorder is revoked.
/// Needs `recorders.manage` on both.
#[utoipa::path(
    post, path = "/recorders/{id}/confirm-replacement", tag = "recorders",
    operation_id = "confirm_recorder_replacement",
    params(("id" = String, Path, description = "The id of the new, flagged recorder")),
    responses(
        (status = 200, body = RecorderView),
        (status = 403, body = ErrorDoc),
        (status = 404, body = ErrorDoc),
        (status = 409, description = "Not flagged, confirmed already, or revoked", body = ErrorDoc),
    ),
    security(("session" = []), ("token" = []))
)]
async fn confirm_replacement(
    State(state): State<Shared>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<RecorderView>, ApiError> {
    let recorder = find(&state, &caller, &id, Permission::RecordersManage).await?;
    let Some(old_id) = recorder.replaces.as_deref() else {
        return Err(conflict(
            "this recorder is not flagged as a possible replacement (a new key with the serial \
             of an enrolled recorder); nothing to confirm",
        ));
    };
    let old = find(&state, &caller, old_id, Permission::RecordersManage).await?;
    let confirmed = state
        .store
        .confirm_replacement(&recorder.id, &old.id, now(), &caller.actor())
        .await?;
    state.facts.forget_recorder(&old.id);
    state.facts.forget_recorder(&recorder.id);
    Ok(Json(view(&caller, confirmed)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorder() -> Recorder {
        Recorder {
            id: "r1".into(),
            account_id: "a1".into(),
            key_fingerprint: "fp".into(),
            serial: "S1".into(),
            mac: None,
            model: "M".into(),
            firmware: None,
            agent_version: None,
            replaces: Some("r0".into()),
            enrolled_at: 1,
            cert_serial: None,
            cert_not_after: Some(1000),
            last_seen: Some(90),
            online_until: Some(120),
            status: Some(r#"{"uptime_secs":5}"#.into()),
            revoked_at: None,
            offline_reason: None,
            name: None,
            replacement_confirmed_at: None,
        }
    }

    #[test]
    fn the_view_parses_the_status_and_flags_only_unconfirmed_replacements() {
        let v = RecorderView::new(recorder(), "Store", 100);
        assert!(v.online);
        assert_eq!(v.status, Some(serde_json::json!({"uptime_secs": 5})));
        assert_eq!(v.flagged_replacement_of.as_deref(), Some("r0"));

        let mut confirmed = recorder();
        confirmed.replacement_confirmed_at = Some(50);
        confirmed.status = Some("not json".into());
        let v = RecorderView::new(confirmed, "Store", 200);
        assert!(!v.online);
        assert_eq!(v.flagged_replacement_of, None);
        assert_eq!(v.replaces.as_deref(), Some("r0"));
        assert_eq!(v.status, Some(serde_json::json!("not json")));
    }

    #[test]
    fn every_recorder_route_is_in_the_openapi_document_with_its_own_operation_id() {
        let doc = serde_json::to_value(super::super::openapi()).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        for (path, method, id) in [
            ("/api/v1/admin/recorders", "get", "list_recorders"),
            ("/api/v1/admin/recorders/{id}", "get", "get_recorder"),
            ("/api/v1/admin/recorders/{id}", "patch", "rename_recorder"),
            ("/api/v1/admin/recorders/{id}/move", "post", "move_recorder"),
            (
                "/api/v1/admin/recorders/{id}/revoke",
                "post",
                "revoke_recorder",
            ),
            (
                "/api/v1/admin/recorders/{id}/confirm-replacement",
                "post",
                "confirm_recorder_replacement",
            ),
        ] {
            assert_eq!(paths[path][method]["operationId"], id, "{method} {path}");
        }
    }
}
