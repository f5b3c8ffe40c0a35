//! `leviathan log key|prove|verify|check-consistency|witness|witness-key`: the verifiable log (see
//! `leviathan_core::tlog`).

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    sync::Arc,
};

use leviathan::{
    api::{client::ControlPlaneClient, log_key, token},
    core::{
        ChainVerifier, EventStore,
        id::EventId,
        tlog::{
            self, ConsistencyProof, Frontier, InclusionProof, ProofBundle, TileRead, TreeStore,
            checkpoint::{LogVerifier, VerifiedCheckpoint, read_unverified},
        },
    },
};

use super::{
    error::{CliError, finish},
    keys::verifier,
    output::{init_logging, print_json, progress},
    source::{Source, SourceArgs},
    witness::{self, WitnessArgs},
};

/// Events read per page while auditing.
const PAGE: usize = 4096;

/// The verifiable log: its key, proofs that events are in it, and that it only grew.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Print the log's public key (the verifier key checkpoints are checked with)
    Key {
        /// The signing key file [default: log-signing-key beside the token file]
        #[arg(long, value_name = "PATH")]
        key_file: Option<PathBuf>,
        /// The token file whose directory holds the key [default: ~/.leviathan/control-plane-token]
        #[arg(long, value_name = "PATH", env = "LEVIATHAN_TOKEN_FILE")]
        token_file: Option<PathBuf>,
    },
    /// Write a self-contained proof that an event is in the log (JSON on stdout): the event,
    /// its hash, its inclusion proof and a signed checkpoint
    Prove {
        /// The event's id
        event_id: String,
        #[command(flatten)]
        source: SourceArgs,
    },
    /// Check a proof written by `prove`, offline: exit 0 verified, 1 not (saying what failed),
    /// 2 unusable input
    Verify {
        /// The proof file (`-` for stdin)
        file: PathBuf,
        /// The log's public key, or a file holding it (`leviathan log key` prints it)
        #[arg(long, value_name = "PUB")]
        key: String,
    },
    /// Check that the log only grew since an older signed checkpoint: the consistency proof
    /// between the two checkpoints, and every stored event up to the newer one against them
    /// (naming the first event that does not match). Exit 0 consistent, 1 not, 2 unusable input
    CheckConsistency {
        /// The older signed checkpoint (a file)
        old: PathBuf,
        /// The newer one (a file) [default: the latest the source has]
        new: Option<PathBuf>,
        /// The log's public key, or a file holding it
        #[arg(long, value_name = "PUB")]
        key: String,
        #[command(flatten)]
        source: SourceArgs,
    },
    /// Be a witness of a log: check that its latest checkpoint extends the one in the state
    /// file (refusing, exit 1, when the log was rewritten or rolled back), cosign it (C2SP
    /// tlog-cosignature), post the cosignature and keep the checkpoint as the new state
    Witness(WitnessArgs),
    /// Print a witness's public key (the control plane's `serve --witness-key`), generating the
    /// key file (mode 0600) when there is none
    WitnessKey {
        /// The witness's name, used only when the key is generated (e.g. witness.example/w1)
        name: String,
        /// The witness's key file [default: ~/.leviathan/witness-key]
        #[arg(long, value_name = "PATH")]
        file: Option<PathBuf>,
    },
}

pub(crate) async fn run(args: Args) -> ExitCode {
    init_logging("warn", false);
    finish(match args.command {
        Command::Key {
            key_file,
            token_file,
        } => key(key_file, token_file),
        Command::Prove { event_id, source } => prove(&event_id, source).await,
        Command::Verify { file, key } => verify(&file, &key),
        Command::CheckConsistency {
            old,
            new,
            key,
            source,
        } => check_consistency(&old, new.as_deref(), &key, source).await,
        Command::Witness(args) => witness::witness(&args).await,
        Command::WitnessKey { name, file } => witness::witness_key(&name, file),
    })
}

fn key(key_file: Option<PathBuf>, token_file: Option<PathBuf>) -> Result<(), CliError> {
    let path = match key_file {
        Some(path) => path,
        None => token_file
            .or_else(token::default_token_file)
            .map(|t| log_key::key_file_beside(&t))
            .ok_or_else(|| CliError::usage("no key file: give --key-file (HOME is unset)"))?,
    };
    let signer = log_key::read_key_file(&path).map_err(|e| CliError::usage(e.to_string()))?;
    println!("{}", signer.verifier_key());
    Ok(())
}

