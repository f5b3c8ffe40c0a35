//! The Merkle tree against published RFC 6962 vectors and an independent implementation
//! (`ct-merkle`), and proofs under one-bit changes.

use ct_merkle::mem_backed_tree::MemoryBackedTree;
use leviathan_core::{
    AppendRequest, EventStore, NewEvent, Sha256Digest, Timestamp,
    id::EventId,
    memory::MemoryEventStore,
    tlog::{
        self, ConsistencyProof, EMPTY_ROOT, Frontier, InclusionProof, ProofError, TreeError,
        TreeStore,
    },
};
use proptest::prelude::*;

fn hex(s: &str) -> Sha256Digest {
    Sha256Digest::parse_hex(s).expect("a test vector")
}

/// RFC 6962 test vectors (as published with the CT reference implementations): the leaves'
/// data, the root of each tree size 1..=8, two audit paths and two consistency proofs.
const LEAF_DATA: [&[u8]; 8] = [
    b"",
    b"\x00",
    b"\x10",
    b"\x20\x21",
    b"\x30\x31",
    b"\x40\x41\x42\x43",
    b"\x50\x51\x52\x53\x54\x55\x56\x57",
    b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
];
const ROOTS: [&str; 8] = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

fn vector_leaf(data: &[u8]) -> Sha256Digest {
    let mut input = vec![0u8];
    input.extend_from_slice(data);
    Sha256Digest::of(&input)
}

#[test]
fn roots_match_the_rfc_6962_vectors() {
    let mut frontier = Frontier::new();
    assert_eq!(frontier.root(), EMPTY_ROOT);
    assert_eq!(EMPTY_ROOT, Sha256Digest::of(b""));
    let mut tiles = Vec::new();
    for (data, root) in LEAF_DATA.iter().zip(ROOTS) {
        frontier.push_leaf(vector_leaf(data), &mut tiles);
        assert_eq!(frontier.root(), hex(root), "size {}", frontier.size());
    }
}

