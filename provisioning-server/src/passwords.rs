//! User passwords: Argon2id hashing into PHC strings, verification that costs the same for
//! unknown users, and the policy a new password must pass.

use std::collections::HashSet;
use std::sync::OnceLock;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use ring::rand::{SecureRandom, SystemRandom};

/// Fewest characters (Unicode scalar values, not bytes) a password may have.
pub const MIN_CHARS: usize = 12;
/// Most characters a password may have: long enough for any passphrase, short enough that
/// hashing it is not a way to burn server time.
pub const MAX_CHARS: usize = 128;

/// The common-password list refused by [`check_policy`]: the 20,000 most common passwords
/// (lowercased, deduplicated) compiled by Royce Williams, as shipped by Django
/// (`django/contrib/auth/common-passwords.txt.gz` in the Django 5.2.19 wheel from PyPI,
/// BSD-3-Clause licence, © Django Software Foundation and contributors), un-gzipped.
const COMMON_PASSWORDS: &str = include_str!("../data/common-passwords.txt");

/// Why a password could not be hashed or a stored hash could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("could not draw a random salt from the operating system")]
    Random,
    #[error("could not hash the password: {0}")]
    Hash(String),
}

/// Why a new password is refused; each message says what to choose instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("the password has {chars} characters; use at least {MIN_CHARS} (a few words make a good one)")]
    TooShort { chars: usize },
    #[error("the password has {chars} characters; use at most {MAX_CHARS}")]
    TooLong { chars: usize },
    #[error("the password is among the most common passwords; choose one nobody else uses")]
    Common,
    #[error("the password is the same as the user's email address or name; choose something else")]
    SameAsIdentity,
}

/// Hashes `password` with Argon2id (the crate's default parameters, OWASP's minimum:
/// 19 MiB, 2 passes, 1 lane) and a 16-byte salt from ring's `SystemRandom`, the workspace's
/// one random source. The PHC string carries algorithm, parameters and salt, so stronger
/// parameters later still verify old hashes.
pub fn hash(password: &str) -> Result<String, PasswordError> {
    let mut salt = [0u8; 16];
    SystemRandom::new()
        .fill(&mut salt)
        .map_err(|_| PasswordError::Random)?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| PasswordError::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| PasswordError::Hash(e.to_string()))
}

/// True when `password` matches the PHC string `phc`. An unreadable stored hash is a
/// mismatch (logged by the caller if it cares), never a panic.
pub fn verify(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// Verifies against `stored` when there is a user with a password, and otherwise against a
/// dummy hash with the same parameters before answering false. Login uses this so that an
/// unknown email, an invited user without a password and a wrong password all take one
/// Argon2 run: response time does not tell which emails exist.
pub fn verify_or_dummy(password: &str, stored: Option<&str>) -> bool {
    match stored {
        Some(phc) => verify(password, phc),
        None => {
            let _ = verify(password, dummy_hash());
            false
        }
    }
}

/// How many Argon2 runs may be in flight at once: one per CPU. Each takes 19 MiB and a
/// core for tens of milliseconds, so a burst of logins must queue here rather than start
/// hundreds of runs on the blocking pool and exhaust memory.
fn argon2_slots() -> &'static tokio::sync::Semaphore {
    static SLOTS: OnceLock<tokio::sync::Semaphore> = OnceLock::new();
    SLOTS.get_or_init(|| {
        tokio::sync::Semaphore::new(
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
        )
    })
}

/// Runs `work` (an Argon2 hash or verification) on the blocking pool, at most one per
/// CPU at once; the async callers use this, never `hash`/`verify` on a runtime thread.
async fn bounded<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let _slot = argon2_slots().acquire().await.ok()?;
    tokio::task::spawn_blocking(work).await.ok()
}

/// [`hash`] off the async runtime, bounded to one run per CPU.
pub async fn hash_async(password: &str) -> Result<String, PasswordError> {
    let password = password.to_owned();
    bounded(move || hash(&password))
        .await
        .unwrap_or_else(|| Err(PasswordError::Hash("the hashing task failed".into())))
}

/// [`verify_or_dummy`] off the async runtime, bounded to one run per CPU.
pub async fn verify_or_dummy_async(password: &str, stored: Option<String>) -> bool {
    let password = password.to_owned();
    bounded(move || verify_or_dummy(&password, stored.as_deref()))
        .await
        .unwrap_or(false)
}

fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        hash("contera dummy password that no user has").expect("hashing a constant")
    })
}

fn common_passwords() -> &'static HashSet<&'static str> {
    static SET: OnceLock<HashSet<&'static str>> = OnceLock::new();
    SET.get_or_init(|| {
        COMMON_PASSWORDS
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect()
    })
}

/// Checks a new password for the user with `email` and `name`: length in characters, not a
/// common password (compared case-insensitively, as the list is lowercase), and not the
/// email, its local part or the name (case-insensitively, ignoring surrounding spaces).
pub fn check_policy(password: &str, email: &str, name: &str) -> Result<(), PolicyError> {
    let chars = password.chars().count();
    if chars < MIN_CHARS {
        return Err(PolicyError::TooShort { chars });
    }
    if chars > MAX_CHARS {
        return Err(PolicyError::TooLong { chars });
    }
    let lower = password.trim().to_lowercase();
    if common_passwords().contains(lower.as_str()) {
        return Err(PolicyError::Common);
    }
    let email = email.trim().to_lowercase();
    let local = email.split('@').next().unwrap_or_default();
    let name = name.trim().to_lowercase();
    if lower == email || lower == local || lower == name {
        return Err(PolicyError::SameAsIdentity);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_argon2id_phc_and_verifies_only_the_same_password() {
        let phc = hash("correct horse battery").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$"), "{phc}");
        assert!(verify("correct horse battery", &phc));
        assert!(!verify("correct horse batterY", &phc));
        assert_ne!(phc, hash("correct horse battery").unwrap(), "salts differ");
    }

    #[test]
    fn unreadable_stored_hash_is_a_mismatch() {
        assert!(!verify("anything at all", "not a phc string"));
    }

    #[test]
    fn verify_or_dummy_refuses_unknown_users_after_a_real_hash_run() {
        assert!(!verify_or_dummy("correct horse battery", None));
        let phc = hash("correct horse battery").unwrap();
        assert!(verify_or_dummy("correct horse battery", Some(&phc)));
        assert!(!verify_or_dummy("wrong horse battery", Some(&phc)));
        // The dummy is a real Argon2id hash, so the unknown-user path does the same work.
        assert!(dummy_hash().starts_with("$argon2id$"));
    }

    #[test]
    fn length_is_counted_in_characters_not_bytes() {
        // 11 characters, 22 bytes: too short although it has more than 12 bytes.
        assert_eq!(
            check_policy("ééééééééééé", "a@b.example", "A"),
            Err(PolicyError::TooShort { chars: 11 })
        );
        assert_eq!(check_policy("éééééééééééé", "a@b.example", "A"), Ok(()));
        let long = "x".repeat(MAX_CHARS + 1);
        assert_eq!(
            check_policy(&long, "a@b.example", "A"),
            Err(PolicyError::TooLong { chars: 129 })
        );
        assert_eq!(check_policy(&"xy".repeat(64), "a@b.example", "A"), Ok(()));
    }

    #[test]
    fn common_passwords_are_refused_in_any_case() {
        assert!(common_passwords().len() > 19_000);
        // Both are in the shipped list and at least 12 characters long.
        assert_eq!(
            check_policy("1QAZ2wsx3edc", "a@b.example", "A"),
            Err(PolicyError::Common)
        );
        assert_eq!(
            check_policy("QwertyUiop123", "a@b.example", "A"),
            Err(PolicyError::Common)
        );
    }

    #[test]
    fn password_equal_to_email_or_name_is_refused() {
        assert_eq!(
            check_policy("Jo.Tech@Example.COM", "jo.tech@example.com", "Jo"),
            Err(PolicyError::SameAsIdentity)
        );
        assert_eq!(
            check_policy("installer.jo.tech", "installer.jo.tech@example.com", "Jo"),
            Err(PolicyError::SameAsIdentity)
        );
        assert_eq!(
            check_policy("Joanna Smithers", "js@example.com", "joanna smithers"),
            Err(PolicyError::SameAsIdentity)
        );
    }

    #[test]
    fn an_uncommon_long_enough_password_passes() {
        assert_eq!(
            check_policy("violet kettle under ninety", "js@example.com", "Jo"),
            Ok(())
        );
    }
}
