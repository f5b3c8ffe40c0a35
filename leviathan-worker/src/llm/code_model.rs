//! The trait every provider implements, and what goes in and out of one call.

use std::{collections::BTreeMap, fmt, path::Path};

use async_trait::async_trait;

use crate::prompt::OutputStyle;

/// One model call's input.
#[derive(Debug)]
pub struct ModelRequest<'a> {
    /// The prompt.
    pub prompt: &'a str,
    /// The repository's worktree (where the `command` provider runs).
    pub worktree: &'a Path,
    /// The task as `LEVIATHAN_TASK_*` variables, for the `command` provider.
    pub task_env: &'a BTreeMap<String, String>,
}

/// One model call's result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completion {
    /// The answer (API providers) or the command's combined output.
    pub text: String,
    /// Input tokens the provider reported (0 when unknown).
    pub tokens_in: u64,
    /// Output tokens the provider reported (0 when unknown).
    pub tokens_out: u64,
    /// True when the provider stopped at the output token limit.
    pub truncated: bool,
}

/// Why a model call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// Overloaded, rate limited, a server error or a transport failure, after bounded retries.
    #[error("model unavailable: {0}")]
    Unavailable(String),
    /// The provider refused the request (credentials, permissions, unknown model, bad request).
    #[error("model request refused: {0}")]
    Rejected(String),
    /// The model gateway refused the call: a budget is spent.
    #[error("model budget exhausted: {reason}")]
    BudgetExhausted {
        /// The gateway's answer.
        reason: String,
        /// The spent budget: `attempt:<id>`, `target:<id>:<day>` or `global:<day>`.
        scope: String,
    },
    /// The provider answered something that is not its documented response shape.
    #[error("unexpected model response: {0}")]
    BadResponse(String),
    /// The external command failed or ran out of time.
    #[error("model command failed: {reason}")]
    Command {
        /// What happened, with the end of its output.
        reason: String,
        /// False when running it again cannot help (e.g. the program does not exist).
        transient: bool,
    },
}

impl ModelError {
    /// True when a later attempt may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unavailable(_) | Self::BadResponse(_) => true,
            Self::Rejected(_) => false,
            // A day's budget resets (the scheduler dispatches nothing for the target until
            // then); an attempt's does not.
            Self::BudgetExhausted { scope, .. } => !scope.starts_with("attempt:"),
            Self::Command { transient, .. } => *transient,
        }
    }
}

/// Generates changes for a task.
#[async_trait]
pub trait CodeModel: Send + Sync + fmt::Debug {
    /// `anthropic`, `openai` or `command`.
    fn provider(&self) -> &str;

    /// The model name recorded in `model.call_completed`.
    fn model(&self) -> &str;

    /// Whether answers carry the files envelope or the worktree is edited in place.
    fn output_style(&self) -> OutputStyle;

    /// Runs one call.
    async fn complete(&self, request: &ModelRequest<'_>) -> Result<Completion, ModelError>;
}