#[test]
fn published_proofs_verify_and_altered_ones_do_not() {
    let root8 = hex(ROOTS[7]);
    for (index, path) in [
        (
            0u64,
            [
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            5,
            [
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
    ] {
        let proof = InclusionProof {
            leaf_index: index,
            tree_size: 8,
            hashes: path.iter().map(|h| hex(h)).collect(),
        };
        let leaf = vector_leaf(LEAF_DATA[index as usize]);
        proof
            .verify_leaf(&leaf, &root8)
            .expect("published audit path");
        assert_eq!(
            proof.verify_leaf(&vector_leaf(b"other"), &root8),
            Err(ProofError::Mismatch)
        );
    }
    for (old, proof) in [
        (
            2u64,
            vec![
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            6,
            vec![
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
    ] {
        let proof = ConsistencyProof {
            old_size: old,
            new_size: 8,
            hashes: proof.iter().map(|h| hex(h)).collect(),
        };
        let old_root = hex(ROOTS[old as usize - 1]);
        proof
            .verify(&old_root, &root8)
            .expect("published consistency proof");
        assert!(proof.verify(&root8, &root8).is_err());
    }
}

fn note(i: usize) -> NewEvent {
    NewEvent {
        event_id: EventId::new(format!("tlog-{i}")).expect("valid id"),
        event_type: "note.added".into(),
        timestamp: Timestamp::from_unix_micros(1_769_601_600_000_000 + i as i64).expect("in range"),
        actor_id: None,
        payload: serde_json::json!({ "n": i }),
        principal: None,
    }
}

/// A memory store holding `n` events appended in batches of the given sizes (cycled).
async fn store_with(n: usize, batches: &[usize]) -> (MemoryEventStore, Vec<Sha256Digest>) {
    let store = MemoryEventStore::new();
    let events: Vec<NewEvent> = (0..n).map(note).collect();
    let mut start = 0;
    for size in batches.iter().cycle() {
        if start >= n {
            break;
        }
        let end = (start + size.max(&1)).min(n);
        let batch = events[start..end].to_vec();
        store
            .append(AppendRequest::new(batch))
            .await
            .expect("append");
        start = end;
    }
    let hashes = store
        .read(0, n)
        .await
        .expect("read")
        .iter()
        .map(|e| e.hash)
        .collect();
    (store, hashes)
}

fn ct_tree(hashes: &[Sha256Digest]) -> MemoryBackedTree<sha2_next::Sha256, [u8; 32]> {
    let mut tree = MemoryBackedTree::new();
    for hash in hashes {
        tree.push(*hash.as_bytes());
    }
    tree
}

fn flat(hashes: &[Sha256Digest]) -> Vec<u8> {
    hashes.iter().flat_map(|h| *h.as_bytes()).collect()
}

fn flip(hash: &Sha256Digest, bit: usize) -> Sha256Digest {
    let mut bytes = *hash.as_bytes();
    bytes[bit / 8] ^= 1 << (bit % 8);
    Sha256Digest::from_bytes(bytes)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// For any sequence of appends, roots and proofs equal ct-merkle's, every proof verifies,
    /// and any one-bit change to the leaf, a proof hash or a root fails. (A proof alone does not
    /// pin the tree size: the signed checkpoint does, see the bundle tests.)
    #[test]
    fn proofs_agree_with_ct_merkle_and_fail_under_any_one_bit_change(
        n in 1usize..700,
        batches in proptest::collection::vec(1usize..120, 1..6),
        picks in proptest::collection::vec((any::<u64>(), any::<u64>()), 4),
        bit in 0usize..256,
    ) {
        runtime().block_on(async {
            let (store, hashes) = store_with(n, &batches).await;
            let n = n as u64;
            let ct = ct_tree(&hashes);
            let root = tlog::root(&store, n).await.unwrap();
            prop_assert_eq!(root.as_bytes().to_vec(), ct.root().as_bytes().to_vec());
            for (a, b) in picks {
                let size = 1 + b % n;
                let index = a % size;
                let sized = ct_tree(&hashes[..size as usize]);
                let size_root = tlog::root(&store, size).await.unwrap();
                prop_assert_eq!(size_root.as_bytes().to_vec(), sized.root().as_bytes().to_vec());

                let proof = tlog::inclusion_proof(&store, index, size).await.unwrap();
                prop_assert_eq!(flat(&proof.hashes), sized.prove_inclusion(index as usize).as_bytes().to_vec());
                let event = hashes[index as usize];
                prop_assert_eq!(proof.verify(&event, &size_root), Ok(()));
                prop_assert!(proof.verify(&flip(&event, bit), &size_root).is_err());
                prop_assert!(proof.verify(&event, &flip(&size_root, bit)).is_err());
                for i in 0..proof.hashes.len() {
                    let mut bad = proof.clone();
                    bad.hashes[i] = flip(&bad.hashes[i], bit);
                    prop_assert!(bad.verify(&event, &size_root).is_err());
                }
                let old = index + 1;
                let consistency = tlog::consistency_proof(&store, old, n).await.unwrap();
                let ct_consistency = ct.prove_consistency((n - old) as usize);
                if old < n {
                    prop_assert_eq!(flat(&consistency.hashes), ct_consistency.as_bytes().to_vec());
                }
                let old_root = tlog::root(&store, old).await.unwrap();
                prop_assert_eq!(consistency.verify(&old_root, &root), Ok(()));
                prop_assert!(consistency.verify(&flip(&old_root, bit), &root).is_err());
                prop_assert!(consistency.verify(&old_root, &flip(&root, bit)).is_err());
                for i in 0..consistency.hashes.len() {
                    let mut bad = consistency.clone();
                    bad.hashes[i] = flip(&bad.hashes[i], bit);
                    prop_assert!(bad.verify(&old_root, &root).is_err());
                }
            }
            Ok(())
        })?;
    }

    /// Any bytes given as a proof's JSON either fail to parse or fail to verify; nothing panics.
    #[test]
    fn arbitrary_proof_json_never_panics(text in ".{0,400}", size in any::<u64>(), index in any::<u64>()) {
        let root = Sha256Digest::of(text.as_bytes());
        if let Ok(proof) = serde_json::from_str::<InclusionProof>(&text) {
            let _ = proof.verify(&root, &root);
        }
        if let Ok(proof) = serde_json::from_str::<ConsistencyProof>(&text) {
            let _ = proof.verify(&root, &root);
        }
        let hashes = (0..(size % 70) as usize).map(|i| Sha256Digest::of(&i.to_be_bytes())).collect::<Vec<_>>();
        let proof = InclusionProof { leaf_index: index, tree_size: size, hashes: hashes.clone() };
        prop_assert!(proof.verify(&root, &root).is_err());
        let proof = ConsistencyProof { old_size: index, new_size: size, hashes };
        prop_assert!(proof.verify(&root, &root).is_err() || index == 0 || index == size);
    }
}

#[tokio::test]
async fn requests_outside_the_tree_are_refused() {
    let (store, _) = store_with(20, &[20]).await;
    assert!(matches!(
        tlog::root(&store, 21).await,
        Err(TreeError::BeyondLog {
            requested: 21,
            size: 20
        })
    ));
    assert!(matches!(
        tlog::inclusion_proof(&store, 20, 20).await,
        Err(TreeError::LeafOutside { index: 20, .. })
    ));
    assert!(matches!(
        tlog::consistency_proof(&store, 5, 4).await,
        Err(TreeError::SizesOutOfOrder { from: 5, to: 4 })
    ));
    assert_eq!(store.tree_size().await.unwrap(), 20);
    let empty = tlog::consistency_proof(&store, 0, 20).await.unwrap();
    let root = tlog::root(&store, 20).await.unwrap();
    assert_eq!(empty.verify(&EMPTY_ROOT, &root), Ok(()));
    assert!(empty.verify(&root, &root).is_err());
}

/// A bundle for every event of a small log verifies; any one-bit change to the event's hash,
/// a proof hash, the sizes, the leaf index or the signature makes it fail.
#[tokio::test]
async fn bundles_verify_and_fail_under_any_one_bit_change() {
    use base64::{Engine as _, prelude::BASE64_STANDARD};
    use tlog::checkpoint::{LogSigner, LogVerifier, TreeHead, generate_key};

    let (store, hashes) = store_with(37, &[5, 16, 1]).await;
    let (secret, public) = generate_key("test.example/log").unwrap();
    let signer = LogSigner::new(&secret, &public).unwrap();
    let key = LogVerifier::new(&public).unwrap();
    let events = store.read(0, 100).await.unwrap();
    let root = tlog::root(&store, 37).await.unwrap();
    let note = signer.sign(TreeHead { size: 37, root }).unwrap();
    for i in [0usize, 15, 16, 36] {
        let event = &events[i];
        let bundle = tlog::ProofBundle {
            event: event.clone(),
            canonical_sha256: hashes[i],
            inclusion: tlog::inclusion_proof(&store, i as u64, 37).await.unwrap(),
            checkpoint: note.clone(),
        };
        assert_eq!(bundle.verify(&key).unwrap().head.size, 37);
        let json = serde_json::to_string(&bundle).unwrap();
        assert_eq!(
            serde_json::from_str::<tlog::ProofBundle>(&json).unwrap(),
            bundle
        );
        for bit in [0, 77, 255] {
            let mut bad = bundle.clone();
            bad.event.hash = flip(&bad.event.hash, bit);
            bad.canonical_sha256 = bad.event.hash;
            assert!(bad.verify(&key).is_err());
            for h in 0..bundle.inclusion.hashes.len() {
                let mut bad = bundle.clone();
                bad.inclusion.hashes[h] = flip(&bad.inclusion.hashes[h], bit);
                assert!(bad.verify(&key).is_err());
            }
        }
        for bit in 0..64 {
            let mut bad = bundle.clone();
            bad.inclusion.tree_size ^= 1 << bit;
            assert!(bad.verify(&key).is_err(), "size bit {bit}");
            let mut bad = bundle.clone();
            bad.inclusion.leaf_index ^= 1 << bit;
            assert!(bad.verify(&key).is_err(), "index bit {bit}");
        }
        let mut bad = bundle.clone();
        bad.event.payload = serde_json::json!({ "n": 999 });
        assert!(matches!(
            bad.verify(&key),
            Err(tlog::BundleError::EventAltered { .. })
        ));
    }
    // Every bit of the log's signature.
    let (text, signature_line) = note.split_once("\n\n").unwrap();
    let (prefix, encoded) = signature_line.trim_end().rsplit_once(' ').unwrap();
    let signature = BASE64_STANDARD.decode(encoded).unwrap();
    for bit in 0..signature.len() * 8 {
        let mut bad = signature.clone();
        bad[bit / 8] ^= 1 << (bit % 8);
        let forged = format!("{text}\n\n{prefix} {}\n", BASE64_STANDARD.encode(&bad));
        assert!(
            key.verify(forged.as_bytes()).is_err(),
            "signature bit {bit}"
        );
    }

    // Consistency between two checkpoints, sizes bound by the signatures.
    let old_root = tlog::root(&store, 20).await.unwrap();
    let old = signer
        .sign(TreeHead {
            size: 20,
            root: old_root,
        })
        .unwrap();
    let proof = tlog::consistency_proof(&store, 20, 37).await.unwrap();
    tlog::check_consistency(&key, old.as_bytes(), note.as_bytes(), &proof).unwrap();
    assert!(tlog::check_consistency(&key, note.as_bytes(), old.as_bytes(), &proof).is_err());
    for bit in 0..64 {
        let mut bad = proof.clone();
        bad.old_size ^= 1 << bit;
        assert!(tlog::check_consistency(&key, old.as_bytes(), note.as_bytes(), &bad).is_err());
        let mut bad = proof.clone();
        bad.new_size ^= 1 << bit;
        assert!(tlog::check_consistency(&key, old.as_bytes(), note.as_bytes(), &bad).is_err());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any text given as a signed checkpoint is refused or read; nothing panics, and nothing but
    /// the real note verifies.
    #[test]
    fn arbitrary_checkpoints_never_panic_and_never_verify(
        text in "(.{0,40}\n){0,6}(— [a-z./+]{1,20} [A-Za-z0-9+/=]{0,120}\n)?",
        bytes in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        use tlog::checkpoint::{LogVerifier, generate_key, read_unverified};
        let (_, public) = generate_key("fuzz.example/log").unwrap();
        let key = LogVerifier::new(&public).unwrap();
        for input in [text.as_bytes(), bytes.as_slice()] {
            let _ = read_unverified(input);
            prop_assert!(key.verify(input).is_err());
            let _ = LogVerifier::new(&String::from_utf8_lossy(input));
        }
    }
}
