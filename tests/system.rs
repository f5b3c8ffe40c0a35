//! The whole loop as one system test, every Leviathan piece the real binary, all on 127.0.0.1:
//! `leviathan serve` on PostgreSQL → `leviathan schedule` (a daemon, against the control plane's
//! API, with the Kubernetes executor) → the testkit's fake Kubernetes API server, whose kubelet
//! runs the real `leviathan worker` → `FakeGitHub` (git push over smart HTTP, pull requests
//! through octocrab) and `ScriptedLlm` → artifacts uploaded and the result bundle posted back.
//!
//! The second test runs the same loop through faults: the control plane is SIGKILLed after the
//! first pull request and restarted on the same database and port while the scheduler keeps
//! retrying, then the scheduler is SIGKILLed with an attempt running and restarted.
//!
//! Every process is started by the test and stopped by its pid (SIGKILL when dropped, so also
//! when a test fails); every wait is a bounded poll.

mod support {
    pub(crate) mod system;
    #[allow(
        dead_code,
        reason = "the system test uses the forge, the model and the cluster, not the in-process control plane"
    )]
    pub(crate) mod worker;
}

use std::{
    collections::BTreeSet,
    net::{Ipv4Addr, SocketAddr},
    time::Instant,
};

use leviathan::api::{client::ControlPlaneClient, wire::AttemptsQuery};
use leviathan_core::{
    AttemptId, AttemptResult, Event, GraphSummary,
    catalogue::{AttemptCreated, AttemptFailed, RetryScheduled},
    executor::protocol::parse_worker_result,
    model::{FailureClass, FailureKind},
};
use leviathan_exec_k8s::names;
use leviathan_testkit::github::PrState;
use support::system::{
    FLAKY_TASK, GATED_TASK, NOT_READY_TASK, READY_TASKS, TARGET, World, completed, fold, until,
};
use support::worker::{OWNER, REPO};

