//! The keyring that signs the control plane's `lvt1.` tokens, kept in a private file next to the
//! token file (`~/.leviathan/signing-keys.json`): generated on first start, mode 0600, refused
//! when group or others can read it (like the token file and the log's key).

use std::{
    io,
    path::{Path, PathBuf},
    time::Duration,
};

use leviathan_core::{
    Timestamp,
    auth::token::{KEY_BYTES, Keyring, KeyringError, SigningKey},
    id::KeyId,
};
use rand::TryRngCore;

use crate::private_file::{self, refused_as, write_private_file};

/// The keyring file's name, in the token file's directory.
pub const KEYRING_FILE_NAME: &str = "signing-keys.json";

/// How long a retired key keeps verifying: longer than any token may live, so a rotation never
/// refuses a token signed before it.
pub const KEEP_RETIRED: Duration = Duration::from_secs(400 * 86_400);

/// What can go wrong with the keyring file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyringFileError {
    /// Group or others may read the file.
    #[error("signing keyring {} has mode {mode:04o}; it must be readable by its owner only (`chmod 600 {}`, then `leviathan token rotate-key` in case it leaked)", path.display(), path.display())]
    TooPermissive {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// There is no keyring file.
    #[error("no signing keyring at {} (`leviathan serve` creates it on first start)", path.display())]
    NotFound {
        /// Where it was looked for.
        path: PathBuf,
    },
    /// The file does not hold a keyring.
    #[error("signing keyring {}: {source}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: KeyringError,
    },
    /// The operating system's random number generator failed.
    #[error("cannot draw random bytes for a signing key: {0}")]
    Random(String),
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

/// The keyring file next to `token_file`.
pub fn keyring_file_beside(token_file: &Path) -> PathBuf {
    token_file.with_file_name(KEYRING_FILE_NAME)
}

/// A fresh signing key (`k-<16 hex>`, 256 random bits) made at `now`.
pub fn generate_key(now: Timestamp) -> Result<SigningKey, KeyringFileError> {
    let mut bytes = [0u8; KEY_BYTES + 8];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(|e| KeyringFileError::Random(e.to_string()))?;
    let (secret, id) = bytes.split_at(KEY_BYTES);
    let id = KeyId::new(format!("k-{}", hex::encode(id)))
        .map_err(|e| KeyringFileError::Random(e.to_string()))?;
    let mut key = [0u8; KEY_BYTES];
    key.copy_from_slice(secret);
    Ok(SigningKey::new(id, key, now))
}

/// Reads the keyring file.
pub fn read_keyring(path: &Path) -> Result<Keyring, KeyringFileError> {
    let text = private_file::read(path)?;
    Keyring::from_json(&text).map_err(|source| KeyringFileError::Invalid {
        path: path.to_owned(),
        source,
    })
}

/// Writes `keyring` to `path` atomically with mode 0600.
pub fn write_keyring(path: &Path, keyring: &Keyring) -> Result<(), KeyringFileError> {
    write_private_file(path, keyring.to_json().as_bytes()).map_err(|source| KeyringFileError::Io {
        action: "write",
        path: path.to_owned(),
        source,
    })
}

/// Reads the keyring file, generating a keyring of one key when there is none; true when it
/// was generated now.
pub fn load_or_create(path: &Path) -> Result<(Keyring, bool), KeyringFileError> {
    match read_keyring(path) {
        Err(KeyringFileError::NotFound { .. }) => {
            let keyring = Keyring::new(generate_key(Timestamp::now())?);
            write_keyring(path, &keyring)?;
            Ok((keyring, true))
        }
        other => other.map(|keyring| (keyring, false)),
    }
}

/// Adds a new signing key to the keyring file: the current key retires but keeps verifying
/// (tokens it signed stay valid until they expire). Returns the new key's id.
pub fn rotate(path: &Path) -> Result<KeyId, KeyringFileError> {
    let mut keyring = read_keyring(path)?;
    let now = Timestamp::now();
    let next = generate_key(now)?;
    let id = next.id().clone();
    keyring
        .rotate(next, now, KEEP_RETIRED)
        .map_err(|source| KeyringFileError::Invalid {
            path: path.to_owned(),
            source,
        })?;
    write_keyring(path, &keyring)?;
    Ok(id)
}

refused_as!(KeyringFileError);

#[cfg(test)]
mod tests {
    use leviathan_core::{
        auth::{Role, token::Grant},
        id::TokenId,
    };

    use std::{fs, os::unix::fs::PermissionsExt};

    use super::*;

    #[test]
    fn generated_once_private_rotated_and_refused_when_readable() {
        let dir = tempfile::tempdir().unwrap();
        let path = keyring_file_beside(&dir.path().join("control-plane-token"));
        let (first, generated) = load_or_create(&path).unwrap();
        assert!(generated);
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let signed = first
            .sign(Grant {
                token_id: TokenId::new("tok-1").unwrap(),
                role: Role::Reader,
                attempt: None,
                expires: Timestamp::now().saturating_add(Duration::from_secs(60)),
            })
            .unwrap();
        let (again, generated) = load_or_create(&path).unwrap();
        assert!(!generated);
        assert_eq!(again.signing_key().id(), first.signing_key().id());
        let next = rotate(&path).unwrap();
        let rotated = read_keyring(&path).unwrap();
        assert_eq!(rotated.signing_key().id(), &next);
        assert!(
            rotated
                .verify(signed.token.expose(), Timestamp::now())
                .is_ok()
        );
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        assert!(matches!(
            read_keyring(&path),
            Err(KeyringFileError::TooPermissive { mode: 0o640, .. })
        ));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(&path, "{}").unwrap();
        assert!(matches!(
            read_keyring(&path),
            Err(KeyringFileError::Invalid { .. })
        ));
    }
}
