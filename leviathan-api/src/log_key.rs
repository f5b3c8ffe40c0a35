//! The log's signing key: a C2SP signed-note Ed25519 key, generated on first start into a file
//! next to the token file (`~/.leviathan/log-signing-key`), mode 0600, refused when group or
//! others can read it, like the token file. The file holds two lines: the signer key
//! (`PRIVATE+KEY+<origin>+<id>+<key>`) and the verifier key (`<origin>+<id>+<key>`), which
//! `leviathan log key` prints and verifiers are given.
//!
//! A witness's key (`leviathan log witness`) is kept the same way, in a file of one line: its
//! C2SP cosigner key (`PRIVATE+KEY+<name>+<id>+<key>`, type 0x04), the public key derived.

use std::{
    io,
    path::{Path, PathBuf},
};

use leviathan_core::{
    secret::Secret,
    tlog::{
        checkpoint::{CheckpointError, LogSigner, generate_key},
        cosignature::{CosignatureError, Cosigner, generate_cosigner_key},
    },
};

use crate::private_file::{self, refused_as, write_private_file};

/// The key file's name, in the token file's directory.
pub const KEY_FILE_NAME: &str = "log-signing-key";

/// A witness's key file's name, in the token file's directory unless given.
pub const WITNESS_KEY_FILE_NAME: &str = "witness-key";

/// What can go wrong with the key file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogKeyError {
    /// Group or others may read the file.
    #[error("log signing key {} has mode {mode:04o}; it must be readable by its owner only (`chmod 600 {}`)", path.display(), path.display())]
    TooPermissive {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// There is no key file.
    #[error("no log signing key at {} (`leviathan serve` creates it on first start)", path.display())]
    NotFound {
        /// Where it was looked for.
        path: PathBuf,
    },
    /// The file does not hold a usable key pair.
    #[error("log signing key {}: {source}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: CheckpointError,
    },
    /// The file does not hold a usable witness key.
    #[error("witness key {}: {source}", path.display())]
    InvalidWitnessKey {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: CosignatureError,
    },
    /// Reading or writing failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// The key file next to `token_file`.
pub fn key_file_beside(token_file: &Path) -> PathBuf {
    token_file.with_file_name(KEY_FILE_NAME)
}

/// Reads the key file.
pub fn read_key_file(path: &Path) -> Result<LogSigner, LogKeyError> {
    let text = private_file::read(path)?;
    let invalid = |source| LogKeyError::Invalid {
        path: path.to_owned(),
        source,
    };
    let mut lines = text.lines();
    let (Some(signer), Some(verifier)) = (lines.next(), lines.next()) else {
        return Err(invalid(CheckpointError::Key {
            reason: "expected two lines: the signer key, then the verifier key".into(),
        }));
    };
    LogSigner::new(&Secret::new(signer.trim()), verifier.trim()).map_err(invalid)
}

/// Reads a witness's key file.
pub fn read_witness_key_file(path: &Path) -> Result<Cosigner, LogKeyError> {
    let text = private_file::read(path)?;
    let first = text.lines().next().unwrap_or_default();
    Cosigner::new(&Secret::new(first.trim())).map_err(|source| LogKeyError::InvalidWitnessKey {
        path: path.to_owned(),
        source,
    })
}

/// Reads a witness's key file, generating a key named `name` when there is none; true when it
/// was generated now.
pub fn load_or_create_witness_key(
    path: &Path,
    name: &str,
) -> Result<(Cosigner, bool), LogKeyError> {
    match read_witness_key_file(path) {
        Err(LogKeyError::NotFound { .. }) => {
            let invalid = |source| LogKeyError::InvalidWitnessKey {
                path: path.to_owned(),
                source,
            };
            let (signer, _) = generate_cosigner_key(name).map_err(invalid)?;
            let text = format!("{}\n", signer.expose());
            write_private_file(path, text.as_bytes()).map_err(|source| LogKeyError::Io {
                action: "write",
                path: path.to_owned(),
                source,
            })?;
            Ok((Cosigner::new(&signer).map_err(invalid)?, true))
        }
        other => other.map(|cosigner| (cosigner, false)),
    }
}

/// Reads the key file, generating a key for the log named `origin` when there is none; true
/// when it was generated now.
pub fn load_or_create(path: &Path, origin: &str) -> Result<(LogSigner, bool), LogKeyError> {
    match read_key_file(path) {
        Err(LogKeyError::NotFound { .. }) => {
            let invalid = |source| LogKeyError::Invalid {
                path: path.to_owned(),
                source,
            };
            let (signer, verifier) = generate_key(origin).map_err(invalid)?;
            let text = format!("{}\n{verifier}\n", signer.expose());
            write_private_file(path, text.as_bytes()).map_err(|source| LogKeyError::Io {
                action: "write",
                path: path.to_owned(),
                source,
            })?;
            Ok((LogSigner::new(&signer, &verifier).map_err(invalid)?, true))
        }
        other => other.map(|signer| (signer, false)),
    }
}

refused_as!(LogKeyError);

#[cfg(test)]
mod tests {
    use std::{fs, os::unix::fs::PermissionsExt};

    use super::*;

    #[test]
    fn generated_once_private_and_refused_when_readable() {
        let dir = tempfile::tempdir().unwrap();
        let path = key_file_beside(&dir.path().join("control-plane-token"));
        let (first, generated) = load_or_create(&path, "ci.example/leviathan").unwrap();
        assert!(generated);
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let (again, generated) = load_or_create(&path, "other.example/log").unwrap();
        assert!(!generated);
        assert_eq!(again.verifier_key(), first.verifier_key());
        assert!(first.verifier_key().starts_with("ci.example/leviathan+"));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            read_key_file(&path),
            Err(LogKeyError::TooPermissive { mode: 0o644, .. })
        ));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(&path, "PRIVATE+KEY+x\n").unwrap();
        assert!(matches!(
            read_key_file(&path),
            Err(LogKeyError::Invalid { .. })
        ));
    }

    #[test]
    fn a_witness_key_is_generated_once_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("witness-key");
        let (first, generated) = load_or_create_witness_key(&path, "w.example/1").unwrap();
        assert!(generated);
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let (again, generated) = load_or_create_witness_key(&path, "other").unwrap();
        assert!(!generated);
        assert_eq!(again.verifier_key(), first.verifier_key());
        assert!(first.verifier_key().starts_with("w.example/1+"));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        assert!(matches!(
            read_witness_key_file(&path),
            Err(LogKeyError::TooPermissive { mode: 0o640, .. })
        ));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(&path, "PRIVATE+KEY+x\n").unwrap();
        assert!(matches!(
            read_witness_key_file(&path),
            Err(LogKeyError::InvalidWitnessKey { .. })
        ));
    }
}
