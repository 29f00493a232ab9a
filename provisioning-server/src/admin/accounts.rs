//! The account tree: the caller's subtree as a list, new accounts with their first
//! administrator (invited by mail), one account's details, changes, disabling and enabling.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::caller::store_error;
use super::codes::{code_key, no_store, present, ShownCode};
use super::page::{paginate, ApiPath, ApiQuery, Page, PageQuery};
use super::ErrorDoc;
use super::{bad_request, not_found, now, Caller, Shared, PREFIX};
use crate::accounts::{
    self, AccountError, Details, FirstUser, RecorderCounts, MAX_LABEL_CHARS, MAX_NAME_CHARS,
};
use crate::api::{ApiError, ApiJson};
use crate::mail;
use crate::permissions::Permission;
use crate::store::{Account, AccountKind, User};
use crate::users::{self, UserError};
use contera_protocol::ErrorCode;

pub fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(show, update))
        .routes(routes!(disable))
        .routes(routes!(enable))
}

/// Characters of each name that go into the list's sort key: enough to sort by name, few
/// enough that the cursor of a deep tree stays short.
const SORT_NAME_CHARS: usize = 32;

/// An account where it sits below the caller's account, with its recorders.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountItem {
    #[serde(flatten)]
    pub account: Account,
    /// 0 for the caller's own account, 1 for the accounts right below it, and so on.
    pub depth: usize,
    /// The names from the caller's account down to this one, both included.
    pub path: Vec<String>,
    /// Recorders of this account itself (not of accounts below it) online now.
    pub recorders_online: i64,
    /// Recorders of this account itself that are not revoked.
    pub recorders_total: i64,
    /// Sorts by tree path: names from the caller's account down, each with its id.
    #[serde(skip)]
    sort_key: String,
}

/// One account with the ids of the accounts right below it.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountDetail {
    #[serde(flatten)]
    pub item: AccountItem,
    /// The accounts right below this one, by name.
    pub children: Vec<String>,
}

/// The caller's subtree with the recorder counts, to describe its accounts.
struct Tree<'a> {
    caller: &'a Caller,
    by_id: HashMap<&'a str, &'a Account>,
    counts: HashMap<String, RecorderCounts>,
}

impl<'a> Tree<'a> {
    async fn load(state: &Shared, caller: &'a Caller) -> Result<Tree<'a>, ApiError> {
        let counts = state
            .store
            .recorder_counts(now())
            .await?
            .into_iter()
            .map(|c| (c.account_id.clone(), c))
            .collect();
        Ok(Tree {
            caller,
            by_id: caller.subtree().map(|a| (a.id.as_str(), a)).collect(),
            counts,
        })
    }

    /// The accounts from the caller's own down to `account`'s parent.
    fn ancestors(&self, account: &Account) -> Vec<&'a Account> {
        let root = self.caller.user.account_id.as_str();
        let mut chain = Vec::new();
        let mut current = account;
        while current.id != root && chain.len() <= self.by_id.len() {
            let Some(parent) = current.parent_id.as_deref().and_then(|p| self.by_id.get(p)) else {
                break;
            };
            chain.push(*parent);
            current = parent;
        }
        chain.reverse();
        chain
    }

    fn item(&self, account: Account) -> AccountItem {
        let ancestors = self.ancestors(&account);
        let mut path: Vec<String> = ancestors.iter().map(|a| a.name.clone()).collect();
        path.push(account.name.clone());
        let sort_key = ancestors
            .iter()
            .copied()
            .chain(std::iter::once(&account))
            .map(|a| {
                let name: String = a
                    .name
                    .to_lowercase()
                    .chars()
                    .take(SORT_NAME_CHARS)
                    .collect();
                // Control characters sort before any character of a name (names hold
                // none), so an account comes right before its subtree.
                format!("{name}\u{1}{}", a.id)
            })
            .collect::<Vec<_>>()
            .join("\u{0}");
        let counts = self.counts.get(&account.id);
        AccountItem {
            depth: ancestors.len(),
            path,
            recorders_online: counts.map_or(0, |c| c.online),
            recorders_total: counts.map_or(0, |c| c.total),
            sort_key,
            account,
        }
    }

