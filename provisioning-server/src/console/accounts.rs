//! The account tree and account pages: the tree with its search, one account with its
//! registration codes, recorders (refreshed live) and sub-accounts, new accounts, and an
//! account's details, disabling and enabling.
//!
//! Everything is read and changed through the admin API ([`super::api::Api`]) with the
//! browser's own session, so what a user sees and may do is the API's decision. Pieces the
//! code and recorder pages share (times in words, notices, breadcrumbs, the tree walk) are
//! here too.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::{json, Value};

use super::api::{Answer, Credentials};
use super::forms::{check_session_csrf, csrf_field, form_error, Errors, Field};
use super::layout::{api_error_page, not_found_page, respond, shell, Crumb, Page};
use super::Shared;

pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/accounts", get(tree_page))
        .route("/accounts/new", get(new_account_page).post(new_account))
        .route("/accounts/{id}", get(account).post(update_account))
        .route("/accounts/{id}/recorders/live", get(recorders_live))
        .route("/accounts/{id}/disable", post(disable_account))
        .route("/accounts/{id}/enable", post(enable_account))
}

/// Accounts per page of the tree.
const TREE_PAGE: usize = 50;
/// Sub-accounts per page of an account page.
const SUB_PAGE: usize = 50;
/// Recorders per page of an account page (and its live fragment).
const RECORDER_PAGE: usize = 50;
/// Accounts per API page when the whole tree is walked.
const WALK_PAGE: usize = 500;
/// The most API pages one walk reads (`WALK_PAGE` accounts each).
const WALK_MAX_PAGES: usize = 100;
/// Registration codes an account page lists.
const CODE_PAGE: usize = 100;

// ---------------------------------------------------------------------------------------
// What the API answers, as the console reads it.

/// An account as `GET /accounts` and `GET /accounts/{id}` describe it.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct AccountInfo {
    pub id: String,
    pub name: String,
    /// `partner` or `customer`.
    pub kind: String,
    pub parent_id: Option<String>,
    #[serde(default)]
    pub address: String,
    pub contact: Option<String>,
    pub created_at: Option<i64>,
    pub disabled_at: Option<i64>,
    /// This account or the ancestor that is disabled.
    pub disabled_via: Option<String>,
    #[serde(default)]
    pub depth: usize,
    #[serde(default)]
    pub path: Vec<String>,
    #[serde(default)]
    pub recorders_online: i64,
    #[serde(default)]
    pub recorders_total: i64,
    /// Only in `GET /accounts/{id}`: the accounts right below, by name.
    #[serde(default)]
    pub children: Vec<String>,
    /// Only the id and name are known: the user may not see the account's details
    /// (no accounts.view), only their own account's recorders and codes.
    #[serde(skip)]
    pub limited: bool,
}

impl AccountInfo {
    pub fn is_partner(&self) -> bool {
        self.kind == "partner"
    }

    pub fn kind_name(&self) -> &'static str {
        match self.kind.as_str() {
            "partner" => "Partner",
            "customer" => "Customer",
            _ => "",
        }
    }
}

/// A registration code as `GET /accounts/{id}/codes` lists it.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct CodeInfo {
    pub public_id: String,
    #[serde(default)]
    pub label: String,
    /// `active`, `disabled`, `expired` or `used_up`.
    pub state: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub max_uses: Option<i64>,
    #[serde(default)]
    pub uses: i64,
    pub last_used_at: Option<i64>,
    #[serde(default)]
    pub can_be_shown: bool,
}

/// A recorder as `GET /recorders` and `GET /recorders/{id}` describe it.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct RecorderInfo {
    pub id: String,
    pub name: Option<String>,
    pub account_id: String,
    #[serde(default)]
    pub account_name: String,
    #[serde(default)]
    pub serial: String,
    #[serde(default)]
    pub model: String,
    pub mac: Option<String>,
    pub firmware: Option<String>,
    pub agent_version: Option<String>,
    #[serde(default)]
    pub key_fingerprint: String,
    pub enrolled_at: i64,
    #[serde(default)]
    pub online: bool,
    pub last_seen: Option<i64>,
    pub offline_reason: Option<String>,
    pub revoked_at: Option<i64>,
    pub cert_serial: Option<String>,
    pub cert_not_after: Option<i64>,
    pub replaces: Option<String>,
    pub flagged_replacement_of: Option<String>,
    pub replacement_confirmed_at: Option<i64>,
    pub status: Option<Value>,
    /// Only in `GET /recorders/{id}`.
    #[serde(default)]
    pub history: Vec<HistoryEntry>,
}

impl RecorderInfo {
    /// What to call it: its name, else its serial.
    pub fn title(&self) -> &str {
        self.name
            .as_deref()
            .filter(|n| !n.is_empty())
            .unwrap_or(&self.serial)
    }
}

/// One audit entry of a recorder's history.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct HistoryEntry {
    pub at: i64,
    #[serde(default)]
    pub actor: String,
    pub action: String,
    #[serde(default)]
    pub detail: String,
}

/// One page of an API list.
#[derive(Debug, Deserialize)]
pub(super) struct ApiPage<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// The body of a successful answer as `T`; a body the console cannot read is a failure
/// page (it would be a bug between the console and the API).
#[allow(clippy::result_large_err)]
pub(super) fn parse<T: serde::de::DeserializeOwned>(answer: &Answer) -> Result<T, Response> {
    serde_json::from_value(answer.body.clone()).map_err(|e| {
        log::error!("console: unexpected admin API answer: {e}");
        respond(
            StatusCode::INTERNAL_SERVER_ERROR,
            shell(
                None,
                "Something went wrong",
                &[],
                html! {
                    h1 { "Something went wrong" }
                    p { "The page could not be shown. Reload it; if it keeps failing, tell the server's operator." }
                },
            ),
        )
    })
}

// ---------------------------------------------------------------------------------------
// Shared pieces: times, notices, URLs, breadcrumbs, the tree.

/// The current time in Unix seconds.
pub(super) fn now() -> i64 {
    crate::admin::now()
}

/// A time distance in words: "just now", "2 minutes ago", "in 89 days".
pub(super) fn words(at: i64, now: i64) -> String {
    let delta = at - now;
    let secs = delta.unsigned_abs();
    if secs < 5 {
        return "just now".to_owned();
    }
    let (n, unit) = if secs < 60 {
        (secs, "second")
    } else if secs < 3600 {
        (secs / 60, "minute")
    } else if secs < 48 * 3600 {
        (secs / 3600, "hour")
    } else if secs < 2 * 365 * 86400 {
        (secs / 86400, "day")
    } else {
        (secs / (365 * 86400), "year")
    };
    let amount = format!("{n} {unit}{}", if n == 1 { "" } else { "s" });
    if delta < 0 {
        format!("{amount} ago")
    } else {
        format!("in {amount}")
    }
}

