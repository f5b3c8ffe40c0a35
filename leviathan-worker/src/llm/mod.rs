//! The LLM client: one small trait for code models, three providers (Anthropic Messages,
//! OpenAI-compatible chat completions, an external command that edits the worktree). Named `llm`
//! because `model` is core's domain model.

mod anthropic;
mod code_model;
mod command;
mod http;
mod openai;

use std::collections::BTreeMap;

pub use self::{
    anthropic::AnthropicModel,
    code_model::{CodeModel, Completion, ModelError, ModelRequest},
    command::CommandModel,
    openai::OpenAiModel,
};
use crate::config::{ModelProvider, ModelSettings};

/// The configured provider. `base_env` is the scrubbed environment a `command` runs with.
pub fn from_settings(
    settings: &ModelSettings,
    base_env: BTreeMap<String, String>,
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
            Box::new(CommandModel::new(command, settings.timeout, base_env))
        }
    })
}
