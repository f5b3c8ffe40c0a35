//! Signed checkpoints: a C2SP `tlog-checkpoint` (origin, tree size, base64 root) inside a C2SP
//! `signed-note` signed with the log's Ed25519 key, whose name is the origin. Formats and
//! signatures are the `tlog_tiles` and `signed_note` crates'.

use std::fmt;

use signed_note::{Note, StandardSigner, StandardVerifier, VerifierList};
use tlog_tiles::Checkpoint;

use crate::{digest::Sha256Digest, secret::Secret};

use super::hash::{EMPTY_ROOT, from_tlog, to_tlog};

/// Why a key or a checkpoint is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// A key's text is not a signed-note Ed25519 key.
    #[error("not a usable log key: {reason}")]
    Key {
        /// What is wrong.
        reason: String,
    },
    /// The origin cannot name a key (empty, spaces or `+`).
    #[error("`{origin}` cannot be a log origin: it must be non-empty, without spaces or `+`")]
    Origin {
        /// The origin refused.
        origin: String,
    },
    /// The text is not a signed note.
    #[error("not a signed note (a text, a blank line, then `— name signature` lines)")]
    MalformedNote,
    /// The note carries no signature by the expected key.
    #[error("the checkpoint is not signed by the key {key}")]
    NotSignedByKey {
        /// The verifier key's name and id.
        key: String,
    },
    /// A signature by the expected key does not verify.
    #[error("the signature by the key {key} does not verify: the checkpoint was altered or forged")]
    BadSignature {
        /// The verifier key's name and id.
        key: String,
    },
    /// The signed text is not a tlog checkpoint.
    #[error("the signed text is not a checkpoint (origin, tree size, base64 root hash)")]
    MalformedCheckpoint,
    /// The checkpoint is for another log than the key's.
    #[error("the checkpoint's origin `{origin}` is not the key's name `{key_name}`")]
    OriginMismatch {
        /// The checkpoint's origin line.
        origin: String,
        /// The key's name.
        key_name: String,
    },
}

/// A new signing key for the log named `origin` (e.g. `ci.example.com/leviathan`): the signer
/// key text (`PRIVATE+KEY+<origin>+<id>+<key>`, secret) and the verifier key text
/// (`<origin>+<id>+<key>`, public).
pub fn generate_key(origin: &str) -> Result<(Secret, String), CheckpointError> {
    if !signed_note::is_key_name_valid(origin) {
        return Err(CheckpointError::Origin {
            origin: origin.to_owned(),
        });
    }
    let (signer, verifier) = signed_note::generate_key(&mut rand_core::OsRng, origin);
    Ok((Secret::new(signer), verifier))
}

/// The tree a signed checkpoint states, read **without** checking any signature: for choosing a
/// proof's size, never for trusting it ([`LogVerifier::verify`] is for that).
pub fn read_unverified(note: &[u8]) -> Result<TreeHead, CheckpointError> {
    let parsed = Note::from_bytes(note).map_err(|_| CheckpointError::MalformedNote)?;
    let checkpoint =
        Checkpoint::from_bytes(parsed.text()).map_err(|_| CheckpointError::MalformedCheckpoint)?;
    Ok(TreeHead {
        size: checkpoint.size(),
        root: from_tlog(*checkpoint.hash()),
    })
}

/// The tree a checkpoint commits to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TreeHead {
    /// Leaves in the tree.
    pub size: u64,
    /// Its root hash.
    pub root: Sha256Digest,
}

/// Signs checkpoints with the log's key.
pub struct LogSigner {
    signer: StandardSigner,
    verifier: LogVerifier,
}

impl fmt::Debug for LogSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogSigner")
            .field("verifier_key", &self.verifier.key)
            .finish_non_exhaustive()
    }
}

impl LogSigner {
    /// The signer of the key pair from [`generate_key`]; refuses keys that do not belong
    /// together.
    pub fn new(signer_key: &Secret, verifier_key: &str) -> Result<Self, CheckpointError> {
        let signer =
            StandardSigner::new(signer_key.expose()).map_err(|e| CheckpointError::Key {
                reason: format!("the signer key: {e}"),
            })?;
        let verifier = LogVerifier::new(verifier_key)?;
        let this = Self { signer, verifier };
        let probe = this.sign(TreeHead {
            size: 0,
            root: EMPTY_ROOT,
        })?;
        this.verifier
            .verify(probe.as_bytes())
            .map_err(|_| CheckpointError::Key {
                reason: "the signer and verifier keys are not a pair".into(),
            })?;
        Ok(this)
    }

