//! The `leviathan` binary: the control plane (`serve`) and the operator's commands.

mod cli;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Leviathan: an event-sourced control plane for autonomous coding agents.
#[derive(Parser, Debug)]
#[command(name = "leviathan", version, after_long_help = cli::ENVIRONMENT_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// One variant per command group; each module exposes `Args` and `run`.
#[derive(Subcommand, Debug)]
enum Command {
    /// Run the control plane (HTTP API) on a store
    Serve(cli::serve::Args),
    /// The event log: verify, tail, export, import, head
    Events(cli::events::Args),
    /// The projection: summary, rebuild
    Graph(cli::graph::Args),
    /// The verifiable log: key, prove, verify, check-consistency
    Log(cli::log::Args),
    /// Attempts: list, show
    Attempts(cli::attempts::Args),
    /// Failed and timed-out attempts, most recent first
    Failures(cli::failures::Args),
    /// Declare an attempt void (its task becomes pending again)
    Invalidate(cli::invalidate::Args),
    /// The control plane's bearer token: show, rotate
    Token(cli::token::Args),
    /// Kubernetes: job-spec (the Job the executor submits, as a dry run)
    K8s(cli::k8s::Args),
    /// Run one attempt end to end (configured by the environment; executors start this)
    Worker(cli::worker::Args),
    /// Run the scheduler: sync backlogs, dispatch attempts, record every decision
    Schedule(cli::schedule::Args),
}

fn main() -> ExitCode {
    // Every command may hold a credential (the control plane's keys, the forge token, a token
    // to call the API with): processes of the same uid, such as the code a worker runs, must
    // not read this one's memory or environment.
    let _ = rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable);
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => cli::serve::run(args).await,
            Command::Events(args) => cli::events::run(args).await,
            Command::Graph(args) => cli::graph::run(args).await,
            Command::Log(args) => cli::log::run(args).await,
            Command::Attempts(args) => cli::attempts::run(args).await,
            Command::Failures(args) => cli::failures::run(args).await,
            Command::Invalidate(args) => cli::invalidate::run(args).await,
            Command::Token(args) => cli::token::run(args).await,
            Command::K8s(args) => cli::k8s::run(args).await,
            Command::Worker(args) => cli::worker::run(args).await,
            Command::Schedule(args) => cli::schedule::run(args).await,
        }
    })
}
