//! Tiles: how the tree's hashes are stored.

use crate::digest::Sha256Digest;

use super::hash::fold_complete;

/// Tree levels one tile spans: a tile at tile level `t` holds hashes of tree level `4·t`.
pub const TILE_HEIGHT: u8 = 4;
/// Hashes in a full tile (`2^TILE_HEIGHT`).
pub const TILE_WIDTH: u64 = 1 << TILE_HEIGHT;
/// Bytes of a stored tile: its hashes, concatenated.
const TILE_BYTES: usize = 32 * TILE_WIDTH as usize;

/// A full tile: the hashes of tree level `4·level` with indexes `16·index .. 16·index + 16`,
/// that is, the 16 subtrees of `16^level` leaves each that make up one complete subtree of
/// `16^(level+1)` leaves. Tile level 0 holds leaf hashes. Full tiles never change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tile {
    /// Tile level.
    pub level: u8,
    /// Index among the tiles of its level.
    pub index: u64,
    /// The 16 hashes, left to right.
    pub hashes: [Sha256Digest; TILE_WIDTH as usize],
}

impl Tile {
    /// The stored form: the 16 hashes, 512 bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(TILE_BYTES);
        for hash in &self.hashes {
            out.extend_from_slice(hash.as_bytes());
        }
        out
    }

    /// Decodes [`Tile::to_bytes`]'s output; `None` unless it is exactly 512 bytes.
    pub fn from_bytes(level: u8, index: u64, bytes: &[u8]) -> Option<Self> {
        if bytes.len() != TILE_BYTES {
            return None;
        }
        let mut hashes = [Sha256Digest::from_bytes([0; 32]); TILE_WIDTH as usize];
        for (slot, chunk) in hashes.iter_mut().zip(bytes.chunks_exact(32)) {
            *slot = Sha256Digest::from_bytes(chunk.try_into().ok()?);
        }
        Some(Self {
            level,
            index,
            hashes,
        })
    }

    /// The hash of the complete subtree the tile spans: the hash at tree level `4·(level+1)`,
    /// index `index`, which is entry `index` of tile level `level + 1`.
    pub fn root(&self) -> Sha256Digest {
        fold_complete(&self.hashes)
    }
}

/// How many hashes of tile level `level` a tree of `size` leaves has (complete subtrees of
/// `16^level` leaves).
pub(crate) fn entries(size: u64, level: u8) -> u64 {
    size.checked_shr(u32::from(TILE_HEIGHT) * u32::from(level))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_round_trip_and_count() {
        let mut hashes = [Sha256Digest::of(b""); 16];
        for (i, h) in hashes.iter_mut().enumerate() {
            *h = Sha256Digest::of(&[i as u8]);
        }
        let tile = Tile {
            level: 2,
            index: 7,
            hashes,
        };
        assert_eq!(Tile::from_bytes(2, 7, &tile.to_bytes()), Some(tile));
        assert_eq!(Tile::from_bytes(0, 0, &[0; 511]), None);
        assert_eq!(entries(16 * 16 + 5, 1), 16);
        assert_eq!(entries(u64::MAX, 16), 0);
    }
}