    /// The log's origin (the key's name).
    pub fn origin(&self) -> &str {
        self.verifier.origin()
    }

    /// The public verifier key text, for `leviathan log key` and verifiers.
    pub fn verifier_key(&self) -> &str {
        &self.verifier.key
    }

    /// The signed checkpoint of `head`.
    pub fn sign(&self, head: TreeHead) -> Result<String, CheckpointError> {
        let checkpoint = Checkpoint::new(self.origin(), head.size, to_tlog(&head.root), "")
            .map_err(|_| CheckpointError::MalformedCheckpoint)?;
        let mut note =
            Note::new(&checkpoint.to_bytes(), &[]).map_err(|_| CheckpointError::MalformedNote)?;
        note.add_sigs(&[&self.signer])
            .map_err(|e| CheckpointError::Key {
                reason: e.to_string(),
            })?;
        String::from_utf8(note.to_bytes()).map_err(|_| CheckpointError::MalformedNote)
    }
}

/// Checks checkpoints against the log's public key.
#[derive(Clone)]
pub struct LogVerifier {
    verifier: StandardVerifier,
    key: String,
}

impl fmt::Debug for LogVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogVerifier")
            .field("key", &self.key)
            .finish()
    }
}

/// A checkpoint whose signature verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedCheckpoint {
    /// The log's origin.
    pub origin: String,
    /// The tree it commits to.
    pub head: TreeHead,
}

impl LogVerifier {
    /// A verifier from the key text `leviathan log key` prints (`<origin>+<id>+<key>`).
    pub fn new(verifier_key: &str) -> Result<Self, CheckpointError> {
        let key = verifier_key.trim();
        let verifier = StandardVerifier::new(key).map_err(|e| CheckpointError::Key {
            reason: format!("`{key}`: {e}"),
        })?;
        Ok(Self {
            verifier,
            key: key.to_owned(),
        })
    }

    /// The log's origin (the key's name).
    pub fn origin(&self) -> &str {
        signed_note::Verifier::name(&self.verifier)
    }

    /// Checks the signed note `note`: signed by this key, a checkpoint of this key's log.
    pub fn verify(&self, note: &[u8]) -> Result<VerifiedCheckpoint, CheckpointError> {
        let parsed = Note::from_bytes(note).map_err(|_| CheckpointError::MalformedNote)?;
        let known = VerifierList::new(vec![Box::new(self.verifier.clone())]);
        parsed.verify(&known).map_err(|e| match e {
            signed_note::NoteError::InvalidSignature { .. } => CheckpointError::BadSignature {
                key: self.key.clone(),
            },
            _ => CheckpointError::NotSignedByKey {
                key: self.key.clone(),
            },
        })?;
        let checkpoint = Checkpoint::from_bytes(parsed.text())
            .map_err(|_| CheckpointError::MalformedCheckpoint)?;
        if checkpoint.origin() != self.origin() {
            return Err(CheckpointError::OriginMismatch {
                origin: checkpoint.origin().to_owned(),
                key_name: self.origin().to_owned(),
            });
        }
        Ok(VerifiedCheckpoint {
            origin: checkpoint.origin().to_owned(),
            head: TreeHead {
                size: checkpoint.size(),
                root: from_tlog(*checkpoint.hash()),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_and_refuse() {
        let (secret, public) = generate_key("example.com/leviathan").unwrap();
        let signer = LogSigner::new(&secret, &public).unwrap();
        let head = TreeHead {
            size: 42,
            root: Sha256Digest::of(b"root"),
        };
        let note = signer.sign(head).unwrap();
        assert!(note.starts_with("example.com/leviathan\n42\n"), "{note}");
        let verifier = LogVerifier::new(&public).unwrap();
        assert_eq!(verifier.verify(note.as_bytes()).unwrap().head, head);

        let altered = note.replacen("\n42\n", "\n43\n", 1);
        assert!(matches!(
            verifier.verify(altered.as_bytes()),
            Err(CheckpointError::BadSignature { .. })
        ));
        let (_, other) = generate_key("example.com/leviathan").unwrap();
        assert!(matches!(
            LogVerifier::new(&other).unwrap().verify(note.as_bytes()),
            Err(CheckpointError::NotSignedByKey { .. })
        ));
        assert!(LogSigner::new(&secret, &other).is_err());
        assert!(matches!(
            generate_key("has space"),
            Err(CheckpointError::Origin { .. })
        ));
        assert!(matches!(
            verifier.verify(b"junk"),
            Err(CheckpointError::MalformedNote)
        ));
    }
}
