//! Settings, groups tab: the groups of an account with their members and permissions;
//! creating a group (offering only the permissions the user holds), changing a group's
//! permissions, deleting an empty group. All through the admin API, which refuses (403)
//! granting more than the caller holds and (409) leaving the account without an
//! administrator; those refusals show next to the form that caused them.

use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::json;

use super::api::Answer;
use super::forms::{check_session_csrf, csrf_field, form_error, Errors, Field};
use super::layout::{api_error_page, not_found_page, respond, shell, Crumb, Page};
use super::users::{
    account_head, enc, inline_error, name_account, notice, refused_status, split_field, tabs,
    whole_page, Fields,
};
use super::Shared;

/// The name of the group every account starts with (it cannot be deleted).
const ADMINISTRATORS: &str = "Administrators";
/// Members listed under a group; the rest are counted.
const MEMBERS_SHOWN: u32 = 100;

pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/accounts/{id}/groups", get(groups_page).post(create_group))
        .route(
            "/accounts/{id}/groups/{group}/permissions",
            post(set_permissions),
        )
        .route("/accounts/{id}/groups/{group}/delete", post(delete_group))
}

/// A group as the API lists it.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct GroupItem {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub permissions: Vec<String>,
    #[serde(default)]
    pub members: i64,
}

/// Every group of an account (the API pages them; an account has few).
pub(super) async fn all_groups(
    state: &Shared,
    page: &Page,
    account: &str,
) -> Result<Vec<GroupItem>, Answer> {
    let mut groups = Vec::new();
    let mut cursor: Option<String> = None;
    // At most 20 pages of 500: far more groups than any account has.
    for _ in 0..20 {
        let mut path = format!("/accounts/{}/groups?limit=500", enc(account));
        if let Some(cursor) = &cursor {
            path.push_str(&format!("&cursor={}", enc(cursor)));
        }
        let answer = state.api.get(&page.read(), &path).await;
        if !answer.ok() {
            return Err(answer);
        }
        let items: Vec<GroupItem> =
            serde_json::from_value(answer.body["items"].clone()).unwrap_or_default();
        groups.extend(items);
        match answer.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    Ok(groups)
}

/// What a permission lets its holder do, for the labels of permission checkboxes.
pub(super) fn describe(permission: &str) -> &'static str {
    match permission {
        "accounts.view" => "see accounts and their details",
        "accounts.manage" => "create, change and disable accounts",
        "users.view" => "see users and groups",
        "users.manage" => "invite, disable and enable users; choose their groups",
        "groups.manage" => "create groups and change their permissions",
        "codes.view" => "see registration codes",
        "codes.manage" => "create, rotate and disable registration codes",
        "recorders.view" => "see recorders and their status",
        "recorders.manage" => "rename, move and revoke recorders",
        "audit.view" => "read the audit log",
        _ => "",
    }
}

