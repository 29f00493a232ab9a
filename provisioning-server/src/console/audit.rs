//! The audit log: who did what, when, in which account, from which address; filtered by
//! account (a select of the caller's accounts), actor, action and a date range, newest
//! first, with an "Older" link carrying the API's cursor. Needs audit.view (the API
//! decides: without it the page is the API's 403).

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::Value;

use super::forms::{form_error, Errors, Field};
use super::layout::{api_error_page, respond, shell, Crumb, Page};
use super::users::{enc, parse_date, utc_text, when};
use super::Shared;

/// Entries on one page when the URL does not say.
const ENTRIES_PER_PAGE: u32 = 50;
/// Users looked up by id to name the actors of one page; others show as their id.
const ACTOR_LOOKUPS: usize = 25;

pub fn routes() -> Router<Shared> {
    Router::new().route("/audit", get(audit_page))
}

/// The filters, as the filter form (a GET) sends them.
#[derive(Debug, Default, Deserialize)]
pub struct AuditParams {
    #[serde(default)]
    account: String,
    #[serde(default)]
    only: String,
    #[serde(default)]
    actor: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    #[serde(default)]
    cursor: String,
    #[serde(default)]
    limit: String,
}

impl AuditParams {
    /// The filters (without the cursor) as `(name, value)` pairs, empty ones left out.
    fn filters(&self) -> Vec<(&'static str, String)> {
        [
            ("account", self.account.trim()),
            ("only", self.only.trim()),
            ("actor", self.actor.trim()),
            ("action", self.action.trim()),
            ("since", self.since.trim()),
            ("until", self.until.trim()),
            ("limit", self.limit.trim()),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k, v.to_owned()))
        .collect()
    }

    /// This page's URL with `name` set to `value` (and no cursor): the links of the table
    /// that narrow the filter.
    fn with(&self, name: &str, value: &str) -> String {
        let mut pairs: Vec<(&str, String)> = self
            .filters()
            .into_iter()
            .filter(|(k, _)| *k != name)
            .collect();
        pairs.push((name, value.to_owned()));
        url(&pairs)
    }
}

fn url(pairs: &[(&str, String)]) -> String {
    if pairs.is_empty() {
        return "/audit".to_owned();
    }
    let query: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", enc(v)))
        .collect();
    format!("/audit?{}", query.join("&"))
}

/// An audit entry as the API lists it.
#[derive(Debug, Clone, Deserialize)]
struct Entry {
    at: i64,
    actor: String,
    action: String,
    account_id: Option<String>,
    recorder_id: Option<String>,
    #[serde(default)]
    detail: String,
    source: Option<String>,
}

/// An account of the caller's subtree, for the select and the table.
struct AccountOption {
    id: String,
    name: String,
    depth: usize,
}

/// The caller's accounts in tree order (needs accounts.view; without it only their own).
async fn accounts(state: &Shared, page: &Page) -> Vec<AccountOption> {
    let mut found = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let mut path = "/accounts?limit=500".to_owned();
        if let Some(cursor) = &cursor {
            path.push_str(&format!("&cursor={}", enc(cursor)));
        }
        let answer = state.api.get(&page.read(), &path).await;
        if !answer.ok() {
            break;
        }
        for item in answer.body["items"].as_array().into_iter().flatten() {
            found.push(AccountOption {
                id: item["id"].as_str().unwrap_or("").to_owned(),
                name: item["name"].as_str().unwrap_or("").to_owned(),
                depth: item["depth"].as_u64().unwrap_or(0) as usize,
            });
        }
        match answer.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    if found.is_empty() {
        found.push(AccountOption {
            id: page.me.account.id.clone(),
            name: page.me.account.name.clone(),
            depth: 0,
        });
    }
    found
}

/// Names for the `user:<id>` actors of a page, looked up through the API (users the caller
/// cannot see keep their id).
async fn actor_names(state: &Shared, page: &Page, entries: &[Entry]) -> HashMap<String, String> {
    let mut names = HashMap::new();
    let mut looked_up = 0;
    for entry in entries {
        let Some(user_id) = entry.actor.strip_prefix("user:") else {
            continue;
        };
        if names.contains_key(&entry.actor) || looked_up >= ACTOR_LOOKUPS {
            continue;
        }
        looked_up += 1;
        if user_id == page.me.user.id {
            names.insert(
                entry.actor.clone(),
                format!("{} ({})", page.me.user.name, page.me.user.email),
            );
            continue;
        }
        let answer = state
            .api
            .get(&page.read(), &format!("/users/{}", enc(user_id)))
            .await;
        if answer.ok() {
            names.insert(
                entry.actor.clone(),
                format!(
                    "{} ({})",
                    answer.body["name"].as_str().unwrap_or(""),
                    answer.body["email"].as_str().unwrap_or("")
                ),
            );
        }
    }
    names
}

