//! Fuzz bodies for the verifiable log's parsers and verifiers. Each takes arbitrary bytes, must
//! not panic, and must never accept a false statement about one fixed log (37 events, its
//! checkpoints signed by a fixed test key, one fixed witness). `fuzz/` runs them under
//! libFuzzer; `leviathan-core/tests/tlog_fuzz.rs` runs them on stable over [`seeds`] and
//! thousands of mutations of them, so the normal test suite exercises them too.

use std::sync::OnceLock;

use rand_core::{CryptoRng, RngCore};

use crate::{
    AppendRequest, Event, EventStore, NewEvent, Sha256Digest, Timestamp,
    id::EventId,
    memory::MemoryEventStore,
    secret::Secret,
    tlog::{
        self, ConsistencyProof, Frontier, InclusionProof, ProofBundle,
        checkpoint::{LogSigner, LogVerifier, TreeHead, read_unverified},
        cosignature::{
            CosignatureVerifier, Cosigner, generate_cosigner_key_with, merge_cosignatures,
        },
    },
};

/// Events in the fixed log.
pub const FIXTURE_SIZE: u64 = 37;

/// Sizes of the fixed log's signed checkpoints.
const SIGNED_SIZES: [u64; 3] = [1, 16, FIXTURE_SIZE];

/// The fixed log the bodies judge statements against.
pub struct Fixture {
    key: LogVerifier,
    witness: CosignatureVerifier,
    events: Vec<Event>,
    /// `roots[n]`: the root of the tree of the first `n` events.
    roots: Vec<Sha256Digest>,
    /// The signed checkpoints of [`SIGNED_SIZES`].
    notes: Vec<String>,
    seeds: Vec<(Target, Vec<u8>)>,
}

/// Which body an input is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Target {
    /// [`proof_bundle`].
    ProofBundle,
    /// [`signed_checkpoint`].
    SignedCheckpoint,
    /// [`consistency`].
    Consistency,
}

/// Deterministic "randomness" for the fixed test keys: never for a real key.
struct FixedBytes(u8);

impl RngCore for FixedBytes {
    fn next_u32(&mut self) -> u32 {
        rand_core::impls::next_u32_via_fill(self)
    }
    fn next_u64(&mut self) -> u64 {
        rand_core::impls::next_u64_via_fill(self)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for byte in dest {
            self.0 = self.0.wrapping_mul(31).wrapping_add(7);
            *byte = self.0;
        }
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl CryptoRng for FixedBytes {}

fn event(i: u64) -> NewEvent {
    NewEvent {
        event_id: EventId::new(format!("fuzz-{i}")).expect("a valid id"),
        event_type: "note.added".into(),
        timestamp: Timestamp::from_unix_micros(1_769_601_600_000_000 + i as i64).expect("in range"),
        actor_id: None,
        payload: serde_json::json!({ "n": i }),
        principal: None,
    }
}

/// The fixed log, built once.
pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime")
            .block_on(build())
    })
}

async fn build() -> Fixture {
    let store = MemoryEventStore::new();
    let batch = (0..FIXTURE_SIZE).map(event).collect();
    store
        .append(AppendRequest::new(batch))
        .await
        .expect("append");
    let events = store.read(0, FIXTURE_SIZE as usize).await.expect("read");
    let (mut frontier, mut roots, mut tiles) = (Frontier::new(), vec![tlog::EMPTY_ROOT], vec![]);
    for event in &events {
        frontier.push(&event.hash, &mut tiles);
        roots.push(frontier.root());
    }
    let (signer_key, public) = signed_note::generate_key(&mut FixedBytes(1), "fuzz.example/log");
    let signer = LogSigner::new(&Secret::new(signer_key), &public).expect("a key pair");
    let notes: Vec<String> = SIGNED_SIZES
        .iter()
        .map(|&size| {
            let root = roots[size as usize];
            signer.sign(TreeHead { size, root }).expect("signed")
        })
        .collect();
    let cosigner = witness_cosigner();
    let mut seeds = Vec::new();
    for (note, &size) in notes.iter().zip(&SIGNED_SIZES) {
        let cosigned = cosigner
            .cosign(note.as_bytes(), 1_700_000_000)
            .expect("cosigned");
        seeds.push((Target::SignedCheckpoint, note.clone().into_bytes()));
        seeds.push((Target::SignedCheckpoint, cosigned.into_bytes()));
        for index in [0, size / 2, size - 1] {
            let bundle = ProofBundle {
                event: events[index as usize].clone(),
                canonical_sha256: events[index as usize].hash,
                inclusion: tlog::inclusion_proof(&store, index, size)
                    .await
                    .expect("proof"),
                checkpoint: note.clone(),
            };
            let json = serde_json::to_vec(&bundle).expect("json");
            seeds.push((Target::ProofBundle, json));
        }
        for old in [0, 1, 5, 16, size] {
            if old <= size {
                let proof = tlog::consistency_proof(&store, old, size)
                    .await
                    .expect("proof");
                seeds.push((Target::Consistency, consistency_input(&proof)));
            }
        }
    }
    Fixture {
        key: LogVerifier::new(&public).expect("a key"),
        witness: CosignatureVerifier::new(&cosigner.verifier_key()).expect("a key"),
        events,
        roots,
        notes,
        seeds,
    }
}

