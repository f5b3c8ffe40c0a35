//! The event log: reads and verification straight from the pool, appends through the
//! group-commit [`writer`], live subscriptions woken by the NOTIFY [`listener`].

mod listener;
mod writer;

use std::{fmt, sync::Arc};

use async_trait::async_trait;
use futures::TryStreamExt;
use leviathan_core::{
    ChainBreak, ChainFault, ChainReport, ChainVerifier, Event, EventId, EventStore,
    EventStoreError, Head, Sha256Digest, StreamId,
    store::{AppendReceipt, AppendRequest, EventStream, follow},
    tlog::{StoredCheckpoint, TileRead, TreeError, TreeStore},
};
use sqlx::{PgPool, postgres::PgConnectOptions};
use tokio::{
    sync::{mpsc, oneshot, watch},
    task::AbortHandle,
};

use crate::{
    error::event_error,
    location::Location,
    log::{application, decode_event, decode_hash, read_head},
    options::PgOptions,
    tree,
};

pub(crate) use writer::GroupLimits;
use writer::{WriteRequest, Writer};

/// Rows per page when verifying.
const VERIFY_PAGE: i64 = 2048;

/// The event log on PostgreSQL. Cloning shares the writer and the listener.
#[derive(Clone)]
pub(crate) struct PgEventStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    location: Location,
    writer: mpsc::Sender<WriteRequest>,
    head: Arc<watch::Sender<u64>>,
    listener: AbortHandle,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The writer ends by itself when its queue closes; the listener would wait forever.
        self.listener.abort();
    }
}

impl PgEventStore {
    /// Starts the writer and the listener for a migrated database whose head is at `head_seq`.
    pub(crate) fn start(
        pool: PgPool,
        location: Location,
        options: &PgOptions,
        head_seq: u64,
    ) -> Self {
        let head = Arc::new(watch::channel(head_seq).0);
        let (queue, requests) = mpsc::channel(options.queue_capacity);
        let writer = Writer::new(
            location.writer_connect_options(application::WRITER),
            location.clone(),
            head.clone(),
            GroupLimits {
                max_requests: options.max_group_requests,
                max_events: options.max_group_events,
            },
        );
        tokio::spawn(writer.run(requests));
        let listener = tokio::spawn(listener::run(
            listener_pool(location.connect_options(application::LISTENER)),
            pool.clone(),
            location.clone(),
            head.clone(),
        ))
        .abort_handle();
        Self {
            inner: Arc::new(Inner {
                pool,
                location,
                writer: queue,
                head,
                listener,
            }),
        }
    }

    fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// The last head seq this process knows committed (its writer's, or notified).
    fn visible_seq(&self) -> u64 {
        *self.inner.head.borrow()
    }
}

/// One connection for LISTEN, created lazily and re-created by the pool after a loss.
fn listener_pool(options: PgConnectOptions) -> PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .min_connections(0)
        .idle_timeout(None)
        .max_lifetime(None)
        .connect_lazy_with(options)
}

impl fmt::Debug for PgEventStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgEventStore")
            .field("location", &self.inner.location)
            .finish_non_exhaustive()
    }
}

/// A `seq` or count from the API as a bigint, saturating (no log holds 2^63 events).
fn saturating_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

type EventRow = (i64, Vec<u8>, Vec<u8>);

fn decode_rows(rows: Vec<EventRow>) -> Result<Vec<Event>, EventStoreError> {
    rows.iter()
        .map(|(seq, hash, canonical)| {
            decode_event(*seq, hash, canonical).map_err(|f| f.to_event_error())
        })
        .collect()
}

