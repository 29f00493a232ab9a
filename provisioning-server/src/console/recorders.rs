//! One recorder: what it last reported, whether it is online, its certificate and its
//! history, with the forms to rename it, move it to another account, revoke it and confirm
//! it as the replacement of an older recorder. All through the admin API's recorder routes.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::{json, Value};

use super::accounts::{
    crumbs_to, notice, now, parse, plain_id, said, state_badges, when, words, AccountInfo,
    CsrfForm, HistoryEntry, RecorderInfo, TreeWalk,
};
use super::forms::{check_session_csrf, csrf_field, form_error, Errors, Field};
use super::layout::{api_error_page, not_found_page, respond, shell, Crumb, Page};
use super::Shared;

pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/recorders/{id}", get(recorder))
        .route("/recorders/{id}/rename", post(rename))
        .route("/recorders/{id}/move", post(move_recorder))
        .route("/recorders/{id}/revoke", post(revoke))
        .route(
            "/recorders/{id}/confirm-replacement",
            post(confirm_replacement),
        )
}

#[derive(Debug, Default, Deserialize)]
pub struct RecorderQuery {
    done: Option<String>,
}

/// A form of the recorder page sent back with its errors (status 422).
enum Sent {
    Nothing,
    Rename(RenameForm, Errors),
    Move(MoveForm, Errors),
    Revoke(Errors),
    Confirm(Errors),
}

async fn recorder(
    State(state): State<Shared>,
    page: Page,
    Path(id): Path<String>,
    Query(query): Query<RecorderQuery>,
) -> Response {
    recorder_page(&state, &page, &id, query.done.as_deref(), Sent::Nothing).await
}

async fn recorder_page(
    state: &Shared,
    page: &Page,
    id: &str,
    done: Option<&str>,
    sent: Sent,
) -> Response {
    if !plain_id(id) {
        return not_found_page();
    }
    let answer = state
        .api
        .get(&page.read(), &format!("/recorders/{id}"))
        .await;
    if !answer.ok() {
        return api_error_page(Some(page), &answer);
    }
    let recorder: RecorderInfo = match parse(&answer) {
        Ok(r) => r,
        Err(failed) => return failed,
    };
    let account_answer = state
        .api
        .get(&page.read(), &format!("/accounts/{}", recorder.account_id))
        .await;
    let mut crumbs = match serde_json::from_value::<AccountInfo>(account_answer.body) {
        Ok(account) if account_answer.status.is_success() => crumbs_to(state, page, &account).await,
        _ => vec![Crumb {
            name: page.me.account.name.clone(),
            href: format!("/accounts/{}", page.me.account.id),
        }],
    };
    crumbs.push(Crumb {
        name: recorder.title().to_owned(),
        href: format!("/recorders/{}", recorder.id),
    });
    // The accounts it could move to, and names for its history.
    let tree = if page.can("accounts.view") {
        TreeWalk::load(state, &page.read(), None).await.ok()
    } else {
        None
    };
    let status = match sent {
        Sent::Nothing => StatusCode::OK,
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    };
    let body = recorder_body(page, &recorder, tree.as_ref(), done, &sent);
    respond(status, shell(Some(page), recorder.title(), &crumbs, body))
}

