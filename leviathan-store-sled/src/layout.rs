//! The trees of the database and how keys and values are encoded in them (see the crate docs).

use leviathan_core::{Event, Head, Sha256Digest};

use crate::error::Corruption;

/// Marks a database written by this crate in this layout.
pub(crate) const FORMAT: &[u8] = b"leviathan-store-sled/3";
/// The layout before the log's Merkle tree: the same trees without `tree.tiles` and
/// `tree.checkpoints`. Opening one builds the tree from the stored hashes.
pub(crate) const FORMAT_2: &[u8] = b"leviathan-store-sled/2";
/// The layout before the projection was kept as a log of deltas: the same event trees, the
/// projection in a tree per kind (`graph.nodes`, `graph.edges`, `graph.streams`,
/// `graph.anomalies`). Opening one drops those trees; the ledger rebuilds the projection.
pub(crate) const FORMAT_1: &[u8] = b"leviathan-store-sled/1";
/// The projection trees of [`FORMAT_1`].
pub(crate) const FORMAT_1_GRAPH_TREES: [&str; 4] = [
    "graph.nodes",
    "graph.edges",
    "graph.streams",
    "graph.anomalies",
];
/// `meta` key of the format marker.
pub(crate) const FORMAT_KEY: &[u8] = b"format";
/// `meta` key of the log's tail (`seq` ‖ hash).
pub(crate) const TAIL_KEY: &[u8] = b"tail";
/// `graph.meta` key of the checkpoint (`seq` ‖ hash).
pub(crate) const CHECKPOINT_KEY: &[u8] = b"checkpoint";
/// `graph.meta` key of a save cut short in [`FORMAT_1`] (removed by the upgrade).
pub(crate) const FORMAT_1_SAVING_KEY: &[u8] = b"saving";
/// `graph.meta` key of the delta log's bounds and sizes ([`DeltaLog`]).
pub(crate) const DELTAS_KEY: &[u8] = b"deltas";
/// `graph.meta` key present once the history trees hold everything the deltas do (a database
/// written before them gets them from its deltas at its first load).
pub(crate) const HISTORY_KEY: &[u8] = b"history";

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
    /// Save number ‖ chunk number → a chunk of the delta's JSON.
    pub(crate) graph_deltas: sled::Tree,
    /// Checkpoint and the delta log's bounds.
    pub(crate) graph_meta: sled::Tree,
    /// Node id → the node's JSON, as last saved.
    pub(crate) graph_history: sled::Tree,
    /// Edge id → the edge's JSON.
    pub(crate) graph_history_edges: sled::Tree,
    /// Attempt index key → attempt id (see [`crate::history`]).
    pub(crate) graph_attempt_index: sled::Tree,
    /// Tile level ‖ index → the full tile's 16 hashes ([`tile_key`]).
    pub(crate) tree_tiles: sled::Tree,
    /// Tree size → signed checkpoint note.
    pub(crate) tree_checkpoints: sled::Tree,
    /// Bundle id digest → content digest.
    pub(crate) bundles: sled::Tree,
}

impl Trees {
    /// Opens (creating when absent) every tree of `db`.
    pub(crate) fn open(db: &sled::Db) -> sled::Result<Self> {
        Ok(Self {
            events: db.open_tree("events")?,
            event_ids: db.open_tree("event_ids")?,
            streams: db.open_tree("streams")?,
            meta: db.open_tree("meta")?,
            graph_deltas: db.open_tree("graph.deltas")?,
            graph_meta: db.open_tree("graph.meta")?,
            graph_history: db.open_tree("graph.history")?,
            graph_history_edges: db.open_tree("graph.history_edges")?,
            graph_attempt_index: db.open_tree("graph.attempt_index")?,
            tree_tiles: db.open_tree("tree.tiles")?,
            tree_checkpoints: db.open_tree("tree.checkpoints")?,
            bundles: db.open_tree("bundles")?,
        })
    }
}

/// The key of a `seq` (big-endian, so keys sort by `seq`).
pub(crate) fn seq_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

/// The key of a full tile: its level, then its index big-endian (so a level's tiles sort in
/// order).
pub(crate) fn tile_key(level: u8, index: u64) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[0] = level;
    key[1..].copy_from_slice(&index.to_be_bytes());
    key
}

