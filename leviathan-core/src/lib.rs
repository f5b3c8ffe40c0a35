//! Leviathan's core: the model, roles and the authorisation rules, the event catalogue, canonical hashing and chain verification,
//! the pure projection into a graph, backlog and target parsing, path rules, the backend traits,
//! the ports the scheduler and the worker drive ([`Executor`], [`Forge`], [`BacklogSource`]),
//! in-memory backends and (feature `testkit`) the conformance suite every backend runs and event
//! fixtures.
//!
//! # Features
//!
//! - `testkit`: [`testkit`], the backend conformance suite and deterministic fixtures.
//! - `proptest`: `testkit::strategy`, proptest strategies for property tests against the
//!   projection: valid histories, arbitrary (also invalid) events, payloads of every catalogue
//!   type. Implies `testkit`.
//!
//! This crate does no network I/O and knows no backend; backends, the API, the worker and the
//! executors depend on it, never the other way round.
#![warn(missing_docs)]

pub mod auth;
pub mod backlog;
pub mod backlog_source;
pub mod canonical;
pub mod catalogue;
pub mod chain;
pub mod delivery;
pub mod digest;
pub mod event;
pub mod executor;
pub mod forge;
pub mod graph;
pub mod id;
pub mod ledger;
pub mod memory;
pub mod model;
pub mod output;
pub mod paths;
pub mod plan;
pub mod redact;
pub mod retry;
pub mod secret;
pub mod store;
pub mod target;
mod text;
pub mod timestamp;
pub mod tlog;

#[cfg(feature = "testkit")]
pub mod testkit;

pub use auth::{Principal, Role};
pub use backlog_source::{BacklogFetchError, BacklogSource};
pub use catalogue::{EventBody, Payload, PayloadError, StreamId};
pub use chain::{ChainBreak, ChainFault, ChainReport, ChainVerifier};
pub use digest::Sha256Digest;
pub use event::{Event, Head, NewEvent};
pub use executor::{
    AttemptOutcome, AttemptResult, AttemptSpec, Executor, ExecutorError, WorkerTokens,
};
pub use forge::{Forge, ForgeError};
pub use graph::{Graph, GraphSummary};
pub use id::{AttemptId, EventId, TargetId, TaskId, TokenId};
pub use ledger::{Expectations, Ledger, LedgerError};
pub use store::{
    AppendReceipt, AppendRequest, ArtifactError, ArtifactStore, BundleBinding, BundleIndex,
    EventStore, EventStoreError, ExpectedVersion, GraphStore, GraphStoreError,
};
pub use timestamp::Timestamp;
