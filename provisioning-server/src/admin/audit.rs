//! The audit log, filtered to an account subtree the caller may read.

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::page::{encode, ApiQuery, Page, PageQuery};
use super::ErrorDoc;
use super::{bad_request, Caller, Shared};
use crate::api::ApiError;
use crate::permissions::Permission;
use crate::store::{AuditEntry, AuditFilter};

pub fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new().routes(routes!(list))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// The account whose subtree to read (default: the caller's own account).
    pub account: Option<String>,
    /// Only that account, not its descendants.
    #[serde(default)]
    pub only_account: bool,
    /// Who acted, e.g. `user:<id>`, `cli:root`, `recorder:<id>`.
    pub actor: Option<String>,
    /// What was done, e.g. `session.login`, `recorder.enrolled`.
    pub action: Option<String>,
    /// From this time on (Unix seconds).
    pub since: Option<i64>,
    /// Before this time (Unix seconds).
    pub until: Option<i64>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// Audit entries of an account subtree, newest first: who, what, when, from which address.
/// Needs `audit.view` on the account.
#[utoipa::path(
    get, path = "/audit", tag = "audit", operation_id = "list_audit", params(AuditQuery),
    responses(
        (status = 200, body = Page<AuditEntry>),
        (status = 403, body = ErrorDoc),
        (status = 404, body = ErrorDoc),
    ),
    security(("session" = []), ("token" = []))
)]
async fn list(
    State(state): State<Shared>,
    caller: Caller,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Json<Page<AuditEntry>>, ApiError> {
    let account = q
        .account
        .clone()
        .unwrap_or_else(|| caller.user.account_id.clone());
    caller.require(&account, Permission::AuditView)?;
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
    let before_id = page
        .after()?
        .map(|c| {
            c.parse::<i64>().map_err(|_| {
                bad_request("cursor is not one this server gave; start again without it")
            })
        })
        .transpose()?;
    let mut items = state
        .store
        .audit_entries(&AuditFilter {
            accounts: Some(accounts),
            actor: q.actor.clone(),
            action: q.action.clone(),
            since: q.since,
            until: q.until,
            before_id,
            limit: limit as i64 + 1,
            recorder_id: None,
        })
        .await?;
    let next_cursor = if items.len() > limit {
        items.truncate(limit);
        items.last().map(|e| encode(&e.id.to_string()))
    } else {
        None
    };
    Ok(Json(Page { items, next_cursor }))
}
