//! What every connection to the log shares: the writer lock and the statement that takes it,
//! the notify channel, the connections' application names, and how the log's rows decode.

use leviathan_core::{Event, EventStoreError, Head, Sha256Digest};

use crate::error::{StoreFailure, event_error};

/// The channel the writer notifies after each commit, with the new head seq as payload.
pub(crate) const NOTIFY_CHANNEL: &str = "leviathan_events";

/// The advisory lock key every writer of a database takes (`pg_advisory_xact_lock`) inside its
/// append transaction, so that appends from any number of processes form one chain. A tool that
/// must hold appends still (e.g. for a consistent copy) may take it too.
pub const WRITER_LOCK_KEY: i64 = 0x4c65_7669_6174_6831;

/// How the writer opens its append transaction: READ COMMITTED (so that the head read after the
/// lock sees every commit made before the lock was granted, whatever the server's default
/// isolation) and the writer lock, in one round trip.
pub(crate) const BEGIN_LOCKED: &str =
    "BEGIN ISOLATION LEVEL READ COMMITTED; SELECT pg_advisory_xact_lock(5504936314508961841)";

/// Application names the store's connections use, so operators (and tests) can tell them apart
/// in `pg_stat_activity`.
pub(crate) mod application {
    /// Pooled connections (reads, graph, artifacts).
    pub(crate) const POOL: &str = "leviathan";
    /// The writer's own connection.
    pub(crate) const WRITER: &str = "leviathan-writer";
    /// The LISTEN connection.
    pub(crate) const LISTENER: &str = "leviathan-listener";
}

/// Decodes a stored event from its canonical bytes, checking them against their row.
pub(crate) fn decode_event(seq: i64, hash: &[u8], canonical: &[u8]) -> Result<Event, StoreFailure> {
    let at = u64::try_from(seq).ok();
    let hash = decode_hash(hash).ok_or_else(|| {
        StoreFailure::corrupt(at, format!("stored hash is {} bytes, not 32", hash.len()))
    })?;
    let event = Event::from_canonical(canonical, hash).map_err(|e| {
        StoreFailure::corrupt(at, format!("stored canonical bytes do not decode: {e}"))
    })?;
    if Some(event.seq) != at {
        return Err(StoreFailure::corrupt(
            at,
            format!("stored canonical bytes say seq {}", event.seq),
        ));
    }
    Ok(event)
}

/// A stored 32-byte digest.
pub(crate) fn decode_hash(bytes: &[u8]) -> Option<Sha256Digest> {
    <[u8; 32]>::try_from(bytes)
        .ok()
        .map(Sha256Digest::from_bytes)
}

/// The head row as a [`Head`] (`None` for an empty log).
pub(crate) fn decode_head(seq: i64, hash: Option<&[u8]>) -> Result<Option<Head>, StoreFailure> {
    if seq == 0 {
        return Ok(None);
    }
    let corrupt = || StoreFailure::corrupt(None, format!("log head at seq {seq} is malformed"));
    let seq = u64::try_from(seq).map_err(|_| corrupt())?;
    let hash = hash.and_then(decode_hash).ok_or_else(corrupt)?;
    Ok(Some(Head { seq, hash }))
}

/// Reads the head row.
pub(crate) async fn read_head<'e>(
    executor: impl sqlx::PgExecutor<'e>,
) -> Result<Option<Head>, EventStoreError> {
    let (seq, hash): (i64, Option<Vec<u8>>) = sqlx::query_as("SELECT seq, hash FROM log_head")
        .fetch_one(executor)
        .await
        .map_err(|e| event_error("reading the log head", e))?;
    decode_head(seq, hash.as_deref()).map_err(|f| f.to_event_error())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_statement_names_the_lock_key() {
        assert!(BEGIN_LOCKED.ends_with(&format!("pg_advisory_xact_lock({WRITER_LOCK_KEY})")));
    }
}
