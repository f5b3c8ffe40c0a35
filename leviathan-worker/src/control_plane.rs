//! Delivery to the control plane: artifacts first (`PUT /v1/artifacts/{sha256}`), then the
//! bundle (`POST /v1/events/ingest`). The [`ControlPlane`] trait is the boundary the pipeline
//! sees; it is implemented by the API crate's client, which retries transient failures.

use std::fmt;

use async_trait::async_trait;
use bytes::Bytes;
use leviathan_api::{
    client::{ClientError, ControlPlaneClient},
    wire::{BundleArtifact, IngestRequest},
};
use leviathan_core::{
    NewEvent, Sha256Digest, TargetId,
    executor::protocol::{CONTROL_PLANE_TOKEN, CONTROL_PLANE_URL},
};

use crate::{
    config::{ConfigError, ConfigProblem, WorkerConfig},
    journal::Artifact,
};

/// A bundle of events plus the artifacts they reference.
#[derive(Clone, Debug)]
pub(crate) struct Bundle<'a> {
    /// The target.
    pub target: &'a TargetId,
    /// `bundle-<attempt_id>-<step>-<digest of the events>`.
    pub bundle_id: String,
    /// The events, in order.
    pub events: &'a [NewEvent],
    /// The artifacts they reference (already uploaded).
    pub artifacts: &'a [Artifact],
}

/// A post that did not land, after the client's own retries.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub(crate) struct PostError {
    /// True when the control plane was unreachable or overloaded (the request may be repeated);
    /// false when it refused the request.
    pub transient: bool,
    /// What happened (never containing the token).
    pub message: String,
}

/// Where the worker reports.
#[async_trait]
pub(crate) trait ControlPlane: Send + Sync + fmt::Debug {
    /// Stores one artifact under its digest.
    async fn put_artifact(&self, sha256: &Sha256Digest, content: Bytes) -> Result<(), PostError>;

    /// Appends a bundle atomically; events already in the log are skipped as duplicates.
    async fn ingest(&self, bundle: &Bundle<'_>) -> Result<(), PostError>;

    /// Reads one artifact, checked against its digest (the attempt's base bundle).
    async fn get_artifact(&self, sha256: &Sha256Digest) -> Result<Bytes, PostError>;
}

/// Uploads every artifact, then posts the bundle.
pub(crate) async fn deliver(
    control_plane: &dyn ControlPlane,
    bundle: &Bundle<'_>,
) -> Result<(), PostError> {
    for artifact in bundle.artifacts {
        control_plane
            .put_artifact(&artifact.sha256, artifact.content.clone())
            .await
            .map_err(|e| PostError {
                transient: e.transient,
                message: format!(
                    "uploading artifact {} ({}): {e}",
                    artifact.name, artifact.sha256
                ),
            })?;
    }
    control_plane.ingest(bundle).await.map_err(|e| PostError {
        transient: e.transient,
        message: format!("posting {}: {e}", bundle.bundle_id),
    })
}

/// The API client for `config`, retrying as `config.control_plane_retry` says. A URL or token
/// the client cannot use is a configuration problem.
pub(crate) fn client(config: &WorkerConfig) -> Result<ControlPlaneClient, ConfigError> {
    ControlPlaneClient::new(
        &config.control_plane_url,
        config.control_plane_token.expose(),
    )
    .map(|client| client.with_retry(config.control_plane_retry))
    .map_err(|e| {
        let variable = match e {
            ClientError::InvalidToken(_) => CONTROL_PLANE_TOKEN,
            _ => CONTROL_PLANE_URL,
        };
        ConfigError {
            problems: vec![ConfigProblem {
                variable,
                problem: e.to_string(),
            }],
        }
    })
}

fn post_error(e: ClientError) -> PostError {
    let mut message = e.to_string();
    if let ClientError::Status { details, .. } = &e {
        for detail in details.iter().take(5) {
            message.push_str(&format!("; {detail}"));
        }
    }
    PostError {
        transient: e.is_transient(),
        message,
    }
}

#[async_trait]
impl ControlPlane for ControlPlaneClient {
    async fn put_artifact(&self, sha256: &Sha256Digest, content: Bytes) -> Result<(), PostError> {
        ControlPlaneClient::put_artifact(self, sha256, content)
            .await
            .map_err(post_error)
    }

    async fn ingest(&self, bundle: &Bundle<'_>) -> Result<(), PostError> {
        let request = IngestRequest {
            target: bundle.target.to_string(),
            bundle_id: bundle.bundle_id.clone(),
            events: bundle.events.to_vec(),
            artifacts: bundle
                .artifacts
                .iter()
                .map(|a| BundleArtifact {
                    sha256: a.sha256,
                    kind: a.kind.clone(),
                    uri: a.uri(),
                    size: a.content.len() as u64,
                    name: Some(a.name.clone()),
                })
                .collect(),
            expectations: Vec::new(),
        };
        ControlPlaneClient::ingest(self, &request)
            .await
            .map(drop)
            .map_err(post_error)
    }

    async fn get_artifact(&self, sha256: &Sha256Digest) -> Result<Bytes, PostError> {
        ControlPlaneClient::get_artifact(self, sha256)
            .await
            .map_err(post_error)
    }
}
