//! The worker as a process: what `leviathan worker` (and any program that re-executes itself as
//! the worker, such as the quickstart) does between `main` and the exit code.

use std::{io::Write, process::ExitCode};

use leviathan_core::{
    AttemptResult,
    model::{Failure, FailureClass, FailureKind},
};

use crate::{
    config::{ConfigError, ConfigProblem, WorkerConfig},
    pipeline::run_attempt,
    report::{self, EXIT_CONFIG},
    sandbox::{self, Helper},
    secret_env, strays,
};

/// Runs one attempt configured by the process environment ([`leviathan_core::executor::protocol::VARIABLES`]) and
/// reports it: the result as JSON on the last line of stdout (and in the termination message
/// file, written by [`run_attempt`]), exit code 0 (pull request delivered), 1 (failed) or 2
/// (configuration error: every problem listed on stderr, nothing done).
///
/// Before anything else it hardens itself: the same program invoked as the sandbox helper runs
/// that instead; otherwise the worker makes itself non-dumpable, takes its secrets out of its
/// environment (executing itself again without them) and becomes the reaper of its orphans.
pub async fn run_from_env() -> ExitCode {
    if let Some(code) = sandbox::run_if_invoked() {
        return code;
    }
    // Unless this fails, processes of the same uid cannot read the worker's environment or
    // memory, nor attach to it; `attempt.started` reports it either way.
    let _ = rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable);
    let secrets = match secret_env::take() {
        Ok(secrets) => secrets,
        Err(reason) => {
            return configuration_error(&ConfigError {
                problems: vec![ConfigProblem {
                    variable: secret_env::HANDOVER_VARIABLE,
                    problem: reason,
                }],
            });
        }
    };
    let config = WorkerConfig::from_env(|name| {
        secrets
            .get(name)
            .cloned()
            .or_else(|| std::env::var(name).ok())
    });
    let mut config = match config {
        Ok(config) => config,
        Err(error) => return configuration_error(&error),
    };
    if strays::become_subreaper() {
        config.sandbox.helper = Helper::this_process().ok();
    }
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