fn any_port() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loop_delivers_one_pull_request_per_ready_task() {
    let started = Instant::now();
    let world = World::start().await;
    world.open_gate();
    let control_plane = world.control_plane(any_port()).await;
    let client = control_plane.client();
    let scheduler = world.scheduler(&control_plane.url, "scheduler");

    // A reviewer merges the first pull request; the scheduler sees it merged on the forge.
    let first = until("a first pull request", || async {
        world.pulls().into_iter().next()
    })
    .await;
    world
        .outside
        .github
        .merge_pr(OWNER, REPO, first.number)
        .await
        .expect("merge");
    until("every ready task completed, the merge recorded", || async {
        let summary = client.graph_summary().await.ok()?;
        (completed(&summary) == READY_TASKS.len() as u64 && summary.open_prs == 2).then_some(())
    })
    .await;
    let (code, scheduler_log) = scheduler.terminate().await;
    assert_eq!(code, 0, "the scheduler stops cleanly");

    let events = world.export(&control_plane.url).await;
    assert_one_pull_request_per_ready_task(&world);
    let merged: Vec<_> = world.pulls().into_iter().filter(|p| p.merged).collect();
    assert_eq!(merged.len(), 1);
    assert_eq!(count(&events, "pr.merged"), 1, "the merge is in the log");
    assert_retried_per_policy(&events);
    assert_not_ready_task_untouched(&events);
    assert_pod_logs_stored(&world, &client, &events).await;
    assert_graph_agrees_with_log(&world, &client, &control_plane.url, &events).await;

    let (code, control_plane_log) = control_plane.process.terminate().await;
    assert_eq!(code, 0, "the control plane stops cleanly");
    assert_store_agrees_with_log(&world, &events).await;
    assert_no_secret_in(&world, &[&scheduler_log, &control_plane_log]);
    assert_eq!(finished_jobs_left(&world), Vec::<String>::new());
    eprintln!("the loop took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loop_survives_killing_the_control_plane_and_the_scheduler() {
    let started = Instant::now();
    let world = World::start().await;
    let control_plane = world.control_plane(any_port()).await;
    let addr = control_plane.addr;
    let client = control_plane.client();
    let mut scheduler = world.scheduler(&control_plane.url, "scheduler");

    // The control plane dies once the first pull request is there, with work in flight. It
    // waits for the flaky task's first attempt to end: a model call cut by the kill is retried
    // through the gateway, and the scripted model would count the lost request as a round.
    until(
        "a first pull request, the flaky task's first attempt ended",
        || async {
            let first = world.pulls().into_iter().next()?;
            flaky_first_attempt_ended(&client).await.then_some(first)
        },
    )
    .await;
    let acknowledged = event_ids(&client).await;
    let mark = scheduler.mark();
    let killed_control_plane_log = control_plane.process.kill();

    // The scheduler keeps going: its client retries, its cycles fail until the plane is back
    // on the same database and port.
    scheduler.wait_for_line_after(mark, "cycle failed").await;
    let control_plane = world.control_plane(addr).await;
    let after_restart = event_ids(&client).await;
    assert!(
        acknowledged.is_subset(&after_restart),
        "events acknowledged before the kill are lost: {:?}",
        acknowledged.difference(&after_restart).collect::<Vec<_>>()
    );

    // The scheduler dies while the gated task's Job runs (its tests wait at the gate), once
    // every attempt is dispatched; a new scheduler follows that attempt instead of dispatching
    // another.
    let gated = until(
        "every attempt dispatched, the gated one waiting",
        || async { gated_attempt_once_all_dispatched(&world, &client).await },
    )
    .await;
    scheduler.assert_running();
    let acknowledged = event_ids(&client).await;
    let killed_scheduler_log = scheduler.kill();
    let mut scheduler = world.scheduler(&control_plane.url, "restarted scheduler");
    scheduler
        .wait_for_line(&format!("reattach {TARGET}/{GATED_TASK} attempt={gated}"))
        .await;
    world.open_gate();

    until("every ready task completed", || async {
        let summary = client.graph_summary().await.ok()?;
        (completed(&summary) == READY_TASKS.len() as u64).then_some(())
    })
    .await;
    let (code, scheduler_log) = scheduler.terminate().await;
    assert_eq!(code, 0, "the scheduler stops cleanly");

    let events = world.export(&control_plane.url).await;
    let ids: BTreeSet<String> = events.iter().map(|e| e.event_id.to_string()).collect();
    assert!(
        acknowledged.is_subset(&ids),
        "events acknowledged before the scheduler's kill are lost: {:?}",
        acknowledged.difference(&ids).collect::<Vec<_>>()
    );
    let attempts_of_gated = of::<AttemptCreated>(&events)
        .into_iter()
        .filter(|(_, c)| c.task_id.as_str() == GATED_TASK)
        .count();
    assert_eq!(
        attempts_of_gated, 1,
        "followed after the restart, not dispatched again"
    );
    assert_one_pull_request_per_ready_task(&world);
    assert_retried_per_policy(&events);
    assert_not_ready_task_untouched(&events);
    assert_graph_agrees_with_log(&world, &client, &control_plane.url, &events).await;
    let (code, control_plane_log) = control_plane.process.terminate().await;
    assert_eq!(code, 0, "the control plane stops cleanly");
    assert_store_agrees_with_log(&world, &events).await;
    assert_no_secret_in(
        &world,
        &[
            &killed_control_plane_log,
            &killed_scheduler_log,
            &scheduler_log,
            &control_plane_log,
        ],
    );
    finished_jobs_left(&world);
    eprintln!("the loop with faults took {:?}", started.elapsed());
}

/// The gated task's live attempt, once the flaky task's retry is dispatched too (no dispatch is
/// left to do) and every live attempt's Job exists (no dispatch is between `attempt.created` and
/// its Job), if that is the case now.
async fn gated_attempt_once_all_dispatched(
    world: &World,
    client: &ControlPlaneClient,
) -> Option<AttemptId> {
    let page = client
        .attempts(&AttemptsQuery {
            target: Some(TARGET.parse().unwrap()),
            ..AttemptsQuery::default()
        })
        .await
        .ok()?;
    let jobs: BTreeSet<String> = world
        .cluster
        .fake
        .jobs()
        .into_iter()
        .filter_map(|job| job.metadata.name)
        .collect();
    let live: Vec<_> = page
        .attempts
        .iter()
        .filter(|a| a.status.is_live())
        .collect();
    let retried = page
        .attempts
        .iter()
        .any(|a| a.task_id.as_str() == FLAKY_TASK && a.attempt_number == 2);
    let all_submitted = live
        .iter()
        .all(|a| jobs.contains(&names::job_name(&a.attempt_id)));
    let gated = live.iter().find(|a| a.task_id.as_str() == GATED_TASK)?;
    (retried && all_submitted).then(|| gated.attempt_id.clone())
}

/// Whether the flaky task's first attempt has ended (it fails as a whole).
async fn flaky_first_attempt_ended(client: &ControlPlaneClient) -> bool {
    let query = AttemptsQuery {
        target: Some(TARGET.parse().unwrap()),
        ..AttemptsQuery::default()
    };
    client.attempts(&query).await.is_ok_and(|page| {
        page.attempts.iter().any(|a| {
            a.task_id.as_str() == FLAKY_TASK && a.attempt_number == 1 && !a.status.is_live()
        })
    })
}

/// Every event id the control plane has now (each was acknowledged to its writer).
async fn event_ids(client: &ControlPlaneClient) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    let mut after = 0;
    loop {
        let page = client.events_page(after, 1000).await.expect("events page");
        let Some(last) = page.events.last() else {
            return ids;
        };
        after = last.seq;
        ids.extend(page.events.iter().map(|e| e.event_id.to_string()));
    }
}

