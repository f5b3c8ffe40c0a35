//! Leviathan's three stores on PostgreSQL: the hash-chained event log ([`EventStore`]), the
//! persisted projection ([`GraphStore`]) and content-addressed artifacts ([`ArtifactStore`]),
//! through sqlx with embedded migrations.
//!
//! ```no_run
//! # async fn demo() -> Result<(), leviathan_core::EventStoreError> {
//! let store = leviathan_store_pg::PgStore::connect("postgres://leviathan@db:5432/leviathan").await?;
//! let (events, graphs, artifacts) = (store.events(), store.graphs(), store.artifacts());
//! # Ok(()) }
//! ```
//!
//! # Schema
//!
//! Applied by [`PgStore::connect`] on every start (sqlx's migrator holds an advisory lock while
//! it runs, so any number of processes may start at once; applied migrations are skipped).
//!
//! - `events`: `seq bigint` primary key, unique `event_id`, unique `hash`, `"timestamp"
//!   timestamptz`, `event_type`, `actor_id`, `prev_hash`, `payload jsonb`, `canonical bytea`,
//!   `stream` and `stream_version` (unique together when there is a stream). `event_id` and
//!   `stream` compare byte for byte (`COLLATE "C"`). `canonical` holds the exact bytes that were
//!   hashed: reads and verification decode them and nothing else, because jsonb reorders keys and
//!   normalises numbers. The other columns are for SQL queries. A trigger refuses `UPDATE`,
//!   `DELETE` and `TRUNCATE` on `events` (SQLSTATE 23001, "events is append-only").
//! - `streams` (stream → version) and `log_head`, a single row (seq, hash) that only the writer
//!   moves, under its lock.
//! - `graph_nodes`, `graph_edges`, `graph_streams`, `graph_anomalies` (keyed by seq; JSON bodies
//!   of core's graph types) and the single-row `graph_checkpoint`, locked by every save.
//! - `artifacts`: `sha256 bytea` primary key, `content bytea`, `size`.
//! - `log_tiles` (`level`, `idx`, `hashes` of 512 bytes): the full tiles of the log's Merkle tree
//!   ([`leviathan_core::tlog`]), inserted by the writer's group statement with the events that
//!   fill them; `log_checkpoints` (tree size → signed note); `log_tree.built`, false only for a
//!   log that held events before the tree existed: the next connect builds its tree from the
//!   stored hashes under the writer lock (appends wait), checks it, and reports progress through
//!   [`PgOptions::tree_build_progress`].
//! - `bundles` (`bundle`, `content`: SHA-256 digests): each bundle id the control plane ingested,
//!   bound to its content by one insert-or-return statement.
//!
//! # One writer per database
//!
//! The head row (`log_head`: seq and hash) is the only place the tail is ever read (never
//! `ORDER BY seq DESC LIMIT 1`, never a timestamp). A group is written by one statement that
//! takes the writer lock (`pg_advisory_xact_lock(<fixed key>)`), moves the head row from the
//! position the group was sequenced after to its new tail, and only once the head has moved
//! inserts the events; if the head is no longer where the writer read it, the statement writes
//! nothing. So processes sharing a database append to one linear chain: a writer whose read was
//! overtaken reads again inside `BEGIN ISOLATION LEVEL READ COMMITTED; SELECT
//! pg_advisory_xact_lock(<fixed key>)`, where nobody can overtake it, and writes there. The writer
//! compares every head it reads with its cached tail: moving on means another process appended;
//! moving back is reported as corruption.
//!
//! # Group commit
//!
//! Within a process, every `append` goes to one writer task. The caller validates its batch
//! (pure), queues it and waits. The writer drains the queue into a group (bounded by
//! [`PgOptions::max_group_requests`] and [`PgOptions::max_group_events`]; when the queue holds
//! fewer requests than the last group had, it yields to the scheduler up to twice first, so that
//! callers it has just answered can join). When nobody else has appended since its last group,
//! it knows the head and skips the read: it sequences each request with core's
//! [`Sequencer`](leviathan_core::store::sequencer::Sequencer) (duplicates, conflicts and stream
//! expectations per request; later requests see earlier ones) on what it knew after its last
//! commit, and writes all accepted events with one `INSERT ... SELECT FROM UNNEST(...)`, the
//! streams, the head and a `NOTIFY` in one self-committing statement, which first checks under
//! the lock that the head is where this writer left it, that none of the group's ids is stored
//! and that every stream is at the version assumed. When any of that does not hold (another
//! process appended, a retried batch, a stream this writer has not seen), the statement writes
//! nothing, and the group is sequenced again after a read of the head, the stored events with the
//! group's ids (`event_id = ANY($1)`) and the group's stream versions (`stream = ANY($2)`), then
//! written by the same statement. Each caller then gets its own answer: a request
//! refused by the sequencer gets its own error while the others land. If the group's statement
//! fails permanently (bad data), each request is retried alone so that only the faulty one fails.
//! A group costs one round trip and one commit whatever its size while this writer is the only
//! one appending, two or three after a miss, and more when another process overtakes it between
//! read and write.
//!
//! The writer's connection keeps its statements' generic plans (`plan_cache_mode =
//! force_generic_plan`): planning its big statement afresh took a third of its server time with
//! small groups. `enable_seqscan = off` keeps those plans index lookups however small the log was
//! when they were made, and `jit = off` keeps the disabled scans' huge cost from having every
//! statement JIT-compiled. The pool's connections plan each statement with its arguments
//! (`force_custom_plan`), since a generic plan cached on a small log would stay a scan.
//!
//! # Live subscriptions
//!
//! [`EventStore::subscribe`] is core's catch-up-then-follow ([`leviathan_core::store::follow`]):
//! it reads by `seq` and waits on a head watch. The watch is moved by this process's writer after
//! each commit and by a LISTEN task (sqlx `PgListener`) on the `leviathan_events` channel, which
//! every writer notifies with its new head seq at commit. After a lost connection the task
//! reconnects, LISTENs again and re-reads the head row, so a notification missed meanwhile still
//! wakes subscribers; since delivery is by `seq`, wake-ups can never skip or reorder events.
//!
//! # Errors
//!
//! sqlx errors are mapped by kind and SQLSTATE, never by message text. Transient
//! (`Unavailable`, retrying may help): I/O errors and lost connections, pool timeouts, 08xxx
//! (connection exceptions), 40001 and 40P01 (serialization failure, deadlock), 57P01–57P03
//! (shutdown, crash, starting up), 53xxx (insufficient resources). Everything else (constraint
//! violations, data errors, missing database, authentication, bad configuration) is permanent
//! (`Backend`); stored bytes that do not decode are `Corrupt`. An append whose connection is lost
//! fails with a transient error; it may or may not have committed, and retrying it is safe
//! because appends are idempotent by `event_id`. Nothing acknowledged is ever lost: a caller is
//! answered only after `COMMIT` returned. Errors and `Debug` output show the database URL with its
//! password masked.
//!
//! # Connections
//!
//! A pool of [`PgOptions::max_connections`] for reads, the graph and artifacts
//! (`application_name` `leviathan`), plus the writer's own connection (`leviathan-writer`) and the
//! LISTEN connection (`leviathan-listener`). TLS is rustls (ring, webpki roots), negotiated as the
//! URL says: `?sslmode=disable|prefer|require|verify-ca|verify-full` (default `prefer`),
//! `sslrootcert=<path>` for a private CA, `sslcert`/`sslkey` for client certificates.
//!
//! # Tests
//!
//! Feature `testkit` provides [`testkit::TestDatabase`], a fresh database per test
//! that is dropped afterwards, for this crate's tests and for other crates testing against
//! PostgreSQL.
#![warn(missing_docs)]