/// Decodes a big-endian u64 (a `seq` key, a version, a count).
pub(crate) fn decode_u64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

/// The key of chunk `chunk` of the delta saved as number `save`: sorts by save, then chunk.
pub(crate) fn delta_key(save: u64, chunk: u32) -> [u8; 12] {
    let mut key = [0u8; 12];
    key[..8].copy_from_slice(&save.to_be_bytes());
    key[8..].copy_from_slice(&chunk.to_be_bytes());
    key
}

/// Decodes [`delta_key`]'s output.
pub(crate) fn decode_delta_key(key: &[u8]) -> Option<(u64, u32)> {
    let (save, chunk) = key.split_at_checked(8)?;
    Some((
        decode_u64(save)?,
        u32::from_be_bytes(chunk.try_into().ok()?),
    ))
}

/// Which saved deltas make up the projection, and how large they are: the deltas numbered
/// `base..=sealed`, the one at `base` holding everything merged before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct DeltaLog {
    /// The first delta that counts.
    pub(crate) base: u64,
    /// The last delta written whole; chunks numbered after it are a save cut short.
    pub(crate) sealed: u64,
    /// Bytes of the delta at `base`.
    pub(crate) base_bytes: u64,
    /// Bytes of the deltas after `base`.
    pub(crate) tail_bytes: u64,
}

impl Default for DeltaLog {
    /// No delta yet: the first save gets number 1 and becomes the base.
    fn default() -> Self {
        Self {
            base: 1,
            sealed: 0,
            base_bytes: 0,
            tail_bytes: 0,
        }
    }
}

impl DeltaLog {
    /// The stored form: the four numbers, big-endian.
    pub(crate) fn encode(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        let fields = [self.base, self.sealed, self.base_bytes, self.tail_bytes];
        for (slot, field) in out.chunks_exact_mut(8).zip(fields) {
            slot.copy_from_slice(&field.to_be_bytes());
        }
        out
    }

    /// Decodes [`DeltaLog::encode`]'s output.
    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != 32 {
            return None;
        }
        let mut fields = bytes.chunks_exact(8).map(decode_u64);
        let log = Self {
            base: fields.next()??,
            sealed: fields.next()??,
            base_bytes: fields.next()??,
            tail_bytes: fields.next()??,
        };
        let next = log.sealed.checked_add(1)?;
        (log.base >= 1 && next >= log.base).then_some(log)
    }
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

/// Decodes the stored record of the event at `seq`.
pub(crate) fn decode_record(seq: u64, record: &[u8]) -> Result<Event, Corruption> {
    let corrupt = |reason: String| Corruption {
        seq: Some(seq),
        reason,
    };
    let (hash, canonical) =
        split_record(record).ok_or_else(|| corrupt("the record is truncated".into()))?;
    let event = Event::from_canonical(canonical, hash)
        .map_err(|err| corrupt(format!("the canonical bytes do not decode: {err}")))?;
    if event.seq != seq {
        return Err(corrupt(format!("the record holds seq {}", event.seq)));
    }
    Ok(event)
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
                principal: None,
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

    #[test]
    fn delta_keys_and_logs_round_trip() {
        assert!(delta_key(1, u32::MAX) < delta_key(2, 0));
        assert_eq!(decode_delta_key(&delta_key(7, 3)), Some((7, 3)));
        assert_eq!(decode_delta_key(&[0; 11]), None);
        let log = DeltaLog {
            base: 3,
            sealed: 9,
            base_bytes: 1 << 33,
            tail_bytes: 5,
        };
        assert_eq!(DeltaLog::decode(&log.encode()), Some(log));
        assert_eq!(
            DeltaLog::decode(&DeltaLog::default().encode()),
            Some(DeltaLog::default())
        );
        let backwards = DeltaLog {
            base: 5,
            sealed: 3,
            ..log
        };
        assert_eq!(DeltaLog::decode(&backwards.encode()), None);
        let at_the_end = DeltaLog {
            sealed: u64::MAX,
            ..log
        };
        assert_eq!(DeltaLog::decode(&at_the_end.encode()), None);
        assert_eq!(DeltaLog::decode(&[0; 31]), None);
    }
}
