//! The single writer: group commit inside the process, the head row and an advisory lock across
//! processes.
//!
//! Every `append` of a store goes to one task. It drains its queue into a group and sequences
//! each request with core's [`Sequencer`]. When nobody else appended since its last group, it
//! needs no read: it sequences on what it knew after its last commit and writes the group in one
//! statement that first takes the writer lock, checks that the head is where it left it, that none
//! of the group's ids is stored and that the streams are at the versions assumed, then moves the
//! head row, inserts all accepted events with `INSERT ... SELECT FROM UNNEST`, upserts the streams
//! and `NOTIFY`s. That statement is its own transaction: one round trip per group. Otherwise (or
//! when such a write finds an assumption wrong and writes nothing) it reads the head row with the
//! group's stored event ids and stream versions and writes with the same statement: two round
//! trips. If the head was no longer where it was read (another process appended in between), the
//! statement writes nothing, and the group is written again in a transaction that takes the lock
//! before reading.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use leviathan_core::{
    EventId, EventStoreError, Head, StreamId,
    store::{
        AppendReceipt, PreparedAppend,
        sequencer::{Prefetched, Sequenced, SequencedEvent, Sequencer},
    },
    tlog::Frontier,
};
use sqlx::{
    Connection, PgConnection, Postgres,
    postgres::{PgArguments, PgConnectOptions},
    query::QueryScalar,
};
use tokio::sync::{mpsc, oneshot, watch};

use super::listener::advance;
use crate::{
    error::StoreFailure,
    location::Location,
    log::{BEGIN_LOCKED, NOTIFY_CHANNEL, WRITER_LOCK_KEY, decode_event, decode_head},
    tree::{TileColumns, restore_frontier},
};

/// One caller's batch and where to send its answer.
pub(crate) struct WriteRequest {
    pub(crate) batch: PreparedAppend,
    pub(crate) reply: oneshot::Sender<Result<AppendReceipt, EventStoreError>>,
}

/// How much one group commit may take from the queue (a single request larger than
/// `max_events` still forms a group of its own).
#[derive(Clone, Copy, Debug)]
pub(crate) struct GroupLimits {
    pub(crate) max_requests: usize,
    pub(crate) max_events: usize,
}

/// How many groups the writer reads before writing again after a write without a read missed.
const UNREAD_PAUSE: usize = 16;

/// Stream versions the writer keeps between groups; past that it forgets them all (a forgotten
/// stream costs one group a second round trip).
const MAX_REMEMBERED_STREAMS: usize = 100_000;

/// How many times the writer yields to let callers it just answered join the next group.
const MAX_GATHER_YIELDS: usize = 2;

/// The head row, the stored events with the group's ids and the group's stream versions, read in
/// one statement under the writer lock.
const PREFETCH: &str = "\
SELECT 'h' AS kind, NULL::text AS key, seq AS num, hash, NULL::bytea AS canonical FROM log_head
UNION ALL
SELECT 'e', event_id, seq, hash, canonical FROM events WHERE event_id = ANY($1)
UNION ALL
SELECT 's', stream, version, NULL, NULL FROM streams WHERE stream = ANY($2)";

