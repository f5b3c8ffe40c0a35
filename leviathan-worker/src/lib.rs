#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub mod config;
mod control_plane;
mod entry;
mod envelope;
mod files;
pub mod forge;
mod git;
mod journal;
pub mod llm;
mod pipeline;
mod process;
pub mod prompt;
pub mod report;
pub mod sandbox;
mod scope;
mod secret_env;
mod strays;
pub mod task;
mod test_runner;

pub use config::{ConfigError, ConfigProblem, ModelProvider, WorkerConfig};
pub use entry::run_from_env;
pub use git::{Git, GitError, shallow_clone};
pub use journal::Artifact;
pub use leviathan_core::redact::{REDACTED, Redactor};
pub use leviathan_core::secret::Secret;
pub use pipeline::run_attempt;
pub use report::{AttemptReport, Delivery, EXIT_CONFIG, EXIT_FAILED, EXIT_SUCCEEDED};
pub use sandbox::{Helper, SandboxSettings};
