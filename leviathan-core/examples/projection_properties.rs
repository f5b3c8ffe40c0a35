//! Property tests of your own against the projection, with the strategies of the `proptest`
//! feature: what a crate embedding `leviathan-core` writes in its `tests/`. `cargo test` runs
//! this file (`test = true` in the crate's manifest).
//!
//! ```toml
//! [dev-dependencies]
//! leviathan-core = { version = "0.1", features = ["proptest"] }
//! proptest = "1"
//! ```

/// Nothing to do when run as a program: `cargo test` runs the properties.
fn main() {}

/// The properties; a test harness build runs them.
#[cfg(test)]
mod properties {
    use leviathan_core::{
        Graph,
        graph::Node,
        model::{PrState, TaskStatus},
        testkit::{
            seal_all,
            strategy::{event, history, mixed_history},
        },
    };
    use proptest::prelude::*;

    fn fold(events: Vec<leviathan_core::NewEvent>) -> Graph {
        let mut graph = Graph::new();
        for event in seal_all(events) {
            graph.apply(&event);
        }
        graph
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

        /// A completed task never has a live attempt.
        #[test]
        fn completed_tasks_have_no_live_attempt(events in history()) {
            let graph = fold(events);
            for node in graph.nodes() {
                if let Node::Task(task) = node {
                    prop_assert!(task.status != TaskStatus::Completed || task.live_attempt.is_none());
                }
            }
        }

        /// Each target counts exactly its open pull requests.
        #[test]
        fn open_pull_requests_are_counted(events in history()) {
            let graph = fold(events);
            for target in graph.targets() {
                let open = graph
                    .nodes()
                    .filter(|n| matches!(n, Node::PullRequest(pr) if pr.target_id == target.target_id && pr.state == PrState::Open))
                    .count();
                prop_assert_eq!(u64::from(target.open_prs), open as u64);
            }
        }

        /// Whatever else a client sends, the fold goes on: one checkpoint per event.
        #[test]
        fn the_fold_never_stops(events in mixed_history(event())) {
            let count = events.len() as u64;
            prop_assert_eq!(fold(events).checkpoint_seq(), count);
        }
    }
}