    fn detail(&self, account: Account) -> AccountDetail {
        let mut children: Vec<&Account> = self
            .by_id
            .values()
            .filter(|a| a.parent_id.as_deref() == Some(account.id.as_str()))
            .copied()
            .collect();
        children
            .sort_by(|a, b| (a.name.to_lowercase(), &a.id).cmp(&(b.name.to_lowercase(), &b.id)));
        AccountDetail {
            children: children.iter().map(|a| a.id.clone()).collect(),
            item: self.item(account),
        }
    }
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AccountsQuery {
    /// Only accounts whose name contains this text, in any case; each keeps its `path`.
    pub q: Option<String>,
    /// Items per page, 1 to 500 (default 50).
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// The caller's account and every account below it, as a flat list in tree order (each
/// account right before the accounts below it, siblings by name). Needs `accounts.view`.
#[utoipa::path(
    get, path = "/accounts", tag = "accounts", operation_id = "list_accounts",
    params(AccountsQuery),
    responses(
        (status = 200, body = Page<AccountItem>),
        (status = 400, body = ErrorDoc),
        (status = 403, body = ErrorDoc),
    ),
    security(("session" = []), ("token" = []))
)]
async fn list(
    State(state): State<Shared>,
    caller: Caller,
    ApiQuery(query): ApiQuery<AccountsQuery>,
) -> Result<Json<Page<AccountItem>>, ApiError> {
    caller.require(&caller.user.account_id, Permission::AccountsView)?;
    let tree = Tree::load(&state, &caller).await?;
    let needle = query
        .q
        .as_deref()
        .map(str::trim)
        .filter(|q| !q.is_empty())
        .map(str::to_lowercase);
    let items = caller
        .subtree()
        .filter(|a| {
            needle
                .as_deref()
                .is_none_or(|n| a.name.to_lowercase().contains(n))
        })
        .map(|a| tree.item(a.clone()))
        .collect();
    let page = PageQuery {
        limit: query.limit,
        cursor: query.cursor,
    };
    Ok(Json(paginate(items, |i| i.sort_key.clone(), &page)?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FirstUserRequest {
    pub name: String,
    pub email: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAccountRequest {
    pub kind: AccountKind,
    /// At most 200 characters on one line.
    pub name: String,
    /// The partner account to create it in; the caller's own account when left out.
    pub parent_id: Option<String>,
    /// Postal address, may span lines (at most 500 characters); empty for none.
    pub address: String,
    /// Who to call about the account (at most 200 characters on one line).
    pub contact: Option<String>,
    /// The account's first administrator: invited by mail into its Administrators group.
    pub first_user: FirstUserRequest,
}

/// A new account. `registration_code` (its first code) is there only when the caller holds
/// `codes.view`. The invitation's link is only in the mail.
#[derive(Debug, Serialize, ToSchema)]
pub struct NewAccountResponse {
    pub account: AccountDetail,
    /// Invited into the account's Administrators group.
    pub first_user: User,
    /// Whether the invitation mail went out (to the relay, or the outbox without one).
    pub invitation_sent: bool,
    /// What happened to the invitation, and what to do when it was not sent.
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registration_code: Option<ShownCode>,
}

/// Creates an account below a partner account, with its first registration code, its
/// Administrators group and its first user invited into that group, all at once (a taken
/// email leaves nothing behind), then mails the invitation ("Account Invitation"). When
/// the mail cannot be sent the account stays: resend the invitation from the users API.
/// Needs `accounts.manage` on the parent.
#[utoipa::path(
    post, path = "/accounts", tag = "accounts", operation_id = "create_account",
    request_body = NewAccountRequest,
    responses(
        (status = 201, body = NewAccountResponse),
        (status = 400, body = ErrorDoc),
        (status = 403, body = ErrorDoc),
        (status = 404, body = ErrorDoc),
        (status = 409, description = "The first user's email is taken", body = ErrorDoc),
    ),
    security(("session" = []), ("token" = []))
)]
async fn create(
    State(state): State<Shared>,
    caller: Caller,
    ApiJson(req): ApiJson<NewAccountRequest>,
) -> Result<Response, ApiError> {
    let parent_id = req
        .parent_id
        .clone()
        .unwrap_or_else(|| caller.user.account_id.clone());
    caller.require(&parent_id, Permission::AccountsManage)?;
    // The first user joins the new account's Administrators group, which holds every
    // permission: only someone who holds them all may create that user.
    caller.require_place(&parent_id, &crate::permissions::PermissionSet::all())?;
    let parent = caller.account(&parent_id)?.clone();
    if parent.kind != AccountKind::Partner {
        return Err(bad_request(format!(
            "parent_id: {:?} is a customer account, and only partner accounts hold other \
             accounts; give the id of a partner account",
            parent.name
        )));
    }
    let key = code_key(&state).await?;
    let details = Details {
        address: Some(req.address),
        contact: req.contact,
    };
    let first_user = FirstUser {
        name: &req.first_user.name,
        email: &req.first_user.email,
    };
    let (account, code, invited) = accounts::create_with_first_user(
        &state.store,
        &key,
        &req.name,
        req.kind,
        Some(&parent.id),
        &details,
        first_user,
        &caller.actor(),
    )
    .await
    .map_err(account_error)?;

    // The same accept link the CLI prints; the token is in the fragment.
    let link = format!(
        "{}/invitations/accept#token={}",
        state.base_url, invited.token
    );
    let user = invited.user;
    let sent = match mail::invitation(
        &user.name,
        &user.email,
        &account.name,
        &caller.user.name,
        &link,
    ) {
        Ok(email) => state.mailer.send(&email).await.map(|_| ()),
        Err(e) => Err(e),
    };
    let (invitation_sent, message) = match sent {
        Ok(()) => (true, format!("the invitation was sent to {}", user.email)),
        Err(e) => {
            log::warn!(
                "account {} created, but the invitation of user {} could not be sent: {e}",
                account.id,
                user.id
            );
            (
                false,
                format!(
                    "the account and its first user were created, but the invitation mail \
                     could not be sent; send it again with POST {PREFIX}/users/{}/resend",
                    user.id
                ),
            )
        }
    };

    // The new account is right below the parent, so the caller holds there what they hold
    // on the parent.
    let registration_code = match caller.require(&parent.id, Permission::CodesView) {
        Ok(()) => {
            let info = state
                .store
                .code_info(&code.public_id())
                .await?
                .ok_or_else(not_found)?;
            Some(ShownCode::new(&info, &code))
        }
        Err(_) => None,
    };
    let tree = Tree::load(&state, &caller).await?;
    let parent_item = tree.item(parent);
    let item = AccountItem {
        depth: parent_item.depth + 1,
        path: [parent_item.path, vec![account.name.clone()]].concat(),
        recorders_online: 0,
        recorders_total: 0,
        sort_key: String::new(),
        account,
    };
    Ok(no_store(
        StatusCode::CREATED,
        NewAccountResponse {
            account: AccountDetail {
                item,
                children: Vec::new(),
            },
            first_user: user,
            invitation_sent,
            message,
            registration_code,
        },
    ))
}

/// An account of the caller's subtree as stored now.
async fn fresh(state: &Shared, id: &str) -> Result<Account, ApiError> {
    state.store.account(id).await?.ok_or_else(not_found)
}

/// One account with its path, recorder counts and the accounts right below it. Needs
/// `accounts.view`.
#[utoipa::path(
    get, path = "/accounts/{id}", tag = "accounts", operation_id = "get_account",
    params(("id" = String, Path, description = "The account's id")),
    responses(
        (status = 200, body = AccountDetail),
        (status = 403, body = ErrorDoc),
        (status = 404, body = ErrorDoc),
    ),
    security(("session" = []), ("token" = []))
)]
async fn show(
    State(state): State<Shared>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<AccountDetail>, ApiError> {
    caller.require(&id, Permission::AccountsView)?;
    let account = caller.account(&id)?.clone();
    let tree = Tree::load(&state, &caller).await?;
    Ok(Json(tree.detail(account)))
}

/// The fields to change; a field left out stays as it is.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccountChanges {
    /// At most 200 characters on one line.
    pub name: Option<String>,
    /// May span lines; empty for none.
    pub address: Option<String>,
    /// Null (or empty) removes it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub contact: Option<Option<String>>,
}

