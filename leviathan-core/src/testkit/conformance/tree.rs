//! The Merkle tree of the log on every backend: roots after appends of every batch size,
//! proofs for spread-out leaves and sizes, the same after a restart, recorded checkpoints.

use crate::{
    digest::Sha256Digest,
    store::AppendRequest,
    tlog::{self, Frontier, StoredCheckpoint},
};

use super::{Harness, Stores, note};

/// Appends `count` notes numbered from `first`, in one batch.
async fn append_notes(s: &Stores, first: u64, count: u64) {
    let batch = (first..first + count)
        .map(|n| note(&format!("tree-{n}"), n))
        .collect();
    s.events
        .append(AppendRequest::new(batch))
        .await
        .expect("append");
}

/// The chain hashes of the whole log, read back.
async fn chain_hashes(s: &Stores) -> Vec<Sha256Digest> {
    let mut hashes = Vec::new();
    loop {
        let page = s
            .events
            .read(hashes.len() as u64, 1000)
            .await
            .expect("read");
        if page.is_empty() {
            return hashes;
        }
        hashes.extend(page.iter().map(|e| e.hash));
    }
}

/// The root of the first `size` of `hashes`, computed without the store's tiles.
fn expected_root(hashes: &[Sha256Digest], size: usize) -> Sha256Digest {
    let mut frontier = Frontier::new();
    frontier.extend(&hashes[..size]);
    frontier.root()
}

/// Checks spread-out inclusion and consistency proofs of the tree of `size` against roots
/// computed from the chain hashes.
async fn check_proofs(s: &Stores, hashes: &[Sha256Digest], size: u64) {
    let root = expected_root(hashes, size as usize);
    let mut pick = size.wrapping_mul(2_654_435_761) | 1;
    for _ in 0..12 {
        pick = pick.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let index = (pick >> 11) % size;
        let proof = tlog::inclusion_proof(&*s.tree, index, size)
            .await
            .expect("inclusion proof");
        proof
            .verify(&hashes[index as usize], &root)
            .unwrap_or_else(|e| panic!("leaf {index} of {size}: {e}"));
        let old = index + 1;
        let consistency = tlog::consistency_proof(&*s.tree, old, size)
            .await
            .expect("consistency proof");
        consistency
            .verify(&expected_root(hashes, old as usize), &root)
            .unwrap_or_else(|e| panic!("{old} to {size}: {e}"));
    }
}

/// After each append of every batch size from 1 to 40 (820 events, past the first tile of
/// tiles), the tree has the log's size and the root the chain hashes give.
pub async fn tree_roots_after_every_batch_size(h: &dyn Harness) {
    let s = h.open().await;
    assert_eq!(s.tree.tree_size().await.unwrap(), 0);
    assert_eq!(tlog::root(&*s.tree, 0).await.unwrap(), tlog::EMPTY_ROOT);
    let mut size = 0;
    for batch in 1..=40 {
        append_notes(&s, size, batch).await;
        size += batch;
        assert_eq!(s.tree.tree_size().await.unwrap(), size);
        let hashes = chain_hashes(&s).await;
        assert_eq!(
            tlog::root(&*s.tree, size).await.unwrap(),
            expected_root(&hashes, size as usize),
            "root after a batch of {batch} (size {size})"
        );
    }
    let hashes = chain_hashes(&s).await;
    for old in [1, 15, 16, 17, 255, 256, 257, 600] {
        assert_eq!(
            tlog::root(&*s.tree, old).await.unwrap(),
            expected_root(&hashes, old as usize),
            "root of the first {old}"
        );
    }
}

/// Inclusion and consistency proofs for spread-out leaves and tree sizes verify.
pub async fn tree_proofs_for_spread_leaves_and_sizes(h: &dyn Harness) {
    let s = h.open().await;
    for (first, count) in [(0, 7), (7, 250), (257, 300)] {
        append_notes(&s, first, count).await;
    }
    let hashes = chain_hashes(&s).await;
    for size in [1, 2, 16, 17, 256, 257, 300, 557] {
        check_proofs(&s, &hashes, size).await;
    }
}

/// The tree and the recorded checkpoints survive closing and reopening the store, and appends
/// after the restart extend the same tree.
pub async fn tree_survives_a_restart(h: &dyn Harness) {
    let s = h.open().await;
    append_notes(&s, 0, 270).await;
    let before = tlog::root(&*s.tree, 270).await.unwrap();
    let checkpoint = StoredCheckpoint {
        size: 270,
        note: "signed note text".into(),
    };
    s.tree.record_checkpoint(&checkpoint).await.unwrap();
    let s = h.reopen(s).await;
    assert_eq!(s.tree.tree_size().await.unwrap(), 270);
    assert_eq!(tlog::root(&*s.tree, 270).await.unwrap(), before);
    assert_eq!(s.tree.latest_checkpoint().await.unwrap(), Some(checkpoint));
    append_notes(&s, 270, 23).await;
    let hashes = chain_hashes(&s).await;
    assert_eq!(
        tlog::root(&*s.tree, 293).await.unwrap(),
        expected_root(&hashes, 293)
    );
    check_proofs(&s, &hashes, 293).await;
}

/// Checkpoints: the latest is the largest tree; recording a size again replaces its note.
pub async fn checkpoints_are_recorded(h: &dyn Harness) {
    let s = h.open().await;
    assert_eq!(s.tree.latest_checkpoint().await.unwrap(), None);
    let at = |size: u64, note: &str| StoredCheckpoint {
        size,
        note: note.into(),
    };
    s.tree.record_checkpoint(&at(5, "five")).await.unwrap();
    s.tree.record_checkpoint(&at(9, "nine")).await.unwrap();
    s.tree.record_checkpoint(&at(7, "seven")).await.unwrap();
    assert_eq!(
        s.tree.latest_checkpoint().await.unwrap(),
        Some(at(9, "nine"))
    );
    s.tree
        .record_checkpoint(&at(9, "nine, cosigned"))
        .await
        .unwrap();
    assert_eq!(
        s.tree.latest_checkpoint().await.unwrap(),
        Some(at(9, "nine, cosigned"))
    );
}
