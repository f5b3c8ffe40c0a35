//! Content-addressed artifacts as `bytea` rows keyed by their SHA-256.

use std::fmt;

use async_trait::async_trait;
use bytes::Bytes;
use leviathan_core::{
    ArtifactError, ArtifactStore, Sha256Digest,
    store::{StoredArtifact, verify_content},
};
use sqlx::PgPool;

use crate::{error::artifact_error, location::Location};

/// The artifact store on PostgreSQL.
#[derive(Clone)]
pub(crate) struct PgArtifactStore {
    pool: PgPool,
    location: Location,
}

impl PgArtifactStore {
    pub(crate) fn new(pool: PgPool, location: Location) -> Self {
        Self { pool, location }
    }
}

impl fmt::Debug for PgArtifactStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgArtifactStore")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl ArtifactStore for PgArtifactStore {
    /// One `INSERT ... ON CONFLICT DO NOTHING`: the row is written whole or not at all, and
    /// concurrent puts of the same content store it once.
    async fn put(&self, content: Bytes) -> Result<StoredArtifact, ArtifactError> {
        let sha256 = Sha256Digest::of(&content);
        let size = content.len() as u64;
        let inserted = sqlx::query(
            "INSERT INTO artifacts (sha256, content, size) VALUES ($1, $2, $3) \
             ON CONFLICT (sha256) DO NOTHING",
        )
        .bind(sha256.as_bytes().as_slice())
        .bind(content.as_ref())
        .bind(i64::try_from(size).unwrap_or(i64::MAX))
        .execute(&self.pool)
        .await
        .map_err(|e| artifact_error(format_args!("storing artifact {sha256} ({size} bytes)"), e))?;
        Ok(StoredArtifact {
            sha256,
            size,
            created: inserted.rows_affected() == 1,
        })
    }

    async fn get(&self, sha256: &Sha256Digest) -> Result<Bytes, ArtifactError> {
        let content: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT content FROM artifacts WHERE sha256 = $1")
                .bind(sha256.as_bytes().as_slice())
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| artifact_error(format_args!("reading artifact {sha256}"), e))?;
        let content = content.ok_or(ArtifactError::NotFound(*sha256))?;
        verify_content(sha256, Bytes::from(content))
    }

    async fn exists(&self, sha256: &Sha256Digest) -> Result<bool, ArtifactError> {
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM artifacts WHERE sha256 = $1)")
            .bind(sha256.as_bytes().as_slice())
            .fetch_one(&self.pool)
            .await
            .map_err(|e| artifact_error(format_args!("looking up artifact {sha256}"), e))
    }
}
