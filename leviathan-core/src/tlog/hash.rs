//! The tree's two hash functions (RFC 9162 §2.1), through `tlog_tiles`.

use crate::digest::Sha256Digest;

/// The root of the empty tree: `SHA-256("")` (RFC 9162 §2.1.1).
pub const EMPTY_ROOT: Sha256Digest = Sha256Digest::from_bytes(tlog_tiles::EMPTY_HASH.0);

/// The leaf hash of the event whose chain hash is `event_hash`: `SHA-256(0x00 ‖ event_hash)`.
pub fn leaf_hash(event_hash: &Sha256Digest) -> Sha256Digest {
    from_tlog(tlog_tiles::record_hash(event_hash.as_bytes()))
}

/// The hash of an interior node: `SHA-256(0x01 ‖ left ‖ right)`.
pub fn node_hash(left: &Sha256Digest, right: &Sha256Digest) -> Sha256Digest {
    from_tlog(tlog_tiles::node_hash(to_tlog(left), to_tlog(right)))
}

pub(crate) fn to_tlog(hash: &Sha256Digest) -> tlog_tiles::Hash {
    tlog_tiles::Hash(*hash.as_bytes())
}

pub(crate) fn from_tlog(hash: tlog_tiles::Hash) -> Sha256Digest {
    Sha256Digest::from_bytes(hash.0)
}

/// The root of the complete subtree whose `2^k` leaves (or lower nodes) are `hashes`, in order.
pub(crate) fn fold_complete(hashes: &[Sha256Digest]) -> Sha256Digest {
    debug_assert!(hashes.len().is_power_of_two());
    let mut level: Vec<Sha256Digest> = hashes.to_vec();
    while level.len() > 1 {
        level = level
            .chunks_exact(2)
            .map(|pair| node_hash(&pair[0], &pair[1]))
            .collect();
    }
    level[0]
}
