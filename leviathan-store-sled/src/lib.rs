//! Leviathan's embedded default backend: the event log, the persisted graph and the artifacts of
//! one control plane in one local directory, on [sled] 0.34.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use leviathan_store_sled::{Durability, SledOptions, SledStore};
//!
//! // Every append is on disk before it is acknowledged (the default).
//! let store = SledStore::open("/var/lib/leviathan")?;
//! let ledger = leviathan_core::Ledger::open(store.events(), store.graphs()).await?;
//! let artifacts = store.artifacts();
//! # drop((ledger, artifacts));
//!
//! // Or trade a bounded loss window for latency.
//! let options = SledOptions {
//!     durability: Durability::Periodic { every: std::time::Duration::from_millis(100) },
//!     ..SledOptions::default()
//! };
//! let relaxed = SledStore::open_with("/var/lib/leviathan-scratch", options)?;
//! # drop(relaxed);
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! sled keeps its own files (`conf`, `db`, `blobs/`, `snap.*`) directly in the directory given to
//! [`SledStore::open`], with these trees:
//!
//! | tree              | key                      | value                                         |
//! |-------------------|--------------------------|-----------------------------------------------|
//! | `events`          | `seq` (u64 big-endian)   | stored hash (32 bytes) ‖ the event's canonical bytes |
//! | `event_ids`       | `event_id` (UTF-8)       | `seq` (u64 big-endian)                        |
//! | `streams`         | stream id (UTF-8)        | stream version (u64 big-endian)               |
//! | `meta`            | `format`, `tail`         | format marker; the tail `seq` ‖ hash          |
//! | `graph.deltas`    | save number (u64 BE) ‖ chunk (u32 BE) | 32 KiB chunks of a saved projection delta's JSON |
//! | `graph.meta`      | `checkpoint`, `deltas`, `history` | the checkpoint `seq` ‖ hash; which deltas count (first, last sealed) and their sizes; present once the history trees are complete |
//! | `graph.history`   | node id (UTF-8)          | the node's JSON as last saved                 |
//! | `graph.history_edges` | edge id (UTF-8; starts with its source's id) | the edge's JSON  |
//! | `graph.attempt_index` | `c` created; `t` target, `s` status, `u` target and status, `k` target and task, each then created; `f` ended failure; `g` target, ended failure (names end with a zero byte, `seq`s u64 BE) | the attempt's id |
//! | `tree.tiles`      | tile level (u8) ‖ index (u64 BE) | a full tile of the log's Merkle tree: 16 hashes, 512 bytes |
//! | `tree.checkpoints`| tree size (u64 BE)       | a signed checkpoint (C2SP signed note)        |
//! | `bundles`         | SHA-256 of the bundle id | SHA-256 of the bundle's target and events (the control plane's bundle ids) |
//!
//! Events are kept as their canonical bytes (the exact bytes their hash covers) plus the stored
//! hash, so reads decode them with [`Event::from_canonical`](leviathan_core::Event::from_canonical)
//! and verification hashes the stored bytes without re-serialising anything
//! ([`ChainVerifier::push_record`](leviathan_core::ChainVerifier::push_record)). Any payload the
//! catalogue accepts is stored byte for byte, so it comes back exactly.
//!
//! Artifacts are plain files beside sled's, `artifacts/<sha[0:2]>/<sha>`, rather than a tree: blobs
//! of many megabytes would bloat sled's log, its cache and its node rewrites, while plain files
//! cost one write and one read each, and a damaged blob stays one damaged file that a later `put`
//! of the right content repairs. Each blob
//! is written to `artifacts/.tmp/`, fsynced, renamed into place and its directory fsynced, so a
//! reader sees the whole blob or none; every read is hash-checked.
//!
//! # Appends: one writer, group commit
//!
//! All appends go to one writer thread (started by [`SledStore::open`], stopped when the last
//! handle is dropped). It drains every queued request, sequences them in turn with the shared
//! [`Sequencer`](leviathan_core::store::sequencer::Sequencer) (a refused request gets its own
//! error, the others land), writes all accepted events of the group in **one** sled transaction
//! across `events`, `event_ids`, `streams`, `meta` and `tree.tiles` (the tiles of the log's
//! Merkle tree the group filled, about one per 16 events; see [`leviathan_core::tlog`]), flushes
//! once and then answers every caller. The tail and the tree's right edge are cached by the
//! writer and never searched for. A database written before the tree existed (format 2) gets
//! its tree built from the stored hashes, and checked, when it is opened.
//!
//! # Durability
//!
//! - [`Durability::Flush`] (the default): an append returns only after its group was flushed to
//!   disk: sled's `flush` writes its log, and since on Linux it ends with `sync_file_range`
//!   (which neither persists the file's growth nor flushes the device's write cache), the writer
//!   then `fdatasync`s sled's data file: one flush and one sync per group, never per event.
//!   Readers never see an event before it is durable: reads, lookups, `head`, `verify` and
//!   subscriptions stop at the last flushed `seq` (only `stream_version` may already count a
//!   group whose flush is under way).
//! - [`Durability::Periodic`]: an append returns once its group is committed in memory, and
//!   sled's background flusher writes and fsyncs every `every`. **Loss window**: a crash of the
//!   process or of the machine loses the acknowledged appends of up to the last `every` (plus the
//!   duration of one flush). What survives is always a prefix of the log made of whole batches,
//!   and the chain still verifies; retrying a lost batch is safe because appends are idempotent by
//!   `event_id`. Dropping the last handle flushes, so a clean shutdown loses nothing.
//!
//! Graph saves are not flushed on their own: a lost save only means the projection resumes from
//! an older checkpoint, and sled recovers its log as a prefix, so a stored checkpoint never runs
//! ahead of the stored events. The projection is kept as a log of deltas: a save appends its
//! delta with plain inserts (not a sled transaction, which would hold up the writer for its
//! whole commit), then seals it and stores the checkpoint in one atomic batch on `graph.meta`;
//! a load merges the sealed deltas, so a save cut short is never read. Once the deltas after the
//! first are four times its size, they are merged into a new first delta (a delta from seq 0,
//! the whole graph, is one by itself), so a save costs its own size and the stored projection
//! stays within a small multiple of the graph's.
//!
//! The format is marked in `meta`. A database of the first layout (`leviathan-store-sled/1`,
//! the projection in a tree per kind) is upgraded on open: its events are kept, its stored
//! projection is dropped and the next ledger rebuilds it from the log.
//!
//! # One owner
//!
//! sled locks its data file exclusively. A second [`SledStore::open`] of the same directory, from
//! another process or from this one, fails at once with
//! [`EventStoreError::Locked`](leviathan_core::EventStoreError::Locked). Use one [`SledStore`]
//! (it is `Clone`) per directory and process. Dropping the last handle (including open
//! subscriptions) stops the writer, flushes, and waits until sled's pool threads have closed the
//! data file, so the directory can be opened again at once.
//!
//! # Runtime
//!
//! [`SledStore::open`] needs no async runtime (the writer is a plain thread). The stores' methods
//! must be called on a tokio runtime: reads that may scan (`read`, `find`, `verify`, graph loads
//! and saves, artifact file I/O) run on tokio's blocking pool.
//!
//! # Errors
//!
//! I/O errors that may pass (full disk or quota, interruptions, timeouts) are `Unavailable`
//! (transient); sled's corruption reports and undecodable stored data are `Corrupt`; sled's lock
//! is `Locked`; anything else is a permanent `Backend` failure. All carry what and where.
//!
//! [sled]: https://docs.rs/sled/0.34.7
#![warn(missing_docs)]

mod artifacts;
mod bundles;
mod error;
mod events;
mod graph;
mod history;
mod layout;
mod options;
mod shared;
mod store;
mod tree;
mod writer;

pub use options::{Durability, SledOptions};
pub use store::SledStore;
