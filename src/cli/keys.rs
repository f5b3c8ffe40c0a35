//! The `--key PUB` argument of the `log` commands: the log's public key, or a file holding it.

use leviathan::core::tlog::checkpoint::LogVerifier;

use super::error::CliError;

/// The verifier of `--key`: the key text, or a file whose first line is it.
pub(crate) fn verifier(key: &str) -> Result<LogVerifier, CliError> {
    let text = match std::fs::read_to_string(key) {
        Ok(content) => content.lines().next().unwrap_or_default().to_owned(),
        Err(_) => key.to_owned(),
    };
    LogVerifier::new(&text).map_err(|e| CliError::usage(format!("--key: {e}")))
}
