//! The persisted projection: nodes, edges, stream versions and anomalies as JSON rows, and the
//! checkpoint row that serialises writers.

use std::{collections::BTreeMap, fmt};

use async_trait::async_trait;
use leviathan_core::{
    GraphStore, GraphStoreError, Head, StreamId,
    graph::{
        Anomaly, AttemptNode, AttemptPage, AttemptQuery, Edge, EdgeKind, FailureQuery, GraphDelta,
        GraphSnapshot, Node, NodeId, take_page,
    },
    id::{AttemptId, TargetId, TaskId},
    store::delta_fits,
};
use serde::{Serialize, de::DeserializeOwned};
use sqlx::{Connection, PgPool};

use crate::{error::graph_error, location::Location, log::decode_head};

/// Upserts a delta's rows (attempts also into their index table) and moves the checkpoint, in
/// one statement.
const SAVE: &str = "\
WITH nodes AS (
    INSERT INTO graph_nodes (node_id, kind, body)
    SELECT n.node_id, n.kind, n.body::jsonb
    FROM UNNEST($1::text[], $2::text[], $3::text[]) AS n(node_id, kind, body)
    ON CONFLICT (node_id) DO UPDATE SET kind = EXCLUDED.kind, body = EXCLUDED.body
), edges AS (
    INSERT INTO graph_edges (edge_id, edge_type, from_node, to_node, body)
    SELECT e.edge_id, e.edge_type, e.from_node, e.to_node, e.body::jsonb
    FROM UNNEST($4::text[], $5::text[], $6::text[], $7::text[], $8::text[])
        AS e(edge_id, edge_type, from_node, to_node, body)
    ON CONFLICT (edge_id) DO NOTHING
), streams AS (
    INSERT INTO graph_streams (stream, version)
    SELECT * FROM UNNEST($9::text[], $10::bigint[])
    ON CONFLICT (stream) DO UPDATE SET version = EXCLUDED.version
), anomalies AS (
    INSERT INTO graph_anomalies (seq, body)
    SELECT a.seq, a.body::jsonb FROM UNNEST($11::bigint[], $12::text[]) AS a(seq, body)
    ON CONFLICT (seq) DO UPDATE SET body = EXCLUDED.body
), attempts AS (
    INSERT INTO graph_attempts (node_id, target_id, task_node, status, created_seq, ended_seq)
    SELECT * FROM UNNEST($15::text[], $16::text[], $17::text[], $18::text[], $19::bigint[],
        $20::bigint[])
    ON CONFLICT (node_id) DO UPDATE SET status = EXCLUDED.status, ended_seq = EXCLUDED.ended_seq
)
UPDATE graph_checkpoint SET seq = $13, hash = $14";

/// The projection store on PostgreSQL.
#[derive(Clone)]
pub(crate) struct PgGraphStore {
    pool: PgPool,
    location: Location,
}

impl PgGraphStore {
    pub(crate) fn new(pool: PgPool, location: Location) -> Self {
        Self { pool, location }
    }
}

impl fmt::Debug for PgGraphStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgGraphStore")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

/// `what` is only rendered for an error: a save serializes thousands of values.
fn to_json<T: Serialize>(what: impl fmt::Display, value: &T) -> Result<String, GraphStoreError> {
    serde_json::to_string(value).map_err(|e| GraphStoreError::Backend {
        reason: format!("{what} does not serialize: {e}"),
        source: Some(Box::new(e)),
    })
}

fn from_json<T: DeserializeOwned>(
    what: impl fmt::Display,
    body: &str,
) -> Result<T, GraphStoreError> {
    serde_json::from_str(body).map_err(|e| GraphStoreError::Corrupt {
        reason: format!("stored {what} does not decode: {e}"),
    })
}

fn bigint(what: impl fmt::Display, n: u64) -> Result<i64, GraphStoreError> {
    i64::try_from(n).map_err(|_| GraphStoreError::Backend {
        reason: format!("{what} ({n}) does not fit a bigint"),
        source: None,
    })
}

