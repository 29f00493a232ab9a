//! Registration code forms of an account page: a new code (label, expiry, use limit),
//! rotating the account's codes, disabling one code, and a page to change one code's label
//! and limits. Each goes through the admin API's code routes and back to the account page.

use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::{json, Value};

use super::accounts::{
    account_page, api_errors, crumbs_to, now, parse, plain_id, said, when, AccountInfo,
    AccountQuery, ApiPage, CodeInfo, CsrfForm, Sent,
};
use super::api::Answer;
use super::forms::{check_session_csrf, csrf_field, form_error, Errors, Field};
use super::layout::{api_error_page, not_found_page, respond, shell, Crumb, Page};
use super::Shared;

pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/accounts/{id}/codes", post(create))
        .route("/accounts/{id}/codes/rotate", post(rotate))
        .route(
            "/accounts/{id}/codes/{public_id}",
            get(edit_page).post(update),
        )
        .route("/accounts/{id}/codes/{public_id}/disable", post(disable))
}

/// Codes per API page when looking one up.
const LOOKUP_PAGE: usize = 500;
/// The most API pages read to find one code.
const LOOKUP_MAX_PAGES: usize = 20;

/// The fields of a new code, and of a code's changes.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct NewCodeForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    code_label: String,
    /// A date (`YYYY-MM-DD`): the code works until the end of that day, UTC. Empty: never
    /// expires.
    #[serde(default)]
    code_expires: String,
    /// Empty: no limit.
    #[serde(default)]
    code_max_uses: String,
}

/// The form for a new code, on the account page.
pub(super) fn new_code_form(page: &Page, account: &AccountInfo, sent: &Sent) -> Markup {
    let (values, errors) = match sent {
        Sent::NewCode(form, errors) => (form.clone(), errors.clone()),
        _ => (NewCodeForm::default(), Errors::default()),
    };
    html! {
        form #new-code method="post" action={ "/accounts/" (account.id) "/codes" } novalidate {
            h3 { "New code" }
            (form_error(&errors))
            (csrf_field(page))
            (code_fields(&values, &errors))
            button.primary type="submit" { "Create code" }
        }
    }
}

fn code_fields(values: &NewCodeForm, errors: &Errors) -> Markup {
    html! {
        (Field::new("code_label", "Label").value(&values.code_label).optional()
            .hint("What the code is for, e.g. the installer or the site.").render(errors))
        (Field::new("code_expires", "Expires on").kind("date").value(&values.code_expires).optional()
            .hint("The code stops working at the end of this day (UTC). Leave empty for no expiry.").render(errors))
        (Field::new("code_max_uses", "Most recorders").kind("number").value(&values.code_max_uses).optional()
            .hint("How many recorders may enroll with it in all. Leave empty for no limit.").render(errors))
    }
}

/// The end of a `YYYY-MM-DD` day in UTC, as Unix seconds.
fn end_of_day(date: &str) -> Option<i64> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let day = time::Date::parse(date.trim(), &format).ok()?;
    Some(day.with_hms(23, 59, 59).ok()?.assume_utc().unix_timestamp())
}

/// The UTC day of a Unix time as `YYYY-MM-DD`.
fn day_of(at: i64) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    time::OffsetDateTime::from_unix_timestamp(at)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_default()
}

/// The form's expiry and use limit as the API takes them (`null` for none); errors next to
/// the fields otherwise.
fn limits(form: &NewCodeForm, errors: &mut Errors) -> (Option<i64>, Option<i64>) {
    let expires = form.code_expires.trim();
    let expires_at = if expires.is_empty() {
        None
    } else {
        match end_of_day(expires) {
            Some(at) if at > now() => Some(at),
            Some(_) => {
                errors.add(
                    "code_expires",
                    "This day is over: choose today or a later day, or leave it empty for no expiry.",
                );
                None
            }
            None => {
                errors.add(
                    "code_expires",
                    "Enter a date like 2030-12-31, or leave it empty for no expiry.",
                );
                None
            }
        }
    };
    let uses = form.code_max_uses.trim();
    let max_uses = if uses.is_empty() {
        None
    } else {
        match uses.parse::<i64>() {
            Ok(n) if n >= 1 => Some(n),
            _ => {
                errors.add(
                    "code_max_uses",
                    "Enter a whole number of at least 1, or leave it empty for no limit.",
                );
                None
            }
        }
    };
    (expires_at, max_uses)
}

/// Puts an API refusal of a code's fields next to its field, in the console's words.
fn code_api_errors(answer: &Answer, errors: &mut Errors) {
    if answer.message().starts_with("expires_at") {
        errors.add(
            "code_expires",
            "This day is over: choose today or a later day, or leave it empty for no expiry.",
        );
        return;
    }
    api_errors(
        answer,
        &[("label", "code_label"), ("max_uses", "code_max_uses")],
        errors,
    );
}

