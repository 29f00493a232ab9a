//! The user's own API tokens: the list (newest first, revoked ones marked), creating one
//! with a name, some of the user's permissions and an optional expiry date (the secret is
//! shown once, on the answer to the form, with a Copy button), and revoking one.

use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::json;

use super::forms::{check_session_csrf, csrf_field, form_error, Errors, Field};
use super::groups::permission_boxes;
use super::layout::{api_error_page, respond, shell, Crumb, Page};
use super::users::{
    enc, inline_error, notice, now, parse_date, refused_status, split_field, utc_text, when,
    whole_page, Fields,
};
use super::Shared;

/// Tokens on one page of the list.
const TOKENS_PER_PAGE: u32 = 50;

pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/tokens", get(tokens_page).post(create_token))
        .route("/tokens/{id}/revoke", post(revoke_token))
}

/// A token as the API lists it (never its secret).
#[derive(Debug, Clone, Deserialize)]
struct TokenItem {
    id: String,
    name: String,
    #[serde(default)]
    permissions: Vec<String>,
    created_at: i64,
    expires_at: Option<i64>,
    last_used_at: Option<i64>,
    revoked_at: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
pub struct TokensQuery {
    cursor: Option<String>,
    done: Option<String>,
}

fn done_text(key: &str) -> Option<&'static str> {
    Some(match key {
        "revoked" => "The token is revoked: it stopped working at once.",
        _ => return None,
    })
}

#[derive(Debug, Default)]
struct CreateForm {
    name: String,
    permissions: Vec<String>,
    expires: String,
}

#[derive(Default)]
struct Feedback {
    notice: Option<&'static str>,
    create: CreateForm,
    create_errors: Errors,
    /// A refused revocation: the token and what the API said.
    revoke: Option<(String, String)>,
}

fn crumbs(page: &Page) -> Vec<Crumb> {
    vec![
        Crumb {
            name: page.me.account.name.clone(),
            href: format!("/accounts/{}", enc(&page.me.account.id)),
        },
        Crumb {
            name: "API tokens".to_owned(),
            href: "/tokens".to_owned(),
        },
    ]
}

async fn tokens_page(
    State(state): State<Shared>,
    page: Page,
    Query(query): Query<TokensQuery>,
) -> Response {
    let feedback = Feedback {
        notice: query.done.as_deref().and_then(done_text),
        ..Feedback::default()
    };
    tokens_view(&state, &page, query.cursor, feedback, StatusCode::OK).await
}

async fn tokens_view(
    state: &Shared,
    page: &Page,
    cursor: Option<String>,
    feedback: Feedback,
    status: StatusCode,
) -> Response {
    let mut path = format!("/tokens?limit={TOKENS_PER_PAGE}");
    if let Some(cursor) = cursor.as_deref().filter(|c| !c.is_empty()) {
        path.push_str(&format!("&cursor={}", enc(cursor)));
    }
    let list = state.api.get(&page.read(), &path).await;
    if !list.ok() {
        return api_error_page(Some(page), &list);
    }
    let tokens: Vec<TokenItem> =
        serde_json::from_value(list.body["items"].clone()).unwrap_or_default();
    let next = list.body["next_cursor"].as_str().map(str::to_owned);
    let now = now();
    let body = html! {
        h1 { "API tokens" }
        p { "A token lets a script call the admin API as you, with some of your permissions: send it as "
            code { "Authorization: Bearer …" } ". Revoke a token as soon as it is no longer needed." }
        (notice(feedback.notice))
        section #tokens .card aria-labelledby="tokens-title" {
            div.card-head {
                h2 #tokens-title { "Your tokens" }
                a href="#create-token" { "+ Create token" }
            }
            @if tokens.is_empty() {
                p.empty { "No API tokens yet: create one below for each script that calls the API." }
            } @else {
                div.table-wrap {
                    table.stack {
                        thead { tr {
                            th scope="col" { "Name" }
                            th scope="col" { "Permissions" }
                            th scope="col" { "Created" }
                            th scope="col" { "Expires" }
                            th scope="col" { "Last used" }
                            th scope="col" { "Status" }
                            th scope="col" { "Actions" }
                        } }
                        tbody {
                            @for token in &tokens {
                                (token_row(page, token, now, &feedback))
                            }
                        }
                    }
                }
            }
            nav.pager aria-label="Pages of tokens" {
                @if cursor.is_some() { a href="/tokens" { "Newest" } }
                @if let Some(next) = &next {
                    a href={ "/tokens?cursor=" (enc(next)) } { "Older" }
                }
            }
        }
        (create_form(page, &feedback))
    };
    respond(status, shell(Some(page), "API tokens", &crumbs(page), body))
}