/// Takes the writer lock ($18), moves the head row from where the group was sequenced ($16) to
/// its new tail ($14, $15), and only then inserts the group's events (one array per column,
/// $1 to $11), upserts its streams, inserts the tree's tiles the group filled ($19 to $21) and
/// notifies. Returns the number of head rows moved: 1, or 0 when the head was not where the
/// writer read it (another process appended since), and then nothing is written. The optional
/// condition guards the move further.
macro_rules! write_group {
    ($($guard:literal)?) => {
        concat!(
            "WITH locked AS (
    SELECT pg_advisory_xact_lock($18)
), moved AS (
    UPDATE log_head SET seq = $14, hash = $15 FROM locked WHERE seq = $16",
            $(" AND ", $guard,)?
            "
    RETURNING 1
), appended AS (
    INSERT INTO events (seq, event_id, event_type, actor_id, \"timestamp\", payload, prev_hash,
                        hash, canonical, stream, stream_version)
    SELECT seq, event_id, event_type, actor_id, ts, payload::jsonb, prev_hash,
           hash, canonical, stream, stream_version
    FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::text[],
                $7::bytea[], $8::bytea[], $9::bytea[], $10::text[], $11::bigint[])
        AS t(seq, event_id, event_type, actor_id, ts, payload, prev_hash,
             hash, canonical, stream, stream_version)
    WHERE EXISTS (SELECT 1 FROM moved)
), versions AS (
    INSERT INTO streams (stream, version)
    SELECT * FROM UNNEST($12::text[], $13::bigint[]) WHERE EXISTS (SELECT 1 FROM moved)
    ON CONFLICT (stream) DO UPDATE SET version = EXCLUDED.version
), tiled AS (
    INSERT INTO log_tiles (level, idx, hashes)
    SELECT * FROM UNNEST($19::smallint[], $20::bigint[], $21::bytea[])
    WHERE EXISTS (SELECT 1 FROM moved)
), notified AS (
    SELECT pg_notify($17, $14::text) FROM moved
)
SELECT count(*) FROM notified"
        )
    };
}

/// [`write_group!`] after a read of the head and the group's ids and streams.
const WRITE: &str = write_group!();

/// [`write_group!`] for a group sequenced without a read, on what this writer knew after its last
/// commit: it also requires that none of the group's ids ($22) is stored and that every stream the
/// group touches ($23) is at the version it was sequenced with ($24). When the head is where this
/// writer left it, nobody has appended since, so the statement's snapshot holds every event and
/// stream (a concurrent append would have moved the head, and the update then matches no row).
const WRITE_UNREAD: &str = write_group!(
    "NOT EXISTS (SELECT 1 FROM events WHERE event_id = ANY($22))
        AND NOT EXISTS (
            SELECT 1 FROM UNNEST($23::text[], $24::bigint[]) AS assumed(stream, version)
            LEFT JOIN streams USING (stream)
            WHERE coalesce(streams.version, 0) <> assumed.version
        )"
);

/// The columns of the events a group appends, as arrays for `UNNEST`.
#[derive(Default)]
struct EventColumns {
    seq: Vec<i64>,
    event_id: Vec<String>,
    event_type: Vec<String>,
    actor_id: Vec<Option<String>>,
    timestamp: Vec<chrono::DateTime<chrono::Utc>>,
    payload: Vec<String>,
    prev_hash: Vec<Option<Vec<u8>>>,
    hash: Vec<Vec<u8>>,
    canonical: Vec<Vec<u8>>,
    stream: Vec<Option<String>>,
    stream_version: Vec<Option<i64>>,
}

impl EventColumns {
    fn push(&mut self, sequenced: &SequencedEvent) -> Result<(), StoreFailure> {
        let event = &sequenced.event;
        let too_large = |what: &str| {
            StoreFailure::corrupt(Some(event.seq), format!("{what} does not fit a bigint"))
        };
        let payload = serde_json::to_string(&event.payload).map_err(|e| {
            StoreFailure::corrupt(Some(event.seq), format!("payload does not serialize: {e}"))
        })?;
        self.seq
            .push(i64::try_from(event.seq).map_err(|_| too_large("seq"))?);
        self.event_id.push(event.event_id.as_str().to_owned());
        self.event_type.push(event.event_type.clone());
        self.actor_id.push(event.actor_id.clone());
        self.timestamp.push(event.timestamp.as_datetime());
        self.payload.push(payload);
        self.prev_hash
            .push(event.prev_hash.map(|h| h.as_bytes().to_vec()));
        self.hash.push(event.hash.as_bytes().to_vec());
        self.canonical.push(sequenced.canonical.clone());
        match &sequenced.stream {
            Some((stream, version)) => {
                self.stream.push(Some(stream.as_str().to_owned()));
                self.stream_version.push(Some(
                    i64::try_from(*version).map_err(|_| too_large("stream version"))?,
                ));
            }
            None => {
                self.stream.push(None);
                self.stream_version.push(None);
            }
        }
        Ok(())
    }