/// An entry's details (a JSON object) as short "key: value" lines; times in words.
fn details(entry: &Entry) -> Markup {
    let parsed: Value = serde_json::from_str(&entry.detail).unwrap_or(Value::Null);
    let pairs: Vec<(String, Value)> = match parsed {
        Value::Object(map) => map.into_iter().collect(),
        Value::Null => Vec::new(),
        other => vec![(String::new(), other)],
    };
    html! {
        ul.details-list {
            @if let Some(recorder) = &entry.recorder_id {
                li { span.muted { "recorder: " } a href={ "/recorders/" (enc(recorder)) } { (recorder) } }
            }
            @for (key, value) in &pairs {
                li {
                    @if !key.is_empty() { span.muted { (key) ": " } }
                    @match (key.ends_with("_at"), value) {
                        (true, Value::Number(n)) if n.as_i64().is_some() => {
                            (utc_text(n.as_i64().unwrap_or(0)))
                        }
                        (_, Value::String(s)) => { (s) }
                        (_, Value::Array(items)) if items.iter().all(Value::is_string) => {
                            (items.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", "))
                        }
                        (_, Value::Null) => { span.muted { "none" } }
                        (_, other) => { (other.to_string()) }
                    }
                }
            }
        }
    }
}

async fn audit_page(
    State(state): State<Shared>,
    page: Page,
    Query(params): Query<AuditParams>,
) -> Response {
    let mut errors = Errors::default();
    let since = match params.since.trim() {
        "" => None,
        text => match parse_date(text) {
            Some(at) => Some(at),
            None => {
                errors.add("since", "Enter a date like 2026-01-31, or leave it empty.");
                None
            }
        },
    };
    let until = match params.until.trim() {
        "" => None,
        // Through the end of that day.
        text => match parse_date(text) {
            Some(at) => Some(at + 86_400),
            None => {
                errors.add("until", "Enter a date like 2026-01-31, or leave it empty.");
                None
            }
        },
    };
    if let (Some(since), Some(until)) = (since, until) {
        if until <= since {
            errors.add("until", "Choose a day on or after the \"From\" day.");
        }
    }
    let limit = params
        .limit
        .trim()
        .parse::<u32>()
        .ok()
        .filter(|n| (1..=500).contains(n))
        .unwrap_or(ENTRIES_PER_PAGE);

    let mut query = vec![("limit", limit.to_string())];
    for (name, value) in [
        ("account", params.account.trim()),
        ("actor", params.actor.trim()),
        ("action", params.action.trim()),
        ("cursor", params.cursor.trim()),
    ] {
        if !value.is_empty() {
            query.push((name, value.to_owned()));
        }
    }
    if !params.only.trim().is_empty() {
        query.push(("only_account", "true".to_owned()));
    }
    if let Some(since) = since {
        query.push(("since", since.to_string()));
    }
    if let Some(until) = until {
        query.push(("until", until.to_string()));
    }

    let (entries, next, status) = if errors.is_empty() {
        let path = format!(
            "/audit?{}",
            query
                .iter()
                .map(|(k, v)| format!("{k}={}", enc(v)))
                .collect::<Vec<_>>()
                .join("&")
        );
        let answer = state.api.get(&page.read(), &path).await;
        if !answer.ok() {
            if answer.status == StatusCode::BAD_REQUEST {
                errors.add("", answer.message());
                (Vec::new(), None, StatusCode::UNPROCESSABLE_ENTITY)
            } else {
                return api_error_page(Some(&page), &answer);
            }
        } else {
            let entries: Vec<Entry> =
                serde_json::from_value(answer.body["items"].clone()).unwrap_or_default();
            let next = answer.body["next_cursor"].as_str().map(str::to_owned);
            (entries, next, StatusCode::OK)
        }
    } else {
        (Vec::new(), None, StatusCode::UNPROCESSABLE_ENTITY)
    };

    let accounts = accounts(&state, &page).await;
    let account_names: HashMap<&str, &str> = accounts
        .iter()
        .map(|a| (a.id.as_str(), a.name.as_str()))
        .collect();
    let actors = actor_names(&state, &page, &entries).await;
    let selected_account = if params.account.trim().is_empty() {
        page.me.account.id.as_str()
    } else {
        params.account.trim()
    };
    let filtered = !params.filters().iter().all(|(k, _)| *k == "limit");
    let crumbs = vec![
        Crumb {
            name: page.me.account.name.clone(),
            href: format!("/accounts/{}", enc(&page.me.account.id)),
        },
        Crumb {
            name: "Audit log".to_owned(),
            href: "/audit".to_owned(),
        },
    ];
    let body = html! {
        h1 { "Audit log" }
        section.card aria-labelledby="filters-title" {
            h2 #filters-title { "Filter" }
            form.filters method="get" action="/audit" {
                (form_error(&errors))
                div {
                    div.field {
                        label for="account" { "Account" }
                        select #account name="account" {
                            @for account in &accounts {
                                option value=(account.id) selected[account.id == selected_account] {
                                    @for _ in 0..account.depth { "— " }
                                    (account.name)
                                }
                            }
                        }
                    }
                    div.field.check {
                        input #only type="checkbox" name="only" value="1" checked[!params.only.trim().is_empty()];
                        label for="only" { "Only this account, not the accounts below it" }
                    }
                }
                (Field::new("actor", "Actor").value(params.actor.trim()).optional()
                    .hint("Who acted, e.g. cli:root; or pick a name in the table.").render(&errors))
                (Field::new("action", "Action").value(params.action.trim()).optional()
                    .hint("e.g. session.login, user.invited, recorder.enrolled").render(&errors))
                (Field::new("since", "From").kind("date").value(params.since.trim()).optional()
                    .hint("This day on (UTC).").render(&errors))
                (Field::new("until", "Until").kind("date").value(params.until.trim()).optional()
                    .hint("Through the end of this day (UTC).").render(&errors))
                div.actions {
                    button.primary type="submit" { "Filter" }
                    @if filtered { a href="/audit" { "Clear filters" } }
                }
            }
        }
        section #audit .card aria-labelledby="entries-title" {
            h2 #entries-title { "Entries" span.muted { ", newest first" } }
            @if entries.is_empty() {
                p.empty {
                    @if filtered || !params.cursor.trim().is_empty() {
                        "No entries match these filters: widen the dates, or clear the filters."
                    } @else {
                        "Nothing recorded yet: logins, invitations and changes to accounts, codes and recorders show here as they happen."
                    }
                }
            } @else {
                div.table-wrap {
                    table.stack.audit {
                        thead { tr {
                            th scope="col" { "Time" }
                            th scope="col" { "Actor" }
                            th scope="col" { "Action" }
                            th scope="col" { "Account" }
                            th scope="col" { "Source address" }
                            th scope="col" { "Details" }
                        } }
                        tbody {
                            @for entry in &entries {
                                tr data-action=(entry.action) {
                                    td data-label="Time" {
                                        (when(entry.at)) br; span.muted { (utc_text(entry.at)) }
                                    }
                                    td data-label="Actor" {
                                        a href=(params.with("actor", &entry.actor)) title="Show only what this actor did" {
                                            (actors.get(&entry.actor).cloned().unwrap_or_else(|| entry.actor.clone()))
                                        }
                                    }
                                    td data-label="Action" {
                                        a href=(params.with("action", &entry.action)) title="Show only this action" {
                                            code { (entry.action) }
                                        }
                                    }
                                    td data-label="Account" {
                                        @match &entry.account_id {
                                            Some(id) => {
                                                a href={ "/accounts/" (enc(id)) } {
                                                    (account_names.get(id.as_str()).copied().unwrap_or(id.as_str()))
                                                }
                                            }
                                            None => { span.muted { "—" } }
                                        }
                                    }
                                    td.source data-label="Source address" {
                                        @match &entry.source {
                                            Some(source) => { (source) }
                                            None => { span.muted { "server or CLI" } }
                                        }
                                    }
                                    td data-label="Details" { (details(entry)) }
                                }
                            }
                        }
                    }
                }
            }
            nav.pager aria-label="Pages of the audit log" {
                @if !params.cursor.trim().is_empty() {
                    a href=(url(&params.filters())) { "Newest" }
                }
                @if let Some(next) = &next {
                    a href=(params.with("cursor", next)) rel="next" { "Older" }
                }
            }
        }
    };
    respond(status, shell(Some(&page), "Audit log", &crumbs, body))
}
