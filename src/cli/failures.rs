//! `leviathan failures`.

use std::process::ExitCode;

use leviathan::{api::wire::FailuresQuery, core::id::TargetId};

use super::{
    attempts::print_table,
    error::{CliError, finish},
    output::{init_logging, print_json},
    source::{OutputArgs, SourceArgs},
};

/// Failed and timed-out attempts, most recent first.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    #[command(flatten)]
    source: SourceArgs,
    #[command(flatten)]
    output: OutputArgs,
    /// Only this target's failures
    #[arg(long)]
    target: Option<TargetId>,
    /// At most this many
    #[arg(long, default_value_t = 20)]
    limit: usize,
}

pub(crate) async fn run(args: Args) -> ExitCode {
    init_logging("warn", false);
    finish(failures(args).await)
}

async fn failures(args: Args) -> Result<(), CliError> {
    let query = FailuresQuery {
        target: args.target,
        limit: Some(args.limit),
    };
    let page = args
        .source
        .open()
        .await?
        .plane()
        .await?
        .failures(&query)
        .await?;
    if args.output.json {
        return print_json(&page);
    }
    if page.failures.is_empty() {
        println!("no failed or timed-out attempts");
        return Ok(());
    }
    print_table(&page.failures);
    Ok(())
}
