//! The state every route shares.

use std::{fmt, sync::Arc};

use async_trait::async_trait;
use leviathan_core::{
    ArtifactStore, Ledger, Timestamp, WorkerTokens, auth::token::Keyring, id::AttemptId,
    secret::Secret, store::BoxError,
};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::{
    authority::{Authority, minter::mint_in_process},
    config::ApiConfig,
    gateway::Gateway,
    keyring_file,
    metrics::Metrics,
    service::ControlPlane,
    throttle::Throttle,
};

/// What the router serves: the control plane, its configuration and a switch that ends open
/// event streams (so that a graceful shutdown does not wait for them forever). Cloning is cheap.
#[derive(Clone)]
pub struct ApiState {
    inner: Arc<Shared>,
}

struct Shared {
    plane: ControlPlane,
    config: ApiConfig,
    authority: Authority,
    throttle: Throttle,
    gateway: Option<Gateway>,
    artifact_writes: Semaphore,
    requests_in_progress: Arc<Semaphore>,
    streams_closed: CancellationToken,
}

impl ApiState {
    /// State over a ledger and an artifact store of any backend.
    pub fn new(ledger: Arc<Ledger>, artifacts: Arc<dyn ArtifactStore>, config: ApiConfig) -> Self {
        Self::from_control_plane(ControlPlane::new(ledger, artifacts), config)
    }

    /// State over an existing control plane.
    ///
    /// # Panics
    ///
    /// Without a keyring in `config`, when the operating system cannot give the random bytes
    /// of a fresh signing key.
    pub fn from_control_plane(plane: ControlPlane, config: ApiConfig) -> Self {
        let keyring = config.keyring.clone().unwrap_or_else(|| {
            // Nothing can be authenticated without randomness; there is no serving on.
            #[allow(clippy::expect_used)]
            let key = keyring_file::generate_key(Timestamp::now())
                .expect("random bytes for a signing key");
            Keyring::new(key)
        });
        let authority = Authority::new(config.token.clone(), keyring, config.keyring_file.clone());
        let limits = &config.limits;
        let artifact_writes = Semaphore::new(limits.artifact_writes.max(1));
        let requests_in_progress = Arc::new(Semaphore::new(limits.concurrent_requests.max(1)));
        let throttle = Throttle::new(
            limits.requests_per_second_per_principal,
            limits.request_burst_per_principal,
            limits.streams_per_principal,
        );
        let gateway = config.gateway.clone().and_then(|gateway| {
            Gateway::new(gateway)
                .inspect_err(|error| tracing::error!(%error, "the model gateway has no HTTP client; it refuses every call"))
                .ok()
        });
        Self {
            inner: Arc::new(Shared {
                plane,
                config,
                authority,
                throttle,
                gateway,
                artifact_writes,
                requests_in_progress,
                streams_closed: CancellationToken::new(),
            }),
        }
    }

    /// The operations.
    pub fn control_plane(&self) -> &ControlPlane {
        &self.inner.plane
    }

    /// The configuration.
    pub fn config(&self) -> &ApiConfig {
        &self.inner.config
    }

    /// The credentials requests are authenticated with, and tokens signed with.
    pub fn authority(&self) -> &Authority {
        &self.inner.authority
    }

    /// Permits to write an uploaded artifact into the store (each holds it in memory meanwhile).
    pub(crate) fn artifact_writes(&self) -> &Semaphore {
        &self.inner.artifact_writes
    }

    /// Permits for requests in progress, shared by the API and the console (one limit for the
    /// process, whichever router a request came through).
    pub(crate) fn requests_in_progress(&self) -> &Arc<Semaphore> {
        &self.inner.requests_in_progress
    }

    /// The per-principal limits.
    pub(crate) fn throttle(&self) -> &Throttle {
        &self.inner.throttle
    }

    /// The model gateway, when configured.
    pub(crate) fn gateway(&self) -> Option<&Gateway> {
        self.inner.gateway.as_ref()
    }

    /// The counters.
    pub fn metrics(&self) -> &Metrics {
        self.inner.plane.metrics()
    }

    /// Ends every open event stream, now and for streams opened later. Call it when shutting
    /// down: a server waiting for in-flight requests would otherwise wait for streams forever.
    pub fn close_streams(&self) {
        self.inner.streams_closed.cancel();
    }

    pub(crate) fn streams_closed(&self) -> CancellationToken {
        self.inner.streams_closed.clone()
    }
}

/// A scheduler embedded in the control plane mints its workers' tokens in process, as a
/// scheduler, with the same keyring and records as `POST /v1/attempts/{id}/token`.
#[async_trait]
impl WorkerTokens for ApiState {
    async fn mint(&self, attempt: &AttemptId, expires: Timestamp) -> Result<Secret, BoxError> {
        mint_in_process(
            self.authority(),
            self.control_plane().ledger(),
            attempt,
            expires,
        )
        .await
    }
}

impl fmt::Debug for ApiState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiState")
            .field("plane", &self.inner.plane)
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}