/// One labelled checkbox per permission in `offered` (named `permissions`), ticked when in
/// `checked`; ids start with `prefix`.
pub(super) fn permission_boxes(prefix: &str, offered: &[String], checked: &[String]) -> Markup {
    html! {
        div.checks {
            @for permission in offered {
                @let box_id = format!("{prefix}-{}", permission.replace('.', "-"));
                div.field.check {
                    input type="checkbox" id=(box_id) name="permissions" value=(permission)
                        checked[checked.contains(permission)];
                    label for=(box_id) {
                        code { (permission) }
                        @let description = describe(permission);
                        @if !description.is_empty() { span.muted { ": " (description) } }
                    }
                }
            }
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct GroupsQuery {
    done: Option<String>,
}

fn done_text(key: &str) -> Option<&'static str> {
    Some(match key {
        "created" => "The group is created. Put users into it on the Users tab (\"Change groups\", or when adding a user).",
        "saved" => "The group's permissions are saved; its members hold them from their next request on.",
        "deleted" => "The group is deleted.",
        _ => return None,
    })
}

/// The create form as sent.
#[derive(Debug, Default)]
struct CreateForm {
    name: String,
    permissions: Vec<String>,
}

/// A refusal of one group's form, with the permissions that form sent.
struct GroupError {
    group: String,
    form: &'static str,
    message: String,
    permissions: Option<Vec<String>>,
}

#[derive(Default)]
struct Feedback {
    notice: Option<&'static str>,
    create: CreateForm,
    create_errors: Errors,
    group: Option<GroupError>,
}

async fn groups_page(
    State(state): State<Shared>,
    page: Page,
    Path(id): Path<String>,
    Query(query): Query<GroupsQuery>,
) -> Response {
    let feedback = Feedback {
        notice: query.done.as_deref().and_then(done_text),
        ..Feedback::default()
    };
    groups_view(&state, &page, &id, feedback, StatusCode::OK).await
}

async fn groups_view(
    state: &Shared,
    page: &Page,
    id: &str,
    mut feedback: Feedback,
    status: StatusCode,
) -> Response {
    let groups = match all_groups(state, page, id).await {
        Ok(groups) => groups,
        Err(answer) => return api_error_page(Some(page), &answer),
    };
    let mut members = Vec::with_capacity(groups.len());
    for group in &groups {
        let answer = state
            .api
            .get(
                &page.read(),
                &format!("/groups/{}/members?limit={MEMBERS_SHOWN}", enc(&group.id)),
            )
            .await;
        let listed: Vec<(String, String)> = answer.body["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .map(|u| {
                        (
                            u["name"].as_str().unwrap_or("").to_owned(),
                            u["email"].as_str().unwrap_or("").to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        members.push(listed);
    }
    let head = account_head(state, page, id).await;
    if let Some(error) = &mut feedback.group {
        name_account(&mut error.message, id, &head.name);
    }
    for message in feedback.create_errors.0.values_mut() {
        name_account(message, id, &head.name);
    }
    let mut crumbs = head.crumbs;
    crumbs.push(Crumb {
        name: "Groups".to_owned(),
        href: format!("/accounts/{}/groups", enc(id)),
    });
    let manage = page.can("groups.manage");
    let body = html! {
        h1 { "Settings: " (head.name) }
        (tabs(id, "Groups"))
        (notice(feedback.notice))
        section #groups aria-labelledby="groups-title" {
            div.card-head {
                h2 #groups-title { "Groups" }
                @if manage { a href="#create-group" { "+ Create group" } }
            }
            p.muted { "A group is a set of permissions; each user holds what their groups hold, in this account and the accounts below it." }
            @if groups.is_empty() {
                p.empty { "No groups yet: create one with \"+ Create group\"." }
            }
            @for (group, listed) in groups.iter().zip(&members) {
                (group_card(page, id, group, listed, &feedback, manage))
            }
        }
        @if manage { (create_form(page, id, &feedback)) }
    };
    respond(status, shell(Some(page), "Groups", &crumbs, body))
}

fn group_card(
    page: &Page,
    account: &str,
    group: &GroupItem,
    listed: &[(String, String)],
    feedback: &Feedback,
    manage: bool,
) -> Markup {
    let base = format!("/accounts/{}/groups/{}", enc(account), enc(&group.id));
    let error = |form: &str| {
        feedback
            .group
            .as_ref()
            .filter(|e| e.group == group.id && e.form == form)
    };
    let permissions_error = error("permissions");
    let delete_error = error("delete");
    let held = &page.me.permissions;
    let checked = permissions_error
        .and_then(|e| e.permissions.clone())
        .unwrap_or_else(|| group.permissions.clone());
    let not_held: Vec<&String> = group
        .permissions
        .iter()
        .filter(|p| !held.contains(p))
        .collect();
    let title_id = format!("group-{}-title", group.id);
    html! {
        article.card.group id={ "group-" (group.id) } data-group=(group.name) aria-labelledby=(title_id) {
            div.card-head {
                h3 id=(title_id) { (group.name) }
                span.muted { (group.members) @if group.members == 1 { " member" } @else { " members" } }
            }
            div.grid.two {
                div {
                    h4 { "Members" }
                    @if listed.is_empty() {
                        p.empty { "No members yet: put users into this group on the "
                            a href={ "/accounts/" (enc(account)) "/users" } { "Users tab" } "." }
                    } @else {
                        ul.members {
                            @for (name, email) in listed {
                                li { (name) " " span.muted { "(" (email) ")" } }
                            }
                            @if group.members > listed.len() as i64 {
                                li.muted { "and " (group.members - listed.len() as i64) " more" }
                            }
                        }
                    }
                }
                div {
                    h4 { "Permissions" }
                    @if group.permissions.is_empty() {
                        p.muted { "None" }
                    } @else {
                        ul.permission-list { @for p in &group.permissions { li { code { (p) } } } }
                    }
                    @if manage {
                        details.inline-edit open[permissions_error.is_some()] {
                            summary { "Change permissions" }
                            form method="post" action={ (base) "/permissions" } {
                                (csrf_field(page))
                                fieldset {
                                    legend { "Permissions of " (group.name) }
                                    (permission_boxes(&format!("perm-{}", group.id), held, &checked))
                                }
                                @if !not_held.is_empty() {
                                    p.hint { "Also holds "
                                        @for (i, p) in not_held.iter().enumerate() {
                                            @if i > 0 { ", " } code { (p) }
                                        }
                                        ", which you do not hold: you can give a group only what you hold, so saving removes "
                                        @if not_held.len() == 1 { "it" } @else { "them" } "." }
                                }
                                button.small type="submit" { "Save permissions" }
                                (inline_error(&format!("permissions-error-{}", group.id), permissions_error.map(|e| e.message.as_str())))
                            }
                        }
                    }
                }
            }
            @if manage && group.name != ADMINISTRATORS {
                @if group.members == 0 {
                    form.inline method="post" action={ (base) "/delete" } {
                        (csrf_field(page))
                        button.small.danger type="submit" { "Delete group" }
                    }
                } @else {
                    p.hint { "To delete this group, first take its members out of it on the Users tab." }
                }
                (inline_error(&format!("delete-error-{}", group.id), delete_error.map(|e| e.message.as_str())))
            }
        }
    }
}

fn create_form(page: &Page, account: &str, feedback: &Feedback) -> Markup {
    let errors = &feedback.create_errors;
    let permissions_error = errors.get("permissions");
    html! {
        section #create-group .card aria-labelledby="create-group-title" {
            h2 #create-group-title { "+ Create group" }
            form method="post" action={ "/accounts/" (enc(account)) "/groups" } novalidate {
                (form_error(errors))
                (csrf_field(page))
                (Field::new("group_name", "Name").value(&feedback.create.name).autocomplete("off")
                    .hint("Unique in this account, e.g. \"Installers\".").render(errors))
                fieldset.invalid[permissions_error.is_some()] aria-describedby="permissions-hint" {
                    legend { "Permissions" }
                    p.hint #permissions-hint { "Only permissions you hold yourself can be given." }
                    (permission_boxes("perm-new", &page.me.permissions, &feedback.create.permissions))
                    @if let Some(e) = permissions_error { p.field-error #permissions-error role="alert" { (e) } }
                }
                button.primary type="submit" { "Create group" }
            }
        }
    }
}

/// What a 403 from granting means on these pages: the API's own message is about the
/// permission a route needs, so say both.
fn grant_refusal(answer: &Answer) -> String {
    format!(
        "Refused: you can give a group only permissions you hold yourself, and changing \
         groups needs groups.manage. ({})",
        split_field(&answer.message()).1
    )
}

async fn create_group(
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
    let form = CreateForm {
        name: fields.get("group_name").trim().to_owned(),
        permissions: fields.all("permissions"),
    };
    let mut errors = Errors::default();
    if form.name.is_empty() {
        errors.add("group_name", "Give the group a name.");
    }
    if form.permissions.is_empty() {
        errors.add(
            "permissions",
            "Tick at least one permission: a group without any lets its members do nothing.",
        );
    }
    let mut status = StatusCode::UNPROCESSABLE_ENTITY;
    if errors.is_empty() {
        let answer = state
            .api
            .post(
                &page.write(csrf),
                &format!("/accounts/{}/groups", enc(&id)),
                &json!({ "name": form.name, "permissions": form.permissions }),
            )
            .await;
        if answer.ok() {
            return Redirect::to(&format!("/accounts/{}/groups?done=created", enc(&id)))
                .into_response();
        }
        if whole_page(&answer) {
            return api_error_page(Some(&page), &answer);
        }
        let (field, text) = split_field(&answer.message());
        match (answer.status, field.as_deref()) {
            (StatusCode::FORBIDDEN, _) => errors.add("", grant_refusal(&answer)),
            (StatusCode::CONFLICT, _) | (_, Some("name")) => errors.add("group_name", text),
            (StatusCode::BAD_REQUEST, _) => errors.add("permissions", text),
            _ => errors.add("", text),
        }
        status = refused_status(&answer);
    }
    let feedback = Feedback {
        create: form,
        create_errors: errors,
        ..Feedback::default()
    };
    groups_view(&state, &page, &id, feedback, status).await
}

/// The group `group` if it is of account `account`: the forms of a groups page act on its
/// own groups only.
async fn group_of(
    state: &Shared,
    page: &Page,
    account: &str,
    group: &str,
) -> Result<GroupItem, Response> {
    let groups = all_groups(state, page, account)
        .await
        .map_err(|answer| api_error_page(Some(page), &answer))?;
    groups
        .into_iter()
        .find(|g| g.id == group)
        .ok_or_else(not_found_page)
}

async fn set_permissions(
    State(state): State<Shared>,
    page: Page,
    Path((id, group)): Path<(String, String)>,
    Form(fields): Form<Vec<(String, String)>>,
) -> Response {
    let fields = Fields(fields);
    let csrf = fields.get("csrf");
    if let Err(refused) = check_session_csrf(&page, csrf) {
        return refused;
    }
    if let Err(refused) = group_of(&state, &page, &id, &group).await {
        return refused;
    }
    let permissions = fields.all("permissions");
    let (status, message) = if permissions.is_empty() {
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            "Tick at least one permission. To stop using a group, take its members out and delete it.".to_owned(),
        )
    } else {
        let answer = state
            .api
            .call(
                &page.write(csrf),
                Method::PUT,
                &format!("/groups/{}/permissions", enc(&group)),
                Some(&json!({ "permissions": permissions })),
            )
            .await;
        if answer.ok() {
            return Redirect::to(&format!("/accounts/{}/groups?done=saved", enc(&id)))
                .into_response();
        }
        if whole_page(&answer) {
            return api_error_page(Some(&page), &answer);
        }
        let message = if answer.status == StatusCode::FORBIDDEN {
            grant_refusal(&answer)
        } else {
            split_field(&answer.message()).1
        };
        (refused_status(&answer), message)
    };
    let feedback = Feedback {
        group: Some(GroupError {
            group,
            form: "permissions",
            message,
            permissions: Some(permissions),
        }),
        ..Feedback::default()
    };
    groups_view(&state, &page, &id, feedback, status).await
}

async fn delete_group(
    State(state): State<Shared>,
    page: Page,
    Path((id, group)): Path<(String, String)>,
    Form(fields): Form<Vec<(String, String)>>,
) -> Response {
    let fields = Fields(fields);
    let csrf = fields.get("csrf");
    if let Err(refused) = check_session_csrf(&page, csrf) {
        return refused;
    }
    if let Err(refused) = group_of(&state, &page, &id, &group).await {
        return refused;
    }
    let answer = state
        .api
        .call(
            &page.write(csrf),
            Method::DELETE,
            &format!("/groups/{}", enc(&group)),
            None,
        )
        .await;
    if answer.ok() {
        return Redirect::to(&format!("/accounts/{}/groups?done=deleted", enc(&id)))
            .into_response();
    }
    if whole_page(&answer) {
        return api_error_page(Some(&page), &answer);
    }
    let feedback = Feedback {
        group: Some(GroupError {
            group,
            form: "delete",
            message: split_field(&answer.message()).1,
            permissions: None,
        }),
        ..Feedback::default()
    };
    groups_view(&state, &page, &id, feedback, refused_status(&answer)).await
}
