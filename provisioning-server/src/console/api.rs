//! The admin API, called in process with the browser's own credentials.

use std::net::SocketAddr;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

use crate::api::PeerAddr;
use crate::auth::SESSION_COOKIE;

/// The admin API router, and how to call it for one browser.
#[derive(Clone)]
pub struct Api {
    router: Router,
}

/// What the API answered.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
    /// `Set-Cookie` headers to pass on to the browser (login, logout, password changes).
    pub set_cookies: Vec<HeaderValue>,
}

impl Answer {
    pub fn ok(&self) -> bool {
        self.status.is_success()
    }

    /// The error message of an error answer.
    pub fn message(&self) -> String {
        self.body["error"]["message"]
            .as_str()
            .unwrap_or("the request failed; try again")
            .to_owned()
    }
}

/// The credentials a call is made with: the browser's session cookie and the CSRF token
/// its form carried (checked by the API on every change), and where it came from.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub session: Option<String>,
    pub csrf: Option<String>,
    pub peer: SocketAddr,
}

impl Api {
    pub fn new(router: Router) -> Api {
        Api { router }
    }

    /// Calls `method path` (below `/api/v1/admin`) with a JSON body.
    pub async fn call(
        &self,
        credentials: &Credentials,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Answer {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", crate::admin::PREFIX));
        if let Some(session) = &credentials.session {
            request = request.header(header::COOKIE, format!("{SESSION_COOKIE}={session}"));
        }
        if let Some(csrf) = &credentials.csrf {
            request = request.header(crate::auth::CSRF_HEADER, csrf.as_str());
        }
        let body = match body {
            Some(json) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Body::from(json.to_string())
            }
            None => Body::empty(),
        };
        let mut request = request.body(body).expect("a request from valid parts");
        request.extensions_mut().insert(PeerAddr(credentials.peer));
        let response = match self.router.clone().oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        let status = response.status();
        let set_cookies = cookies(response.headers());
        let bytes = response
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        Answer {
            status,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            set_cookies,
        }
    }

    pub async fn get(&self, credentials: &Credentials, path: &str) -> Answer {
        self.call(credentials, Method::GET, path, None).await
    }

    pub async fn post(&self, credentials: &Credentials, path: &str, body: &Value) -> Answer {
        self.call(credentials, Method::POST, path, Some(body)).await
    }
}

fn cookies(headers: &HeaderMap) -> Vec<HeaderValue> {
    headers
        .get_all(header::SET_COOKIE)
        .iter()
        .cloned()
        .collect()
}
