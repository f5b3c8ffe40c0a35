//! Witness cosignatures: C2SP `tlog-cosignature` v1 (Ed25519, key type `0x04`), a witness's
//! statement that a checkpoint is the largest consistent tree it has seen of the log. The
//! signature covers `cosignature/v1\ntime <T>\n` and the checkpoint's text, and is the 8-byte
//! big-endian timestamp `T` followed by the Ed25519 signature; the note lines are `signed_note`'s.

use std::fmt;

use base64::{Engine, engine::general_purpose::STANDARD};
use ed25519_dalek::{Signature as Ed25519Signature, SigningKey, VerifyingKey};
use rand_core::{CryptoRngCore, OsRng};
use signed_note::{Note, NoteError, Signature, VerifierList};
use tlog_tiles::Checkpoint;

use crate::secret::Secret;

/// The signature type of Ed25519 cosignatures (v1) in key ids and verifier keys.
pub const COSIGNATURE_V1: u8 = 0x04;

/// Why a cosigner key or a cosignature is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CosignatureError {
    /// A key's text is not an Ed25519 cosigner key.
    #[error("not a usable cosigner key: {reason}")]
    Key {
        /// What is wrong.
        reason: String,
    },
    /// The text is not a signed note.
    #[error("not a signed note (a text, a blank line, then `— name signature` lines)")]
    MalformedNote,
    /// The cosigned text is a checkpoint older than the latest.
    #[error(
        "the cosigned checkpoint (size {cosigned}) is no longer the latest (size {latest}); cosign the latest"
    )]
    Stale {
        /// The cosigned checkpoint's size.
        cosigned: u64,
        /// The latest checkpoint's size.
        latest: u64,
    },
    /// The cosigned text is not the checkpoint the log signed.
    #[error("the cosigned text is not the log's latest checkpoint (size {latest})")]
    NotTheCheckpoint {
        /// The latest checkpoint's size.
        latest: u64,
    },
    /// No signature line is by a known witness key.
    #[error(
        "the note carries no cosignature by a witness key the log accepts (`serve --witness-key`)"
    )]
    NoKnownWitness,
    /// A known witness's cosignature does not verify.
    #[error("the cosignature by the witness {witness} does not verify: it was altered or forged")]
    BadCosignature {
        /// The witness key's name and id.
        witness: String,
    },
}

/// A new cosigner key named `name` (e.g. `witness.example.com/w1`): the signer key text
/// (`PRIVATE+KEY+<name>+<id>+<key>`, secret) and the verifier key text (`<name>+<id>+<key>`).
pub fn generate_cosigner_key(name: &str) -> Result<(Secret, String), CosignatureError> {
    generate_cosigner_key_with(&mut OsRng, name)
}

/// [`generate_cosigner_key`] with the random source given (fixed keys for tests and fuzzing).
pub fn generate_cosigner_key_with(
    rng: &mut impl CryptoRngCore,
    name: &str,
) -> Result<(Secret, String), CosignatureError> {
    if !signed_note::is_key_name_valid(name) {
        return Err(key_error(format!(
            "`{name}` cannot name a key: it must be non-empty, without spaces or `+`"
        )));
    }
    let mut seed = [0u8; 32];
    rng.fill_bytes(&mut seed);
    let key = SigningKey::from_bytes(&seed);
    let public = encode(name, &key.verifying_key().to_bytes());
    let secret = encode(name, &seed);
    Ok((Secret::new(format!("PRIVATE+KEY+{secret}")), public))
}

fn key_error(reason: String) -> CosignatureError {
    CosignatureError::Key { reason }
}

fn key_id(name: &str, key: &[u8; 32]) -> u32 {
    signed_note::key_id(name, &[&[COSIGNATURE_V1], key.as_slice()].concat())
}

/// `<name>+<id>+<base64(0x04 ‖ key)>`.
fn encode(name: &str, key: &[u8; 32]) -> String {
    let id = key_id(name, key);
    let bytes = [&[COSIGNATURE_V1], key.as_slice()].concat();
    format!("{name}+{id:08x}+{}", STANDARD.encode(bytes))
}

