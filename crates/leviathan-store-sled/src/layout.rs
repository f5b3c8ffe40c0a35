//! The trees of the database and how keys and values are encoded in them (see the crate docs).

use leviathan_core::{Head, Sha256Digest};

/// Marks a database written by this crate in this layout.
pub(crate) const FORMAT: &[u8] = b"leviathan-store-sled/1";
/// `meta` key of the format marker.
pub(crate) const FORMAT_KEY: &[u8] = b"format";
/// `meta` key of the log's tail (`seq` ‖ hash).
pub(crate) const TAIL_KEY: &[u8] = b"tail";
/// `graph.meta` key of the checkpoint (`seq` ‖ hash).
pub(crate) const CHECKPOINT_KEY: &[u8] = b"checkpoint";
/// `graph.meta` key present while a save is being written (the checkpoint `seq` it is for).
pub(crate) const SAVING_KEY: &[u8] = b"saving";

const HASH_LEN: usize = 32;

/// Handles to every tree of one database.
#[derive(Clone, Debug)]
pub(crate) struct Trees {
    /// `seq` → stored hash ‖ canonical bytes.
    pub(crate) events: sled::Tree,
    /// `event_id` → `seq`.
    pub(crate) event_ids: sled::Tree,
    /// Stream id → version.
    pub(crate) streams: sled::Tree,
    /// Format marker and tail.
    pub(crate) meta: sled::Tree,
    /// Node id → node JSON.
    pub(crate) nodes: sled::Tree,
    /// Edge id → edge JSON.
    pub(crate) edges: sled::Tree,
    /// Stream id → the projection's stream version.
    pub(crate) graph_streams: sled::Tree,
    /// Ordinal → anomaly JSON.
    pub(crate) anomalies: sled::Tree,
    /// Checkpoint and anomaly count.
    pub(crate) graph_meta: sled::Tree,
}

impl Trees {
    /// Opens (creating when absent) every tree of `db`.
    pub(crate) fn open(db: &sled::Db) -> sled::Result<Self> {
        Ok(Self {
            events: db.open_tree("events")?,
            event_ids: db.open_tree("event_ids")?,
            streams: db.open_tree("streams")?,
            meta: db.open_tree("meta")?,
            nodes: db.open_tree("graph.nodes")?,
            edges: db.open_tree("graph.edges")?,
            graph_streams: db.open_tree("graph.streams")?,
            anomalies: db.open_tree("graph.anomalies")?,
            graph_meta: db.open_tree("graph.meta")?,
        })
    }
}

/// The key of a `seq` (big-endian, so keys sort by `seq`).
pub(crate) fn seq_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

/// Decodes a big-endian u64 (a `seq` key, a version, a count).
pub(crate) fn decode_u64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

/// The stored form of an event: its hash, then its canonical bytes.
pub(crate) fn event_record(hash: &Sha256Digest, canonical: &[u8]) -> Vec<u8> {
    let mut record = Vec::with_capacity(HASH_LEN + canonical.len());
    record.extend_from_slice(hash.as_bytes());
    record.extend_from_slice(canonical);
    record
}

/// Splits a stored event into its hash and canonical bytes.
pub(crate) fn split_record(record: &[u8]) -> Option<(Sha256Digest, &[u8])> {
    if record.len() < HASH_LEN {
        return None;
    }
    let (hash, canonical) = record.split_at(HASH_LEN);
    let hash: [u8; HASH_LEN] = hash.try_into().ok()?;
    Some((Sha256Digest::from_bytes(hash), canonical))
}

/// The stored form of a log position (the tail, a checkpoint): `seq` ‖ hash.
pub(crate) fn encode_head(head: &Head) -> [u8; 8 + HASH_LEN] {
    let mut out = [0u8; 8 + HASH_LEN];
    out[..8].copy_from_slice(&head.seq.to_be_bytes());
    out[8..].copy_from_slice(head.hash.as_bytes());
    out
}

/// Decodes [`encode_head`]'s output.
pub(crate) fn decode_head(bytes: &[u8]) -> Option<Head> {
    if bytes.len() != 8 + HASH_LEN {
        return None;
    }
    let (seq, hash) = bytes.split_at(8);
    Some(Head {
        seq: decode_u64(seq)?,
        hash: Sha256Digest::from_bytes(hash.try_into().ok()?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use leviathan_core::Event;

    #[test]
    fn heads_and_records_round_trip() {
        let head = Head {
            seq: 1 << 40,
            hash: Sha256Digest::of(b"x"),
        };
        assert_eq!(decode_head(&encode_head(&head)), Some(head));
        assert_eq!(decode_head(&[0; 39]), None);
        let event = Event::seal(
            leviathan_core::NewEvent {
                event_id: leviathan_core::EventId::new("e1").unwrap(),
                event_type: "note.added".into(),
                timestamp: leviathan_core::Timestamp::parse("2026-01-01T00:00:00Z").unwrap(),
                actor_id: None,
                payload: serde_json::json!({"k": "v"}),
            },
            1,
            None,
        );
        let canonical = event.canonical_bytes();
        let record = event_record(&event.hash, &canonical);
        assert_eq!(split_record(&record), Some((event.hash, &canonical[..])));
        assert_eq!(split_record(&[1; 31]), None);
        assert!(seq_key(2) > seq_key(1) && seq_key(256) > seq_key(255));
        assert_eq!(decode_u64(&seq_key(77)), Some(77));
        assert_eq!(decode_u64(b"short"), None);
    }
}
