//! The log's Merkle tree on sled: full tiles in `tree.tiles` (written by the writer in the
//! append's transaction), leaf hashes of the right edge from `events`, checkpoints in
//! `tree.checkpoints`.

use leviathan_core::{
    EventStoreError, Sha256Digest,
    tlog::{Frontier, TILE_WIDTH, Tile, TileRead},
};

use crate::{
    error,
    layout::{self, Trees},
};

/// Events per batch of tiles while building the tree of an existing log.
const BUILD_CHUNK: u64 = 65_536;

/// Answers tile reads from the trees (see [`TreeStore::read_tiles`]).
pub(crate) fn read_tiles(
    trees: &Trees,
    reads: &[TileRead],
    location: &str,
) -> Result<Vec<Vec<Sha256Digest>>, EventStoreError> {
    reads
        .iter()
        .map(|read| match read {
            TileRead::Tiles { level, indexes } => {
                read_full_tiles(trees, *level, indexes.clone(), location)
            }
            TileRead::EventHashes { indexes } => event_hashes(trees, indexes.clone(), location),
        })
        .collect()
}

fn read_full_tiles(
    trees: &Trees,
    level: u8,
    indexes: std::ops::Range<u64>,
    location: &str,
) -> Result<Vec<Sha256Digest>, EventStoreError> {
    let mut hashes = Vec::with_capacity(((indexes.end - indexes.start) * TILE_WIDTH) as usize);
    let range = layout::tile_key(level, indexes.start)..layout::tile_key(level, indexes.end);
    let mut expected = indexes.start;
    for entry in trees.tree_tiles.range(range) {
        let (key, value) = entry.map_err(|e| {
            error::event_store(
                e,
                &format!("reading tile {expected} of level {level} of {location}"),
            )
        })?;
        let tile = (key.as_ref() == layout::tile_key(level, expected))
            .then(|| Tile::from_bytes(level, expected, &value))
            .flatten()
            .ok_or_else(|| missing_tile(level, expected, location))?;
        hashes.extend_from_slice(&tile.hashes);
        expected += 1;
    }
    if expected != indexes.end {
        return Err(missing_tile(level, expected, location));
    }
    Ok(hashes)
}

fn missing_tile(level: u8, index: u64, location: &str) -> EventStoreError {
    EventStoreError::Corrupt {
        seq: None,
        reason: format!("{location}: tile {index} of level {level} is missing or malformed"),
    }
}

/// The chain hashes of the events at leaf indexes `indexes` (seq `start + 1 ..= end`).
fn event_hashes(
    trees: &Trees,
    indexes: std::ops::Range<u64>,
    location: &str,
) -> Result<Vec<Sha256Digest>, EventStoreError> {
    let mut hashes = Vec::with_capacity((indexes.end - indexes.start) as usize);
    let range = layout::seq_key(indexes.start + 1)..layout::seq_key(indexes.end + 1);
    for (seq, entry) in (indexes.start + 1..).zip(trees.events.range(range)) {
        let (key, record) = entry
            .map_err(|e| error::event_store(e, &format!("reading seq {seq} of {location}")))?;
        let hash = (layout::decode_u64(&key) == Some(seq))
            .then(|| layout::split_record(&record).map(|(hash, _)| hash))
            .flatten()
            .ok_or_else(|| EventStoreError::Corrupt {
                seq: Some(seq),
                reason: format!("{location}: seq {seq} is missing or truncated"),
            })?;
        hashes.push(hash);
    }
    if hashes.len() as u64 != indexes.end - indexes.start {
        let seq = indexes.start + hashes.len() as u64 + 1;
        return Err(EventStoreError::Corrupt {
            seq: Some(seq),
            reason: format!("{location}: seq {seq} is missing"),
        });
    }
    Ok(hashes)
}

/// The right edge of the tree of `size` leaves, read from the trees.
pub(crate) fn restore_frontier(
    trees: &Trees,
    size: u64,
    location: &str,
) -> Result<Frontier, EventStoreError> {
    Frontier::restore(size, &read_tiles(trees, &Frontier::reads(size), location)?)
}

/// Builds the tree of a log stored before the tree existed, from the stored hashes, then
/// checks the stored tiles against the tree built: the right edge read back from them must give
/// the same root. Running it again after a crash half-way rewrites the same tiles.
pub(crate) fn build(trees: &Trees, size: u64, location: &str) -> Result<(), EventStoreError> {
    let mut frontier = Frontier::new();
    let mut first = 0;
    while first < size {
        let end = (first + BUILD_CHUNK).min(size);
        let hashes = event_hashes(trees, first..end, location)?;
        let mut batch = sled::Batch::default();
        for tile in frontier.extend(&hashes) {
            batch.insert(
                &layout::tile_key(tile.level, tile.index)[..],
                tile.to_bytes(),
            );
        }
        trees
            .tree_tiles
            .apply_batch(batch)
            .map_err(|e| error::event_store(e, &format!("writing the tree of {location}")))?;
        first = end;
    }
    let stored = restore_frontier(trees, size, location)?;
    if stored.root() != frontier.root() {
        return Err(EventStoreError::Corrupt {
            seq: None,
            reason: format!("{location}: the tree built from the stored hashes does not read back"),
        });
    }
    tracing::info!(location, events = size, "built the log's Merkle tree");
    Ok(())
}
