//! Users of an account: listing, inviting (with the invitation mail), renaming, resending
//! an invitation, disabling and enabling, and choosing a user's groups.
//!
//! Every route finds the account it acts on (from the path, or the user's own account) and
//! asks [`Caller::require`]: a user outside the caller's subtree answers exactly like an
//! unknown one. Putting a user into a group also asks [`Caller::require_place`], so nobody
//! gives another user more than they hold themselves.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::page::{paginate, ApiPath, ApiQuery, Page, PageQuery};
use super::{bad_request, not_found, AdminState, Caller, ErrorDoc, Shared};
use crate::api::{ApiError, ApiJson};
use crate::mail;
use crate::permissions::Permission;
use crate::store::{User, UserStatus, ADMINISTRATORS_GROUP};
use crate::users::{self, Invited, UserError};
use contera_protocol::ErrorCode;

pub fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new()
        .routes(routes!(list, invite))
        .routes(routes!(show, update))
        .routes(routes!(resend))
        .routes(routes!(disable))
        .routes(routes!(enable))
        .routes(routes!(set_groups))
}

/// The user with this id if the caller may use `permission` on their account; unknown and
/// outside the caller's subtree are the same 404.
async fn user_for(
    state: &AdminState,
    caller: &Caller,
    id: &str,
    permission: Permission,
) -> Result<User, ApiError> {
    let user = state.store.user(id).await?.ok_or_else(not_found)?;
    caller.require(&user.account_id, permission)?;
    Ok(user)
}

/// Refuses a change to `user` by a caller who holds less than the user does: disabling,
/// enabling or regrouping someone stronger would be granting (or taking) power by
/// another route.
async fn require_outranks(
    state: &AdminState,
    caller: &Caller,
    user: &User,
) -> Result<(), ApiError> {
    let groups = state.store.groups(&user.account_id).await?;
    let held: crate::permissions::PermissionSet = groups
        .iter()
        .filter(|g| user.groups.contains(&g.name))
        .flat_map(|g| g.permissions.iter())
        .collect();
    caller.require_place(&user.account_id, &held)
}

/// A refused invitation or rename, with the field it is about.
fn field_error(e: UserError) -> ApiError {
    match e {
        UserError::InvalidEmail(_) => bad_request(format!("email: {e}")),
        UserError::InvalidName => bad_request(format!("name: {e}")),
        UserError::EmailTaken(email) => ApiError::new(
            ErrorCode::Conflict,
            format!(
                "email: a user with the email {email} already exists (an email belongs to one \
                 user on the whole server); invite another address"
            ),
        ),
        other => other.into(),
    }
}

