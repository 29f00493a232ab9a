//! [`Caller`]: who is calling the admin API, resolved once per request, and the one place
//! that turns the scope rule's answers and the domain errors into HTTP answers.

use std::net::IpAddr;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, Method};

use super::{not_found, Shared};
use crate::api::{ApiError, PeerAddr};
use crate::auth::{self, AuthError};
use crate::permissions::{Permission, PermissionSet};
use crate::scope::{self, AccountTree, Denied, Principal};
use crate::store::{actor_from, Account, StoreError, User};
use crate::users::UserError;
use contera_protocol::ErrorCode;

/// How the caller proved who they are.
#[derive(Debug, Clone)]
pub enum Credential {
    /// A browser session; `token` is the cookie value, kept to end the session at logout.
    Session { token: String },
    /// A bearer API token, by id.
    Token { id: String },
}

/// The authenticated caller of an admin route: their user, what they may do, and the
/// account tree the scope rule is evaluated on. Extracting it refuses (401) a request
/// without a valid session or token, and (403) a state-changing request made with a
/// session cookie but without its CSRF token.
#[derive(Debug)]
pub struct Caller {
    pub user: User,
    /// For a token: the token's permissions, cut down to what the user holds now.
    pub principal: Principal,
    pub tree: AccountTree,
    /// Every account, for names and children; filter with [`Caller::sees`].
    pub accounts: Vec<Account>,
    pub credential: Credential,
    pub source: IpAddr,
}

impl Caller {
    /// The audit actor: `user:<id>` from the caller's address.
    pub fn actor(&self) -> String {
        actor_from(&format!("user:{}", self.user.id), self.source)
    }

    /// The scope rule: `account_id` must be the caller's account or below it (else 404,
    /// like an unknown id), and the caller must hold `permission` (else 403).
    pub fn require(&self, account_id: &str, permission: Permission) -> Result<(), ApiError> {
        scope::authorize(&self.principal, &self.tree, account_id, permission).map_err(denied)
    }

    /// May the caller give `permissions` to a group of `account_id`?
    pub fn require_grant(
        &self,
        account_id: &str,
        permissions: &PermissionSet,
    ) -> Result<(), ApiError> {
        scope::may_grant(&self.principal, &self.tree, account_id, permissions).map_err(denied)
    }

    /// May the caller put a user into a group of `account_id` holding `permissions`?
    pub fn require_place(
        &self,
        account_id: &str,
        permissions: &PermissionSet,
    ) -> Result<(), ApiError> {
        scope::may_place_in_group(&self.principal, &self.tree, account_id, permissions)
            .map_err(denied)
    }

    /// Whether the account is in the caller's subtree (no permission implied).
    pub fn sees(&self, account_id: &str) -> bool {
        self.tree.is_within(&self.principal.account_id, account_id)
    }

    /// The accounts of the caller's subtree, in the store's order.
    pub fn subtree(&self) -> impl Iterator<Item = &Account> {
        self.accounts.iter().filter(|a| self.sees(&a.id))
    }

    /// One account of the subtree, or the 404 an unknown one gets.
    pub fn account(&self, id: &str) -> Result<&Account, ApiError> {
        self.accounts
            .iter()
            .find(|a| a.id == id && self.sees(&a.id))
            .ok_or_else(not_found)
    }

    /// Refuses API tokens: managing tokens and changing the password need a person's
    /// session, so a narrow or leaked token cannot mint broader or longer-lived
    /// credentials, nor guess the password to turn into a session.
    pub fn require_session(&self) -> Result<(), ApiError> {
        match self.credential {
            Credential::Session { .. } => Ok(()),
            Credential::Token { .. } => Err(ApiError::new(
                ErrorCode::Forbidden,
                "API tokens cannot manage tokens or change the password: log in with a session",
            )),
        }
    }

    /// The permissions the caller acts with.
    pub fn permissions(&self) -> PermissionSet {
        self.principal.effective_permissions()
    }
}

fn denied(d: Denied) -> ApiError {
    match d {
        Denied::NotFound => not_found(),
        Denied::Forbidden => ApiError::new(
            ErrorCode::Forbidden,
            "you lack the permission this needs in this account; ask one of its administrators",
        ),
    }
}

fn cookie<'a>(parts: &'a Parts, name: &str) -> Option<&'a str> {
    parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The session cookie of a request, if any (logout ends it).
pub fn session_cookie(parts: &Parts) -> Option<&str> {
    cookie(parts, auth::SESSION_COOKIE)
}

/// The source address of a request (from the connection; there is no trusted proxy).
pub fn source(parts: &Parts) -> IpAddr {
    parts
        .extensions
        .get::<PeerAddr>()
        .map(|PeerAddr(a)| a.ip())
        .unwrap_or(IpAddr::from([127, 0, 0, 1]))
}

