//! Writes the seed corpus (`DIR/<target>/seed-N`, valid inputs of each fuzz body) that the
//! targets of `fuzz/` start from:
//! `cargo run -p leviathan-core --features testkit --example fuzz_corpus -- fuzz/corpus`.

use std::{fs, path::Path};

use leviathan_core::testkit::fuzz::{Target, seeds};

fn main() -> std::io::Result<()> {
    let root = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "fuzz/corpus".into());
    for (i, (target, input)) in seeds().iter().enumerate() {
        let name = match target {
            Target::ProofBundle => "proof_bundle",
            Target::SignedCheckpoint => "signed_checkpoint",
            Target::Consistency => "consistency",
            _ => continue,
        };
        let dir = Path::new(&root).join(name);
        fs::create_dir_all(&dir)?;
        fs::write(dir.join(format!("seed-{i}")), input)?;
    }
    Ok(())
}
