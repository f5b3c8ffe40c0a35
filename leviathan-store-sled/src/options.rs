//! How a database is opened: durability of appends and the size of sled's cache.

use std::time::Duration;

/// When an append is acknowledged relative to reaching the disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// Flush (write and fsync) before acknowledging every batch. Nothing acknowledged is lost.
    #[default]
    Flush,
    /// Acknowledge once committed in memory; a background flush runs every `every`. A crash
    /// loses the acknowledged appends of up to the last `every` (plus one flush's duration),
    /// always as whole batches at the end of the log.
    Periodic {
        /// Interval of the background flush (at least 1 ms).
        every: Duration,
    },
}

/// Options for [`SledStore::open_with`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SledOptions {
    /// When appends are acknowledged.
    pub durability: Durability,
    /// Bytes of sled's page cache (default 256 MiB).
    pub cache_capacity: u64,
}

impl Default for SledOptions {
    fn default() -> Self {
        Self {
            durability: Durability::Flush,
            cache_capacity: 256 * 1024 * 1024,
        }
    }
}
