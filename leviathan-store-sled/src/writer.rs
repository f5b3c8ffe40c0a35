//! The single writer of the event log: group commit over sled.

use std::{collections::BTreeMap, fs::File, sync::Arc};

use leviathan_core::{
    AppendReceipt, Event, EventStoreError, Head, StreamId,
    store::{
        PreparedAppend,
        sequencer::{Prefetched, Sequenced, Sequencer},
    },
    tlog::{Frontier, Tile},
};
use sled::{
    Transactional,
    transaction::{TransactionError, TransactionResult},
};
use tokio::sync::{mpsc, oneshot, watch};

use crate::{
    error::Failure,
    layout::{self, Trees, decode_record},
    options::Durability,
    tree,
};

/// A group stops draining the queue once it holds this many events (bounds one transaction).
const MAX_GROUP_EVENTS: usize = 20_000;

/// One caller's validated batch and where to send its answer.
pub(crate) struct AppendJob {
    pub(crate) batch: PreparedAppend,
    pub(crate) reply: oneshot::Sender<Result<AppendReceipt, EventStoreError>>,
}

/// Owns the tail of the log; the only code that writes the event trees.
pub(crate) struct Writer {
    db: sled::Db,
    /// sled's data file, to fsync after sled's own flush.
    data_file: Arc<File>,
    trees: Trees,
    durability: Durability,
    /// The last event in the trees (committed, perhaps not yet flushed).
    tail: Option<Head>,
    /// The right edge of the Merkle tree at `tail`.
    frontier: Frontier,
    /// The tail must be re-read before the next group (a transaction failed).
    resync: bool,
    visible: Arc<watch::Sender<u64>>,
    location: String,
}

impl Writer {
    pub(crate) fn new(
        db: sled::Db,
        data_file: Arc<File>,
        trees: Trees,
        durability: Durability,
        (tail, frontier): (Option<Head>, Frontier),
        visible: Arc<watch::Sender<u64>>,
        location: String,
    ) -> Self {
        Self {
            db,
            data_file,
            trees,
            durability,
            tail,
            frontier,
            resync: false,
            visible,
            location,
        }
    }

    /// Serves the queue until every sender is gone, one group at a time.
    pub(crate) fn run(mut self, mut queue: mpsc::Receiver<AppendJob>) {
        while let Some(first) = queue.blocking_recv() {
            let mut events = first.batch.events.len();
            let mut group = vec![first];
            while events < MAX_GROUP_EVENTS {
                match queue.try_recv() {
                    Ok(job) => {
                        events += job.batch.events.len();
                        group.push(job);
                    }
                    Err(_) => break,
                }
            }
            let outcomes = self.commit_group(&group);
            for (job, outcome) in group.into_iter().zip(outcomes) {
                // A caller that stopped waiting still had its batch committed; nothing to do.
                let _ = job.reply.send(outcome);
            }
        }
    }

    /// Sequences, persists and makes durable one group; one outcome per job.
    fn commit_group(&mut self, group: &[AppendJob]) -> Vec<Result<AppendReceipt, EventStoreError>> {
        let fail_all = |failure: Failure| group.iter().map(|_| Err(failure.to_error())).collect();
        if self.resync {
            let restored = self.read_tail().and_then(|tail| {
                let size = tail.map_or(0, |h| h.seq);
                let frontier = tree::restore_frontier(&self.trees, size, &self.location)
                    .map_err(|e| Failure::corrupt(None, e.to_string()))?;
                Ok((tail, frontier))
            });
            match restored {
                Ok((tail, frontier)) => {
                    self.tail = tail;
                    self.frontier = frontier;
                    self.resync = false;
                }
                Err(failure) => return fail_all(failure),
            }
        }
        let known = match self.prefetch(group) {
            Ok(known) => known,
            Err(failure) => return fail_all(failure),
        };

        let mut sequencer = Sequencer::new(self.tail);
        let sequenced: Vec<Result<Sequenced, EventStoreError>> = group
            .iter()
            .map(|job| sequencer.sequence(&job.batch, &known))
            .collect();
        // Accepted requests share the group's fate from here on; refused ones keep their error.
        let fail_accepted = |sequenced: Vec<Result<Sequenced, EventStoreError>>,
                             failure: Failure| {
            sequenced
                .into_iter()
                .map(|s| s.and_then(|_| Err(failure.to_error())))
                .collect()
        };

        if sequencer.tail() != self.tail {
            let mut frontier = self.frontier.clone();
            let tiles = frontier.extend(
                sequenced
                    .iter()
                    .flatten()
                    .flat_map(|batch| &batch.events)
                    .map(|e| &e.event.hash),
            );
            if let Err(err) = self.persist(&sequenced, sequencer.tail(), &tiles) {
                self.resync = true;
                let what = format!("appending to {}", self.location);
                return fail_accepted(sequenced, Failure::Sled(err, what));
            }
            self.tail = sequencer.tail();
            self.frontier = frontier;
        }

        // Acknowledge nothing (not even duplicates) before everything up to the tail is durable.
        let tail_seq = self.tail.map_or(0, |h| h.seq);
        if tail_seq > *self.visible.borrow() {
            if self.durability == Durability::Flush
                && let Err(err) = flush_and_sync(&self.db, &self.data_file)
            {
                // The group is committed in memory and a later flush may still persist it;
                // its callers hear of the failure and may retry (appends are idempotent).
                let what = format!(
                    "flushing {} (the batch may still land; retrying is safe)",
                    self.location
                );
                return fail_accepted(sequenced, Failure::Sled(err, what));
            }
            self.visible.send_replace(tail_seq);
        }
        sequenced
            .into_iter()
            .map(|s| s.map(Sequenced::into_receipt))
            .collect()
    }

