//! The verifiable log: an RFC 9162 Merkle tree over the events in `seq` order, its signed
//! checkpoints, and inclusion and consistency proofs that anyone can check offline.
//!
//! - The leaf of event `seq` is `SHA-256(0x00 ‖ hash)`, `hash` being the event's 32 chain-hash
//!   bytes; interior nodes are `SHA-256(0x01 ‖ left ‖ right)`. Leaf index = `seq - 1`.
//! - Backends keep the tree as [`Tile`]s: the 16 hashes of one level of a complete subtree of
//!   height 4, written once, in the append's own transaction, when they become full (about one
//!   tile of 512 bytes per 16 events, see [`Frontier`]). A root or a proof reads O(log n) tiles
//!   through a [`TreeStore`]; the partial tiles at the right edge are computed from the full
//!   tiles below them and, at the bottom, from the last (at most 15) events' hashes.
//! - The proof algorithms (RFC 6962/9162 audit paths and consistency proofs) and their checks
//!   are `tlog_tiles`' (a port of Go's `sumdb/tlog`); this module maps its hash indexes onto
//!   tiles. Checkpoints are C2SP `tlog-checkpoint` texts in C2SP `signed-note`s
//!   ([`checkpoint`]).

mod bundle;
pub mod checkpoint;
pub mod cosignature;
mod frontier;
mod hash;
mod proof;
mod reader;
mod store;
mod tile;

pub use bundle::{BundleError, ProofBundle, check_consistency};
pub use frontier::Frontier;
pub use hash::{EMPTY_ROOT, leaf_hash, node_hash};
pub use proof::{ConsistencyProof, InclusionProof, MAX_PROOF_HASHES, ProofError};
pub use reader::{consistency_proof, inclusion_proof, root};
pub use store::{StoredCheckpoint, TileRead, TreeError, TreeStore};
pub use tile::{TILE_HEIGHT, TILE_WIDTH, Tile};