/// The name and 32 key bytes of `<name>+<id>+<base64(0x04 ‖ key)>`, the id checked.
fn decode(text: &str) -> Result<(String, [u8; 32]), CosignatureError> {
    let mut parts = text.splitn(3, '+');
    let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(key_error("expected <name>+<id>+<key>".into()));
    };
    if !signed_note::is_key_name_valid(name) {
        return Err(key_error(format!("`{name}` cannot name a key")));
    }
    let bytes = STANDARD
        .decode(key)
        .map_err(|_| key_error("the key is not base64".into()))?;
    let [COSIGNATURE_V1, key @ ..] = bytes.as_slice() else {
        return Err(key_error(
            "not a cosignature/v1 key (its type byte must be 0x04)".into(),
        ));
    };
    let key: [u8; 32] = key
        .try_into()
        .map_err(|_| key_error("an Ed25519 key has 32 bytes".into()))?;
    let valid_id =
        id.len() == 8 && u32::from_str_radix(id, 16).is_ok_and(|id| id == key_id(name, &key));
    if !valid_id {
        return Err(key_error("the id does not match the name and key".into()));
    }
    Ok((name.to_owned(), key))
}

fn id_text(id: u32) -> String {
    format!("{id:08x}")
}

/// What a cosignature signs: the header, the time line and the checkpoint's text.
fn signed_message(timestamp: u64, text: &[u8]) -> Vec<u8> {
    let mut message = format!("cosignature/v1\ntime {timestamp}\n").into_bytes();
    message.extend_from_slice(text);
    message
}

/// A witness's key, which cosigns checkpoints.
pub struct Cosigner {
    name: String,
    id: u32,
    key: SigningKey,
}

impl fmt::Debug for Cosigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cosigner")
            .field("verifier_key", &self.verifier_key())
            .finish_non_exhaustive()
    }
}

impl Cosigner {
    /// The cosigner of a signer key text from [`generate_cosigner_key`].
    pub fn new(signer_key: &Secret) -> Result<Self, CosignatureError> {
        let text = signer_key
            .expose()
            .trim()
            .strip_prefix("PRIVATE+KEY+")
            .ok_or_else(|| key_error("a cosigner key starts with PRIVATE+KEY+".into()))?;
        let (name, seed) = decode(text)?;
        let key = SigningKey::from_bytes(&seed);
        let id = key_id(&name, &key.verifying_key().to_bytes());
        Ok(Self { name, id, key })
    }

    /// The public verifier key text, which the log is configured with.
    pub fn verifier_key(&self) -> String {
        encode(&self.name, &self.key.verifying_key().to_bytes())
    }

    /// `note` (a signed checkpoint) with this witness's cosignature at `timestamp` (seconds
    /// since the Epoch) added after its signatures, replacing an earlier one of this key.
    /// The caller has checked the checkpoint: cosigning is a statement about it.
    pub fn cosign(&self, note: &[u8], timestamp: u64) -> Result<String, CosignatureError> {
        if timestamp > i64::MAX as u64 {
            return Err(key_error("a timestamp must not exceed 2^63 - 1".into()));
        }
        let mut note = Note::from_bytes(note).map_err(|_| CosignatureError::MalformedNote)?;
        note.add_sigs(&[&Timestamped {
            cosigner: self,
            timestamp,
        }])
        .map_err(|_| CosignatureError::MalformedNote)?;
        String::from_utf8(note.to_bytes()).map_err(|_| CosignatureError::MalformedNote)
    }
}

/// A [`Cosigner`] at one time: `signed_note`'s signer interface signs the note's text only.
struct Timestamped<'a> {
    cosigner: &'a Cosigner,
    timestamp: u64,
}

impl signed_note::Signer for Timestamped<'_> {
    fn name(&self) -> &str {
        &self.cosigner.name
    }

    fn key_id(&self) -> u32 {
        self.cosigner.id
    }

    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, ed25519_dalek::SignatureError> {
        let message = signed_message(self.timestamp, msg);
        let signature = ed25519_dalek::Signer::sign(&self.cosigner.key, &message);
        Ok([&self.timestamp.to_be_bytes()[..], &signature.to_bytes()].concat())
    }
}

/// Checks cosignatures by one witness key.
#[derive(Clone)]
pub struct CosignatureVerifier {
    name: String,
    id: u32,
    key: VerifyingKey,
}

impl fmt::Debug for CosignatureVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key_text())
    }
}

impl CosignatureVerifier {
    /// A verifier from the witness's verifier key text (`<name>+<id>+<key>`).
    pub fn new(verifier_key: &str) -> Result<Self, CosignatureError> {
        let (name, bytes) = decode(verifier_key.trim())?;
        let key = VerifyingKey::from_bytes(&bytes)
            .map_err(|_| key_error("not an Ed25519 public key".into()))?;
        let id = key_id(&name, &bytes);
        Ok(Self { name, id, key })
    }

