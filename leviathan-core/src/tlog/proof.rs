//! Inclusion and consistency proofs and their offline checks.

use serde::{Deserialize, Serialize};

use crate::digest::Sha256Digest;

use super::hash::{EMPTY_ROOT, leaf_hash, to_tlog};

/// More hashes than any proof in a tree of up to 2^64 leaves holds; longer input is refused
/// before any hashing.
pub const MAX_PROOF_HASHES: usize = 64;

/// Why a proof does not verify.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProofError {
    /// The leaf is not in the tree the proof is for.
    #[error("leaf {index} is not in a tree of {size} leaves")]
    LeafOutside {
        /// The proof's leaf index.
        index: u64,
        /// The proof's tree size.
        size: u64,
    },
    /// A consistency proof from a larger tree to a smaller one.
    #[error("the old tree ({old}) is larger than the new one ({new})")]
    SizesOutOfOrder {
        /// The old size.
        old: u64,
        /// The new size.
        new: u64,
    },
    /// More hashes than a proof can have.
    #[error("the proof has {len} hashes; no proof has more than {MAX_PROOF_HASHES}")]
    TooLong {
        /// How many it has.
        len: usize,
    },
    /// The proof does not lead from what it proves to the root(s) given.
    #[error(
        "the proof does not lead to the root hash (the leaf, a proof hash, the size or the root is not what was committed to)"
    )]
    Mismatch,
}

/// The proof that a leaf is in a tree (RFC 9162 §2.1.3 inclusion proof, audit path).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InclusionProof {
    /// The leaf's index (`seq - 1`).
    pub leaf_index: u64,
    /// The tree's size.
    pub tree_size: u64,
    /// The audit path, leaf to root, as base64.
    #[serde(with = "base64_hashes")]
    pub hashes: Vec<Sha256Digest>,
}

impl InclusionProof {
    /// Checks that the event with chain hash `event_hash` is leaf `leaf_index` of the tree of
    /// `tree_size` leaves whose root is `root`.
    pub fn verify(&self, event_hash: &Sha256Digest, root: &Sha256Digest) -> Result<(), ProofError> {
        self.verify_leaf(&leaf_hash(event_hash), root)
    }

    /// Checks that the leaf hash `leaf` is leaf `leaf_index` of the tree whose root is `root`.
    pub fn verify_leaf(&self, leaf: &Sha256Digest, root: &Sha256Digest) -> Result<(), ProofError> {
        if self.leaf_index >= self.tree_size {
            return Err(ProofError::LeafOutside {
                index: self.leaf_index,
                size: self.tree_size,
            });
        }
        check_len(&self.hashes)?;
        let path: Vec<_> = self.hashes.iter().map(to_tlog).collect();
        tlog_tiles::check_record(
            &path,
            self.tree_size,
            to_tlog(root),
            self.leaf_index,
            to_tlog(leaf),
        )
        .map_err(|_| ProofError::Mismatch)
    }
}

/// The proof that a tree extends an older one (RFC 9162 §2.1.4 consistency proof).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsistencyProof {
    /// The older tree's size.
    pub old_size: u64,
    /// The newer tree's size.
    pub new_size: u64,
    /// The proof's hashes, as base64.
    #[serde(with = "base64_hashes")]
    pub hashes: Vec<Sha256Digest>,
}

impl ConsistencyProof {
    /// Checks that the tree of `new_size` leaves with root `new_root` starts with the tree of
    /// `old_size` leaves with root `old_root`.
    pub fn verify(
        &self,
        old_root: &Sha256Digest,
        new_root: &Sha256Digest,
    ) -> Result<(), ProofError> {
        if self.old_size > self.new_size {
            return Err(ProofError::SizesOutOfOrder {
                old: self.old_size,
                new: self.new_size,
            });
        }
        check_len(&self.hashes)?;
        if self.old_size == 0 {
            // Every tree extends the empty one, whose root is fixed.
            return (self.hashes.is_empty() && *old_root == EMPTY_ROOT)
                .then_some(())
                .ok_or(ProofError::Mismatch);
        }
        let hashes: Vec<_> = self.hashes.iter().map(to_tlog).collect();
        tlog_tiles::check_tree(
            &hashes,
            self.new_size,
            to_tlog(new_root),
            self.old_size,
            to_tlog(old_root),
        )
        .map_err(|_| ProofError::Mismatch)
    }
}

fn check_len(hashes: &[Sha256Digest]) -> Result<(), ProofError> {
    if hashes.len() > MAX_PROOF_HASHES {
        return Err(ProofError::TooLong { len: hashes.len() });
    }
    Ok(())
}

/// Tree hashes on the wire: standard base64, as in checkpoints and CT's JSON API.
pub(crate) mod base64_hashes {
    use base64::{Engine as _, prelude::BASE64_STANDARD};
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _, ser::SerializeSeq};

    use crate::digest::Sha256Digest;

    pub(crate) fn serialize<S: Serializer>(
        hashes: &[Sha256Digest],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(hashes.len()))?;
        for hash in hashes {
            seq.serialize_element(&BASE64_STANDARD.encode(hash.as_bytes()))?;
        }
        seq.end()
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<Sha256Digest>, D::Error> {
        let texts = Vec::<String>::deserialize(d)?;
        if texts.len() > super::MAX_PROOF_HASHES {
            return Err(D::Error::custom(format!(
                "{} hashes; no proof has more than {}",
                texts.len(),
                super::MAX_PROOF_HASHES
            )));
        }
        texts
            .iter()
            .map(|t| decode(t).map_err(D::Error::custom))
            .collect()
    }

    /// One base64 tree hash.
    pub(crate) fn decode(text: &str) -> Result<Sha256Digest, String> {
        let bytes = BASE64_STANDARD
            .decode(text)
            .map_err(|e| format!("`{text}` is not base64: {e}"))?;
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|b: Vec<u8>| format!("`{text}` is {} bytes, not a 32-byte hash", b.len()))?;
        Ok(Sha256Digest::from_bytes(bytes))
    }
}