#[async_trait]
impl EventStore for PgEventStore {
    async fn append(&self, request: AppendRequest) -> Result<AppendReceipt, EventStoreError> {
        let batch = request.prepare()?;
        let (reply, answer) = oneshot::channel();
        let stopped = || EventStoreError::Backend {
            reason: format!("the event writer for {} has stopped", self.inner.location),
            source: None,
        };
        self.inner
            .writer
            .send(WriteRequest { batch, reply })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    async fn read(&self, after: u64, limit: usize) -> Result<Vec<Event>, EventStoreError> {
        let rows: Vec<EventRow> = sqlx::query_as(
            "SELECT seq, hash, canonical FROM events WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(saturating_i64(after))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(self.pool())
        .await
        .map_err(|e| event_error(format_args!("reading events after seq {after}"), e))?;
        decode_rows(rows)
    }

    async fn get(&self, event_id: &EventId) -> Result<Option<Event>, EventStoreError> {
        let row: Option<EventRow> =
            sqlx::query_as("SELECT seq, hash, canonical FROM events WHERE event_id = $1")
                .bind(event_id.as_str())
                .fetch_optional(self.pool())
                .await
                .map_err(|e| event_error(format_args!("reading event `{event_id}`"), e))?;
        Ok(decode_rows(row.into_iter().collect())?.pop())
    }

    async fn find(&self, ids: &[EventId]) -> Result<Vec<Event>, EventStoreError> {
        let ids: Vec<&str> = ids.iter().map(EventId::as_str).collect();
        let rows: Vec<EventRow> =
            sqlx::query_as("SELECT seq, hash, canonical FROM events WHERE event_id = ANY($1)")
                .bind(&ids)
                .fetch_all(self.pool())
                .await
                .map_err(|e| event_error(format_args!("finding {} events by id", ids.len()), e))?;
        decode_rows(rows)
    }

    async fn head(&self) -> Result<Option<Head>, EventStoreError> {
        read_head(self.pool()).await
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<u64, EventStoreError> {
        let version: Option<i64> =
            sqlx::query_scalar("SELECT version FROM streams WHERE stream = $1")
                .bind(stream.as_str())
                .fetch_optional(self.pool())
                .await
                .map_err(|e| event_error(format_args!("reading stream `{stream}`"), e))?;
        version.map_or(Ok(0), |v| {
            u64::try_from(v).map_err(|_| EventStoreError::Corrupt {
                seq: None,
                reason: format!("stream `{stream}` has version {v}"),
            })
        })
    }

    async fn subscribe(&self, after: u64) -> Result<EventStream, EventStoreError> {
        Ok(follow(
            Arc::new(self.clone()),
            after,
            self.inner.head.subscribe(),
        ))
    }

    /// Streams `(hash, canonical)` rows, paged by `seq`, through [`ChainVerifier::push_record`],
    /// then checks that the log reaches the head recorded when verification started (a log
    /// that ends early has lost events).
    async fn verify(&self) -> Result<Result<ChainReport, ChainBreak>, EventStoreError> {
        let recorded = self.head().await?;
        let mut verifier = ChainVerifier::new();
        let mut after = 0i64;
        loop {
            let mut rows = sqlx::query_as::<_, EventRow>(
                "SELECT seq, hash, canonical FROM events WHERE seq > $1 ORDER BY seq LIMIT $2",
            )
            .bind(after)
            .bind(VERIFY_PAGE)
            .fetch(self.pool());
            let mut seen = 0;
            while let Some((seq, hash, canonical)) = rows
                .try_next()
                .await
                .map_err(|e| event_error(format_args!("verifying events after seq {after}"), e))?
            {
                seen += 1;
                after = seq;
                let Some(hash) = decode_hash(&hash) else {
                    return Ok(Err(ChainBreak {
                        seq: verifier.next_seq(),
                        fault: ChainFault::Malformed {
                            reason: format!("stored hash is {} bytes, not 32", hash.len()),
                        },
                    }));
                };
                if let Err(broken) = verifier.push_record(hash, &canonical) {
                    return Ok(Err(broken));
                }
            }
            if seen < VERIFY_PAGE {
                break;
            }
        }
        let verified = verifier.head().map_or(0, |h| h.seq);
        if let Some(recorded) = recorded
            && verified < recorded.seq
        {
            return Ok(Err(ChainBreak {
                seq: verified + 1,
                fault: ChainFault::Malformed {
                    reason: format!(
                        "the log head is at seq {} but the stored events end at seq {verified}",
                        recorded.seq
                    ),
                },
            }));
        }
        Ok(Ok(verifier.finish()))
    }
}

/// The log's Merkle tree: tiles written by the writer, read here (see [`crate::tree`]).
#[async_trait]
impl TreeStore for PgEventStore {
    async fn tree_size(&self) -> Result<u64, TreeError> {
        Ok(self.visible_seq())
    }

    async fn read_tiles(&self, reads: &[TileRead]) -> Result<Vec<Vec<Sha256Digest>>, TreeError> {
        tree::read_tiles(self.pool(), reads)
            .await
            .map_err(|f| f.to_event_error().into())
    }

    async fn record_checkpoint(&self, checkpoint: &StoredCheckpoint) -> Result<(), TreeError> {
        sqlx::query(
            "INSERT INTO log_checkpoints (size, note) VALUES ($1, $2)
             ON CONFLICT (size) DO UPDATE SET note = EXCLUDED.note, recorded_at = now()",
        )
        .bind(tree::to_i64(checkpoint.size).map_err(|f| f.to_event_error())?)
        .bind(&checkpoint.note)
        .execute(self.pool())
        .await
        .map_err(|e| event_error("recording a checkpoint", e))?;
        Ok(())
    }

    async fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, TreeError> {
        let row: Option<(i64, String)> =
            sqlx::query_as("SELECT size, note FROM log_checkpoints ORDER BY size DESC LIMIT 1")
                .fetch_optional(self.pool())
                .await
                .map_err(|e| event_error("reading the latest checkpoint", e))?;
        Ok(row.map(|(size, note)| StoredCheckpoint {
            size: u64::try_from(size).unwrap_or_default(),
            note,
        }))
    }
}