mod artifacts;
mod bundles;
mod error;
mod events;
mod graph;
mod location;
mod log;
mod options;
#[cfg(feature = "testkit")]
pub mod testkit;
mod tree;

use std::{fmt, sync::Arc};

use leviathan_core::{
    ArtifactStore, BundleIndex, EventStore, EventStoreError, GraphStore, tlog::TreeStore,
};
use sqlx::{PgPool, postgres::PgPoolOptions};

pub use crate::{log::WRITER_LOCK_KEY, options::PgOptions, tree::BuildProgress};

use crate::{
    artifacts::PgArtifactStore,
    bundles::PgBundleIndex,
    events::PgEventStore,
    graph::PgGraphStore,
    location::Location,
    log::{application, read_head},
};

/// The schema, embedded at compile time.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Leviathan's stores on one PostgreSQL database. Cloning shares the pool, the writer and the
/// listener; they stop when the last clone (and the last store handed out) is dropped.
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    location: Location,
    events: PgEventStore,
    graphs: PgGraphStore,
    artifacts: PgArtifactStore,
}

impl PgStore {
    /// Connects with default [`PgOptions`], runs the embedded migrations, starts the writer and
    /// the LISTEN task. Must be called within a tokio runtime.
    pub async fn connect(url: &str) -> Result<Self, EventStoreError> {
        Self::connect_with(url, PgOptions::default()).await
    }

    /// Connects with `options`, runs the embedded migrations, starts the writer and the LISTEN
    /// task. Errors name the database with its password masked.
    pub async fn connect_with(url: &str, options: PgOptions) -> Result<Self, EventStoreError> {
        options.check()?;
        let location = Location::parse(url)?;
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            .connect_with(location.connect_options(application::POOL))
            .await
            .map_err(|e| location.connect_error("connecting", &e))?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| location.migrate_error(&e))?;
        tree::build_if_needed(
            &pool,
            &location,
            WRITER_LOCK_KEY,
            options.tree_build_progress.as_ref(),
        )
        .await?;
        let head = read_head(&pool).await?;
        let events = PgEventStore::start(
            pool.clone(),
            location.clone(),
            &options,
            head.map_or(0, |h| h.seq),
        );
        tracing::debug!(database = %location, head = head.map_or(0, |h| h.seq), "connected");
        Ok(Self {
            graphs: PgGraphStore::new(pool.clone(), location.clone()),
            artifacts: PgArtifactStore::new(pool.clone(), location.clone()),
            pool,
            location,
            events,
        })
    }

    /// The event log.
    pub fn events(&self) -> Arc<dyn EventStore> {
        Arc::new(self.events.clone())
    }

    /// The projection store.
    pub fn graphs(&self) -> Arc<dyn GraphStore> {
        Arc::new(self.graphs.clone())
    }

    /// The log's Merkle tree and its recorded checkpoints.
    pub fn tree(&self) -> Arc<dyn TreeStore> {
        Arc::new(self.events.clone())
    }

    /// Bundle ids bound to their content.
    pub fn bundles(&self) -> Arc<dyn BundleIndex> {
        Arc::new(PgBundleIndex::new(self.pool.clone()))
    }

    /// The artifact store.
    pub fn artifacts(&self) -> Arc<dyn ArtifactStore> {
        Arc::new(self.artifacts.clone())
    }

    /// The connection pool, for benchmarks and tests that run SQL of their own against the same
    /// database (never needed to use the stores).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

impl fmt::Debug for PgStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgStore")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}
