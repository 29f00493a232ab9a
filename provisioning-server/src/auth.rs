//! Who is calling the admin API: logins with their limits, browser sessions with their
//! CSRF tokens, bearer API tokens, and password resets.
//!
//! Every secret handed out here (session cookie, API token, reset link) is random from the
//! system generator and stored only as its SHA-256; lookups go by that hash, so comparing
//! is an index lookup of a digest and never a byte-by-byte compare of the secret. The CSRF
//! token is derived from the session cookie and compared in constant time.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ring::digest::{digest, SHA256};
use ring::rand::{SecureRandom, SystemRandom};
use subtle::ConstantTimeEq;

use crate::config::AdminSection;
use crate::limits::ClientKey;
use crate::passwords::{self, PasswordError, PolicyError};
use crate::permissions::PermissionSet;
use crate::store::{
    actor_from, ApiToken, NewAuditEntry, PasswordReset, Session, Store, StoreError, User,
    UserStatus,
};

/// The session cookie's name. `__Host-` makes browsers insist on `Secure`, `Path=/` and no
/// `Domain`, so no other host or path can plant or read it.
pub const SESSION_COOKIE: &str = "__Host-contera_session";
/// The header that carries the CSRF token on every state-changing request made with a
/// session cookie.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Bearer API tokens start with this, so secret scanners and people recognise them.
pub const API_TOKEN_PREFIX: &str = "contera_";
/// How long a password-reset link works: 72 hours, like an invitation.
pub const RESET_TTL_SECS: i64 = 72 * 3600;
/// `last_seen_at` and `last_used_at` are written at most this often per credential, so a
/// busy script does not turn every read into a write.
const TOUCH_EVERY_SECS: i64 = 60;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Unknown email, wrong password, or a user who may not log in: one answer for all.
    #[error("the email or password is wrong")]
    InvalidCredentials,
    #[error("too many failed logins; retry in {retry_after_secs} s")]
    TooManyFailures { retry_after_secs: u64 },
    /// No credential, or one that is unknown, expired, revoked or whose user is no longer
    /// active: log in again.
    #[error("not logged in, or the session or token has ended; log in again")]
    Unauthenticated,
    #[error("this reset link is not valid any more (used, replaced or older than 72 hours); ask for a new one")]
    ResetInvalid,
    #[error("{0}")]
    Password(#[from] PolicyError),
    #[error(transparent)]
    Hash(#[from] PasswordError),
    #[error("could not draw random bytes")]
    Random,
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn random_hex(bytes: usize) -> Result<String, AuthError> {
    let mut buf = vec![0u8; bytes];
    SystemRandom::new()
        .fill(&mut buf)
        .map_err(|_| AuthError::Random)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// SHA-256 of a secret's text form: what the store keeps and looks up by.
pub fn secret_hash(secret: &str) -> Vec<u8> {
    digest(&SHA256, secret.trim().as_bytes()).as_ref().to_vec()
}

/// The CSRF token of a session: a hash of its cookie under a fixed label, so it needs no
/// storage, differs from the cookie, and a page that learns it cannot recover the cookie.
pub fn csrf_token(session_token: &str) -> String {
    let mut input = b"contera csrf v1\0".to_vec();
    input.extend_from_slice(session_token.as_bytes());
    digest(&SHA256, &input)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether `given` is the session's CSRF token, in constant time.
pub fn csrf_matches(session_token: &str, given: &str) -> bool {
    csrf_token(session_token)
        .as_bytes()
        .ct_eq(given.trim().as_bytes())
        .into()
}

/// Failed logins per email and per source address over sliding windows. In memory, so
/// per server replica: each replica allows the configured number (documented).
#[derive(Debug)]
pub struct LoginLimits {
    per_email: u32,
    email_window: Duration,
    per_address: u32,
    address_window: Duration,
    failures: Mutex<Failures>,
    /// Makes [`LoginLimits::begin`]'s check-and-count atomic.
    begin_lock: Mutex<()>,
}

#[derive(Debug, Default)]
struct Failures {
    by_email: HashMap<String, VecDeque<Instant>>,
    by_address: HashMap<ClientKey, VecDeque<Instant>>,
}

/// Longest email a login considers (the SMTP path limit).
pub const MAX_EMAIL_CHARS: usize = 254;
/// Longest password a login considers; no stored password is longer.
pub const MAX_PASSWORD_CHARS: usize = passwords::MAX_CHARS;

/// Reset mails one email can be sent per hour.
pub const RESETS_PER_EMAIL_PER_HOUR: u32 = 5;
/// "Forgot password" requests one address can make per hour.
pub const RESETS_PER_ADDRESS_PER_HOUR: u32 = 30;

/// Past this many tracked emails or addresses, expired entries are swept before adding.
const MAX_TRACKED: usize = 100_000;

fn prune(times: &mut VecDeque<Instant>, window: Duration, now: Instant) {
    while times
        .front()
        .is_some_and(|t| now.duration_since(*t) >= window)
    {
        times.pop_front();
    }
}

/// Seconds until the oldest failure leaves the window, when `limit` are inside it.
fn refused_for(
    times: Option<&mut VecDeque<Instant>>,
    limit: u32,
    window: Duration,
    now: Instant,
) -> Option<u64> {
    let times = times?;
    prune(times, window, now);
    if times.len() < limit as usize {
        return None;
    }
    let oldest = *times.front()?;
    let left = window.saturating_sub(now.duration_since(oldest));
    Some(left.as_secs_f64().ceil().max(1.0) as u64)
}

impl LoginLimits {
    /// Failed logins, as configured in `[admin]`.
    pub fn new(config: &AdminSection) -> Self {
        Self::with(
            config.login_failures_per_email,
            Duration::from_secs(u64::from(config.login_failure_window_minutes) * 60),
            config.login_failures_per_address_per_hour,
        )
    }

    /// "Forgot password" requests: [`RESETS_PER_EMAIL_PER_HOUR`] per email and
    /// [`RESETS_PER_ADDRESS_PER_HOUR`] per address, so nobody can flood a mailbox with
    /// reset mail or the relay with messages. Unknown emails count the same as known ones.
    pub fn resets() -> Self {
        Self::with(
            RESETS_PER_EMAIL_PER_HOUR,
            Duration::from_secs(3600),
            RESETS_PER_ADDRESS_PER_HOUR,
        )
    }

    fn with(per_email: u32, email_window: Duration, per_address: u32) -> Self {
        LoginLimits {
            per_email,
            email_window,
            per_address,
            address_window: Duration::from_secs(3600),
            failures: Mutex::new(Failures::default()),
            begin_lock: Mutex::new(()),
        }
    }

    /// Refuses a login for an email or address that used up its failures, with the
    /// seconds until one more attempt is allowed.
    pub fn check(&self, email: &str, ip: IpAddr) -> Result<(), AuthError> {
        let now = Instant::now();
        let mut f = self.failures.lock().expect("login limits lock");
        let email_wait = refused_for(
            f.by_email.get_mut(&email.trim().to_lowercase()),
            self.per_email,
            self.email_window,
            now,
        );
        let address_wait = refused_for(
            f.by_address.get_mut(&ClientKey::of(ip)),
            self.per_address,
            self.address_window,
            now,
        );
        match email_wait.max(address_wait) {
            Some(retry_after_secs) => Err(AuthError::TooManyFailures { retry_after_secs }),
            None => Ok(()),
        }
    }

    /// Checks and counts an attempt in one step (under one lock), so that concurrent
    /// attempts cannot all pass the check before any of them is counted.
    pub fn begin(&self, email: &str, ip: IpAddr) -> Result<(), AuthError> {
        let _one_at_a_time = self.begin_lock.lock().expect("login limits lock");
        self.check(email, ip)?;
        self.fail(email, ip);
        Ok(())
    }

    /// Takes back the attempt [`LoginLimits::begin`] counted, when it succeeded.
    pub fn forgive(&self, email: &str, ip: IpAddr) {
        let mut f = self.failures.lock().expect("login limits lock");
        if let Some(times) = f.by_email.get_mut(&email.trim().to_lowercase()) {
            times.pop_back();
        }
        if let Some(times) = f.by_address.get_mut(&ClientKey::of(ip)) {
            times.pop_back();
        }
    }

    /// Counts a failed login against the email and the address.
    pub fn fail(&self, email: &str, ip: IpAddr) {
        let now = Instant::now();
        let mut f = self.failures.lock().expect("login limits lock");
        if f.by_email.len() >= MAX_TRACKED {
            let window = self.email_window;
            f.by_email.retain(|_, t| {
                prune(t, window, now);
                !t.is_empty()
            });
        }
        if f.by_address.len() >= MAX_TRACKED {
            let window = self.address_window;
            f.by_address.retain(|_, t| {
                prune(t, window, now);
                !t.is_empty()
            });
        }
        f.by_email
            .entry(email.trim().to_lowercase())
            .or_default()
            .push_back(now);
        f.by_address
            .entry(ClientKey::of(ip))
            .or_default()
            .push_back(now);
    }
}

/// A session just created: the cookie value and its CSRF token are shown once.
#[derive(Debug)]
pub struct LoggedIn {
    pub user: User,
    pub token: String,
    pub csrf_token: String,
    pub expires_at: i64,
}

/// Logs in with email and password. Every failure (unknown email, no password yet,
/// disabled, wrong password) takes one Argon2 verification and gets the same error, is
/// counted against the email and the address, and is audited (`login.failed`, naming the
/// user only when the email is one).
pub async fn login(
    store: &Arc<dyn Store>,
    config: &AdminSection,
    limits: &LoginLimits,
    email: &str,
    password: &str,
    source: IpAddr,
) -> Result<LoggedIn, AuthError> {
    let email = email.trim();
    if email.chars().count() > MAX_EMAIL_CHARS || password.chars().count() > MAX_PASSWORD_CHARS {
        // Nothing this long was ever stored: refused before the limiters keep it or
        // Argon2 reads it, with the answer a wrong password gets.
        return Err(AuthError::InvalidCredentials);
    }
    // The attempt counts before the password is checked, so concurrent guesses cannot
    // all pass the check while the counters still read zero; a success takes it back.
    limits.begin(email, source)?;
    let record = store.login_record(email).await?;
    let stored = record
        .as_ref()
        .filter(|(user, _)| user.status == UserStatus::Active)
        .and_then(|(_, hash)| hash.clone());
    let ok = passwords::verify_or_dummy_async(password, stored).await;
    let now = now();
    let user = match (ok, record) {
        (true, Some((user, _))) => {
            limits.forgive(email, source);
            user
        }
        (_, record) => {
            let (who, account_id) = match &record {
                Some((user, _)) => (format!("user:{}", user.id), Some(user.account_id.clone())),
                None => ("anonymous".to_owned(), None),
            };
            store
                .append_audit(&[NewAuditEntry {
                    at: now,
                    actor: actor_from(&who, source),
                    action: "login.failed".to_owned(),
                    account_id,
                    recorder_id: None,
                    detail: serde_json::json!({}),
                }])
                .await?;
            return Err(AuthError::InvalidCredentials);
        }
    };
    let token = random_hex(16)?;
    let expires_at = now + i64::from(config.session_absolute_hours) * 3600;
    store
        .create_session(
            &Session {
                token_hash: secret_hash(&token),
                user_id: user.id.clone(),
                created_at: now,
                last_seen_at: now,
                expires_at,
                source: Some(source.to_string()),
            },
            &actor_from(&format!("user:{}", user.id), source),
        )
        .await?;
    Ok(LoggedIn {
        csrf_token: csrf_token(&token),
        user,
        token,
        expires_at,
    })
}

/// Logs a session in straight after its user accepted an invitation (they just proved
/// the token and set the password).
pub async fn start_session(
    store: &Arc<dyn Store>,
    config: &AdminSection,
    user: User,
    source: IpAddr,
) -> Result<LoggedIn, AuthError> {
    let now = now();
    let token = random_hex(16)?;
    let expires_at = now + i64::from(config.session_absolute_hours) * 3600;
    store
        .create_session(
            &Session {
                token_hash: secret_hash(&token),
                user_id: user.id.clone(),
                created_at: now,
                last_seen_at: now,
                expires_at,
                source: Some(source.to_string()),
            },
            &actor_from(&format!("user:{}", user.id), source),
        )
        .await?;
    Ok(LoggedIn {
        csrf_token: csrf_token(&token),
        user,
        token,
        expires_at,
    })
}

/// The active user behind a session cookie. Unknown, idle-expired, absolutely expired
/// sessions and those of users no longer active are all `Unauthenticated`; an expired
/// one is deleted on the way.
pub async fn session_user(
    store: &Arc<dyn Store>,
    config: &AdminSection,
    token: &str,
) -> Result<(Session, User), AuthError> {
    let hash = secret_hash(token);
    let session = store
        .session(&hash)
        .await?
        .ok_or(AuthError::Unauthenticated)?;
    let now = now();
    let idle = i64::from(config.session_idle_minutes) * 60;
    if now >= session.expires_at || now - session.last_seen_at >= idle {
        store.end_session(&hash, now, "server").await?;
        return Err(AuthError::Unauthenticated);
    }
    let user = store
        .user(&session.user_id)
        .await?
        .filter(|u| u.status == UserStatus::Active)
        .ok_or(AuthError::Unauthenticated)?;
    if now - session.last_seen_at >= TOUCH_EVERY_SECS {
        store.touch_session(&hash, now).await?;
    }
    Ok((session, user))
}

/// The active user and the token behind a bearer token; unknown, expired and revoked
/// tokens and those of users no longer active are `Unauthenticated`.
pub async fn token_user(
    store: &Arc<dyn Store>,
    token: &str,
) -> Result<(ApiToken, User), AuthError> {
    if !token.starts_with(API_TOKEN_PREFIX) {
        return Err(AuthError::Unauthenticated);
    }
    let now = now();
    let api_token = store
        .api_token_by_hash(&secret_hash(token))
        .await?
        .filter(|t| t.revoked_at.is_none() && t.expires_at.is_none_or(|at| at > now))
        .ok_or(AuthError::Unauthenticated)?;
    let user = store
        .user(&api_token.user_id)
        .await?
        .filter(|u| u.status == UserStatus::Active)
        .ok_or(AuthError::Unauthenticated)?;
    if api_token
        .last_used_at
        .is_none_or(|at| now - at >= TOUCH_EVERY_SECS)
    {
        store.touch_api_token(&api_token.id, now).await?;
    }
    Ok((api_token, user))
}

/// A token just made: its secret is shown once.
#[derive(Debug)]
pub struct NewToken {
    pub token: ApiToken,
    pub secret: String,
}

/// Makes an API token for `user` holding `permissions` (the caller has checked they are
/// a subset of the user's own).
pub async fn create_token(
    store: &Arc<dyn Store>,
    user: &User,
    name: &str,
    permissions: PermissionSet,
    expires_at: Option<i64>,
    actor: &str,
) -> Result<NewToken, AuthError> {
    let secret = format!("{API_TOKEN_PREFIX}{}", random_hex(32)?);
    let token = ApiToken {
        id: uuid::Uuid::new_v4().to_string(),
        token_hash: secret_hash(&secret),
        user_id: user.id.clone(),
        name: name.to_owned(),
        permissions,
        created_at: now(),
        expires_at,
        last_used_at: None,
        revoked_at: None,
    };
    store.create_api_token(&token, actor).await?;
    Ok(NewToken { token, secret })
}

/// A reset link to send, or None when the email belongs to nobody who can log in (the
/// caller answers the same either way).
pub async fn request_reset(
    store: &Arc<dyn Store>,
    email: &str,
    source: IpAddr,
) -> Result<Option<(User, String)>, AuthError> {
    let Some(user) = store
        .user_by_email(email.trim())
        .await?
        .filter(|u| u.status == UserStatus::Active)
    else {
        return Ok(None);
    };
    let token = random_hex(32)?;
    let now = now();
    store
        .create_password_reset(
            &PasswordReset {
                token_hash: secret_hash(&token),
                user_id: user.id.clone(),
                created_at: now,
                expires_at: now + RESET_TTL_SECS,
                used_at: None,
                replaced_at: None,
            },
            &actor_from("anonymous", source),
        )
        .await?;
    Ok(Some((user, token)))
}

/// Sets a new password with a reset link; every session and token of the user ends.
pub async fn reset_password(
    store: &Arc<dyn Store>,
    token: &str,
    password: &str,
    source: IpAddr,
) -> Result<User, AuthError> {
    let hash = secret_hash(token);
    let now = now();
    let reset = store
        .password_reset(&hash)
        .await?
        .filter(|r| r.used_at.is_none() && r.replaced_at.is_none() && r.expires_at > now)
        .ok_or(AuthError::ResetInvalid)?;
    let user = store
        .user(&reset.user_id)
        .await?
        .filter(|u| u.status == UserStatus::Active)
        .ok_or(AuthError::ResetInvalid)?;
    passwords::check_policy(password, &user.email, &user.name)?;
    let password_hash = passwords::hash_async(password).await?;
    store
        .reset_password(&hash, &password_hash, now, Some(&source.to_string()))
        .await
        .map_err(|e| match e {
            StoreError::InvitationRefused => AuthError::ResetInvalid,
            other => AuthError::Store(other),
        })
}

/// Changes a logged-in user's password after checking the current one. Every session and
/// token of the user ends (a stolen session must not survive a password change); the
/// caller starts a fresh session for the person who changed it.
pub async fn change_password(
    store: &Arc<dyn Store>,
    limits: &LoginLimits,
    user: &User,
    current: &str,
    new: &str,
    source: IpAddr,
) -> Result<(), AuthError> {
    // A wrong current password is a failed login: counted against the same limits and
    // audited, so a stolen session cannot guess the password to take the account over.
    if current.chars().count() > MAX_PASSWORD_CHARS {
        return Err(AuthError::InvalidCredentials);
    }
    limits.begin(&user.email, source)?;
    let stored = store.password_hash(&user.id).await?;
    if !passwords::verify_or_dummy_async(current, stored).await {
        store
            .append_audit(&[NewAuditEntry {
                at: now(),
                actor: actor_from(&format!("user:{}", user.id), source),
                action: "password.change_failed".to_owned(),
                account_id: Some(user.account_id.clone()),
                recorder_id: None,
                detail: serde_json::json!({}),
            }])
            .await?;
        return Err(AuthError::InvalidCredentials);
    }
    limits.forgive(&user.email, source);
    passwords::check_policy(new, &user.email, &user.name)?;
    let hash = passwords::hash_async(new).await?;
    let actor = actor_from(&format!("user:{}", user.id), source);
    let actor = actor.as_str();
    if !store.change_password(&user.id, &hash, now(), actor).await? {
        return Err(AuthError::Unauthenticated);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_email: u32, per_address: u32) -> LoginLimits {
        LoginLimits::new(&AdminSection {
            login_failures_per_email: per_email,
            login_failures_per_address_per_hour: per_address,
            ..AdminSection::default()
        })
    }

    #[test]
    fn the_tenth_failure_for_an_email_locks_it_for_the_window_from_any_address() {
        let l = limits(10, 100);
        for i in 0..10 {
            l.check("A@example.com", format!("192.0.2.{i}").parse().unwrap())
                .unwrap();
            l.fail("a@example.com", format!("192.0.2.{i}").parse().unwrap());
        }
        match l.check("a@EXAMPLE.com", "198.51.100.1".parse().unwrap()) {
            Err(AuthError::TooManyFailures { retry_after_secs }) => {
                assert!(
                    (890..=900).contains(&retry_after_secs),
                    "{retry_after_secs}"
                )
            }
            other => panic!("{other:?}"),
        }
        l.check("b@example.com", "198.51.100.1".parse().unwrap())
            .unwrap();
    }

    #[test]
    fn an_address_is_locked_after_its_failures_across_many_emails() {
        let l = limits(10, 5);
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        for i in 0..5 {
            l.fail(&format!("u{i}@example.com"), ip);
        }
        // Another address of the same /64 is the same client.
        let err = l
            .check("new@example.com", "2001:db8::2".parse().unwrap())
            .unwrap_err();
        assert!(
            matches!(err, AuthError::TooManyFailures { retry_after_secs } if retry_after_secs > 3500)
        );
        l.check("new@example.com", "2001:db8:1::1".parse().unwrap())
            .unwrap();
    }

    #[test]
    fn the_csrf_token_differs_from_the_cookie_and_only_its_own_matches() {
        let t = csrf_token("abc");
        assert_ne!(t, "abc");
        assert!(csrf_matches("abc", &t));
        assert!(!csrf_matches("abd", &t));
        assert!(!csrf_matches("abc", ""));
    }
}
