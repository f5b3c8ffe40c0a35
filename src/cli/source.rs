//! Where a command gets its answers: a store opened directly, or a running control plane.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use leviathan::{
    api::{
        ControlPlane,
        client::ControlPlaneClient,
        token::{self, TOKEN_ENV, TokenFileError},
        wire::{
            AttemptDetail, AttemptsPage, AttemptsQuery, FailuresPage, FailuresQuery,
            InvalidateResponse,
        },
    },
    core::{
        EventStore, GraphSummary, Ledger,
        graph::{AttemptQuery, FailureQuery},
        id::AttemptId,
    },
    stores::{STORE_ENV, Stores, open_stores},
};

use super::error::CliError;

/// The environment variable naming the control plane commands ask by default.
pub(crate) const API_URL_ENV: &str = "LEVIATHAN_API_URL";
/// Page size when the operator does not give one.
const DEFAULT_LIMIT: usize = 50;
/// Events shown with one attempt.
const ATTEMPT_EVENTS: usize = 1000;

/// `--store` / `--api` / `--token-file`.
#[derive(clap::Args, Clone, Debug)]
pub(crate) struct SourceArgs {
    /// Work on this store directly: sled:PATH, postgres://…, memory:
    /// [default: $LEVIATHAN_STORE, else sled:~/.leviathan/data]
    #[arg(long, value_name = "URL", conflicts_with = "api")]
    pub(crate) store: Option<String>,
    /// Ask the control plane at this URL instead (e.g. http://127.0.0.1:8000)
    /// [default: $LEVIATHAN_API_URL when set and --store is not given]
    #[arg(long, value_name = "URL")]
    pub(crate) api: Option<String>,
    /// Token file used with --api when LEVIATHAN_CONTROL_PLANE_TOKEN is not set; `schedule
    /// --store` signs its workers' tokens with the keyring beside it
    /// [default: ~/.leviathan/control-plane-token]
    #[arg(long, value_name = "PATH", env = "LEVIATHAN_TOKEN_FILE")]
    pub(crate) token_file: Option<PathBuf>,
}

/// `--json`.
#[derive(clap::Args, Clone, Copy, Debug)]
pub(crate) struct OutputArgs {
    /// Print JSON (one document, or one event per line) instead of text
    #[arg(long)]
    pub(crate) json: bool,
}

/// An opened source.
pub(crate) enum Source {
    /// A store opened by this process.
    Store(Stores),
    /// A control plane's API.
    Api(ControlPlaneClient),
}

fn env_value(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl SourceArgs {
    /// `--api` (or `LEVIATHAN_API_URL` when no `--store` is given), else the store.
    pub(crate) async fn open(&self) -> Result<Source, CliError> {
        let api = match (&self.api, &self.store) {
            (Some(url), _) => Some(url.clone()),
            (None, None) => env_value(API_URL_ENV),
            (None, Some(_)) => None,
        };
        if let Some(url) = api {
            let client = client(&url, self.token_file.as_deref())?;
            // One authenticated call up front, so that a wrong URL or token is reported as such.
            client.head().await?;
            return Ok(Source::Api(client));
        }
        Ok(Source::Store(self.open_store().await?))
    }

    /// The store, for commands that work on a store only (`--api` is refused).
    pub(crate) async fn store_only(&self, command: &str) -> Result<Stores, CliError> {
        if self.api.is_some() {
            return Err(CliError::usage(format!(
                "`{command}` works on a store, not through the API: give --store URL (stop the control plane first when the store is sled)"
            )));
        }
        self.open_store().await
    }

    async fn open_store(&self) -> Result<Stores, CliError> {
        let url = self
            .store
            .clone()
            .or_else(|| env_value(STORE_ENV))
            .unwrap_or_else(|| "sled:".to_owned());
        Ok(open_stores(&url).await?)
    }
}

/// A client of the control plane at `url`, with the token from the environment or the file.
pub(crate) fn client(url: &str, token_file: Option<&Path>) -> Result<ControlPlaneClient, CliError> {
    let file = token_file
        .map(Path::to_owned)
        .or_else(token::default_token_file)
        .ok_or_else(|| {
            CliError::usage(format!(
                "no token: set {TOKEN_ENV} or give --token-file (HOME is unset, so there is no default token file)"
            ))
        })?;
    let resolved = token::resolve(std::env::var(TOKEN_ENV).ok(), &file, false).map_err(|e| match e {
        TokenFileError::NotFound { path } => CliError::usage(format!(
            "no token: set {TOKEN_ENV}, or give --token-file (nothing at {}; `leviathan serve` creates it on first start)",
            path.display()
        )),
        other => other.into(),
    })?;
    Ok(ControlPlaneClient::new(url, resolved.token.expose())?)
}

impl Source {
    /// The event log of this source (a control plane's through its API).
    pub(crate) fn event_store(&self) -> Arc<dyn EventStore> {
        match self {
            Self::Store(stores) => stores.events.clone(),
            Self::Api(client) => Arc::new(client.event_store()),
        }
    }

    /// The operations over this source.
    pub(crate) async fn plane(self) -> Result<Plane, CliError> {
        match self {
            Self::Store(stores) => {
                let ledger = Ledger::open(stores.events.clone(), stores.graphs.clone()).await?;
                Ok(Plane::Local(
                    ControlPlane::new(Arc::new(ledger), stores.artifacts.clone())
                        .with_bundles(stores.bundles.clone()),
                ))
            }
            Self::Api(client) => Ok(Plane::Remote(client)),
        }
    }
}

/// The control plane's queries, answered in process or by a server.
pub(crate) enum Plane {
    /// Over a store.
    Local(ControlPlane),
    /// Through the API.
    Remote(ControlPlaneClient),
}

impl Plane {
    pub(crate) async fn summary(&self) -> Result<GraphSummary, CliError> {
        Ok(match self {
            Self::Local(plane) => plane.summary().await?,
            Self::Remote(client) => client.graph_summary().await?,
        })
    }

    pub(crate) async fn attempts(&self, query: &AttemptsQuery) -> Result<AttemptsPage, CliError> {
        Ok(match self {
            Self::Local(plane) => {
                let query = AttemptQuery {
                    target: query.target.clone(),
                    status: query.status,
                    limit: query.limit.unwrap_or(DEFAULT_LIMIT).max(1),
                    cursor: query.cursor,
                };
                plane.attempts(&query).await?
            }
            Self::Remote(client) => client.attempts(query).await?,
        })
    }

    pub(crate) async fn attempt(&self, id: &AttemptId) -> Result<AttemptDetail, CliError> {
        Ok(match self {
            Self::Local(plane) => plane.attempt(id, ATTEMPT_EVENTS).await?,
            Self::Remote(client) => client.attempt(id).await?,
        })
    }

    pub(crate) async fn failures(&self, query: &FailuresQuery) -> Result<FailuresPage, CliError> {
        Ok(match self {
            Self::Local(plane) => {
                let query = FailureQuery {
                    target: query.target.clone(),
                    limit: query.limit.unwrap_or(DEFAULT_LIMIT).max(1),
                    cursor: query.cursor,
                };
                plane.failures(&query).await?
            }
            Self::Remote(client) => client.failures(query).await?,
        })
    }

    pub(crate) async fn invalidate(
        &self,
        id: &AttemptId,
        reason: &str,
    ) -> Result<InvalidateResponse, CliError> {
        match self {
            Self::Local(plane) => {
                let answer = plane.invalidate(id, reason, None, None).await?;
                plane.ledger().flush().await?;
                Ok(answer)
            }
            Self::Remote(client) => Ok(client.invalidate(id, reason).await?),
        }
    }
}
