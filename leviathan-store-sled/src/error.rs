//! Mapping sled and file-system failures onto core's error enums, transient or permanent.

use std::{io, path::Path};

use leviathan_core::{ArtifactError, EventStoreError, GraphStoreError};

/// True when an I/O failure may pass without anyone repairing the store: a full disk or quota
/// (space can be freed), an interruption, a timeout, a busy resource.
pub(crate) fn io_is_transient(err: &io::Error) -> bool {
    use io::ErrorKind::*;
    matches!(
        err.kind(),
        StorageFull
            | QuotaExceeded
            | Interrupted
            | TimedOut
            | WouldBlock
            | ResourceBusy
            | OutOfMemory
    )
}

/// How a sled failure should be reported.
enum Class {
    Transient,
    Corrupt,
    Permanent,
}

fn classify(err: &sled::Error) -> Class {
    match err {
        sled::Error::Io(io) if io_is_transient(io) => Class::Transient,
        sled::Error::Corruption { .. } => Class::Corrupt,
        _ => Class::Permanent,
    }
}

/// True for sled's refusal to open a database whose file another handle has locked.
pub(crate) fn is_lock_error(err: &sled::Error) -> bool {
    // sled 0.34 reports a failed `try_lock_exclusive` as an `Other` I/O error with this text.
    matches!(err, sled::Error::Io(io) if io.to_string().contains("could not acquire lock"))
}

/// An event-store error for a sled failure while doing `what`.
pub(crate) fn event_store(err: sled::Error, what: &str) -> EventStoreError {
    let reason = format!("{what}: {err}");
    match classify(&err) {
        Class::Transient => EventStoreError::unavailable(reason, err),
        Class::Corrupt => EventStoreError::Corrupt { seq: None, reason },
        Class::Permanent => EventStoreError::backend(reason, err),
    }
}

/// A graph-store error for a sled failure while doing `what`.
pub(crate) fn graph_store(err: sled::Error, what: &str) -> GraphStoreError {
    let reason = format!("{what}: {err}");
    match classify(&err) {
        Class::Transient => GraphStoreError::Unavailable {
            reason,
            source: Some(Box::new(err)),
        },
        Class::Corrupt => GraphStoreError::Corrupt { reason },
        Class::Permanent => GraphStoreError::Backend {
            reason,
            source: Some(Box::new(err)),
        },
    }
}

/// An artifact error for an I/O failure while doing `what` on `path`.
pub(crate) fn artifact_io(err: io::Error, what: &str, path: &Path) -> ArtifactError {
    let reason = format!("{what} {}: {err}", path.display());
    if io_is_transient(&err) {
        ArtifactError::Unavailable {
            reason,
            source: Some(Box::new(err)),
        }
    } else {
        ArtifactError::Backend {
            reason,
            source: Some(Box::new(err)),
        }
    }
}

/// Stored event data that does not decode: where and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Corruption {
    pub(crate) seq: Option<u64>,
    pub(crate) reason: String,
}

impl From<Corruption> for EventStoreError {
    fn from(c: Corruption) -> Self {
        EventStoreError::Corrupt {
            seq: c.seq,
            reason: c.reason,
        }
    }
}

/// A failure that concerns a whole group of appends: each caller gets its own copy as an
/// [`EventStoreError`].
#[derive(Clone, Debug)]
pub(crate) enum Failure {
    /// sled failed while doing the described thing.
    Sled(sled::Error, String),
    /// Stored data does not decode.
    Corrupt(Corruption),
}

impl Failure {
    pub(crate) fn sled(err: sled::Error, what: String) -> Self {
        Self::Sled(err, what)
    }

    pub(crate) fn corrupt(seq: Option<u64>, reason: String) -> Self {
        Self::Corrupt(Corruption { seq, reason })
    }

    pub(crate) fn to_error(&self) -> EventStoreError {
        match self {
            Self::Sled(err, what) => event_store(err.clone(), what),
            Self::Corrupt(c) => c.clone().into(),
        }
    }
}

/// The writer thread is gone (it panicked or the store is shutting down).
pub(crate) fn writer_stopped(location: &Path) -> EventStoreError {
    EventStoreError::Backend {
        reason: format!(
            "the writer of {} has stopped; reopen the store",
            location.display()
        ),
        source: None,
    }
}

/// A blocking task of the store did not complete (it panicked or the runtime is shutting down).
pub(crate) fn task_failed(what: &str, err: tokio::task::JoinError) -> String {
    format!("{what}: blocking task failed: {err}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_disk_is_transient_and_corruption_is_corrupt() {
        let full = sled::Error::Io(io::Error::from(io::ErrorKind::StorageFull));
        let err = event_store(full, "appending");
        assert!(err.is_transient(), "{err}");
        assert!(err.to_string().contains("appending"), "{err}");

        let denied = sled::Error::Io(io::Error::from(io::ErrorKind::PermissionDenied));
        assert!(!event_store(denied.clone(), "x").is_transient());
        assert!(matches!(
            graph_store(denied, "x"),
            GraphStoreError::Backend { .. }
        ));

        let corrupt = sled::Error::Corruption { at: None, bt: () };
        assert!(matches!(
            event_store(corrupt.clone(), "reading"),
            EventStoreError::Corrupt { .. }
        ));
        assert!(matches!(
            graph_store(corrupt, "loading"),
            GraphStoreError::Corrupt { .. }
        ));

        let no_space = io::Error::from_raw_os_error(28); // ENOSPC
        let err = artifact_io(no_space, "writing", Path::new("/a/b"));
        assert!(err.is_transient(), "{err}");
        assert!(err.to_string().contains("/a/b"), "{err}");
    }
}
