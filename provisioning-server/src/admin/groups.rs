//! Groups of permissions in an account: listing, creating, changing their permissions,
//! listing their members, deleting empty ones.
//!
//! Nobody grants what they do not hold: creating a group and setting its permissions ask
//! [`Caller::require_grant`]. A group outside the caller's subtree answers exactly like an
//! unknown one.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::page::{paginate, ApiPath, ApiQuery, Page, PageQuery};
use super::{bad_request, not_found, AdminState, Caller, ErrorDoc, Shared};
use crate::api::{ApiError, ApiJson};
use crate::permissions::{Permission, PermissionSet};
use crate::store::{Group, User};
use crate::users::{self, UserError};

pub fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(set_permissions))
        .routes(routes!(members))
        .routes(routes!(delete))
}

/// The group with this id if the caller may use `permission` on its account; unknown and
/// outside the caller's subtree are the same 404.
async fn group_for(
    state: &AdminState,
    caller: &Caller,
    id: &str,
    permission: Permission,
) -> Result<Group, ApiError> {
    let group = state.store.group(id).await?.ok_or_else(not_found)?;
    caller.require(&group.account_id, permission)?;
    Ok(group)
}

/// The groups of an account, by name, with their permissions and how many users are in
/// each. Needs users.view.
#[utoipa::path(
    get, path = "/accounts/{id}/groups", tag = "groups", operation_id = "list_groups",
    params(("id" = String, Path, description = "The account's id"), PageQuery),
    responses(
        (status = 200, body = Page<Group>),
        (status = 400, body = ErrorDoc),
        (status = 403, description = "No users.view on the account", body = ErrorDoc),
        (status = 404, description = "No such account in your accounts", body = ErrorDoc),
    ),
    security(("session" = []), ("token" = []))
)]
async fn list(
    State(state): State<Shared>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Result<Json<Page<Group>>, ApiError> {
    caller.require(&id, Permission::UsersView)?;
    let groups = state.store.groups(&id).await?;
    Ok(Json(paginate(
        groups,
        |g| format!("{}/{}", g.name.to_lowercase(), g.id),
        &page,
    )?))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct NewGroupRequest {
    /// Unique in the account, 1 to 200 characters.
    pub name: String,
    /// What members may do: only permissions the caller holds.
    pub permissions: Vec<Permission>,
}

/// Creates a group. Needs groups.manage, and the group may hold only permissions the
/// caller holds.
#[utoipa::path(
    post, path = "/accounts/{id}/groups", tag = "groups", operation_id = "create_group",
    params(("id" = String, Path, description = "The account's id")),
    request_body = NewGroupRequest,
    responses(
        (status = 201, body = Group),
        (status = 400, description = "Name or permission names not valid", body = ErrorDoc),
        (status = 403, description = "No groups.manage, or a permission you do not hold", body = ErrorDoc),
        (status = 404, description = "No such account in your accounts", body = ErrorDoc),
        (status = 409, description = "The account has a group of this name", body = ErrorDoc),
    ),
    security(("session" = []), ("token" = []))
)]
async fn create(
    State(state): State<Shared>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<NewGroupRequest>,
) -> Result<(StatusCode, Json<Group>), ApiError> {
    let permissions: PermissionSet = req.permissions.into_iter().collect();
    caller.require_grant(&id, &permissions)?;
    let group = users::create_group(&state.store, &id, &req.name, permissions, &caller.actor())
        .await
        .map_err(|e| match e {
            UserError::InvalidName => bad_request(format!("name: {e}")),
            other => other.into(),
        })?;
    Ok((StatusCode::CREATED, Json(group)))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct SetPermissionsRequest {
    /// Every permission the group is to hold (replacing what it holds): only ones the
    /// caller holds.
    pub permissions: Vec<Permission>,
}

/// Replaces a group's permissions. Needs groups.manage, and only permissions the caller
/// holds; refused (409) when the account would be left without an active user holding
/// users.manage and groups.manage.
#[utoipa::path(
    put, path = "/groups/{id}/permissions", tag = "groups", operation_id = "set_group_permissions",
    params(("id" = String, Path, description = "The group's id")),
    request_body = SetPermissionsRequest,
    responses(
        (status = 200, body = Group),
        (status = 400, body = ErrorDoc),
        (status = 403, body = ErrorDoc),
        (status = 404, description = "No such group in your accounts", body = ErrorDoc),
        (status = 409, description = "The account would have no administrator left", body = ErrorDoc),
    ),
    security(("session" = []), ("token" = []))
)]
async fn set_permissions(
    State(state): State<Shared>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<SetPermissionsRequest>,
) -> Result<Json<Group>, ApiError> {
    let group = group_for(&state, &caller, &id, Permission::GroupsManage).await?;
    let permissions: PermissionSet = req.permissions.into_iter().collect();
    caller.require_grant(&group.account_id, &permissions)?;
    users::set_group_permissions(
        &state.store,
        &group.account_id,
        &group.name,
        &permissions,
        &caller.actor(),
    )
    .await?;
    let group = state.store.group(&group.id).await?.ok_or_else(not_found)?;
    Ok(Json(group))
}

/// The users in a group, by email. Needs users.view on its account.
#[utoipa::path(
    get, path = "/groups/{id}/members", tag = "groups", operation_id = "list_group_members",
    params(("id" = String, Path, description = "The group's id"), PageQuery),
    responses(
        (status = 200, body = Page<User>),
        (status = 400, body = ErrorDoc),
        (status = 403, body = ErrorDoc),
        (status = 404, description = "No such group in your accounts", body = ErrorDoc),
    ),
    security(("session" = []), ("token" = []))
)]
async fn members(
    State(state): State<Shared>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Result<Json<Page<User>>, ApiError> {
    let group = group_for(&state, &caller, &id, Permission::UsersView).await?;
    // Group names are unique in an account, and a user lists their groups by name.
    let members: Vec<User> = state
        .store
        .users(Some(&group.account_id))
        .await?
        .into_iter()
        .filter(|u| u.groups.contains(&group.name))
        .collect();
    Ok(Json(paginate(
        members,
        |u| format!("{}/{}", u.email.to_lowercase(), u.id),
        &page,
    )?))
}

/// Deletes a group that has no members; the Administrators group stays. Needs
/// groups.manage.
#[utoipa::path(
    delete, path = "/groups/{id}", tag = "groups", operation_id = "delete_group",
    params(("id" = String, Path, description = "The group's id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, body = ErrorDoc),
        (status = 404, description = "No such group in your accounts", body = ErrorDoc),
        (status = 409, description = "It has members, or it is Administrators", body = ErrorDoc),
    ),
    security(("session" = []), ("token" = []))
)]
async fn delete(
    State(state): State<Shared>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let group = group_for(&state, &caller, &id, Permission::GroupsManage).await?;
    state
        .store
        .delete_group(&group.id, super::now(), &caller.actor())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
