//! The main job, offline and all-in-one: a demo repository with a backlog of four tasks (one
//! depending on another, one whose tests fail until a repair round, one not ready), served by a
//! local GitHub-shaped server; the control plane on the embedded store (sled, in a temporary
//! directory) served over HTTP on 127.0.0.1; the scheduler with the local executor, whose
//! workers are this program re-executed as `quickstart worker`; and a scripted model. It runs
//! until nothing is left to do, prints each pull request, the graph summary and the verified
//! chain, and exits 0 only if everything happened as it should.
//!
//! ```sh
//! cargo run --example quickstart
//! ```
//!
//! With `-- --serve`, the control plane stays up after the run (until Ctrl-C) and the demo
//! prints the console's URL and a reader token to sign in with.
//!
//! `examples/custom_executor.rs` runs the same demo on an executor of its own.

#[path = "demo/mod.rs"]
pub(crate) mod demo;

use std::{process::ExitCode, sync::Arc};

use demo::{Demo, DemoResult, Outcome, WorkerCommand};
use leviathan_exec_local::{LocalConfig, LocalExecutor};

fn main() -> ExitCode {
    demo::main(run)
}

/// Runs the demo with the local executor starting `worker` for each attempt.
pub(crate) async fn run(worker: WorkerCommand) -> DemoResult<Outcome> {
    let demo = Demo::start().await?;
    let args: Vec<&str> = worker.args.iter().map(String::as_str).collect();
    let mut config = LocalConfig::default()
        .worker(&worker.program, &args)
        .workspace_root(demo.attempts_dir())
        .control_plane_url(demo.api_url())
        .artifacts(demo.artifacts());
    for (variable, value) in demo.worker_secrets() {
        config = config.secret(variable, value);
    }
    demo.schedule(Arc::new(LocalExecutor::new(config))).await?;
    demo.finish().await
}
