//! Users, groups of permissions and invitations: inviting into an account, accepting with a
//! password and the terms, disabling and enabling, and the rule that an account always
//! keeps someone who can manage its users and groups.
//!
//! The administration rule: an account that has at least one *active* user holding both
//! `users.manage` and `groups.manage` (through any of their groups) keeps at least one.
//! Disabling a user and changing a group's permissions are refused when they would take
//! the count from one to zero; the check runs inside the store's transaction, so two
//! concurrent changes cannot both pass it. Invited users do not count: they cannot act yet.

use std::sync::Arc;

use ring::digest::{digest, SHA256};
use ring::rand::{SecureRandom, SystemRandom};
use time::OffsetDateTime;

use crate::passwords::{self, PasswordError, PolicyError};
use crate::permissions::PermissionSet;
use crate::store::{
    Acceptance, Actor, Group, Invitation, Store, StoreError, User, UserStatus, ADMINISTRATORS_GROUP,
};

/// How long an invitation can be accepted: 72 hours.
pub const INVITATION_TTL_SECS: i64 = 72 * 3600;
/// Longest email accepted (the SMTP path limit).
pub const MAX_EMAIL_CHARS: usize = 254;
/// Longest user or group name accepted, in characters.
pub const MAX_NAME_CHARS: usize = 200;

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("{0:?} is not an email address; give one like name@example.com")]
    InvalidEmail(String),
    #[error("the name is empty, longer than {MAX_NAME_CHARS} characters, or holds control characters such as line breaks; give a name on one line")]
    InvalidName,
    #[error("a user with the email {0} already exists; use `users list` to find them")]
    EmailTaken(String),
    #[error("account {0} does not exist; see `accounts list`")]
    AccountNotFound(String),
    #[error("account {account_id} has no group named {name:?}; see `groups list --account {account_id}`")]
    GroupNotFound { account_id: String, name: String },
    #[error("account {account_id} already has a group named {name:?}; choose another name")]
    GroupNameTaken { account_id: String, name: String },
    #[error("no user with the id or email {0}; see `users list`")]
    UserNotFound(String),
    #[error("user {0} has already accepted their invitation; nothing to resend")]
    NotInvited(String),
    /// Unknown, used, replaced and expired tokens get one answer, so the link itself
    /// tells nothing; the fix is the same for all of them.
    #[error("this invitation link is not valid any more (used, replaced or older than 72 hours); ask an administrator to resend it")]
    InvitationInvalid,
    #[error("{0}")]
    Password(#[from] PolicyError),
    #[error("the age confirmation is required to accept the invitation")]
    AgeNotConfirmed,
    #[error("the terms of use must be accepted (with their version) to accept the invitation")]
    TermsNotAccepted,
    #[error("account {account_id} would have no active user left holding users.manage and groups.manage; give another active user those permissions first")]
    LastAdministrator { account_id: String },
    #[error(transparent)]
    Hash(#[from] PasswordError),
    #[error("could not draw a random invitation token")]
    Random,
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for UserError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::LastAdministrator { account_id } => {
                UserError::LastAdministrator { account_id }
            }
            StoreError::InvitationRefused => UserError::InvitationInvalid,
            other => UserError::Store(other),
        }
    }
}

/// A fresh invitation: the token is shown once (in the accept link) and stored only hashed.
#[derive(Debug)]
pub struct Invited {
    pub user: User,
    /// 32 random bytes as 64 lowercase hex digits.
    pub token: String,
    pub expires_at: i64,
}

/// What the person accepting an invitation sends.
#[derive(Debug)]
pub struct AcceptRequest<'a> {
    pub token: &'a str,
    pub password: &'a str,
    pub age_confirmed: bool,
    /// The version of the terms of use accepted; `None` when they were not accepted.
    pub terms_version: Option<&'a str>,
}

fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// SHA-256 of the token's text form: what the store keeps and looks up by.
fn token_hash(token: &str) -> Vec<u8> {
    digest(&SHA256, token.trim().to_ascii_lowercase().as_bytes())
        .as_ref()
        .to_vec()
}

