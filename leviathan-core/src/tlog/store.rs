//! What the tree needs from a backend: tiles, event hashes and recorded checkpoints.

use std::{fmt, ops::Range};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::{digest::Sha256Digest, store::EventStoreError};

/// One read a root, a proof or a [`super::Frontier`] needs.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum TileRead {
    /// The full tiles `indexes` of tile level `level`, in order: 16 hashes each.
    Tiles {
        /// Tile level.
        level: u8,
        /// Tile indexes.
        indexes: Range<u64>,
    },
    /// The chain hashes of the events at leaf indexes `indexes` (`seq` = index + 1), in order.
    EventHashes {
        /// Leaf indexes.
        indexes: Range<u64>,
    },
}

/// A signed checkpoint as recorded: the tree size it commits to and the signed note (the
/// log's signature, then any witness cosignatures).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredCheckpoint {
    /// Leaves the checkpoint covers.
    pub size: u64,
    /// The C2SP signed note.
    pub note: String,
}

/// What can go wrong reading the tree.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TreeError {
    /// A tree larger than the log was asked for.
    #[error("a tree of {requested} leaves was asked for, but the log holds {size} events")]
    BeyondLog {
        /// The size asked for.
        requested: u64,
        /// The log's size.
        size: u64,
    },
    /// A leaf outside the tree was asked for.
    #[error("leaf {index} (seq {}) is not in a tree of {size} leaves", index + 1)]
    LeafOutside {
        /// The leaf index asked for.
        index: u64,
        /// The tree's size.
        size: u64,
    },
    /// A consistency proof was asked from a larger tree to a smaller one.
    #[error(
        "a consistency proof goes from an older (smaller) tree to a newer one; asked from {from} to {to}"
    )]
    SizesOutOfOrder {
        /// The older size asked for.
        from: u64,
        /// The newer size asked for.
        to: u64,
    },
    /// The store failed, or what it holds is damaged.
    #[error(transparent)]
    Store(#[from] EventStoreError),
}

/// The log's Merkle tree as a backend keeps it, and the checkpoints signed over it.
///
/// Backends write full tiles in the same transaction as the events that fill them (see
/// [`super::Frontier`]); the functions of [`super`] ([`super::root`],
/// [`super::inclusion_proof`], [`super::consistency_proof`]) compute everything else.
#[async_trait]
pub trait TreeStore: Send + Sync + fmt::Debug + 'static {
    /// Leaves in the tree: the number of events readers can see.
    async fn tree_size(&self) -> Result<u64, TreeError>;

    /// Answers each read in order. Everything asked for exists in a tree of the size
    /// [`TreeStore::tree_size`] last returned; a missing tile or event is corruption.
    async fn read_tiles(&self, reads: &[TileRead]) -> Result<Vec<Vec<Sha256Digest>>, TreeError>;

    /// Records a signed checkpoint; recording one of the same size again replaces its note
    /// (with more cosignatures).
    async fn record_checkpoint(&self, checkpoint: &StoredCheckpoint) -> Result<(), TreeError>;

    /// The recorded checkpoint of the largest tree, if any.
    async fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, TreeError>;
}
