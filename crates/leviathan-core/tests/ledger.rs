//! How the ledger keeps its stored projection whole when the graph store fails.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use async_trait::async_trait;
use leviathan_core::{
    Graph, GraphStore, GraphStoreError, Head,
    fixtures::lifecycle,
    graph::{GraphDelta, GraphSnapshot},
    ledger::{Expectations, Ledger},
    memory::{MemoryEventStore, MemoryGraphStore},
};

/// A memory graph store whose next save fails while `failing` is set, like a full disk.
#[derive(Debug, Default)]
struct FailingSaves {
    stored: MemoryGraphStore,
    failing: AtomicBool,
}

#[async_trait]
impl GraphStore for FailingSaves {
    async fn load(&self) -> Result<GraphSnapshot, GraphStoreError> {
        self.stored.load().await
    }

    async fn save(&self, previous: u64, delta: &GraphDelta) -> Result<(), GraphStoreError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(GraphStoreError::Unavailable {
                reason: "the disk is full".into(),
                source: None,
            });
        }
        self.stored.save(previous, delta).await
    }

    async fn checkpoint(&self) -> Result<Option<Head>, GraphStoreError> {
        self.stored.checkpoint().await
    }

    async fn clear(&self) -> Result<(), GraphStoreError> {
        self.stored.clear().await
    }
}

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