fn state_changing(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

impl FromRequestParts<Shared> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> Result<Self, ApiError> {
        let store = &state.store;
        let source = source(parts);
        let (user, token_permissions, credential) = if let Some(token) = bearer(parts) {
            let (api_token, user) = auth::token_user(store, token).await?;
            (
                user,
                Some(api_token.permissions),
                Credential::Token { id: api_token.id },
            )
        } else if let Some(token) = session_cookie(parts) {
            let (_, user) = auth::session_user(store, &state.config, token).await?;
            if state_changing(&parts.method) {
                let given = parts
                    .headers
                    .get(auth::CSRF_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                if !auth::csrf_matches(token, given) {
                    return Err(ApiError::new(
                        ErrorCode::Forbidden,
                        "missing or wrong X-CSRF-Token header: send the csrf_token from \
                         login or GET /api/v1/admin/session",
                    ));
                }
            }
            (
                user,
                None,
                Credential::Session {
                    token: token.to_owned(),
                },
            )
        } else {
            return Err(AuthError::Unauthenticated.into());
        };
        let groups = store.groups(&user.account_id).await.map_err(store_error)?;
        let mut principal = Principal::from_user(&user, &groups);
        if let Some(allowed) = token_permissions {
            principal.permissions = principal
                .permissions
                .iter()
                .filter(|p| allowed.contains(*p))
                .collect();
        }
        let accounts = store.accounts().await.map_err(store_error)?;
        // A disabled account (or one below a disabled account) is out of service for its
        // users too, until it is enabled from above.
        if accounts
            .iter()
            .any(|a| a.id == user.account_id && a.effectively_disabled())
        {
            return Err(ApiError::new(
                ErrorCode::AccountDisabled,
                "your account is disabled by an administrator of the account above it; ask \
                 them to enable it",
            ));
        }
        Ok(Caller {
            tree: AccountTree::from_accounts(&accounts),
            accounts,
            user,
            principal,
            credential,
            source,
        })
    }
}

/// A store failure: conflicts and missing rows are the caller's to fix, the rest is ours
/// (logged, answered 500 without detail).
pub fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::NotFound { .. } => not_found(),
        StoreError::Conflict(message) => ApiError::new(ErrorCode::Conflict, message),
        StoreError::LastAdministrator { .. } => ApiError::new(
            ErrorCode::Conflict,
            "this would leave the account without an active user holding users.manage and \
             groups.manage; give another active user those permissions first",
        ),
        StoreError::InvitationRefused => ApiError::new(
            ErrorCode::NotFound,
            "this link is not valid any more (used, replaced or older than 72 hours); ask for a new one",
        ),
        other => {
            log::error!("admin request failed: {other}");
            ApiError::new(ErrorCode::Internal, "internal error; try again later")
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        store_error(e)
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::InvalidCredentials | AuthError::Unauthenticated => {
                ApiError::new(ErrorCode::Unauthenticated, e.to_string())
            }
            AuthError::TooManyFailures { retry_after_secs } => {
                ApiError::new(ErrorCode::RateLimited, e.to_string())
                    .with_retry_after(retry_after_secs)
                    .because("login")
            }
            AuthError::ResetInvalid => ApiError::new(ErrorCode::NotFound, e.to_string()),
            AuthError::Password(_) => ApiError::new(ErrorCode::MalformedRequest, e.to_string()),
            AuthError::Store(e) => store_error(e),
            AuthError::Hash(_) | AuthError::Random => {
                log::error!("admin request failed: {e}");
                ApiError::new(ErrorCode::Internal, "internal error; try again later")
            }
        }
    }
}

impl From<UserError> for ApiError {
    fn from(e: UserError) -> Self {
        let code = match &e {
            UserError::InvalidEmail(_)
            | UserError::InvalidName
            | UserError::Password(_)
            | UserError::AgeNotConfirmed
            | UserError::TermsNotAccepted => ErrorCode::MalformedRequest,
            UserError::EmailTaken(_)
            | UserError::GroupNameTaken { .. }
            | UserError::NotInvited(_)
            | UserError::LastAdministrator { .. } => ErrorCode::Conflict,
            UserError::AccountNotFound(_)
            | UserError::GroupNotFound { .. }
            | UserError::UserNotFound(_) => return not_found(),
            UserError::InvitationInvalid => ErrorCode::NotFound,
            UserError::Store(_) | UserError::Hash(_) | UserError::Random => {
                log::error!("admin request failed: {e}");
                return ApiError::new(ErrorCode::Internal, "internal error; try again later");
            }
        };
        ApiError::new(code, e.to_string())
    }
}