fn token_row(page: &Page, token: &TokenItem, now: i64, feedback: &Feedback) -> Markup {
    let expired = token.expires_at.is_some_and(|at| at <= now);
    let error = feedback
        .revoke
        .as_ref()
        .filter(|(id, _)| *id == token.id)
        .map(|(_, message)| message.as_str());
    html! {
        tr data-token=(token.id) {
            td data-label="Name" { (token.name) }
            td data-label="Permissions" {
                @for (i, p) in token.permissions.iter().enumerate() {
                    @if i > 0 { ", " } code { (p) }
                }
            }
            td data-label="Created" { (when(token.created_at)) }
            td data-label="Expires" {
                @match token.expires_at { Some(at) => { (when(at)) } None => { span.muted { "Never" } } }
            }
            td data-label="Last used" {
                @match token.last_used_at { Some(at) => { (when(at)) } None => { span.muted { "Never" } } }
            }
            td data-label="Status" {
                @if let Some(at) = token.revoked_at {
                    span.badge.revoked { "Revoked" } " " (when(at))
                } @else if expired {
                    span.badge.expired { "Expired" }
                } @else {
                    span.badge.active { "Active" }
                }
            }
            td data-label="Actions" {
                @if token.revoked_at.is_none() {
                    form.inline method="post" action={ "/tokens/" (enc(&token.id)) "/revoke" } {
                        (csrf_field(page))
                        button.small.danger type="submit" { "Revoke" }
                    }
                }
                (inline_error(&format!("revoke-error-{}", token.id), error))
            }
        }
    }
}

fn create_form(page: &Page, feedback: &Feedback) -> Markup {
    let errors = &feedback.create_errors;
    let permissions_error = errors.get("permissions");
    html! {
        section #create-token .card aria-labelledby="create-token-title" {
            h2 #create-token-title { "+ Create token" }
            @if page.me.permissions.is_empty() {
                p.empty { "You hold no permissions, so a token could do nothing. Ask an administrator of your account to put you in a group." }
            } @else {
                form method="post" action="/tokens" novalidate {
                    (form_error(errors))
                    (csrf_field(page))
                    (Field::new("token_name", "Name").value(&feedback.create.name).autocomplete("off")
                        .hint("What it is for, e.g. \"inventory script\".").render(errors))
                    fieldset.invalid[permissions_error.is_some()] aria-describedby="token-permissions-hint" {
                        legend { "Permissions" }
                        p.hint #token-permissions-hint { "Give it only what the script needs; you can pick from what you hold." }
                        (permission_boxes("token-perm", &page.me.permissions, &feedback.create.permissions))
                        @if let Some(e) = permissions_error { p.field-error #permissions-error role="alert" { (e) } }
                    }
                    (Field::new("token_expires", "Expiry date").kind("date").value(&feedback.create.expires).optional()
                        .hint("The token stops working at the end of this day (UTC). Leave empty for no expiry.").render(errors))
                    button.primary type="submit" { "Create token" }
                }
            }
        }
    }
}