/// An API refusal of a control on the account page: 404 and 403 as pages of their own,
/// anything else on top of the account page.
async fn refused(state: &Shared, page: &Page, account_id: &str, answer: &Answer) -> Response {
    match answer.status {
        StatusCode::BAD_REQUEST | StatusCode::CONFLICT => {
            let mut errors = Errors::default();
            errors.add("", said(answer));
            account_page(
                state,
                page,
                account_id,
                &AccountQuery::default(),
                Sent::Action(errors),
            )
            .await
        }
        _ => api_error_page(Some(page), answer),
    }
}

async fn create(
    State(state): State<Shared>,
    page: Page,
    Path(id): Path<String>,
    Form(form): Form<NewCodeForm>,
) -> Response {
    if let Err(refused) = check_session_csrf(&page, &form.csrf) {
        return refused;
    }
    if !plain_id(&id) {
        return not_found_page();
    }
    let mut errors = Errors::default();
    let (expires_at, max_uses) = limits(&form, &mut errors);
    if errors.is_empty() {
        let label = form.code_label.trim();
        let answer = state
            .api
            .post(
                &page.write(&form.csrf),
                &format!("/accounts/{id}/codes"),
                &json!({
                    "label": (!label.is_empty()).then_some(label),
                    "expires_at": expires_at,
                    "max_uses": max_uses,
                }),
            )
            .await;
        if answer.ok() {
            return Redirect::to(&format!("/accounts/{id}?done=code-created#codes"))
                .into_response();
        }
        if answer.status != StatusCode::BAD_REQUEST {
            return api_error_page(Some(&page), &answer);
        }
        code_api_errors(&answer, &mut errors);
    }
    account_page(
        &state,
        &page,
        &id,
        &AccountQuery::default(),
        Sent::NewCode(form, errors),
    )
    .await
}

async fn rotate(
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
            &format!("/accounts/{id}/codes/rotate"),
            &json!({}),
        )
        .await;
    if answer.ok() {
        return Redirect::to(&format!("/accounts/{id}?done=code-rotated#codes")).into_response();
    }
    refused(&state, &page, &id, &answer).await
}

async fn disable(
    State(state): State<Shared>,
    page: Page,
    Path((id, public_id)): Path<(String, String)>,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Err(refused) = check_session_csrf(&page, &form.csrf) {
        return refused;
    }
    if !plain_id(&id) || !plain_id(&public_id) {
        return not_found_page();
    }
    let answer = state
        .api
        .post(
            &page.write(&form.csrf),
            &format!("/codes/{public_id}/disable"),
            &json!({}),
        )
        .await;
    if answer.ok() {
        // Back to the account the code is in, as the API says.
        let account = answer.body["account_id"].as_str().unwrap_or(&id);
        return Redirect::to(&format!("/accounts/{account}?done=code-disabled#codes"))
            .into_response();
    }
    refused(&state, &page, &id, &answer).await
}