/// A Unix time as RFC 3339 (UTC).
pub(super) fn rfc3339(at: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(at)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// A Unix time as a date and time for people, in UTC.
pub(super) fn utc_text(at: i64) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC");
    time::OffsetDateTime::from_unix_timestamp(at)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_default()
}

/// A time in words inside `<time datetime>`, with the UTC time on hover; `none` when absent.
pub(super) fn when(at: Option<i64>, now: i64, none: &str) -> Markup {
    html! {
        @if let Some(at) = at {
            time datetime=(rfc3339(at)) title=(utc_text(at)) { (words(at, now)) }
        } @else {
            span.muted { (none) }
        }
    }
}

/// The fixed notice of a `?done=` after a change (never text from the URL itself).
pub(super) fn notice_text(done: Option<&str>) -> Option<&'static str> {
    Some(match done? {
        "account-created" => {
            "The account was created, and the invitation was sent to its first user by mail."
        }
        "account-created-unsent" => {
            "The account was created, but the invitation mail could not be sent: send it \
             again from the account's users (Settings)."
        }
        "account-updated" => "The account's details were saved.",
        "account-disabled" => {
            "The account is disabled: it and its sub-accounts refuse enrollments, and their \
             recorders are told so at their next heartbeat."
        }
        "account-enabled" => "The account is enabled again.",
        "nothing-changed" => "Nothing was changed.",
        "code-created" => "A new registration code was made; it is in the list below.",
        "code-rotated" => {
            "The codes were rotated: the old ones no longer enroll; the new one is below."
        }
        "code-disabled" => "The code was disabled: it no longer enrolls recorders.",
        "code-updated" => "The code's label and limits were saved.",
        "recorder-renamed" => "The recorder's name was saved.",
        "recorder-moved" => {
            "The recorder was moved; its next heartbeat counts for its new account."
        }
        "recorder-revoked" => {
            "The recorder was revoked: its certificate no longer works, and it can only \
             enroll again with a code."
        }
        "replacement-confirmed" => {
            "The replacement was confirmed, and the recorder it replaces was revoked."
        }
        _ => return None,
    })
}

/// The notice of `?done=`, if it names one.
pub(super) fn notice(done: Option<&str>) -> Markup {
    html! {
        @if let Some(text) = notice_text(done) {
            p.notice role="status" { (text) }
        }
    }
}

