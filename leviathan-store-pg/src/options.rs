//! How a [`PgStore`](crate::PgStore) connects and batches.

use std::time::Duration;

use leviathan_core::EventStoreError;

use crate::tree::BuildProgress;

/// How a [`PgStore`] connects and batches.
#[derive(Clone, Debug)]
pub struct PgOptions {
    /// Size of the pool used for reads, the graph and artifacts (the writer and the listener
    /// have a connection each besides).
    pub max_connections: u32,
    /// How long a read waits for a pooled connection before failing with a transient error.
    pub acquire_timeout: Duration,
    /// Most append requests the writer commits together.
    pub max_group_requests: usize,
    /// Most events the writer commits together (a larger single request forms its own group).
    pub max_group_events: usize,
    /// Append requests that may wait for the writer; further callers wait to enqueue.
    pub queue_capacity: usize,
    /// Told how far the one-time build of the log's Merkle tree is, when a log stored before
    /// the tree existed is opened (a CLI draws a progress bar with it).
    pub tree_build_progress: Option<BuildProgress>,
}

impl Default for PgOptions {
    fn default() -> Self {
        Self {
            max_connections: 10,
            acquire_timeout: Duration::from_secs(10),
            max_group_requests: 1024,
            max_group_events: 10_000,
            queue_capacity: 4096,
            tree_build_progress: None,
        }
    }
}

impl PgOptions {
    pub(crate) fn check(&self) -> Result<(), EventStoreError> {
        let zero = [
            ("max_connections", self.max_connections == 0),
            ("max_group_requests", self.max_group_requests == 0),
            ("max_group_events", self.max_group_events == 0),
            ("queue_capacity", self.queue_capacity == 0),
        ];
        match zero.iter().find(|(_, is_zero)| *is_zero) {
            Some((name, _)) => Err(EventStoreError::Backend {
                reason: format!("invalid PgOptions: `{name}` must be at least 1"),
                source: None,
            }),
            None => Ok(()),
        }
    }
}
