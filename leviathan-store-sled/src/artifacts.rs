//! Artifacts as files beside the database: `artifacts/<sha[0:2]>/<sha>`, written atomically
//! (temporary file, fsync, rename, fsync of the directory), deduplicated, hash-checked on read.

use std::{
    fmt,
    fs::{self, File},
    io::{self, Write},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use async_trait::async_trait;
use bytes::Bytes;
use leviathan_core::{
    ArtifactError, ArtifactStore, Sha256Digest,
    store::{StoredArtifact, verify_content},
};

use crate::{error, shared::Shared};

/// Directory of artifacts inside the database directory.
const ARTIFACTS: &str = "artifacts";
/// Directory of partly written blobs inside the artifact directory (emptied on open).
const TEMPORARY: &str = ".tmp";

/// Names temporary files uniquely within the process (the database has one owning process).
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Creates the artifact directory of the database in `location` and removes blobs left half
/// written by a crash. Returns the artifact directory.
pub(crate) fn prepare_dir(location: &Path) -> io::Result<PathBuf> {
    let root = location.join(ARTIFACTS);
    let temporary = root.join(TEMPORARY);
    fs::create_dir_all(&temporary)?;
    for entry in fs::read_dir(&temporary)? {
        fs::remove_file(entry?.path())?;
    }
    Ok(root)
}

/// The [`ArtifactStore`] of a [`SledStore`](crate::SledStore).
#[derive(Clone)]
pub(crate) struct SledArtifactStore {
    shared: Arc<Shared>,
}

impl fmt::Debug for SledArtifactStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SledArtifactStore")
            .field("root", &self.shared.artifacts_dir)
            .finish_non_exhaustive()
    }
}

impl SledArtifactStore {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// Runs file work on tokio's blocking pool.
    async fn blocking<T: Send + 'static>(
        &self,
        what: &'static str,
        f: impl FnOnce(&Path) -> Result<T, ArtifactError> + Send + 'static,
    ) -> Result<T, ArtifactError> {
        let root = self.shared.artifacts_dir.clone();
        tokio::task::spawn_blocking(move || f(&root))
            .await
            .map_err(|err| ArtifactError::Backend {
                reason: error::task_failed(what, err),
                source: None,
            })?
    }
}

/// Fsyncs a directory so that entries created or renamed in it survive a crash.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// True when `path` holds exactly the content addressed by `sha256` (size first, then hash).
fn holds(path: &Path, sha256: &Sha256Digest, size: u64) -> Result<bool, ArtifactError> {
    match fs::metadata(path) {
        Ok(meta) if meta.len() != size => Ok(false),
        Ok(_) => {
            let stored = fs::read(path).map_err(|e| error::artifact_io(e, "reading", path))?;
            Ok(Sha256Digest::of(&stored) == *sha256)
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(err) => Err(error::artifact_io(err, "inspecting", path)),
    }
}

/// Writes `content` to `temp`, fsynced.
fn write_synced(temp: &Path, content: &[u8]) -> io::Result<()> {
    let mut file = File::create_new(temp)?;
    file.write_all(content)?;
    file.sync_all()
}

fn put(root: &Path, content: &[u8]) -> Result<StoredArtifact, ArtifactError> {
    let sha256 = Sha256Digest::of(content);
    let size = content.len() as u64;
    let target = root.join(sha256.shard_path());
    // An intact copy is kept as is; a damaged one is replaced below.
    if holds(&target, &sha256, size)? {
        return Ok(StoredArtifact {
            sha256,
            size,
            created: false,
        });
    }
    let shard = target
        .parent()
        .ok_or_else(|| ArtifactError::Backend {
            reason: format!("{} has no parent directory", target.display()),
            source: None,
        })?
        .to_path_buf();
    if !shard.is_dir() {
        fs::create_dir_all(&shard).map_err(|e| error::artifact_io(e, "creating", &shard))?;
        sync_dir(root).map_err(|e| error::artifact_io(e, "syncing", root))?;
    }
    let temp = root.join(TEMPORARY).join(format!(
        "{}.{}",
        sha256.to_hex(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let written = write_synced(&temp, content)
        .map_err(|e| error::artifact_io(e, "writing", &temp))
        .and_then(|()| {
            fs::rename(&temp, &target).map_err(|e| error::artifact_io(e, "renaming into", &target))
        });
    if let Err(err) = written {
        // Nothing half-written stays behind; a leftover is also removed on the next open.
        let _ = fs::remove_file(&temp);
        return Err(err);
    }
    sync_dir(&shard).map_err(|e| error::artifact_io(e, "syncing", &shard))?;
    Ok(StoredArtifact {
        sha256,
        size,
        created: true,
    })
}

fn get(root: &Path, sha256: &Sha256Digest) -> Result<Bytes, ArtifactError> {
    let path = root.join(sha256.shard_path());
    match fs::read(&path) {
        Ok(content) => verify_content(sha256, Bytes::from(content)),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Err(ArtifactError::NotFound(*sha256)),
        Err(err) => Err(error::artifact_io(err, "reading", &path)),
    }
}

fn exists(root: &Path, sha256: &Sha256Digest) -> Result<bool, ArtifactError> {
    let path = root.join(sha256.shard_path());
    match fs::metadata(&path) {
        Ok(meta) => Ok(meta.is_file()),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(err) => Err(error::artifact_io(err, "inspecting", &path)),
    }
}

#[async_trait]
impl ArtifactStore for SledArtifactStore {
    async fn put(&self, content: Bytes) -> Result<StoredArtifact, ArtifactError> {
        self.blocking("storing an artifact", move |root| put(root, &content))
            .await
    }

    async fn get(&self, sha256: &Sha256Digest) -> Result<Bytes, ArtifactError> {
        let sha256 = *sha256;
        self.blocking("reading an artifact", move |root| get(root, &sha256))
            .await
    }

    async fn exists(&self, sha256: &Sha256Digest) -> Result<bool, ArtifactError> {
        let sha256 = *sha256;
        self.blocking("looking up an artifact", move |root| exists(root, &sha256))
            .await
    }
}