fn count(events: &[Event], event_type: &str) -> usize {
    events.iter().filter(|e| e.event_type == event_type).count()
}

/// The typed payloads of the events of `P`'s type, with their events.
fn of<P: leviathan_core::Payload + serde::de::DeserializeOwned>(
    events: &[Event],
) -> Vec<(&Event, P)> {
    events
        .iter()
        .filter(|e| e.event_type == P::EVENT_TYPE)
        .map(|e| {
            (
                e,
                serde_json::from_value(e.payload.clone()).expect("typed payload"),
            )
        })
        .collect()
}

/// Exactly one pull request per ready task (open or merged, by its `agent/<task>-` head), and
/// none for the task that is not ready.
fn assert_one_pull_request_per_ready_task(world: &World) {
    let pulls = world.pulls();
    for task in READY_TASKS {
        let prefix = format!("agent/{task}-");
        let of_task: Vec<_> = pulls
            .iter()
            .filter(|p| p.head.starts_with(&prefix))
            .collect();
        assert_eq!(of_task.len(), 1, "pull requests of {task}: {pulls:#?}");
        assert!(
            of_task[0].state == PrState::Open || of_task[0].merged,
            "{:#?}",
            of_task[0]
        );
    }
    assert_eq!(pulls.len(), READY_TASKS.len(), "{pulls:#?}");
    assert!(
        !pulls
            .iter()
            .any(|p| p.head.starts_with(&format!("agent/{NOT_READY_TASK}-"))),
        "{pulls:#?}"
    );
}

