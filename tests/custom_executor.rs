//! The custom executor example runs in CI: `examples/custom_executor.rs` compiled in as a module,
//! its `NiceExecutor` running the real `leviathan worker` binary (see `tests/quickstart.rs` for
//! why not the example itself) through the whole demo.

// `main` and the self re-execution are the example's entry points, unused here.
#[allow(dead_code)]
#[path = "../examples/custom_executor.rs"]
mod custom_executor;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_custom_executor_runs_the_demo_through_nice() {
    let worker = custom_executor::demo::WorkerCommand::new(env!("CARGO_BIN_EXE_leviathan"));
    let outcome = custom_executor::run(worker)
        .await
        .expect("the custom executor example runs");
    assert_eq!(outcome.problems(), Vec::<String>::new(), "{outcome:#?}");
    assert_eq!(outcome.pull_requests.len(), 3);
    let executors: Vec<&str> = outcome
        .tasks
        .iter()
        .flat_map(|t| &t.attempts)
        .map(|a| a.executor.as_str())
        .collect();
    assert_eq!(
        executors, ["nice"; 3],
        "every attempt ran on the custom executor, through `nice` (installed wherever the tests run)"
    );
    // Each run stored the worker's log, recorded by the scheduler as the attempt's artifact.
    assert_eq!(outcome.executor_logs, 3, "{outcome:#?}");
}
