//! Opening a database directory: checks of its format and tail, the writer thread, the stores.

use std::{
    fmt,
    fs::File,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use leviathan_core::{
    ArtifactStore, BundleIndex, EventStore, EventStoreError, GraphStore, Head, Sha256Digest,
    tlog::TreeStore,
};
use tokio::sync::{mpsc, watch};

use crate::{
    artifacts::{self, SledArtifactStore},
    bundles::SledBundleIndex,
    error,
    events::SledEventStore,
    graph::SledGraphStore,
    layout::{self, Trees},
    options::{Durability, SledOptions},
    shared::{LockRelease, Shared},
    tree,
    writer::Writer,
};

/// The file sled locks, inside the database directory.
const SLED_DATA_FILE: &str = "db";
/// How many append requests may wait for the writer before callers wait to enqueue.
const QUEUE_DEPTH: usize = 4096;
/// How often sled flushes in the background in [`Durability::Flush`] mode, for writes that are
/// not appends (graph saves).
const BACKGROUND_FLUSH: Duration = Duration::from_millis(500);

/// One opened database directory: an event log, a graph store and an artifact store.
///
/// Clones share the database; it closes (writer stopped, everything flushed, lock released)
/// when the last clone and the last store obtained from it are dropped.
#[derive(Clone)]
pub struct SledStore {
    shared: Arc<Shared>,
}

impl fmt::Debug for SledStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SledStore")
            .field("location", &self.shared.location)
            .finish_non_exhaustive()
    }
}

impl SledStore {
    /// Opens (creating when absent) the database in directory `path` with default options:
    /// every append is flushed to disk before it is acknowledged.
    ///
    /// Fails with [`EventStoreError::Locked`] when the directory is already open, in this
    /// process or another. Needs no async runtime; the stores' methods need a tokio runtime.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, EventStoreError> {
        Self::open_with(path, SledOptions::default())
    }

    /// Opens the database in directory `path` with `options`.
    pub fn open_with(
        path: impl AsRef<Path>,
        options: SledOptions,
    ) -> Result<Self, EventStoreError> {
        let location = path.as_ref().to_path_buf();
        let shown = location.display().to_string();
        let flush_every = match options.durability {
            Durability::Flush => BACKGROUND_FLUSH,
            Durability::Periodic { every } => every,
        };
        let flush_every_ms = u64::try_from(flush_every.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let db = sled::Config::new()
            .path(&location)
            .cache_capacity(options.cache_capacity)
            .flush_every_ms(Some(flush_every_ms))
            .open()
            .map_err(|err| {
                if error::is_lock_error(&err) {
                    EventStoreError::Locked {
                        location: shown.clone(),
                    }
                } else {
                    error::event_store(err, &format!("opening sled database {shown}"))
                }
            })?;
        let trees = Trees::open(&db)
            .map_err(|e| error::event_store(e, &format!("opening trees of {shown}")))?;
        check_format(&db, &trees, &shown)?;
        let tail = read_tail(&trees, &shown)?;
        let frontier = tree::restore_frontier(&trees, tail.map_or(0, |h| h.seq), &shown)?;
        let artifacts_dir = artifacts::prepare_dir(&location).map_err(|err| {
            EventStoreError::backend(format!("preparing the artifact directory of {shown}"), err)
        })?;

        let visible = Arc::new(watch::channel(tail.map_or(0, |h| h.seq)).0);
        let (jobs, queue) = mpsc::channel(QUEUE_DEPTH);
        let data_path = location.join(SLED_DATA_FILE);
        let data_file = File::open(&data_path).map_err(|err| {
            EventStoreError::backend(format!("opening {} to sync it", data_path.display()), err)
        })?;
        let data_file = Arc::new(data_file);
        let writer = Writer::new(
            db.clone(),
            data_file.clone(),
            trees.clone(),
            options.durability,
            (tail, frontier),
            visible.clone(),
            shown.clone(),
        );
        let thread = std::thread::Builder::new()
            .name("leviathan-sled-writer".into())
            .spawn(move || writer.run(queue))
            .map_err(|err| {
                EventStoreError::backend(format!("starting the writer thread of {shown}"), err)
            })?;
        Ok(Self {
            shared: Arc::new(Shared {
                db,
                data_file,
                trees,
                location,
                artifacts_dir,
                visible,
                graph_lock: Mutex::new(()),
                jobs: Some(jobs),
                writer: Some(thread),
                _release: LockRelease {
                    data_file: data_path,
                },
            }),
        })
    }

    /// The event log.
    pub fn events(&self) -> Arc<dyn EventStore> {
        Arc::new(SledEventStore::new(self.shared.clone()))
    }

    /// The persisted projection.
    pub fn graphs(&self) -> Arc<dyn GraphStore> {
        Arc::new(SledGraphStore::new(self.shared.clone()))
    }

    /// The log's Merkle tree and its recorded checkpoints.
    pub fn tree(&self) -> Arc<dyn TreeStore> {
        Arc::new(SledEventStore::new(self.shared.clone()))
    }

    /// Bundle ids bound to their content.
    pub fn bundles(&self) -> Arc<dyn BundleIndex> {
        Arc::new(SledBundleIndex::new(self.shared.clone()))
    }

    /// The artifact store.
    pub fn artifacts(&self) -> Arc<dyn ArtifactStore> {
        Arc::new(SledArtifactStore::new(self.shared.clone()))
    }

    /// The database directory.
    pub fn path(&self) -> &Path {
        &self.shared.location
    }

    /// Where the artifact with this address is (or would be) stored.
    pub fn artifact_path(&self, sha256: &Sha256Digest) -> PathBuf {
        self.shared.artifacts_dir.join(sha256.shard_path())
    }
}

