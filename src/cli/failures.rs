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
    /// Page size
    #[arg(long, default_value_t = 20)]
    limit: usize,
    /// Continue after this cursor (printed at the end of the previous page)
    #[arg(long)]
    cursor: Option<u64>,
}

pub(crate) async fn run(args: Args) -> ExitCode {
    init_logging("warn", false);
    finish(failures(args).await)
}

async fn failures(args: Args) -> Result<(), CliError> {
    let query = FailuresQuery {
        target: args.target,
        limit: Some(args.limit),
        cursor: args.cursor,
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
    if let Some(cursor) = page.next_cursor {
        println!("more: --cursor {cursor}");
    }
    Ok(())
}