/// The account and one of its codes as the API lists them, or the answer to give.
async fn find_code(
    state: &Shared,
    page: &Page,
    id: &str,
    public_id: &str,
) -> Result<(AccountInfo, CodeInfo), Response> {
    if !plain_id(id) || !plain_id(public_id) {
        return Err(not_found_page());
    }
    let answer = state
        .api
        .get(&page.read(), &format!("/accounts/{id}"))
        .await;
    if !answer.ok() {
        return Err(api_error_page(Some(page), &answer));
    }
    let account: AccountInfo = parse(&answer)?;
    let wanted = public_id.to_ascii_uppercase();
    let mut cursor: Option<String> = None;
    for _ in 0..LOOKUP_MAX_PAGES {
        let mut path = format!("/accounts/{id}/codes?limit={LOOKUP_PAGE}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let answer = state.api.get(&page.read(), &path).await;
        if !answer.ok() {
            return Err(api_error_page(Some(page), &answer));
        }
        let list: ApiPage<CodeInfo> = parse(&answer)?;
        if let Some(code) = list.items.into_iter().find(|c| c.public_id == wanted) {
            return Ok((account, code));
        }
        match list.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    Err(not_found_page())
}

async fn edit_page(
    State(state): State<Shared>,
    page: Page,
    Path((id, public_id)): Path<(String, String)>,
) -> Response {
    let (account, code) = match find_code(&state, &page, &id, &public_id).await {
        Ok(found) => found,
        Err(answer) => return answer,
    };
    let form = NewCodeForm {
        csrf: String::new(),
        code_label: code.label.clone(),
        code_expires: code.expires_at.map(day_of).unwrap_or_default(),
        code_max_uses: code.max_uses.map(|n| n.to_string()).unwrap_or_default(),
    };
    edit_form(
        &state,
        &page,
        &account,
        &code,
        &form,
        &Errors::default(),
        StatusCode::OK,
    )
    .await
}

async fn edit_form(
    state: &Shared,
    page: &Page,
    account: &AccountInfo,
    code: &CodeInfo,
    form: &NewCodeForm,
    errors: &Errors,
    status: StatusCode,
) -> Response {
    let now = now();
    let mut crumbs = crumbs_to(state, page, account).await;
    crumbs.push(Crumb {
        name: format!("Code {}", code.public_id),
        href: format!("/accounts/{}/codes/{}", account.id, code.public_id),
    });
    let title = format!("Code {}", code.public_id);
    let body = html! {
        div.form-page {
            h1 { "Code " (code.public_id) "-…" }
            dl.facts {
                dt { "Account" } dd { a href={ "/accounts/" (account.id) } { (account.name) } }
                dt { "Uses so far" } dd { (code.uses) }
                dt { "Expires" } dd { (when(code.expires_at, now, "never")) }
                dt { "Created" } dd { (when(Some(code.created_at), now, "")) }
            }
            @if page.can("codes.manage") {
                form #edit-code method="post" action={ "/accounts/" (account.id) "/codes/" (code.public_id) } novalidate {
                    (form_error(errors))
                    (csrf_field(page))
                    (code_fields(form, errors))
                    p.hint { "A limit at or below the uses so far makes the code used up. Changes hold from the next enrollment on." }
                    div.actions {
                        button.primary type="submit" { "Save limits" }
                        a href={ "/accounts/" (account.id) "#codes" } { "Cancel" }
                    }
                }
            } @else {
                p.muted { "Changing a code needs the codes.manage permission." }
            }
        }
    };
    respond(status, shell(Some(page), &title, &crumbs, body))
}

async fn update(
    State(state): State<Shared>,
    page: Page,
    Path((id, public_id)): Path<(String, String)>,
    Form(form): Form<NewCodeForm>,
) -> Response {
    if let Err(refused) = check_session_csrf(&page, &form.csrf) {
        return refused;
    }
    let (account, code) = match find_code(&state, &page, &id, &public_id).await {
        Ok(found) => found,
        Err(answer) => return answer,
    };
    let mut errors = Errors::default();
    let mut changes = serde_json::Map::new();
    let label = form.code_label.trim();
    if label != code.label {
        changes.insert("label".into(), json!(label));
    }
    // An expiry left on its day stays exactly as it is (it may not be at the end of it).
    let expiry_changed =
        form.code_expires.trim() != code.expires_at.map(day_of).unwrap_or_default();
    let (expires_at, max_uses) = if expiry_changed {
        limits(&form, &mut errors)
    } else {
        let unchanged = NewCodeForm {
            code_expires: String::new(),
            ..form.clone()
        };
        limits(&unchanged, &mut errors)
    };
    if expiry_changed {
        changes.insert("expires_at".into(), json!(expires_at));
    }
    if max_uses != code.max_uses {
        changes.insert("max_uses".into(), json!(max_uses));
    }
    if errors.is_empty() {
        if changes.is_empty() {
            return Redirect::to(&format!(
                "/accounts/{}?done=nothing-changed#codes",
                account.id
            ))
            .into_response();
        }
        let answer = state
            .api
            .call(
                &page.write(&form.csrf),
                Method::PATCH,
                &format!("/codes/{}", code.public_id),
                Some(&Value::Object(changes)),
            )
            .await;
        if answer.ok() {
            return Redirect::to(&format!("/accounts/{}?done=code-updated#codes", account.id))
                .into_response();
        }
        if answer.status != StatusCode::BAD_REQUEST {
            return api_error_page(Some(&page), &answer);
        }
        code_api_errors(&answer, &mut errors);
    }
    edit_form(
        &state,
        &page,
        &account,
        &code,
        &form,
        &errors,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_date_is_the_end_of_that_day_in_utc() {
        assert_eq!(end_of_day("2099-12-31"), Some(4_102_444_799));
        assert_eq!(day_of(4_102_444_799), "2099-12-31");
        assert_eq!(end_of_day("31.12.2099"), None);
        assert_eq!(end_of_day("2099-02-30"), None);
    }

    #[test]
    fn limits_are_checked_before_the_api_is_asked() {
        let form = |expires: &str, uses: &str| NewCodeForm {
            code_expires: expires.into(),
            code_max_uses: uses.into(),
            ..NewCodeForm::default()
        };
        let mut errors = Errors::default();
        assert_eq!(limits(&form("", ""), &mut errors), (None, None));
        assert_eq!(
            limits(&form("2099-12-31", "3"), &mut errors),
            (Some(4_102_444_799), Some(3))
        );
        assert!(errors.is_empty());
        limits(&form("2001-01-01", "0"), &mut errors);
        assert!(errors.get("code_expires").unwrap().contains("over"));
        assert!(errors.get("code_max_uses").unwrap().contains("at least 1"));
    }
}
