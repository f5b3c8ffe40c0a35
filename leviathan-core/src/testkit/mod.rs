//! What the core gives other crates' tests (feature `testkit`): the backend conformance suite,
//! deterministic event fixtures and (feature `proptest`) proptest strategies for histories and
//! events. Every crate that exports test helpers does so in a `testkit`
//! module behind a `testkit` feature; a crate's own integration tests share `tests/support/`.

pub mod conformance;
mod fixtures;
pub mod fuzz;
#[cfg(feature = "proptest")]
pub mod strategy;

pub use fixtures::{Scenario, lifecycle, seal_all};
