//! The backend conformance suite on sled, each test on a fresh database directory.

use std::fs;

use async_trait::async_trait;
use leviathan_core::{
    Sha256Digest,
    testkit::conformance::{Harness, Stores},
};
use leviathan_store_sled::SledStore;
use tempfile::TempDir;

/// Keeps a test's database directory (and its store) alive.
struct Guard {
    store: SledStore,
    _dir: TempDir,
}

struct Sled;

fn stores(store: SledStore, dir: TempDir) -> Stores {
    Stores {
        events: store.events(),
        graphs: store.graphs(),
        artifacts: store.artifacts(),
        tree: store.tree(),
        bundles: store.bundles(),
        guard: Some(Box::new(Guard { store, _dir: dir })),
    }
}

#[async_trait]
impl Harness for Sled {
    async fn open(&self) -> Stores {
        let dir = TempDir::new().expect("temp dir");
        let store = SledStore::open(dir.path()).expect("open a fresh sled store");
        stores(store, dir)
    }

    /// Drops every handle (closing the database) and opens the directory again.
    async fn reopen(&self, stores: Stores) -> Stores {
        let guard = stores
            .guard
            .and_then(|g| g.downcast::<Guard>().ok())
            .expect("sled guard");
        let Guard { store, _dir: dir } = *guard;
        drop((
            stores.events,
            stores.graphs,
            stores.artifacts,
            stores.tree,
            stores.bundles,
            store,
        ));
        let store = SledStore::open(dir.path()).expect("reopen the sled store");
        self::stores(store, dir)
    }

    async fn corrupt_artifact(&self, stores: &Stores, sha256: &Sha256Digest) {
        let guard = stores
            .guard
            .as_ref()
            .and_then(|g| g.downcast_ref::<Guard>())
            .expect("sled guard");
        let path = guard.store.artifact_path(sha256);
        let mut bytes = fs::read(&path).expect("the stored blob");
        match bytes.first_mut() {
            Some(b) => *b ^= 0x01,
            None => bytes.push(0),
        }
        fs::write(&path, bytes).expect("damage the blob");
    }
}

mod conformance {
    use super::Sled;
    leviathan_core::conformance_tests!(Sled);
}
