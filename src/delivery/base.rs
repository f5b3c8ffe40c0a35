//! The input half of safe delivery: the trusted side fetches the target's base branch with its
//! token and publishes that one commit as a git bundle in the content-addressed artifact store,
//! so a worker can clone the exact base with its attempt token and no forge credential
//! ([`leviathan_worker::Git::clone_bundle`]).

use bytes::Bytes;
use leviathan_core::{
    ArtifactError, ArtifactStore, secret::Secret, store::StoredArtifact, target::TargetConfig,
};
use leviathan_worker::{GitError, config::GitIdentity};

use super::git::Scratch;

/// The base commit of an attempt and the bundle that holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishedBase {
    /// The commit the base branch was at.
    pub commit: String,
    /// The bundle (branch `default_branch` at `commit`, with its history) as stored.
    pub bundle: StoredArtifact,
}

/// Why the base could not be published.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BaseError {
    /// Fetching or bundling failed.
    #[error("cannot bundle the base branch: {0}")]
    Git(#[from] GitError),
    /// The artifact store refused the bundle.
    #[error("cannot store the base bundle: {0}")]
    Store(#[from] ArtifactError),
}

/// Fetches `target`'s default branch with `token`, bundles its tip and stores the bundle.
pub async fn publish_base(
    target: &TargetConfig,
    token: &Secret,
    identity: &GitIdentity,
    artifacts: &dyn ArtifactStore,
) -> Result<PublishedBase, BaseError> {
    let scratch = Scratch::init(&target.repo_url, token, identity).await?;
    scratch.fetch(&target.default_branch, None).await?;
    let (commit, bytes) = scratch.bundle_base(&target.default_branch).await?;
    let bundle = artifacts.put(Bytes::from(bytes)).await?;
    Ok(PublishedBase { commit, bundle })
}
