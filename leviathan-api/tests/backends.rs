//! The router over the durable backends (sled, PostgreSQL): concurrent ingest, the live stream,
//! verification, artifacts, and a restart that resumes the graph from its checkpoint.

mod support;

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use futures::StreamExt;
use leviathan_api::{
    ApiConfig, ApiState, BearerToken, ControlPlane, ErrorCode,
    client::ControlPlaneClient,
    router,
    wire::{ChainVerification, IngestRequest},
};
use leviathan_core::{ArtifactStore, BundleIndex, EventStore, GraphStore, Ledger, Sha256Digest};
use leviathan_testkit::TestServer;
use support::{TOKEN, attempts_of_target, fast_retry};

const TARGETS: usize = 12;

/// The stores of one backend.
type Backend = (
    Arc<dyn EventStore>,
    Arc<dyn GraphStore>,
    Arc<dyn ArtifactStore>,
    Arc<dyn BundleIndex>,
);

async fn serve(
    (events, graphs, artifacts, bundles): Backend,
) -> (TestServer, ControlPlaneClient, Arc<Ledger>) {
    let ledger = Arc::new(Ledger::open(events, graphs).await.unwrap());
    let config = ApiConfig::new(BearerToken::new(TOKEN).unwrap());
    let plane = ControlPlane::new(ledger.clone(), artifacts).with_bundles(bundles);
    let state = ApiState::from_control_plane(plane, config);
    let server = TestServer::spawn(router(state)).await.unwrap();
    let client = ControlPlaneClient::new(&server.url(), TOKEN)
        .unwrap()
        .with_retry(fast_retry());
    (server, client, ledger)
}

/// Target `i`'s attempts as bundle `bundle-<i>`.
fn target_bundle(i: usize) -> IngestRequest {
    IngestRequest {
        target: format!("target-{i}"),
        bundle_id: format!("bundle-{i}"),
        events: attempts_of_target(i),
        artifacts: Vec::new(),
        expectations: Vec::new(),
    }
}

/// Bundle `bundle-0` again: a duplicate as it was, a conflict with other content.
async fn bundle_ids_hold(client: &ControlPlaneClient) {
    let again = client.ingest(&target_bundle(0)).await.unwrap();
    assert_eq!(again.status, "duplicate");
    let mut other = target_bundle(1);
    other.bundle_id = "bundle-0".into();
    let refused = client.ingest(&other).await.unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::BundleConflict), "{refused}");
}

/// Ingests concurrently while a stream follows, then checks order, the chain and artifacts.
async fn exercise(client: &ControlPlaneClient) -> u64 {
    let mut stream = client.stream_events(0).await.unwrap();
    let mut writers = Vec::new();
    for i in 0..TARGETS {
        let client = client.clone();
        writers.push(tokio::spawn(async move {
            let n = attempts_of_target(i).len() as u64;
            let answer = client.ingest(&target_bundle(i)).await.unwrap();
            assert_eq!(answer.ingested, n);
            n
        }));
    }
    let mut total = 0;
    for writer in writers {
        total += writer.await.unwrap();
    }
    for expected in 1..=total {
        let event = tokio::time::timeout(Duration::from_secs(60), stream.next())
            .await
            .expect("the stream keeps delivering")
            .expect("open")
            .expect("no error");
        assert_eq!(event.seq, expected);
    }
    match client.verify_chain().await.unwrap() {
        ChainVerification::Verified(report) => assert_eq!(report.events, total),
        ChainVerification::Broken(broken) => panic!("{broken}"),
    }
    let content = Bytes::from_static(b"model output\n");
    let sha = Sha256Digest::of(&content);
    client.put_artifact(&sha, content.clone()).await.unwrap();
    assert_eq!(client.get_artifact(&sha).await.unwrap(), content);
    let summary = client.graph_summary().await.unwrap();
    assert_eq!(summary.attempts_by_status["succeeded"], TARGETS as u64);
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_sled() {
    let dir = tempfile::tempdir().unwrap();
    let total = {
        let store = leviathan_store_sled::SledStore::open(dir.path()).unwrap();
        let (server, client, ledger) = serve(sled_backend(&store)).await;
        let total = exercise(&client).await;
        ledger.flush().await.unwrap();
        server.shutdown().await;
        total
    };
    // Reopened: the graph resumes from its checkpoint and answers the same.
    let store = leviathan_store_sled::SledStore::open(dir.path()).unwrap();
    let (_server, client, _) = serve(sled_backend(&store)).await;
    let summary = client.graph_summary().await.unwrap();
    assert_eq!(summary.checkpoint.unwrap().seq, total);
    assert_eq!(summary.attempts_by_status["succeeded"], TARGETS as u64);
    // Bundle ids are bound across the restart.
    bundle_ids_hold(&client).await;
    assert_eq!(client.head().await.unwrap().unwrap().seq, total);
}

fn sled_backend(store: &leviathan_store_sled::SledStore) -> Backend {
    (
        store.events(),
        store.graphs(),
        store.artifacts(),
        store.bundles(),
    )
}

fn pg_backend(store: &leviathan_store_pg::PgStore) -> Backend {
    (
        store.events(),
        store.graphs(),
        store.artifacts(),
        store.bundles(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_postgres() {
    let db = leviathan_store_pg::testkit::TestDatabase::create().await;
    let store = db.store().await;
    let (_server, client, _) = serve(pg_backend(&store)).await;
    let total = exercise(&client).await;
    // A second control plane on the same database sees the same log and graph.
    let other = db.store().await;
    let (_other_server, other_client, _) = serve(pg_backend(&other)).await;
    assert_eq!(
        other_client.head().await.unwrap(),
        client.head().await.unwrap()
    );
    let summary = other_client.graph_summary().await.unwrap();
    assert_eq!(summary.checkpoint.unwrap().seq, total);
    // And the same bundle ids.
    bundle_ids_hold(&other_client).await;
    assert_eq!(other_client.head().await.unwrap().unwrap().seq, total);
}
