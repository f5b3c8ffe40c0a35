//! How the ledger keeps its stored projection whole when the graph store fails, and what its
//! background saves leave behind.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use async_trait::async_trait;
use leviathan_core::{
    Graph, GraphStore, GraphStoreError, Head,
    graph::{
        AttemptNode, AttemptPage, AttemptQuery, FailureQuery, GraphDelta, GraphSnapshot, Node,
        NodeId,
    },
    id::{AttemptId, TargetId, TaskId},
    ledger::{Expectations, Ledger, PersistPolicy},
    memory::{MemoryEventStore, MemoryGraphStore},
    testkit::lifecycle,
};
use tokio::sync::Semaphore;

/// The [`GraphStore`] of a wrapper whose `save` (given) differs: every other method is that of
/// `self.stored`.
macro_rules! graph_store_with_save {
    ($wrapper:ty, $($save:tt)*) => {
        #[async_trait]
        impl GraphStore for $wrapper {
        $($save)*

        async fn load(&self) -> Result<GraphSnapshot, GraphStoreError> {
            self.stored.load().await
        }

        async fn checkpoint(&self) -> Result<Option<Head>, GraphStoreError> {
            self.stored.checkpoint().await
        }

        async fn clear(&self) -> Result<(), GraphStoreError> {
            self.stored.clear().await
        }

        async fn attempts(&self, query: &AttemptQuery) -> Result<AttemptPage, GraphStoreError> {
            self.stored.attempts(query).await
        }

        async fn failures(&self, query: &FailureQuery) -> Result<AttemptPage, GraphStoreError> {
            self.stored.failures(query).await
        }

        async fn task_attempts(
            &self,
            target: &TargetId,
            task: &TaskId,
        ) -> Result<Vec<AttemptNode>, GraphStoreError> {
            self.stored.task_attempts(target, task).await
        }

        async fn node(&self, id: &NodeId) -> Result<Option<Node>, GraphStoreError> {
            self.stored.node(id).await
        }

        async fn produced(&self, attempt: &AttemptId) -> Result<Vec<Node>, GraphStoreError> {
            self.stored.produced(attempt).await
        }
        }
    };
}

/// A memory graph store whose next save fails while `failing` is set, like a full disk.
#[derive(Debug, Default)]
struct FailingSaves {
    stored: MemoryGraphStore,
    failing: AtomicBool,
}

graph_store_with_save!(
    FailingSaves,
    async fn save(&self, previous: u64, delta: &GraphDelta) -> Result<(), GraphStoreError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(GraphStoreError::Unavailable {
                reason: "the disk is full".into(),
                source: None,
            });
        }
        self.stored.save(previous, delta).await
    }
);

#[tokio::test]
async fn a_failed_save_is_made_good_by_the_next_one() {
    let graphs = Arc::new(FailingSaves::default());
    let ledger = Ledger::open(Arc::new(MemoryEventStore::default()), graphs.clone())
        .await
        .unwrap();
    let events = lifecycle("fs", "demo", 3);
    let (first, second) = events.split_at(events.len() / 2);

    ledger
        .ingest(first.to_vec(), Expectations::Derived)
        .await
        .unwrap();
    graphs.failing.store(true, Ordering::SeqCst);
    let failed = ledger.flush().await.unwrap_err();
    assert!(failed.is_transient(), "{failed}");
    assert_eq!(graphs.checkpoint().await.unwrap(), None);

    graphs.failing.store(false, Ordering::SeqCst);
    ledger
        .ingest(second.to_vec(), Expectations::Derived)
        .await
        .unwrap();
    ledger.flush().await.unwrap();
    // The failed save's changes were taken from the graph; they must still reach the store.
    let stored = Graph::from_snapshot(graphs.load().await.unwrap());
    assert!(
        stored == *ledger.graph().await,
        "the stored projection lacks changes"
    );
}

/// A memory graph store whose saves each wait for a permit, so a background save can be held
/// running while the test flushes.
#[derive(Debug)]
struct GatedSaves {
    stored: MemoryGraphStore,
    gate: Semaphore,
}

impl GatedSaves {
    fn closed() -> Self {
        Self {
            stored: MemoryGraphStore::default(),
            gate: Semaphore::new(0),
        }
    }
}

graph_store_with_save!(
    GatedSaves,
    async fn save(&self, previous: u64, delta: &GraphDelta) -> Result<(), GraphStoreError> {
        self.gate
            .acquire()
            .await
            .expect("the gate stays open")
            .forget();
        self.stored.save(previous, delta).await
    }
);

/// An embedder flushes, drops the ledger and reopens its stores: by then no background save may
/// still hold them (a sled directory would still be locked).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_returns_after_background_saves_let_go_of_the_stores() {
    for round in 0..300 {
        let graphs = Arc::new(GatedSaves::closed());
        let ledger = Arc::new(
            Ledger::open_with(
                Arc::new(MemoryEventStore::default()),
                graphs.clone(),
                PersistPolicy { every_events: 1 },
            )
            .await
            .unwrap(),
        );
        // Due at once: the save starts in the background and waits at the gate.
        ledger
            .ingest(lifecycle("bg", "demo", 1), Expectations::Derived)
            .await
            .unwrap();
        let flush = tokio::spawn({
            let ledger = ledger.clone();
            async move { ledger.flush().await }
        });
        graphs.gate.add_permits(Semaphore::MAX_PERMITS / 2);
        flush.await.unwrap().unwrap();
        assert_eq!(
            Arc::strong_count(&graphs),
            2,
            "round {round}: something besides the test and the ledger still holds the graph store"
        );
        assert_eq!(
            graphs.checkpoint().await.unwrap(),
            ledger.checkpoint().await,
            "round {round}: the flush did not save everything"
        );
    }
}