    /// Binds the events as the first 11 parameters.
    fn bind<'q>(
        &'q self,
        query: QueryScalar<'q, Postgres, i64, PgArguments>,
    ) -> QueryScalar<'q, Postgres, i64, PgArguments> {
        query
            .bind(&self.seq)
            .bind(&self.event_id)
            .bind(&self.event_type)
            .bind(&self.actor_id)
            .bind(&self.timestamp)
            .bind(&self.payload)
            .bind(&self.prev_hash)
            .bind(&self.hash)
            .bind(&self.canonical)
            .bind(&self.stream)
            .bind(&self.stream_version)
    }
}

/// The writer task's state.
pub(crate) struct Writer {
    connect: PgConnectOptions,
    location: Location,
    /// The writer's own connection (outside the pool: it is busy for the store's lifetime),
    /// opened on first use and after a loss.
    conn: Option<PgConnection>,
    /// The tail after this writer's last commit; `None` when unknown (at start, after a failure).
    tail: Option<Option<Head>>,
    /// The right edge of the Merkle tree the writer last wrote or read (its size says where).
    frontier: Option<Frontier>,
    /// Stream versions as of this writer's last commit (those it read or wrote).
    versions: HashMap<String, u64>,
    /// Groups left before the writer tries again to write without reading first: it stops for a
    /// while after a miss (another process appending), so as not to pay for misses in a row.
    unread_pause: usize,
    head: Arc<watch::Sender<u64>>,
    limits: GroupLimits,
}

impl Writer {
    pub(crate) fn new(
        connect: PgConnectOptions,
        location: Location,
        head: Arc<watch::Sender<u64>>,
        limits: GroupLimits,
    ) -> Self {
        Self {
            connect,
            location,
            conn: None,
            tail: None,
            frontier: None,
            versions: HashMap::new(),
            unread_pause: 0,
            head,
            limits,
        }
    }

    /// Serves the queue until every sender is gone.
    pub(crate) async fn run(mut self, mut queue: mpsc::Receiver<WriteRequest>) {
        let mut previous_group = 0;
        while let Some(first) = queue.recv().await {
            let mut events = first.batch.events.len();
            let mut group = vec![first];
            let mut yields = 0;
            loop {
                while group.len() < self.limits.max_requests && events < self.limits.max_events {
                    let Ok(next) = queue.try_recv() else { break };
                    events += next.batch.events.len();
                    group.push(next);
                }
                // The callers just answered are usually about to send again: give them a moment
                // (a yield, not a timer) to join this group rather than the next one.
                let full =
                    group.len() >= self.limits.max_requests || events >= self.limits.max_events;
                if full || group.len() >= previous_group || yields == MAX_GATHER_YIELDS {
                    break;
                }
                yields += 1;
                tokio::task::yield_now().await;
            }
            previous_group = group.len();
            self.commit(group).await;
        }
        // Every handle is gone: say goodbye to the server rather than just dropping the socket.
        if let Some(conn) = self.conn.take() {
            let _ = conn.close().await;
        }
    }

    /// Writes a group and answers its callers.
    async fn commit(&mut self, group: Vec<WriteRequest>) {
        let batches: Vec<&PreparedAppend> = group.iter().map(|r| &r.batch).collect();
        match self.write(&batches).await {
            Ok(outcomes) => {
                for (request, outcome) in group.into_iter().zip(outcomes) {
                    // A caller that stopped waiting has nobody to tell; its events are stored.
                    let _ = request.reply.send(outcome.map(Sequenced::into_receipt));
                }
            }
            Err(failure) if group.len() > 1 && !failure.is_transient() => {
                // One request's data may have failed the whole statement: write each request
                // alone, so that only the faulty one gets the error and the others land.
                tracing::debug!(error = %failure.reason, "group commit failed; writing its requests one by one");
                for request in group {
                    let outcome = match self.write(&[&request.batch]).await {
                        Ok(outcomes) => outcomes.into_iter().next().unwrap_or_else(|| {
                            Err(StoreFailure::corrupt(None, "the writer lost an outcome")
                                .to_event_error())
                        }),
                        Err(failure) => Err(failure.to_event_error()),
                    };
                    let _ = request.reply.send(outcome.map(Sequenced::into_receipt));
                }
            }
            Err(failure) => {
                for request in group {
                    let _ = request.reply.send(Err(failure.to_event_error()));
                }
            }
        }
    }

