//! Signing in: a token (reader or higher) exchanged for a random session id in an `HttpOnly`,
//! `SameSite=Strict` cookie; each request re-authenticates the token, so a revoked or expired
//! token ends its sessions at once. Actions carry the session's CSRF token.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use axum::{
    Form,
    extract::{FromRequestParts, Request, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header, request::Parts},
    middleware::Next,
    response::{IntoResponse, Redirect, Response},
};
use headers::{Cookie, HeaderMapExt};
use leviathan_core::{
    Sha256Digest, Timestamp,
    auth::{Action, Principal, authorize},
};
use maud::html;
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::{Console, error::ConsoleError, view};
use crate::authority::Unauthenticated;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "leviathan_session";

/// Sessions held at once; signing in beyond it first drops the expired ones.
const MAX_SESSIONS: usize = 10_000;

/// The signed-in sessions, keyed by the SHA-256 of their cookie value (the value itself is
/// kept nowhere).
pub(crate) struct Sessions {
    lifetime: Duration,
    map: Mutex<HashMap<Sha256Digest, Session>>,
}

struct Session {
    token: String,
    csrf: String,
    expires: Instant,
}

impl Sessions {
    pub(crate) fn new(lifetime: Duration) -> Self {
        Self {
            lifetime,
            map: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Sha256Digest, Session>> {
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A new session for `token`: its cookie value, or `None` when the table is full.
    fn open(&self, token: String) -> Option<String> {
        let id = random_hex();
        let mut map = self.lock();
        if map.len() >= MAX_SESSIONS {
            let now = Instant::now();
            map.retain(|_, s| s.expires > now);
            if map.len() >= MAX_SESSIONS {
                return None;
            }
        }
        let session = Session {
            token,
            csrf: random_hex(),
            expires: Instant::now() + self.lifetime,
        };
        map.insert(Sha256Digest::of(id.as_bytes()), session);
        Some(id)
    }

    /// The token and CSRF token of a live session.
    fn find(&self, id: &str) -> Option<(String, String)> {
        let key = Sha256Digest::of(id.as_bytes());
        let mut map = self.lock();
        match map.get(&key) {
            Some(s) if s.expires > Instant::now() => Some((s.token.clone(), s.csrf.clone())),
            Some(_) => {
                map.remove(&key);
                None
            }
            None => None,
        }
    }

    fn close(&self, id: &str) {
        self.lock().remove(&Sha256Digest::of(id.as_bytes()));
    }
}

fn random_hex() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// Who is looking: the principal of the session's token, and the session's CSRF token.
#[derive(Clone, Debug)]
pub(crate) struct Viewer {
    pub(crate) principal: Principal,
    pub(crate) csrf: String,
    session: String,
}

impl Viewer {
    /// Whether the viewer may do `action`.
    pub(crate) fn may(&self, action: Action<'_>) -> bool {
        authorize(&self.principal, action).is_ok()
    }

    /// Refuses a form whose CSRF token is not this session's.
    pub(crate) fn check_csrf(&self, presented: &str) -> Result<(), ConsoleError> {
        if bool::from(presented.as_bytes().ct_eq(self.csrf.as_bytes())) {
            Ok(())
        } else {
            Err(ConsoleError::Forbidden(
                "the form's CSRF token is missing or not this session's; reload the page".into(),
            ))
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Viewer {
    type Rejection = ConsoleError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Viewer>()
            .cloned()
            .ok_or_else(|| ConsoleError::Unauthenticated("sign in first".into()))
    }
}

/// A request from another site (a form posted from elsewhere) by its `Sec-Fetch-Site` or
/// `Origin` header; clients that send neither are not browsers.
fn cross_site(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        return !matches!(site.as_bytes(), b"same-origin" | b"none");
    }
    let (Some(origin), Some(host)) = (headers.get(header::ORIGIN), headers.get(header::HOST))
    else {
        return false;
    };
    let origin = origin.to_str().unwrap_or_default();
    let authority = origin.split_once("://").map_or("", |(_, rest)| rest);
    authority.as_bytes() != host.as_bytes()
}

/// Lets a request through with a live session whose token still authenticates and may read;
/// a page request without one is sent to the sign-in form, anything else is refused.
pub(crate) async fn require(
    State(console): State<Console>,
    mut request: Request,
    next: Next,
) -> Response {
    if request.method() != Method::GET && cross_site(request.headers()) {
        return ConsoleError::Forbidden("cross-site requests are refused".into()).into_response();
    }
    let id = request
        .headers()
        .typed_get::<Cookie>()
        .and_then(|c| c.get(SESSION_COOKIE).map(str::to_owned));
    let found = id
        .as_deref()
        .and_then(|id| console.sessions.find(id))
        .map(|(token, csrf)| (token, csrf, id.unwrap_or_default()));
    let Some((token, csrf, session)) = found else {
        return signed_out(&console, request.method());
    };
    let principal = match authenticate(&console, &token).await {
        Ok(principal) if authorize(&principal, Action::Read).is_ok() => principal,
        _ => {
            console.sessions.close(&session);
            return signed_out(&console, request.method());
        }
    };
    // The same request rate as the token has on the API: a page is a request.
    if let Err(wait) = crate::routes::over_rate(&console.api, &principal) {
        let why = format!(
            "token `{}` is over its request rate; retry later",
            principal.token_id
        );
        return ConsoleError::TooManyRequests(why, wait.as_secs().max(1)).into_response();
    }
    request.extensions_mut().insert(Viewer {
        principal,
        csrf,
        session,
    });
    next.run(request).await
}

/// The principal `token` authenticates as now, as the API's bearer check does.
async fn authenticate(console: &Console, token: &str) -> Result<Principal, Unauthenticated> {
    let plane = console.api.control_plane();
    let head = plane.ledger().checkpoint().await.map_or(0, |h| h.seq);
    console
        .api
        .authority()
        .authenticate(token, plane.events().as_ref(), head, Timestamp::now())
        .await
}

fn signed_out(console: &Console, method: &Method) -> Response {
    if method == Method::GET {
        Redirect::to(&console.link("/sign-in")).into_response()
    } else {
        ConsoleError::Unauthenticated("the session has ended; sign in again".into()).into_response()
    }
}

pub(crate) async fn sign_in_form(State(console): State<Console>) -> Response {
    form(&console, None).into_response()
}

fn form(console: &Console, refusal: Option<&str>) -> maud::Markup {
    let body = html! {
        form.signin method="post" action=(console.link("/sign-in")) {
            h1 { "Sign in" }
            @if let Some(why) = refusal { p.error role="alert" { (why) } }
            label for="token" { "Token (reader, operator or admin)" }
            input #token type="password" name="token" autocomplete="off" required autofocus;
            button type="submit" { "Sign in" }
        }
    };
    view::bare(console, "Sign in", body)
}

#[derive(Deserialize)]
pub(crate) struct SignIn {
    token: String,
}

pub(crate) async fn sign_in(
    State(console): State<Console>,
    headers: HeaderMap,
    Form(SignIn { token }): Form<SignIn>,
) -> Response {
    if cross_site(&headers) {
        return ConsoleError::Forbidden("cross-site sign-in is refused".into()).into_response();
    }
    let token = token.trim().to_owned();
    let refused = match authenticate(&console, &token).await {
        Ok(p) if authorize(&p, Action::Read).is_ok() => None,
        Ok(_) => Some("this token's role may not read the control plane"),
        Err(_) => Some("the token was refused"),
    };
    if let Some(why) = refused {
        return (StatusCode::UNAUTHORIZED, form(&console, Some(why))).into_response();
    }
    let Some(id) = console.sessions.open(token) else {
        return ConsoleError::Unavailable("too many sessions are open; try again later".into())
            .into_response();
    };
    let lifetime = console.config.session_lifetime.as_secs();
    let mut response = Redirect::to(&console.link("/")).into_response();
    set_cookie(&console, &mut response, &id, lifetime);
    response
}

fn set_cookie(console: &Console, response: &mut Response, value: &str, max_age: u64) {
    let secure = if console.config.secure_cookie {
        "; Secure"
    } else {
        ""
    };
    let path = if console.config.base.is_empty() {
        "/"
    } else {
        &console.config.base
    };
    let cookie = format!(
        "{SESSION_COOKIE}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"
    );
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

#[derive(Deserialize)]
pub(crate) struct CsrfForm {
    csrf: String,
}

pub(crate) async fn sign_out(
    State(console): State<Console>,
    viewer: Viewer,
    Form(form): Form<CsrfForm>,
) -> Result<Response, ConsoleError> {
    viewer.check_csrf(&form.csrf)?;
    console.sessions.close(&viewer.session);
    let mut response = Redirect::to(&console.link("/sign-in")).into_response();
    set_cookie(&console, &mut response, "", 0);
    Ok(response)
}
