//! The pages before login: log in, forgot password, reset it, accept an invitation; and
//! logging out.

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::json;

use super::api::{Answer, Credentials};
use super::forms::{
    anonymous_token, check_anonymous_csrf, check_session_csrf, form_cookie, form_error, Errors,
    Field,
};
use super::layout::{peer, respond, shell, Page};
use super::Shared;

pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/password/forgot", get(forgot_page).post(forgot))
        .route("/password/reset", get(reset_page).post(reset))
        .route("/invitations/accept", get(accept_page).post(accept))
}

/// A browser before (or without) login: its double-submit cookie and its address.
pub struct Visitor {
    form_cookie: Option<String>,
    peer: std::net::SocketAddr,
}

impl<S: Send + Sync> FromRequestParts<S> for Visitor {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Visitor {
            form_cookie: form_cookie(parts).map(str::to_owned),
            peer: peer(parts),
        })
    }
}

impl Visitor {
    fn anonymous(&self) -> Credentials {
        Credentials {
            session: None,
            csrf: None,
            peer: self.peer,
        }
    }
}

/// A page before login, with its form's double-submit token (and the cookie when new).
fn anonymous_page(
    visitor: &Visitor,
    status: StatusCode,
    render: impl FnOnce(&str) -> Markup,
) -> Response {
    let (token, cookie) = anonymous_token(visitor.form_cookie.as_deref());
    let mut response = respond(status, render(&token));
    if let Some(cookie) = cookie {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

/// Passes the API's `Set-Cookie` (a new session, or its end) to the browser and goes on.
fn redirect_with_cookies(to: &str, answer: &Answer) -> Response {
    let mut response = Redirect::to(to).into_response();
    for cookie in &answer.set_cookies {
        response
            .headers_mut()
            .append(header::SET_COOKIE, cookie.clone());
    }
    response
}

#[derive(Debug, Default, Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
}

fn login_form(token: &str, form: &LoginForm, errors: &Errors) -> Markup {
    shell(
        None,
        "Log in",
        &[],
        html! {
            div.narrow {
                h1 { "Log in" }
                form #login method="post" action="/login" novalidate {
                    (form_error(errors))
                    input type="hidden" name="csrf" value=(token);
                    (Field::new("email", "Email").kind("email").value(&form.email).autocomplete("username").render(errors))
                    (Field::new("password", "Password").kind("password").autocomplete("current-password").render(errors))
                    button.primary type="submit" { "Log in" }
                }
                p { a href="/password/forgot" { "Forgot password?" } }
            }
        },
    )
}

async fn login_page(visitor: Visitor) -> Response {
    anonymous_page(&visitor, StatusCode::OK, |token| {
        login_form(token, &LoginForm::default(), &Errors::default())
    })
}

async fn login(
    State(state): State<Shared>,
    visitor: Visitor,
    Form(form): Form<LoginForm>,
) -> Response {
    if let Err(refused) = check_anonymous_csrf(visitor.form_cookie.as_deref(), &form.csrf) {
        return refused;
    }
    let mut errors = Errors::default();
    if form.email.trim().is_empty() {
        errors.add("email", "Enter the email address you were invited with.");
    }
    if form.password.is_empty() {
        errors.add("password", "Enter your password.");
    }
    if errors.is_empty() {
        let answer = state
            .api
            .post(
                &visitor.anonymous(),
                "/session/login",
                &json!({ "email": form.email, "password": form.password }),
            )
            .await;
        if answer.ok() {
            return redirect_with_cookies("/", &answer);
        }
        let message = match answer.status {
            StatusCode::UNAUTHORIZED => {
                "The email or password is wrong. Check both, or use \"Forgot password?\"."
                    .to_owned()
            }
            _ => answer.message(),
        };
        errors.add("", message);
    }
    anonymous_page(&visitor, StatusCode::UNPROCESSABLE_ENTITY, |token| {
        login_form(token, &form, &errors)
    })
}

#[derive(Debug, Deserialize)]
pub struct CsrfOnly {
    #[serde(default)]
    csrf: String,
}

async fn logout(State(state): State<Shared>, page: Page, Form(form): Form<CsrfOnly>) -> Response {
    if let Err(refused) = check_session_csrf(&page, &form.csrf) {
        return refused;
    }
    let answer = state
        .api
        .post(&page.write(&form.csrf), "/session/logout", &json!({}))
        .await;
    redirect_with_cookies("/login", &answer)
}

