//! Leviathan: an event-sourced control plane for autonomous coding agents.
//!
//! This facade re-exports the workspace crates so that an embedding service needs one dependency.

pub use leviathan_api as api;
pub use leviathan_core as core;

pub mod git;
pub mod scheduler;
pub mod stores;