/// Changes an account's name, address or contact; audited as `account.updated` with what
/// changed. Needs `accounts.manage`.
#[utoipa::path(
    patch, path = "/accounts/{id}", tag = "accounts", operation_id = "update_account",
    params(("id" = String, Path, description = "The account's id")),
    request_body = AccountChanges,
    responses(
        (status = 200, body = AccountDetail),
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
    ApiJson(changes): ApiJson<AccountChanges>,
) -> Result<Json<AccountDetail>, ApiError> {
    caller.require(&id, Permission::AccountsManage)?;
    let contact = changes.contact.map(Option::unwrap_or_default);
    let account = accounts::update(
        &state.store,
        &id,
        changes.name.as_deref(),
        changes.address.as_deref(),
        contact.as_deref(),
        &caller.actor(),
    )
    .await
    .map_err(account_error)?;
    state.facts.forget_accounts();
    let tree = Tree::load(&state, &caller).await?;
    Ok(Json(tree.detail(account)))
}

/// Disables or enables an account below the caller's own.
async fn set_disabled(
    state: &Shared,
    caller: &Caller,
    id: &str,
    disabled: bool,
) -> Result<Json<AccountDetail>, ApiError> {
    caller.require(id, Permission::AccountsManage)?;
    if id == caller.user.account_id {
        let what = if disabled { "disable" } else { "enable" };
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!(
                "you cannot {what} your own account, only the accounts below it; an \
                 administrator of the partner account above yours can"
            ),
        ));
    }
    if !disabled {
        require_may_undo_disable(state, caller, id).await?;
    }
    accounts::set_disabled(&state.store, id, disabled, &caller.actor())
        .await
        .map_err(account_error)?;
    state.facts.forget_accounts();
    let account = fresh(state, id).await?;
    let tree = Tree::load(state, caller).await?;
    Ok(Json(tree.detail(account)))
}