/// Percent-encodes text for a URL's query.
pub(super) fn enc(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A cursor the API gave (hex), or nothing: anything else is dropped, not passed on.
pub(super) fn api_cursor(text: Option<&str>) -> Option<&str> {
    text.filter(|c| !c.is_empty() && c.len() <= 4096 && c.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Whether `id` looks like an id (no path or query characters), so it can go into an API
/// path as it is. Anything else cannot name anything: the caller answers 404.
pub(super) fn plain_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 100
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// An API 403 as a refusal page, for a control the user should not have been shown.
pub(super) fn forbidden_page(page: &Page, message: &str) -> Response {
    api_error_page(
        Some(page),
        &Answer {
            status: StatusCode::FORBIDDEN,
            body: json!({ "error": { "code": "forbidden", "message": message } }),
            set_cookies: Vec::new(),
        },
    )
}

/// Puts an API refusal next to the field it names: `fields` maps the API's field names
/// (how its messages begin) to the form's field ids; anything else goes on top of the form.
pub(super) fn api_errors(answer: &Answer, fields: &[(&str, &'static str)], errors: &mut Errors) {
    let message = answer.message();
    for (name, id) in fields {
        if let Some(rest) = message.strip_prefix(name) {
            if rest.starts_with([' ', ':']) {
                let shown = rest
                    .strip_prefix(':')
                    .map(str::trim_start)
                    .map(capitalized)
                    .unwrap_or_else(|| capitalized(&message));
                errors.add(id, shown);
                return;
            }
        }
    }
    errors.add("", message);
}

/// The API's message of a refusal, as a sentence.
pub(super) fn said(answer: &Answer) -> String {
    let message = capitalized(&answer.message());
    if message.ends_with(['.', '!', '?']) {
        message
    } else {
        format!("{message}.")
    }
}

fn capitalized(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// The breadcrumbs down to `account` (included): its ancestors from the user's own account,
/// read one parent at a time (a tree is a few levels deep).
pub(super) async fn crumbs_to(state: &Shared, page: &Page, account: &AccountInfo) -> Vec<Crumb> {
    let mut chain = vec![Crumb {
        name: account.name.clone(),
        href: format!("/accounts/{}", account.id),
    }];
    let mut parent = account.parent_id.clone();
    let mut depth = account.depth;
    while depth > 0 {
        let Some(id) = parent.take().filter(|p| plain_id(p)) else {
            break;
        };
        let answer = state
            .api
            .get(&page.read(), &format!("/accounts/{id}"))
            .await;
        let Ok(above) = serde_json::from_value::<AccountInfo>(answer.body) else {
            break;
        };
        chain.push(Crumb {
            name: above.name.clone(),
            href: format!("/accounts/{}", above.id),
        });
        parent = above.parent_id;
        depth -= 1;
    }
    chain.reverse();
    chain
}

/// The user's accounts in tree order (each right before the accounts below it), read from
/// `GET /accounts` page by page. With `subtree_of`, it stops after that account's subtree.
pub(super) struct TreeWalk {
    pub items: Vec<AccountInfo>,
}

impl TreeWalk {
    pub async fn load(
        state: &Shared,
        credentials: &Credentials,
        subtree_of: Option<&str>,
    ) -> Result<TreeWalk, Answer> {
        let mut items: Vec<AccountInfo> = Vec::new();
        let mut next: Option<String> = None;
        let mut found: Option<usize> = None;
        'pages: for _ in 0..WALK_MAX_PAGES {
            let mut path = format!("/accounts?limit={WALK_PAGE}");
            if let Some(c) = &next {
                path.push_str(&format!("&cursor={c}"));
            }
            let answer = state.api.get(credentials, &path).await;
            if !answer.ok() {
                return Err(answer);
            }
            let Ok(page) = serde_json::from_value::<ApiPage<AccountInfo>>(answer.body.clone())
            else {
                return Err(answer);
            };
            for item in page.items {
                if let Some(depth) = found {
                    if item.depth <= depth {
                        break 'pages;
                    }
                }
                if subtree_of == Some(item.id.as_str()) {
                    found = Some(item.depth);
                }
                items.push(item);
            }
            match page.next_cursor {
                Some(c) => next = Some(c),
                None => break,
            }
        }
        Ok(TreeWalk { items })
    }

    /// The accounts right below `id`, each with the recorders online and in all of it and
    /// the accounts below it.
    pub fn children(&self, id: &str) -> Vec<(AccountInfo, i64, i64)> {
        let Some(start) = self.items.iter().position(|a| a.id == id) else {
            return Vec::new();
        };
        let depth = self.items[start].depth;
        let mut out: Vec<(AccountInfo, i64, i64)> = Vec::new();
        for item in &self.items[start + 1..] {
            if item.depth <= depth {
                break;
            }
            if item.depth == depth + 1 {
                out.push((item.clone(), item.recorders_online, item.recorders_total));
            } else if let Some(last) = out.last_mut() {
                last.1 += item.recorders_online;
                last.2 += item.recorders_total;
            }
        }
        out
    }

    /// Names by id, to describe moves.
    pub fn names(&self) -> HashMap<&str, &str> {
        self.items
            .iter()
            .map(|a| (a.id.as_str(), a.name.as_str()))
            .collect()
    }
}

// ---------------------------------------------------------------------------------------
// The tree.

#[derive(Debug, Default, Deserialize)]
pub struct TreeQuery {
    q: Option<String>,
    cursor: Option<String>,
}

async fn tree_page(
    State(state): State<Shared>,
    page: Page,
    Query(query): Query<TreeQuery>,
) -> Response {
    let q = query
        .q
        .as_deref()
        .map(str::trim)
        .filter(|q| !q.is_empty())
        .map(|q| q.chars().take(200).collect::<String>());
    let cursor = api_cursor(query.cursor.as_deref());
    let mut path = format!("/accounts?limit={TREE_PAGE}");
    if let Some(q) = &q {
        path.push_str(&format!("&q={}", enc(q)));
    }
    if let Some(c) = cursor {
        path.push_str(&format!("&cursor={c}"));
    }
    let answer = state.api.get(&page.read(), &path).await;
    if !answer.ok() {
        return api_error_page(Some(&page), &answer);
    }
    let list: ApiPage<AccountInfo> = match parse(&answer) {
        Ok(list) => list,
        Err(failed) => return failed,
    };
    let search = q
        .as_deref()
        .map(|q| format!("&q={}", enc(q)))
        .unwrap_or_default();
    let crumbs = [
        Crumb {
            name: page.me.account.name.clone(),
            href: format!("/accounts/{}", page.me.account.id),
        },
        Crumb {
            name: "Account tree".to_owned(),
            href: "/accounts".to_owned(),
        },
    ];
    let body = html! {
        div.card-head {
            h1 { "Account tree" }
            @if page.can("accounts.manage") {
                a.button.primary href={ "/accounts/new?parent=" (page.me.account.id) } { "+ Add new account" }
            }
        }
        form.search role="search" method="get" action="/accounts" {
            div.field {
                label for="q" { "Search accounts by name" }
                div.search-row {
                    input #q type="search" name="q" value=(q.as_deref().unwrap_or("")) maxlength="200";
                    button type="submit" { "Search" }
                    @if q.is_some() { a href="/accounts" { "Show all" } }
                }
            }
        }
        @if list.items.is_empty() {
            @if q.is_some() {
                p.empty { "No account's name contains this text. Check the spelling, search for part of the name, or " a href="/accounts" { "show all accounts" } "." }
            } @else {
                p.empty { "No accounts on this page. " a href="/accounts" { "Start from the first page" } "." }
            }
        } @else {
            div.table-wrap {
                table.stack.tree {
                    thead {
                        tr {
                            th scope="col" { "Account" }
                            th scope="col" { "Kind" }
                            th scope="col" { "Recorders online" }
                            th scope="col" { "State" }
                        }
                    }
                    tbody {
                        @for item in &list.items {
                            tr data-account=(item.id) {
                                @if q.is_some() {
                                    td data-label="Account" {
                                        a href={ "/accounts/" (item.id) } { (item.name) }
                                        @if item.path.len() > 1 {
                                            span.path.muted { " in " (item.path[..item.path.len() - 1].join(" › ")) }
                                        }
                                    }
                                } @else {
                                    td class={ "tree-depth-" (item.depth.min(8)) } data-label="Account" {
                                        @if item.depth > 0 { span.tree-mark aria-hidden="true" { "└ " } }
                                        a href={ "/accounts/" (item.id) } { (item.name) }
                                    }
                                }
                                td data-label="Kind" { (item.kind_name()) }
                                td data-label="Recorders online" { (counts(item.recorders_online, item.recorders_total)) }
                                td data-label="State" {
                                    @if item.disabled_via.is_some() { span.badge.disabled { "Disabled" } }
                                    @else { span.muted { "Active" } }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if cursor.is_some() || list.next_cursor.is_some() {
        nav.pager aria-label="Pages" {
            @if cursor.is_some() {
                a href={ "/accounts" (search.replacen('&', "?", 1)) } { "First page" }
            }
            @if let Some(next) = api_cursor(list.next_cursor.as_deref()) {
                a href={ "/accounts?cursor=" (next) (search) } { "Next page" }
            }
        }
        }
    };
    respond(
        StatusCode::OK,
        shell(Some(&page), "Account tree", &crumbs, body),
    )
}

/// "3 of 5 online" for people, and exact for machines.
fn counts(online: i64, total: i64) -> Markup {
    html! {
        span.counts data-online=(online) data-total=(total) {
            @if total == 0 { span.muted { "none yet" } }
            @else { (online) " of " (total) " online" }
        }
    }
}

// ---------------------------------------------------------------------------------------
// One account.

#[derive(Debug, Default, Deserialize)]
pub struct AccountQuery {
    pub done: Option<String>,
    /// The page of sub-accounts, from 1.
    pub sub: Option<String>,
    /// The API's cursor of the recorders list.
    pub rcursor: Option<String>,
    /// `revoked` to list the revoked recorders instead.
    pub recorders: Option<String>,
}

/// A form of the account page sent back with its errors (status 422).
pub(super) enum Sent {
    Nothing,
    Details(DetailsForm, Errors),
    Disable(Errors),
    NewCode(super::codes::NewCodeForm, Errors),
    /// A failure of a control without fields (rotate, disable a code, enable).
    Action(Errors),
}

async fn account(
    State(state): State<Shared>,
    page: Page,
    Path(id): Path<String>,
    Query(query): Query<AccountQuery>,
) -> Response {
    account_page(&state, &page, &id, &query, Sent::Nothing).await
}

/// The account page; with a form sent back, answered 422.
pub(super) async fn account_page(
    state: &Shared,
    page: &Page,
    id: &str,
    query: &AccountQuery,
    sent: Sent,
) -> Response {
    if !plain_id(id) {
        return not_found_page();
    }
    let now = now();
    let answer = state
        .api
        .get(&page.read(), &format!("/accounts/{id}"))
        .await;
    let account: AccountInfo = if answer.ok() {
        match parse(&answer) {
            Ok(account) => account,
            Err(failed) => return failed,
        }
    } else if answer.status == StatusCode::FORBIDDEN && id == page.me.account.id {
        // Without accounts.view a user still has their own account's recorders and codes.
        AccountInfo {
            id: page.me.account.id.clone(),
            name: page.me.account.name.clone(),
            kind: String::new(),
            parent_id: None,
            address: String::new(),
            contact: None,
            created_at: None,
            disabled_at: None,
            disabled_via: None,
            depth: 0,
            path: vec![page.me.account.name.clone()],
            recorders_online: 0,
            recorders_total: 0,
            children: Vec::new(),
            limited: true,
        }
    } else {
        return api_error_page(Some(page), &answer);
    };
    let crumbs = crumbs_to(state, page, &account).await;

    // Codes, with the whole text of those that still enroll.
    let codes = if page.can("codes.view") {
        let answer = state
            .api
            .get(
                &page.read(),
                &format!("/accounts/{id}/codes?limit={CODE_PAGE}"),
            )
            .await;
        let list = answer
            .ok()
            .then(|| serde_json::from_value::<ApiPage<CodeInfo>>(answer.body.clone()).ok())
            .flatten();
        match list {
            Some(list) => {
                let mut shown = Vec::new();
                for code in list.items {
                    let text = if code.state == "active" && code.can_be_shown {
                        let answer = state
                            .api
                            .get(&page.read(), &format!("/codes/{}", code.public_id))
                            .await;
                        answer.body["registration_code"].as_str().map(str::to_owned)
                    } else {
                        None
                    };
                    shown.push((code, text));
                }
                Some(Codes {
                    list: shown,
                    more: list.next_cursor.is_some(),
                    failed: None,
                })
            }
            None if answer.status == StatusCode::FORBIDDEN => None,
            None => Some(Codes {
                list: Vec::new(),
                more: false,
                failed: Some(said(&answer)),
            }),
        }
    } else {
        None
    };

    let recorders = recorders_part(state, page, &account.id, query, now).await;

    let subaccounts = if account.is_partner() && !account.children.is_empty() {
        match TreeWalk::load(state, &page.read(), Some(&account.id)).await {
            Ok(walk) => Some(walk.children(&account.id)),
            Err(_) => None,
        }
    } else {
        Some(Vec::new())
    };

    let status = match sent {
        Sent::Nothing => StatusCode::OK,
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    };
    let body = account_body(
        page,
        &account,
        query,
        &sent,
        codes.as_ref(),
        &recorders,
        subaccounts.as_deref(),
        now,
    );
    respond(status, shell(Some(page), &account.name, &crumbs, body))
}

#[allow(clippy::too_many_arguments)]
fn account_body(
    page: &Page,
    account: &AccountInfo,
    query: &AccountQuery,
    sent: &Sent,
    codes: Option<&Codes>,
    recorders: &Markup,
    subaccounts: Option<&[(AccountInfo, i64, i64)]>,
    now: i64,
) -> Markup {
    let own = account.id == page.me.account.id;
    let manage = page.can("accounts.manage");
    let action_errors = match sent {
        Sent::Action(errors) => Some(errors),
        _ => None,
    };
    html! {
        div.card-head {
            h1 { (account.name) }
            div.actions {
                @if !account.kind_name().is_empty() { span.badge.kind { (account.kind_name()) } }
                @if account.disabled_at.is_some() {
                    span.badge.disabled { "Disabled" }
                } @else if account.disabled_via.is_some() {
                    span.badge.disabled { "Disabled with an account above" }
                }
            }
        }
        (notice(query.done.as_deref()))
        @if let Some(errors) = action_errors { (form_error(errors)) }
        @match sent {
            Sent::Details(..) | Sent::Disable(..) => {
                p.alert role="alert" { "The form was not saved: " a href="#details" { "see what to change under Details" } "." }
            }
            Sent::NewCode(..) => {
                p.alert role="alert" { "No code was made: " a href="#new-code" { "see what to change under New code" } "." }
            }
            _ => {}
        }

        @if let Some(codes) = codes {
            (codes_section(page, account, codes, sent, now))
        }

        section #recorders.card aria-labelledby="recorders-title" {
            div.card-head {
                h2 #recorders-title { "Recorders" }
                @if query.recorders.as_deref() == Some("revoked") {
                    a href={ "/accounts/" (account.id) "#recorders" } { "Show the recorders in use" }
                } @else {
                    a href={ "/accounts/" (account.id) "?recorders=revoked#recorders" } { "Show revoked recorders" }
                }
            }
            (recorders)
        }

        @if account.is_partner() {
            (subaccounts_section(page, account, query, subaccounts))
        }

        @if !account.limited {
        section #details.card aria-labelledby="details-title" {
            h2 #details-title { "Details" }
            dl.facts {
                dt { "Address" }
                dd.multiline { @if account.address.is_empty() { span.muted { "none given" } } @else { (account.address) } }
                dt { "Contact" }
                dd { @if let Some(c) = account.contact.as_deref().filter(|c| !c.is_empty()) { (c) } @else { span.muted { "none given" } } }
                @if let Some(created) = account.created_at {
                    dt { "Created" }
                    dd { (when(Some(created), now, "")) }
                }
                @if let Some(disabled) = account.disabled_at {
                    dt { "Disabled" }
                    dd { (when(Some(disabled), now, "")) }
                }
            }
            @if manage {
                (details_form(page, account, sent))
                @if !own {
                    (disable_form(page, account, sent))
                }
            }
        }
        }
    }
}

/// The recorders region: the live fragment inside its refreshing container.
async fn recorders_part(
    state: &Shared,
    page: &Page,
    account_id: &str,
    query: &AccountQuery,
    now: i64,
) -> Markup {
    let revoked = query.recorders.as_deref() == Some("revoked");
    let cursor = api_cursor(query.rcursor.as_deref());
    let fragment = match recorders_fragment(state, page, account_id, revoked, cursor, now).await {
        Ok(markup) => markup,
        Err(answer) => html! {
            p.alert role="alert" { "The recorders could not be read: " (said(&answer)) " Reload the page to try again." }
        },
    };
    let mut live = format!("/accounts/{account_id}/recorders/live");
    let mut params = Vec::new();
    if revoked {
        params.push("recorders=revoked".to_owned());
    }
    if let Some(c) = cursor {
        params.push(format!("rcursor={c}"));
    }
    if !params.is_empty() {
        live.push('?');
        live.push_str(&params.join("&"));
    }
    html! {
        div #recorders-live data-refresh-url=(live) data-refresh-millis=(state.refresh_millis) {
            (fragment)
        }
    }
}

/// The recorders of one account (not of the accounts below it), as a table.
async fn recorders_fragment(
    state: &Shared,
    page: &Page,
    account_id: &str,
    revoked: bool,
    cursor: Option<&str>,
    now: i64,
) -> Result<Markup, Answer> {
    let mut path = format!(
        "/recorders?account={account_id}&only_account=true&revoked={revoked}&limit={RECORDER_PAGE}"
    );
    if let Some(c) = cursor {
        path.push_str(&format!("&cursor={c}"));
    }
    let answer = state.api.get(&page.read(), &path).await;
    if answer.status == StatusCode::FORBIDDEN {
        return Ok(html! {
            p.empty { "Your groups do not include seeing recorders (recorders.view). Ask one of this account's administrators to add it." }
        });
    }
    let list = match answer
        .ok()
        .then(|| serde_json::from_value::<ApiPage<RecorderInfo>>(answer.body.clone()))
    {
        Some(Ok(list)) => list,
        _ => {
            return Err(answer);
        }
    };
    let base = format!("/accounts/{account_id}");
    let revoked_param = if revoked { "recorders=revoked&" } else { "" };
    Ok(html! {
        @if list.items.is_empty() {
            @if revoked {
                p.empty { "No revoked recorders in this account." }
            } @else if cursor.is_some() {
                p.empty { "No more recorders. " a href={ (base) "#recorders" } { "Back to the first page" } }
            } @else {
                p.empty.no-recorders {
                    "No recorders yet: enter this code on the recorder "
                    @if page.can("codes.view") {
                        "(the registration code above, in the recorder's setup screen or with "
                        code { "contera-agent enroll --code …" }
                        "), and it shows here, online, within seconds."
                    } @else {
                        "(this account's registration code: ask an administrator who can see codes for it), and it shows here, online, within seconds."
                    }
                }
            }
        } @else {
            div.table-wrap {
                table.stack.recorders {
                    thead {
                        tr {
                            th scope="col" { "Recorder" }
                            th scope="col" { "State" }
                            th scope="col" { "Last seen" }
                            th scope="col" { "Model" }
                            th scope="col" { "Serial" }
                            th scope="col" { "Firmware" }
                            th scope="col" { "Certificate expires" }
                        }
                    }
                    tbody {
                        @for r in &list.items {
                            tr data-recorder=(r.id) {
                                td data-label="Recorder" { a href={ "/recorders/" (r.id) } { (r.title()) } }
                                td data-label="State" { (state_badges(r)) }
                                td data-label="Last seen" { (when(r.last_seen, now, "never")) }
                                td data-label="Model" { (r.model) }
                                td data-label="Serial" { (r.serial) }
                                td data-label="Firmware" { (r.firmware.as_deref().unwrap_or("—")) }
                                td data-label="Certificate expires" { (when(r.cert_not_after, now, "—")) }
                            }
                        }
                    }
                }
            }
            @if cursor.is_some() || list.next_cursor.is_some() {
                nav.pager aria-label="Recorder pages" {
                    @if cursor.is_some() {
                        a href={ (base) (if revoked { "?recorders=revoked" } else { "" }) "#recorders" } { "First page" }
                    }
                    @if let Some(next) = api_cursor(list.next_cursor.as_deref()) {
                        a href={ (base) "?" (revoked_param) "rcursor=" (next) "#recorders" } { "Next recorders" }
                    }
                }
            }
        }
    })
}

/// A recorder's state: Online, Offline or Revoked, and a flag waiting for confirmation.
pub(super) fn state_badges(r: &RecorderInfo) -> Markup {
    html! {
        @if r.revoked_at.is_some() {
            span.badge.revoked { "Revoked" }
        } @else if r.online {
            span.badge.online { "Online" }
        } @else {
            span.badge.offline { "Offline" }
        }
        @if r.flagged_replacement_of.is_some() && r.revoked_at.is_none() {
            " " span.badge.flagged { "Replacement?" }
        }
    }
}

/// `GET /accounts/{id}/recorders/live`: the recorders region's content alone, for the
/// page's script to swap in. Without a session it answers 401 (the page keeps what it has).
async fn recorders_live(
    State(state): State<Shared>,
    page: Result<Page, Response>,
    Path(id): Path<String>,
    Query(query): Query<AccountQuery>,
) -> Response {
    let Ok(page) = page else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    if !plain_id(&id) {
        return not_found_page();
    }
    let revoked = query.recorders.as_deref() == Some("revoked");
    match recorders_fragment(
        &state,
        &page,
        &id,
        revoked,
        api_cursor(query.rcursor.as_deref()),
        now(),
    )
    .await
    {
        Ok(markup) => respond(StatusCode::OK, markup),
        Err(answer) => api_error_page(Some(&page), &answer),
    }
}

fn subaccounts_section(
    page: &Page,
    account: &AccountInfo,
    query: &AccountQuery,
    subaccounts: Option<&[(AccountInfo, i64, i64)]>,
) -> Markup {
    let pages = subaccounts.map_or(1, |s| s.len().div_ceil(SUB_PAGE).max(1));
    let current = query
        .sub
        .as_deref()
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(1)
        .clamp(1, pages);
    html! {
        section #subaccounts.card aria-labelledby="subaccounts-title" {
            div.card-head {
                h2 #subaccounts-title { "Sub-accounts" }
                div.actions {
                    a href="/accounts" { "Account tree" }
                    @if page.can("accounts.manage") {
                        a.button.primary href={ "/accounts/new?parent=" (account.id) } { "+ Add new account" }
                    }
                }
            }
            @match subaccounts {
                None => {
                    p.alert role="alert" { "The sub-accounts could not be read. Reload the page, or open the " a href="/accounts" { "account tree" } "." }
                }
                Some([]) => {
                    p.empty {
                        "No sub-accounts yet. "
                        @if page.can("accounts.manage") {
                            "Use \"+ Add new account\" to create a customer (or a partner) below this account; its first user is invited by mail."
                        } @else {
                            "An administrator with accounts.manage can add them."
                        }
                    }
                }
                Some(all) => {
                    div.table-wrap {
                        table.stack.subaccounts {
                            thead {
                                tr {
                                    th scope="col" { "Account" }
                                    th scope="col" { "Kind" }
                                    th scope="col" { "Recorders online" }
                                    th scope="col" { "State" }
                                }
                            }
                            tbody {
                                @for (child, online, total) in all.iter().skip((current - 1) * SUB_PAGE).take(SUB_PAGE) {
                                    tr data-account=(child.id) {
                                        td data-label="Account" { a href={ "/accounts/" (child.id) } { (child.name) } }
                                        td data-label="Kind" { (child.kind_name()) }
                                        td data-label="Recorders online" {
                                            (counts(*online, *total))
                                            @if child.is_partner() && *total > 0 { span.muted { " (with its sub-accounts)" } }
                                        }
                                        td data-label="State" {
                                            @if child.disabled_via.is_some() { span.badge.disabled { "Disabled" } }
                                            @else { span.muted { "Active" } }
                                        }
                                    }
                                }
                            }
                        }
                    }
                    @if pages > 1 {
                        nav.pager aria-label="Sub-account pages" {
                            span { "Page " (current) " of " (pages) }
                            @if current > 1 {
                                a href={ "/accounts/" (account.id) "?sub=" (current - 1) "#subaccounts" } { "Previous" }
                            }
                            @if current < pages {
                                a href={ "/accounts/" (account.id) "?sub=" (current + 1) "#subaccounts" } { "Next" }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// An account's codes as its page shows them: each with its whole text when it still
/// enrolls.
pub(super) struct Codes {
    list: Vec<(CodeInfo, Option<String>)>,
    /// More codes than the page lists.
    more: bool,
    /// Why they could not be read.
    failed: Option<String>,
}

fn codes_section(
    page: &Page,
    account: &AccountInfo,
    codes: &Codes,
    sent: &Sent,
    now: i64,
) -> Markup {
    let manage = page.can("codes.manage");
    let more = codes.more;
    html! {
        section #codes.card aria-labelledby="codes-title" {
            h2 #codes-title { "Registration codes" }
            p.hint { "An installer enters a code on the recorder to put it into this account. Several codes can work at once, each with its own limits." }
            @if let Some(failed) = &codes.failed {
                p.alert role="alert" { "The codes could not be read: " (failed) " Reload the page to try again." }
            } @else if codes.list.is_empty() {
                p.empty {
                    "This account has no registration code. "
                    @if manage { "Create one below, then enter it on the recorder." }
                    @else { "Ask an administrator with codes.manage to create one." }
                }
            } @else {
                div.table-wrap {
                    table.stack.codes {
                        thead {
                            tr {
                                th scope="col" { "Code" }
                                th scope="col" { "Label" }
                                th scope="col" { "State" }
                                th scope="col" { "Uses" }
                                th scope="col" { "Expires" }
                                th scope="col" { "Last used" }
                                @if manage { th scope="col" { span.visually-hidden { "Actions" } } }
                            }
                        }
                        tbody {
                            @for (code, text) in &codes.list {
                                tr data-code=(code.public_id) {
                                    td data-label="Code" {
                                        @if let Some(text) = text {
                                            div.code-copy {
                                                code.registration-code id={ "code-" (code.public_id) } { (text) }
                                                button.small type="button" data-copy={ "code-" (code.public_id) } { "Copy" }
                                            }
                                        } @else {
                                            code.public-id { (code.public_id) "-…" }
                                        }
                                    }
                                    td data-label="Label" { @if code.label.is_empty() { span.muted { "—" } } @else { (code.label) } }
                                    td data-label="State" { (code_state(&code.state)) }
                                    td data-label="Uses" {
                                        (code.uses)
                                        @if let Some(max) = code.max_uses { " of " (max) } @else { span.muted { " (no limit)" } }
                                    }
                                    td data-label="Expires" { (when(code.expires_at, now, "never")) }
                                    td data-label="Last used" { (when(code.last_used_at, now, "never")) }
                                    @if manage {
                                        td data-label="Actions" {
                                            div.actions {
                                                a href={ "/accounts/" (account.id) "/codes/" (code.public_id) } { "Edit limits" span.visually-hidden { " of code " (code.public_id) } }
                                                @if code.state != "disabled" {
                                                    form.inline method="post" action={ "/accounts/" (account.id) "/codes/" (code.public_id) "/disable" } {
                                                        (csrf_field(page))
                                                        button.small.danger type="submit" { "Disable" span.visually-hidden { " code " (code.public_id) } }
                                                    }
                                                }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                @if more {
                    p.muted { "Only the newest " (CODE_PAGE) " codes are listed." }
                }
            }
            @if manage {
                div.grid.two.code-forms {
                    (super::codes::new_code_form(page, account, sent))
                    form #rotate-codes method="post" action={ "/accounts/" (account.id) "/codes/rotate" } {
                        h3 { "Rotate codes" }
                        p.hint { "Disables every active code of this account and makes one new code. Recorders already enrolled keep working; only new enrollments need the new code." }
                        (csrf_field(page))
                        button type="submit" { "Rotate codes" }
                    }
                }
            }
        }
    }
}

fn code_state(state: &str) -> Markup {
    let (class, text) = match state {
        "active" => ("online", "Active"),
        "disabled" => ("disabled", "Disabled"),
        "expired" => ("offline", "Expired"),
        "used_up" => ("offline", "Used up"),
        _ => ("offline", "Unknown"),
    };
    html! { span class={ "badge " (class) } { (text) } }
}

// ---------------------------------------------------------------------------------------
// Details, disabling and enabling.

#[derive(Debug, Default, Clone, Deserialize)]
pub struct DetailsForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    account_name: String,
    #[serde(default)]
    account_address: String,
    #[serde(default)]
    account_contact: String,
}

fn details_form(page: &Page, account: &AccountInfo, sent: &Sent) -> Markup {
    let (values, errors, open) = match sent {
        Sent::Details(form, errors) => (form.clone(), errors.clone(), true),
        _ => (
            DetailsForm {
                csrf: String::new(),
                account_name: account.name.clone(),
                account_address: account.address.clone(),
                account_contact: account.contact.clone().unwrap_or_default(),
            },
            Errors::default(),
            false,
        ),
    };
    html! {
        details.edit open[open] {
            summary { "Edit details" }
            form #account-details method="post" action={ "/accounts/" (account.id) } novalidate {
                (form_error(&errors))
                (csrf_field(page))
                (Field::new("account_name", "Name").value(&values.account_name).render(&errors))
                (Field::new("account_address", "Address").kind("textarea").value(&values.account_address).optional().render(&errors))
                (Field::new("account_contact", "Contact").value(&values.account_contact).optional().hint("Who to call about this account: name, phone or email.").render(&errors))
                button.primary type="submit" { "Save details" }
            }
        }
    }
}

fn disable_form(page: &Page, account: &AccountInfo, sent: &Sent) -> Markup {
    let errors = match sent {
        Sent::Disable(errors) => errors.clone(),
        _ => Errors::default(),
    };
    let confirm_error = errors.get("confirm_disable");
    html! {
        @if account.disabled_at.is_some() {
            form #enable-account.state-form method="post" action={ "/accounts/" (account.id) "/enable" } {
                (csrf_field(page))
                p.hint { "Enabling lets this account and its sub-accounts enroll recorders again (unless an account above is disabled too)." }
                button.primary type="submit" { "Enable account" }
            }
        } @else {
            details.edit open[confirm_error.is_some()] {
                summary { "Disable account" }
                form #disable-account method="post" action={ "/accounts/" (account.id) "/disable" } novalidate {
                    (form_error(&errors))
                    (csrf_field(page))
                    p.hint { "While disabled, this account and every account below it refuse enrollments and renewals, and their recorders are told so at their next heartbeat. Enabling it undoes this." }
                    div.field.check.invalid[confirm_error.is_some()] {
                        input #confirm_disable type="checkbox" name="confirm_disable" value="yes"
                            aria-describedby=[confirm_error.map(|_| "confirm_disable-error")];
                        label for="confirm_disable" { "I understand that its recorders stop being served" }
                        @if let Some(e) = confirm_error { p.field-error #confirm_disable-error { (e) } }
                    }
                    button.danger type="submit" { "Disable account" }
                }
            }
        }
    }
}

async fn update_account(
    State(state): State<Shared>,
    page: Page,
    Path(id): Path<String>,
    Form(form): Form<DetailsForm>,
) -> Response {
    if let Err(refused) = check_session_csrf(&page, &form.csrf) {
        return refused;
    }
    if !plain_id(&id) {
        return not_found_page();
    }
    let current = state
        .api
        .get(&page.read(), &format!("/accounts/{id}"))
        .await;
    if !current.ok() {
        return api_error_page(Some(&page), &current);
    }
    let current: AccountInfo = match parse(&current) {
        Ok(a) => a,
        Err(failed) => return failed,
    };
    let name = form.account_name.trim();
    let address = form.account_address.replace("\r\n", "\n").trim().to_owned();
    let contact = form.account_contact.trim();
    let mut errors = Errors::default();
    if name.is_empty() {
        errors.add("account_name", "Enter the account's name.");
    }
    if errors.is_empty() {
        let mut changes = serde_json::Map::new();
        if name != current.name {
            changes.insert("name".into(), json!(name));
        }
        if address != current.address {
            changes.insert("address".into(), json!(address));
        }
        if contact != current.contact.as_deref().unwrap_or("") {
            changes.insert(
                "contact".into(),
                if contact.is_empty() {
                    Value::Null
                } else {
                    json!(contact)
                },
            );
        }
        if changes.is_empty() {
            return Redirect::to(&format!("/accounts/{id}?done=nothing-changed")).into_response();
        }
        let answer = state
            .api
            .call(
                &page.write(&form.csrf),
                axum::http::Method::PATCH,
                &format!("/accounts/{id}"),
                Some(&Value::Object(changes)),
            )
            .await;
        if answer.ok() {
            return Redirect::to(&format!("/accounts/{id}?done=account-updated")).into_response();
        }
        if answer.status != StatusCode::BAD_REQUEST {
            return api_error_page(Some(&page), &answer);
        }
        api_errors(
            &answer,
            &[
                ("name", "account_name"),
                ("address", "account_address"),
                ("contact", "account_contact"),
            ],
            &mut errors,
        );
    }
    account_page(
        &state,
        &page,
        &id,
        &AccountQuery::default(),
        Sent::Details(form, errors),
    )
    .await
}

#[derive(Debug, Default, Deserialize)]
pub struct DisableForm {
    #[serde(default)]
    csrf: String,
    confirm_disable: Option<String>,
}

async fn disable_account(
    State(state): State<Shared>,
    page: Page,
    Path(id): Path<String>,
    Form(form): Form<DisableForm>,
) -> Response {
    if let Err(refused) = check_session_csrf(&page, &form.csrf) {
        return refused;
    }
    if !plain_id(&id) {
        return not_found_page();
    }
    let mut errors = Errors::default();
    if form.confirm_disable.is_none() {
        errors.add(
            "confirm_disable",
            "Tick the box to confirm: the account's recorders stop being served until it is enabled again.",
        );
        return account_page(
            &state,
            &page,
            &id,
            &AccountQuery::default(),
            Sent::Disable(errors),
        )
        .await;
    }
    set_disabled(&state, &page, &id, &form.csrf, true).await
}

async fn enable_account(
    State(state): State<Shared>,
    page: Page,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Err(refused) = check_session_csrf(&page, &form.csrf) {
        return refused;
    }
    if !plain_id(&id) {
        return not_found_page();
    }
    set_disabled(&state, &page, &id, &form.csrf, false).await
}

/// A form with nothing but its CSRF token (a button).
#[derive(Debug, Default, Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    pub csrf: String,
}

async fn set_disabled(
    state: &Shared,
    page: &Page,
    id: &str,
    csrf: &str,
    disabled: bool,
) -> Response {
    let what = if disabled { "disable" } else { "enable" };
    let answer = state
        .api
        .post(
            &page.write(csrf),
            &format!("/accounts/{id}/{what}"),
            &json!({}),
        )
        .await;
    if answer.ok() {
        return Redirect::to(&format!("/accounts/{id}?done=account-{what}d")).into_response();
    }
    match answer.status {
        StatusCode::CONFLICT | StatusCode::BAD_REQUEST => {
            let mut errors = Errors::default();
            errors.add("", said(&answer));
            account_page(
                state,
                page,
                id,
                &AccountQuery::default(),
                Sent::Action(errors),
            )
            .await
        }
        _ => api_error_page(Some(page), &answer),
    }
}

// ---------------------------------------------------------------------------------------
// A new account.

#[derive(Debug, Default, Deserialize)]
pub struct NewAccountQuery {
    parent: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
pub struct NewAccountForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    parent: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    address: String,
    #[serde(default)]
    contact: String,
    #[serde(default)]
    first_user_name: String,
    #[serde(default)]
    first_user_email: String,
}

async fn new_account_page(
    State(state): State<Shared>,
    page: Page,
    Query(query): Query<NewAccountQuery>,
) -> Response {
    let parent = query
        .parent
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| page.me.account.id.clone());
    let form = NewAccountForm {
        parent,
        kind: "customer".to_owned(),
        ..NewAccountForm::default()
    };
    new_account_form(&state, &page, &form, &Errors::default(), StatusCode::OK).await
}

async fn new_account_form(
    state: &Shared,
    page: &Page,
    form: &NewAccountForm,
    errors: &Errors,
    status: StatusCode,
) -> Response {
    if !plain_id(&form.parent) {
        return not_found_page();
    }
    let answer = state
        .api
        .get(&page.read(), &format!("/accounts/{}", form.parent))
        .await;
    if !answer.ok() {
        return api_error_page(Some(page), &answer);
    }
    let parent: AccountInfo = match parse(&answer) {
        Ok(p) => p,
        Err(failed) => return failed,
    };
    if !page.can("accounts.manage") {
        return forbidden_page(
            page,
            "Adding accounts needs the accounts.manage permission; ask one of your account's administrators.",
        );
    }
    let mut crumbs = crumbs_to(state, page, &parent).await;
    crumbs.push(Crumb {
        name: "New account".to_owned(),
        href: format!("/accounts/new?parent={}", parent.id),
    });
    let kind_error = errors.get("kind");
    let body = html! {
        div.form-page {
            h1 { "New account" }
            @if !parent.is_partner() {
                p.alert role="alert" {
                    (parent.name) " is a customer account, and only partner accounts hold other accounts. "
                    a href={ "/accounts/" (parent.id) } { "Back to " (parent.name) }
                }
            } @else {
                p { "The account is created below " strong { (parent.name) } ", with its first registration code. Its first user becomes its administrator and is invited by mail." }
                form #new-account method="post" action="/accounts/new" novalidate {
                    (form_error(errors))
                    (csrf_field(page))
                    input type="hidden" name="parent" value=(parent.id);
                    div.field.invalid[kind_error.is_some()] {
                        label for="kind" { "Kind" }
                        p.hint #kind-hint { "A customer holds recorders; a partner can also hold accounts of its own customers." }
                        select #kind name="kind" aria-describedby={ "kind-hint" @if kind_error.is_some() { " kind-error" } } {
                            option value="partner" selected[form.kind == "partner"] { "Partner" }
                            option value="customer" selected[form.kind != "partner"] { "Customer" }
                        }
                        @if let Some(e) = kind_error { p.field-error #kind-error { (e) } }
                    }
                    (Field::new("name", "Account name").value(&form.name).render(errors))
                    (Field::new("address", "Address").kind("textarea").value(&form.address).optional().render(errors))
                    (Field::new("contact", "Contact").value(&form.contact).optional().hint("Who to call about this account: name, phone or email.").render(errors))
                    fieldset {
                        legend { "First user (the account's administrator)" }
                        (Field::new("first_user_name", "Name").value(&form.first_user_name).autocomplete("off").render(errors))
                        (Field::new("first_user_email", "Email").kind("email").value(&form.first_user_email).autocomplete("off").hint("The invitation goes to this address; it is also their login.").render(errors))
                    }
                    div.actions {
                        button.primary type="submit" { "Create account" }
                        a href={ "/accounts/" (parent.id) } { "Cancel" }
                    }
                }
            }
        }
    };
    respond(status, shell(Some(page), "New account", &crumbs, body))
}

async fn new_account(
    State(state): State<Shared>,
    page: Page,
    Form(form): Form<NewAccountForm>,
) -> Response {
    if let Err(refused) = check_session_csrf(&page, &form.csrf) {
        return refused;
    }
    let mut errors = Errors::default();
    if form.kind != "partner" && form.kind != "customer" {
        errors.add("kind", "Choose Partner or Customer.");
    }
    if form.name.trim().is_empty() {
        errors.add(
            "name",
            "Enter the account's name, e.g. the store or company.",
        );
    }
    if form.first_user_name.trim().is_empty() {
        errors.add("first_user_name", "Enter the name of the person to invite.");
    }
    let email = form.first_user_email.trim();
    if !email.contains('@') {
        errors.add(
            "first_user_email",
            "Enter an email address, like name@example.com.",
        );
    }
    if errors.is_empty() {
        let contact = form.contact.trim();
        let answer = state
            .api
            .post(
                &page.write(&form.csrf),
                "/accounts",
                &json!({
                    "kind": form.kind,
                    "name": form.name.trim(),
                    "parent_id": form.parent,
                    "address": form.address.replace("\r\n", "\n").trim(),
                    "contact": if contact.is_empty() { Value::Null } else { json!(contact) },
                    "first_user": { "name": form.first_user_name.trim(), "email": email },
                }),
            )
            .await;
        if answer.ok() {
            let id = answer.body["account"]["id"].as_str().unwrap_or_default();
            let done = if answer.body["invitation_sent"] == json!(true) {
                "account-created"
            } else {
                "account-created-unsent"
            };
            return Redirect::to(&format!("/accounts/{id}?done={done}")).into_response();
        }
        match answer.status {
            StatusCode::BAD_REQUEST => api_errors(
                &answer,
                &[
                    ("first_user.email", "first_user_email"),
                    ("first_user.name", "first_user_name"),
                    ("name", "name"),
                    ("address", "address"),
                    ("contact", "contact"),
                    ("kind", "kind"),
                ],
                &mut errors,
            ),
            StatusCode::CONFLICT => api_errors(
                &answer,
                &[("first_user.email", "first_user_email")],
                &mut errors,
            ),
            _ => return api_error_page(Some(&page), &answer),
        }
    }
    new_account_form(
        &state,
        &page,
        &form,
        &errors,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: &str, depth: usize, online: i64, total: i64) -> AccountInfo {
        serde_json::from_value(json!({
            "id": id, "name": id, "kind": "partner", "parent_id": null, "created_at": 1,
            "depth": depth, "recorders_online": online, "recorders_total": total,
        }))
        .unwrap()
    }

    #[test]
    fn times_read_as_words_both_ways() {
        let now = 1_000_000_000;
        assert_eq!(words(now, now), "just now");
        assert_eq!(words(now - 30, now), "30 seconds ago");
        assert_eq!(words(now - 120, now), "2 minutes ago");
        assert_eq!(words(now - 3600, now), "1 hour ago");
        assert_eq!(words(now + 89 * 86400 + 5, now), "in 89 days");
        assert_eq!(words(now + 3 * 365 * 86400, now), "in 3 years");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_text(86400 + 3660), "1970-01-02 01:01 UTC");
    }

    #[test]
    fn only_plain_ids_and_api_cursors_go_into_api_paths() {
        assert!(plain_id("0b5c-AD_9"));
        for bad in ["", "a/b", "a?b", "a&b", "..", "a b", "a%2F"] {
            assert!(!plain_id(bad), "{bad}");
        }
        assert_eq!(api_cursor(Some("00ff")), Some("00ff"));
        assert_eq!(api_cursor(Some("x&limit=1")), None);
        assert_eq!(api_cursor(Some("")), None);
        assert_eq!(enc("Store 7 & co/ä"), "Store%207%20%26%20co%2F%C3%A4");
    }

    #[test]
    fn api_refusals_go_next_to_the_field_they_name() {
        let refusal = |message: &str| Answer {
            status: StatusCode::BAD_REQUEST,
            body: json!({ "error": { "code": "malformed_request", "message": message } }),
            set_cookies: Vec::new(),
        };
        let fields = [("first_user.email", "first_user_email"), ("name", "name")];
        let mut errors = Errors::default();
        api_errors(
            &refusal("first_user.email: \"x\" is not an email address"),
            &fields,
            &mut errors,
        );
        api_errors(
            &refusal("name is empty: give the account a name"),
            &fields,
            &mut errors,
        );
        api_errors(&refusal("names are odd"), &fields, &mut errors);
        assert_eq!(
            errors.get("first_user_email"),
            Some("\"x\" is not an email address")
        );
        assert_eq!(
            errors.get("name"),
            Some("Name is empty: give the account a name")
        );
        assert_eq!(errors.get(""), Some("names are odd"));
        assert_eq!(said(&refusal("try again")), "Try again.");
    }

    #[test]
    fn children_count_the_recorders_of_their_whole_subtree() {
        let walk = TreeWalk {
            items: vec![
                item("root", 0, 1, 1),
                item("a", 1, 1, 2),
                item("a1", 2, 3, 4),
                item("a11", 3, 0, 1),
                item("b", 1, 0, 0),
                item("c", 1, 2, 2),
            ],
        };
        let children: Vec<(String, i64, i64)> = walk
            .children("root")
            .into_iter()
            .map(|(a, online, total)| (a.id, online, total))
            .collect();
        assert_eq!(
            children,
            [
                ("a".to_owned(), 4, 7),
                ("b".to_owned(), 0, 0),
                ("c".to_owned(), 2, 2)
            ]
        );
        assert_eq!(walk.children("a").len(), 1);
        assert!(walk.children("b").is_empty());
        assert!(walk.children("unknown").is_empty());
    }

    #[test]
    fn notices_are_fixed_texts() {
        assert!(notice_text(Some("account-created"))
            .unwrap()
            .contains("invitation was sent"));
        assert_eq!(notice_text(Some("<script>")), None);
        assert_eq!(notice_text(None), None);
    }
}
