//! The backend traits: one small object-safe trait per concern, each with its own error enum.
//!
//! - [`EventStore`]: the append-only, hash-chained log.
//! - [`GraphStore`]: the persisted projection and its checkpoint.
//! - [`ArtifactStore`]: content-addressed blobs.
//! - [`BundleIndex`]: bundle ids bound to their content.
//!
//! Backends share the pure parts ([`sequencer`], [`follow`]) so that they differ only in I/O.

mod append;
mod artifact;
mod bundle;
mod error;
mod event_store;
mod expected_version;
mod follow;
mod graph_store;
pub mod sequencer;

pub use append::{AppendReceipt, AppendRequest, PreparedAppend, PreparedEvent};
pub use artifact::{ArtifactError, ArtifactStore, StoredArtifact, verify_content};
pub use bundle::{BundleBinding, BundleIndex};
pub use error::{BoxError, EventRejection, EventStoreError};
pub use event_store::{EventStore, EventStream};
pub use expected_version::ExpectedVersion;
pub use follow::follow;
pub use graph_store::{GraphStore, GraphStoreError, delta_fits};