/// The flaky task's first attempt failed (tests, transient) after its repair round, a retry was
/// scheduled with the target's backoff, and attempt 2 ran after it and succeeded; every other
/// ready task succeeded at once.
fn assert_retried_per_policy(events: &[Event]) {
    let created = of::<AttemptCreated>(events);
    let failed = of::<AttemptFailed>(events);
    let succeeded: BTreeSet<String> = events
        .iter()
        .filter(|e| e.event_type == "attempt.succeeded")
        .map(|e| e.payload["attempt_id"].as_str().unwrap().to_owned())
        .collect();
    let attempts = |task: &str| -> Vec<&(&Event, AttemptCreated)> {
        created
            .iter()
            .filter(|(_, c)| c.task_id.as_str() == task)
            .collect()
    };
    for task in READY_TASKS.into_iter().filter(|t| *t != FLAKY_TASK) {
        let numbers: Vec<u32> = attempts(task)
            .iter()
            .map(|(_, c)| c.attempt_number)
            .collect();
        assert_eq!(numbers, [1], "attempts of {task}");
        assert!(succeeded.contains(attempts(task)[0].1.attempt_id.as_str()));
    }

    let flaky = attempts(FLAKY_TASK);
    let numbers: Vec<u32> = flaky.iter().map(|(_, c)| c.attempt_number).collect();
    assert_eq!(numbers, [1, 2], "attempts of {FLAKY_TASK}");
    let (first, second) = (&flaky[0].1.attempt_id, &flaky[1].1.attempt_id);
    let failures: Vec<_> = failed
        .iter()
        .filter(|(_, f)| &f.attempt_id == first)
        .collect();
    assert_eq!(failures.len(), 1, "{failed:#?}");
    let (failure_event, failure) = failures[0];
    assert_eq!(
        failure.failure_kind,
        FailureKind::TestsFailed,
        "{failure:?}"
    );
    assert_eq!(failure.failure_class, Some(FailureClass::Transient));
    let rounds = events
        .iter()
        .filter(|e| e.event_type == "tests.failed" && e.payload["attempt_id"] == first.as_str())
        .count();
    assert_eq!(
        rounds, 2,
        "attempt 1 failed its tests in round 0 and its repair round"
    );
    assert!(succeeded.contains(second.as_str()), "attempt 2 succeeded");

    let retries: Vec<_> = of::<RetryScheduled>(events)
        .into_iter()
        .filter(|(_, r)| r.task_id.as_str() == FLAKY_TASK)
        .collect();
    assert_eq!(retries.len(), 1, "{retries:#?}");
    let (retry_event, retry) = &retries[0];
    assert_eq!(retry.target_id.as_str(), TARGET);
    assert_eq!(retry.retry_number, 2);
    assert_eq!(retry.attempt_id.as_ref(), Some(first));
    assert!(
        (retry.backoff_seconds - 1.0).abs() < 1e-9,
        "the target's initial backoff, without jitter: {retry:?}"
    );
    let second_created = flaky[1].0;
    assert!(failure_event.seq < retry_event.seq && retry_event.seq < second_created.seq);
    assert!(
        second_created.timestamp >= retry.not_before,
        "attempt 2 was created at {}, before the backoff ended at {}",
        second_created.timestamp,
        retry.not_before
    );
    assert!(retry.not_before > failure_event.timestamp);
}

/// The task that is not ready is known (synced from the backlog) and never got an attempt.
fn assert_not_ready_task_untouched(events: &[Event]) {
    assert!(
        events
            .iter()
            .any(|e| e.event_type == "task.created" && e.payload["task_id"] == NOT_READY_TASK),
        "{NOT_READY_TASK} was synced from the backlog"
    );
    assert!(
        !of::<AttemptCreated>(events)
            .iter()
            .any(|(_, c)| c.task_id.as_str() == NOT_READY_TASK),
        "{NOT_READY_TASK} is not ready and must have no attempt"
    );
}

