//! What a control-plane operation answers instead of a result, by meaning. The router maps each
//! to an HTTP status and an [`ErrorCode`]; in-process callers (the CLI) read the code and the
//! message directly.

use leviathan_core::{
    ArtifactError, EventStoreError, GraphStoreError, LedgerError, Sha256Digest,
    auth::Forbidden,
    id::{AttemptId, EventId},
    store::BoxError,
    tlog::cosignature::CosignatureError,
};

use crate::code::ErrorCode;

/// An artifact a bundle references but the artifact store does not hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MissingArtifact {
    /// Its address.
    pub sha256: Sha256Digest,
    /// Where the bundle references it (`artifacts[2]`).
    pub referenced_by: String,
}

/// Why a [`ControlPlane`](super::ControlPlane) operation did not succeed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlPlaneError {
    /// No attempt with this id.
    #[error("no attempt with id `{0}`")]
    AttemptNotFound(AttemptId),
    /// No event with this id.
    #[error("no event with id `{0}`")]
    EventNotFound(EventId),
    /// The bundle references artifacts that are not stored; nothing was appended.
    #[error(
        "{} referenced artifact(s) are not stored; upload them with PUT /v1/artifacts/{{sha256}} first; nothing was appended",
        .0.len()
    )]
    ArtifactsMissing(Vec<MissingArtifact>),
    /// A field of the request is unusable.
    #[error("field `{field}`: {problem}")]
    InvalidRequest {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// The event id a retry carries is already used by another event.
    #[error("event id `{event_id}` is already used by seq {seq} for another event")]
    EventIdTaken {
        /// The id.
        event_id: EventId,
        /// The event that uses it.
        seq: u64,
    },
    /// The bundle id was already ingested with other content; nothing was appended.
    #[error(
        "bundle `{bundle_id}` was already ingested with other content (a bundle id names one content; send new content under a new id); nothing was appended"
    )]
    BundleConflict {
        /// The bundle id.
        bundle_id: String,
    },
    /// The attempt's state does not allow an operator's action on it (e.g. invalidating an
    /// invalidated attempt, cancelling an ended one).
    #[error("attempt `{attempt_id}` cannot be {action}: {reason}")]
    AttemptActionRefused {
        /// The attempt.
        attempt_id: AttemptId,
        /// What was refused (`invalidated`, `cancelled`).
        action: &'static str,
        /// Why, as the projection says.
        reason: String,
    },
    /// No signed checkpoint can be served.
    #[error("no checkpoint: {reason}")]
    NoCheckpoint {
        /// Why (no log, no key, nothing signed yet).
        reason: &'static str,
    },
    /// A witness's cosignature was refused; nothing was recorded.
    #[error("cosignature refused: {0}")]
    CosignatureRefused(CosignatureError),
    /// No token has this id, nor is a live token of this name.
    #[error(
        "no token with id or name `{0}` (the static admin token is changed with `leviathan token rotate`)"
    )]
    TokenNotFound(String),
    /// A live token already has this name.
    #[error("a live token is already named `{0}`; revoke it or choose another name")]
    TokenNameTaken(String),
    /// The attempt has ended: it needs no worker token.
    #[error("attempt `{attempt_id}` has ended ({status}); it gets no worker token")]
    AttemptEnded {
        /// The attempt.
        attempt_id: AttemptId,
        /// Its status.
        status: String,
    },
    /// The principal's role or scope does not allow it; nothing was changed.
    #[error(transparent)]
    Forbidden(#[from] Forbidden),
    /// A proof was asked for a leaf or size outside the log's tree.
    #[error("{0}")]
    OutsideTree(String),
    /// The ledger refused or failed.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// The event store refused or failed.
    #[error(transparent)]
    EventStore(#[from] EventStoreError),
    /// The artifact store refused or failed.
    #[error(transparent)]
    Artifacts(#[from] ArtifactError),
    /// Something that should not happen did (a task panicked, an appended event vanished).
    #[error("{context}: {source}")]
    Internal {
        /// What was being done.
        context: &'static str,
        /// What happened.
        #[source]
        source: BoxError,
    },
}

impl ControlPlaneError {
    /// True when the request was refused as it is (retrying it unchanged cannot succeed), so
    /// nothing it asked for happened.
    pub(crate) fn is_refusal(&self) -> bool {
        matches!(
            self.code(),
            ErrorCode::ValidationFailed
                | ErrorCode::EventConflict
                | ErrorCode::WrongExpectedVersion
                | ErrorCode::ArtifactsMissing
                | ErrorCode::InvalidRequest
        )
    }

    /// The stable code of this error, as the API answers it.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::AttemptNotFound(_) => ErrorCode::AttemptNotFound,
            Self::EventNotFound(_) => ErrorCode::EventNotFound,
            Self::ArtifactsMissing(_) => ErrorCode::ArtifactsMissing,
            Self::InvalidRequest { .. } => ErrorCode::InvalidRequest,
            Self::EventIdTaken { .. } => ErrorCode::EventConflict,
            Self::BundleConflict { .. } => ErrorCode::BundleConflict,
            Self::AttemptActionRefused { .. } => ErrorCode::InvalidState,
            Self::NoCheckpoint { .. } => ErrorCode::NoCheckpoint,
            Self::CosignatureRefused(CosignatureError::Stale { .. }) => ErrorCode::InvalidState,
            Self::CosignatureRefused(_) => ErrorCode::InvalidRequest,
            Self::OutsideTree(_) => ErrorCode::OutsideTree,
            Self::Forbidden(_) => ErrorCode::Forbidden,
            Self::TokenNotFound(_) => ErrorCode::TokenNotFound,
            Self::TokenNameTaken(_) | Self::AttemptEnded { .. } => ErrorCode::InvalidState,
            Self::Ledger(error) => ledger_code(error),
            Self::EventStore(error) => event_store_code(error),
            Self::Artifacts(error) => artifact_code(error),
            Self::Internal { .. } => ErrorCode::Internal,
        }
    }
}

