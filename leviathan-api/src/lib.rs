//! Leviathan's control plane over HTTP.
//!
//! Features: `server` gives the router, [`ControlPlane`] and the metrics (axum); `client` gives
//! the typed client (reqwest, no axum). Without either, the crate is the wire: the JSON shapes
//! ([`wire`]), the error codes ([`ErrorCode`]), the bearer token and its file ([`token`]).
//!
//! - [`router`]: an axum [`Router`](axum::Router) over any backend (built from the core traits),
//!   ready to serve or to mount into another service. Bearer authentication (the static admin
//!   token, compared in constant time, or signed role tokens, see [`authority`]), every route
//!   authorised by `leviathan_core::auth::authorize`, JSON errors with stable codes, limits on
//!   bodies, bundles and time.
//! - [`ControlPlane`]: the same operations without HTTP, for the CLI and for in-process use.
//! - [`client::ControlPlaneClient`]: a typed client for every route, with retries, and
//!   [`client::RemoteEventStore`], the control plane as an [`leviathan_core::EventStore`].
//! - [`token`]: where the bearer token comes from (environment or a private token file).
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use leviathan_api::{ApiConfig, ApiState, BearerToken, router};
//! use leviathan_core::{Ledger, memory::{MemoryArtifactStore, MemoryEventStore, MemoryGraphStore}};
//!
//! let ledger = Ledger::open(Arc::new(MemoryEventStore::new()), Arc::new(MemoryGraphStore::new())).await?;
//! let state = ApiState::new(
//!     Arc::new(ledger),
//!     Arc::new(MemoryArtifactStore::new()),
//!     ApiConfig::new(BearerToken::generate()?),
//! );
//! let app = axum::Router::new().nest("/control", router(state));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8000").await?;
//! axum::serve(listener, app).await?;
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

#[cfg(feature = "server")]
pub mod authority;
#[cfg(feature = "client")]
pub mod client;
mod code;
mod config;
#[cfg(feature = "console")]
pub mod console;
#[cfg(feature = "server")]
pub mod gateway;
pub mod keyring_file;
pub mod log_key;
#[cfg(feature = "server")]
mod metrics;
mod private_file;
#[cfg(feature = "server")]
mod routes;
#[cfg(feature = "server")]
mod service;
#[cfg(feature = "server")]
mod state;
#[cfg(feature = "server")]
mod throttle;
pub mod token;
pub mod wire;

pub use code::ErrorCode;
pub use config::{ApiConfig, BearerToken, Limits, TokenError};
#[cfg(feature = "server")]
pub use metrics::Metrics;
#[cfg(feature = "server")]
pub use routes::{ApiError, router};
#[cfg(feature = "server")]
pub use service::{
    AttemptAction, ControlPlane, ControlPlaneError, Leaf, MissingArtifact, OPERATOR_ACTOR,
    sign_checkpoints,
};
#[cfg(feature = "server")]
pub use state::ApiState;