/// Every attempt's pod log is an artifact (`artifact.created` of kind `log`, recorded for the
/// attempt), served by the control plane, holding the worker's log lines and no credential.
async fn assert_pod_logs_stored(world: &World, client: &ControlPlaneClient, events: &[Event]) {
    let attempts = of::<AttemptCreated>(events);
    assert_eq!(attempts.len(), READY_TASKS.len() + 1, "one retry in all");
    for (_, attempt) in &attempts {
        let logs: Vec<_> = events
            .iter()
            .filter(|e| {
                e.event_type == "artifact.created"
                    && e.payload["kind"] == "log"
                    && e.payload["attempt_id"] == attempt.attempt_id.as_str()
                    && e.payload["name"]
                        .as_str()
                        .is_some_and(|n| n.starts_with("log of pod "))
            })
            .collect();
        assert_eq!(logs.len(), 1, "pod log of {}", attempt.attempt_id);
        let sha256 = logs[0].payload["sha256"].as_str().unwrap().parse().unwrap();
        let content = client.get_artifact(&sha256).await.expect("the pod log");
        let text = String::from_utf8_lossy(&content);
        for line in ["model call 1 (round 0)", "running tests: "] {
            assert!(
                text.contains(line),
                "the pod log of {} lacks `{line}`:\n{text}",
                attempt.attempt_id
            );
        }
        // It ends with the worker's result line, which agrees with the log of events.
        let result = parse_worker_result(&text).expect("a result line");
        let succeeded = events.iter().any(|e| {
            e.event_type == "attempt.succeeded"
                && e.payload["attempt_id"] == attempt.attempt_id.as_str()
        });
        assert_eq!(
            matches!(result, AttemptResult::Succeeded { .. }),
            succeeded,
            "{result:?}"
        );
        assert_no_secret_in(world, &[&text]);
    }
}

/// The control plane's graph equals a fresh fold of the exported log, and the chain verifies.
async fn assert_graph_agrees_with_log(
    world: &World,
    client: &ControlPlaneClient,
    api: &str,
    events: &[Event],
) {
    let served = client.graph_summary().await.expect("graph summary");
    let folded = fold(events);
    assert_eq!(
        served, folded,
        "the served graph differs from the log's fold"
    );
    assert_eq!(folded.anomalies, 0, "{folded:#?}");
    assert_eq!(
        folded.checkpoint.map(|h| h.seq),
        events.last().map(|e| e.seq)
    );
    world
        .cli(&["events", "verify", "--api", api])
        .await
        .expect(0);
}

/// With the control plane stopped, the stored graph rebuilt from the stored log (by `graph
/// rebuild`) has the fold's summary, and the stored chain verifies.
async fn assert_store_agrees_with_log(world: &World, events: &[Event]) {
    let store = world.db.url();
    world
        .cli(&["graph", "rebuild", "--store", store])
        .await
        .expect(0);
    let summary = world
        .cli(&["graph", "summary", "--store", store, "--json"])
        .await
        .expect(0);
    let rebuilt: GraphSummary = serde_json::from_str(&summary.stdout).expect("summary JSON");
    assert_eq!(rebuilt, fold(events));
    world
        .cli(&["events", "verify", "--store", store])
        .await
        .expect(0);
}

fn assert_no_secret_in(world: &World, texts: &[&str]) {
    for secret in world.secrets() {
        for text in texts {
            assert!(!text.contains(&secret), "a credential leaked:\n{text}");
        }
    }
}

/// The Jobs left in the cluster, all finished (a scheduler deletes the Jobs it follows to their
/// end; one killed in between leaves them to `ttlSecondsAfterFinished`), with no container
/// process left behind.
fn finished_jobs_left(world: &World) -> Vec<String> {
    let processes = world.cluster.fake.container_processes();
    assert!(processes.is_empty(), "{processes:#?}");
    let strays = world.cluster.fake.stray_processes();
    assert!(strays.is_empty(), "{strays:?}");
    world
        .cluster
        .fake
        .jobs()
        .into_iter()
        .map(|job| {
            let name = job.metadata.name.clone().unwrap_or_default();
            let finished =
                job.status.as_ref().is_some_and(|status| {
                    status.conditions.iter().flatten().any(|c| {
                        (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True"
                    })
                });
            assert!(finished, "Job {name} is not finished: {:#?}", job.status);
            name
        })
        .collect()
}
