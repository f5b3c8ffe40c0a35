//! `leviathan log witness` and `log witness-key`: a minimal C2SP witness. It keeps the last
//! checkpoint it cosigned in a state file, cosigns a newer one only when a consistency proof
//! shows the log was only appended to since, and posts the cosignature to the log.

use std::{
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use leviathan::{
    api::{client::ControlPlaneClient, log_key, token},
    core::tlog::{
        self,
        checkpoint::{LogVerifier, VerifiedCheckpoint},
    },
};

use super::{error::CliError, keys::verifier, source};

/// `leviathan log witness`.
#[derive(clap::Args, Debug)]
pub(crate) struct WitnessArgs {
    /// The control plane whose log is witnessed (http://host:port)
    #[arg(long, value_name = "URL")]
    log: String,
    /// The log's public key, or a file holding it (`leviathan log key` prints it)
    #[arg(long, value_name = "PUB")]
    key: String,
    /// The witness's state: the last checkpoint it cosigned (created on the first run, which
    /// trusts the log's checkpoint as it is)
    #[arg(long, value_name = "FILE")]
    state: PathBuf,
    /// The witness's key file (`leviathan log witness-key` creates it) [default:
    /// ~/.leviathan/witness-key]
    #[arg(long, value_name = "PATH")]
    witness_key: Option<PathBuf>,
    /// Token file used when LEVIATHAN_CONTROL_PLANE_TOKEN is not set [default:
    /// ~/.leviathan/control-plane-token]
    #[arg(long, value_name = "PATH", env = "LEVIATHAN_TOKEN_FILE")]
    token_file: Option<PathBuf>,
}

fn key_file(given: Option<PathBuf>) -> Result<PathBuf, CliError> {
    given
        .or_else(|| {
            token::default_token_file().map(|t| t.with_file_name(log_key::WITNESS_KEY_FILE_NAME))
        })
        .ok_or_else(|| CliError::usage("no witness key file: give its path (HOME is unset)"))
}

pub(crate) fn witness_key(name: &str, file: Option<PathBuf>) -> Result<(), CliError> {
    let path = key_file(file)?;
    let (cosigner, generated) = log_key::load_or_create_witness_key(&path, name)
        .map_err(|e| CliError::usage(e.to_string()))?;
    if generated {
        eprintln!("generated the witness key {} (mode 0600)", path.display());
    }
    println!("{}", cosigner.verifier_key());
    Ok(())
}

pub(crate) async fn witness(args: &WitnessArgs) -> Result<(), CliError> {
    let key = verifier(&args.key)?;
    let cosigner =
        log_key::read_witness_key_file(&key_file(args.witness_key.clone())?).map_err(|e| {
            CliError::usage(format!("{e} (`leviathan log witness-key NAME` makes one)"))
        })?;
    let previous = read_state(&key, &args.state)?;
    let client = source::client(&args.log, args.token_file.as_deref())?;
    let note = client.checkpoint().await?;
    let latest = key
        .verify(note.as_bytes())
        .map_err(|e| CliError::failure(format!("refused: the log's latest checkpoint: {e}")))?;
    if let Some((old_note, old)) = &previous {
        let grown = Grown {
            client: &client,
            key: &key,
            state: &args.state,
        };
        grown.check(old_note, old, &note, &latest).await?;
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let cosigned = cosigner
        .cosign(note.as_bytes(), now)
        .map_err(|e| CliError::failure(format!("cannot cosign: {e}")))?;
    write_state(&args.state, &cosigned)?;
    client.post_cosignature(&cosigned).await?;
    let from = previous.map_or_else(
        || "first sight".to_owned(),
        |(_, old)| old.head.size.to_string(),
    );
    println!(
        "cosigned: the log {} of {} events (root {}), consistent with the last checkpoint it cosigned ({from})",
        latest.origin, latest.head.size, latest.head.root
    );
    Ok(())
}

/// The checkpoint in the state file, checked against the log's key; none before the first run.
fn read_state(
    key: &LogVerifier,
    state: &Path,
) -> Result<Option<(String, VerifiedCheckpoint)>, CliError> {
    let text = match std::fs::read_to_string(state) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(CliError::usage(format!(
                "cannot read the state {}: {e}",
                state.display()
            )));
        }
    };
    let checkpoint = key.verify(text.as_bytes()).map_err(|e| {
        CliError::usage(format!(
            "the state {} is not a checkpoint of this log: {e}",
            state.display()
        ))
    })?;
    Ok(Some((text, checkpoint)))
}

/// Replaces the state file atomically (a temporary file beside it, synced, then renamed).
fn write_state(state: &Path, note: &str) -> Result<(), CliError> {
    let dir = match state.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let failed = |e: std::io::Error| {
        CliError::failure(format!("cannot write the state {}: {e}", state.display()))
    };
    let mut file = tempfile::NamedTempFile::new_in(dir).map_err(failed)?;
    std::io::Write::write_all(&mut file, note.as_bytes()).map_err(failed)?;
    file.as_file().sync_all().map_err(failed)?;
    file.persist(state).map_err(|e| failed(e.error))?;
    Ok(())
}

/// Checks that the log's latest checkpoint extends the witness's last one.
struct Grown<'a> {
    client: &'a ControlPlaneClient,
    key: &'a LogVerifier,
    state: &'a Path,
}

impl Grown<'_> {
    async fn check(
        &self,
        old_note: &str,
        old: &VerifiedCheckpoint,
        note: &str,
        latest: &VerifiedCheckpoint,
    ) -> Result<(), CliError> {
        let (was, now) = (old.head, latest.head);
        let refuse = |what: String| {
            CliError::failure(format!(
                "refused, not cosigned: {what} (the last checkpoint this witness cosigned is in {})",
                self.state.display()
            ))
        };
        if now.size < was.size {
            return Err(refuse(format!(
                "the log rolled back: its checkpoint states {} events, fewer than the {} it stated before",
                now.size, was.size
            )));
        }
        if now.size == was.size {
            return match now.root == was.root {
                true => Ok(()),
                false => Err(refuse(format!(
                    "the log forked: its checkpoint of {} events has the root {}, not {}",
                    now.size, now.root, was.root
                ))),
            };
        }
        if was.size == 0 {
            return Ok(());
        }
        let proof = self
            .client
            .consistency_proof(was.size, Some(now.size))
            .await?;
        tlog::check_consistency(self.key, old_note.as_bytes(), note.as_bytes(), &proof).map_err(
            |e| {
                refuse(format!(
                    "the log was rewritten: its tree of {} events does not extend the tree of {}: {e}",
                    now.size, was.size
                ))
            },
        )?;
        Ok(())
    }
}
