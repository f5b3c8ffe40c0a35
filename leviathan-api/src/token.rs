//! Where the control-plane token comes from: the `LEVIATHAN_CONTROL_PLANE_TOKEN` variable, or a
//! token file (default `~/.leviathan/control-plane-token`) that the control plane generates on
//! first start.
//!
//! The file is written atomically (a temporary file in the same directory, then a rename) with
//! mode 0600, in a directory created with mode 0700. A token file that group or others can read
//! is **refused**, not silently fixed: the secret may already have leaked, so the operator must
//! fix the mode (or rotate the token) knowingly.

use std::{
    io,
    path::{Path, PathBuf},
};

use crate::{
    config::{BearerToken, TokenError},
    private_file::{self, refused_as, write_private_file},
};

/// The environment variable that carries the token (it takes precedence over the file).
pub const TOKEN_ENV: &str = "LEVIATHAN_CONTROL_PLANE_TOKEN";
/// The environment variable that names the token file.
pub const TOKEN_FILE_ENV: &str = "LEVIATHAN_TOKEN_FILE";

/// What can go wrong with a token file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenFileError {
    /// There is no token file.
    #[error("no token file at {}", path.display())]
    NotFound {
        /// Where it was looked for.
        path: PathBuf,
    },
    /// Group or others may read the file.
    #[error(
        "token file {} has mode {mode:04o}; it must be readable by its owner only (run `chmod 600 {}`, and consider `leviathan token rotate` in case it leaked)",
        path.display(),
        path.display()
    )]
    TooPermissive {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file's content is not a usable token.
    #[error("token file {} does not hold a valid token: {source}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: TokenError,
    },
    /// `LEVIATHAN_CONTROL_PLANE_TOKEN` is set to an unusable value.
    #[error("{TOKEN_ENV} does not hold a valid token: {0}")]
    InvalidEnv(#[source] TokenError),
    /// A new token could not be generated.
    #[error("cannot generate a token: {0}")]
    Generate(#[source] TokenError),
    /// Reading or writing failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// The default token file, `~/.leviathan/control-plane-token` (`None` without a home directory).
pub fn default_token_file() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|home| {
            PathBuf::from(home)
                .join(".leviathan")
                .join("control-plane-token")
        })
}

/// Where a token came from (never the token itself, so it can be logged).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenSource {
    /// The `LEVIATHAN_CONTROL_PLANE_TOKEN` environment variable.
    Env,
    /// A token file.
    File(PathBuf),
}

impl std::fmt::Display for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Env => write!(f, "environment variable {TOKEN_ENV}"),
            Self::File(path) => write!(f, "token file {}", path.display()),
        }
    }
}

/// A token and where it came from.
#[derive(Clone, Debug)]
pub struct ResolvedToken {
    /// The token.
    pub token: BearerToken,
    /// Its source.
    pub source: TokenSource,
    /// True when the token file was created just now.
    pub generated: bool,
}

/// Reads a token file, refusing one that group or others can read.
pub fn read_token_file(path: &Path) -> Result<BearerToken, TokenFileError> {
    let text = private_file::read(path)?;
    BearerToken::new(text.trim()).map_err(|source| TokenFileError::Invalid {
        path: path.to_owned(),
        source,
    })
}

/// Writes `token` to `path` atomically with mode 0600, creating missing directories with mode 0700.
pub fn write_token_file(path: &Path, token: &BearerToken) -> Result<(), TokenFileError> {
    let text = format!("{}\n", token.expose());
    write_private_file(path, text.as_bytes()).map_err(|source| TokenFileError::Io {
        action: "write token file",
        path: path.to_owned(),
        source,
    })
}

/// Reads the token file, generating and writing a new token when there is none.
pub fn load_or_create(path: &Path) -> Result<(BearerToken, bool), TokenFileError> {
    match read_token_file(path) {
        Ok(token) => Ok((token, false)),
        Err(TokenFileError::NotFound { .. }) => {
            let token = BearerToken::generate().map_err(TokenFileError::Generate)?;
            write_token_file(path, &token)?;
            Ok((token, true))
        }
        Err(other) => Err(other),
    }
}

/// The token to use: `env_value` (the content of `LEVIATHAN_CONTROL_PLANE_TOKEN`) when set and
/// not empty, else the token file; with `create`, a missing file is generated.
pub fn resolve(
    env_value: Option<String>,
    file: &Path,
    create: bool,
) -> Result<ResolvedToken, TokenFileError> {
    if let Some(value) = env_value.filter(|v| !v.trim().is_empty()) {
        let token = BearerToken::new(value.trim()).map_err(TokenFileError::InvalidEnv)?;
        return Ok(ResolvedToken {
            token,
            source: TokenSource::Env,
            generated: false,
        });
    }
    let (token, generated) = if create {
        load_or_create(file)?
    } else {
        (read_token_file(file)?, false)
    };
    Ok(ResolvedToken {
        token,
        source: TokenSource::File(file.to_owned()),
        generated,
    })
}

refused_as!(TokenFileError);

#[cfg(test)]
mod tests {
    use std::{fs, os::unix::fs::PermissionsExt};

    use super::*;

    #[test]
    fn generated_file_is_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/dir/control-plane-token");
        let (first, created) = load_or_create(&path).unwrap();
        assert!(created);
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dir_mode, 0o700);
        let (again, created) = load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(again.expose(), first.expose());
        let leftovers: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers.len(), 1, "no temporary file left: {leftovers:?}");
    }

    #[test]
    fn readable_by_others_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        fs::write(&path, "0123456789abcdef0123").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = read_token_file(&path).unwrap_err();
        assert!(matches!(
            err,
            TokenFileError::TooPermissive { mode: 0o644, .. }
        ));
        assert!(err.to_string().contains("chmod 600"), "{err}");
        assert!(!err.to_string().contains("0123456789abcdef0123"));
        // Generation does not overwrite a refused file either.
        assert!(load_or_create(&path).is_err());
        assert_eq!(fs::read_to_string(&path).unwrap(), "0123456789abcdef0123");
    }

    #[test]
    fn env_wins_and_missing_file_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let resolved = resolve(Some("env-token-0123456789".into()), &path, true).unwrap();
        assert_eq!(resolved.source, TokenSource::Env);
        assert!(
            !path.exists(),
            "nothing written when the env provides the token"
        );
        assert!(matches!(
            resolve(None, &path, false),
            Err(TokenFileError::NotFound { .. })
        ));
        assert!(matches!(
            resolve(Some("short".into()), &path, true),
            Err(TokenFileError::InvalidEnv(_))
        ));
    }

    #[test]
    fn invalid_content_is_reported_without_the_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        fs::write(&path, "tiny").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        let err = read_token_file(&path).unwrap_err();
        assert!(matches!(err, TokenFileError::Invalid { .. }));
        assert!(!err.to_string().contains("tiny"));
    }
}