    /// The witness's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn key_text(&self) -> String {
        encode(&self.name, &self.key.to_bytes())
    }

    /// The time (seconds since the Epoch) of this witness's valid cosignature on `note`.
    pub fn verify(&self, note: &[u8]) -> Result<u64, CosignatureError> {
        let parsed = Note::from_bytes(note).map_err(|_| CosignatureError::MalformedNote)?;
        let known = VerifierList::new(vec![Box::new(self.clone())]);
        let (verified, _) = parsed.verify(&known).map_err(|e| self.refusal(&e))?;
        Ok(verified.first().map_or(0, |s| timestamp_of(s.signature())))
    }

    fn refusal(&self, error: &NoteError) -> CosignatureError {
        match error {
            NoteError::UnverifiedNote => CosignatureError::NoKnownWitness,
            _ => CosignatureError::BadCosignature {
                witness: format!("{}+{}", self.name, id_text(self.id)),
            },
        }
    }
}

fn timestamp_of(signature: &[u8]) -> u64 {
    signature
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_be_bytes)
}

impl signed_note::Verifier for CosignatureVerifier {
    fn name(&self) -> &str {
        &self.name
    }

    fn key_id(&self) -> u32 {
        self.id
    }

    fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        let Some((time, signature)) = sig.split_first_chunk::<8>() else {
            return false;
        };
        let timestamp = u64::from_be_bytes(*time);
        let Ok(signature) = Ed25519Signature::from_slice(signature) else {
            return false;
        };
        timestamp <= i64::MAX as u64
            && self
                .key
                .verify_strict(&signed_message(timestamp, msg), &signature)
                .is_ok()
    }
}

/// `latest` (the log's latest signed checkpoint, as recorded) with the cosignatures in
/// `posted` by the `witnesses` added, each replacing an earlier one of its key. `posted` must
/// be the same checkpoint; every cosignature by a known witness in it must verify and at least
/// one must be there. Other signature lines of `posted` are ignored.
pub fn merge_cosignatures(
    latest: &str,
    posted: &[u8],
    witnesses: &[CosignatureVerifier],
) -> Result<String, CosignatureError> {
    let stored =
        Note::from_bytes(latest.as_bytes()).map_err(|_| CosignatureError::MalformedNote)?;
    let posted = Note::from_bytes(posted).map_err(|_| CosignatureError::MalformedNote)?;
    let latest_size = Checkpoint::from_bytes(stored.text()).map_or(0, |c| c.size());
    if posted.text() != stored.text() {
        return Err(match Checkpoint::from_bytes(posted.text()) {
            Ok(c) if c.size() < latest_size => CosignatureError::Stale {
                cosigned: c.size(),
                latest: latest_size,
            },
            _ => CosignatureError::NotTheCheckpoint {
                latest: latest_size,
            },
        });
    }
    let known = VerifierList::new(
        witnesses
            .iter()
            .map(|w| Box::new(w.clone()) as Box<dyn signed_note::Verifier>)
            .collect(),
    );
    let (cosignatures, _) = posted.verify(&known).map_err(|e| match e {
        NoteError::InvalidSignature { name, id } => CosignatureError::BadCosignature {
            witness: format!("{name}+{}", id_text(id)),
        },
        _ => CosignatureError::NoKnownWitness,
    })?;
    let mut lines = signature_lines(latest);
    lines.retain(|old| {
        !cosignatures
            .iter()
            .any(|new| new.name() == old.name() && new.id() == old.id())
    });
    lines.extend(cosignatures);
    let merged = Note::new(stored.text(), &lines).map_err(|_| CosignatureError::MalformedNote)?;
    String::from_utf8(merged.to_bytes()).map_err(|_| CosignatureError::MalformedNote)
}

