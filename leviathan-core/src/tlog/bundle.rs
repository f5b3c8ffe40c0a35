//! Self-contained proofs that a verifier checks with nothing but the log's public key.

use serde::{Deserialize, Serialize};

use crate::{digest::Sha256Digest, event::Event};

use super::{
    checkpoint::{CheckpointError, LogVerifier, VerifiedCheckpoint},
    proof::{ConsistencyProof, InclusionProof, ProofError},
};

/// Why a bundle or a pair of checkpoints does not verify.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// A checkpoint is not a valid signed checkpoint of the key's log.
    #[error("checkpoint: {0}")]
    Checkpoint(#[from] CheckpointError),
    /// The event's content does not hash to the hash it carries.
    #[error("the event at seq {seq} was altered: its content hashes to {computed}, not {claimed}")]
    EventAltered {
        /// The event's seq.
        seq: u64,
        /// The hash it carries.
        claimed: Sha256Digest,
        /// The hash of its canonical bytes.
        computed: Sha256Digest,
    },
    /// The bundle's stated hash of the canonical bytes is not the event's.
    #[error("the bundle's canonical_sha256 {stated} is not the event's hash {hash}")]
    HashMismatch {
        /// What the bundle states.
        stated: Sha256Digest,
        /// The event's hash.
        hash: Sha256Digest,
    },
    /// The proof is for another leaf than the event's.
    #[error("the proof is for leaf {leaf_index} but the event at seq {seq} is leaf {}", seq.saturating_sub(1))]
    WrongLeaf {
        /// The proof's leaf index.
        leaf_index: u64,
        /// The event's seq.
        seq: u64,
    },
    /// The proof is for another tree than the checkpoint's.
    #[error("the proof is for a tree of {proof} leaves but the checkpoint is of {checkpoint}")]
    SizeMismatch {
        /// The proof's tree size.
        proof: u64,
        /// The checkpoint's tree size.
        checkpoint: u64,
    },
    /// The proof does not lead to the checkpoint's root.
    #[error("proof: {0}")]
    Proof(#[from] ProofError),
}

/// What `leviathan log prove` writes: an event, its hash, its inclusion proof and a signed
/// checkpoint of a tree that holds it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProofBundle {
    /// The event, as the log holds it.
    pub event: Event,
    /// SHA-256 of the event's canonical bytes (its chain hash).
    pub canonical_sha256: Sha256Digest,
    /// The event's inclusion proof in the checkpoint's tree.
    pub inclusion: InclusionProof,
    /// The signed checkpoint (C2SP signed note).
    pub checkpoint: String,
}

impl ProofBundle {
    /// Checks everything offline: the checkpoint's signature, the event's hash, and that the
    /// proof leads from the event's leaf to the checkpoint's root.
    pub fn verify(&self, key: &LogVerifier) -> Result<VerifiedCheckpoint, BundleError> {
        let checkpoint = key.verify(self.checkpoint.as_bytes())?;
        let seq = self.event.seq;
        let computed = self.event.compute_hash();
        if computed != self.event.hash {
            return Err(BundleError::EventAltered {
                seq,
                claimed: self.event.hash,
                computed,
            });
        }
        if self.canonical_sha256 != self.event.hash {
            return Err(BundleError::HashMismatch {
                stated: self.canonical_sha256,
                hash: self.event.hash,
            });
        }
        if Some(self.inclusion.leaf_index) != seq.checked_sub(1) {
            return Err(BundleError::WrongLeaf {
                leaf_index: self.inclusion.leaf_index,
                seq,
            });
        }
        same_size(self.inclusion.tree_size, checkpoint.head.size)?;
        self.inclusion
            .verify(&self.event.hash, &checkpoint.head.root)?;
        Ok(checkpoint)
    }
}

/// Checks that the signed checkpoint `new` extends the signed checkpoint `old` with `proof`:
/// both signed by `key`, the proof's sizes theirs.
pub fn check_consistency(
    key: &LogVerifier,
    old: &[u8],
    new: &[u8],
    proof: &ConsistencyProof,
) -> Result<(VerifiedCheckpoint, VerifiedCheckpoint), BundleError> {
    let old = key.verify(old)?;
    let new = key.verify(new)?;
    same_size(proof.old_size, old.head.size)?;
    same_size(proof.new_size, new.head.size)?;
    proof.verify(&old.head.root, &new.head.root)?;
    Ok((old, new))
}

fn same_size(proof: u64, checkpoint: u64) -> Result<(), BundleError> {
    if proof == checkpoint {
        Ok(())
    } else {
        Err(BundleError::SizeMismatch { proof, checkpoint })
    }
}
