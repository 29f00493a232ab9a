//! Cursor pagination for every admin list, and extractors whose rejections use the API's
//! error shape.
//!
//! A list is sorted by a key that is unique per item (a name with the id after it, or a
//! row id); a page's `next_cursor` is the hex form of the last key on it, and the next
//! page starts after that key. Unlike offsets, a cursor does not skip or repeat items
//! when others are added or removed between two pages.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequestParts, Path, Query};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
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

pub fn encode(key: &str) -> String {
    key.bytes().map(|b| format!("{b:02x}")).collect()
}

fn decode(cursor: &str) -> Option<String> {
    if cursor.len() % 2 != 0 || cursor.len() > 4096 {
        return None;
    }
    let bytes = (0..cursor.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(cursor.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok()
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
