//! Opening a backend's three stores from a URL, the way every Leviathan command names its store:
//!
//! | URL                          | backend                                                    |
//! |------------------------------|------------------------------------------------------------|
//! | `sled:PATH` (`sled:` alone = `~/.leviathan/data`) | the embedded default ([`leviathan_store_sled`]) |
//! | `postgres://…`, `postgresql://…` | PostgreSQL ([`leviathan_store_pg`])                    |
//! | `memory:`                    | in memory, gone when the process ends                       |
//!
//! `sled:` needs the feature `store-sled`, `postgres://` the feature `store-pg` (both default);
//! without it the URL parses and opening it says which feature is off.

use std::{fmt, path::PathBuf, str::FromStr, sync::Arc};

use leviathan_core::{
    ArtifactStore, BundleIndex, EventStore, EventStoreError, GraphStore,
    memory::{MemoryArtifactStore, MemoryBundleIndex, MemoryEventStore, MemoryGraphStore},
    tlog::TreeStore,
};

/// The environment variable that names the store when `--store` is not given.
pub const STORE_ENV: &str = "LEVIATHAN_STORE";

/// A parsed store URL.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// `memory:`.
    Memory,
    /// `sled:PATH`.
    Sled(PathBuf),
    /// `postgres://…` (kept verbatim: it may carry a password, which `Display` masks).
    Postgres(String),
}

/// Why a store URL is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid store URL `{shown}`: {reason} (expected `sled:PATH`, `postgres://…` or `memory:`)"
)]
pub struct StoreUrlError {
    /// The URL, password masked.
    pub shown: String,
    /// What is wrong.
    pub reason: String,
}

/// What can go wrong opening stores.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The URL is malformed (a configuration error).
    #[error(transparent)]
    Url(#[from] StoreUrlError),
    /// The backend could not be opened.
    #[error("cannot open the store at {location}: {source}")]
    Open {
        /// The store, password masked.
        location: String,
        /// The backend's error.
        #[source]
        source: EventStoreError,
    },
}

/// The home directory's `.leviathan/data`, the default sled store.
pub fn default_sled_path() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|home| PathBuf::from(home).join(".leviathan").join("data"))
}

impl StoreUrl {
    /// The default store: sled in `~/.leviathan/data`.
    pub fn default_sled() -> Result<Self, StoreUrlError> {
        default_sled_path()
            .map(Self::Sled)
            .ok_or_else(|| StoreUrlError {
                shown: "sled:".into(),
                reason: "no home directory (HOME is unset); give the path: `sled:PATH`".into(),
            })
    }
}

impl FromStr for StoreUrl {
    type Err = StoreUrlError;

    fn from_str(raw: &str) -> Result<Self, StoreUrlError> {
        let url = raw.trim();
        let error = |reason: &str| StoreUrlError {
            shown: mask_password(url),
            reason: reason.to_owned(),
        };
        if url == "memory:" || url == "memory://" {
            return Ok(Self::Memory);
        }
        if let Some(path) = url.strip_prefix("sled:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Self::default_sled();
            }
            let path = match path.strip_prefix("~/") {
                Some(rest) => std::env::var_os("HOME")
                    .filter(|h| !h.is_empty())
                    .map(|home| PathBuf::from(home).join(rest))
                    .ok_or_else(|| error("`~` needs HOME to be set"))?,
                None => PathBuf::from(path),
            };
            return Ok(Self::Sled(path));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            url::Url::parse(url).map_err(|e| error(&e.to_string()))?;
            return Ok(Self::Postgres(url.to_owned()));
        }
        Err(error("unknown scheme"))
    }
}

/// Masks the password of a URL (for messages and logs).
fn mask_password(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut url) if url.password().is_some() => {
            let _ = url.set_password(Some("****"));
            url.to_string()
        }
        Ok(url) => url.to_string(),
        Err(_) if raw.contains('@') => "<unparsable URL>".to_owned(),
        Err(_) => raw.to_owned(),
    }
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Memory => f.write_str("memory:"),
            Self::Sled(path) => write!(f, "sled:{}", path.display()),
            Self::Postgres(url) => f.write_str(&mask_password(url)),
        }
    }
}

impl fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoreUrl({self})")
    }
}

/// A backend's three stores.
#[derive(Clone, Debug)]
pub struct Stores {
    /// The event log.
    pub events: Arc<dyn EventStore>,
    /// The persisted projection.
    pub graphs: Arc<dyn GraphStore>,
    /// Content-addressed artifacts.
    pub artifacts: Arc<dyn ArtifactStore>,
    /// The log's Merkle tree and its signed checkpoints.
    pub tree: Arc<dyn TreeStore>,
    /// Bundle ids bound to their content.
    pub bundles: Arc<dyn BundleIndex>,
    /// Where they are (password masked), for messages and logs.
    pub location: String,
}

/// Opens the stores `url` names (see the module docs).
pub async fn open_stores(url: &str) -> Result<Stores, OpenError> {
    open(&url.parse()?).await
}

/// Opens the stores of a parsed URL.
pub async fn open(url: &StoreUrl) -> Result<Stores, OpenError> {
    open_with(url, None).await
}

/// The five stores of one backend.
type Handles = (
    Arc<dyn EventStore>,
    Arc<dyn GraphStore>,
    Arc<dyn ArtifactStore>,
    Arc<dyn TreeStore>,
    Arc<dyn BundleIndex>,
);

