//! The fuzz bodies of `fuzz/` on stable, in the normal suite: every seed, then mutations of
//! the seeds (bit flips, byte changes, truncations, splices) from a fixed-seed generator, so a
//! failure reproduces. `cargo fuzz run` explores far more (see `fuzz/README.md`).

use leviathan_core::testkit::fuzz::{Target, run, seeds};

/// A fixed-seed xorshift: enough to pick mutations, and every run picks the same.
struct TestRng(u64);

impl TestRng {
    fn next_u32(&mut self) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 32) as u32
    }
}

/// Mutated inputs per seed.
const MUTATIONS: usize = 200;

fn mutate(rng: &mut TestRng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    let pick = |rng: &mut TestRng, n: usize| (rng.next_u32() as usize) % n.max(1);
    for _ in 0..=pick(rng, 4) {
        match pick(rng, 5) {
            0 if !out.is_empty() => {
                let i = pick(rng, out.len());
                out[i] ^= 1 << pick(rng, 8);
            }
            1 if !out.is_empty() => {
                let i = pick(rng, out.len());
                out[i] = rng.next_u32() as u8;
            }
            2 => out.truncate(pick(rng, out.len() + 1)),
            3 => {
                let at = pick(rng, out.len() + 1);
                let from = pick(rng, other.len() + 1);
                out.splice(at..at, other[from..].iter().take(64).copied());
            }
            _ => {
                let i = pick(rng, out.len() + 1);
                out.insert(i, rng.next_u32() as u8);
            }
        }
    }
    out
}

#[test]
fn the_fuzz_bodies_hold_on_the_seeds_and_their_mutations() {
    let seeds = seeds();
    for target in [
        Target::ProofBundle,
        Target::SignedCheckpoint,
        Target::Consistency,
    ] {
        assert!(
            seeds.iter().any(|(t, _)| *t == target),
            "{target:?} has seeds"
        );
    }
    let mut rng = TestRng(0x9e37_79b9_7f4a_7c15);
    let mut runs = 0;
    for (i, (target, seed)) in seeds.iter().enumerate() {
        run(*target, seed);
        let other = &seeds[(i * 7 + 3) % seeds.len()].1;
        for _ in 0..MUTATIONS {
            run(*target, &mutate(&mut rng, seed, other));
            runs += 1;
        }
    }
    assert!(runs >= 5_000, "{runs} mutated inputs");
}