    /// Writes the batches in one transaction: one outcome per batch, or a failure of the whole.
    async fn write(
        &mut self,
        batches: &[&PreparedAppend],
    ) -> Result<Vec<Result<Sequenced, EventStoreError>>, StoreFailure> {
        let result = self.try_write(batches).await;
        if let Err(failure) = &result {
            // Whether the transaction committed is unknown after a lost connection: forget the
            // tail and the versions (the next group reads them under the lock) and the connection.
            self.tail = None;
            self.versions.clear();
            if failure.is_transient() {
                self.conn = None;
            }
        }
        result
    }

    async fn try_write(
        &mut self,
        batches: &[&PreparedAppend],
    ) -> Result<Vec<Result<Sequenced, EventStoreError>>, StoreFailure> {
        let cached_tail = self.tail;
        let events: usize = batches.iter().map(|b| b.events.len()).sum();
        let context = |doing: &str| {
            format!(
                "{doing} (group of {} requests, {events} events)",
                batches.len()
            )
        };

        let reading = context("reading the head and prefetching");
        let writing = context("inserting events");
        // The common case: nobody else appended since this writer's last group, so it knows the
        // head and needs no read. One round trip, the write being its own transaction; it writes
        // nothing if anything it assumed does not hold, and the group is read and written again.
        let known_frontier = self.frontier.clone();
        let unread = match (cached_tail, &known_frontier) {
            (Some(tail), Some(frontier))
                if self.unread_pause == 0 && frontier.size() == tail.map_or(0, |h| h.seq) =>
            {
                Some(Group::unread(
                    batches,
                    tail,
                    &self.versions,
                    frontier.clone(),
                )?)
            }
            _ => None,
        };
        self.unread_pause = self.unread_pause.saturating_sub(1);
        let mut missed = false;
        let conn = self.connection().await?;
        let mut written = None;
        if let Some(group) = unread {
            // Only a write confirms what the group assumed: with nothing to write, read.
            if group.appends() {
                let moved = group.write(conn, &writing).await?;
                missed = moved != 1;
                written = (!missed).then_some(group);
            }
        }
        // Otherwise two round trips: read, then the same self-committing write.
        if written.is_none() {
            let group = Group::read(
                conn,
                batches,
                (cached_tail, known_frontier.as_ref()),
                &reading,
            )
            .await?;
            written = if group.appends() {
                let moved = group.write(conn, &writing).await?;
                (moved == 1).then_some(group)
            } else {
                Some(group)
            };
        }
        let group = match written {
            Some(group) => group,
            // The head moved since it was read: read and write again in one transaction that
            // holds the lock from the start.
            None => {
                let mut tx = conn
                    .begin_with(BEGIN_LOCKED)
                    .await
                    .map_err(|e| StoreFailure::sql(context("taking the writer lock"), e))?;
                let group = Group::read(
                    &mut tx,
                    batches,
                    (cached_tail, known_frontier.as_ref()),
                    &reading,
                )
                .await?;
                if group.appends() && group.write(&mut tx, &writing).await? != 1 {
                    return Err(StoreFailure::corrupt(
                        None,
                        "the log head moved while the writer held the lock; is another writer bypassing it?",
                    ));
                }
                tx.commit()
                    .await
                    .map_err(|e| StoreFailure::sql(context("committing appended events"), e))?;
                group
            }
        };

        if missed {
            self.unread_pause = UNREAD_PAUSE;
        }
        self.tail = Some(group.tail);
        self.remember_versions(&group);
        self.frontier = Some(group.frontier.clone());
        if let Some(tail) = group.tail {
            advance(&self.head, tail.seq);
        }
        Ok(group.outcomes)
    }

