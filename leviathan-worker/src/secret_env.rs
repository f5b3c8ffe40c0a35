//! The worker's secrets leave its environment before it does anything else: it reads them, then
//! executes itself again without them, handing them over on a pipe that becomes the new
//! image's standard input.
//!
//! `/proc/<pid>/environ` shows the environment a process was executed with, whatever it removes
//! afterwards (and removing variables is `unsafe` in this edition, which the workspace forbids),
//! so executing again is how the secrets really leave it.

use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    os::unix::process::CommandExt as _,
};

use leviathan_core::executor::protocol::SECRET_VARIABLES;

/// Set in the re-executed worker's environment: its secrets are on its standard input.
pub(crate) const HANDOVER_VARIABLE: &str = "LEVIATHAN_SECRETS_ON_STDIN";

/// What a pipe holds without a reader (the handover is written before the new image reads it).
const PIPE_CAPACITY: usize = 64 * 1024;

/// This process's secrets. In the re-executed worker they are read from standard input; in the
/// first, when its environment holds any, this executes the worker again without them and
/// returns only if that fails.
pub(crate) fn take() -> Result<BTreeMap<String, String>, String> {
    if std::env::var_os(HANDOVER_VARIABLE).is_some() {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| format!("cannot read the secrets handed over on stdin: {e}"))?;
        return serde_json::from_str(&text)
            .map_err(|_| "the secrets handed over on stdin do not decode".to_owned());
    }
    let secrets: BTreeMap<String, String> = SECRET_VARIABLES
        .iter()
        .filter_map(|&name| Some((name.to_owned(), std::env::var(name).ok()?)))
        .collect();
    if secrets.is_empty() {
        return Ok(secrets);
    }
    Err(execute_without(&secrets))
}

/// Executes this program again with the same arguments, its environment minus the secrets, and
/// the secrets on standard input. Returns only on failure, with what failed.
fn execute_without(secrets: &BTreeMap<String, String>) -> String {
    let handover = match serde_json::to_vec(secrets) {
        Ok(bytes) if bytes.len() < PIPE_CAPACITY => bytes,
        _ => return format!("the secrets take more than {PIPE_CAPACITY} bytes"),
    };
    let program = match std::env::current_exe() {
        Ok(program) => program,
        Err(e) => {
            return format!("cannot find this program to execute it without its secrets: {e}");
        }
    };
    let pipe = std::io::pipe().and_then(|(reader, mut writer)| {
        writer.write_all(&handover)?;
        // Closing the writer ends the handover: the new image reads to the end.
        drop(writer);
        Ok(reader)
    });
    let reader = match pipe {
        Ok(reader) => reader,
        Err(e) => return format!("cannot hand the secrets over: {e}"),
    };
    let env = std::env::vars_os().filter(|(name, _)| {
        !SECRET_VARIABLES
            .iter()
            .any(|secret| name.as_os_str() == *secret)
    });
    let mut command = std::process::Command::new(program);
    if let Some(arg0) = std::env::args_os().next() {
        command.arg0(arg0);
    }
    let error = command
        .args(std::env::args_os().skip(1))
        .env_clear()
        .envs(env)
        .env(HANDOVER_VARIABLE, "1")
        .stdin(reader)
        .exec();
    format!("cannot execute the worker again without its secrets: {error}")
}
