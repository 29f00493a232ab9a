//! Form pieces: labelled fields with their errors, and CSRF protection for the forms
//! shown before login (login, forgot, reset, accept), which have no session token yet.
//!
//! Forms of a logged-in page carry the session's CSRF token in a hidden `csrf` field; the
//! handler checks it ([`check_session_csrf`]) and passes it to the API, which checks it
//! again. Forms before login use a double-submit token: a random value in a `__Host-`
//! cookie and the same value in the form; a cross-site page can send the form but cannot
//! read or set that cookie.

use std::collections::BTreeMap;

use axum::http::request::Parts;
use axum::http::{header, HeaderValue};
use axum::response::Response;
use maud::{html, Markup};
use ring::rand::{SecureRandom, SystemRandom};
use subtle::ConstantTimeEq;

use super::layout::{csrf_refused_page, Page};

/// The cookie holding the double-submit token of the forms before login.
pub const FORM_COOKIE: &str = "__Host-contera_form";

/// Errors by field name, shown next to their field; `""` is the form as a whole.
#[derive(Debug, Default, Clone)]
pub struct Errors(pub BTreeMap<&'static str, String>);

impl Errors {
    pub fn add(&mut self, field: &'static str, message: impl Into<String>) {
        self.0.entry(field).or_insert_with(|| message.into());
    }
    pub fn get(&self, field: &str) -> Option<&str> {
        self.0.get(field).map(String::as_str)
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The message for the whole form, if any, as an alert at its top.
pub fn form_error(errors: &Errors) -> Markup {
    html! {
        @if let Some(message) = errors.get("") {
            p.alert role="alert" { (message) }
        }
    }
}

/// A labelled input with its hint and its error (tied to it with `aria-describedby`).
pub struct Field<'a> {
    pub id: &'static str,
    pub label: &'a str,
    pub kind: &'a str,
    pub value: &'a str,
    pub hint: Option<&'a str>,
    pub required: bool,
    pub autocomplete: Option<&'a str>,
}

impl<'a> Field<'a> {
    pub fn new(id: &'static str, label: &'a str) -> Self {
        Field {
            id,
            label,
            kind: "text",
            value: "",
            hint: None,
            required: true,
            autocomplete: None,
        }
    }
    pub fn kind(mut self, kind: &'a str) -> Self {
        self.kind = kind;
        self
    }
    pub fn value(mut self, value: &'a str) -> Self {
        self.value = value;
        self
    }
    pub fn hint(mut self, hint: &'a str) -> Self {
        self.hint = Some(hint);
        self
    }
    pub fn optional(mut self) -> Self {
        self.required = false;
        self
    }
    pub fn autocomplete(mut self, value: &'a str) -> Self {
        self.autocomplete = Some(value);
        self
    }

    pub fn render(&self, errors: &Errors) -> Markup {
        let error = errors.get(self.id);
        let described = match (self.hint.is_some(), error.is_some()) {
            (true, true) => Some(format!("{0}-hint {0}-error", self.id)),
            (true, false) => Some(format!("{}-hint", self.id)),
            (false, true) => Some(format!("{}-error", self.id)),
            (false, false) => None,
        };
        html! {
            div.field.invalid[error.is_some()] {
                label for=(self.id) { (self.label) @if !self.required { span.optional { " (optional)" } } }
                @if let Some(hint) = self.hint { p.hint id={ (self.id) "-hint" } { (hint) } }
                @if self.kind == "textarea" {
                    textarea id=(self.id) name=(self.id) rows="3" required[self.required]
                        aria-invalid=[error.map(|_| "true")] aria-describedby=[described.as_deref()] { (self.value) }
                } @else {
                    input id=(self.id) name=(self.id) type=(self.kind) value=(self.value) required[self.required]
                        autocomplete=[self.autocomplete] aria-invalid=[error.map(|_| "true")]
                        aria-describedby=[described.as_deref()];
                }
                @if let Some(error) = error { p.field-error id={ (self.id) "-error" } { (error) } }
            }
        }
    }
}

/// The hidden field with the session's CSRF token.
pub fn csrf_field(page: &Page) -> Markup {
    html! { input type="hidden" name="csrf" value=(page.csrf()); }
}

/// Refuses a logged-in form whose `csrf` field is not the session's token.
#[allow(clippy::result_large_err)]
pub fn check_session_csrf(page: &Page, given: &str) -> Result<(), Response> {
    let expected = page.csrf();
    if !expected.is_empty() && bool::from(expected.as_bytes().ct_eq(given.trim().as_bytes())) {
        Ok(())
    } else {
        Err(csrf_refused_page())
    }
}

/// The double-submit token of a form before login: the one in the browser's cookie if it
/// has one, else a new one, with the `Set-Cookie` to send when new.
pub fn anonymous_token(parts_cookie: Option<&str>) -> (String, Option<HeaderValue>) {
    if let Some(existing) = parts_cookie.filter(|v| v.len() == 32) {
        return (existing.to_owned(), None);
    }
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system random generator works");
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let cookie = HeaderValue::from_str(&format!(
        "{FORM_COOKIE}={token}; Path=/; Secure; HttpOnly; SameSite=Strict"
    ))
    .expect("hex token makes a valid header");
    (token, Some(cookie))
}

/// The double-submit cookie of a request.
pub fn form_cookie(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == FORM_COOKIE)
        .map(|(_, v)| v.trim())
}

/// Refuses a form before login whose `csrf` field does not match its cookie.
#[allow(clippy::result_large_err)]
pub fn check_anonymous_csrf(cookie: Option<&str>, given: &str) -> Result<(), Response> {
    match cookie {
        Some(cookie)
            if cookie.len() == 32
                && bool::from(cookie.as_bytes().ct_eq(given.trim().as_bytes())) =>
        {
            Ok(())
        }
        _ => Err(csrf_refused_page()),
    }
}