fn new_invitation(user_id: &str, now: i64) -> Result<(Invitation, String), UserError> {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| UserError::Random)?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let invitation = Invitation {
        token_hash: token_hash(&token),
        user_id: user_id.to_owned(),
        created_at: now,
        expires_at: now + INVITATION_TTL_SECS,
        used_at: None,
        replaced_at: None,
    };
    Ok((invitation, token))
}

fn checked_email(email: &str) -> Result<String, UserError> {
    let email = email.trim();
    let valid = email.chars().count() <= MAX_EMAIL_CHARS
        && !email.chars().any(char::is_whitespace)
        && matches!(email.split_once('@'), Some((local, domain))
            if !local.is_empty() && domain.contains('.') && !domain.contains('@')
                && !domain.starts_with('.') && !domain.ends_with('.'));
    if valid {
        Ok(email.to_owned())
    } else {
        Err(UserError::InvalidEmail(email.to_owned()))
    }
}

fn checked_name(name: &str) -> Result<String, UserError> {
    let name = name.trim();
    // No control characters: a name goes into mail, where a line break would let it
    // write lines of its own.
    if name.is_empty()
        || name.chars().count() > MAX_NAME_CHARS
        || name.chars().any(char::is_control)
    {
        return Err(UserError::InvalidName);
    }
    Ok(name.to_owned())
}

async fn group_named(
    store: &Arc<dyn Store>,
    account_id: &str,
    name: &str,
) -> Result<Group, UserError> {
    store
        .groups(account_id)
        .await?
        .into_iter()
        .find(|g| g.name == name)
        .ok_or_else(|| UserError::GroupNotFound {
            account_id: account_id.to_owned(),
            name: name.to_owned(),
        })
}

/// Invites `email` into the account, in `group` (the Administrators group when `None`):
/// the user is stored invited, with an invitation valid for 72 hours.
pub async fn invite(
    store: &Arc<dyn Store>,
    account_id: &str,
    email: &str,
    name: &str,
    group: Option<&str>,
    actor: Actor<'_>,
) -> Result<Invited, UserError> {
    let group_name = group.unwrap_or(ADMINISTRATORS_GROUP);
    let (mut invited, invitation) =
        new_invited_user(account_id, email, name, group_name, actor, now())?;
    if store.account(account_id).await?.is_none() {
        return Err(UserError::AccountNotFound(account_id.to_owned()));
    }
    let group = group_named(store, account_id, group_name).await?;
    if store.user_by_email(&invited.user.email).await?.is_some() {
        return Err(UserError::EmailTaken(invited.user.email));
    }
    match store
        .create_invited_user(&invited.user, &group.id, &invitation, actor)
        .await
    {
        // Lost a race with another invitation of the same email.
        Err(StoreError::Conflict(_)) => return Err(UserError::EmailTaken(invited.user.email)),
        other => other?,
    }
    invited.user.groups = vec![group.name];
    Ok(invited)
}

/// A user to invite into `account_id` as a member of `group_name`, with a fresh invitation
/// valid for 72 hours from `now`: the email and the name checked, nothing stored yet. The
/// [`Invitation`] is what the store keeps (the token's hash); [`Invited`] holds the token.
pub(crate) fn new_invited_user(
    account_id: &str,
    email: &str,
    name: &str,
    group_name: &str,
    actor: Actor<'_>,
    now: i64,
) -> Result<(Invited, Invitation), UserError> {
    let user = User {
        id: uuid::Uuid::new_v4().to_string(),
        account_id: account_id.to_owned(),
        email: checked_email(email)?,
        name: checked_name(name)?,
        status: UserStatus::Invited,
        created_at: now,
        // Who, without the address: the audit row keeps where from.
        created_by: crate::store::split_actor(actor).0.to_owned(),
        terms_version: None,
        terms_accepted_at: None,
        age_confirmed_at: None,
        groups: vec![group_name.to_owned()],
    };
    let (invitation, token) = new_invitation(&user.id, now)?;
    let invited = Invited {
        user,
        token,
        expires_at: invitation.expires_at,
    };
    Ok((invited, invitation))
}

