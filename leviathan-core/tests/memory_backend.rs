//! The conformance suite on the in-memory backends.

use std::sync::Arc;

use async_trait::async_trait;
use leviathan_core::{
    Sha256Digest,
    memory::{MemoryArtifactStore, MemoryBundleIndex, MemoryEventStore, MemoryGraphStore},
    testkit::conformance::{Harness, Stores},
};

struct Memory;

#[async_trait]
impl Harness for Memory {
    async fn open(&self) -> Stores {
        let artifacts = MemoryArtifactStore::new();
        let events = MemoryEventStore::new();
        Stores {
            tree: Arc::new(events.clone()),
            bundles: Arc::new(MemoryBundleIndex::new()),
            events: Arc::new(events),
            graphs: Arc::new(MemoryGraphStore::new()),
            artifacts: Arc::new(artifacts.clone()),
            guard: Some(Box::new(artifacts)),
        }
    }

    async fn reopen(&self, stores: Stores) -> Stores {
        stores
    }

    async fn corrupt_artifact(&self, stores: &Stores, sha256: &Sha256Digest) {
        let artifacts = stores
            .guard
            .as_ref()
            .and_then(|g| g.downcast_ref::<MemoryArtifactStore>())
            .expect("memory guard");
        artifacts.corrupt(sha256);
    }
}

mod conformance {
    use super::Memory;
    leviathan_core::conformance_tests!(Memory);
}