#[derive(Debug, Default, Deserialize)]
pub struct ForgotForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    email: String,
}

fn forgot_form(token: &str, form: &ForgotForm, errors: &Errors, sent: bool) -> Markup {
    shell(
        None,
        "Forgot password",
        &[],
        html! {
            div.narrow {
                h1 { "Forgot your password?" }
                @if sent {
                    p.notice role="status" { "If this email belongs to a user, a link to choose a new password is on its way. It works for 72 hours, once." }
                    p { a href="/login" { "Back to log in" } }
                } @else {
                    p { "Enter the email you log in with; we send a link to choose a new password." }
                    form #forgot method="post" action="/password/forgot" novalidate {
                        (form_error(errors))
                        input type="hidden" name="csrf" value=(token);
                        (Field::new("email", "Email").kind("email").value(&form.email).autocomplete("username").render(errors))
                        button.primary type="submit" { "Send the link" }
                    }
                }
            }
        },
    )
}

async fn forgot_page(visitor: Visitor) -> Response {
    anonymous_page(&visitor, StatusCode::OK, |token| {
        forgot_form(token, &ForgotForm::default(), &Errors::default(), false)
    })
}

async fn forgot(
    State(state): State<Shared>,
    visitor: Visitor,
    Form(form): Form<ForgotForm>,
) -> Response {
    if let Err(refused) = check_anonymous_csrf(visitor.form_cookie.as_deref(), &form.csrf) {
        return refused;
    }
    let mut errors = Errors::default();
    if !form.email.contains('@') {
        errors.add("email", "Enter an email address, like name@example.com.");
    } else {
        let answer = state
            .api
            .post(
                &visitor.anonymous(),
                "/session/forgot",
                &json!({ "email": form.email }),
            )
            .await;
        if answer.ok() {
            return anonymous_page(&visitor, StatusCode::OK, |token| {
                forgot_form(token, &form, &Errors::default(), true)
            });
        }
        errors.add("", answer.message());
    }
    anonymous_page(&visitor, StatusCode::UNPROCESSABLE_ENTITY, |token| {
        forgot_form(token, &form, &errors, false)
    })
}

#[derive(Debug, Default, Deserialize)]
pub struct ResetForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    token: String,
    #[serde(default)]
    password: String,
}

fn password_rules() -> &'static str {
    "12 to 128 characters; not a common password, nor your email or name. A few words make a good one."
}

/// The token field: filled from the link's fragment by the script (and then hidden), or
/// pasted by hand where scripts do not run.
fn token_field(label: &str, value: &str, errors: &Errors) -> Markup {
    html! {
        div.token-field {
            (Field::new("token", label).value(value).hint("The long code after \"token=\" in the link of your mail.").render(errors))
        }
    }
}

fn reset_form(token: &str, form: &ResetForm, errors: &Errors) -> Markup {
    shell(
        None,
        "Choose a new password",
        &[],
        html! {
            div.narrow {
                h1 { "Choose a new password" }
                form #reset method="post" action="/password/reset" novalidate {
                    (form_error(errors))
                    input type="hidden" name="csrf" value=(token);
                    (token_field("Reset code", &form.token, errors))
                    (Field::new("password", "New password").kind("password").hint(password_rules()).autocomplete("new-password").render(errors))
                    button.primary type="submit" { "Save" }
                }
            }
        },
    )
}

async fn reset_page(visitor: Visitor) -> Response {
    anonymous_page(&visitor, StatusCode::OK, |token| {
        reset_form(token, &ResetForm::default(), &Errors::default())
    })
}

/// Puts an API refusal of a password next to the password field, anything else on top.
fn password_errors(answer: &Answer, errors: &mut Errors) {
    match answer.status {
        StatusCode::BAD_REQUEST => errors.add("password", answer.message()),
        StatusCode::NOT_FOUND => errors.add("token", answer.message()),
        _ => errors.add("", answer.message()),
    }
}

