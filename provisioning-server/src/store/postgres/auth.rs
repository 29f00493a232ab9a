//! Sessions, API tokens, password resets and the filtered audit read.
//!
//! Lock order, as everywhere in this store: the user's row, then their links (invitations,
//! password resets) and credentials (sessions, tokens).

use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};

use super::{audit, lock_user, user_where, Tx, EMAIL_IS};
use crate::permissions::PermissionSet;
use crate::store::*;

pub(super) async fn login_record(
    pool: &PgPool,
    email: &str,
) -> Result<Option<(User, Option<String>)>, StoreError> {
    let mut conn = pool.acquire().await?;
    let Some(user) = user_where(&mut conn, EMAIL_IS, Some(email)).await?.pop() else {
        return Ok(None);
    };
    let hash: Option<String> = sqlx::query_scalar("SELECT password_hash FROM users WHERE id = $1")
        .bind(&user.id)
        .fetch_one(&mut *conn)
        .await?;
    Ok(Some((user, hash)))
}

async fn account_of(tx: &mut Tx, user_id: &str) -> Result<String, StoreError> {
    sqlx::query_scalar("SELECT account_id FROM users WHERE id = $1")
        .bind(user_id)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| StoreError::NotFound {
            what: "user",
            id: user_id.to_owned(),
        })
}