fn unsigned(what: impl fmt::Display, n: i64) -> Result<u64, GraphStoreError> {
    u64::try_from(n).map_err(|_| GraphStoreError::Corrupt {
        reason: format!("stored {what} is {n}"),
    })
}

fn checkpoint_from_row(seq: i64, hash: Option<&[u8]>) -> Result<Option<Head>, GraphStoreError> {
    decode_head(seq, hash).map_err(|_| GraphStoreError::Corrupt {
        reason: format!("the graph checkpoint at seq {seq} is malformed"),
    })
}

/// The `graph_attempts` rows of a delta's attempt nodes, as the columns `SAVE` unnests.
#[derive(Default)]
struct AttemptRows<'a> {
    node_ids: Vec<&'a str>,
    targets: Vec<&'a str>,
    tasks: Vec<String>,
    statuses: Vec<&'static str>,
    created: Vec<i64>,
    ended: Vec<Option<i64>>,
}

impl<'a> AttemptRows<'a> {
    fn of(nodes: &'a BTreeMap<String, &'a Node>) -> Result<Self, GraphStoreError> {
        let mut rows = Self::default();
        for (id, node) in nodes {
            let Node::Attempt(a) = node else { continue };
            rows.node_ids.push(id);
            rows.targets.push(a.target_id.as_str());
            rows.tasks
                .push(NodeId::task(&a.target_id, &a.task_id).as_str().to_owned());
            rows.statuses.push(a.status.as_str());
            rows.created.push(bigint(
                format_args!("created seq of `{id}`"),
                a.meta.created_seq,
            )?);
            rows.ended.push(
                a.ended_seq
                    .map(|seq| bigint(format_args!("ended seq of `{id}`"), seq))
                    .transpose()?,
            );
        }
        Ok(rows)
    }
}

/// Decodes the rows of a page query (an attempt's body and its cursor key) and takes the page.
fn attempt_page(rows: Vec<(String, i64)>, limit: usize) -> Result<AttemptPage, GraphStoreError> {
    let candidates = rows.into_iter().map(|(body, key)| {
        let attempt: AttemptNode = from_json("attempt", &body)?;
        Ok((unsigned("attempt cursor", key)?, attempt))
    });
    let (attempts, next_cursor) = take_page(candidates, limit, |_| true)?;
    Ok(AttemptPage {
        attempts,
        next_cursor,
    })
}

/// Rows to ask for: one more than the page, to know whether another page follows.
fn rows_for(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX).saturating_add(1)
}

/// Rows before `cursor` (exclusive; none: from the newest).
fn before(cursor: Option<u64>) -> i64 {
    cursor.map_or(i64::MAX, |c| i64::try_from(c).unwrap_or(i64::MAX))
}

/// A page query over `graph_attempts` ordered by `$key` (newest first), before the cursor `$1`,
/// `$2` rows, with a filter whose parameters are numbered from `$3`.
macro_rules! page_sql {
    ($key:literal, $filter:literal) => {
        concat!(
            "SELECT n.body::text, a.",
            $key,
            " FROM graph_attempts a ",
            "JOIN graph_nodes n USING (node_id) WHERE a.",
            $key,
            " < $1",
            $filter,
            " ORDER BY a.",
            $key,
            " DESC LIMIT $2"
        )
    };
}

impl PgGraphStore {
    /// Runs a [`page_sql!`] query with the filter's parameters.
    async fn page(
        &self,
        sql: &'static str,
        cursor: Option<u64>,
        limit: usize,
        filter: &[&str],
    ) -> Result<AttemptPage, GraphStoreError> {
        let mut query = sqlx::query_as(sql)
            .bind(before(cursor))
            .bind(rows_for(limit));
        for param in filter {
            query = query.bind(*param);
        }
        let rows = query
            .fetch_all(&self.pool)
            .await
            .map_err(|e| graph_error("reading a page of attempts", e))?;
        attempt_page(rows, limit)
    }

