//! The scheduler's metrics, scraped over HTTP from the server `leviathan schedule
//! --metrics-bind` runs, after real cycles (the real ledger, forge and backlog fetch against
//! `FakeGitHub`, a scripted executor, tokio's paused clock).

mod support {
    pub(crate) mod scheduler;
}

use leviathan::scheduler::serve_metrics;
use leviathan_core::model::{FailureClass, FailureKind};
use support::scheduler::{Step, World, freeze};

const BACKLOG: &str = "tasks:\n  - id: alpha\n    title: Alpha\n    priority: high\n    ready: true\n    allowed_paths: [docs/alpha.md]\n  - id: beta\n    title: Beta\n    priority: medium\n    ready: false\n    allowed_paths: [docs/beta.md]\n";

async fn scrape(url: &str) -> String {
    let response = reqwest::get(url).await.expect("scrape");
    assert!(response.status().is_success(), "{}", response.status());
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("application/openmetrics-text; version=1.0.0"),
        "{content_type}"
    );
    response.text().await.unwrap()
}

fn assert_has(text: &str, line: &str) {
    assert!(text.contains(line), "missing {line:?} in\n{text}");
}

#[tokio::test(start_paused = true)]
async fn metrics_count_cycles_dispatches_skips_and_breakers() {
    let _frozen = freeze();
    let world = World::start(BACKLOG).await;
    let config = world.target(
        "autonomy: {enabled: true}",
        "  max_attempts_per_task: 5\n  circuit_breaker: {consecutive_failures_threshold: 1, cooldown_minutes: 10}\n  retry: {initial_backoff_seconds: 1, jitter: false}\n",
    );
    world.executor.script(
        "alpha",
        &[Step::Fail(
            FailureKind::TestsFailed,
            FailureClass::Transient,
        )],
    );
    let scheduler = world.builder(config, 1).build().unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/metrics", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let render = {
        let scheduler = scheduler.clone();
        move || scheduler.metrics()
    };
    let server = tokio::spawn(serve_metrics(listener, render, async move {
        let _ = stopped.await;
    }));

    let before = scrape(&url).await;
    assert_has(&before, "leviathan_scheduler_cycles_total 0\n");
    assert_has(&before, "leviathan_scheduler_dispatches_total 0\n");

    // Cycle 1 dispatches alpha (which fails) and skips beta; cycle 2 opens the breaker.
    assert_eq!(scheduler.run_once().await.unwrap().dispatched.len(), 1);
    scheduler.wait_idle().await;
    scheduler.run_once().await.unwrap();

    let after = scrape(&url).await;
    assert_has(&after, "leviathan_scheduler_cycles_total 2\n");
    assert_has(&after, "leviathan_scheduler_dispatches_total 1\n");
    assert_has(
        &after,
        "leviathan_scheduler_skips_total{reason=\"not_ready\"} 2\n",
    );
    assert_has(
        &after,
        "leviathan_scheduler_breaker_open{target=\"demo\"} 1\n",
    );
    assert_has(&after, "leviathan_scheduler_attempts_running 0\n");

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}