fn witness_cosigner() -> Cosigner {
    let (key, _) = generate_cosigner_key_with(&mut FixedBytes(2), "fuzz.example/witness")
        .expect("a witness key");
    Cosigner::new(&key).expect("a witness key")
}

/// The consistency body's input: old size, new size (one byte each), then 32-byte hashes.
fn consistency_input(proof: &ConsistencyProof) -> Vec<u8> {
    let mut input = vec![proof.old_size as u8, proof.new_size as u8];
    for hash in &proof.hashes {
        input.extend_from_slice(hash.as_bytes());
    }
    input
}

/// The seed corpus: valid inputs of every body.
pub fn seeds() -> &'static [(Target, Vec<u8>)] {
    &fixture().seeds
}

/// Runs the body of `target` on `data`.
pub fn run(target: Target, data: &[u8]) {
    match target {
        Target::ProofBundle => proof_bundle(data),
        Target::SignedCheckpoint => signed_checkpoint(data),
        Target::Consistency => consistency(data),
    }
}

/// A proof bundle (JSON) accepted by the fixed key must state a true inclusion: the event is
/// the log's event at its seq, in a checkpoint the log signed.
pub fn proof_bundle(data: &[u8]) {
    let f = fixture();
    let Ok(bundle) = serde_json::from_slice::<ProofBundle>(data) else {
        return;
    };
    if let Ok(checkpoint) = bundle.verify(&f.key) {
        let index = bundle.event.seq - 1;
        assert_eq!(
            Some(&bundle.event.hash),
            f.events.get(index as usize).map(|e| &e.hash),
            "an inclusion proof for an event not in the log was accepted"
        );
        assert_eq!(checkpoint.head.root, f.roots[checkpoint.head.size as usize]);
    }
}

/// A signed note accepted by the fixed key must be one the log signed; a cosignature accepted
/// by the fixed witness must be on such a note; merging must not panic.
pub fn signed_checkpoint(data: &[u8]) {
    let f = fixture();
    let _ = read_unverified(data);
    if let Ok(checkpoint) = f.key.verify(data) {
        let size = checkpoint.head.size;
        assert!(
            SIGNED_SIZES.contains(&size),
            "an unsigned size {size} was accepted"
        );
        assert_eq!(
            checkpoint.head.root, f.roots[size as usize],
            "a forged root was accepted"
        );
    }
    if f.witness.verify(data).is_ok() {
        // The witness cosigned only the log's own checkpoints.
        let text = |note: &[u8]| signed_note::Note::from_bytes(note).map(|n| n.text().to_vec());
        let cosigned = text(data).expect("a note whose cosignature verified");
        assert!(
            f.notes
                .iter()
                .any(|n| text(n.as_bytes()).ok() == Some(cosigned.clone())),
            "a cosignature on a forged checkpoint was accepted"
        );
    }
    for note in &f.notes {
        if let Ok(merged) = merge_cosignatures(note, data, std::slice::from_ref(&f.witness)) {
            assert!(
                merged.starts_with(note.trim_end()),
                "merging changed the checkpoint"
            );
            f.witness
                .verify(merged.as_bytes())
                .expect("the merged cosignature verifies");
        }
    }
}

/// A consistency proof (old size, new size, hashes) must verify only against the log's true
/// roots: with either root altered it must be refused. JSON proofs must parse without panic.
pub fn consistency(data: &[u8]) {
    let f = fixture();
    let _ = serde_json::from_slice::<ConsistencyProof>(data);
    let _ = serde_json::from_slice::<InclusionProof>(data);
    let [old, new, rest @ ..] = data else {
        return;
    };
    let (old, new) = (u64::from(*old), u64::from(*new));
    let hashes = rest
        .chunks_exact(32)
        .map(|c| Sha256Digest::from_bytes(c.try_into().expect("32 bytes")))
        .collect();
    let proof = ConsistencyProof {
        old_size: old,
        new_size: new,
        hashes,
    };
    let (Some(old_root), Some(new_root)) = (f.roots.get(old as usize), f.roots.get(new as usize))
    else {
        return;
    };
    let _ = proof.verify(old_root, new_root);
    // Every tree extends the empty one: a proof from size 0 says nothing about the new root.
    let altered = Sha256Digest::of(rest);
    if old > 0 && altered != *new_root {
        assert!(
            proof.verify(old_root, &altered).is_err(),
            "a forged new root was accepted"
        );
    }
    if old > 0 && altered != *old_root {
        assert!(
            proof.verify(&altered, new_root).is_err(),
            "a forged old root was accepted"
        );
    }
}