    async fn bodies(
        &self,
        what: &str,
        sql: &'static str,
        params: &[&str],
    ) -> Result<Vec<Node>, GraphStoreError> {
        let mut query = sqlx::query_scalar::<_, String>(sql);
        for param in params {
            query = query.bind(*param);
        }
        let rows = query
            .fetch_all(&self.pool)
            .await
            .map_err(|e| graph_error(format_args!("reading {what}"), e))?;
        rows.iter()
            .map(|body| from_json(format_args!("node of {what}"), body))
            .collect()
    }
}

#[async_trait]
impl GraphStore for PgGraphStore {
    /// Reads everything in one REPEATABLE READ snapshot, so a concurrent save is seen whole or
    /// not at all.
    async fn load(&self) -> Result<GraphSnapshot, GraphStoreError> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(|e| graph_error("loading the graph", e))?;
        let mut tx = conn
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(|e| graph_error("loading the graph", e))?;
        let failed =
            |what: &'static str| move |e| graph_error(format_args!("loading graph {what}"), e);

        let nodes: Vec<(String, String)> = sqlx::query_as(
            "SELECT node_id, body::text FROM graph_nodes ORDER BY node_id COLLATE \"C\"",
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(failed("nodes"))?;
        let edges: Vec<(String, String)> = sqlx::query_as(
            "SELECT edge_id, body::text FROM graph_edges ORDER BY edge_id COLLATE \"C\"",
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(failed("edges"))?;
        let streams: Vec<(String, i64)> = sqlx::query_as(
            "SELECT stream, version FROM graph_streams ORDER BY stream COLLATE \"C\"",
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(failed("stream versions"))?;
        let anomalies: Vec<(i64, String)> =
            sqlx::query_as("SELECT seq, body::text FROM graph_anomalies ORDER BY seq")
                .fetch_all(&mut *tx)
                .await
                .map_err(failed("anomalies"))?;
        let (seq, hash): (i64, Option<Vec<u8>>) =
            sqlx::query_as("SELECT seq, hash FROM graph_checkpoint")
                .fetch_one(&mut *tx)
                .await
                .map_err(failed("checkpoint"))?;
        tx.commit().await.map_err(failed("snapshot"))?;

        Ok(GraphSnapshot {
            nodes: nodes
                .iter()
                .map(|(id, body)| from_json(format_args!("node `{id}`"), body))
                .collect::<Result<_, _>>()?,
            edges: edges
                .iter()
                .map(|(id, body)| from_json(format_args!("edge `{id}`"), body))
                .collect::<Result<_, _>>()?,
            streams: streams
                .into_iter()
                .map(|(stream, version)| {
                    let version = unsigned(format_args!("version of stream `{stream}`"), version)?;
                    Ok((StreamId::from_raw(stream), version))
                })
                .collect::<Result<_, GraphStoreError>>()?,
            anomalies: anomalies
                .iter()
                .map(|(ordinal, body)| {
                    from_json::<Anomaly>(format_args!("anomaly {ordinal}"), body)
                })
                .collect::<Result<_, _>>()?,
            checkpoint: checkpoint_from_row(seq, hash.as_deref())?,
        })
    }

    /// One transaction: lock the checkpoint row (`SELECT ... FOR UPDATE`), check that the delta
    /// fits it (core's [`delta_fits`]), then write the delta and the new checkpoint in one
    /// statement.
    async fn save(&self, previous: u64, delta: &GraphDelta) -> Result<(), GraphStoreError> {
        let context = || {
            format!(
                "saving a graph delta continuing from seq {previous} ({} nodes, {} edges)",
                delta.nodes.len(),
                delta.edges.len()
            )
        };
        // Nodes and streams are upserts: only the last value of a key may reach the statement.
        // Edges never change: the first one of a key is kept.
        let mut nodes: BTreeMap<String, &Node> = BTreeMap::new();
        for node in &delta.nodes {
            nodes.insert(node.id().as_str().to_owned(), node);
        }
        let mut edges: BTreeMap<&str, &Edge> = BTreeMap::new();
        for edge in &delta.edges {
            edges.entry(edge.edge_id.as_str()).or_insert(edge);
        }
        let streams: BTreeMap<&str, u64> = delta
            .streams
            .iter()
            .map(|(stream, version)| (stream.as_str(), *version))
            .collect();

        let (mut node_ids, mut node_kinds, mut node_bodies) = (vec![], vec![], vec![]);
        for (id, node) in &nodes {
            node_kinds.push(node.kind().as_str());
            node_bodies.push(to_json(format_args!("node `{id}`"), node)?);
            node_ids.push(id.as_str());
        }
        let (mut edge_ids, mut edge_types, mut edge_from, mut edge_to, mut edge_bodies) =
            (vec![], vec![], vec![], vec![], vec![]);
        for (id, edge) in edges {
            edge_ids.push(id);
            edge_types.push(edge.edge_type.as_str());
            edge_from.push(edge.from.as_str());
            edge_to.push(edge.to.as_str());
            edge_bodies.push(to_json(format_args!("edge `{id}`"), edge)?);
        }
        let (mut stream_ids, mut stream_versions) = (vec![], vec![]);
        for (stream, version) in streams {
            stream_ids.push(stream);
            stream_versions.push(bigint(
                format_args!("version of stream `{stream}`"),
                version,
            )?);
        }
        // Anomalies are keyed by seq: the last one of a seq wins, as in an upsert.
        let anomalies: BTreeMap<u64, &Anomaly> =
            delta.anomalies.iter().map(|a| (a.seq, a)).collect();
        let (mut anomaly_seqs, mut anomaly_bodies) = (vec![], vec![]);
        for (seq, anomaly) in anomalies {
            anomaly_seqs.push(bigint("anomaly seq", seq)?);
            anomaly_bodies.push(to_json(format_args!("anomaly at seq {seq}"), anomaly)?);
        }
        let attempts = AttemptRows::of(&nodes)?;
        let checkpoint_seq = bigint("checkpoint seq", delta.checkpoint.map_or(0, |h| h.seq))?;
        let checkpoint_hash = delta.checkpoint.map(|h| h.hash.as_bytes().to_vec());

        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(|e| graph_error(context(), e))?;
        let stored: i64 = sqlx::query_scalar("SELECT seq FROM graph_checkpoint FOR UPDATE")
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| graph_error(context(), e))?;
        let stored = unsigned("graph checkpoint seq", stored)?;
        delta_fits(stored, previous, delta.checkpoint.map_or(0, |h| h.seq))?;
        sqlx::query(SAVE)
            .bind(&node_ids)
            .bind(&node_kinds)
            .bind(&node_bodies)
            .bind(&edge_ids)
            .bind(&edge_types)
            .bind(&edge_from)
            .bind(&edge_to)
            .bind(&edge_bodies)
            .bind(&stream_ids)
            .bind(&stream_versions)
            .bind(&anomaly_seqs)
            .bind(&anomaly_bodies)
            .bind(checkpoint_seq)
            .bind(checkpoint_hash)
            .bind(&attempts.node_ids)
            .bind(&attempts.targets)
            .bind(&attempts.tasks)
            .bind(&attempts.statuses)
            .bind(&attempts.created)
            .bind(&attempts.ended)
            .execute(&mut *tx)
            .await
            .map_err(|e| graph_error(context(), e))?;
        tx.commit().await.map_err(|e| graph_error(context(), e))
    }

    async fn checkpoint(&self) -> Result<Option<Head>, GraphStoreError> {
        let (seq, hash): (i64, Option<Vec<u8>>) =
            sqlx::query_as("SELECT seq, hash FROM graph_checkpoint")
                .fetch_one(&self.pool)
                .await
                .map_err(|e| graph_error("reading the graph checkpoint", e))?;
        checkpoint_from_row(seq, hash.as_deref())
    }

    /// Resets the checkpoint first (taking its row lock, as saves do) and then empties the tables.
    async fn clear(&self) -> Result<(), GraphStoreError> {
        let failed = |e| graph_error("clearing the graph", e);
        let mut tx = self.pool.begin().await.map_err(failed)?;
        sqlx::query("UPDATE graph_checkpoint SET seq = 0, hash = NULL")
            .execute(&mut *tx)
            .await
            .map_err(failed)?;
        sqlx::query(
            "TRUNCATE graph_nodes, graph_edges, graph_streams, graph_anomalies, graph_attempts",
        )
        .execute(&mut *tx)
        .await
        .map_err(failed)?;
        tx.commit().await.map_err(failed)
    }

    async fn attempts(&self, query: &AttemptQuery) -> Result<AttemptPage, GraphStoreError> {
        let (sql, filter): (&'static str, Vec<&str>) =
            match (&query.target, query.status.map(|s| s.as_str())) {
                (None, None) => (page_sql!("created_seq", ""), vec![]),
                (Some(t), None) => (
                    page_sql!("created_seq", " AND a.target_id = $3"),
                    vec![t.as_str()],
                ),
                (None, Some(s)) => (page_sql!("created_seq", " AND a.status = $3"), vec![s]),
                (Some(t), Some(s)) => (
                    page_sql!("created_seq", " AND a.target_id = $3 AND a.status = $4"),
                    vec![t.as_str(), s],
                ),
            };
        self.page(sql, query.cursor, query.limit, &filter).await
    }

    async fn failures(&self, query: &FailureQuery) -> Result<AttemptPage, GraphStoreError> {
        let (sql, filter): (&'static str, Vec<&str>) = match &query.target {
            None => (
                page_sql!("ended_seq", " AND a.status IN ('failed', 'timed_out')"),
                vec![],
            ),
            Some(t) => (
                page_sql!(
                    "ended_seq",
                    " AND a.status IN ('failed', 'timed_out') AND a.target_id = $3"
                ),
                vec![t.as_str()],
            ),
        };
        self.page(sql, query.cursor, query.limit, &filter).await
    }

    async fn task_attempts(
        &self,
        target: &TargetId,
        task: &TaskId,
    ) -> Result<Vec<AttemptNode>, GraphStoreError> {
        const SQL: &str = "SELECT n.body::text FROM graph_attempts a \
            JOIN graph_nodes n USING (node_id) WHERE a.task_node = $1 ORDER BY a.created_seq";
        let task_node = NodeId::task(target, task);
        let nodes = self
            .bodies("a task's attempts", SQL, &[task_node.as_str()])
            .await?;
        Ok(nodes
            .into_iter()
            .filter_map(|n| match n {
                Node::Attempt(a) => Some(a),
                _ => None,
            })
            .collect())
    }

    async fn node(&self, id: &NodeId) -> Result<Option<Node>, GraphStoreError> {
        const SQL: &str = "SELECT body::text FROM graph_nodes WHERE node_id = $1";
        Ok(self.bodies("a node", SQL, &[id.as_str()]).await?.pop())
    }

    /// Edge ids start with their source's id and the edge type: the produced edges are the key
    /// range from `<attempt>:PRODUCED:` up to `<attempt>:PRODUCED;` (`;` follows `:`).
    async fn produced(&self, attempt: &AttemptId) -> Result<Vec<Node>, GraphStoreError> {
        const SQL: &str = "SELECT n.body::text FROM graph_edges e \
            JOIN graph_nodes n ON n.node_id = e.to_node COLLATE \"C\" \
            WHERE e.edge_id >= $1 AND e.edge_id < $2 ORDER BY e.edge_id";
        let prefix = format!("{}:{}", NodeId::attempt(attempt), EdgeKind::Produced);
        let (from, to) = (format!("{prefix}:"), format!("{prefix};"));
        self.bodies("what an attempt produced", SQL, &[&from, &to])
            .await
    }
}