/// The users of an account, by email: each with their status and group names.
#[utoipa::path(
    get, path = "/accounts/{id}/users", tag = "users", operation_id = "list_users",
    params(("id" = String, Path, description = "The account's id"), PageQuery),
    responses(
        (status = 200, body = Page<User>),
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
) -> Result<Json<Page<User>>, ApiError> {
    caller.require(&id, Permission::UsersView)?;
    let users = state.store.users(Some(&id)).await?;
    Ok(Json(paginate(
        users,
        |u| format!("{}/{}", u.email.to_lowercase(), u.id),
        &page,
    )?))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct InviteRequest {
    /// Where the invitation goes; also the user's login. Unique on the whole server.
    pub email: String,
    /// The user's name, 1 to 200 characters.
    pub name: String,
    /// The group the user joins (a group of this account); the account's Administrators
    /// group when left out.
    pub group_id: Option<String>,
}

/// An invitation made or renewed. The token is never in the answer: it goes only to the
/// invited email.
#[derive(Debug, Serialize, ToSchema)]
pub struct InvitationSent {
    pub user: User,
    /// Until when the link can be accepted (Unix seconds).
    pub invitation_expires_at: i64,
    /// False when the mail could not be sent: the invitation stands; resend it once mail
    /// works (`POST /users/{id}/resend`).
    pub invitation_sent: bool,
    /// What happened, and what to do when the mail was not sent.
    pub message: String,
}

/// Mails the invitation ("Account Invitation", with the accept link) and says how it went.
/// A failure is logged and answered, not an error: the user and the invitation stand.
async fn send_invitation(
    state: &AdminState,
    caller: &Caller,
    account_name: &str,
    invited: Invited,
) -> InvitationSent {
    let user = invited.user;
    let link = users::invitation_link(&state.base_url, &invited.token);
    let result = match mail::invitation(
        &user.name,
        &user.email,
        account_name,
        &caller.user.name,
        &link,
    ) {
        Ok(email) => state.mailer.send(&email).await.map(|_| ()),
        Err(e) => Err(e),
    };
    let (invitation_sent, message) = match result {
        Ok(()) => (
            true,
            format!(
                "the invitation was sent to {}; its link can be accepted for 72 hours",
                user.email
            ),
        ),
        Err(e) => {
            log::warn!(
                "could not send the invitation mail for user {}: {e}",
                user.id
            );
            (
                false,
                format!(
                    "the user is invited, but the invitation mail could not be sent (the \
                     server log says why); once mail works, send a new link with \
                     POST /api/v1/admin/users/{}/resend",
                    user.id
                ),
            )
        }
    };
    InvitationSent {
        user,
        invitation_expires_at: invited.expires_at,
        invitation_sent,
        message,
    }
}

/// Invites a user into the account and mails them the link to accept. Needs users.manage,
/// and the group may hold nothing the caller does not hold.
#[utoipa::path(
    post, path = "/accounts/{id}/users", tag = "users", operation_id = "invite_user",
    params(("id" = String, Path, description = "The account's id")),
    request_body = InviteRequest,
    responses(
        (status = 201, description = "Invited (see invitation_sent for the mail)", body = InvitationSent),
        (status = 400, description = "Email, name or group_id not valid", body = ErrorDoc),
        (status = 403, description = "No users.manage, or the group holds more than you", body = ErrorDoc),
        (status = 404, description = "No such account in your accounts", body = ErrorDoc),
        (status = 409, description = "The email belongs to a user already", body = ErrorDoc),
    ),
    security(("session" = []), ("token" = []))
)]
async fn invite(
    State(state): State<Shared>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<InviteRequest>,
) -> Result<(StatusCode, Json<InvitationSent>), ApiError> {
    caller.require(&id, Permission::UsersManage)?;
    let account_name = caller.account(&id)?.name.clone();
    let groups = state.store.groups(&id).await?;
    let group = match &req.group_id {
        Some(group_id) => groups.iter().find(|g| g.id == *group_id).ok_or_else(|| {
            bad_request(format!(
                "group_id: {group_id:?} is not a group of this account; list them with \
                 GET /api/v1/admin/accounts/{id}/groups, or leave group_id out for \
                 {ADMINISTRATORS_GROUP}"
            ))
        })?,
        None => groups
            .iter()
            .find(|g| g.name == ADMINISTRATORS_GROUP)
            .ok_or_else(not_found)?,
    };
    caller.require_place(&id, &group.permissions)?;
    let invited = users::invite(
        &state.store,
        &id,
        &req.email,
        &req.name,
        Some(&group.name),
        &caller.actor(),
    )
    .await
    .map_err(field_error)?;
    let answer = send_invitation(&state, &caller, &account_name, invited).await;
    Ok((StatusCode::CREATED, Json(answer)))
}

/// One user. Needs users.view on their account.
#[utoipa::path(
    get, path = "/users/{id}", tag = "users", operation_id = "get_user",
    params(("id" = String, Path, description = "The user's id")),
    responses(
        (status = 200, body = User),
        (status = 403, body = ErrorDoc),
        (status = 404, description = "No such user in your accounts", body = ErrorDoc),
    ),
    security(("session" = []), ("token" = []))
)]
async fn show(
    State(state): State<Shared>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<User>, ApiError> {
    Ok(Json(
        user_for(&state, &caller, &id, Permission::UsersView).await?,
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUserRequest {
    /// The new name, 1 to 200 characters.
    pub name: String,
}

/// Renames a user. Needs users.manage on their account.
#[utoipa::path(
    patch, path = "/users/{id}", tag = "users", operation_id = "update_user",
    params(("id" = String, Path, description = "The user's id")),
    request_body = UpdateUserRequest,
    responses(
        (status = 200, body = User),
        (status = 400, body = ErrorDoc),
        (status = 403, body = ErrorDoc),
        (status = 404, body = ErrorDoc),
    ),
    security(("session" = []), ("token" = []))
)]
async fn update(
    State(state): State<Shared>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<UpdateUserRequest>,
) -> Result<Json<User>, ApiError> {
    let user = user_for(&state, &caller, &id, Permission::UsersManage).await?;
    let user = users::rename(&state.store, &user.id, &req.name, &caller.actor())
        .await
        .map_err(field_error)?;
    Ok(Json(user))
}

/// Sends an invited user a new link; the previous one stops working. Needs users.manage.
#[utoipa::path(
    post, path = "/users/{id}/resend", tag = "users", operation_id = "resend_invitation",
    params(("id" = String, Path, description = "The user's id")),
    responses(
        (status = 200, description = "A new invitation (see invitation_sent for the mail)", body = InvitationSent),
        (status = 403, body = ErrorDoc),
        (status = 404, body = ErrorDoc),
        (status = 409, description = "The user is not invited any more", body = ErrorDoc),
    ),
    security(("session" = []), ("token" = []))
)]
async fn resend(
    State(state): State<Shared>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<InvitationSent>, ApiError> {
    let user = user_for(&state, &caller, &id, Permission::UsersManage).await?;
    let account_name = caller.account(&user.account_id)?.name.clone();
    let invited = users::resend(&state.store, &user.id, &caller.actor()).await?;
    Ok(Json(
        send_invitation(&state, &caller, &account_name, invited).await,
    ))
}

/// Disables or enables an active or disabled user; an invited user is neither.
async fn set_disabled(
    state: &AdminState,
    caller: &Caller,
    id: &str,
    disabled: bool,
) -> Result<Json<User>, ApiError> {
    let user = user_for(state, caller, id, Permission::UsersManage).await?;
    require_outranks(state, caller, &user).await?;
    if user.status == UserStatus::Invited {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!(
                "{} has not accepted the invitation yet: only active users can be disabled \
                 and only disabled ones enabled",
                user.email
            ),
        ));
    }
    let (user, _changed) =
        users::set_disabled(&state.store, &user.id, disabled, &caller.actor()).await?;
    Ok(Json(user))
}

