//! Files that hold secrets (the token, the token keyring, the log's and witnesses' keys): written
//! atomically with mode 0600, and refused on reading when group or others may read them, since
//! the secret may already have leaked.

use std::{
    fs::{self, DirBuilder, OpenOptions},
    io::{self, Write},
    os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

/// Why a private file could not be read; each file's own error has the same three cases.
#[derive(Debug)]
pub(crate) enum Refused {
    NotFound {
        path: PathBuf,
    },
    TooPermissive {
        path: PathBuf,
        mode: u32,
    },
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

/// `From<Refused>` for a file's own error, whose `NotFound`, `TooPermissive` and `Io` variants
/// have the same fields.
macro_rules! refused_as {
    ($error:ty) => {
        impl From<$crate::private_file::Refused> for $error {
            fn from(refused: $crate::private_file::Refused) -> Self {
                use $crate::private_file::Refused;
                match refused {
                    Refused::NotFound { path } => Self::NotFound { path },
                    Refused::TooPermissive { path, mode } => Self::TooPermissive { path, mode },
                    Refused::Io {
                        action,
                        path,
                        source,
                    } => Self::Io {
                        action,
                        path,
                        source,
                    },
                }
            }
        }
    };
}
pub(crate) use refused_as;

/// The text of the private file `path`.
pub(crate) fn read(path: &Path) -> Result<String, Refused> {
    let io = |action| {
        move |source| Refused::Io {
            action,
            path: path.to_owned(),
            source,
        }
    };
    let meta = match fs::metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(Refused::NotFound {
                path: path.to_owned(),
            });
        }
        other => other.map_err(io("inspect"))?,
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Refused::TooPermissive {
            path: path.to_owned(),
            mode,
        });
    }
    fs::read_to_string(path).map_err(io("read"))
}

/// Writes `contents` to `path` atomically (a temporary file in the same directory, then a
/// rename) with mode 0600, creating missing directories with mode 0700.
pub(crate) fn write_private_file(path: &Path, contents: &[u8]) -> io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    DirBuilder::new().recursive(true).mode(0o700).create(&dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "secret".to_owned());
    let temp = dir.join(format!(".{name}.tmp-{}", uuid::Uuid::new_v4().simple()));
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&temp, path)?;
        // Make the rename durable; a directory that cannot be synced is not worth failing for.
        if let Ok(d) = fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if written.is_err() {
        let _ = fs::remove_file(&temp);
    }
    written
}