pub(super) async fn create_session(
    pool: &PgPool,
    s: &Session,
    actor: Actor<'_>,
) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    let account_id = account_of(&mut tx, &s.user_id).await?;
    sqlx::query(
        "INSERT INTO sessions (token_hash, user_id, created_at, last_seen_at, expires_at, source) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&s.token_hash)
    .bind(&s.user_id)
    .bind(s.created_at)
    .bind(s.last_seen_at)
    .bind(s.expires_at)
    .bind(&s.source)
    .execute(&mut *tx)
    .await?;
    audit(
        &mut tx,
        s.created_at,
        actor,
        "session.login",
        Some(&account_id),
        None,
        serde_json::json!({ "user_id": s.user_id, "expires_at": s.expires_at }),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

pub(super) async fn session(
    pool: &PgPool,
    token_hash: &[u8],
) -> Result<Option<Session>, StoreError> {
    let row = sqlx::query(
        "SELECT token_hash, user_id, created_at, last_seen_at, expires_at, source \
         FROM sessions WHERE token_hash = $1",
    )
    .bind(token_hash)
    .fetch_optional(pool)
    .await?;
    Ok(row
        .map(|r| -> Result<Session, sqlx::Error> {
            Ok(Session {
                token_hash: r.try_get("token_hash")?,
                user_id: r.try_get("user_id")?,
                created_at: r.try_get("created_at")?,
                last_seen_at: r.try_get("last_seen_at")?,
                expires_at: r.try_get("expires_at")?,
                source: r.try_get("source")?,
            })
        })
        .transpose()?)
}

pub(super) async fn touch_session(
    pool: &PgPool,
    token_hash: &[u8],
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE sessions SET last_seen_at = GREATEST(last_seen_at, $1) WHERE token_hash = $2",
    )
    .bind(now)
    .bind(token_hash)
    .execute(pool)
    .await?;
    Ok(())
}

pub(super) async fn end_session(
    pool: &PgPool,
    token_hash: &[u8],
    now: i64,
    actor: Actor<'_>,
) -> Result<bool, StoreError> {
    let mut tx = pool.begin().await?;
    let user_id: Option<String> =
        sqlx::query_scalar("DELETE FROM sessions WHERE token_hash = $1 RETURNING user_id")
            .bind(token_hash)
            .fetch_optional(&mut *tx)
            .await?;
    let Some(user_id) = user_id else {
        return Ok(false);
    };
    let account_id = account_of(&mut tx, &user_id).await?;
    audit(
        &mut tx,
        now,
        actor,
        "session.logout",
        Some(&account_id),
        None,
        serde_json::json!({ "user_id": user_id }),
    )
    .await?;
    tx.commit().await?;
    Ok(true)
}

/// Ends every session and token of the user, inside the caller's transaction: disabling a
/// user or changing their password must log them out everywhere at once.
pub(super) async fn end_all_credentials(
    tx: &mut Tx,
    user_id: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM sessions WHERE user_id = $1")
        .bind(user_id)
        .execute(&mut **tx)
        .await?;
    sqlx::query("UPDATE api_tokens SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL")
        .bind(now)
        .bind(user_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

const TOKEN_COLUMNS: &str = "id, token_hash, user_id, name, permissions, created_at, expires_at, \
    last_used_at, revoked_at";

fn token_from_row(r: &PgRow) -> Result<ApiToken, sqlx::Error> {
    let names: String = r.try_get("permissions")?;
    let permissions = names
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<PermissionSet, _>>()
        .map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
    Ok(ApiToken {
        id: r.try_get("id")?,
        token_hash: r.try_get("token_hash")?,
        user_id: r.try_get("user_id")?,
        name: r.try_get("name")?,
        permissions,
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get("expires_at")?,
        last_used_at: r.try_get("last_used_at")?,
        revoked_at: r.try_get("revoked_at")?,
    })
}

pub(super) async fn create_api_token(
    pool: &PgPool,
    t: &ApiToken,
    actor: Actor<'_>,
) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    let account_id = account_of(&mut tx, &t.user_id).await?;
    let names: Vec<&str> = t.permissions.iter().map(|p| p.as_str()).collect();
    sqlx::query(
        "INSERT INTO api_tokens (id, token_hash, user_id, name, permissions, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&t.id)
    .bind(&t.token_hash)
    .bind(&t.user_id)
    .bind(&t.name)
    .bind(names.join(" "))
    .bind(t.created_at)
    .bind(t.expires_at)
    .execute(&mut *tx)
    .await?;
    audit(
        &mut tx,
        t.created_at,
        actor,
        "token.created",
        Some(&account_id),
        None,
        serde_json::json!({
            "token_id": t.id,
            "user_id": t.user_id,
            "name": t.name,
            "permissions": names,
            "expires_at": t.expires_at,
        }),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// What a token lookup goes by: its hash (a BYTEA column), its id or its user (TEXT), each
/// bound with the column's own type.
pub(super) enum TokenKey<'a> {
    Hash(&'a [u8]),
    Id(&'a str),
    User(&'a str),
}

pub(super) async fn api_token_where(
    pool: &PgPool,
    key: TokenKey<'_>,
) -> Result<Vec<ApiToken>, StoreError> {
    let condition = match key {
        TokenKey::Hash(_) => "token_hash = $1",
        TokenKey::Id(_) => "id = $1",
        TokenKey::User(_) => "user_id = $1",
    };
    let query = format!(
        "SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE {condition} ORDER BY created_at DESC, id"
    );
    let query = sqlx::query(&query);
    let query = match key {
        TokenKey::Hash(hash) => query.bind(hash),
        TokenKey::Id(text) | TokenKey::User(text) => query.bind(text),
    };
    let rows = query.fetch_all(pool).await?;
    Ok(rows.iter().map(token_from_row).collect::<Result<_, _>>()?)
}

pub(super) async fn revoke_api_token(
    pool: &PgPool,
    id: &str,
    now: i64,
    actor: Actor<'_>,
) -> Result<bool, StoreError> {
    let mut tx = pool.begin().await?;
    let user_id: Option<String> = sqlx::query_scalar(
        "UPDATE api_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL RETURNING user_id",
    )
    .bind(now)
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(user_id) = user_id else {
        return Ok(false);
    };
    let account_id = account_of(&mut tx, &user_id).await?;
    audit(
        &mut tx,
        now,
        actor,
        "token.revoked",
        Some(&account_id),
        None,
        serde_json::json!({ "token_id": id, "user_id": user_id }),
    )
    .await?;
    tx.commit().await?;
    Ok(true)
}

pub(super) async fn touch_api_token(pool: &PgPool, id: &str, now: i64) -> Result<(), StoreError> {
    sqlx::query("UPDATE api_tokens SET last_used_at = $1 WHERE id = $2")
        .bind(now)
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

pub(super) async fn create_password_reset(
    pool: &PgPool,
    reset: &PasswordReset,
    actor: Actor<'_>,
) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    // The user's row first: two requests at once then run one after the other, and the
    // second replaces the first's link, leaving one open.
    lock_user(&mut tx, &reset.user_id).await?;
    let account_id = account_of(&mut tx, &reset.user_id).await?;
    sqlx::query(
        "UPDATE password_resets SET replaced_at = $1 \
         WHERE user_id = $2 AND used_at IS NULL AND replaced_at IS NULL",
    )
    .bind(reset.created_at)
    .bind(&reset.user_id)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO password_resets (token_hash, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(&reset.token_hash)
    .bind(&reset.user_id)
    .bind(reset.created_at)
    .bind(reset.expires_at)
    .execute(&mut *tx)
    .await?;
    audit(
        &mut tx,
        reset.created_at,
        actor,
        "password.reset_requested",
        Some(&account_id),
        None,
        serde_json::json!({ "user_id": reset.user_id, "expires_at": reset.expires_at }),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// One emailed link by its token's hash, from `table`: `invitations` or
/// `password_resets`, which share their columns and rules.
pub(super) async fn emailed_link(
    pool: &PgPool,
    table: &'static str,
    token_hash: &[u8],
) -> Result<Option<Invitation>, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT token_hash, user_id, created_at, expires_at, used_at, replaced_at \
         FROM {table} WHERE token_hash = $1"
    ))
    .bind(token_hash)
    .fetch_optional(pool)
    .await?;
    Ok(row
        .map(|r| -> Result<Invitation, sqlx::Error> {
            Ok(Invitation {
                token_hash: r.try_get("token_hash")?,
                user_id: r.try_get("user_id")?,
                created_at: r.try_get("created_at")?,
                expires_at: r.try_get("expires_at")?,
                used_at: r.try_get("used_at")?,
                replaced_at: r.try_get("replaced_at")?,
            })
        })
        .transpose()?)
}

pub(super) async fn reset_password(
    pool: &PgPool,
    token_hash: &[u8],
    password_hash: &str,
    now: i64,
    source: Option<&str>,
) -> Result<User, StoreError> {
    let mut tx = pool.begin().await?;
    // The user's row before the link's, in the order a new request takes them; the link's
    // conditional UPDATE then makes it single use.
    let owner: Option<String> =
        sqlx::query_scalar("SELECT user_id FROM password_resets WHERE token_hash = $1")
            .bind(token_hash)
            .fetch_optional(&mut *tx)
            .await?;
    let Some(owner) = owner else {
        return Err(StoreError::InvitationRefused);
    };
    lock_user(&mut tx, &owner).await?;
    let user_id: Option<String> = sqlx::query_scalar(
        "UPDATE password_resets SET used_at = $1 \
         WHERE token_hash = $2 AND used_at IS NULL AND replaced_at IS NULL AND expires_at > $3 \
         RETURNING user_id",
    )
    .bind(now)
    .bind(token_hash)
    .bind(now)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(user_id) = user_id else {
        return Err(StoreError::InvitationRefused);
    };
    let updated =
        sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2 AND status = 'active'")
            .bind(password_hash)
            .bind(&user_id)
            .execute(&mut *tx)
            .await?;
    if updated.rows_affected() != 1 {
        return Err(StoreError::InvitationRefused);
    }
    end_all_credentials(&mut tx, &user_id, now).await?;
    let user = user_where(&mut tx, "u.id = $1", Some(user_id.as_str()))
        .await?
        .pop()
        .ok_or(StoreError::InvitationRefused)?;
    let actor = match source {
        Some(source) => format!("user:{user_id}@{source}"),
        None => format!("user:{user_id}"),
    };
    audit(
        &mut tx,
        now,
        &actor,
        "password.reset",
        Some(&user.account_id),
        None,
        serde_json::json!({ "user_id": user_id }),
    )
    .await?;
    tx.commit().await?;
    Ok(user)
}

pub(super) async fn change_password(
    pool: &PgPool,
    user_id: &str,
    password_hash: &str,
    now: i64,
    actor: Actor<'_>,
) -> Result<bool, StoreError> {
    let mut tx = pool.begin().await?;
    let account_id: Option<String> = sqlx::query_scalar(
        "UPDATE users SET password_hash = $1 WHERE id = $2 AND status = 'active' RETURNING account_id",
    )
    .bind(password_hash)
    .bind(user_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(account_id) = account_id else {
        return Ok(false);
    };
    end_all_credentials(&mut tx, user_id, now).await?;
    audit(
        &mut tx,
        now,
        actor,
        "password.changed",
        Some(&account_id),
        None,
        serde_json::json!({ "user_id": user_id }),
    )
    .await?;
    tx.commit().await?;
    Ok(true)
}

pub(super) async fn audit_entries(
    pool: &PgPool,
    f: &AuditFilter,
) -> Result<Vec<AuditEntry>, StoreError> {
    let rows = sqlx::query(
        "SELECT id, at, actor, action, account_id, recorder_id, detail, source FROM audit_log \
         WHERE ($1::text[] IS NULL OR account_id = ANY($1)) \
         AND ($2::text IS NULL OR actor = $2) AND ($3::text IS NULL OR action = $3) \
         AND ($4::bigint IS NULL OR at >= $4) AND ($5::bigint IS NULL OR at < $5) \
         AND ($6::bigint IS NULL OR id < $6) AND ($8::text IS NULL OR recorder_id = $8) \
         ORDER BY id DESC LIMIT $7",
    )
    .bind(&f.accounts)
    .bind(&f.actor)
    .bind(&f.action)
    .bind(f.since)
    .bind(f.until)
    .bind(f.before_id)
    .bind(f.limit)
    .bind(&f.recorder_id)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .map(super::audit_entry_from_row)
        .collect::<Result<_, _>>()?)
}
