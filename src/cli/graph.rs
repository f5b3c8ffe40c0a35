//! `leviathan graph summary|rebuild`.

use std::{collections::BTreeMap, process::ExitCode};

use leviathan::core::{GraphSummary, Ledger, LedgerError};

use super::{
    error::{CliError, finish},
    output::{init_logging, print_json, progress},
    source::{OutputArgs, SourceArgs},
};

/// The projection of the log: targets, tasks, attempts, artifacts, pull requests.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Counts of nodes, edges, attempts and tasks by status
    Summary {
        #[command(flatten)]
        source: SourceArgs,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Replay the whole log into a fresh projection and replace the stored one (store only)
    Rebuild {
        #[command(flatten)]
        source: SourceArgs,
        #[command(flatten)]
        output: OutputArgs,
    },
}

pub(crate) async fn run(args: Args) -> ExitCode {
    init_logging("warn", false);
    finish(match args.command {
        Command::Summary { source, output } => summary(source, output).await,
        Command::Rebuild { source, output } => rebuild(source, output).await,
    })
}

fn counts(map: &BTreeMap<String, u64>) -> String {
    if map.is_empty() {
        return "none".to_owned();
    }
    map.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

async fn summary(source: SourceArgs, output: OutputArgs) -> Result<(), CliError> {
    let summary: GraphSummary = source.open().await?.plane().await?.summary().await?;
    if output.json {
        return print_json(&summary);
    }
    match summary.checkpoint {
        Some(head) => println!("checkpoint:  seq {} hash {}", head.seq, head.hash),
        None => println!("checkpoint:  none (the log is empty)"),
    }
    println!(
        "nodes:       {} ({})",
        summary.total_nodes,
        counts(&summary.nodes_by_type)
    );
    println!(
        "edges:       {} ({})",
        summary.total_edges,
        counts(&summary.edges_by_type)
    );
    println!("attempts:    {}", counts(&summary.attempts_by_status));
    println!("tasks:       {}", counts(&summary.tasks_by_status));
    println!("open PRs:    {}", summary.open_prs);
    println!("anomalies:   {}", summary.anomalies);
    Ok(())
}

async fn rebuild(source: SourceArgs, output: OutputArgs) -> Result<(), CliError> {
    let stores = source.store_only("graph rebuild").await?;
    let ledger = match Ledger::open(stores.events.clone(), stores.graphs.clone()).await {
        Ok(ledger) => ledger,
        // An unreadable stored graph is what a rebuild is for: start from an empty one.
        Err(LedgerError::GraphStore(error)) => {
            tracing::warn!(%error, "the stored graph cannot be loaded; clearing it before the rebuild");
            stores
                .graphs
                .clear()
                .await
                .map_err(|e| CliError::failure(format!("cannot clear the stored graph: {e}")))?;
            Ledger::open(stores.events.clone(), stores.graphs.clone()).await?
        }
        Err(other) => return Err(other.into()),
    };
    let bar = progress(None, "rebuilding the graph from the log");
    let folded = ledger.rebuild().await?;
    ledger.flush().await?;
    bar.finish_and_clear();
    let checkpoint = ledger.checkpoint().await;
    if output.json {
        return print_json(&serde_json::json!({"events": folded, "checkpoint": checkpoint}));
    }
    println!(
        "rebuilt the graph of {} from {folded} events (checkpoint seq {})",
        stores.location,
        checkpoint.map_or(0, |h| h.seq)
    );
    Ok(())
}