fn recorder_body(
    page: &Page,
    r: &RecorderInfo,
    tree: Option<&TreeWalk>,
    done: Option<&str>,
    sent: &Sent,
) -> Markup {
    let now = now();
    let names = tree.map(TreeWalk::names).unwrap_or_default();
    let manage = page.can("recorders.manage") && r.revoked_at.is_none();
    // A refusal whose form is not shown (any more) is said on top of the page.
    let top = match sent {
        Sent::Confirm(errors) => Some(errors),
        Sent::Revoke(errors) | Sent::Rename(_, errors) | Sent::Move(_, errors) if !manage => {
            Some(errors)
        }
        _ => None,
    };
    html! {
        div.card-head {
            h1 { (r.title()) }
            div.actions.recorder-state { (state_badges(r)) }
        }
        (notice(done))
        @if let Some(errors) = top {
            (form_error(errors))
        }
        div.grid.two.cards {
            section #facts.card aria-labelledby="facts-title" {
                h2 #facts-title { "Recorder" }
                dl.facts {
                    dt { "State" }
                    dd {
                        @if r.revoked_at.is_some() { "Revoked" }
                        @else if r.online { "Online" }
                        @else if r.offline_reason.as_deref() == Some("shutdown") { "Offline: it shut down" }
                        @else if r.last_seen.is_some() { "Offline: its heartbeats stopped" }
                        @else { "Offline: no heartbeat yet" }
                    }
                    dt { "Last seen" } dd { (when(r.last_seen, now, "never")) }
                    dt { "Account" } dd { a href={ "/accounts/" (r.account_id) } { (r.account_name) } }
                    dt { "Name" } dd { @if let Some(n) = &r.name { (n) } @else { span.muted { "none" } } }
                    dt { "Serial" } dd { (r.serial) }
                    dt { "Model" } dd { (r.model) }
                    dt { "MAC" } dd { (r.mac.as_deref().unwrap_or("—")) }
                    dt { "Firmware" } dd { (r.firmware.as_deref().unwrap_or("—")) }
                    dt { "Agent" } dd { (r.agent_version.as_deref().unwrap_or("—")) }
                    dt { "Enrolled" } dd { (when(Some(r.enrolled_at), now, "")) }
                    dt { "Certificate expires" } dd { (when(r.cert_not_after, now, "—")) }
                    dt { "Certificate serial" } dd { code.wrap { (r.cert_serial.as_deref().unwrap_or("—")) } }
                    dt { "Key fingerprint" } dd { code.wrap { (r.key_fingerprint) } }
                    @if let Some(at) = r.revoked_at {
                        dt { "Revoked" } dd { (when(Some(at), now, "")) }
                    }
                    @if let Some(old) = &r.replaces {
                        dt { "Replaces" }
                        dd {
                            a href={ "/recorders/" (old) } { "an earlier recorder with this serial" }
                            @if let Some(at) = r.replacement_confirmed_at { " (confirmed " (words(at, now)) ")" }
                            @else { " (not confirmed yet)" }
                        }
                    }
                }
            }
            section #status.card aria-labelledby="status-title" {
                h2 #status-title { "Last reported status" }
                @match &r.status {
                    Some(status) => {
                        pre.status-payload { (serde_json::to_string_pretty(status).unwrap_or_default()) }
                    }
                    None => {
                        p.empty { "No heartbeat yet: the status shows here once the recorder's agent reports in." }
                    }
                }
            }
        }
        @if manage {
            section #manage.card aria-labelledby="manage-title" {
                h2 #manage-title { "Change" }
                @if let Some(old) = &r.flagged_replacement_of {
                    (confirm_form(page, r, old))
                }
                div.grid.two {
                    (rename_form(page, r, sent))
                    (move_form(page, r, tree, sent))
                }
                (revoke_form(page, r, sent))
            }
        }
        section #history.card aria-labelledby="history-title" {
            h2 #history-title { "History" }
            @if r.history.is_empty() {
                p.empty { "Nothing recorded yet." }
            } @else {
                div.table-wrap {
                    table.stack.history {
                        thead {
                            tr {
                                th scope="col" { "When" }
                                th scope="col" { "What" }
                                th scope="col" { "By" }
                            }
                        }
                        tbody {
                            @for entry in &r.history {
                                tr data-action=(entry.action) {
                                    td data-label="When" { (when(Some(entry.at), now, "")) }
                                    td data-label="What" { (describe(entry, &names)) }
                                    td data-label="By" { code.wrap { (entry.actor) } }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A history entry in words, with its action code.
fn describe(entry: &HistoryEntry, names: &HashMap<&str, &str>) -> Markup {
    let detail: Value = serde_json::from_str(&entry.detail).unwrap_or(Value::Null);
    let account = |key: &str| -> String {
        detail[key]
            .as_str()
            .and_then(|id| names.get(id).copied())
            .unwrap_or("an account outside yours")
            .to_owned()
    };
    let name = |key: &str| -> String {
        match detail[key].as_str() {
            Some(n) => format!("\u{201c}{n}\u{201d}"),
            None => "no name".to_owned(),
        }
    };
    let text = match entry.action.as_str() {
        "recorder.enrolled" => "Enrolled".to_owned(),
        "recorder.re_enrolled" => "Enrolled again".to_owned(),
        "recorder.moved" => format!(
            "Moved from {} to {}",
            account("from_account"),
            account("to_account")
        ),
        "recorder.renamed" => format!("Renamed from {} to {}", name("from"), name("to")),
        "recorder.revoked" => "Revoked".to_owned(),
        "recorder.replacement_confirmed" => "Confirmed as a replacement".to_owned(),
        "certificate.issued" => "Certificate issued".to_owned(),
        "certificate.renewed" => "Certificate renewed".to_owned(),
        "certificate.renewed_with_new_key" => "Certificate renewed with a new key".to_owned(),
        other => other.to_owned(),
    };
    html! {
        (text) " " span.muted.action { "(" (entry.action) ")" }
    }
}

// ---------------------------------------------------------------------------------------
// The forms.

#[derive(Debug, Default, Clone, Deserialize)]
pub struct RenameForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    recorder_name: String,
}

#[derive(Debug, Default, Clone, Deserialize)]
pub struct MoveForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    account: String,
}

#[derive(Debug, Default, Deserialize)]
pub struct RevokeForm {
    #[serde(default)]
    csrf: String,
    confirm_revoke: Option<String>,
}

fn rename_form(page: &Page, r: &RecorderInfo, sent: &Sent) -> Markup {
    let (value, errors) = match sent {
        Sent::Rename(form, errors) => (form.recorder_name.clone(), errors.clone()),
        _ => (r.name.clone().unwrap_or_default(), Errors::default()),
    };
    html! {
        form #rename-recorder method="post" action={ "/recorders/" (r.id) "/rename" } novalidate {
            h3 { "Rename" }
            (form_error(&errors))
            (csrf_field(page))
            (Field::new("recorder_name", "Name").value(&value).optional()
                .hint("What people call it, e.g. \"Front gate\". Leave empty to show its serial instead.").render(&errors))
            button.primary type="submit" { "Save name" }
        }
    }
}

fn move_form(page: &Page, r: &RecorderInfo, tree: Option<&TreeWalk>, sent: &Sent) -> Markup {
    let (selected, errors) = match sent {
        Sent::Move(form, errors) => (form.account.clone(), errors.clone()),
        _ => (String::new(), Errors::default()),
    };
    let error = errors.get("account");
    let targets: Vec<&AccountInfo> = tree
        .map(|t| t.items.iter().filter(|a| a.id != r.account_id).collect())
        .unwrap_or_default();
    html! {
        form #move-recorder method="post" action={ "/recorders/" (r.id) "/move" } novalidate {
            h3 { "Move" }
            (form_error(&errors))
            (csrf_field(page))
            @if targets.is_empty() {
                p.empty { "There is no other account among yours to move it to." }
            } @else {
                div.field.invalid[error.is_some()] {
                    label for="account" { "Move to account" }
                    p.hint #account-hint { "It keeps its key and certificate; its next heartbeat counts for the new account." }
                    select #account name="account" aria-describedby={ "account-hint" @if error.is_some() { " account-error" } } {
                        option value="" selected[selected.is_empty()] { "Choose an account…" }
                        @for a in &targets {
                            option value=(a.id) selected[a.id == selected] {
                                (a.path.join(" › "))
                                @if a.disabled_via.is_some() { " (disabled)" }
                            }
                        }
                    }
                    @if let Some(e) = error { p.field-error #account-error { (e) } }
                }
                button type="submit" { "Move recorder" }
            }
        }
    }
}

fn revoke_form(page: &Page, r: &RecorderInfo, sent: &Sent) -> Markup {
    let errors = match sent {
        Sent::Revoke(errors) => errors.clone(),
        _ => Errors::default(),
    };
    let error = errors.get("confirm_revoke");
    html! {
        form #revoke-recorder.danger-zone method="post" action={ "/recorders/" (r.id) "/revoke" } novalidate {
            h3 { "Revoke" }
            (form_error(&errors))
            (csrf_field(page))
            p.hint { "Its certificate stops working at once and its next heartbeat is refused. The device can only enroll again, with a code and a new key. This cannot be undone." }
            div.field.check.invalid[error.is_some()] {
                input #confirm_revoke type="checkbox" name="confirm_revoke" value="yes"
                    aria-describedby=[error.map(|_| "confirm_revoke-error")];
                label for="confirm_revoke" { "I want to revoke this recorder" }
                @if let Some(e) = error { p.field-error #confirm_revoke-error { (e) } }
            }
            button.danger type="submit" { "Revoke recorder" }
        }
    }
}

fn confirm_form(page: &Page, r: &RecorderInfo, old: &str) -> Markup {
    html! {
        form #confirm-replacement.flagged-box method="post" action={ "/recorders/" (r.id) "/confirm-replacement" } {
            h3 { "Possible replacement" }
            (csrf_field(page))
            p {
                "This recorder enrolled with a new key and the serial of "
                a href={ "/recorders/" (old) } { "a recorder enrolled before" }
                ". If it replaces that one (a new disk or a repaired unit), confirm: the old recorder is revoked."
            }
            button.primary type="submit" { "Confirm replacement" }
        }
    }
}

/// After a change: back to the recorder with its notice.
fn done(id: &str, what: &str) -> Response {
    Redirect::to(&format!("/recorders/{id}?done={what}")).into_response()
}

async fn rename(
    State(state): State<Shared>,
    page: Page,
    Path(id): Path<String>,
    Form(form): Form<RenameForm>,
) -> Response {
    if let Err(refused) = check_session_csrf(&page, &form.csrf) {
        return refused;
    }
    if !plain_id(&id) {
        return not_found_page();
    }
    let name = form.recorder_name.trim();
    let answer = state
        .api
        .call(
            &page.write(&form.csrf),
            Method::PATCH,
            &format!("/recorders/{id}"),
            Some(&json!({ "name": (!name.is_empty()).then_some(name) })),
        )
        .await;
    if answer.ok() {
        return done(&id, "recorder-renamed");
    }
    if answer.status != StatusCode::BAD_REQUEST {
        return api_error_page(Some(&page), &answer);
    }
    let mut errors = Errors::default();
    errors.add(
        "recorder_name",
        "Use at most 200 characters on one line, or leave it empty to remove the name.",
    );
    recorder_page(&state, &page, &id, None, Sent::Rename(form, errors)).await
}

async fn move_recorder(
    State(state): State<Shared>,
    page: Page,
    Path(id): Path<String>,
    Form(form): Form<MoveForm>,
) -> Response {
    if let Err(refused) = check_session_csrf(&page, &form.csrf) {
        return refused;
    }
    if !plain_id(&id) {
        return not_found_page();
    }
    let mut errors = Errors::default();
    if !plain_id(&form.account) {
        errors.add("account", "Choose the account to move the recorder to.");
    } else {
        let answer = state
            .api
            .post(
                &page.write(&form.csrf),
                &format!("/recorders/{id}/move"),
                &json!({ "account_id": form.account }),
            )
            .await;
        if answer.ok() {
            return done(&id, "recorder-moved");
        }
        match answer.status {
            // The recorder was found a moment ago: a 404 now is the account chosen.
            StatusCode::NOT_FOUND => errors.add(
                "account",
                "This account is not among yours; choose one from the list.",
            ),
            StatusCode::CONFLICT | StatusCode::BAD_REQUEST => errors.add("account", said(&answer)),
            _ => return api_error_page(Some(&page), &answer),
        }
    }
    recorder_page(&state, &page, &id, None, Sent::Move(form, errors)).await
}

async fn revoke(
    State(state): State<Shared>,
    page: Page,
    Path(id): Path<String>,
    Form(form): Form<RevokeForm>,
) -> Response {
    if let Err(refused) = check_session_csrf(&page, &form.csrf) {
        return refused;
    }
    if !plain_id(&id) {
        return not_found_page();
    }
    let mut errors = Errors::default();
    if form.confirm_revoke.is_none() {
        errors.add(
            "confirm_revoke",
            "Tick the box to confirm: a revoked recorder stops working and cannot be brought back.",
        );
    } else {
        let answer = state
            .api
            .post(
                &page.write(&form.csrf),
                &format!("/recorders/{id}/revoke"),
                &json!({}),
            )
            .await;
        if answer.ok() {
            return done(&id, "recorder-revoked");
        }
        if answer.status != StatusCode::CONFLICT {
            return api_error_page(Some(&page), &answer);
        }
        errors.add("", said(&answer));
    }
    recorder_page(&state, &page, &id, None, Sent::Revoke(errors)).await
}

async fn confirm_replacement(
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
    let answer = state
        .api
        .post(
            &page.write(&form.csrf),
            &format!("/recorders/{id}/confirm-replacement"),
            &json!({}),
        )
        .await;
    if answer.ok() {
        return done(&id, "replacement-confirmed");
    }
    if answer.status != StatusCode::CONFLICT {
        return api_error_page(Some(&page), &answer);
    }
    let mut errors = Errors::default();
    errors.add("", said(&answer));
    recorder_page(&state, &page, &id, None, Sent::Confirm(errors)).await
}