async fn reset(
    State(state): State<Shared>,
    visitor: Visitor,
    Form(form): Form<ResetForm>,
) -> Response {
    if let Err(refused) = check_anonymous_csrf(visitor.form_cookie.as_deref(), &form.csrf) {
        return refused;
    }
    let mut errors = Errors::default();
    if form.token.trim().is_empty() {
        errors.add(
            "token",
            "Paste the code from the link in your mail, or open the link again.",
        );
    }
    if form.password.is_empty() {
        errors.add("password", "Choose a new password.");
    }
    if errors.is_empty() {
        let answer = state
            .api
            .post(
                &visitor.anonymous(),
                "/session/reset",
                &json!({ "token": form.token.trim(), "password": form.password }),
            )
            .await;
        if answer.ok() {
            return Redirect::to("/login?reset=done").into_response();
        }
        password_errors(&answer, &mut errors);
    }
    anonymous_page(&visitor, StatusCode::UNPROCESSABLE_ENTITY, |token| {
        reset_form(token, &form, &errors)
    })
}

#[derive(Debug, Default, Deserialize)]
pub struct AcceptForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    token: String,
    #[serde(default)]
    password: String,
    age: Option<String>,
    terms: Option<String>,
}

fn accept_form(state: &Shared, token: &str, form: &AcceptForm, errors: &Errors) -> Markup {
    let age_error = errors.get("age");
    let terms_error = errors.get("terms");
    shell(
        None,
        "Accept invitation",
        &[],
        html! {
            div.narrow {
                h1 { "Accept your invitation" }
                p { "Choose your password and confirm the two points below to activate your account." }
                form #accept method="post" action="/invitations/accept" novalidate {
                    (form_error(errors))
                    input type="hidden" name="csrf" value=(token);
                    (token_field("Invitation code", &form.token, errors))
                    (Field::new("password", "Password").kind("password").hint(password_rules()).autocomplete("new-password").render(errors))
                    div.field.check.invalid[age_error.is_some()] {
                        input #age type="checkbox" name="age" value="yes" checked[form.age.is_some()]
                            aria-describedby=[age_error.map(|_| "age-error")];
                        label for="age" { "I confirm I am at least " (state.minimum_age) " years old" }
                        @if let Some(e) = age_error { p.field-error #age-error { (e) } }
                    }
                    div.field.check.invalid[terms_error.is_some()] {
                        input #terms type="checkbox" name="terms" value="yes" checked[form.terms.is_some()]
                            aria-describedby=[terms_error.map(|_| "terms-error")];
                        label for="terms" { "I accept the " a href=(state.terms_url) target="_blank" rel="noopener" { "terms of use" } " (version " (state.terms_version) ")" }
                        @if let Some(e) = terms_error { p.field-error #terms-error { (e) } }
                    }
                    button.primary type="submit" { "Save" }
                }
            }
        },
    )
}

async fn accept_page(State(state): State<Shared>, visitor: Visitor) -> Response {
    anonymous_page(&visitor, StatusCode::OK, |token| {
        accept_form(&state, token, &AcceptForm::default(), &Errors::default())
    })
}

async fn accept(
    State(state): State<Shared>,
    visitor: Visitor,
    Form(form): Form<AcceptForm>,
) -> Response {
    if let Err(refused) = check_anonymous_csrf(visitor.form_cookie.as_deref(), &form.csrf) {
        return refused;
    }
    let mut errors = Errors::default();
    if form.token.trim().is_empty() {
        errors.add(
            "token",
            "Paste the code from the link in your mail, or open the link again.",
        );
    }
    if form.password.is_empty() {
        errors.add("password", "Choose a password.");
    }
    if form.age.is_none() {
        errors.add(
            "age",
            format!(
                "Confirm that you are at least {} years old.",
                state.minimum_age
            ),
        );
    }
    if form.terms.is_none() {
        errors.add("terms", "Accept the terms of use to go on.");
    }
    if errors.is_empty() {
        let answer = state
            .api
            .post(
                &visitor.anonymous(),
                "/invitations/accept",
                &json!({
                    "token": form.token.trim(),
                    "password": form.password,
                    "age_confirmed": true,
                    "terms_version": state.terms_version,
                }),
            )
            .await;
        if answer.ok() {
            return redirect_with_cookies("/", &answer);
        }
        password_errors(&answer, &mut errors);
    }
    anonymous_page(&visitor, StatusCode::UNPROCESSABLE_ENTITY, |token| {
        accept_form(&state, token, &form, &errors)
    })
}