/// The signature lines of a well-formed note (`signed_note` parses them but does not give
/// them back).
fn signature_lines(note: &str) -> Vec<Signature> {
    note.rsplit_once("\n\n")
        .map(|(_, lines)| {
            lines
                .lines()
                .filter_map(|line| Signature::from_bytes(line.as_bytes()).ok())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        digest::Sha256Digest,
        tlog::checkpoint::{LogSigner, LogVerifier, TreeHead, generate_key},
    };

    fn checkpoint(size: u64) -> (String, LogVerifier) {
        checkpoint_of(size, b"root")
    }

    fn checkpoint_of(size: u64, root: &[u8]) -> (String, LogVerifier) {
        let (secret, public) = generate_key("example.com/log").unwrap();
        let signer = LogSigner::new(&secret, &public).unwrap();
        let root = Sha256Digest::of(root);
        let note = signer.sign(TreeHead { size, root }).unwrap();
        (note, LogVerifier::new(&public).unwrap())
    }

    #[test]
    fn cosignatures_follow_the_c2sp_format_and_verify() {
        let (secret, public) = generate_cosigner_key("witness.example/w1").unwrap();
        let cosigner = Cosigner::new(&secret).unwrap();
        assert_eq!(cosigner.verifier_key(), public);
        let (note, log) = checkpoint(7);
        let cosigned = cosigner.cosign(note.as_bytes(), 1_679_315_147).unwrap();
        // The log's signature still verifies; the cosignature is a line of 4 + 8 + 64 bytes.
        log.verify(cosigned.as_bytes()).unwrap();
        let line = cosigned.lines().last().unwrap();
        let encoded = line.strip_prefix("— witness.example/w1 ").unwrap();
        assert_eq!(STANDARD.decode(encoded).unwrap().len(), 76);
        let witness = CosignatureVerifier::new(&public).unwrap();
        assert_eq!(witness.verify(cosigned.as_bytes()), Ok(1_679_315_147));
        // The key id is the one C2SP defines: SHA-256(name ‖ \n ‖ 0x04 ‖ key)[:4].
        let id = &STANDARD.decode(encoded).unwrap()[..4];
        let bytes = STANDARD
            .decode(public.splitn(3, '+').nth(2).unwrap())
            .unwrap();
        let digest = Sha256Digest::of(&[b"witness.example/w1\n".as_slice(), &bytes].concat());
        assert_eq!(id, &digest.as_bytes()[..4]);
    }

    #[test]
    fn forged_or_misplaced_cosignatures_are_refused() {
        let (secret, public) = generate_cosigner_key("witness.example/w1").unwrap();
        let witness = [CosignatureVerifier::new(&public).unwrap()];
        let cosigner = Cosigner::new(&secret).unwrap();
        let (note, _) = checkpoint(7);
        let cosigned = cosigner.cosign(note.as_bytes(), 10).unwrap();
        let merged = merge_cosignatures(&note, cosigned.as_bytes(), &witness).unwrap();
        assert_eq!(merged, cosigned);
        // Again later: the newer cosignature replaces the older.
        let again = cosigner.cosign(merged.as_bytes(), 11).unwrap();
        let merged = merge_cosignatures(&merged, again.as_bytes(), &witness).unwrap();
        assert_eq!(merged.lines().count(), 6, "{merged}");
        assert_eq!(witness[0].verify(merged.as_bytes()), Ok(11));

        let (other, _) = generate_cosigner_key("witness.example/w1").unwrap();
        let by_other = Cosigner::new(&other).unwrap().cosign(note.as_bytes(), 10);
        assert_eq!(
            merge_cosignatures(&note, by_other.unwrap().as_bytes(), &witness),
            Err(CosignatureError::NoKnownWitness)
        );
        let forged = flip_last_signature_byte(&cosigned);
        assert!(matches!(
            merge_cosignatures(&note, forged.as_bytes(), &witness),
            Err(CosignatureError::BadCosignature { .. })
        ));
        assert!(matches!(
            witness[0].verify(forged.as_bytes()),
            Err(CosignatureError::BadCosignature { .. })
        ));
        let (newer, _) = checkpoint(8);
        assert_eq!(
            merge_cosignatures(&newer, cosigned.as_bytes(), &witness),
            Err(CosignatureError::Stale {
                cosigned: 7,
                latest: 8
            })
        );
        let (forked, _) = checkpoint_of(7, b"another root");
        assert!(matches!(
            merge_cosignatures(&forked, cosigned.as_bytes(), &witness),
            Err(CosignatureError::NotTheCheckpoint { latest: 7 })
        ));
    }

    fn flip_last_signature_byte(note: &str) -> String {
        let (head, line) = note.trim_end().rsplit_once('\n').unwrap();
        let (prefix, encoded) = line.rsplit_once(' ').unwrap();
        let mut bytes = STANDARD.decode(encoded).unwrap();
        *bytes.last_mut().unwrap() ^= 1;
        format!("{head}\n{prefix} {}\n", STANDARD.encode(bytes))
    }

    #[test]
    fn keys_are_checked() {
        let (secret, public) = generate_cosigner_key("w.example").unwrap();
        assert!(generate_cosigner_key("has space").is_err());
        assert!(CosignatureVerifier::new("w.example+00000000+AAAA").is_err());
        let wrong_id = format!(
            "w.example+00000000+{}",
            public.splitn(3, '+').nth(2).unwrap()
        );
        assert!(CosignatureVerifier::new(&wrong_id).is_err());
        // A signed-note (type 0x01) key is not a cosigner key.
        let (_, log_key) = generate_key("w.example").unwrap();
        assert!(CosignatureVerifier::new(&log_key).is_err());
        assert!(Cosigner::new(&Secret::new(public)).is_err());
        assert!(!format!("{:?}", Cosigner::new(&secret).unwrap()).contains("PRIVATE"));
    }
}
