//! Settings, users tab: the users of an account (paged with the API's cursor), inviting a
//! new user into a group, resending an invitation, disabling and enabling, and choosing a
//! user's groups. Also the small pieces the settings pages share (times in words, tabs,
//! the account's breadcrumbs, forms with repeated fields, API refusals by field).
//!
//! Every read and change goes through the admin API with the browser's own session; a
//! refusal is shown next to the form that caused it, and a success redirects (303) back
//! with a fixed notice chosen by a key, never with text from the URL.

use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::json;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::OffsetDateTime;

use super::api::Answer;
use super::forms::{check_session_csrf, csrf_field, form_error, Errors, Field};
use super::groups::{all_groups, GroupItem};
use super::layout::{api_error_page, not_found_page, respond, shell, Crumb, Page};
use super::Shared;

/// Users on one page of the list.
const USERS_PER_PAGE: u32 = 50;

pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/accounts/{id}/users", get(users_page).post(add_user))
        .route("/accounts/{id}/users/{user}/resend", post(resend))
        .route("/accounts/{id}/users/{user}/disable", post(disable))
        .route("/accounts/{id}/users/{user}/enable", post(enable))
        .route("/accounts/{id}/users/{user}/groups", post(set_groups))
}

// ---- shared by the settings pages ----

/// The current time in Unix seconds.
pub(super) fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// How far `at` is from `now`, in words: "just now", "2 minutes ago", "in 89 days".
pub(super) fn words(at: i64, now: i64) -> String {
    let delta = at - now;
    let secs = delta.unsigned_abs();
    let (n, unit) = match secs {
        0..=59 => {
            return if delta > 0 {
                "in less than a minute".to_owned()
            } else {
                "just now".to_owned()
            }
        }
        60..=3_599 => (secs / 60, "minute"),
        3_600..=86_399 => (secs / 3_600, "hour"),
        86_400..=63_071_999 => (secs / 86_400, "day"),
        _ => (secs / 31_536_000, "year"),
    };
    let unit = if n == 1 {
        unit.to_owned()
    } else {
        format!("{unit}s")
    };
    if delta > 0 {
        format!("in {n} {unit}")
    } else {
        format!("{n} {unit} ago")
    }
}

fn datetime(at: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(at).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// The exact time for people, e.g. "2026-05-01 14:03 UTC".
pub(super) fn utc_text(at: i64) -> String {
    datetime(at)
        .format(format_description!(
            "[year]-[month]-[day] [hour]:[minute] UTC"
        ))
        .unwrap_or_default()
}

/// A time in words, with the exact time for machines (`datetime`) and on hover.
pub(super) fn when(at: i64) -> Markup {
    html! {
        time datetime=(datetime(at).format(&Rfc3339).unwrap_or_default()) title=(utc_text(at)) {
            (words(at, now()))
        }
    }
}

/// A date typed in a date field (`YYYY-MM-DD`), as the Unix time of its start (UTC).
pub(super) fn parse_date(text: &str) -> Option<i64> {
    time::Date::parse(text.trim(), format_description!("[year]-[month]-[day]"))
        .ok()
        .map(|d| d.midnight().assume_utc().unix_timestamp())
}

/// Percent-encodes one path segment or query value.
pub(super) fn enc(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A form's fields as sent, in order: repeated names (checkboxes) are kept.
pub(super) struct Fields(pub Vec<(String, String)>);

impl Fields {
    /// The first value of `name`, or "".
    pub(super) fn get(&self, name: &str) -> &str {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    }

    /// Every non-empty value of `name`.
    pub(super) fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.clone())
            .collect()
    }
}

/// An API refusal's message split into the field it names ("email: …") and the text, with
/// its first letter in capitals.
pub(super) fn split_field(message: &str) -> (Option<String>, String) {
    let (field, text) = match message.split_once(": ") {
        Some((field, text))
            if !field.is_empty() && field.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') =>
        {
            (Some(field.to_owned()), text)
        }
        _ => (None, message),
    };
    let mut chars = text.chars();
    let text = match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    };
    (field, text)
}

/// The status of a page showing an API refusal in place: 422 for input the API found
/// invalid, else the API's own (403, 409, …).
pub(super) fn refused_status(answer: &Answer) -> StatusCode {
    if answer.status == StatusCode::BAD_REQUEST {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        answer.status
    }
}