    /// Keeps the stream versions a committed group read, assumed or wrote, for the next group.
    fn remember_versions(&mut self, group: &Group) {
        if self.versions.len() > MAX_REMEMBERED_STREAMS {
            self.versions.clear();
        }
        for (stream, version) in &group.known_versions {
            self.versions.insert(stream.clone(), *version);
        }
        for (stream, version) in group.version_streams.iter().zip(&group.version_numbers) {
            self.versions
                .insert(stream.clone(), u64::try_from(*version).unwrap_or_default());
        }
    }

    /// The writer's connection, opened on first use and after a loss.
    async fn connection(&mut self) -> Result<&mut PgConnection, StoreFailure> {
        if self.conn.is_none() {
            let conn = PgConnection::connect_with(&self.connect)
                .await
                .map_err(|e| {
                    self.location
                        .connect_failure("connecting the event writer", &e)
                })?;
            self.conn = Some(conn);
        }
        self.conn
            .as_mut()
            .ok_or_else(|| StoreFailure::corrupt(None, "the writer's connection vanished"))
    }
}

/// A group sequenced against the head it was read with, ready to write.
struct Group {
    /// The head the group was sequenced after.
    head: Option<Head>,
    /// The tail once the group is written.
    tail: Option<Head>,
    outcomes: Vec<Result<Sequenced, EventStoreError>>,
    columns: EventColumns,
    /// The new version of every stream the group appends to.
    version_streams: Vec<String>,
    version_numbers: Vec<i64>,
    /// The version of every stream the group touches, as it was sequenced with (read, or
    /// assumed).
    known_versions: Vec<(String, u64)>,
    /// Set when the group was sequenced without a read: every id of the group, none of which
    /// may be stored (its write also checks `known_versions`, see [`WRITE_UNREAD`]).
    unread_ids: Option<Vec<String>>,
    /// The tree's tiles the group fills.
    tiles: TileColumns,
    /// The tree's right edge once the group is written.
    frontier: Frontier,
}

impl Group {
    /// Reads the head row, the stored events with the group's ids and the group's stream versions
    /// in one statement, and sequences each batch after that head.
    async fn read(
        conn: &mut PgConnection,
        batches: &[&PreparedAppend],
        (cached_tail, frontier): (Option<Option<Head>>, Option<&Frontier>),
        context: &str,
    ) -> Result<Self, StoreFailure> {
        let ids: Vec<&str> = batches
            .iter()
            .flat_map(|b| b.event_ids())
            .map(EventId::as_str)
            .collect();
        let streams: Vec<&str> = batches
            .iter()
            .flat_map(|b| b.streams())
            .map(StreamId::as_str)
            .collect();
        type PrefetchRow = (
            String,
            Option<String>,
            i64,
            Option<Vec<u8>>,
            Option<Vec<u8>>,
        );
        let rows: Vec<PrefetchRow> = sqlx::query_as(PREFETCH)
            .bind(&ids)
            .bind(&streams)
            .fetch_all(&mut *conn)
            .await
            .map_err(|e| StoreFailure::sql(context, e))?;
        let mut head = None;
        let mut known = Prefetched::default();
        for (kind, key, num, hash, canonical) in rows {
            match (kind.as_str(), key) {
                ("h", _) => head = Some(decode_head(num, hash.as_deref())?),
                ("e", Some(_)) => {
                    let event = decode_event(
                        num,
                        hash.as_deref().unwrap_or_default(),
                        canonical.as_deref().unwrap_or_default(),
                    )?;
                    known.events.insert(event.event_id.clone(), event);
                }
                ("s", Some(stream)) => {
                    let version = u64::try_from(num).map_err(|_| {
                        StoreFailure::corrupt(None, format!("stream `{stream}` has version {num}"))
                    })?;
                    known.streams.insert(StreamId::from_raw(stream), version);
                }
                (other, _) => {
                    return Err(StoreFailure::corrupt(
                        None,
                        format!("unexpected prefetch row kind `{other}`"),
                    ));
                }
            }
        }
        let head =
            head.ok_or_else(|| StoreFailure::corrupt(None, "the log head row is missing"))?;
        check_tail(cached_tail, head)?;
        let size = head.map_or(0, |h| h.seq);
        let frontier = match frontier {
            Some(frontier) if frontier.size() == size => frontier.clone(),
            // Another process appended (or this writer just started): read the tree's edge.
            _ => restore_frontier(&mut *conn, size).await?,
        };
        Self::sequence(batches, head, known, frontier)
    }

