//! `leviathan worker`: one attempt, end to end, configured by the environment (the executors set
//! it; the variables are listed by `leviathan worker --help`).
//!
//! Exit codes: 0 the attempt delivered a pull request, 1 it failed, 2 the environment is unusable
//! (every problem listed at once, nothing done). The last line of stdout is the result as JSON.

use std::process::ExitCode;

use leviathan::core::{
    AttemptResult,
    model::{Failure, FailureClass, FailureKind},
};
use leviathan_worker::{ConfigError, EXIT_CONFIG, WorkerConfig, config, report, run_attempt};

/// No flags: everything comes from the environment.
#[derive(clap::Args, Debug)]
#[command(after_long_help = environment_help())]
pub(crate) struct Args {}

fn environment_help() -> String {
    format!(
        "Environment (set by the executors):\n\n{}\n\
         Exit codes: 0 succeeded with a pull request, 1 failed, 2 configuration error.\n\
         The last line of stdout (and the termination message file) is the result as JSON.",
        config::render_table()
    )
}

pub(crate) async fn run(_args: Args) -> ExitCode {
    let config = match WorkerConfig::from_process_env() {
        Ok(config) => config,
        Err(error) => return configuration_error(&error),
    };
    match run_attempt(config).await {
        Ok(report) => {
            println!("{}", report.result_line());
            ExitCode::from(report.exit_code())
        }
        Err(error) => configuration_error(&error),
    }
}

/// One message listing every problem on stderr, a `setup` failure as the result line, exit 2;
/// nothing else happens (no network call, no file written).
fn configuration_error(error: &ConfigError) -> ExitCode {
    eprintln!("error: {error}");
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
    println!("{}", report::result_line(&AttemptResult::Failed(failure)));
    ExitCode::from(EXIT_CONFIG)
}