/// Whether an API refusal is one to show as a whole page (unknown or out of scope, or the
/// session is gone) rather than next to a form.
pub(super) fn whole_page(answer: &Answer) -> bool {
    matches!(
        answer.status,
        StatusCode::NOT_FOUND | StatusCode::UNAUTHORIZED
    )
}

/// An API message with an account's id in it put as its name, for people.
pub(super) fn name_account(message: &mut String, id: &str, name: &str) {
    if !id.is_empty() && message.contains(id) {
        *message = message.replace(id, &format!("\u{201c}{name}\u{201d}"));
    }
}

/// A fixed notice after a change.
pub(super) fn notice(text: Option<&str>) -> Markup {
    html! {
        @if let Some(text) = text { p.notice role="status" { (text) } }
    }
}

/// A refusal shown next to a form.
pub(super) fn inline_error(id: &str, message: Option<&str>) -> Markup {
    html! {
        @if let Some(message) = message { p.row-error id=(id) role="alert" { (message) } }
    }
}

/// An account's name and the breadcrumbs from the caller's own account down to it.
pub(super) struct AccountHead {
    pub name: String,
    pub crumbs: Vec<Crumb>,
}

/// The name and breadcrumbs of an account the caller can see, from the API's account
/// (its `path` of names, the ids found by walking `parent_id`). Without accounts.view
/// only the caller's own account is known by name.
pub(super) async fn account_head(state: &Shared, page: &Page, id: &str) -> AccountHead {
    let credentials = page.read();
    let own = Crumb {
        name: page.me.account.name.clone(),
        href: format!("/accounts/{}", enc(&page.me.account.id)),
    };
    let answer = state
        .api
        .get(&credentials, &format!("/accounts/{}", enc(id)))
        .await;
    if !answer.ok() {
        if id == page.me.account.id {
            return AccountHead {
                name: page.me.account.name.clone(),
                crumbs: vec![own],
            };
        }
        return AccountHead {
            name: "Account".to_owned(),
            crumbs: vec![
                own,
                Crumb {
                    name: "Account".to_owned(),
                    href: format!("/accounts/{}", enc(id)),
                },
            ],
        };
    }
    let name = answer.body["name"].as_str().unwrap_or("Account").to_owned();
    let path: Vec<String> = answer.body["path"]
        .as_array()
        .map(|names| {
            names
                .iter()
                .filter_map(|n| n.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    // Ids from this account up to the caller's own: one call per account in between.
    let mut ids = vec![id.to_owned()];
    let mut parent = answer.body["parent_id"].as_str().map(str::to_owned);
    while ids.len() < path.len() {
        let Some(parent_id) = parent.take() else {
            break;
        };
        ids.push(parent_id.clone());
        if ids.len() < path.len() {
            let up = state
                .api
                .get(&credentials, &format!("/accounts/{}", enc(&parent_id)))
                .await;
            parent = up.body["parent_id"].as_str().map(str::to_owned);
        }
    }
    ids.reverse();
    let crumbs = if ids.len() == path.len() {
        path.into_iter()
            .zip(ids)
            .map(|(name, id)| Crumb {
                href: format!("/accounts/{}", enc(&id)),
                name,
            })
            .collect()
    } else {
        vec![Crumb {
            name: name.clone(),
            href: format!("/accounts/{}", enc(id)),
        }]
    };
    AccountHead { name, crumbs }
}

/// The settings tabs of an account: Users and Groups.
pub(super) fn tabs(account: &str, current: &str) -> Markup {
    let tab = |name: &str, href: String| {
        html! {
            @if name == current {
                a href=(href) aria-current="page" { (name) }
            } @else {
                a href=(href) { (name) }
            }
        }
    };
    html! {
        nav.tabs aria-label="Settings" {
            (tab("Users", format!("/accounts/{}/users", enc(account))))
            (tab("Groups", format!("/accounts/{}/groups", enc(account))))
        }
    }
}

// ---- the users tab ----

/// A user as the API lists them.
#[derive(Debug, Clone, Deserialize)]
struct UserItem {
    id: String,
    email: String,
    name: String,
    status: String,
    created_at: i64,
    #[serde(default)]
    groups: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct UsersQuery {
    cursor: Option<String>,
    done: Option<String>,
}

/// The fixed notices after a change, by the key in `?done=`.
fn done_text(key: &str) -> Option<&'static str> {
    Some(match key {
        "invited" => {
            "Invitation sent. The new user is listed as invited until they accept it (the link works for 72 hours)."
        }
        "invited-unsent" => {
            "The user is invited, but the invitation mail could not be sent. Use \"Resend invitation\" once mail works."
        }
        "resent" => "A new invitation was sent; the previous link no longer works.",
        "resent-unsent" => {
            "A new invitation was made, but the mail could not be sent. Try \"Resend invitation\" again once mail works."
        }
        "disabled" => {
            "The user is disabled: they cannot log in, and their sessions and API tokens have ended."
        }
        "enabled" => "The user is enabled again and can log in with their password.",
        "groups" => "The user's groups are saved.",
        _ => return None,
    })
}

/// The "+ Add new user" form as sent.
#[derive(Debug, Default)]
struct AddForm {
    name: String,
    email: String,
    group: String,
}

/// A refusal of one user's form: which user, which form, what the API said.
struct RowError {
    user: String,
    form: &'static str,
    message: String,
}

#[derive(Default)]
struct Feedback {
    notice: Option<&'static str>,
    add: AddForm,
    add_errors: Errors,
    row: Option<RowError>,
}

impl Feedback {
    fn row_error(&self, user: &str, form: &str) -> Option<&str> {
        self.row
            .as_ref()
            .filter(|r| r.user == user && r.form == form)
            .map(|r| r.message.as_str())
    }
}

async fn users_page(
    State(state): State<Shared>,
    page: Page,
    Path(id): Path<String>,
    Query(query): Query<UsersQuery>,
) -> Response {
    let feedback = Feedback {
        notice: query.done.as_deref().and_then(done_text),
        ..Feedback::default()
    };
    users_view(&state, &page, &id, query.cursor, feedback, StatusCode::OK).await
}

/// The users tab: the list (one page), and the forms the caller may use.
async fn users_view(
    state: &Shared,
    page: &Page,
    id: &str,
    cursor: Option<String>,
    mut feedback: Feedback,
    status: StatusCode,
) -> Response {
    let credentials = page.read();
    let mut path = format!("/accounts/{}/users?limit={USERS_PER_PAGE}", enc(id));
    if let Some(cursor) = cursor.as_deref().filter(|c| !c.is_empty()) {
        path.push_str(&format!("&cursor={}", enc(cursor)));
    }
    let list = state.api.get(&credentials, &path).await;
    if !list.ok() {
        return api_error_page(Some(page), &list);
    }
    let users: Vec<UserItem> =
        serde_json::from_value(list.body["items"].clone()).unwrap_or_default();
    let next = list.body["next_cursor"].as_str().map(str::to_owned);
    let groups = match all_groups(state, page, id).await {
        Ok(groups) => groups,
        Err(answer) => return api_error_page(Some(page), &answer),
    };
    let head = account_head(state, page, id).await;
    if let Some(row) = &mut feedback.row {
        name_account(&mut row.message, id, &head.name);
    }
    for message in feedback.add_errors.0.values_mut() {
        name_account(message, id, &head.name);
    }
    let mut crumbs = head.crumbs;
    crumbs.push(Crumb {
        name: "Users".to_owned(),
        href: format!("/accounts/{}/users", enc(id)),
    });
    let manage = page.can("users.manage");
    let body = html! {
        h1 { "Settings: " (head.name) }
        (tabs(id, "Users"))
        (notice(feedback.notice))
        section #users .card aria-labelledby="users-title" {
            div.card-head {
                h2 #users-title { "Users" }
                @if manage { a href="#add-user" { "+ Add new user" } }
            }
            @if users.is_empty() {
                p.empty { "No users yet: invite the first one with \"+ Add new user\"." }
            } @else {
                div.table-wrap {
                    table.stack {
                        thead { tr {
                            th scope="col" { "Name" }
                            th scope="col" { "Email" }
                            th scope="col" { "Status" }
                            th scope="col" { "Groups" }
                            th scope="col" { "Added" }
                            @if manage { th scope="col" { "Actions" } }
                        } }
                        tbody {
                            @for user in &users {
                                (user_row(page, id, user, &groups, &feedback, manage))
                            }
                        }
                    }
                }
            }
            nav.pager aria-label="Pages of users" {
                @if cursor.is_some() {
                    a href={ "/accounts/" (enc(id)) "/users" } { "First page" }
                }
                @if let Some(next) = &next {
                    a href={ "/accounts/" (enc(id)) "/users?cursor=" (enc(next)) } { "Next page" }
                }
            }
        }
        @if manage { (add_form(page, id, &groups, &feedback)) }
    };
    respond(status, shell(Some(page), "Users", &crumbs, body))
}

fn badge(status: &str) -> Markup {
    html! {
        @match status {
            "invited" => { span.badge.invited { "Invited" } }
            "active" => { span.badge.active { "Active" } }
            "disabled" => { span.badge.disabled { "Disabled" } }
            other => { span.badge { (other) } }
        }
    }
}

fn user_row(
    page: &Page,
    account: &str,
    user: &UserItem,
    groups: &[GroupItem],
    feedback: &Feedback,
    manage: bool,
) -> Markup {
    let base = format!("/accounts/{}/users/{}", enc(account), enc(&user.id));
    let groups_error = feedback.row_error(&user.id, "groups");
    let action_error = ["resend", "disable", "enable"]
        .iter()
        .find_map(|form| feedback.row_error(&user.id, form));
    html! {
        tr id={ "user-" (user.id) } data-user=(user.email) {
            td data-label="Name" {
                (user.name)
                @if user.id == page.me.user.id { span.muted { " (you)" } }
            }
            td data-label="Email" { (user.email) }
            td data-label="Status" { (badge(&user.status)) }
            td data-label="Groups" {
                @if user.groups.is_empty() { span.muted { "None" } } @else { (user.groups.join(", ")) }
                @if manage && !groups.is_empty() {
                    details.inline-edit open[groups_error.is_some()] {
                        summary { "Change groups" }
                        form method="post" action={ (base) "/groups" } {
                            (csrf_field(page))
                            fieldset {
                                legend { "Groups of " (user.name) }
                                @for group in groups {
                                    @let box_id = format!("ug-{}-{}", user.id, group.id);
                                    div.field.check {
                                        input type="checkbox" id=(box_id) name="group_ids" value=(group.id)
                                            checked[user.groups.contains(&group.name)];
                                        label for=(box_id) { (group.name) }
                                    }
                                }
                            }
                            button.small type="submit" { "Save groups" }
                            (inline_error(&format!("groups-error-{}", user.id), groups_error))
                        }
                    }
                }
            }
            td data-label="Added" { (when(user.created_at)) }
            @if manage {
                td data-label="Actions" {
                    div.actions {
                        @match user.status.as_str() {
                            "invited" => {
                                form.inline method="post" action={ (base) "/resend" } {
                                    (csrf_field(page))
                                    button.small type="submit" { "Resend invitation" }
                                }
                            }
                            "active" => {
                                form.inline method="post" action={ (base) "/disable" } {
                                    (csrf_field(page))
                                    button.small.danger type="submit" { "Disable" }
                                }
                            }
                            "disabled" => {
                                form.inline method="post" action={ (base) "/enable" } {
                                    (csrf_field(page))
                                    button.small type="submit" { "Enable" }
                                }
                            }
                            _ => {}
                        }
                    }
                    (inline_error(&format!("action-error-{}", user.id), action_error))
                }
            }
        }
    }
}

fn add_form(page: &Page, account: &str, groups: &[GroupItem], feedback: &Feedback) -> Markup {
    let errors = &feedback.add_errors;
    let held: Vec<&str> = page.me.permissions.iter().map(String::as_str).collect();
    // Only groups the caller may put someone into: none holding more than they do.
    let offered: Vec<&GroupItem> = groups
        .iter()
        .filter(|g| g.permissions.iter().all(|p| held.contains(&p.as_str())))
        .collect();
    let selected = if feedback.add.group.is_empty() {
        offered
            .iter()
            .find(|g| g.name == "Administrators")
            .or(offered.first())
            .map(|g| g.id.clone())
            .unwrap_or_default()
    } else {
        feedback.add.group.clone()
    };
    let group_error = errors.get("group");
    let described = if group_error.is_some() {
        "group-hint group-error"
    } else {
        "group-hint"
    };
    html! {
        section #add-user .card aria-labelledby="add-user-title" {
            h2 #add-user-title { "+ Add new user" }
            p.muted { "We mail them a link to choose a password; it works for 72 hours." }
            form method="post" action={ "/accounts/" (enc(account)) "/users" } novalidate {
                (form_error(errors))
                (csrf_field(page))
                (Field::new("user_name", "Name").value(&feedback.add.name).autocomplete("off").render(errors))
                (Field::new("user_email", "Email").kind("email").value(&feedback.add.email).autocomplete("off")
                    .hint("Their login; an email belongs to one user on the whole server.").render(errors))
                div.field.invalid[group_error.is_some()] {
                    label for="group" { "Group" }
                    p.hint #group-hint { "What they may do. Groups are on the Groups tab." }
                    select #group name="group" aria-describedby=(described)
                        aria-invalid=[group_error.map(|_| "true")] {
                        @for group in &offered {
                            option value=(group.id) selected[group.id == selected] { (group.name) }
                        }
                    }
                    @if let Some(e) = group_error { p.field-error #group-error { (e) } }
                }
                button.primary type="submit" { "Add user" }
            }
        }
    }
}

async fn add_user(
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
    let form = AddForm {
        name: fields.get("user_name").trim().to_owned(),
        email: fields.get("user_email").trim().to_owned(),
        group: fields.get("group").trim().to_owned(),
    };
    let mut errors = Errors::default();
    if form.name.is_empty() {
        errors.add(
            "user_name",
            "Enter the person's name, as mails will greet them.",
        );
    }
    if !form.email.contains('@') {
        errors.add(
            "user_email",
            "Enter an email address, like name@example.com.",
        );
    }
    let mut status = StatusCode::UNPROCESSABLE_ENTITY;
    if errors.is_empty() {
        let mut body = json!({ "email": form.email, "name": form.name });
        if !form.group.is_empty() {
            body["group_id"] = json!(form.group);
        }
        let answer = state
            .api
            .post(
                &page.write(csrf),
                &format!("/accounts/{}/users", enc(&id)),
                &body,
            )
            .await;
        if answer.ok() {
            let key = if answer.body["invitation_sent"] == json!(true) {
                "invited"
            } else {
                "invited-unsent"
            };
            return Redirect::to(&format!("/accounts/{}/users?done={key}", enc(&id)))
                .into_response();
        }
        if whole_page(&answer) {
            return api_error_page(Some(&page), &answer);
        }
        let (field, text) = split_field(&answer.message());
        let field = match field.as_deref() {
            Some("email") => "user_email",
            Some("name") => "user_name",
            Some("group_id") => "group",
            _ if answer.status == StatusCode::FORBIDDEN => "group",
            _ => "",
        };
        errors.add(field, text);
        status = refused_status(&answer);
    }
    let feedback = Feedback {
        add: form,
        add_errors: errors,
        ..Feedback::default()
    };
    users_view(&state, &page, &id, None, feedback, status).await
}

/// The user `user` if they are of account `account`: the forms of a users page act on
/// its own users only.
async fn user_of(state: &Shared, page: &Page, account: &str, user: &str) -> Result<(), Response> {
    let answer = state
        .api
        .get(&page.read(), &format!("/users/{}", enc(user)))
        .await;
    if !answer.ok() {
        return Err(api_error_page(Some(page), &answer));
    }
    if answer.body["account_id"].as_str() != Some(account) {
        return Err(not_found_page());
    }
    Ok(())
}

/// Resend, disable or enable: a button in the user's row.
async fn user_action(
    state: Shared,
    page: Page,
    account: String,
    user: String,
    fields: Fields,
    action: &'static str,
) -> Response {
    let csrf = fields.get("csrf");
    if let Err(refused) = check_session_csrf(&page, csrf) {
        return refused;
    }
    if let Err(refused) = user_of(&state, &page, &account, &user).await {
        return refused;
    }
    let answer = state
        .api
        .call(
            &page.write(csrf),
            Method::POST,
            &format!("/users/{}/{action}", enc(&user)),
            None,
        )
        .await;
    if answer.ok() {
        let key = match action {
            "resend" if answer.body["invitation_sent"] == json!(true) => "resent",
            "resend" => "resent-unsent",
            "disable" => "disabled",
            _ => "enabled",
        };
        return Redirect::to(&format!("/accounts/{}/users?done={key}", enc(&account)))
            .into_response();
    }
    if whole_page(&answer) {
        return api_error_page(Some(&page), &answer);
    }
    let status = refused_status(&answer);
    let feedback = Feedback {
        row: Some(RowError {
            user,
            form: action,
            message: split_field(&answer.message()).1,
        }),
        ..Feedback::default()
    };
    users_view(&state, &page, &account, None, feedback, status).await
}

async fn resend(
    State(state): State<Shared>,
    page: Page,
    Path((id, user)): Path<(String, String)>,
    Form(fields): Form<Vec<(String, String)>>,
) -> Response {
    user_action(state, page, id, user, Fields(fields), "resend").await
}

async fn disable(
    State(state): State<Shared>,
    page: Page,
    Path((id, user)): Path<(String, String)>,
    Form(fields): Form<Vec<(String, String)>>,
) -> Response {
    user_action(state, page, id, user, Fields(fields), "disable").await
}

async fn enable(
    State(state): State<Shared>,
    page: Page,
    Path((id, user)): Path<(String, String)>,
    Form(fields): Form<Vec<(String, String)>>,
) -> Response {
    user_action(state, page, id, user, Fields(fields), "enable").await
}

async fn set_groups(
    State(state): State<Shared>,
    page: Page,
    Path((id, user)): Path<(String, String)>,
    Form(fields): Form<Vec<(String, String)>>,
) -> Response {
    let fields = Fields(fields);
    let csrf = fields.get("csrf");
    if let Err(refused) = check_session_csrf(&page, csrf) {
        return refused;
    }
    if let Err(refused) = user_of(&state, &page, &id, &user).await {
        return refused;
    }
    let group_ids = fields.all("group_ids");
    let (status, message) = if group_ids.is_empty() {
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            "Choose at least one group: a user without a group could do nothing. To stop someone, disable them instead.".to_owned(),
        )
    } else {
        let answer = state
            .api
            .call(
                &page.write(csrf),
                Method::PUT,
                &format!("/users/{}/groups", enc(&user)),
                Some(&json!({ "group_ids": group_ids })),
            )
            .await;
        if answer.ok() {
            return Redirect::to(&format!("/accounts/{}/users?done=groups", enc(&id)))
                .into_response();
        }
        if whole_page(&answer) {
            return api_error_page(Some(&page), &answer);
        }
        (refused_status(&answer), split_field(&answer.message()).1)
    };
    let feedback = Feedback {
        row: Some(RowError {
            user,
            form: "groups",
            message,
        }),
        ..Feedback::default()
    };
    users_view(&state, &page, &id, None, feedback, status).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_as_words_both_ways() {
        let now = 1_000_000_000;
        assert_eq!(words(now, now), "just now");
        assert_eq!(words(now - 120, now), "2 minutes ago");
        assert_eq!(words(now - 3_600, now), "1 hour ago");
        assert_eq!(words(now + 89 * 86_400 + 5, now), "in 89 days");
        assert_eq!(words(now + 30, now), "in less than a minute");
        assert_eq!(words(now - 3 * 31_536_000, now), "3 years ago");
    }

    #[test]
    fn api_messages_split_into_field_and_text() {
        assert_eq!(
            split_field("email: a user with the email x already exists"),
            (
                Some("email".to_owned()),
                "A user with the email x already exists".to_owned()
            )
        );
        assert_eq!(
            split_field("expires_at is in the past: give a time"),
            (None, "Expires_at is in the past: give a time".to_owned())
        );
        assert_eq!(split_field("Not: a field").0, None);
    }

    #[test]
    fn dates_and_encoding() {
        assert_eq!(parse_date("1970-01-02"), Some(86_400));
        assert_eq!(parse_date("2026-13-01"), None);
        assert_eq!(parse_date(""), None);
        assert_eq!(enc("user:1@x y/z"), "user%3A1%40x%20y%2Fz");
        assert_eq!(utc_text(0), "1970-01-01 00:00 UTC");
    }
}
