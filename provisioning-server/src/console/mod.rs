//! The web console: server-rendered pages for partners and their customers, on the
//! console's own listener, beside the admin API.
//!
//! The console is a client of the admin API, in process: every page reads and every form
//! writes through the same `/api/v1/admin` routes a script uses ([`api::Api`]), with the
//! user's own session cookie and CSRF token. So the scope rule, the permission checks, the
//! validation and the audit are exactly the API's, with no second path around them. Pages
//! work without JavaScript; `static/console.js` only adds the copy buttons, reads the token
//! of an accept link from its fragment, and refreshes the recorders of an account page.

pub mod accounts;
pub mod api;
pub mod assets;
pub mod audit;
pub mod auth_pages;
pub mod codes;
pub mod forms;
pub mod groups;
pub mod layout;
pub mod recorders;
pub mod tokens;
pub mod users;

use std::sync::Arc;

use axum::extract::Request;
use axum::http::{header, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

pub use api::Api;
pub use layout::Page;

/// What the console's handlers share.
pub struct ConsoleState {
    /// The admin API, called in process.
    pub api: Api,
    /// "I confirm I am at least N years old".
    pub minimum_age: u32,
    pub terms_url: String,
    pub terms_version: String,
    /// How often an account page refreshes its recorders, in milliseconds: one heartbeat
    /// interval at most, so a recorder shows online within one interval of enrolling.
    pub refresh_millis: u64,
}

pub type Shared = Arc<ConsoleState>;

/// The console's pages and assets. `admin` is the admin API router (also served on this
/// listener, so the console's script and scripts alike can reach it).
pub fn router(state: Shared, admin: Router) -> Router {
    Router::new()
        .route("/", get(home))
        .merge(auth_pages::routes())
        .merge(assets::routes())
        .merge(accounts::routes())
        .merge(codes::routes())
        .merge(recorders::routes())
        .merge(users::routes())
        .merge(groups::routes())
        .merge(tokens::routes())
        .merge(audit::routes())
        .with_state(state)
        .merge(admin)
        .fallback(not_found)
        .layer(middleware::from_fn(security_headers))
}

/// `/` goes to the caller's own account, or to the login page.
async fn home(page: Page) -> Response {
    Redirect::to(&format!("/accounts/{}", page.me.account.id)).into_response()
}

async fn not_found() -> Response {
    layout::not_found_page()
}

/// The headers every console answer carries: no inline script or style (so injected markup
/// cannot run), no framing (clickjacking), no sniffing, no referrer (an accept link's
/// fragment never leaves the page anyway), and pages are not cached.
async fn security_headers(req: Request, next: Next) -> Response {
    let is_page = !req.uri().path().starts_with("/static/");
    let mut response = next.run(req).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if is_page && !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}
