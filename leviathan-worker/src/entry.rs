//! The worker as a process: what `leviathan worker` (and any program that re-executes itself as
//! the worker, such as the quickstart) does between `main` and the exit code.

use std::{io::Write, process::ExitCode};

use leviathan_core::{
    AttemptResult,
    model::{Failure, FailureClass, FailureKind},
};

use crate::{
    config::{ConfigError, WorkerConfig},
    pipeline::run_attempt,
    report::{self, EXIT_CONFIG},
};

/// Runs one attempt configured by the process environment ([`leviathan_core::executor::protocol::VARIABLES`]) and
/// reports it: the result as JSON on the last line of stdout (and in the termination message
/// file, written by [`run_attempt`]), exit code 0 (pull request delivered), 1 (failed) or 2
/// (configuration error: every problem listed on stderr, nothing done).
pub async fn run_from_env() -> ExitCode {
    let config = match WorkerConfig::from_process_env() {
        Ok(config) => config,
        Err(error) => return configuration_error(&error),
    };
    match run_attempt(config).await {
        Ok(report) => {
            print_result_line(&report.result_line());
            ExitCode::from(report.exit_code())
        }
        Err(error) => configuration_error(&error),
    }
}

/// One message listing every problem on stderr, a `setup` failure as the result line, exit 2;
/// nothing else happens (no network call, no file written).
fn configuration_error(error: &ConfigError) -> ExitCode {
    let _ = writeln!(std::io::stderr(), "error: {error}");
    let failure = Failure {
        kind: FailureKind::Setup,
        class: FailureClass::Permanent,
        summary: error
            .to_string()
            .lines()
            .map(str::trim)
            .collect::<Vec<_>>()
            .join(" "),
    };
    print_result_line(&report::result_line(&AttemptResult::Failed(failure)));
    ExitCode::from(EXIT_CONFIG)
}

/// Prints the result line, ignoring a closed stdout: when whoever read it is gone (a scheduler
/// killed and restarted), the termination message file still carries the result, and the exit
/// code must still be the attempt's, not a panic's.
fn print_result_line(line: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}").and_then(|()| stdout.flush());
}