/// Only whoever disabled an account, or someone above them, may enable it again: an
/// administrator between a partner and the customer it disabled cannot undo that.
async fn require_may_undo_disable(
    state: &Shared,
    caller: &Caller,
    id: &str,
) -> Result<(), ApiError> {
    let Some(by) = caller
        .accounts
        .iter()
        .find(|a| a.id == id)
        .and_then(|a| a.disabled_by.clone())
    else {
        return Ok(());
    };
    let disabler_account = match crate::store::split_actor(&by).0.strip_prefix("user:") {
        Some(user_id) => state.store.user(user_id).await?.map(|u| u.account_id),
        // The server's operator (the CLI) disabled it: only the operator enables it.
        None => None,
    };
    match disabler_account {
        Some(account) if caller.sees(&account) => Ok(()),
        _ => Err(ApiError::new(
            ErrorCode::Forbidden,
            "this account was disabled by an administrator above your account (or by the \
             server's operator); ask them to enable it",
        )),
    }
}

/// Disables an account below the caller's own, and so its whole subtree: enrollments and
/// renewals are refused and recorders are told at their next heartbeat. Disabling a
/// disabled account changes nothing. Audited as `account.disabled`. Needs
/// `accounts.manage`.
#[utoipa::path(
    post, path = "/accounts/{id}/disable", tag = "accounts", operation_id = "disable_account",
    params(("id" = String, Path, description = "The account's id")),
    responses(
        (status = 200, body = AccountDetail),
        (status = 403, body = ErrorDoc),
        (status = 404, body = ErrorDoc),
        (status = 409, description = "The caller's own account", body = ErrorDoc),
    ),
    security(("session" = []), ("token" = []))
)]
async fn disable(
    State(state): State<Shared>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<AccountDetail>, ApiError> {
    set_disabled(&state, &caller, &id, true).await
}

/// Enables an account disabled before; its subtree works again unless an account above it
/// is disabled too. Audited as `account.enabled`. Needs `accounts.manage`.
#[utoipa::path(
    post, path = "/accounts/{id}/enable", tag = "accounts", operation_id = "enable_account",
    params(("id" = String, Path, description = "The account's id")),
    responses(
        (status = 200, body = AccountDetail),
        (status = 403, body = ErrorDoc),
        (status = 404, body = ErrorDoc),
        (status = 409, description = "The caller's own account", body = ErrorDoc),
    ),
    security(("session" = []), ("token" = []))
)]
async fn enable(
    State(state): State<Shared>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<AccountDetail>, ApiError> {
    set_disabled(&state, &caller, &id, false).await
}

/// An account or code failure in the API's words: which field was wrong and how to fix
/// it, 404 for anything unknown (like anything outside the caller's subtree).
pub(super) fn account_error(e: AccountError) -> ApiError {
    use AccountError as E;
    match e {
        E::EmptyName => bad_request("name is empty: give the account a name"),
        E::NameTooLong(chars) => bad_request(format!(
            "name is {chars} characters long; use at most {MAX_NAME_CHARS}"
        )),
        E::TooLong { field, chars, max } => bad_request(format!(
            "{field} is {chars} characters long; use at most {max}"
        )),
        E::ControlCharacters { field } => bad_request(format!(
            "{field} contains control characters; only the address may span lines (\\n)"
        )),
        E::NothingToUpdate => bad_request("nothing to change: give name, address or contact"),
        E::ParentNotPartner(_) => bad_request(
            "parent_id is a customer account, and only partner accounts hold other accounts; \
             give the id of a partner account",
        ),
        E::NoParent(_) | E::NotFound(_) | E::CodeNotFound(_) => not_found(),
        E::CodeNotKept(id) => ApiError::new(
            ErrorCode::Conflict,
            format!(
                "registration code {id} was made before codes were kept, so it cannot be \
                 shown; rotate the account's codes to get one that can"
            ),
        ),
        E::LabelTooLong(chars) => bad_request(format!(
            "label is {chars} characters long; use at most {MAX_LABEL_CHARS}"
        )),
        E::LabelControlCharacters => {
            bad_request("label contains control characters; keep it to one line of text")
        }
        E::ZeroMaxUses => bad_request("max_uses must be at least 1; give null for no limit"),
        E::ExpiryInPast => bad_request(
            "expires_at is in the past: give a Unix time in the future, or null for no expiry",
        ),
        E::NothingToUpdateCode => {
            bad_request("nothing to change: give label, expires_at or max_uses")
        }
        E::FirstUser(e) => first_user_error(e),
        E::Secrets(e) => {
            log::error!("registration code key: {e}");
            ApiError::new(
                ErrorCode::Internal,
                "registration codes cannot be made or shown now: the server's code key is \
                 unavailable; tell the server's operator",
            )
        }
        E::Store(e) => store_error(e),
    }
}

/// A refused first user, naming the field of the request.
fn first_user_error(e: UserError) -> ApiError {
    match e {
        UserError::InvalidEmail(email) => bad_request(format!(
            "first_user.email: {email:?} is not an email address; give one like name@example.com"
        )),
        UserError::InvalidName => bad_request(format!(
            "first_user.name is empty or longer than {} characters; give the person's name",
            users::MAX_NAME_CHARS
        )),
        UserError::EmailTaken(email) => ApiError::new(
            ErrorCode::Conflict,
            format!(
                "first_user.email: a user with the email {email} already exists; give another \
                 email for the account's first user"
            ),
        ),
        other => other.into(),
    }
}
