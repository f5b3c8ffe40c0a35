//! The backend conformance suite on PostgreSQL: every test gets a fresh database.

use async_trait::async_trait;
use leviathan_core::{
    Sha256Digest,
    testkit::conformance::{Harness, Stores},
};
use leviathan_store_pg::{PgStore, testkit::TestDatabase};

struct Pg;

fn stores(store: PgStore, database: TestDatabase) -> Stores {
    Stores {
        events: store.events(),
        graphs: store.graphs(),
        artifacts: store.artifacts(),
        tree: store.tree(),
        bundles: store.bundles(),
        guard: Some(Box::new(Guard {
            store,
            _database: database,
        })),
    }
}

/// What a test's stores keep alive; fields drop in order, the store before its database.
struct Guard {
    store: PgStore,
    _database: TestDatabase,
}

#[async_trait]
impl Harness for Pg {
    async fn open(&self) -> Stores {
        let database = TestDatabase::create().await;
        let store = database.store().await;
        stores(store, database)
    }

    /// Drops every handle (stopping the writer and the listener) and connects again.
    async fn reopen(&self, stores: Stores) -> Stores {
        let guard = stores
            .guard
            .and_then(|g| g.downcast::<Guard>().ok())
            .expect("the pg guard");
        let Guard {
            store,
            _database: database,
        } = *guard;
        drop((
            stores.events,
            stores.graphs,
            stores.artifacts,
            stores.tree,
            stores.bundles,
            store,
        ));
        let store = database.store().await;
        self::stores(store, database)
    }

    /// Flips the low bit of the first stored byte (or stores one byte for empty content), with
    /// raw SQL, as a failing disk would.
    async fn corrupt_artifact(&self, stores: &Stores, sha256: &Sha256Digest) {
        let guard = stores
            .guard
            .as_ref()
            .and_then(|g| g.downcast_ref::<Guard>())
            .expect("the pg guard");
        let changed = sqlx::query(
            "UPDATE artifacts SET content = CASE WHEN length(content) = 0 THEN '\\x00'::bytea \
             ELSE set_byte(content, 0, get_byte(content, 0) # 1) END WHERE sha256 = $1",
        )
        .bind(sha256.as_bytes().as_slice())
        .execute(guard.store.pool())
        .await
        .expect("corrupting an artifact")
        .rows_affected();
        assert_eq!(changed, 1, "the artifact to corrupt is stored");
    }
}

mod conformance {
    use super::Pg;
    leviathan_core::conformance_tests!(Pg);
}
