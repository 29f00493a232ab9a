//! The page shell every console page shares, the logged-in [`Page`] extractor, and the
//! error pages.

use std::net::SocketAddr;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use maud::{html, Markup, DOCTYPE};
use serde::Deserialize;

use super::api::Credentials;
use super::Shared;
use crate::admin::caller;

/// The logged-in user behind a page, as the API sees them (`GET /session`).
#[derive(Debug, Clone, Deserialize)]
pub struct Me {
    pub user: MeUser,
    pub account: MeAccount,
    pub permissions: Vec<String>,
    #[serde(default)]
    pub csrf_token: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct MeUser {
    pub id: String,
    pub name: String,
    pub email: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct MeAccount {
    pub id: String,
    pub name: String,
}

/// A request from a logged-in browser: who they are and how to call the API as them.
/// Extracting it sends a browser without a valid session to the login page.
#[derive(Debug, Clone)]
pub struct Page {
    pub me: Me,
    pub session: String,
    pub peer: SocketAddr,
}

impl Page {
    /// Credentials for reads.
    pub fn read(&self) -> Credentials {
        Credentials {
            session: Some(self.session.clone()),
            csrf: None,
            peer: self.peer,
        }
    }

    /// Credentials for a change, with the CSRF token the submitted form carried: the API
    /// refuses the change unless it is this session's.
    pub fn write(&self, form_csrf: &str) -> Credentials {
        Credentials {
            session: Some(self.session.clone()),
            csrf: Some(form_csrf.trim().to_owned()),
            peer: self.peer,
        }
    }

    /// The CSRF token to put in this page's forms.
    pub fn csrf(&self) -> &str {
        self.me.csrf_token.as_deref().unwrap_or("")
    }

    /// Whether the user holds `permission` (to show or hide controls; the API decides).
    pub fn can(&self, permission: &str) -> bool {
        self.me.permissions.iter().any(|p| p == permission)
    }
}

/// The peer address of a console request.
pub fn peer(parts: &Parts) -> SocketAddr {
    parts
        .extensions
        .get::<crate::api::PeerAddr>()
        .map(|p| p.0)
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)))
}

impl FromRequestParts<Shared> for Page {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> Result<Self, Response> {
        let to_login = || Redirect::to("/login").into_response();
        let Some(session) = caller::session_cookie(parts).map(str::to_owned) else {
            return Err(to_login());
        };
        let peer = peer(parts);
        let credentials = Credentials {
            session: Some(session.clone()),
            csrf: None,
            peer,
        };
        let answer = state.api.get(&credentials, "/session").await;
        if answer.status == StatusCode::FORBIDDEN {
            // Logged in, but the account is disabled: say so rather than loop to login.
            return Err(api_error_page(None, &answer));
        }
        if !answer.ok() {
            return Err(to_login());
        }
        let me: Me = serde_json::from_value(answer.body).map_err(|_| to_login())?;
        Ok(Page { me, session, peer })
    }
}

/// One step of the breadcrumb trail: a name and where it links.
pub struct Crumb {
    pub name: String,
    pub href: String,
}

/// A whole page: header with the user and the settings, breadcrumbs, the title and `body`.
pub fn shell(page: Option<&Page>, title: &str, crumbs: &[Crumb], body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Contera" }
                link rel="stylesheet" href="/static/console.css";
                script src="/static/console.js" defer {}
            }
            body {
                header.topbar {
                    a.brand href="/" { "Contera" }
                    @if let Some(page) = page {
                        nav.usernav aria-label="Account" {
                            a href={ "/accounts/" (page.me.account.id) } { (page.me.account.name) }
                            a #settings href={ "/accounts/" (page.me.account.id) "/users" } title="Settings: users and groups" {
                                span aria-hidden="true" { "⚙" } " Settings"
                            }
                            a href="/tokens" { "API tokens" }
                            @if page.can("audit.view") { a href="/audit" { "Audit log" } }
                            form.inline method="post" action="/logout" {
                                input type="hidden" name="csrf" value=(page.csrf());
                                button.link type="submit" { "Log out " (page.me.user.name) }
                            }
                        }
                    }
                }
                main #main {
                    @if !crumbs.is_empty() {
                        nav.breadcrumbs aria-label="Breadcrumb" {
                            ol {
                                @for (i, crumb) in crumbs.iter().enumerate() {
                                    li {
                                        @if i + 1 == crumbs.len() {
                                            a href=(crumb.href) aria-current="page" { (crumb.name) }
                                        } @else {
                                            a href=(crumb.href) { (crumb.name) }
                                        }
                                    }
                                }
                            }
                        }
                    }
                    (body)
                }
            }
        }
    }
}

/// A page answer with its status.
pub fn respond(status: StatusCode, markup: Markup) -> Response {
    (status, Html(markup.into_string())).into_response()
}

/// 404: unknown and out of scope look the same, as in the API.
pub fn not_found_page() -> Response {
    respond(
        StatusCode::NOT_FOUND,
        shell(
            None,
            "Not found",
            &[],
            html! {
                h1 { "Not found" }
                p { "There is nothing at this address among your accounts. Check the link, or go to "
                    a href="/" { "your account" } "." }
            },
        ),
    )
}

/// 403 for a form that did not carry this session's CSRF token.
pub fn csrf_refused_page() -> Response {
    respond(
        StatusCode::FORBIDDEN,
        shell(
            None,
            "Form expired",
            &[],
            html! {
                h1 { "This form has expired" }
                p { "The form did not come from this console session (or it is too old). Go back, reload the page and send it again." }
            },
        ),
    )
}

/// An answer the API gave that the page cannot show in place: not found, forbidden, or
/// a failure, as a whole page.
pub fn api_error_page(page: Option<&Page>, answer: &super::api::Answer) -> Response {
    match answer.status {
        StatusCode::NOT_FOUND => not_found_page(),
        StatusCode::UNAUTHORIZED => Redirect::to("/login").into_response(),
        status => respond(
            status,
            shell(
                page,
                "Not allowed",
                &[],
                html! {
                    h1 { @if status == StatusCode::FORBIDDEN { "Not allowed" } @else { "Something went wrong" } }
                    p.error { (answer.message()) }
                    p { a href="/" { "Back to your account" } }
                },
            ),
        ),
    }
}