fn read_input(path: &Path) -> Result<Vec<u8>, CliError> {
    let read = if path == Path::new("-") {
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut bytes).map(|_| bytes)
    } else {
        std::fs::read(path)
    };
    read.map_err(|e| CliError::usage(format!("cannot read {}: {e}", path.display())))
}

fn verify(file: &Path, key: &str) -> Result<(), CliError> {
    let key = verifier(key)?;
    let bytes = read_input(file)?;
    let bundle: ProofBundle = serde_json::from_slice(&bytes)
        .map_err(|e| CliError::usage(format!("{} is not a proof bundle: {e}", file.display())))?;
    let checkpoint = bundle
        .verify(&key)
        .map_err(|e| CliError::failure(format!("the proof does not verify: {e}")))?;
    println!(
        "verified: event {} (seq {}) is in the log {} of {} events (root {})",
        bundle.event.event_id,
        bundle.event.seq,
        checkpoint.origin,
        checkpoint.head.size,
        checkpoint.head.root
    );
    Ok(())
}

/// Where the log's proofs come from: a store opened here, or a control plane.
enum LogSource {
    Store {
        events: Arc<dyn EventStore>,
        tree: Arc<dyn TreeStore>,
    },
    Api(ControlPlaneClient),
}

impl LogSource {
    async fn open(source: &SourceArgs) -> Result<Self, CliError> {
        Ok(match source.open().await? {
            Source::Store(stores) => Self::Store {
                events: stores.events,
                tree: stores.tree,
            },
            Source::Api(client) => Self::Api(client),
        })
    }

    fn events(&self) -> Arc<dyn EventStore> {
        match self {
            Self::Store { events, .. } => events.clone(),
            Self::Api(client) => Arc::new(client.event_store()),
        }
    }

    /// The latest signed checkpoint; through the API, one signed now if the log grew.
    async fn checkpoint(&self, fresh: bool) -> Result<String, CliError> {
        match self {
            Self::Store { tree, .. } => tree
                .latest_checkpoint()
                .await
                .map_err(|e| CliError::failure(e.to_string()))?
                .map(|c| c.note)
                .ok_or_else(|| {
                    CliError::failure(
                        "the store holds no signed checkpoint yet (`leviathan serve` signs them)",
                    )
                }),
            Self::Api(client) if fresh => Ok(client.sign_checkpoint().await?),
            Self::Api(client) => Ok(client.checkpoint().await?),
        }
    }

    async fn inclusion(&self, seq: u64, size: u64) -> Result<InclusionProof, CliError> {
        match self {
            Self::Store { tree, .. } => tlog::inclusion_proof(&**tree, seq - 1, size)
                .await
                .map_err(|e| CliError::failure(e.to_string())),
            Self::Api(client) => Ok(client.inclusion_proof(seq, Some(size)).await?),
        }
    }

    async fn consistency(&self, from: u64, to: u64) -> Result<ConsistencyProof, CliError> {
        match self {
            Self::Store { tree, .. } => tlog::consistency_proof(&**tree, from, to)
                .await
                .map_err(|e| CliError::failure(e.to_string())),
            Self::Api(client) => Ok(client.consistency_proof(from, Some(to)).await?),
        }
    }
}

async fn prove(event_id: &str, source: SourceArgs) -> Result<(), CliError> {
    let id = EventId::new(event_id).map_err(|e| CliError::usage(format!("EVENT_ID: {e}")))?;
    let log = LogSource::open(&source).await?;
    let event = log
        .events()
        .get(&id)
        .await?
        .ok_or_else(|| CliError::failure(format!("no event with id `{id}`")))?;
    let note = log.checkpoint(true).await?;
    let head = read_unverified(note.as_bytes()).map_err(|e| CliError::failure(e.to_string()))?;
    if head.size < event.seq {
        return Err(CliError::failure(format!(
            "the latest signed checkpoint covers {} events, not yet seq {}; try again in a second",
            head.size, event.seq
        )));
    }
    let inclusion = log.inclusion(event.seq, head.size).await?;
    let bundle = ProofBundle {
        canonical_sha256: event.compute_hash(),
        event,
        inclusion,
        checkpoint: note,
    };
    print_json(&bundle)
}

fn read_checkpoint(
    key: &LogVerifier,
    path: &Path,
) -> Result<(String, VerifiedCheckpoint), CliError> {
    let bytes = read_input(path)?;
    let text = String::from_utf8(bytes)
        .map_err(|_| CliError::usage(format!("{} is not text", path.display())))?;
    let checkpoint = key
        .verify(text.as_bytes())
        .map_err(|e| CliError::failure(format!("{}: {e}", path.display())))?;
    Ok((text, checkpoint))
}

