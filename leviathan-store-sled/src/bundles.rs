//! Bundle ids bound to their content, in the `bundles` tree of the database.

use std::{fmt, sync::Arc};

use async_trait::async_trait;
use leviathan_core::{BundleBinding, BundleIndex, EventStoreError, Sha256Digest};

use crate::{error, shared::Shared};

/// The [`BundleIndex`] of a [`SledStore`](crate::SledStore). A binding is made before its
/// bundle is appended, so the append's flush makes it durable with the events.
pub(crate) struct SledBundleIndex {
    shared: Arc<Shared>,
}

impl fmt::Debug for SledBundleIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SledBundleIndex")
            .field("location", &self.shared.location)
            .finish_non_exhaustive()
    }
}

impl SledBundleIndex {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    fn decode(&self, stored: &[u8]) -> Result<Sha256Digest, EventStoreError> {
        let bytes: [u8; 32] = stored.try_into().map_err(|_| EventStoreError::Corrupt {
            seq: None,
            reason: format!(
                "a bundle binding in {} has {} bytes, not 32",
                self.shared.location_text(),
                stored.len()
            ),
        })?;
        Ok(Sha256Digest::from_bytes(bytes))
    }
}

#[async_trait]
impl BundleIndex for SledBundleIndex {
    async fn bind(
        &self,
        bundle: &Sha256Digest,
        content: &Sha256Digest,
    ) -> Result<BundleBinding, EventStoreError> {
        let swapped = self
            .shared
            .trees
            .bundles
            .compare_and_swap(
                bundle.as_bytes(),
                None::<&[u8]>,
                Some(&content.as_bytes()[..]),
            )
            .map_err(|e| error::event_store(e, "binding a bundle id"))?;
        match swapped {
            Ok(()) => Ok(BundleBinding::New),
            Err(found) => {
                let bound = found.current.map(|v| self.decode(&v)).transpose()?;
                Ok(BundleBinding::of(bound, content))
            }
        }
    }

    async fn release(
        &self,
        bundle: &Sha256Digest,
        content: &Sha256Digest,
    ) -> Result<(), EventStoreError> {
        // A binding to other content stays: the swap fails and changes nothing.
        let _ = self
            .shared
            .trees
            .bundles
            .compare_and_swap(
                bundle.as_bytes(),
                Some(&content.as_bytes()[..]),
                None::<&[u8]>,
            )
            .map_err(|e| error::event_store(e, "releasing a bundle id"))?;
        Ok(())
    }
}
