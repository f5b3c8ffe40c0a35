//! The LLM client: one small trait for code models, three providers (Anthropic Messages,
//! OpenAI-compatible chat completions, an external command that edits the worktree). Named `llm`
//! because `model` is core's domain model.

mod anthropic;
mod code_model;
mod command;
mod http;
mod openai;

pub use self::{
    anthropic::AnthropicModel,
    code_model::{CodeModel, Completion, ModelError, ModelRequest},
    command::CommandModel,
    openai::OpenAiModel,
};
use leviathan_core::secret::Secret;

use crate::{
    config::{ModelProvider, ModelSettings},
    sandbox::Untrusted,
};

/// The configured provider, calling the model gateway with `token` (the attempt's).
/// `untrusted` is how a `command` runs (environment and sandbox).
pub fn from_settings(
    settings: &ModelSettings,
    token: &Secret,
    untrusted: Untrusted,
) -> Result<Box<dyn CodeModel>, ModelError> {
    Ok(match &settings.provider {
        ModelProvider::Anthropic { model, base_url } => Box::new(AnthropicModel::new(
            base_url,
            token.clone(),
            model,
            settings,
        )?),
        ModelProvider::OpenAi { model, base_url } => {
            Box::new(OpenAiModel::new(base_url, token.clone(), model, settings)?)
        }
        ModelProvider::Command {
            command,
            control_plane_url,
        } => {
            let untrusted = untrusted.with_model_gateway(control_plane_url, token);
            Box::new(CommandModel::new(command, settings.timeout, untrusted))
        }
    })
}
