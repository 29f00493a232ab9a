//! Cursor pagination for every admin list, and extractors whose rejections use the API's
//! error shape.
//!
//! A list is sorted by a key that is unique per item (a name with the id after it, or a
//! row id); a page's `next_cursor` is the last key on it, sealed (see [`encode`]), and the
//! next page starts after that key. Unlike offsets, a cursor does not skip or repeat items
//! when others are added or removed between two pages.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequestParts, Path, Query};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::sync::OnceLock;

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use utoipa::{IntoParams, ToSchema};

use super::bad_request;
use crate::api::ApiError;

/// Items on a page when the request does not say.
pub const DEFAULT_LIMIT: u32 = 50;
/// The most items a page holds.
pub const MAX_LIMIT: u32 = 500;

#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Items per page, 1 to 500 (default 50).
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl PageQuery {
    pub fn limit(&self) -> Result<usize, ApiError> {
        match self.limit {
            None => Ok(DEFAULT_LIMIT as usize),
            Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n as usize),
            Some(n) => Err(bad_request(format!(
                "limit={n}: give a number from 1 to {MAX_LIMIT}"
            ))),
        }
    }

    /// The key the page starts after.
    pub fn after(&self) -> Result<Option<String>, ApiError> {
        self.cursor
            .as_deref()
            .map(|c| {
                decode(c).ok_or_else(|| {
                    bad_request("cursor is not one this server gave; start again without it")
                })
            })
            .transpose()
    }
}

/// One page of a list.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T: ToSchema> {
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// The key cursors are sealed with: random per server process. A sort key holds names
/// and emails, and a cursor travels in URLs (the console's "next page" links), so it is
/// sealed (AES-256-GCM) rather than merely encoded: opaque, and not forgeable. A cursor
/// from before a restart is refused with a clear 400 ("start again without it").
fn cursor_key() -> &'static LessSafeKey {
    static KEY: OnceLock<LessSafeKey> = OnceLock::new();
    KEY.get_or_init(|| {
        let mut bytes = [0u8; 32];
        SystemRandom::new()
            .fill(&mut bytes)
            .expect("the system random generator works");
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &bytes).expect("a 32-byte key"))
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Seals a sort key into a cursor.
pub fn encode(key: &str) -> String {
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new()
        .fill(&mut nonce)
        .expect("the system random generator works");
    let mut sealed = key.as_bytes().to_vec();
    cursor_key()
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::empty(),
            &mut sealed,
        )
        .expect("sealing a short key");
    format!("{}{}", hex(&nonce), hex(&sealed))
}

fn decode(cursor: &str) -> Option<String> {
    if cursor.len() % 2 != 0 || cursor.len() > 8192 {
        return None;
    }
    let bytes = (0..cursor.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(cursor.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    if bytes.len() < NONCE_LEN {
        return None;
    }
    let (nonce, sealed) = bytes.split_at(NONCE_LEN);
    let mut sealed = sealed.to_vec();
    let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
    let opened = cursor_key()
        .open_in_place(nonce, Aad::empty(), &mut sealed)
        .ok()?;
    String::from_utf8(opened.to_vec()).ok()
}

/// Pages a list held in memory: sorts by `key` (which must be unique per item), skips to
/// after the cursor, and cuts at the limit.
pub fn paginate<T: ToSchema>(
    mut items: Vec<T>,
    key: impl Fn(&T) -> String,
    query: &PageQuery,
) -> Result<Page<T>, ApiError> {
    let limit = query.limit()?;
    let after = query.after()?;
    let mut keyed: Vec<(String, T)> = items.drain(..).map(|t| (key(&t), t)).collect();
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    let start = match &after {
        Some(after) => keyed.partition_point(|(k, _)| k <= after),
        None => 0,
    };
    let rest = keyed.len() - start;
    let mut page: Vec<(String, T)> = keyed.into_iter().skip(start).take(limit).collect();
    let next_cursor = (rest > limit).then(|| encode(&page.last().expect("limit >= 1").0));
    Ok(Page {
        items: page.drain(..).map(|(_, t)| t).collect(),
        next_cursor,
    })
}

/// `Query<T>` whose rejection is a 400 in the API's error shape.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| ApiQuery(v))
            .map_err(|e: QueryRejection| bad_request(format!("invalid query: {}", e.body_text())))
    }
}

/// `Path<T>` whose rejection is a 400 in the API's error shape.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| ApiPath(v))
            .map_err(|e: PathRejection| bad_request(format!("invalid path: {}", e.body_text())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq, ToSchema)]
    struct Item(String);

    #[test]
    fn pages_walk_every_item_once_in_order() {
        let items: Vec<Item> = (0..23).rev().map(|i| Item(format!("k{i:02}"))).collect();
        let mut seen = Vec::new();
        let mut query = PageQuery {
            limit: Some(5),
            cursor: None,
        };
        loop {
            let page = paginate(items.clone(), |i| i.0.clone(), &query).unwrap();
            assert!(page.items.len() <= 5);
            seen.extend(page.items.into_iter().map(|i| i.0));
            match page.next_cursor {
                Some(c) => query.cursor = Some(c),
                None => break,
            }
        }
        let expected: Vec<String> = (0..23).map(|i| format!("k{i:02}")).collect();
        assert_eq!(seen, expected);
    }

    #[test]
    fn a_cursor_hides_its_key_and_a_changed_one_is_refused() {
        let cursor = encode("jo@example.com/42");
        assert!(!cursor.contains(&hex(b"jo@example.com")));
        assert_eq!(decode(&cursor).as_deref(), Some("jo@example.com/42"));
        let mut forged = cursor.into_bytes();
        let last = forged.len() - 1;
        forged[last] = if forged[last] == b'0' { b'1' } else { b'0' };
        assert_eq!(decode(&String::from_utf8(forged).unwrap()), None);
    }

    #[test]
    fn a_bad_cursor_or_limit_is_a_clear_400() {
        let q = PageQuery {
            limit: Some(0),
            cursor: None,
        };
        assert!(q.limit().is_err());
        let q = PageQuery {
            limit: None,
            cursor: Some("zz".into()),
        };
        assert!(q.after().is_err());
    }
}