/// Refuses databases of another format, upgrades those of the previous one and marks new ones.
fn check_format(db: &sled::Db, trees: &Trees, shown: &str) -> Result<(), EventStoreError> {
    let stored = trees
        .meta
        .get(layout::FORMAT_KEY)
        .map_err(|e| error::event_store(e, &format!("reading the format of {shown}")))?;
    let mark = || {
        trees
            .meta
            .insert(layout::FORMAT_KEY, layout::FORMAT)
            .map_err(|e| error::event_store(e, &format!("marking the format of {shown}")))
    };
    match stored {
        Some(format) if format.as_ref() == layout::FORMAT => Ok(()),
        Some(format) if format.as_ref() == layout::FORMAT_2 => {
            build_tree(trees, shown)?;
            mark()?;
            Ok(())
        }
        Some(format) if format.as_ref() == layout::FORMAT_1 => {
            drop_format_1_projection(db, trees, shown)?;
            build_tree(trees, shown)?;
            mark()?;
            Ok(())
        }
        Some(other) => Err(EventStoreError::Backend {
            reason: format!(
                "{shown} holds format `{}`, this build reads `{}`",
                String::from_utf8_lossy(&other),
                String::from_utf8_lossy(layout::FORMAT)
            ),
            source: None,
        }),
        None => {
            mark()?;
            Ok(())
        }
    }
}

/// Builds the Merkle tree of a database written before it existed (formats 1 and 2).
fn build_tree(trees: &Trees, shown: &str) -> Result<(), EventStoreError> {
    let tail = read_tail(trees, shown)?;
    tree::build(trees, tail.map_or(0, |h| h.seq), shown)
}

/// Upgrades a [`layout::FORMAT_1`] database: its events are kept as they are, its stored
/// projection is dropped (the projection is derived: the next ledger rebuilds it from the log).
/// Repeating it after a crash half-way is harmless; the format is marked only at the end.
fn drop_format_1_projection(
    db: &sled::Db,
    trees: &Trees,
    shown: &str,
) -> Result<(), EventStoreError> {
    let failed = |e| error::event_store(e, &format!("upgrading the projection of {shown}"));
    let mut meta = sled::Batch::default();
    meta.remove(layout::CHECKPOINT_KEY);
    meta.remove(layout::FORMAT_1_SAVING_KEY);
    trees.graph_meta.apply_batch(meta).map_err(failed)?;
    for tree in layout::FORMAT_1_GRAPH_TREES {
        db.drop_tree(tree).map_err(failed)?;
    }
    tracing::info!(
        location = shown,
        "upgraded the store's layout; the projection is rebuilt from the log"
    );
    Ok(())
}

/// Reads the stored tail and checks it against the last stored event (a point lookup each).
fn read_tail(trees: &Trees, shown: &str) -> Result<Option<Head>, EventStoreError> {
    let read = |e| error::event_store(e, &format!("reading the tail of {shown}"));
    let tail = match trees.meta.get(layout::TAIL_KEY).map_err(read)? {
        None => None,
        Some(bytes) => {
            Some(
                layout::decode_head(&bytes).ok_or_else(|| EventStoreError::Corrupt {
                    seq: None,
                    reason: format!("{shown}: the stored tail is malformed"),
                })?,
            )
        }
    };
    let last = trees.events.last().map_err(read)?;
    let last_seq = match &last {
        None => None,
        Some((key, _)) => {
            Some(
                layout::decode_u64(key).ok_or_else(|| EventStoreError::Corrupt {
                    seq: None,
                    reason: format!("{shown}: the last event has a malformed key"),
                })?,
            )
        }
    };
    if tail.map(|h| h.seq) != last_seq {
        return Err(EventStoreError::Corrupt {
            seq: last_seq,
            reason: format!(
                "{shown}: the stored tail (seq {}) disagrees with the last stored event (seq {})",
                tail.map_or(0, |h| h.seq),
                last_seq.unwrap_or(0)
            ),
        });
    }
    Ok(tail)
}
