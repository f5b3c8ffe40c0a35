//! Roots and proofs read from a [`TreeStore`]: O(log n) tiles, one `read_tiles` call each.

use std::{
    cell::RefCell,
    collections::{HashMap, HashSet},
};

use tlog_tiles::{HashReader, split_stored_hash_index};

use crate::{digest::Sha256Digest, store::EventStoreError};

use super::{
    hash::{EMPTY_ROOT, fold_complete, from_tlog, leaf_hash, to_tlog},
    proof::{ConsistencyProof, InclusionProof},
    store::{TileRead, TreeError, TreeStore},
    tile::{TILE_HEIGHT, TILE_WIDTH, entries},
};

/// The root hash of the tree of the first `size` events.
pub async fn root(store: &dyn TreeStore, size: u64) -> Result<Sha256Digest, TreeError> {
    let current = checked_size(store, size).await?;
    if size == 0 {
        return Ok(EMPTY_ROOT);
    }
    let known = read_nodes(
        store,
        current,
        &tlog_tiles::sub_tree_index(0, size, Vec::new()),
    )
    .await?;
    tlog_tiles::tree_hash(size, &known)
        .map(from_tlog)
        .map_err(tree_math)
}

/// The proof that leaf `index` (the event at `seq` = `index + 1`) is in the tree of `size`.
pub async fn inclusion_proof(
    store: &dyn TreeStore,
    index: u64,
    size: u64,
) -> Result<InclusionProof, TreeError> {
    if index >= size {
        return Err(TreeError::LeafOutside { index, size });
    }
    let current = checked_size(store, size).await?;
    let recorder = Recorder::default();
    tlog_tiles::prove_record(size, index, &recorder).map_err(tree_math)?;
    let known = read_nodes(store, current, &recorder.0.into_inner()).await?;
    let hashes = tlog_tiles::prove_record(size, index, &known).map_err(tree_math)?;
    Ok(InclusionProof {
        leaf_index: index,
        tree_size: size,
        hashes: hashes.into_iter().map(from_tlog).collect(),
    })
}

/// The proof that the tree of `to` leaves extends the tree of `from` leaves.
pub async fn consistency_proof(
    store: &dyn TreeStore,
    from: u64,
    to: u64,
) -> Result<ConsistencyProof, TreeError> {
    if from > to {
        return Err(TreeError::SizesOutOfOrder { from, to });
    }
    let current = checked_size(store, to).await?;
    let mut proof = ConsistencyProof {
        old_size: from,
        new_size: to,
        hashes: Vec::new(),
    };
    if from == 0 || from == to {
        return Ok(proof);
    }
    let recorder = Recorder::default();
    tlog_tiles::prove_tree(to, from, &recorder).map_err(tree_math)?;
    let known = read_nodes(store, current, &recorder.0.into_inner()).await?;
    let hashes = tlog_tiles::prove_tree(to, from, &known).map_err(tree_math)?;
    proof.hashes = hashes.into_iter().map(from_tlog).collect();
    Ok(proof)
}

/// The store's tree size, refusing a request for a larger tree.
async fn checked_size(store: &dyn TreeStore, requested: u64) -> Result<u64, TreeError> {
    let size = store.tree_size().await?;
    if requested > size {
        return Err(TreeError::BeyondLog { requested, size });
    }
    Ok(size)
}

fn tree_math(error: tlog_tiles::Error) -> TreeError {
    TreeError::Store(EventStoreError::Corrupt {
        seq: None,
        reason: format!("computing from the stored tree: {error}"),
    })
}

/// Notes the hash indexes a proof needs, answering with placeholders.
#[derive(Default)]
struct Recorder(RefCell<Vec<u64>>);

impl HashReader for Recorder {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<tlog_tiles::Hash>, tlog_tiles::Error> {
        self.0.borrow_mut().extend_from_slice(indexes);
        Ok(vec![tlog_tiles::Hash::default(); indexes.len()])
    }
}

/// Hashes read from the store, by stored hash index.
struct Known(HashMap<u64, tlog_tiles::Hash>);

impl HashReader for Known {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<tlog_tiles::Hash>, tlog_tiles::Error> {
        indexes
            .iter()
            .map(|i| {
                self.0
                    .get(i)
                    .copied()
                    .ok_or(tlog_tiles::Error::IndexesNotInTree)
            })
            .collect()
    }
}

/// Where node `(level, n)` of a tree of `current` leaves is found: its entries at tile level
/// `level / 4` and the read that holds them.
struct NodePlace {
    tile_level: u8,
    first_entry: u64,
    width: u64,
    read: TileRead,
}

