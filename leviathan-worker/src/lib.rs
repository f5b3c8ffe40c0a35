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
mod redact;
pub mod report;
mod scope;
pub mod task;
mod test_runner;

pub use config::{ConfigError, ConfigProblem, ModelProvider, WorkerConfig};
pub use entry::run_from_env;
pub use git::{GitError, shallow_clone};
pub use journal::Artifact;
pub use leviathan_core::secret::Secret;
pub use redact::{REDACTED, Redactor};
pub use report::{AttemptReport, Delivery, EXIT_CONFIG, EXIT_FAILED, EXIT_SUCCEEDED};

/// Runs one attempt end to end and returns its report; the result has also been written to the
/// termination message path. The only error is a configuration the control-plane client cannot
/// use, found before any side effect.
pub async fn run_attempt(config: WorkerConfig) -> Result<AttemptReport, ConfigError> {
    let client = control_plane::client(&config)?;
    Ok(pipeline::run(&config, &client).await)
}
