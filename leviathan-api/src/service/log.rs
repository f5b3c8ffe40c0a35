//! The verifiable log's operations: signed checkpoints, witnesses' cosignatures on them and
//! proofs (see [`leviathan_core::tlog`]), and the task that signs a checkpoint while the log
//! grows.

use std::{sync::Arc, time::Duration};

use leviathan_core::{
    id::EventId,
    tlog::{
        self, ConsistencyProof, InclusionProof, ProofBundle, StoredCheckpoint, TreeError,
        TreeStore,
        checkpoint::{LogSigner, TreeHead},
        cosignature::{CosignatureVerifier, merge_cosignatures},
    },
};
use tokio::sync::Mutex;

use super::{ControlPlane, ControlPlaneError};

/// The log's tree, the key that signs its checkpoints and the witnesses whose cosignatures
/// it accepts.
#[derive(Clone, Debug)]
pub(crate) struct VerifiableLog {
    tree: Arc<dyn TreeStore>,
    signer: Option<Arc<LogSigner>>,
    witnesses: Arc<[CosignatureVerifier]>,
    /// Held while a cosignature is merged into the latest checkpoint, so that two witnesses
    /// posting at once both keep theirs.
    cosigning: Arc<Mutex<()>>,
}

impl VerifiableLog {
    pub(crate) fn new(tree: Arc<dyn TreeStore>, signer: Option<Arc<LogSigner>>) -> Self {
        Self {
            tree,
            signer,
            witnesses: Arc::new([]),
            cosigning: Arc::default(),
        }
    }
}

/// Which leaf an inclusion proof is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Leaf {
    /// The event at this `seq`.
    Seq(u64),
    /// The event with this id.
    EventId(EventId),
}

impl ControlPlane {
    fn log(&self) -> Result<&VerifiableLog, ControlPlaneError> {
        self.log.as_ref().ok_or(ControlPlaneError::NoCheckpoint {
            reason: "this control plane keeps no verifiable log",
        })
    }

    /// Accepts cosignatures of the latest checkpoint by these witnesses (after
    /// [`ControlPlane::with_log`]).
    pub fn with_witnesses(mut self, witnesses: Vec<CosignatureVerifier>) -> Self {
        if let Some(log) = &mut self.log {
            log.witnesses = witnesses.into();
        }
        self
    }

    /// Adds the known witnesses' cosignatures in `posted` (the latest checkpoint, cosigned) to
    /// the recorded checkpoint, which is then served with them; refused, changing nothing,
    /// when a cosignature does not verify, none is by a known witness, or `posted` is not the
    /// latest checkpoint.
    pub async fn add_cosignature(
        &self,
        posted: &[u8],
    ) -> Result<StoredCheckpoint, ControlPlaneError> {
        let log = self.log()?;
        let _merging = log.cosigning.lock().await;
        let latest = self.latest_checkpoint().await?;
        let note = merge_cosignatures(&latest.note, posted, &log.witnesses)
            .map_err(ControlPlaneError::CosignatureRefused)?;
        let checkpoint = StoredCheckpoint {
            size: latest.size,
            note,
        };
        log.tree
            .record_checkpoint(&checkpoint)
            .await
            .map_err(tree_error)?;
        Ok(checkpoint)
    }

    /// The log's public verifier key, when it signs checkpoints.
    pub fn log_verifier_key(&self) -> Option<&str> {
        self.log
            .as_ref()
            .and_then(|log| log.signer.as_deref())
            .map(LogSigner::verifier_key)
    }

    /// The latest recorded signed checkpoint.
    pub async fn latest_checkpoint(&self) -> Result<StoredCheckpoint, ControlPlaneError> {
        self.log()?
            .tree
            .latest_checkpoint()
            .await
            .map_err(tree_error)?
            .ok_or(ControlPlaneError::NoCheckpoint {
                reason: "no checkpoint has been signed yet",
            })
    }

    /// Signs and records a checkpoint of the whole log now, unless the latest one covers it.
    pub async fn sign_checkpoint(&self) -> Result<StoredCheckpoint, ControlPlaneError> {
        let log = self.log()?;
        let signer = log.signer.as_ref().ok_or(ControlPlaneError::NoCheckpoint {
            reason: "this control plane has no signing key",
        })?;
        let size = log.tree.tree_size().await.map_err(tree_error)?;
        if let Some(latest) = log.tree.latest_checkpoint().await.map_err(tree_error)?
            && latest.size >= size
        {
            return Ok(latest);
        }
        let root = tlog::root(&*log.tree, size).await.map_err(tree_error)?;
        let note =
            signer
                .sign(TreeHead { size, root })
                .map_err(|e| ControlPlaneError::Internal {
                    context: "signing a checkpoint",
                    source: Box::new(e),
                })?;
        let checkpoint = StoredCheckpoint { size, note };
        log.tree
            .record_checkpoint(&checkpoint)
            .await
            .map_err(tree_error)?;
        Ok(checkpoint)
    }