async fn create_token(
    State(state): State<Shared>,
    page: Page,
    Form(fields): Form<Vec<(String, String)>>,
) -> Response {
    let fields = Fields(fields);
    let csrf = fields.get("csrf");
    if let Err(refused) = check_session_csrf(&page, csrf) {
        return refused;
    }
    let form = CreateForm {
        name: fields.get("token_name").trim().to_owned(),
        permissions: fields.all("permissions"),
        expires: fields.get("token_expires").trim().to_owned(),
    };
    let mut errors = Errors::default();
    if form.name.is_empty() {
        errors.add(
            "token_name",
            "Give the token a name, to know later what it is for.",
        );
    }
    if form.permissions.is_empty() {
        errors.add("permissions", "Tick at least one permission.");
    }
    // The end of the chosen day, UTC.
    let expires_at = if form.expires.is_empty() {
        None
    } else {
        match parse_date(&form.expires) {
            Some(start) if start + 86_400 > now() => Some(start + 86_400),
            Some(_) => {
                errors.add(
                    "token_expires",
                    "This day is over: choose today or a later day, or leave it empty.",
                );
                None
            }
            None => {
                errors.add(
                    "token_expires",
                    "Enter a date like 2030-12-31, or leave it empty.",
                );
                None
            }
        }
    };
    let mut status = StatusCode::UNPROCESSABLE_ENTITY;
    if errors.is_empty() {
        let answer = state
            .api
            .post(
                &page.write(csrf),
                "/tokens",
                &json!({
                    "name": form.name,
                    "permissions": form.permissions,
                    "expires_at": expires_at,
                }),
            )
            .await;
        if answer.ok() {
            return created_page(&page, &answer.body);
        }
        if whole_page(&answer) {
            return api_error_page(Some(&page), &answer);
        }
        let (field, text) = split_field(&answer.message());
        let message = answer.message();
        match (answer.status, field.as_deref()) {
            (_, Some("name")) => errors.add("token_name", text),
            (_, Some("permissions")) | (StatusCode::FORBIDDEN, _) => {
                errors.add("permissions", text)
            }
            _ if message.starts_with("expires_at") => errors.add("token_expires", text),
            _ => errors.add("", text),
        }
        status = refused_status(&answer);
    }
    let feedback = Feedback {
        create: form,
        create_errors: errors,
        ..Feedback::default()
    };
    tokens_view(&state, &page, None, feedback, status).await
}

/// The answer to a created token: its secret, shown this once.
fn created_page(page: &Page, body: &serde_json::Value) -> Response {
    let secret = body["secret"].as_str().unwrap_or("");
    let token = &body["token"];
    let permissions: Vec<&str> = token["permissions"]
        .as_array()
        .map(|ps| ps.iter().filter_map(|p| p.as_str()).collect())
        .unwrap_or_default();
    let markup = html! {
        h1 { "Token created" }
        section.card aria-labelledby="secret-title" {
            h2 #secret-title { "Copy the token now" }
            p.notice role="status" { "This is the only time the token is shown: it is stored hashed. Keep it like a password." }
            p { code #token-secret .secret { (secret) } }
            p.actions {
                button type="button" data-copy="token-secret" { "Copy" }
            }
            dl.facts {
                dt { "Name" } dd { (token["name"].as_str().unwrap_or("")) }
                dt { "Permissions" } dd {
                    @for (i, p) in permissions.iter().enumerate() { @if i > 0 { ", " } code { (p) } }
                }
                dt { "Expires" } dd {
                    @match token["expires_at"].as_i64() {
                        Some(at) => { (when(at)) " (" (utc_text(at)) ")" }
                        None => { "Never" }
                    }
                }
            }
            h3 { "Use it" }
            pre { code { "curl -H \"Authorization: Bearer $TOKEN\" https://<this server>/api/v1/admin/session" } }
            p { a href="/tokens" { "Back to your API tokens" } }
        }
    };
    respond(
        StatusCode::CREATED,
        shell(Some(page), "Token created", &crumbs(page), markup),
    )
}

async fn revoke_token(
    State(state): State<Shared>,
    page: Page,
    Path(id): Path<String>,
    Form(fields): Form<Vec<(String, String)>>,
) -> Response {
    let fields = Fields(fields);
    let csrf = fields.get("csrf");
    if let Err(refused) = check_session_csrf(&page, csrf) {
        return refused;
    }
    let answer = state
        .api
        .call(
            &page.write(csrf),
            Method::DELETE,
            &format!("/tokens/{}", enc(&id)),
            None,
        )
        .await;
    if answer.ok() {
        return Redirect::to("/tokens?done=revoked").into_response();
    }
    if whole_page(&answer) {
        return api_error_page(Some(&page), &answer);
    }
    let feedback = Feedback {
        revoke: Some((id, split_field(&answer.message()).1)),
        ..Feedback::default()
    };
    tokens_view(&state, &page, None, feedback, refused_status(&answer)).await
}
