//! `leviathan attempts list|show`.

use std::process::ExitCode;

use leviathan::{
    api::wire::{AttemptNode, AttemptsQuery},
    core::{
        id::{AttemptId, TargetId},
        model::AttemptStatus,
    },
};

use super::{
    error::{CliError, finish},
    output::{init_logging, print_json},
    source::{OutputArgs, SourceArgs},
};

/// Attempts: runs of tasks by workers.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// A page of attempts, newest first
    List {
        #[command(flatten)]
        source: SourceArgs,
        #[command(flatten)]
        output: OutputArgs,
        /// Only this target's attempts
        #[arg(long)]
        target: Option<TargetId>,
        /// Only attempts in this status (created, running, succeeded, failed, timed_out, invalidated)
        #[arg(long)]
        status: Option<AttemptStatus>,
        /// Page size
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Continue after this cursor (printed at the end of the previous page)
        #[arg(long)]
        cursor: Option<u64>,
    },
    /// One attempt with its events, artifacts and pull request
    Show {
        /// The attempt id
        id: AttemptId,
        #[command(flatten)]
        source: SourceArgs,
        #[command(flatten)]
        output: OutputArgs,
    },
}

pub(crate) async fn run(args: Args) -> ExitCode {
    init_logging("warn", false);
    finish(match args.command {
        Command::List {
            source,
            output,
            target,
            status,
            limit,
            cursor,
        } => {
            let query = AttemptsQuery {
                target,
                status,
                limit: Some(limit),
                cursor,
            };
            list(source, output, &query).await
        }
        Command::Show { id, source, output } => show(&id, source, output).await,
    })
}

/// One line per attempt (shared with `leviathan failures`).
pub(crate) fn print_table(attempts: &[AttemptNode]) {
    println!(
        "{:<28} {:<11} {:<36} {:>3} {:>6}  ENDED",
        "ATTEMPT", "STATUS", "TARGET/TASK", "#", "PR"
    );
    for a in attempts {
        println!(
            "{:<28} {:<11} {:<36} {:>3} {:>6}  {}",
            a.attempt_id,
            a.status,
            format!("{}/{}", a.target_id, a.task_id),
            a.attempt_number,
            a.pr_number
                .map_or_else(|| "-".to_owned(), |n| format!("#{n}")),
            a.ended_at.map_or_else(|| "-".to_owned(), |t| t.to_string()),
        );
        if let Some(failure) = &a.failure {
            println!(
                "    {} ({}): {}",
                failure.kind, failure.class, failure.summary
            );
        }
    }
}

async fn list(
    source: SourceArgs,
    output: OutputArgs,
    query: &AttemptsQuery,
) -> Result<(), CliError> {
    let page = source.open().await?.plane().await?.attempts(query).await?;
    if output.json {
        return print_json(&page);
    }
    print_table(&page.attempts);
    if let Some(cursor) = page.next_cursor {
        println!("more: --cursor {cursor}");
    }
    Ok(())
}

async fn show(id: &AttemptId, source: SourceArgs, output: OutputArgs) -> Result<(), CliError> {
    let detail = source.open().await?.plane().await?.attempt(id).await?;
    if output.json {
        return print_json(&detail);
    }
    let a = &detail.attempt;
    println!("attempt     {}", a.attempt_id);
    println!(
        "task        {}/{} (attempt #{})",
        a.target_id, a.task_id, a.attempt_number
    );
    println!("status      {}", a.status);
    if let Some(executor) = &a.executor {
        println!(
            "executor    {executor} {}",
            a.job_name.as_deref().unwrap_or("")
        );
    }
    if let Some(started) = a.started_at {
        println!("started     {started}");
    }
    if let Some(ended) = a.ended_at {
        println!("ended       {ended}");
    }
    if let Some(failure) = &a.failure {
        println!(
            "failure     {} ({}): {}",
            failure.kind, failure.class, failure.summary
        );
    }
    if let Some(reason) = &a.invalidated_reason {
        println!("invalidated {reason}");
    }
    if let Some(branch) = &a.branch {
        println!(
            "branch      {branch} {}",
            a.commit_sha.as_deref().unwrap_or("")
        );
    }
    if let Some(pr) = &detail.pull_request {
        println!("pull request #{} {} ({:?})", pr.number, pr.url, pr.state);
    }
    println!(
        "model       {} calls, {} tokens in, {} out; {} test runs",
        a.model_calls, a.tokens_in, a.tokens_out, a.test_runs
    );
    if !detail.artifacts.is_empty() {
        println!("artifacts");
        for artifact in &detail.artifacts {
            println!(
                "  {} {:<14} {:>9} B  {}",
                artifact.sha256,
                artifact.kind,
                artifact.size,
                artifact.name.as_deref().unwrap_or("")
            );
        }
    }
    println!(
        "events ({} of {})",
        detail.events.len(),
        detail.events_total
    );
    for event in &detail.events {
        println!(
            "  {:>8}  {}  {:<24}  {}",
            event.seq,
            event.timestamp,
            event.event_type,
            event.actor_id.as_deref().unwrap_or("-")
        );
    }
    Ok(())
}
