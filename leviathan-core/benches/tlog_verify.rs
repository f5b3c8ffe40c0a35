//! Offline verification of inclusion and consistency proofs in a tree of 10 million leaves, on
//! one core, side by side with the floor: the SHA-256 node hashes a proof of that length costs.
//! The tree is one whose leaves are all the same event, so that every complete subtree of a
//! level has one hash and the proofs of a 10 M-leaf tree come from O(log n) hashes (the proof
//! algorithms are the same `tlog_tiles` ones the stores use; only what they read is synthetic).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use leviathan_core::{
    Sha256Digest,
    tlog::{ConsistencyProof, InclusionProof, leaf_hash, node_hash},
};
use std::hint::black_box;
use tlog_tiles::{Hash, HashReader, split_stored_hash_index};

const LEAVES: u64 = 10_000_000;

/// Every stored hash of a level is the same: `levels[k]`, the root of 2^k equal leaves.
struct Uniform(Vec<Hash>);

impl HashReader for Uniform {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
        Ok(indexes
            .iter()
            .map(|&i| self.0[usize::from(split_stored_hash_index(i).0)])
            .collect())
    }
}

fn digest(hash: &Hash) -> Sha256Digest {
    Sha256Digest::from_bytes(hash.0)
}

fn uniform_tree(event: &Sha256Digest) -> Uniform {
    let mut levels = vec![Hash(*leaf_hash(event).as_bytes())];
    for _ in 0..64 {
        let last = digest(levels.last().expect("a level"));
        levels.push(Hash(*node_hash(&last, &last).as_bytes()));
    }
    Uniform(levels)
}

fn proofs(c: &mut Criterion) {
    let event = Sha256Digest::of(b"one event's chain hash");
    let tree = uniform_tree(&event);
    let root = digest(&tlog_tiles::tree_hash(LEAVES, &tree).unwrap());
    let index = LEAVES / 2 + 12_345;
    let inclusion = InclusionProof {
        leaf_index: index,
        tree_size: LEAVES,
        hashes: tlog_tiles::prove_record(LEAVES, index, &tree)
            .unwrap()
            .iter()
            .map(digest)
            .collect(),
    };
    inclusion
        .verify(&event, &root)
        .expect("the inclusion proof verifies");
    let old = LEAVES - 1_234_567;
    let old_root = digest(&tlog_tiles::tree_hash(old, &tree).unwrap());
    let consistency = ConsistencyProof {
        old_size: old,
        new_size: LEAVES,
        hashes: tlog_tiles::prove_tree(LEAVES, old, &tree)
            .unwrap()
            .iter()
            .map(digest)
            .collect(),
    };
    consistency
        .verify(&old_root, &root)
        .expect("the consistency proof verifies");
    eprintln!(
        "proof lengths at {LEAVES} leaves: inclusion {}, consistency {}",
        inclusion.hashes.len(),
        consistency.hashes.len()
    );

    let mut group = c.benchmark_group("tlog_verify");
    group.throughput(Throughput::Elements(1));
    group.bench_function("sha256_floor_inclusion", |b| {
        b.iter(|| {
            let mut acc = leaf_hash(black_box(&event));
            for hash in &inclusion.hashes {
                acc = node_hash(&acc, hash);
            }
            acc
        })
    });
    group.bench_function("verify_inclusion", |b| {
        b.iter(|| black_box(&inclusion).verify(&event, &root).unwrap())
    });
    group.bench_function("verify_consistency", |b| {
        b.iter(|| black_box(&consistency).verify(&old_root, &root).unwrap())
    });
    group.finish();
}

criterion_group!(benches, proofs);
criterion_main!(benches);