/// Finds a user by id or (case-insensitively) by email.
pub async fn find(store: &Arc<dyn Store>, id_or_email: &str) -> Result<User, UserError> {
    let key = id_or_email.trim();
    let found = if key.contains('@') {
        store.user_by_email(key).await?
    } else {
        store.user(key).await?
    };
    found.ok_or_else(|| UserError::UserNotFound(key.to_owned()))
}

/// Issues a new invitation for an invited user; the previous link stops working.
pub async fn resend(
    store: &Arc<dyn Store>,
    id_or_email: &str,
    actor: Actor<'_>,
) -> Result<Invited, UserError> {
    let user = find(store, id_or_email).await?;
    if user.status != UserStatus::Invited {
        return Err(UserError::NotInvited(user.email));
    }
    let (invitation, token) = new_invitation(&user.id, now())?;
    store.replace_invitation(&invitation, actor).await?;
    Ok(Invited {
        user,
        token,
        expires_at: invitation.expires_at,
    })
}

/// Accepts an invitation: the token must be unused, not replaced and younger than 72
/// hours; the password must pass the policy; age and terms must be confirmed. The user is
/// then active with the password's Argon2id hash, and the token is used up.
pub async fn accept(
    store: &Arc<dyn Store>,
    request: &AcceptRequest<'_>,
) -> Result<User, UserError> {
    let hash = token_hash(request.token);
    let now = now();
    let invitation = store
        .invitation(&hash)
        .await?
        .filter(|i| i.used_at.is_none() && i.replaced_at.is_none() && i.expires_at > now)
        .ok_or(UserError::InvitationInvalid)?;
    let user = store
        .user(&invitation.user_id)
        .await?
        .ok_or(UserError::InvitationInvalid)?;
    if !request.age_confirmed {
        return Err(UserError::AgeNotConfirmed);
    }
    let terms_version = request
        .terms_version
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or(UserError::TermsNotAccepted)?;
    passwords::check_policy(request.password, &user.email, &user.name)?;
    let password_hash = passwords::hash_async(request.password).await?;
    Ok(store
        .accept_invitation(&Acceptance {
            token_hash: &hash,
            password_hash: &password_hash,
            terms_version,
            now,
        })
        .await?)
}

/// Disables or enables a user; returns false when they already were in that state (an
/// invited user is neither). Disabling the last active administrator is refused.
pub async fn set_disabled(
    store: &Arc<dyn Store>,
    id_or_email: &str,
    disabled: bool,
    actor: Actor<'_>,
) -> Result<(User, bool), UserError> {
    let user = find(store, id_or_email).await?;
    let changed = store
        .set_user_disabled(&user.id, disabled, now(), actor)
        .await?;
    let user = find(store, &user.id).await?;
    Ok((user, changed))
}

/// The link that accepts an invitation: `{base_url}/invitations/accept#token=<token>`. The
/// token goes in the fragment, which browsers do not send to servers or put in Referer
/// headers; the console page posts it to the API. The same form as the CLI prints.
pub fn invitation_link(base_url: &str, token: &str) -> String {
    format!(
        "{}/invitations/accept#token={token}",
        base_url.trim_end_matches('/')
    )
}

/// Renames a user (the name is checked like an invited one); audited `user.updated`.
pub async fn rename(
    store: &Arc<dyn Store>,
    user_id: &str,
    name: &str,
    actor: Actor<'_>,
) -> Result<User, UserError> {
    let name = checked_name(name)?;
    match store.update_user(user_id, &name, now(), actor).await {
        Err(StoreError::NotFound { .. }) => Err(UserError::UserNotFound(user_id.to_owned())),
        other => Ok(other?),
    }
}

/// Creates a group in the account with the given permissions.
pub async fn create_group(
    store: &Arc<dyn Store>,
    account_id: &str,
    name: &str,
    permissions: PermissionSet,
    actor: Actor<'_>,
) -> Result<Group, UserError> {
    let name = checked_name(name)?;
    if store.account(account_id).await?.is_none() {
        return Err(UserError::AccountNotFound(account_id.to_owned()));
    }
    let group = Group {
        id: uuid::Uuid::new_v4().to_string(),
        account_id: account_id.to_owned(),
        name,
        created_at: now(),
        permissions,
        members: 0,
    };
    match store.create_group(&group, actor).await {
        Err(StoreError::Conflict(_)) => Err(UserError::GroupNameTaken {
            account_id: group.account_id,
            name: group.name,
        }),
        other => other.map(|()| group).map_err(UserError::from),
    }
}

