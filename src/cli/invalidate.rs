//! `leviathan invalidate ID --reason R`.

use std::process::ExitCode;

use leviathan::core::id::AttemptId;

use super::{
    error::{CliError, finish},
    output::{init_logging, print_json},
    source::{OutputArgs, SourceArgs},
};

/// Declare an attempt void (emits `attempt.invalidated`, actor `operator`); its task becomes
/// pending again.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// The attempt id
    id: AttemptId,
    /// Why (recorded in the event)
    #[arg(long)]
    reason: String,
    #[command(flatten)]
    source: SourceArgs,
    #[command(flatten)]
    output: OutputArgs,
}

pub(crate) async fn run(args: Args) -> ExitCode {
    init_logging("warn", false);
    finish(invalidate(args).await)
}

async fn invalidate(args: Args) -> Result<(), CliError> {
    if args.reason.trim().is_empty() {
        return Err(CliError::usage("--reason must not be empty"));
    }
    let answer = args
        .source
        .open()
        .await?
        .plane()
        .await?
        .invalidate(&args.id, &args.reason)
        .await?;
    if args.output.json {
        return print_json(&answer);
    }
    println!(
        "attempt {} invalidated (event {} at seq {})",
        answer.attempt_id, answer.event.event_id, answer.event.seq
    );
    Ok(())
}
