//! The event log on sled: appends through the writer, reads straight from the trees, never past
//! the last visible (durable) `seq`.

use std::{fmt, sync::Arc};

use async_trait::async_trait;
use leviathan_core::{
    AppendReceipt, AppendRequest, ChainBreak, ChainFault, ChainReport, ChainVerifier, Event,
    EventId, EventStore, EventStoreError, Head, Sha256Digest, StreamId,
    store::{EventStream, follow},
    tlog::{StoredCheckpoint, TileRead, TreeError, TreeStore},
};
use tokio::sync::oneshot;

use crate::{
    error,
    layout::{self, Trees, decode_record},
    shared::Shared,
    tree,
    writer::AppendJob,
};

/// The [`EventStore`] of a [`SledStore`](crate::SledStore).
#[derive(Clone)]
pub(crate) struct SledEventStore {
    shared: Arc<Shared>,
}

impl fmt::Debug for SledEventStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SledEventStore")
            .field("location", &self.shared.location)
            .finish_non_exhaustive()
    }
}

impl SledEventStore {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    fn location(&self) -> String {
        self.shared.location.display().to_string()
    }

    /// Runs a blocking read or write of the trees on tokio's blocking pool.
    async fn blocking<T: Send + 'static>(
        &self,
        what: &'static str,
        f: impl FnOnce(&Trees) -> Result<T, EventStoreError> + Send + 'static,
    ) -> Result<T, EventStoreError> {
        let trees = self.shared.trees.clone();
        tokio::task::spawn_blocking(move || f(&trees))
            .await
            .map_err(|err| EventStoreError::Backend {
                reason: error::task_failed(what, err),
                source: None,
            })?
    }
}

/// Reads the event at `seq` from `trees`; `None` when absent.
fn read_one(trees: &Trees, seq: u64, location: &str) -> Result<Option<Event>, EventStoreError> {
    let record = trees
        .events
        .get(layout::seq_key(seq))
        .map_err(|e| error::event_store(e, &format!("reading seq {seq} of {location}")))?;
    record
        .map(|r| decode_record(seq, &r).map_err(EventStoreError::from))
        .transpose()
}

/// The `seq` of `id` if it is indexed at or below `visible`.
fn lookup_seq(
    trees: &Trees,
    id: &EventId,
    visible: u64,
    location: &str,
) -> Result<Option<u64>, EventStoreError> {
    let Some(bytes) = trees
        .event_ids
        .get(id.as_str())
        .map_err(|e| error::event_store(e, &format!("looking up event `{id}` in {location}")))?
    else {
        return Ok(None);
    };
    let seq = layout::decode_u64(&bytes).ok_or_else(|| EventStoreError::Corrupt {
        seq: None,
        reason: format!("{location}: the index entry of event `{id}` is malformed"),
    })?;
    Ok((seq <= visible).then_some(seq))
}

/// Reads an indexed event, which must exist.
fn read_indexed(
    trees: &Trees,
    id: &EventId,
    seq: u64,
    location: &str,
) -> Result<Event, EventStoreError> {
    read_one(trees, seq, location)?.ok_or_else(|| EventStoreError::Corrupt {
        seq: Some(seq),
        reason: format!("{location}: event `{id}` is indexed at seq {seq}, which is missing"),
    })
}

#[async_trait]
impl EventStore for SledEventStore {
    async fn append(&self, request: AppendRequest) -> Result<AppendReceipt, EventStoreError> {
        let batch = request.prepare()?;
        let (reply, answer) = oneshot::channel();
        self.shared
            .jobs()?
            .send(AppendJob { batch, reply })
            .await
            .map_err(|_| error::writer_stopped(&self.shared.location))?;
        answer
            .await
            .map_err(|_| error::writer_stopped(&self.shared.location))?
    }

    async fn read(&self, after: u64, limit: usize) -> Result<Vec<Event>, EventStoreError> {
        let visible = self.shared.visible_seq();
        if after >= visible || limit == 0 {
            return Ok(Vec::new());
        }
        let last = visible.min(after.saturating_add(limit as u64));
        let location = self.location();
        self.blocking("reading events", move |trees| {
            let mut events = Vec::with_capacity((last - after) as usize);
            let range = layout::seq_key(after + 1)..=layout::seq_key(last);
            for (expected, entry) in (after + 1..).zip(trees.events.range(range)) {
                let (key, record) = entry.map_err(|e| {
                    error::event_store(e, &format!("reading seq {expected} of {location}"))
                })?;
                let seq = layout::decode_u64(&key).filter(|s| *s == expected);
                let Some(seq) = seq else {
                    return Err(EventStoreError::Corrupt {
                        seq: Some(expected),
                        reason: format!("{location}: seq {expected} is missing"),
                    });
                };
                events.push(decode_record(seq, &record)?);
            }
            if events.len() as u64 != last - after {
                let missing = after + events.len() as u64 + 1;
                return Err(EventStoreError::Corrupt {
                    seq: Some(missing),
                    reason: format!("{location}: seq {missing} is missing"),
                });
            }
            Ok(events)
        })
        .await
    }

    async fn get(&self, event_id: &EventId) -> Result<Option<Event>, EventStoreError> {
        let trees = &self.shared.trees;
        let location = self.location();
        match lookup_seq(trees, event_id, self.shared.visible_seq(), &location)? {
            Some(seq) => read_indexed(trees, event_id, seq, &location).map(Some),
            None => Ok(None),
        }
    }

