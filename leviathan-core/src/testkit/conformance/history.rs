//! Conformance of the [`GraphStore`](crate::GraphStore) history queries: every backend answers
//! them from its own indexes exactly as the in-memory graph answers them.

use super::Harness;
use crate::{
    event::NewEvent,
    graph::{AttemptNode, AttemptQuery, EdgeKind, FailureQuery, Graph, NodeId},
    id::TargetId,
    ledger::{Expectations, Ledger, PersistPolicy},
    model::{AttemptStatus, Priority},
    store::GraphStore,
    testkit::Scenario,
};

/// Two targets, each with tasks whose first attempt fails and second succeeds, and one attempt
/// left running.
fn two_targets() -> Vec<NewEvent> {
    let mut events = Vec::new();
    for (prefix, target, tasks) in [("ha", "demo", 5), ("hb", "other", 3)] {
        let mut s = Scenario::new(prefix, target);
        s.register_target();
        for t in 0..tasks {
            let task = format!("task-{t}");
            let (first, second) = (format!("{prefix}-{t}-a"), format!("{prefix}-{t}-b"));
            s.create_task(&task, &[], Priority::Medium)
                .start_attempt(&task, &first, 1)
                .fail_attempt(&task, &first, 2)
                .start_attempt(&task, &second, 2)
                .succeed_attempt(&task, &second, t as i64 + 1);
        }
        s.create_task("open", &[], Priority::Low).start_attempt(
            "open",
            &format!("{prefix}-live"),
            1,
        );
        events.extend(s.build());
    }
    events
}

fn ids(attempts: &[impl std::borrow::Borrow<AttemptNode>]) -> Vec<String> {
    attempts
        .iter()
        .map(|a| a.borrow().attempt_id.to_string())
        .collect()
}

/// Pages through every attempt query in pages of 2 on the store and on the graph.
async fn same_attempt_pages(store: &dyn GraphStore, graph: &Graph) {
    let targets = [None, Some("demo"), Some("other")];
    let statuses = [
        None,
        Some(AttemptStatus::Failed),
        Some(AttemptStatus::Succeeded),
        Some(AttemptStatus::Running),
    ];
    for target in targets {
        for status in statuses {
            let mut query = AttemptQuery {
                target: target.map(|t| TargetId::new(t).expect("valid id")),
                status,
                limit: 2,
                cursor: None,
            };
            loop {
                let stored = store.attempts(&query).await.expect("attempts");
                let (expected, next) = graph.attempts_page(&query);
                assert_eq!(ids(&stored.attempts), ids(&expected), "{query:?}");
                assert_eq!(stored.next_cursor, next, "{query:?}");
                let Some(cursor) = next else { break };
                query.cursor = Some(cursor);
            }
        }
        let mut query = FailureQuery {
            target: target.map(|t| TargetId::new(t).expect("valid id")),
            limit: 2,
            cursor: None,
        };
        loop {
            let stored = store.failures(&query).await.expect("failures");
            let (expected, next) = graph.failures_page(&query);
            assert_eq!(ids(&stored.attempts), ids(&expected), "{query:?}");
            assert_eq!(stored.next_cursor, next, "{query:?}");
            let Some(cursor) = next else { break };
            query.cursor = Some(cursor);
        }
    }
}

/// A task's attempts, an attempt's node and what it produced, for every attempt of the graph.
async fn same_attempt_details(store: &dyn GraphStore, graph: &Graph) {
    let (all, _) = graph.attempts_page(&AttemptQuery {
        limit: usize::MAX,
        ..AttemptQuery::default()
    });
    let mut produced_in_all = 0;
    for attempt in all {
        let of_task: Vec<_> = graph
            .attempts_of(&attempt.target_id, &attempt.task_id)
            .collect();
        let stored = store
            .task_attempts(&attempt.target_id, &attempt.task_id)
            .await
            .expect("task attempts");
        assert_eq!(ids(&stored), ids(&of_task));
        let id = NodeId::attempt(&attempt.attempt_id);
        assert_eq!(
            store.node(&id).await.expect("node").as_ref(),
            graph.node(&id)
        );
        let produced: Vec<_> = graph
            .edges_from(&id)
            .filter(|e| e.edge_type == EdgeKind::Produced)
            .filter_map(|e| graph.node(&e.to).cloned())
            .collect();
        assert_eq!(store.produced(&attempt.attempt_id).await.unwrap(), produced);
        produced_in_all += produced.len();
    }
    assert!(produced_in_all > 0, "the scenario's attempts produce nodes");
}

/// The history queries answer from the store as the graph does: attempts by target and status,
/// failures, a task's attempts, an attempt and what it produced, paged by cursor; through saves
/// that find attempts running and later ended (an index entry of the old status must not
/// answer), and after a restart.
pub async fn history_queries_answer_as_the_graph(h: &dyn Harness) {
    let s = h.open().await;
    let ledger = Ledger::open_with(
        s.events.clone(),
        s.graphs.clone(),
        PersistPolicy { every_events: 3 },
    )
    .await
    .expect("ledger");
    for chunk in two_targets().chunks(4) {
        ledger
            .ingest(chunk.to_vec(), Expectations::Derived)
            .await
            .expect("ingest");
    }
    let store = ledger.history().await.expect("history").clone();
    let graph = ledger.graph().await.clone();
    assert_eq!(graph.live_attempts().count(), 2);
    same_attempt_pages(&*store, &graph).await;
    same_attempt_details(&*store, &graph).await;
    assert_eq!(
        store.node(&NodeId::from_raw("attempt:none")).await.unwrap(),
        None
    );
    drop((store, ledger));

    let s = h.reopen(s).await;
    same_attempt_pages(&*s.graphs, &graph).await;
    same_attempt_details(&*s.graphs, &graph).await;
    s.graphs.clear().await.expect("clear");
    let everything = AttemptQuery {
        limit: 10,
        ..AttemptQuery::default()
    };
    let page = s.graphs.attempts(&everything).await.expect("attempts");
    assert!(page.attempts.is_empty(), "cleared");
}
