//! An external program as the model: `sh -c <command>` in the worktree, the prompt on stdin, the
//! task in `LEVIATHAN_TASK_*` variables, a time limit; it edits files in place, so any coding
//! agent CLI can be plugged in.

use std::time::Duration;

use async_trait::async_trait;

use super::code_model::{CodeModel, Completion, ModelError, ModelRequest};
use crate::{
    process::{self, Spec},
    prompt::OutputStyle,
    sandbox::Untrusted,
};

/// `sh`'s exit code for a command that was not found or not executable.
const NOT_FOUND: i32 = 127;
const NOT_EXECUTABLE: i32 = 126;

/// An external command that edits the worktree.
#[derive(Debug)]
pub struct CommandModel {
    command: String,
    name: String,
    timeout: Duration,
    untrusted: Untrusted,
}

impl CommandModel {
    /// Runs `command` through `sh -c`, confined and with the environment `untrusted` gives.
    pub fn new(command: &str, timeout: Duration, untrusted: Untrusted) -> Self {
        let program = command.split_whitespace().next().unwrap_or("command");
        let name = program.rsplit('/').next().unwrap_or(program).to_owned();
        Self {
            command: command.to_owned(),
            name,
            timeout,
            untrusted,
        }
    }
}

#[async_trait]
impl CodeModel for CommandModel {
    fn provider(&self) -> &str {
        "command"
    }

    fn model(&self) -> &str {
        &self.name
    }

    fn output_style(&self) -> OutputStyle {
        OutputStyle::InPlace
    }

    async fn complete(&self, request: &ModelRequest<'_>) -> Result<Completion, ModelError> {
        let mut env = self.untrusted.env.clone();
        env.extend(request.task_env.iter().map(|(k, v)| (k.clone(), v.clone())));
        env.insert(
            "LEVIATHAN_WORKTREE".into(),
            request.worktree.to_string_lossy().into_owned(),
        );
        let done = process::run(Spec {
            program: "sh",
            args: vec!["-c".into(), self.command.clone().into()],
            cwd: request.worktree,
            env,
            stdin: Some(request.prompt.as_bytes().to_vec()),
            timeout: self.timeout,
            confined: Some(self.untrusted.confined(request.worktree)),
        })
        .await
        .map_err(|e| ModelError::Command {
            reason: e.to_string(),
            transient: false,
        })?;
        let text = String::from_utf8_lossy(&done.output).into_owned();
        if done.success() {
            return Ok(Completion {
                text,
                tokens_in: 0,
                tokens_out: 0,
                truncated: false,
            });
        }
        let (tail, _) = process::last_lines(text.trim(), 20);
        Err(ModelError::Command {
            reason: format!("`{}` {}: {tail}", self.name, done.describe(self.timeout)),
            transient: !matches!(done.exit_code, Some(NOT_FOUND | NOT_EXECUTABLE)),
        })
    }
}