    /// Sequences the group after `tail` without reading anything: no id of the group is assumed
    /// stored and every stream is assumed at the version in `versions` (0 when absent). The
    /// write checks both ([`WRITE_UNREAD`]).
    fn unread(
        batches: &[&PreparedAppend],
        tail: Option<Head>,
        versions: &HashMap<String, u64>,
        frontier: Frontier,
    ) -> Result<Self, StoreFailure> {
        let mut known = Prefetched::default();
        for stream in batches.iter().flat_map(|b| b.streams()) {
            let version = versions.get(stream.as_str()).copied().unwrap_or(0);
            known.streams.entry(stream.clone()).or_insert(version);
        }
        let mut group = Self::sequence(batches, tail, known, frontier)?;
        group.unread_ids = Some(
            batches
                .iter()
                .flat_map(|b| b.event_ids())
                .map(|id| id.as_str().to_owned())
                .collect(),
        );
        Ok(group)
    }

    /// Sequences each batch after `head` with what is `known` of the log, extending the tree
    /// whose right edge at `head` is `frontier`.
    fn sequence(
        batches: &[&PreparedAppend],
        head: Option<Head>,
        known: Prefetched,
        mut frontier: Frontier,
    ) -> Result<Self, StoreFailure> {
        let mut sequencer = Sequencer::new(head);
        let outcomes: Vec<Result<Sequenced, EventStoreError>> = batches
            .iter()
            .map(|batch| sequencer.sequence(batch, &known))
            .collect();
        let mut columns = EventColumns::default();
        let mut versions: BTreeMap<String, i64> = BTreeMap::new();
        for sequenced in outcomes.iter().flatten().flat_map(|s| &s.events) {
            columns.push(sequenced)?;
            if let (Some((stream, _)), Some(Some(version))) =
                (&sequenced.stream, columns.stream_version.last())
            {
                // Versions only grow within a group, so the last one is the stream's new version.
                versions.insert(stream.as_str().to_owned(), *version);
            }
        }
        let (version_streams, version_numbers) = versions.into_iter().unzip();
        let tiles = TileColumns::new(
            &frontier.extend(
                outcomes
                    .iter()
                    .flatten()
                    .flat_map(|s| &s.events)
                    .map(|e| &e.event.hash),
            ),
        );
        let known_versions = known
            .streams
            .into_iter()
            .map(|(stream, version)| (stream.as_str().to_owned(), version))
            .collect();
        Ok(Self {
            head,
            tail: sequencer.tail(),
            outcomes,
            columns,
            version_streams,
            version_numbers,
            known_versions,
            unread_ids: None,
            tiles,
            frontier,
        })
    }

    /// Whether the group appends any event (a group of duplicates and refusals writes nothing).
    fn appends(&self) -> bool {
        !self.columns.seq.is_empty()
    }

