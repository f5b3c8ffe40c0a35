//! The operator console: server-rendered HTML pages over the control plane, live over the event
//! stream, signed in with a reader (or higher) token held in a session cookie.
//!
//! [`router`] is a separate [`Router`] so an embedder can mount it where it likes (`leviathan
//! serve` mounts it at `/ui`); tell it the prefix with [`ConsoleConfig::base`] so its links
//! and its cookie's path match.

mod assets;
mod error;
mod live;
mod pages;
mod session;
mod view;

use std::sync::Arc;

use axum::{
    Router,
    extract::Request,
    http::{HeaderName, HeaderValue, header},
    middleware::{self, Next},
    response::Response,
    routing::{get, post},
};

pub use self::session::SESSION_COOKIE;
use self::{error::ConsoleError, session::Sessions};
use crate::state::ApiState;

/// How the console is mounted and how its cookie is set.
#[derive(Clone, Debug)]
pub struct ConsoleConfig {
    /// The path the router is nested under, without a trailing slash (e.g. `/ui`).
    pub base: String,
    /// Mark the session cookie `Secure` (set it when the console is served over TLS).
    pub secure_cookie: bool,
    /// How long a session lasts without signing in again.
    pub session_lifetime: std::time::Duration,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self {
            base: "/ui".to_owned(),
            secure_cookie: false,
            session_lifetime: std::time::Duration::from_secs(12 * 3600),
        }
    }
}

/// What every console handler shares.
#[derive(Clone)]
pub(crate) struct Console {
    pub(crate) api: ApiState,
    pub(crate) config: Arc<ConsoleConfig>,
    pub(crate) sessions: Arc<Sessions>,
    pub(crate) last_verification: Arc<std::sync::Mutex<Option<pages::chain::Verification>>>,
    /// Held while "Verify now" reads the whole chain, so that only one runs at a time.
    pub(crate) verifying: Arc<tokio::sync::Mutex<()>>,
}

impl Console {
    /// The control plane, its graph caught up with the log (pages show what is there now, also
    /// what another replica appended).
    pub(crate) async fn caught_up(&self) -> Result<&crate::service::ControlPlane, ConsoleError> {
        let plane = self.api.control_plane();
        plane
            .ledger()
            .catch_up()
            .await
            .map_err(crate::service::ControlPlaneError::from)?;
        Ok(plane)
    }

    /// `path` under the console's base (the overview, `/`, is the base itself: a nested
    /// router's root has no trailing slash).
    pub(crate) fn link(&self, path: &str) -> String {
        match path {
            "/" if !self.config.base.is_empty() => self.config.base.clone(),
            _ => format!("{}{path}", self.config.base),
        }
    }
}

/// The console's pages, assets and actions, to `nest` under `config.base`.
///
/// Pages need a session (else they redirect to the sign-in form); actions need an operator
/// session and the session's CSRF token. Every response carries a strict
/// `Content-Security-Policy` (scripts and styles from this origin only, no framing).
pub fn router(api: ApiState, config: ConsoleConfig) -> Router {
    let console = Console {
        api,
        sessions: Arc::new(Sessions::new(config.session_lifetime)),
        config: Arc::new(config),
        last_verification: Arc::default(),
        verifying: Arc::default(),
    };
    let signed_in = Router::new()
        .route("/", get(pages::overview::page))
        .route("/attempts/{attempt_id}", get(pages::attempt::page))
        .route(
            "/attempts/{attempt_id}/invalidate",
            post(pages::attempt::invalidate),
        )
        .route(
            "/attempts/{attempt_id}/cancel",
            post(pages::attempt::cancel),
        )
        .route("/tasks", get(pages::lists::tasks))
        .route("/failures", get(pages::lists::failures))
        .route("/pulls", get(pages::lists::pulls))
        .route("/events", get(pages::events::page))
        .route("/events/{seq}", get(pages::events::one))
        .route("/chain", get(pages::chain::page))
        .route("/chain/verify", post(pages::chain::verify))
        .route("/spend", get(pages::spend::page))
        .route("/live", get(live::stream))
        .route("/sign-out", post(session::sign_out))
        .route_layer(middleware::from_fn_with_state(
            console.clone(),
            session::require,
        ));
    Router::new()
        .route(
            "/sign-in",
            get(session::sign_in_form).post(session::sign_in),
        )
        .route("/assets/{name}", get(assets::serve))
        .merge(signed_in)
        .layer(middleware::from_fn(protect))
        // One limit on requests in progress for the process, the API's and the console's alike.
        .layer(middleware::from_fn_with_state(
            console.api.requests_in_progress().clone(),
            crate::routes::admit,
        ))
        .with_state(console)
}

/// The headers that keep every page to its own origin: no inline or foreign script, no
/// framing, no MIME sniffing, no referrer leaking ids to links out.
async fn protect(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    let csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
               connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(csp),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}
