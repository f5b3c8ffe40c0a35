//! Chain verification throughput, side by side with the raw SHA-256 of the same canonical bytes
//! (the floor: verification cannot be faster than hashing what it verifies).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use leviathan_core::{
    ChainVerifier, Event, Sha256Digest,
    testkit::{lifecycle, seal_all},
};
use std::hint::black_box;

fn events() -> Vec<Event> {
    seal_all(lifecycle("bench", "demo", 400))
}

fn verification(c: &mut Criterion) {
    let events = events();
    let records: Vec<(Sha256Digest, Vec<u8>)> = events
        .iter()
        .map(|e| (e.hash, e.canonical_bytes()))
        .collect();
    let bytes: u64 = records.iter().map(|(_, b)| b.len() as u64).sum();

    let mut group = c.benchmark_group("verification");
    group.throughput(Throughput::Bytes(bytes));
    group.bench_function("sha256_raw", |b| {
        b.iter(|| {
            for (_, record) in &records {
                black_box(Sha256Digest::of(record));
            }
        })
    });
    group.bench_function("verify_stored_records", |b| {
        b.iter(|| {
            let mut verifier = ChainVerifier::new();
            for (hash, record) in &records {
                verifier.push_record(*hash, record).expect("verifies");
            }
            black_box(verifier.finish())
        })
    });
    group.bench_function("verify_events", |b| {
        b.iter(|| {
            let mut verifier = ChainVerifier::new();
            for event in &events {
                verifier.push(event).expect("verifies");
            }
            black_box(verifier.finish())
        })
    });
    group.finish();
}

criterion_group!(benches, verification);
criterion_main!(benches);
