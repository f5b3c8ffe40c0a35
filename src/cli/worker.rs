//! `leviathan worker`: one attempt, end to end, configured by the environment (the executors set
//! it; the variables are listed by `leviathan worker --help`).
//!
//! Exit codes: 0 the attempt delivered a pull request, 1 it failed, 2 the environment is unusable
//! (every problem listed at once, nothing done). The last line of stdout is the result as JSON.
//! The logic lives in [`leviathan_worker::run_from_env`], shared with programs that re-execute
//! themselves as the worker (the quickstart example).

use std::process::ExitCode;

use leviathan::core::executor::protocol;

/// No flags: everything comes from the environment.
#[derive(clap::Args, Debug)]
#[command(after_long_help = environment_help())]
pub(crate) struct Args {}

fn environment_help() -> String {
    format!(
        "Environment (set by the executors):\n\n{}\n\
         Exit codes: 0 succeeded with a pull request, 1 failed, 2 configuration error.\n\
         The last line of stdout (and the termination message file) is the result as JSON.",
        protocol::variables_table()
    )
}

pub(crate) async fn run(_args: Args) -> ExitCode {
    leviathan_worker::run_from_env().await
}
