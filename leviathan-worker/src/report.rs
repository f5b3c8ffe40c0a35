//! How an attempt ended, as the process reports it: the exit code, the result JSON (core's
//! [`AttemptResult`] shape) on stdout's last line and in the termination message file.

use std::{io, path::Path};

use leviathan_core::{AttemptId, AttemptResult, NewEvent};

use crate::journal::Artifact;

/// Exit code: the attempt succeeded with a real pull request, or proposed its change for the
/// trusted side to deliver.
pub const EXIT_SUCCEEDED: u8 = 0;
/// Exit code: the attempt failed (and the failure was recorded, or at least reported).
pub const EXIT_FAILED: u8 = 1;
/// Exit code: the configuration is missing or malformed; nothing was done.
pub const EXIT_CONFIG: u8 = 2;

/// Whether the control plane received the attempt's record.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Delivery {
    /// Every artifact and the terminal bundle landed.
    Delivered,
    /// They did not (after retries); the reason, redacted.
    Failed(String),
    /// Nothing was posted because the control plane refused `attempt.started`.
    Refused(String),
}

/// Everything one attempt produced.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct AttemptReport {
    /// The attempt.
    pub attempt_id: AttemptId,
    /// How it ended.
    pub result: AttemptResult,
    /// Every event, in the order of the bundle (the terminal event last).
    pub events: Vec<NewEvent>,
    /// Every artifact (redacted), in upload order.
    pub artifacts: Vec<Artifact>,
    /// Whether the control plane has it all.
    pub delivery: Delivery,
    /// The worker log (redacted).
    pub log: String,
}

impl AttemptReport {
    /// [`EXIT_SUCCEEDED`] or [`EXIT_FAILED`].
    pub fn exit_code(&self) -> u8 {
        match self.result {
            AttemptResult::Succeeded { .. } | AttemptResult::Proposed { .. } => EXIT_SUCCEEDED,
            AttemptResult::Failed(_) => EXIT_FAILED,
        }
    }

    /// The result as one line of JSON.
    pub fn result_line(&self) -> String {
        result_line(&self.result)
    }
}

/// `result` as one line of JSON, e.g. `{"result":"failed","kind":"tests_failed",…}`.
pub fn result_line(result: &AttemptResult) -> String {
    // A plain enum of strings and numbers always serializes.
    serde_json::to_string(result).unwrap_or_else(|e| {
        format!(r#"{{"result":"failed","kind":"infrastructure","class":"transient","summary":"cannot encode the result: {e}"}}"#)
    })
}

/// Writes the result line to `path` (replacing what was there).
pub fn write_termination_message(path: &Path, line: &str) -> io::Result<()> {
    std::fs::write(path, format!("{line}\n"))
}

#[cfg(test)]
mod tests {
    use leviathan_core::model::{Failure, FailureKind};

    use super::*;

    #[test]
    fn result_lines_use_core_shapes() {
        let ok = AttemptResult::Succeeded {
            branch: "agent/t-a".into(),
            commit_sha: "ab".repeat(20),
            pr_number: 7,
            pr_url: "https://github.com/o/r/pull/7".into(),
        };
        let line = result_line(&ok);
        assert!(
            line.starts_with(r#"{"result":"succeeded","branch":"agent/t-a""#),
            "{line}"
        );
        assert_eq!(serde_json::from_str::<AttemptResult>(&line).unwrap(), ok);

        let failed = AttemptResult::Failed(Failure::new(FailureKind::NoChanges, "nothing"));
        let line = result_line(&failed);
        assert_eq!(
            line,
            r#"{"result":"failed","kind":"no_changes","class":"permanent","summary":"nothing"}"#
        );
    }

    #[test]
    fn termination_message_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("termination-log");
        write_termination_message(&path, "first").unwrap();
        write_termination_message(&path, "second").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "second\n");
    }
}