async fn check_consistency(
    old: &Path,
    new: Option<&Path>,
    key: &str,
    source: SourceArgs,
) -> Result<(), CliError> {
    let key = verifier(key)?;
    let (old_note, old_head) = read_checkpoint(&key, old)?;
    let log = LogSource::open(&source).await?;
    let new_note = match new {
        Some(path) => read_checkpoint(&key, path)?.0,
        None => log.checkpoint(false).await?,
    };
    let new_head = key
        .verify(new_note.as_bytes())
        .map_err(|e| CliError::failure(format!("the newer checkpoint: {e}")))?;
    let proof = log
        .consistency(old_head.head.size, new_head.head.size)
        .await?;
    tlog::check_consistency(&key, old_note.as_bytes(), new_note.as_bytes(), &proof)
        .map_err(|e| CliError::failure(format!("the log was not only appended to: {e}")))?;
    audit(&log, &old_head, &new_head).await?;
    println!(
        "consistent: the log grew from {} to {} events and every stored event matches both checkpoints",
        old_head.head.size, new_head.head.size
    );
    Ok(())
}

/// Reads every event up to the newer checkpoint, re-deriving each hash from its content:
/// the chain must verify and the tree of those hashes must have both checkpoints' roots.
async fn audit(
    log: &LogSource,
    old: &VerifiedCheckpoint,
    new: &VerifiedCheckpoint,
) -> Result<(), CliError> {
    let events = log.events();
    let bar = progress(Some(new.head.size), "auditing the log");
    let (mut chain, mut frontier, mut leaves) = (ChainVerifier::new(), Frontier::new(), Vec::new());
    let mut tiles = Vec::new();
    while frontier.size() < new.head.size {
        let want = (new.head.size - frontier.size()).min(PAGE as u64) as usize;
        let page = match events.read(frontier.size(), want).await {
            Ok(page) => page,
            Err(leviathan::core::EventStoreError::Corrupt {
                seq: Some(seq),
                reason,
            }) => {
                return Err(CliError::failure(format!(
                    "the log was altered: first bad seq {seq}: {reason}"
                )));
            }
            Err(other) => return Err(other.into()),
        };
        if page.is_empty() {
            return Err(CliError::failure(format!(
                "the log holds {} events, fewer than the checkpoint's {}",
                frontier.size(),
                new.head.size
            )));
        }
        for event in &page {
            if let Err(broken) = chain.push(event) {
                return Err(CliError::failure(format!(
                    "the log was altered: first bad seq {}: {}",
                    broken.seq, broken.fault
                )));
            }
            leaves.push(event.hash);
            frontier.push(&event.compute_hash(), &mut tiles);
            tiles.clear();
            if frontier.size() == old.head.size {
                check_root(log, &leaves, &frontier, old).await?;
            }
        }
        bar.set_position(frontier.size());
    }
    bar.finish_and_clear();
    check_root(log, &leaves, &frontier, new).await
}

async fn check_root(
    log: &LogSource,
    leaves: &[leviathan::core::Sha256Digest],
    frontier: &Frontier,
    checkpoint: &VerifiedCheckpoint,
) -> Result<(), CliError> {
    if frontier.root() == checkpoint.head.root {
        return Ok(());
    }
    let first_bad = first_leaf_unlike_the_tree(log, leaves).await;
    Err(CliError::failure(format!(
        "the log was altered: its events up to seq {} do not hash to the signed root {}{}",
        checkpoint.head.size,
        checkpoint.head.root,
        first_bad.map_or_else(String::new, |seq| format!(" (first bad seq {seq})"))
    )))
}

/// The first event whose hash is not the leaf the stored tree holds for it (a store only).
async fn first_leaf_unlike_the_tree(
    log: &LogSource,
    leaves: &[leviathan::core::Sha256Digest],
) -> Option<u64> {
    let LogSource::Store { tree, .. } = log else {
        return None;
    };
    let full = leaves.len() as u64 / tlog::TILE_WIDTH;
    let read = TileRead::Tiles {
        level: 0,
        indexes: 0..full,
    };
    let stored = tree.read_tiles(&[read]).await.ok()?.pop()?;
    leaves
        .iter()
        .zip(&stored)
        .position(|(hash, leaf)| tlog::leaf_hash(hash) != *leaf)
        .map(|index| index as u64 + 1)
}