/// Replaces a group's permissions; refused when that would leave the account without an
/// active user holding `users.manage` and `groups.manage`.
pub async fn set_group_permissions(
    store: &Arc<dyn Store>,
    account_id: &str,
    name: &str,
    permissions: &PermissionSet,
    actor: Actor<'_>,
) -> Result<(), UserError> {
    let group = group_named(store, account_id, name).await?;
    store
        .set_group_permissions(&group.id, permissions, now(), actor)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::permissions::Permission;
    use crate::secrets::CodeKey;
    use crate::store::{AccountKind, SqliteStore};

    const PASSWORD: &str = "violet kettle under ninety";

    async fn setup() -> (tempfile::TempDir, Arc<dyn Store>, String) {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open(&dir.path().join("t.db")).await.unwrap());
        let key = CodeKey::from_bytes(&[7; crate::secrets::KEY_LEN]).unwrap();
        let (account, _) =
            crate::accounts::create(&store, &key, "Partner", AccountKind::Partner, None, "test")
                .await
                .unwrap();
        (dir, store, account.id)
    }

    fn accept_with<'a>(token: &'a str, password: &'a str) -> AcceptRequest<'a> {
        AcceptRequest {
            token,
            password,
            age_confirmed: true,
            terms_version: Some("2026-01"),
        }
    }

    async fn active_admin(store: &Arc<dyn Store>, account: &str, email: &str) -> User {
        let invited = invite(store, account, email, "Admin", None, "test")
            .await
            .unwrap();
        accept(store, &accept_with(&invited.token, PASSWORD))
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_new_account_has_an_administrators_group_with_every_permission() {
        let (_dir, store, account) = setup().await;
        let groups = store.groups(&account).await.unwrap();
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].name, ADMINISTRATORS_GROUP);
        assert_eq!(groups[0].permissions, PermissionSet::all());
    }

    #[tokio::test]
    async fn invite_stores_an_invited_user_in_administrators_and_hashes_the_token() {
        let (_dir, store, account) = setup().await;
        let invited = invite(&store, &account, " Jo@Example.com ", "Jo", None, "cli:root")
            .await
            .unwrap();
        assert_eq!(invited.token.len(), 64);
        assert_eq!(invited.user.status, UserStatus::Invited);
        assert_eq!(invited.expires_at - invited.user.created_at, 72 * 3600);
        let stored = find(&store, "jo@example.com").await.unwrap();
        assert_eq!(stored.email, "Jo@Example.com");
        assert_eq!(stored.groups, vec![ADMINISTRATORS_GROUP.to_string()]);
        assert!(store
            .invitation(invited.token.as_bytes())
            .await
            .unwrap()
            .is_none());
        let audit = store.audit_log(10).await.unwrap();
        let text = format!("{audit:?}");
        assert!(text.contains("user.invited"));
        assert!(!text.contains(&invited.token));
    }

    #[tokio::test]
    async fn an_email_is_taken_in_any_case() {
        let (_dir, store, account) = setup().await;
        invite(&store, &account, "jo@example.com", "Jo", None, "t")
            .await
            .unwrap();
        let err = invite(&store, &account, "JO@EXAMPLE.COM", "Jo", None, "t")
            .await
            .unwrap_err();
        assert!(matches!(err, UserError::EmailTaken(_)), "{err}");
    }

    #[tokio::test]
    async fn invite_refuses_bad_email_unknown_account_and_unknown_group() {
        let (_dir, store, account) = setup().await;
        for bad in [
            "",
            "jo",
            "jo@",
            "@example.com",
            "jo@example",
            "j o@example.com",
        ] {
            assert!(matches!(
                invite(&store, &account, bad, "Jo", None, "t").await,
                Err(UserError::InvalidEmail(_))
            ));
        }
        assert!(matches!(
            invite(&store, "nope", "jo@example.com", "Jo", None, "t").await,
            Err(UserError::AccountNotFound(_))
        ));
        assert!(matches!(
            invite(
                &store,
                &account,
                "jo@example.com",
                "Jo",
                Some("Viewers"),
                "t"
            )
            .await,
            Err(UserError::GroupNotFound { .. })
        ));
        assert!(store.users(None).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn accepting_activates_the_user_once_and_records_the_terms() {
        let (_dir, store, account) = setup().await;
        let invited = invite(&store, &account, "jo@example.com", "Jo", None, "t")
            .await
            .unwrap();
        let user = accept(&store, &accept_with(&invited.token, PASSWORD))
            .await
            .unwrap();
        assert_eq!(user.status, UserStatus::Active);
        assert_eq!(user.terms_version.as_deref(), Some("2026-01"));
        assert!(user.terms_accepted_at.is_some() && user.age_confirmed_at.is_some());
        assert!(matches!(
            accept(&store, &accept_with(&invited.token, PASSWORD)).await,
            Err(UserError::InvitationInvalid)
        ));
        let text = format!("{:?}", store.audit_log(10).await.unwrap());
        assert!(text.contains("invitation.accepted"));
        assert!(!text.contains(PASSWORD) && !text.contains("argon2"));
    }

    #[tokio::test]
    async fn accepting_requires_policy_password_age_and_terms_and_keeps_the_token_on_refusal() {
        let (_dir, store, account) = setup().await;
        let invited = invite(&store, &account, "jo@example.com", "Jo", None, "t")
            .await
            .unwrap();
        let t = invited.token.as_str();
        assert!(matches!(
            accept(&store, &accept_with(t, "short")).await,
            Err(UserError::Password(PolicyError::TooShort { .. }))
        ));
        assert!(matches!(
            accept(&store, &accept_with(t, "1qaz2wsx3edc")).await,
            Err(UserError::Password(PolicyError::Common))
        ));
        let mut no_age = accept_with(t, PASSWORD);
        no_age.age_confirmed = false;
        assert!(matches!(
            accept(&store, &no_age).await,
            Err(UserError::AgeNotConfirmed)
        ));
        let mut no_terms = accept_with(t, PASSWORD);
        no_terms.terms_version = None;
        assert!(matches!(
            accept(&store, &no_terms).await,
            Err(UserError::TermsNotAccepted)
        ));
        assert!(matches!(
            accept(&store, &accept_with("00ff", PASSWORD)).await,
            Err(UserError::InvitationInvalid)
        ));
        // Every refusal left the invitation usable.
        accept(&store, &accept_with(t, PASSWORD)).await.unwrap();
    }

    #[tokio::test]
    async fn resend_replaces_the_previous_token() {
        let (_dir, store, account) = setup().await;
        let first = invite(&store, &account, "jo@example.com", "Jo", None, "t")
            .await
            .unwrap();
        let second = resend(&store, "JO@example.com", "t").await.unwrap();
        assert_ne!(first.token, second.token);
        assert!(matches!(
            accept(&store, &accept_with(&first.token, PASSWORD)).await,
            Err(UserError::InvitationInvalid)
        ));
        accept(&store, &accept_with(&second.token, PASSWORD))
            .await
            .unwrap();
        assert!(matches!(
            resend(&store, "jo@example.com", "t").await,
            Err(UserError::NotInvited(_))
        ));
    }

    #[tokio::test]
    async fn an_expired_invitation_is_refused() {
        let (_dir, store, account) = setup().await;
        let invited = invite(&store, &account, "jo@example.com", "Jo", None, "t")
            .await
            .unwrap();
        // A token stored with an expiry in the past, as the clock would make it.
        let (mut old, token) =
            new_invitation(&invited.user.id, now() - INVITATION_TTL_SECS - 1).unwrap();
        old.created_at = now();
        store.replace_invitation(&old, "t").await.unwrap();
        assert!(matches!(
            accept(&store, &accept_with(&token, PASSWORD)).await,
            Err(UserError::InvitationInvalid)
        ));
    }

    #[tokio::test]
    async fn the_last_active_administrator_cannot_be_disabled() {
        let (_dir, store, account) = setup().await;
        active_admin(&store, &account, "a@example.com").await;
        assert!(matches!(
            set_disabled(&store, "a@example.com", true, "t").await,
            Err(UserError::LastAdministrator { .. })
        ));
        active_admin(&store, &account, "b@example.com").await;
        let (user, changed) = set_disabled(&store, "a@example.com", true, "t")
            .await
            .unwrap();
        assert!(changed);
        assert_eq!(user.status, UserStatus::Disabled);
        assert!(matches!(
            set_disabled(&store, "b@example.com", true, "t").await,
            Err(UserError::LastAdministrator { .. })
        ));
        let (user, changed) = set_disabled(&store, "a@example.com", false, "t")
            .await
            .unwrap();
        assert!(changed && user.status == UserStatus::Active);
        let (_, changed) = set_disabled(&store, "a@example.com", false, "t")
            .await
            .unwrap();
        assert!(!changed);
    }

    #[tokio::test]
    async fn a_user_without_administration_permissions_can_always_be_disabled() {
        let (_dir, store, account) = setup().await;
        active_admin(&store, &account, "a@example.com").await;
        let view: PermissionSet = [Permission::RecordersView].into_iter().collect();
        create_group(&store, &account, "Viewers", view, "t")
            .await
            .unwrap();
        let invited = invite(&store, &account, "v@example.com", "V", Some("Viewers"), "t")
            .await
            .unwrap();
        accept(&store, &accept_with(&invited.token, PASSWORD))
            .await
            .unwrap();
        let (_, changed) = set_disabled(&store, "v@example.com", true, "t")
            .await
            .unwrap();
        assert!(changed);
    }

    #[tokio::test]
    async fn the_last_group_giving_administration_keeps_users_and_groups_manage() {
        let (_dir, store, account) = setup().await;
        active_admin(&store, &account, "a@example.com").await;
        let without: PermissionSet = [Permission::UsersManage].into_iter().collect();
        assert!(matches!(
            set_group_permissions(&store, &account, ADMINISTRATORS_GROUP, &without, "t").await,
            Err(UserError::LastAdministrator { .. })
        ));
        let groups = store.groups(&account).await.unwrap();
        assert_eq!(
            groups[0].permissions,
            PermissionSet::all(),
            "nothing written"
        );
        // Removing other permissions is fine.
        let admin: PermissionSet = Permission::ADMINISTRATION.into_iter().collect();
        set_group_permissions(&store, &account, ADMINISTRATORS_GROUP, &admin, "t")
            .await
            .unwrap();
    }

    #[test]
    fn the_invitation_link_carries_the_token_in_the_fragment() {
        assert_eq!(
            invitation_link("https://prov.example.com/", "ab12"),
            "https://prov.example.com/invitations/accept#token=ab12"
        );
    }

    #[tokio::test]
    async fn renaming_checks_the_name_like_an_invitation() {
        let (_dir, store, account) = setup().await;
        let user = active_admin(&store, &account, "a@example.com").await;
        let renamed = rename(&store, &user.id, "  Ada Lovelace ", "t")
            .await
            .unwrap();
        assert_eq!(renamed.name, "Ada Lovelace");
        assert!(matches!(
            rename(&store, &user.id, "   ", "t").await,
            Err(UserError::InvalidName)
        ));
        assert!(matches!(
            rename(&store, "nobody", "Ada", "t").await,
            Err(UserError::UserNotFound(_))
        ));
    }

    #[tokio::test]
    async fn group_names_are_unique_per_account() {
        let (_dir, store, account) = setup().await;
        let err = create_group(
            &store,
            &account,
            ADMINISTRATORS_GROUP,
            PermissionSet::empty(),
            "t",
        )
        .await
        .unwrap_err();
        assert!(matches!(err, UserError::GroupNameTaken { .. }), "{err}");
        let group = create_group(&store, &account, "Viewers", PermissionSet::empty(), "t")
            .await
            .unwrap();
        assert_eq!(group.name, "Viewers");
        assert_eq!(store.groups(&account).await.unwrap().len(), 2);
    }
}