fn ledger_code(error: &LedgerError) -> ErrorCode {
    match error {
        LedgerError::Rejected(_) => ErrorCode::ValidationFailed,
        LedgerError::WrongExpectedVersion { .. } => ErrorCode::WrongExpectedVersion,
        LedgerError::EventStore(error) => event_store_code(error),
        LedgerError::GraphStore(error) => graph_store_code(error),
        _ => ErrorCode::Internal,
    }
}

fn event_store_code(error: &EventStoreError) -> ErrorCode {
    match error {
        EventStoreError::Invalid { .. } => ErrorCode::ValidationFailed,
        EventStoreError::Conflict { .. } => ErrorCode::EventConflict,
        EventStoreError::WrongExpectedVersion { .. } => ErrorCode::WrongExpectedVersion,
        EventStoreError::Corrupt { .. } => ErrorCode::StoreCorrupt,
        EventStoreError::Unavailable { .. } | EventStoreError::Locked { .. } => {
            ErrorCode::StoreUnavailable
        }
        _ => ErrorCode::Internal,
    }
}

fn graph_store_code(error: &GraphStoreError) -> ErrorCode {
    if error.is_transient() {
        ErrorCode::StoreUnavailable
    } else {
        ErrorCode::Internal
    }
}

fn artifact_code(error: &ArtifactError) -> ErrorCode {
    match error {
        ArtifactError::NotFound(_) => ErrorCode::ArtifactNotFound,
        ArtifactError::DigestMismatch { .. } => ErrorCode::DigestMismatch,
        ArtifactError::Corrupt { .. } => ErrorCode::StoreCorrupt,
        ArtifactError::Unavailable { .. } => ErrorCode::StoreUnavailable,
        _ => ErrorCode::Internal,
    }
}
