//! proptest strategies for property tests against the core (feature `proptest`): valid histories
//! the projection accepts event by event, arbitrary events (also invalid ones), and payloads of
//! every catalogue type, valid and broken. The core's own laws (`tests/laws.rs`) are written
//! with them.
//!
//! - [`history`]: targets registered and updated; tasks created, redefined, completed, failed and
//!   blocked, some depending on others; attempts created, started, working (jobs, model calls,
//!   test runs, commits), succeeding with a pull request, failing, timing out, invalidated (live
//!   or ended) and retried; pull requests opened, merged and closed; circuits opened and closed;
//!   events of types outside the catalogue. Every event is accepted by the projection.
//! - [`event`]: anything a client could submit, valid or not; [`catalogue_event`]: events the
//!   catalogue accepts but the projection may refuse; [`mixed_history`] mixes either into a
//!   valid history.
//! - [`valid_payload`] and [`broken_payload`] per catalogue type, [`json_value`] for any JSON.
//!
//! A property of your own, over the graph folded from a history:
//!
//! ```
//! use leviathan_core::{
//!     Graph,
//!     model::AttemptStatus,
//!     testkit::{seal_all, strategy::history},
//! };
//! use proptest::test_runner::TestRunner;
//!
//! // A succeeded attempt always names the pull request it delivered.
//! let mut runner = TestRunner::default();
//! runner
//!     .run(&history(), |events| {
//!         let mut graph = Graph::new();
//!         for event in seal_all(events) {
//!             graph.apply(&event);
//!         }
//!         proptest::prop_assert!(graph.anomalies().is_empty());
//!         for attempt in graph.live_attempts() {
//!             proptest::prop_assert_ne!(attempt.status, AttemptStatus::Succeeded);
//!         }
//!         Ok(())
//!     })
//!     .unwrap();
//! ```
//!
//! Inside a `proptest!` block the same reads `fn my_law(events in history()) { … }`;
//! `examples/projection_properties.rs` of this crate is a complete test file.

mod events;
mod history;
mod payloads;

pub use events::{catalogue_event, event, json_value, mixed_history};
pub use history::{history, history_of_len};
pub use payloads::{broken_payload, catalogue_type, valid_payload};