    /// The proof that `leaf` is in the tree of `size` leaves (default: the latest checkpoint's).
    pub async fn inclusion_proof(
        &self,
        leaf: Leaf,
        size: Option<u64>,
    ) -> Result<InclusionProof, ControlPlaneError> {
        let log = self.log()?;
        let seq = match leaf {
            Leaf::Seq(seq) => seq,
            Leaf::EventId(id) => match self.events().get(&id).await? {
                Some(event) => event.seq,
                None => return Err(ControlPlaneError::EventNotFound(id)),
            },
        };
        let size = match size {
            Some(size) => size,
            None => self.latest_checkpoint().await?.size,
        };
        let index = seq
            .checked_sub(1)
            .ok_or(ControlPlaneError::InvalidRequest {
                field: "seq",
                problem: "seq starts at 1".into(),
            })?;
        tlog::inclusion_proof(&*log.tree, index, size)
            .await
            .map_err(tree_error)
    }

    /// What `leviathan log prove` writes, for the event at `seq`: the event, its hash, its
    /// inclusion proof and the latest signed checkpoint, checkable offline with the log's key
    /// (`leviathan log verify`). Refused while no checkpoint covers the event yet.
    pub async fn proof_bundle(&self, seq: u64) -> Result<ProofBundle, ControlPlaneError> {
        let checkpoint = self.latest_checkpoint().await?;
        if seq > checkpoint.size {
            return Err(ControlPlaneError::OutsideTree(format!(
                "the latest signed checkpoint covers {} events, not yet seq {seq}; try again in a second",
                checkpoint.size
            )));
        }
        let inclusion = self
            .inclusion_proof(Leaf::Seq(seq), Some(checkpoint.size))
            .await?;
        let event = self
            .events()
            .read(seq - 1, 1)
            .await?
            .into_iter()
            .next()
            .filter(|e| e.seq == seq)
            .ok_or_else(|| ControlPlaneError::OutsideTree(format!("no event at seq {seq}")))?;
        Ok(ProofBundle {
            canonical_sha256: event.compute_hash(),
            event,
            inclusion,
            checkpoint: checkpoint.note,
        })
    }

    /// The proof that the tree of `to` leaves (default: the latest checkpoint's) extends the
    /// tree of `from`.
    pub async fn consistency_proof(
        &self,
        from: u64,
        to: Option<u64>,
    ) -> Result<ConsistencyProof, ControlPlaneError> {
        let log = self.log()?;
        let to = match to {
            Some(to) => to,
            None => self.latest_checkpoint().await?.size,
        };
        tlog::consistency_proof(&*log.tree, from, to)
            .await
            .map_err(tree_error)
    }
}

fn tree_error(error: TreeError) -> ControlPlaneError {
    match error {
        TreeError::Store(error) => ControlPlaneError::EventStore(error),
        outside => ControlPlaneError::OutsideTree(outside.to_string()),
    }
}

/// Signs a checkpoint every `every` while the log grows (nothing when it does not), until
/// `stop` completes. A failure is logged and retried at the next tick.
///
/// A tick on a log that has not grown since the last signature reads nothing but the tree's
/// size; the store's reads and writes run off the runtime's threads (see [`TreeStore`]).
pub async fn sign_checkpoints(
    plane: ControlPlane,
    every: Duration,
    stop: impl Future<Output = ()>,
) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stop = std::pin::pin!(stop);
    let mut signed = None;
    loop {
        tokio::select! {
            () = &mut stop => return,
            _ = ticks.tick() => {}
        }
        if let (Some(signed), Ok(log)) = (signed, plane.log())
            && log.tree.tree_size().await.is_ok_and(|size| size <= signed)
        {
            continue;
        }
        match plane.sign_checkpoint().await {
            Ok(checkpoint) => signed = Some(checkpoint.size),
            Err(error) => {
                tracing::warn!(%error, "signing a checkpoint failed; retrying at the next tick");
            }
        }
    }
}