    async fn find(&self, ids: &[EventId]) -> Result<Vec<Event>, EventStoreError> {
        let visible = self.shared.visible_seq();
        let location = self.location();
        let mut ids = ids.to_vec();
        ids.sort_unstable();
        ids.dedup();
        self.blocking("finding events", move |trees| {
            let mut indexed = Vec::with_capacity(ids.len());
            for id in ids {
                if let Some(seq) = lookup_seq(trees, &id, visible, &location)? {
                    indexed.push((seq, id));
                }
            }
            // In `seq` order, so the event reads walk the tree forwards.
            indexed.sort_unstable_by_key(|(seq, _)| *seq);
            indexed
                .into_iter()
                .map(|(seq, id)| read_indexed(trees, &id, seq, &location))
                .collect()
        })
        .await
    }

    async fn head(&self) -> Result<Option<Head>, EventStoreError> {
        let seq = self.shared.visible_seq();
        if seq == 0 {
            return Ok(None);
        }
        let location = self.location();
        let record = self
            .shared
            .trees
            .events
            .get(layout::seq_key(seq))
            .map_err(|e| error::event_store(e, &format!("reading the head of {location}")))?
            .ok_or_else(|| EventStoreError::Corrupt {
                seq: Some(seq),
                reason: format!("{location}: the head event is missing"),
            })?;
        let (hash, _) = layout::split_record(&record).ok_or_else(|| EventStoreError::Corrupt {
            seq: Some(seq),
            reason: format!("{location}: the head record is truncated"),
        })?;
        Ok(Some(Head { seq, hash }))
    }

    /// The stream's version; while a group is being flushed it may already count that group.
    async fn stream_version(&self, stream: &StreamId) -> Result<u64, EventStoreError> {
        let location = self.location();
        let stored = self
            .shared
            .trees
            .streams
            .get(stream.as_str())
            .map_err(|e| {
                error::event_store(e, &format!("reading stream `{stream}` of {location}"))
            })?;
        stored
            .map(|bytes| {
                layout::decode_u64(&bytes).ok_or_else(|| EventStoreError::Corrupt {
                    seq: None,
                    reason: format!("{location}: the version of stream `{stream}` is malformed"),
                })
            })
            .transpose()
            .map(Option::unwrap_or_default)
    }

    async fn subscribe(&self, after: u64) -> Result<EventStream, EventStoreError> {
        let head = self.shared.visible.subscribe();
        Ok(follow(Arc::new(self.clone()), after, head))
    }

    /// Hashes every stored record as it is, without decoding payloads.
    async fn verify(&self) -> Result<Result<ChainReport, ChainBreak>, EventStoreError> {
        let visible = self.shared.visible_seq();
        let location = self.location();
        self.blocking("verifying the chain", move |trees| {
            let mut verifier = ChainVerifier::new();
            for entry in trees.events.range(..=layout::seq_key(visible)) {
                let seq = verifier.next_seq();
                let (_, record) = entry.map_err(|e| {
                    error::event_store(e, &format!("reading seq {seq} of {location}"))
                })?;
                let Some((hash, canonical)) = layout::split_record(&record) else {
                    return Ok(Err(ChainBreak {
                        seq,
                        fault: ChainFault::Malformed {
                            reason: "the stored record is truncated".into(),
                        },
                    }));
                };
                if let Err(broken) = verifier.push_record(hash, canonical) {
                    return Ok(Err(broken));
                }
            }
            if verifier.next_seq() <= visible {
                let seq = verifier.next_seq();
                return Ok(Err(ChainBreak {
                    seq,
                    fault: ChainFault::Malformed {
                        reason: format!("seq {seq} is missing; the log's head is seq {visible}"),
                    },
                }));
            }
            Ok(Ok(verifier.finish()))
        })
        .await
    }
}

/// The log's Merkle tree: tiles written by the writer, read here (see [`crate::tree`]).
#[async_trait]
impl TreeStore for SledEventStore {
    async fn tree_size(&self) -> Result<u64, TreeError> {
        Ok(self.shared.visible_seq())
    }

    async fn read_tiles(&self, reads: &[TileRead]) -> Result<Vec<Vec<Sha256Digest>>, TreeError> {
        let reads = reads.to_vec();
        let location = self.shared.location_text();
        Ok(self
            .blocking("reading the tree", move |trees| {
                tree::read_tiles(trees, &reads, &location)
            })
            .await?)
    }

    /// On the blocking pool, as every sled call here: an insert takes sled's process-wide
    /// concurrency lock, which waits behind the writer's transaction and its flush.
    async fn record_checkpoint(&self, checkpoint: &StoredCheckpoint) -> Result<(), TreeError> {
        let location = self.shared.location_text();
        let key = layout::seq_key(checkpoint.size);
        let note = checkpoint.note.clone();
        self.blocking("recording a checkpoint", move |trees| {
            trees
                .tree_checkpoints
                .insert(key, note.as_bytes())
                .map_err(|e| {
                    error::event_store(e, &format!("recording a checkpoint in {location}"))
                })
        })
        .await?;
        Ok(())
    }

    async fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, TreeError> {
        let location = self.shared.location_text();
        let latest = self
            .blocking("reading the latest checkpoint", {
                let location = location.clone();
                move |trees| {
                    trees.tree_checkpoints.last().map_err(|e| {
                        error::event_store(e, &format!("reading checkpoints of {location}"))
                    })
                }
            })
            .await?;
        let Some((key, note)) = latest else {
            return Ok(None);
        };
        let malformed = || EventStoreError::Corrupt {
            seq: None,
            reason: format!("{location}: a recorded checkpoint is malformed"),
        };
        Ok(Some(StoredCheckpoint {
            size: layout::decode_u64(&key).ok_or_else(malformed)?,
            note: String::from_utf8(note.to_vec()).map_err(|_| malformed())?,
        }))
    }
}