fn place(level: u8, n: u64, current: u64) -> NodePlace {
    let (tile_level, below) = (level / TILE_HEIGHT, level % TILE_HEIGHT);
    let width = 1u64 << below;
    let first_entry = n << below;
    let tile = first_entry / TILE_WIDTH;
    let tile_start = tile * TILE_WIDTH;
    let count = entries(current, tile_level);
    let read = if tile_start + TILE_WIDTH <= count {
        TileRead::Tiles {
            level: tile_level,
            indexes: tile..tile + 1,
        }
    } else if tile_level == 0 {
        TileRead::EventHashes {
            indexes: tile_start..count,
        }
    } else {
        TileRead::Tiles {
            level: tile_level - 1,
            indexes: tile_start..count,
        }
    };
    NodePlace {
        tile_level,
        first_entry,
        width,
        read,
    }
}

/// Reads the complete subtrees with these stored hash indexes (see `tlog_tiles`) from a tree of
/// `current` leaves, in one `read_tiles` call.
async fn read_nodes(
    store: &dyn TreeStore,
    current: u64,
    indexes: &[u64],
) -> Result<Known, TreeError> {
    let places: Vec<(u64, NodePlace)> = indexes
        .iter()
        .map(|&index| {
            let (level, n) = split_stored_hash_index(index);
            (index, place(level, n, current))
        })
        .collect();
    let mut seen = HashSet::new();
    let reads: Vec<TileRead> = places
        .iter()
        .map(|(_, p)| p.read.clone())
        .filter(|read| seen.insert(read.clone()))
        .collect();
    let answers = store.read_tiles(&reads).await?;
    let entries = Entries::new(&reads, &answers)?;
    let mut known = HashMap::with_capacity(places.len());
    for (index, place) in places {
        let hashes = (place.first_entry..place.first_entry + place.width)
            .map(|e| entries.get(place.tile_level, e))
            .collect::<Result<Vec<_>, _>>()?;
        known.insert(index, to_tlog(&fold_complete(&hashes)));
    }
    Ok(Known(known))
}

/// What the reads returned: full tiles by (level, index) and leaf hashes by leaf index.
struct Entries {
    tiles: HashMap<(u8, u64), Vec<Sha256Digest>>,
    leaves: HashMap<u64, Sha256Digest>,
}

impl Entries {
    fn new(reads: &[TileRead], answers: &[Vec<Sha256Digest>]) -> Result<Self, TreeError> {
        if reads.len() != answers.len() {
            return Err(corrupt(format!(
                "{} tile reads got {} answers",
                reads.len(),
                answers.len()
            )));
        }
        let mut tiles = HashMap::new();
        let mut leaves = HashMap::new();
        for (read, answer) in reads.iter().zip(answers) {
            match read {
                TileRead::Tiles { level, indexes } => {
                    let expected = (indexes.end - indexes.start) * TILE_WIDTH;
                    if answer.len() as u64 != expected {
                        return Err(corrupt(format!(
                            "tiles {indexes:?} of level {level}: {} hashes instead of {expected}",
                            answer.len()
                        )));
                    }
                    for (tile, hashes) in indexes.clone().zip(answer.chunks_exact(16)) {
                        tiles.insert((*level, tile), hashes.to_vec());
                    }
                }
                TileRead::EventHashes { indexes } => {
                    if answer.len() as u64 != indexes.end - indexes.start {
                        return Err(corrupt(format!(
                            "events {indexes:?}: {} hashes instead of {}",
                            answer.len(),
                            indexes.end - indexes.start
                        )));
                    }
                    leaves.extend(indexes.clone().zip(answer.iter().map(leaf_hash)));
                }
            }
        }
        Ok(Self { tiles, leaves })
    }

    /// Entry `entry` of tile level `level`: from its full tile, else from the full tile below
    /// it (its root), else (level 0) from the event's hash.
    fn get(&self, level: u8, entry: u64) -> Result<Sha256Digest, TreeError> {
        if let Some(tile) = self.tiles.get(&(level, entry / TILE_WIDTH)) {
            return Ok(tile[(entry % TILE_WIDTH) as usize]);
        }
        let below = match level {
            0 => self.leaves.get(&entry).copied(),
            _ => self
                .tiles
                .get(&(level - 1, entry))
                .map(|tile| fold_complete(tile)),
        };
        below.ok_or_else(|| corrupt(format!("entry {entry} of tile level {level} was not read")))
    }
}

fn corrupt(reason: String) -> TreeError {
    TreeError::Store(EventStoreError::Corrupt { seq: None, reason })
}