/// Disables a user: they cannot log in, and their sessions and API tokens end at once.
/// Refused (409) for the account's last active user holding users.manage and
/// groups.manage. Needs users.manage.
#[utoipa::path(
    post, path = "/users/{id}/disable", tag = "users", operation_id = "disable_user",
    params(("id" = String, Path, description = "The user's id")),
    responses(
        (status = 200, description = "Disabled (or already was)", body = User),
        (status = 403, body = ErrorDoc),
        (status = 404, body = ErrorDoc),
        (status = 409, description = "The last administrator, or still invited", body = ErrorDoc),
    ),
    security(("session" = []), ("token" = []))
)]
async fn disable(
    State(state): State<Shared>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<User>, ApiError> {
    set_disabled(&state, &caller, &id, true).await
}

/// Enables a disabled user again (they log in with their password). Needs users.manage.
#[utoipa::path(
    post, path = "/users/{id}/enable", tag = "users", operation_id = "enable_user",
    params(("id" = String, Path, description = "The user's id")),
    responses(
        (status = 200, description = "Active (or already was)", body = User),
        (status = 403, body = ErrorDoc),
        (status = 404, body = ErrorDoc),
        (status = 409, description = "Still invited", body = ErrorDoc),
    ),
    security(("session" = []), ("token" = []))
)]
async fn enable(
    State(state): State<Shared>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<User>, ApiError> {
    set_disabled(&state, &caller, &id, false).await
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct SetGroupsRequest {
    /// Every group the user is to be in: at least one, all of the user's account.
    pub group_ids: Vec<String>,
}

/// Replaces a user's groups. Needs users.manage, and no group may hold anything the
/// caller does not; refused (409) when the account would be left without an active user
/// holding users.manage and groups.manage.
#[utoipa::path(
    put, path = "/users/{id}/groups", tag = "users", operation_id = "set_user_groups",
    params(("id" = String, Path, description = "The user's id")),
    request_body = SetGroupsRequest,
    responses(
        (status = 200, body = User),
        (status = 400, description = "No group, or one not of the user's account", body = ErrorDoc),
        (status = 403, description = "No users.manage, or a group holds more than you", body = ErrorDoc),
        (status = 404, body = ErrorDoc),
        (status = 409, description = "The account would have no administrator left", body = ErrorDoc),
    ),
    security(("session" = []), ("token" = []))
)]
async fn set_groups(
    State(state): State<Shared>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<SetGroupsRequest>,
) -> Result<Json<User>, ApiError> {
    let user = user_for(&state, &caller, &id, Permission::UsersManage).await?;
    require_outranks(&state, &caller, &user).await?;
    let account = &user.account_id;
    if req.group_ids.is_empty() {
        return Err(bad_request(format!(
            "group_ids: give at least one group id; list the account's groups with \
             GET /api/v1/admin/accounts/{account}/groups"
        )));
    }
    let groups = state.store.groups(account).await?;
    for group_id in &req.group_ids {
        let group = groups.iter().find(|g| g.id == *group_id).ok_or_else(|| {
            bad_request(format!(
                "group_ids: {group_id:?} is not a group of the user's account; list them \
                 with GET /api/v1/admin/accounts/{account}/groups"
            ))
        })?;
        caller.require_place(account, &group.permissions)?;
    }
    let user = state
        .store
        .set_user_groups(&user.id, &req.group_ids, super::now(), &caller.actor())
        .await?;
    Ok(Json(user))
}
