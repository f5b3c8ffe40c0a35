//! The log's Merkle tree on PostgreSQL: full tiles in `log_tiles` (inserted by the writer in
//! the group's statement), the right edge's leaves from `events`, checkpoints in
//! `log_checkpoints`; and the one-time build of the tree of a log stored before it existed.

use std::{collections::HashMap, fmt, sync::Arc};

use leviathan_core::{
    EventStoreError, Sha256Digest,
    tlog::{Frontier, Tile, TileRead},
};
use sqlx::{Acquire, PgPool};

use crate::{
    error::{StoreFailure, event_error},
    location::Location,
    log::decode_hash,
};

/// Events per read while building the tree of an existing log.
const BUILD_CHUNK: i64 = 50_000;

/// The tiles and event hashes of any number of reads, in one statement.
const READ: &str = "\
SELECT level::bigint AS a, idx AS b, hashes AS h FROM log_tiles
    WHERE (level, idx) IN (SELECT * FROM UNNEST($1::smallint[], $2::bigint[]))
UNION ALL
SELECT -1, seq, hash FROM events WHERE seq = ANY($3::bigint[])";

/// Told how far a tree build is: (events done, events in all).
#[derive(Clone)]
pub struct BuildProgress(pub Arc<dyn Fn(u64, u64) + Send + Sync>);

impl fmt::Debug for BuildProgress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BuildProgress(..)")
    }
}

/// Answers tile reads (see [`TreeStore::read_tiles`]) in one round trip.
pub(crate) async fn read_tiles<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    reads: &[TileRead],
) -> Result<Vec<Vec<Sha256Digest>>, StoreFailure> {
    let (mut levels, mut tiles, mut seqs) =
        (Vec::<i16>::new(), Vec::<i64>::new(), Vec::<i64>::new());
    for read in reads {
        match read {
            TileRead::Tiles { level, indexes } => {
                for index in indexes.clone() {
                    levels.push(i16::from(*level));
                    tiles.push(to_i64(index)?);
                }
            }
            TileRead::EventHashes { indexes } => {
                for index in indexes.clone() {
                    seqs.push(to_i64(index + 1)?);
                }
            }
        }
    }
    let rows: Vec<(i64, i64, Vec<u8>)> = sqlx::query_as(READ)
        .bind(&levels)
        .bind(&tiles)
        .bind(&seqs)
        .fetch_all(executor)
        .await
        .map_err(|e| StoreFailure::sql("reading the log's tree", e))?;
    let found: HashMap<(i64, i64), Vec<u8>> =
        rows.into_iter().map(|(a, b, h)| ((a, b), h)).collect();
    reads.iter().map(|read| answer(read, &found)).collect()
}

fn answer(
    read: &TileRead,
    found: &HashMap<(i64, i64), Vec<u8>>,
) -> Result<Vec<Sha256Digest>, StoreFailure> {
    let mut hashes = Vec::new();
    match read {
        TileRead::Tiles { level, indexes } => {
            for index in indexes.clone() {
                let tile = found
                    .get(&(i64::from(*level), to_i64(index)?))
                    .and_then(|bytes| Tile::from_bytes(*level, index, bytes))
                    .ok_or_else(|| {
                        StoreFailure::corrupt(
                            None,
                            format!("tile {index} of level {level} is missing or malformed"),
                        )
                    })?;
                hashes.extend_from_slice(&tile.hashes);
            }
        }
        TileRead::EventHashes { indexes } => {
            for index in indexes.clone() {
                let seq = index + 1;
                let hash = found
                    .get(&(-1, to_i64(seq)?))
                    .and_then(|bytes| decode_hash(bytes))
                    .ok_or_else(|| {
                        StoreFailure::corrupt(Some(seq), format!("seq {seq} is missing"))
                    })?;
                hashes.push(hash);
            }
        }
    }
    Ok(hashes)
}

pub(crate) fn to_i64(n: u64) -> Result<i64, StoreFailure> {
    i64::try_from(n).map_err(|_| StoreFailure::corrupt(None, format!("{n} does not fit a bigint")))
}

/// The right edge of the tree of `size` leaves, read in one round trip.
pub(crate) async fn restore_frontier<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    size: u64,
) -> Result<Frontier, StoreFailure> {
    let answers = read_tiles(executor, &Frontier::reads(size)).await?;
    Frontier::restore(size, &answers).map_err(|e| StoreFailure::corrupt(None, e.to_string()))
}

