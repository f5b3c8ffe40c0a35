//! Projection throughput: folding decoded events, and decoding JSON then folding, next to the raw
//! SHA-256 of the same JSON bytes.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use leviathan_core::{
    Event, Graph, Sha256Digest,
    testkit::{lifecycle, seal_all},
};
use std::hint::black_box;

fn projection(c: &mut Criterion) {
    let events = seal_all(lifecycle("bench", "demo", 400));
    let lines: Vec<String> = events
        .iter()
        .map(|e| serde_json::to_string(e).expect("serializes"))
        .collect();
    let count = events.len() as u64;

    let mut group = c.benchmark_group("projection");
    group.throughput(Throughput::Elements(count));
    group.bench_function("sha256_raw_of_json", |b| {
        b.iter(|| {
            for line in &lines {
                black_box(Sha256Digest::of(line.as_bytes()));
            }
        })
    });
    group.bench_function("fold_decoded", |b| {
        b.iter(|| {
            let mut graph = Graph::new();
            for event in &events {
                graph.apply(event);
            }
            black_box(graph.checkpoint_seq())
        })
    });
    group.bench_function("decode_and_fold", |b| {
        b.iter(|| {
            let mut graph = Graph::new();
            for line in &lines {
                let event: Event = serde_json::from_str(line).expect("decodes");
                graph.apply(&event);
            }
            black_box(graph.checkpoint_seq())
        })
    });
    group.finish();
}

criterion_group!(benches, projection);
criterion_main!(benches);
