//! Bundle ids bound to their content, in the `bundles` table.

use async_trait::async_trait;
use leviathan_core::{BundleBinding, BundleIndex, EventStoreError, Sha256Digest};
use sqlx::PgPool;

use crate::error::event_error;

/// The [`BundleIndex`] of a [`PgStore`](crate::PgStore).
#[derive(Clone, Debug)]
pub(crate) struct PgBundleIndex {
    pool: PgPool,
}

impl PgBundleIndex {
    pub(crate) fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

#[async_trait]
impl BundleIndex for PgBundleIndex {
    /// One statement: the insert wins, or the no-op update returns the row that was there (a
    /// concurrent insert is waited for, so exactly one binder sees its own content inserted).
    async fn bind(
        &self,
        bundle: &Sha256Digest,
        content: &Sha256Digest,
    ) -> Result<BundleBinding, EventStoreError> {
        let (bound, inserted): (Vec<u8>, bool) = sqlx::query_as(
            "INSERT INTO bundles (bundle, content) VALUES ($1, $2) \
             ON CONFLICT (bundle) DO UPDATE SET bundle = EXCLUDED.bundle \
             RETURNING content, (xmax = 0) AS inserted",
        )
        .bind(&bundle.as_bytes()[..])
        .bind(&content.as_bytes()[..])
        .fetch_one(&self.pool)
        .await
        .map_err(|e| event_error("binding a bundle id", e))?;
        if inserted {
            return Ok(BundleBinding::New);
        }
        let bound: [u8; 32] = bound
            .try_into()
            .map_err(|v: Vec<u8>| EventStoreError::Corrupt {
                seq: None,
                reason: format!("a bundle binding has {} bytes, not 32", v.len()),
            })?;
        Ok(BundleBinding::of(
            Some(Sha256Digest::from_bytes(bound)),
            content,
        ))
    }

    async fn release(
        &self,
        bundle: &Sha256Digest,
        content: &Sha256Digest,
    ) -> Result<(), EventStoreError> {
        sqlx::query("DELETE FROM bundles WHERE bundle = $1 AND content = $2")
            .bind(&bundle.as_bytes()[..])
            .bind(&content.as_bytes()[..])
            .execute(&self.pool)
            .await
            .map_err(|e| event_error("releasing a bundle id", e))?;
        Ok(())
    }
}
