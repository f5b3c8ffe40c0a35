//! A command's failure, how library errors become one, and the exit code it gives.

use std::process::ExitCode;

use leviathan::{
    api::{ControlPlaneError, client::ClientError, token::TokenFileError},
    core::{EventStoreError, LedgerError},
    stores::OpenError,
};

/// A command's failure: what to tell the operator and how to exit.
#[derive(Debug)]
pub(crate) struct CliError {
    message: String,
    exit: u8,
}

impl CliError {
    /// A usage or configuration error (exit 2).
    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            exit: 2,
        }
    }

    /// A failure (exit 1).
    pub(crate) fn failure(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            exit: 1,
        }
    }
}

impl From<ControlPlaneError> for CliError {
    fn from(error: ControlPlaneError) -> Self {
        Self::failure(format!("{error} ({})", error.code()))
    }
}

impl From<ClientError> for CliError {
    fn from(error: ClientError) -> Self {
        match &error {
            ClientError::Status { status: 401, .. } => Self::usage(format!(
                "{error}\nhint: the control plane refused the token; check {} or the token file",
                leviathan::api::token::TOKEN_ENV
            )),
            ClientError::InvalidUrl { .. } | ClientError::InvalidToken(_) => {
                Self::usage(error.to_string())
            }
            _ => Self::failure(error.to_string()),
        }
    }
}

impl From<OpenError> for CliError {
    fn from(error: OpenError) -> Self {
        match &error {
            OpenError::Url(_) => Self::usage(error.to_string()),
            OpenError::Open {
                source: EventStoreError::Locked { .. },
                ..
            } => Self::failure(format!(
                "{error}\nhint: is `leviathan serve` running on it? Ask it instead with --api URL"
            )),
            _ => Self::failure(error.to_string()),
        }
    }
}

impl From<EventStoreError> for CliError {
    fn from(error: EventStoreError) -> Self {
        Self::failure(error.to_string())
    }
}

impl From<LedgerError> for CliError {
    fn from(error: LedgerError) -> Self {
        Self::failure(error.to_string())
    }
}

impl From<TokenFileError> for CliError {
    fn from(error: TokenFileError) -> Self {
        match error {
            TokenFileError::Io { .. } => Self::failure(error.to_string()),
            other => Self::usage(other.to_string()),
        }
    }
}

/// Prints a failure to stderr and turns the outcome into the process exit code.
pub(crate) fn finish(result: Result<(), CliError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", error.message);
            ExitCode::from(error.exit)
        }
    }
}