/// Told how far the one-time build of a PostgreSQL log's Merkle tree is (uninhabited without
/// the feature `store-pg`: there is no such log to open).
#[cfg(feature = "store-pg")]
pub type TreeBuildProgress = leviathan_store_pg::BuildProgress;
/// Told how far the one-time build of a PostgreSQL log's Merkle tree is (uninhabited without
/// the feature `store-pg`: there is no such log to open).
#[cfg(not(feature = "store-pg"))]
pub type TreeBuildProgress = std::convert::Infallible;

/// Opens the stores of a parsed URL, telling `tree_progress` how far the one-time build of the
/// log's Merkle tree is when a PostgreSQL log stored before the tree existed is opened.
pub async fn open_with(
    url: &StoreUrl,
    tree_progress: Option<TreeBuildProgress>,
) -> Result<Stores, OpenError> {
    let location = url.to_string();
    let (events, graphs, artifacts, tree, bundles) = match url {
        StoreUrl::Memory => Ok(open_memory()),
        StoreUrl::Sled(path) => open_sled(path.clone()).await,
        StoreUrl::Postgres(raw) => open_postgres(raw, tree_progress).await,
    }
    .map_err(|source| OpenError::Open {
        location: location.clone(),
        source,
    })?;
    Ok(Stores {
        events,
        graphs,
        artifacts,
        tree,
        bundles,
        location,
    })
}

fn open_memory() -> Handles {
    let events = MemoryEventStore::new();
    (
        Arc::new(events.clone()),
        Arc::new(MemoryGraphStore::new()),
        Arc::new(MemoryArtifactStore::new()),
        Arc::new(events),
        Arc::new(MemoryBundleIndex::new()),
    )
}

#[cfg(feature = "store-sled")]
async fn open_sled(path: PathBuf) -> Result<Handles, EventStoreError> {
    let store = tokio::task::spawn_blocking(move || leviathan_store_sled::SledStore::open(path))
        .await
        .map_err(|e| EventStoreError::backend("opening sled", e))??;
    Ok((
        store.events(),
        store.graphs(),
        store.artifacts(),
        store.tree(),
        store.bundles(),
    ))
}

#[cfg(not(feature = "store-sled"))]
async fn open_sled(_path: PathBuf) -> Result<Handles, EventStoreError> {
    Err(not_built_in("store-sled"))
}

#[cfg(feature = "store-pg")]
async fn open_postgres(
    url: &str,
    tree_progress: Option<TreeBuildProgress>,
) -> Result<Handles, EventStoreError> {
    let options = leviathan_store_pg::PgOptions {
        tree_build_progress: tree_progress,
        ..leviathan_store_pg::PgOptions::default()
    };
    let store = leviathan_store_pg::PgStore::connect_with(url, options).await?;
    Ok((
        store.events(),
        store.graphs(),
        store.artifacts(),
        store.tree(),
        store.bundles(),
    ))
}

#[cfg(not(feature = "store-pg"))]
async fn open_postgres(
    _url: &str,
    _tree_progress: Option<TreeBuildProgress>,
) -> Result<Handles, EventStoreError> {
    Err(not_built_in("store-pg"))
}

/// The error for a backend this build leaves out.
#[cfg(not(all(feature = "store-sled", feature = "store-pg")))]
fn not_built_in(feature: &str) -> EventStoreError {
    EventStoreError::Backend {
        reason: format!(
            "this build has no such backend (the `leviathan` feature `{feature}` is off)"
        ),
        source: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_schemes() {
        assert_eq!("memory:".parse::<StoreUrl>().unwrap(), StoreUrl::Memory);
        assert_eq!(
            "sled:/var/lib/leviathan".parse::<StoreUrl>().unwrap(),
            StoreUrl::Sled("/var/lib/leviathan".into())
        );
        assert_eq!(
            "sled:relative/dir".parse::<StoreUrl>().unwrap(),
            StoreUrl::Sled("relative/dir".into())
        );
        let pg: StoreUrl = "postgres://u:secret@db:5432/lev".parse().unwrap();
        assert_eq!(
            pg,
            StoreUrl::Postgres("postgres://u:secret@db:5432/lev".into())
        );
        assert!(!pg.to_string().contains("secret"), "{pg}");
        assert!(!format!("{pg:?}").contains("secret"));
    }

    #[test]
    fn refuses_unknown_schemes_without_leaking_passwords() {
        let err = "mysql://u:secret@db/x".parse::<StoreUrl>().unwrap_err();
        assert!(err.to_string().contains("sled:PATH"), "{err}");
        assert!(!err.to_string().contains("secret"), "{err}");
        assert!("".parse::<StoreUrl>().is_err());
    }

    #[tokio::test]
    async fn opens_memory_and_sled_stores() {
        let memory = open_stores("memory:").await.unwrap();
        assert_eq!(memory.events.head().await.unwrap(), None);
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sled:{}", dir.path().join("data").display());
        let sled = open_stores(&url).await.unwrap();
        assert_eq!(sled.events.head().await.unwrap(), None);
        // One owner at a time.
        let second = open_stores(&url).await.unwrap_err();
        assert!(
            matches!(
                second,
                OpenError::Open {
                    source: EventStoreError::Locked { .. },
                    ..
                }
            ),
            "{second}"
        );
    }
}