    /// Looks up what sequencing the group needs: stored events with the group's ids, and the
    /// current versions of the streams it touches.
    fn prefetch(&self, group: &[AppendJob]) -> Result<Prefetched, Failure> {
        let mut known = Prefetched::default();
        let mut looked_up = std::collections::HashSet::new();
        for job in group {
            for id in job.batch.event_ids() {
                if !looked_up.insert(id) {
                    continue;
                }
                let Some(seq) = self
                    .trees
                    .event_ids
                    .get(id.as_str())
                    .map_err(|e| Failure::sled(e, format!("looking up event `{id}`")))?
                else {
                    continue;
                };
                let seq = layout::decode_u64(&seq).ok_or_else(|| {
                    Failure::corrupt(
                        None,
                        format!("the index entry of event `{id}` is malformed"),
                    )
                })?;
                let record = self
                    .trees
                    .events
                    .get(layout::seq_key(seq))
                    .map_err(|e| Failure::sled(e, format!("reading seq {seq}")))?
                    .ok_or_else(|| {
                        Failure::corrupt(Some(seq), format!("event `{id}` is indexed but missing"))
                    })?;
                let event = decode_record(seq, &record).map_err(Failure::Corrupt)?;
                known.events.insert(id.clone(), event);
            }
            for stream in job.batch.streams() {
                if known.streams.contains_key(stream) {
                    continue;
                }
                if let Some(version) = self
                    .trees
                    .streams
                    .get(stream.as_str())
                    .map_err(|e| Failure::sled(e, format!("reading stream `{stream}`")))?
                {
                    let version = layout::decode_u64(&version).ok_or_else(|| {
                        Failure::corrupt(
                            None,
                            format!("the version of stream `{stream}` is malformed"),
                        )
                    })?;
                    known.streams.insert(stream.clone(), version);
                }
            }
        }
        Ok(known)
    }

    /// Writes every accepted event of the group, the index, the stream versions, the new tail
    /// and the tree's tiles the group filled in one transaction.
    fn persist(
        &self,
        sequenced: &[Result<Sequenced, EventStoreError>],
        tail: Option<Head>,
        tiles: &[Tile],
    ) -> Result<(), sled::Error> {
        let mut events = sled::Batch::default();
        let mut ids = sled::Batch::default();
        let mut versions: BTreeMap<&StreamId, u64> = BTreeMap::new();
        for batch in sequenced.iter().flatten() {
            for sequenced in &batch.events {
                let event: &Event = &sequenced.event;
                let key = layout::seq_key(event.seq);
                events.insert(
                    &key[..],
                    layout::event_record(&event.hash, &sequenced.canonical),
                );
                ids.insert(event.event_id.as_str(), &key[..]);
                if let Some((stream, version)) = &sequenced.stream {
                    versions.insert(stream, *version);
                }
            }
        }
        let mut streams = sled::Batch::default();
        for (stream, version) in versions {
            streams.insert(stream.as_str(), &version.to_be_bytes()[..]);
        }
        let mut tree = sled::Batch::default();
        for tile in tiles {
            tree.insert(
                &layout::tile_key(tile.level, tile.index)[..],
                tile.to_bytes(),
            );
        }
        let tail = tail.map(|h| layout::encode_head(&h));
        let t = &self.trees;
        let trees = (&t.events, &t.event_ids, &t.streams, &t.meta, &t.tree_tiles);
        let result: TransactionResult<(), ()> =
            trees.transaction(|(tx_events, tx_ids, tx_streams, tx_meta, tx_tiles)| {
                tx_events.apply_batch(&events)?;
                tx_ids.apply_batch(&ids)?;
                tx_streams.apply_batch(&streams)?;
                tx_tiles.apply_batch(&tree)?;
                if let Some(tail) = &tail {
                    tx_meta.insert(layout::TAIL_KEY, &tail[..])?;
                }
                Ok(())
            });
        match result {
            Ok(()) => Ok(()),
            Err(TransactionError::Storage(err)) => Err(err),
            Err(TransactionError::Abort(())) => Err(sled::Error::ReportableBug(
                "the append transaction aborted without a reason".into(),
            )),
        }
    }

    fn read_tail(&self) -> Result<Option<Head>, Failure> {
        let stored =
            self.trees.meta.get(layout::TAIL_KEY).map_err(|e| {
                Failure::sled(e, format!("re-reading the tail of {}", self.location))
            })?;
        stored
            .map(|bytes| {
                layout::decode_head(&bytes).ok_or_else(|| {
                    Failure::corrupt(
                        None,
                        format!("the stored tail of {} is malformed", self.location),
                    )
                })
            })
            .transpose()
    }
}

/// Writes sled's log and syncs it to stable storage. On Linux sled's `flush` ends with
/// `sync_file_range`, which neither persists the file's metadata (its growth) nor flushes the
/// device's write cache; the `fdatasync` of the data file that follows does both.
pub(crate) fn flush_and_sync(db: &sled::Db, data_file: &File) -> sled::Result<()> {
    db.flush()?;
    data_file.sync_data()?;
    Ok(())
}