/// The tiles to insert, as the writer's statement binds them.
#[derive(Debug, Default)]
pub(crate) struct TileColumns {
    pub(crate) levels: Vec<i16>,
    pub(crate) indexes: Vec<i64>,
    pub(crate) hashes: Vec<Vec<u8>>,
}

impl TileColumns {
    pub(crate) fn new(tiles: &[Tile]) -> Self {
        Self {
            levels: tiles.iter().map(|t| i16::from(t.level)).collect(),
            indexes: tiles
                .iter()
                .map(|t| i64::try_from(t.index).unwrap_or(i64::MAX))
                .collect(),
            hashes: tiles.iter().map(Tile::to_bytes).collect(),
        }
    }
}

/// Builds the tree of a log that held events before the tree existed (`log_tree.built` is
/// false): under the writer lock, from the stored hashes, checked by reading the right edge back
/// from the tiles, then marked built, all in one transaction. Appends wait meanwhile.
pub(crate) async fn build_if_needed(
    pool: &PgPool,
    location: &Location,
    writer_lock: i64,
    progress: Option<&BuildProgress>,
) -> Result<(), EventStoreError> {
    let built: bool = sqlx::query_scalar("SELECT built FROM log_tree")
        .fetch_one(pool)
        .await
        .map_err(|e| event_error(format!("{location}: reading whether the tree is built"), e))?;
    if built {
        return Ok(());
    }
    let failed = |doing: &str, e: sqlx::Error| event_error(format!("{location}: {doing}"), e);
    let mut conn = pool.acquire().await.map_err(|e| failed("connecting", e))?;
    let mut tx = conn
        .begin()
        .await
        .map_err(|e| failed("beginning the tree build", e))?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(writer_lock)
        .execute(&mut *tx)
        .await
        .map_err(|e| failed("taking the writer lock", e))?;
    let (size, built): (i64, bool) =
        sqlx::query_as("SELECT (SELECT seq FROM log_head), (SELECT built FROM log_tree)")
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| failed("reading the head", e))?;
    if built {
        return Ok(());
    }
    let total = u64::try_from(size).unwrap_or_default();
    let mut frontier = Frontier::new();
    let mut done = 0i64;
    while done < size {
        let end = (done + BUILD_CHUNK).min(size);
        let hashes: Vec<Vec<u8>> =
            sqlx::query_scalar("SELECT hash FROM events WHERE seq > $1 AND seq <= $2 ORDER BY seq")
                .bind(done)
                .bind(end)
                .fetch_all(&mut *tx)
                .await
                .map_err(|e| failed("reading stored hashes", e))?;
        let hashes = hashes
            .iter()
            .map(|h| decode_hash(h))
            .collect::<Option<Vec<_>>>()
            .filter(|h| h.len() as i64 == end - done)
            .ok_or_else(|| EventStoreError::Corrupt {
                seq: None,
                reason: format!("{location}: events {}..={end} are not all there", done + 1),
            })?;
        let tiles = TileColumns::new(&frontier.extend(&hashes));
        sqlx::query(
            "INSERT INTO log_tiles (level, idx, hashes) SELECT * FROM UNNEST($1::smallint[], $2::bigint[], $3::bytea[])",
        )
        .bind(&tiles.levels)
        .bind(&tiles.indexes)
        .bind(&tiles.hashes)
        .execute(&mut *tx)
        .await
        .map_err(|e| failed("writing tiles", e))?;
        done = end;
        if let Some(progress) = progress {
            (progress.0)(u64::try_from(done).unwrap_or_default(), total);
        }
    }
    let stored = restore_frontier(&mut *tx, total)
        .await
        .map_err(|f| f.to_event_error())?;
    if stored.root() != frontier.root() {
        return Err(EventStoreError::Corrupt {
            seq: None,
            reason: format!("{location}: the tree built from the stored hashes does not read back"),
        });
    }
    sqlx::query("UPDATE log_tree SET built = true")
        .execute(&mut *tx)
        .await
        .map_err(|e| failed("marking the tree built", e))?;
    tx.commit()
        .await
        .map_err(|e| failed("committing the tree", e))?;
    tracing::info!(database = %location, events = total, "built the log's Merkle tree");
    Ok(())
}
