//! The right edge of the tree, which a writer keeps to extend it.

use crate::{digest::Sha256Digest, store::EventStoreError};

use super::{
    hash::{EMPTY_ROOT, fold_complete, leaf_hash, node_hash},
    store::TileRead,
    tile::{TILE_WIDTH, Tile, entries},
};

/// The right edge of the tree: at each tile level, the entries of the partial tile (at most
/// 15 hashes). A writer keeps it next to the log's tail, feeds it each appended event's hash
/// and stores the tiles that became full in the same transaction as the events; it gives the
/// current root without reading anything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    pending: Vec<Vec<Sha256Digest>>,
}

impl Frontier {
    /// The frontier of the empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Leaves in the tree.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends the leaf of the event with chain hash `event_hash`; tiles it fills go to `full`,
    /// lowest level first.
    pub fn push(&mut self, event_hash: &Sha256Digest, full: &mut Vec<Tile>) {
        self.push_leaf(leaf_hash(event_hash), full);
    }

    /// Appends a leaf given by its leaf hash (what [`Frontier::push`] does after hashing).
    pub fn push_leaf(&mut self, leaf: Sha256Digest, full: &mut Vec<Tile>) {
        self.size += 1;
        let mut entry = leaf;
        let mut level = 0u8;
        loop {
            if self.pending.len() <= usize::from(level) {
                self.pending.push(Vec::with_capacity(TILE_WIDTH as usize));
            }
            let pending = &mut self.pending[usize::from(level)];
            pending.push(entry);
            let Ok(hashes) = <[Sha256Digest; TILE_WIDTH as usize]>::try_from(pending.as_slice())
            else {
                return;
            };
            pending.clear();
            let tile = Tile {
                level,
                index: entries(self.size, level) / TILE_WIDTH - 1,
                hashes,
            };
            entry = tile.root();
            full.push(tile);
            level += 1;
        }
    }

    /// Appends the leaves of events with these chain hashes; returns the tiles they filled.
    pub fn extend<'a>(
        &mut self,
        event_hashes: impl IntoIterator<Item = &'a Sha256Digest>,
    ) -> Vec<Tile> {
        let mut full = Vec::new();
        for hash in event_hashes {
            self.push(hash, &mut full);
        }
        full
    }

    /// The tree's root hash.
    pub fn root(&self) -> Sha256Digest {
        // The complete subtrees of the tree, left to right: the highest level's partial tile
        // first, each level's entries grouped by the bits of their count.
        let mut subtrees = Vec::new();
        for pending in self.pending.iter().rev() {
            let mut start = 0;
            for bit in (0..TILE_WIDTH.trailing_zeros()).rev() {
                let width = 1usize << bit;
                if pending.len() & width != 0 {
                    subtrees.push(fold_complete(&pending[start..start + width]));
                    start += width;
                }
            }
        }
        let Some((last, rest)) = subtrees.split_last() else {
            return EMPTY_ROOT;
        };
        rest.iter()
            .rev()
            .fold(*last, |right, left| node_hash(left, &right))
    }

    /// What to read to restore the frontier of a tree of `size` leaves ([`Frontier::restore`]):
    /// per tile level, the events or full tiles below its partial tile.
    pub fn reads(size: u64) -> Vec<TileRead> {
        let mut reads = Vec::new();
        let mut level = 0u8;
        loop {
            let count = entries(size, level);
            if count == 0 {
                return reads;
            }
            let indexes = count / TILE_WIDTH * TILE_WIDTH..count;
            reads.push(match level {
                0 => TileRead::EventHashes { indexes },
                _ => TileRead::Tiles {
                    level: level - 1,
                    indexes,
                },
            });
            level += 1;
        }
    }

    /// The frontier of a tree of `size` leaves from the answers to [`Frontier::reads`]`(size)`.
    pub fn restore(size: u64, answers: &[Vec<Sha256Digest>]) -> Result<Self, EventStoreError> {
        let reads = Self::reads(size);
        if reads.len() != answers.len() {
            return Err(corrupt(format!(
                "restoring the tree's right edge needs {} reads, got {} answers",
                reads.len(),
                answers.len()
            )));
        }
        let mut pending = Vec::with_capacity(reads.len());
        for (read, answer) in reads.iter().zip(answers) {
            pending.push(match read {
                TileRead::EventHashes { indexes } => {
                    check_len(
                        answer.len() as u64,
                        indexes.end - indexes.start,
                        "event hashes",
                    )?;
                    answer.iter().map(leaf_hash).collect()
                }
                TileRead::Tiles { indexes, .. } => {
                    let tiles = indexes.end - indexes.start;
                    check_len(answer.len() as u64, tiles * TILE_WIDTH, "tile hashes")?;
                    answer
                        .chunks_exact(TILE_WIDTH as usize)
                        .map(fold_complete)
                        .collect()
                }
            });
        }
        Ok(Self { size, pending })
    }
}

fn check_len(got: u64, expected: u64, what: &str) -> Result<(), EventStoreError> {
    if got == expected {
        Ok(())
    } else {
        Err(corrupt(format!(
            "reading the tree's right edge: expected {expected} {what}, got {got}"
        )))
    }
}

fn corrupt(reason: String) -> EventStoreError {
    EventStoreError::Corrupt { seq: None, reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hashes(n: u64) -> Vec<Sha256Digest> {
        (0..n).map(|i| Sha256Digest::of(&i.to_be_bytes())).collect()
    }

    /// RFC 9162's MTH, computed the slow way from the definition.
    fn mth(leaves: &[Sha256Digest]) -> Sha256Digest {
        match leaves.len() {
            0 => EMPTY_ROOT,
            1 => leaves[0],
            n => {
                let k = 1usize << (n - 1).ilog2();
                node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
            }
        }
    }

    #[test]
    fn root_matches_the_definition_and_restore_matches_push() {
        let events = hashes(300);
        let leaves: Vec<_> = events.iter().map(leaf_hash).collect();
        let mut frontier = Frontier::new();
        let mut tiles: Vec<Tile> = Vec::new();
        assert_eq!(frontier.root(), EMPTY_ROOT);
        for (i, event) in events.iter().enumerate() {
            frontier.push(event, &mut tiles);
            assert_eq!(frontier.root(), mth(&leaves[..=i]), "size {}", i + 1);
            // Restore from what a store would hold at this size.
            let size = i as u64 + 1;
            let answers: Vec<Vec<Sha256Digest>> = Frontier::reads(size)
                .iter()
                .map(|read| match read {
                    TileRead::EventHashes { indexes } => {
                        events[indexes.start as usize..indexes.end as usize].to_vec()
                    }
                    TileRead::Tiles { level, indexes } => tiles
                        .iter()
                        .filter(|t| t.level == *level && indexes.contains(&t.index))
                        .flat_map(|t| t.hashes)
                        .collect(),
                })
                .collect();
            assert_eq!(Frontier::restore(size, &answers).unwrap(), frontier);
        }
        assert_eq!(tiles.iter().filter(|t| t.level == 0).count(), 300 / 16);
        assert_eq!(tiles.iter().filter(|t| t.level == 1).count(), 1);
        assert!(Frontier::restore(20, &[]).is_err());
    }
}
