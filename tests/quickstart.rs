//! The quickstart runs in CI so it can never rot: `examples/quickstart.rs` is compiled in as a
//! module and its `run` goes end to end on 127.0.0.1. Its workers are the real `leviathan worker`
//! binary: the example re-executes itself as `quickstart worker`, which runs the same
//! `leviathan_worker::run_from_env`, but a test binary cannot (its arguments belong to the test
//! harness).

// `main` and the self re-execution are the examples' entry points, unused here.
#[allow(dead_code)]
#[path = "../examples/quickstart.rs"]
mod quickstart;

use leviathan_core::model::{AttemptStatus, TaskStatus};

fn leviathan_worker() -> quickstart::demo::WorkerCommand {
    quickstart::demo::WorkerCommand::new(env!("CARGO_BIN_EXE_leviathan"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quickstart_delivers_every_ready_task_as_a_pull_request() {
    let outcome = quickstart::run(leviathan_worker())
        .await
        .expect("the quickstart runs");
    assert_eq!(outcome.problems(), Vec::<String>::new(), "{outcome:#?}");

    // Three ready tasks, three pull requests, on the forge as in the graph.
    assert_eq!(outcome.pull_requests.len(), 3, "{outcome:#?}");
    assert_eq!(outcome.forge_pull_requests, 3);
    for task in ["docs-guide", "docs-faq", "greet-script"] {
        let task = outcome.task(task).expect("task in the outcome");
        assert_eq!(task.status, Some(TaskStatus::Completed), "{task:#?}");
        assert_eq!(task.attempts.len(), 1, "{task:#?}");
        let attempt = &task.attempts[0];
        assert_eq!(attempt.status, AttemptStatus::Succeeded);
        assert_eq!(attempt.executor, "local");
        let url = attempt.pr_url.as_deref().expect("a pull request URL");
        assert!(
            outcome.pull_requests.iter().any(|pr| pr.url == url
                && pr.branch == format!("agent/{}-{}", task.task_id, attempt.attempt_id)),
            "{url} in {:#?}",
            outcome.pull_requests
        );
    }

    // Per-attempt worker tokens throughout: one minted per attempt, and the workers' events
    // (started, tests, commit, pull request, success) written with them.
    assert_eq!(outcome.worker_tokens, 3, "{outcome:#?}");
    assert!(outcome.worker_events >= 3 * 4, "{outcome:#?}");
    assert_eq!(outcome.outside_scope, 0);

    // The dependant's attempt was created after its dependency completed.
    let guide = outcome.task("docs-guide").unwrap();
    let faq = outcome.task("docs-faq").unwrap();
    let guide_completed = guide.completed_seq.expect("docs-guide completed");
    assert!(
        faq.attempts[0].created_seq > guide_completed,
        "docs-faq created at seq {} before docs-guide completed at {guide_completed}",
        faq.attempts[0].created_seq
    );

    // The repair task: the first answer failed its tests, the repair round passed.
    let greet = &outcome.task("greet-script").unwrap().attempts[0];
    assert_eq!((greet.model_calls, greet.test_runs), (2, 2));
    assert_eq!(
        (guide.attempts[0].model_calls, faq.attempts[0].model_calls),
        (1, 1)
    );

    // The task that is not ready was recorded and never attempted.
    let changelog = outcome.task("changelog").unwrap();
    assert_eq!(changelog.status, Some(TaskStatus::Pending));
    assert!(changelog.attempts.is_empty());

    // The chain verifies over every event of the log, and the summary agrees with the graph.
    let leviathan::api::wire::ChainVerification::Verified(report) = &outcome.chain else {
        panic!("the chain does not verify: {:?}", outcome.chain);
    };
    assert_eq!(report.events, outcome.events);
    assert_eq!(
        outcome.summary.checkpoint.as_ref().map(|h| h.seq),
        Some(outcome.events)
    );
    assert_eq!(outcome.summary.open_prs, 3);
    assert_eq!(outcome.summary.nodes_by_type.get("ModelCall"), Some(&4));
    // The local executor stored each worker's log.
    assert_eq!(outcome.executor_logs, 3, "{outcome:#?}");
}
