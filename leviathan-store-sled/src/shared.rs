//! The handle the three stores of one open database share, and how it closes.

use std::{
    fmt,
    fs::File,
    path::PathBuf,
    sync::{Arc, Mutex},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use leviathan_core::EventStoreError;
use tokio::sync::{mpsc, watch};

use crate::{
    error,
    layout::Trees,
    writer::{AppendJob, flush_and_sync},
};

/// How long closing waits for sled's pool threads to release the database file.
const RELEASE_WAIT: Duration = Duration::from_secs(2);

/// What the three stores of one database share.
pub(crate) struct Shared {
    pub(crate) db: sled::Db,
    /// sled's data file, to fsync after sled's own flush (see [`flush_and_sync`]).
    pub(crate) data_file: Arc<File>,
    pub(crate) trees: Trees,
    pub(crate) location: PathBuf,
    pub(crate) artifacts_dir: PathBuf,
    /// The last `seq` readers may see: flushed ([`Durability::Flush`]) or committed.
    pub(crate) visible: Arc<watch::Sender<u64>>,
    /// Held while the graph trees are saved, loaded or cleared, so no load sees half a save.
    pub(crate) graph_lock: Mutex<()>,
    /// The writer's queue; `None` only while dropping.
    pub(crate) jobs: Option<mpsc::Sender<AppendJob>>,
    pub(crate) writer: Option<JoinHandle<()>>,
    /// Declared last so that it is dropped after `db` and `trees`.
    pub(crate) _release: LockRelease,
}

impl Shared {
    /// The writer's queue.
    pub(crate) fn jobs(&self) -> Result<&mpsc::Sender<AppendJob>, EventStoreError> {
        self.jobs
            .as_ref()
            .ok_or_else(|| error::writer_stopped(&self.location))
    }

    /// The database directory, for messages.
    pub(crate) fn location_text(&self) -> String {
        self.location.display().to_string()
    }

    /// The last `seq` readers may see.
    pub(crate) fn visible_seq(&self) -> u64 {
        *self.visible.borrow()
    }
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("location", &self.location)
            .field("visible", &self.visible_seq())
            .finish_non_exhaustive()
    }
}

impl Drop for Shared {
    /// Stops the writer after it answered everything queued, then flushes, so that the database
    /// is closed and its lock released when the last handle is gone.
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(writer) = self.writer.take()
            && writer.join().is_err()
        {
            tracing::error!(location = %self.location.display(), "the sled writer thread panicked");
        }
        if let Err(err) = flush_and_sync(&self.db, &self.data_file) {
            tracing::error!(location = %self.location.display(), error = %err, "final flush failed");
        }
    }
}

/// Waits, once the database is dropped, until sled has really closed its data file.
///
/// sled finishes some writes on its own thread pool; those jobs keep the file, and so its
/// exclusive lock, open for a moment after the last handle is gone. Waiting here (bounded,
/// usually well under a millisecond) makes "dropped" mean "closed": the directory can be opened
/// again at once, in this process or another.
pub(crate) struct LockRelease {
    pub(crate) data_file: PathBuf,
}

impl Drop for LockRelease {
    #[cfg(unix)]
    fn drop(&mut self) {
        use rustix::fs::{FlockOperation, flock};
        let Ok(file) = File::open(&self.data_file) else {
            return;
        };
        let deadline = Instant::now() + RELEASE_WAIT;
        loop {
            match flock(&file, FlockOperation::NonBlockingLockExclusive) {
                // Closing `file` releases the probe's own lock.
                Ok(()) => return,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_micros(200));
                }
                Err(err) => {
                    tracing::warn!(
                        file = %self.data_file.display(),
                        error = %err,
                        "the sled data file is still locked after closing"
                    );
                    return;
                }
            }
        }
    }

    #[cfg(not(unix))]
    fn drop(&mut self) {}
}