    /// The [`WRITE`] (or [`WRITE_UNREAD`]) statement: the number of head rows it moved.
    async fn write(&self, conn: &mut PgConnection, context: &str) -> Result<i64, StoreFailure> {
        let tail = self
            .tail
            .ok_or_else(|| StoreFailure::corrupt(None, "a group appends events but has no tail"))?;
        let statement = if self.unread_ids.is_some() {
            WRITE_UNREAD
        } else {
            WRITE
        };
        let query = self
            .columns
            .bind(sqlx::query_scalar(statement))
            .bind(&self.version_streams)
            .bind(&self.version_numbers)
            .bind(i64::try_from(tail.seq).unwrap_or(i64::MAX))
            .bind(tail.hash.as_bytes().as_slice())
            .bind(i64::try_from(self.head.map_or(0, |h| h.seq)).unwrap_or(i64::MAX))
            .bind(NOTIFY_CHANNEL)
            .bind(WRITER_LOCK_KEY)
            .bind(&self.tiles.levels)
            .bind(&self.tiles.indexes)
            .bind(&self.tiles.hashes);
        let query = match &self.unread_ids {
            Some(ids) => {
                let (streams, versions): (Vec<&str>, Vec<i64>) = self
                    .known_versions
                    .iter()
                    .map(|(stream, version)| {
                        (stream.as_str(), i64::try_from(*version).unwrap_or(i64::MAX))
                    })
                    .unzip();
                query.bind(ids).bind(streams).bind(versions)
            }
            None => query,
        };
        query
            .fetch_one(conn)
            .await
            .map_err(|e| StoreFailure::sql(context, e))
    }
}

/// Compares the head read under the lock with the writer's last tail: it may have moved on
/// (another process appended), but never back, and never to another hash at the same seq.
fn check_tail(cached: Option<Option<Head>>, head: Option<Head>) -> Result<(), StoreFailure> {
    let Some(cached) = cached else {
        return Ok(());
    };
    let (cached_seq, seq) = (cached.map_or(0, |h| h.seq), head.map_or(0, |h| h.seq));
    if seq < cached_seq || (seq == cached_seq && head != cached) {
        return Err(StoreFailure::corrupt(
            Some(seq),
            format!(
                "the log head is at seq {seq} but this writer appended up to seq {cached_seq}{}",
                if seq == cached_seq {
                    " with another hash"
                } else {
                    ""
                }
            ),
        ));
    }
    if seq > cached_seq {
        tracing::debug!(
            from = cached_seq,
            to = seq,
            "another writer appended since our last group"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::TestDatabase;

    /// The highest `$n` of a statement.
    fn parameters(statement: &str) -> usize {
        statement
            .split('$')
            .skip(1)
            .filter_map(|rest| {
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                digits.parse().ok()
            })
            .max()
            .unwrap_or(0)
    }

    /// The writer plans its statements once: planned on an empty log, they must still read
    /// events and streams through their keys (a scan would slow every append as the log grows)
    /// and must not be JIT-compiled.
    #[tokio::test]
    async fn the_writers_plans_read_through_keys_whatever_the_log_size_when_planned() {
        let db = TestDatabase::create().await;
        drop(db.store().await);
        let location = Location::parse(db.url()).expect("test URL");
        let mut conn = PgConnection::connect_with(&location.writer_connect_options("plan-test"))
            .await
            .expect("connect as the writer does");
        sqlx::raw_sql("ANALYZE events; ANALYZE streams")
            .execute(&mut conn)
            .await
            .expect("analyze the empty tables");
        for (name, statement) in [
            ("prefetch", PREFETCH),
            ("write", WRITE),
            ("write_unread", WRITE_UNREAD),
        ] {
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "PREPARE {name} AS {statement}"
            )))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("prepare {name}: {e}"));
            let nulls = vec!["NULL"; parameters(statement)].join(", ");
            let plan: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "EXPLAIN EXECUTE {name}({nulls})"
            )))
            .fetch_all(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("explain {name}: {e}"));
            let plan = plan.join("\n");
            for scan in ["Seq Scan on events", "Seq Scan on streams"] {
                assert!(!plan.contains(scan), "{name} plans a scan:\n{plan}");
            }
            assert!(!plan.contains("JIT"), "{name} is JIT-compiled:\n{plan}");
        }
    }
}
