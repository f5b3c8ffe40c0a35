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
use crate::{
    config::{ModelProvider, ModelSettings},
    sandbox::Untrusted,
};

/// The configured provider. `untrusted` is how a `command` runs (environment and sandbox).
pub fn from_settings(
    settings: &ModelSettings,
    untrusted: Untrusted,
) -> Result<Box<dyn CodeModel>, ModelError> {
    Ok(match &settings.provider {
        ModelProvider::Anthropic {
            api_key,
            model,
            base_url,
        } => Box::new(AnthropicModel::new(
            base_url,
            api_key.clone(),
            model,
            settings,
        )?),
        ModelProvider::OpenAi {
            api_key,
            model,
            base_url,
        } => Box::new(OpenAiModel::new(
            base_url,
            api_key.clone(),
            model,
            settings,
        )?),
        ModelProvider::Command { command } => {
            Box::new(CommandModel::new(command, settings.timeout, untrusted))
        }
    })
}
