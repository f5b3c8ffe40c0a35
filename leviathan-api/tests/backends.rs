//! The router over the durable backends (sled, PostgreSQL): concurrent ingest, the live stream,
//! verification, artifacts, and a restart that resumes the graph from its checkpoint.

mod support;

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use futures::StreamExt;
use leviathan_api::{
    ApiConfig, ApiState, BearerToken,
    client::ControlPlaneClient,
    router,
    wire::{ChainVerification, IngestRequest},
};
use leviathan_core::{ArtifactStore, EventStore, GraphStore, Ledger, Sha256Digest};
use leviathan_testkit::TestServer;
use support::{TOKEN, attempts_of_target, fast_retry};

const TARGETS: usize = 12;

async fn serve(
    events: Arc<dyn EventStore>,
    graphs: Arc<dyn GraphStore>,
    artifacts: Arc<dyn ArtifactStore>,
) -> (TestServer, ControlPlaneClient, Arc<Ledger>) {
    let ledger = Arc::new(Ledger::open(events, graphs).await.unwrap());
    let config = ApiConfig::new(BearerToken::new(TOKEN).unwrap());
    let state = ApiState::new(ledger.clone(), artifacts, config);
    let server = TestServer::spawn(router(state)).await.unwrap();
    let client = ControlPlaneClient::new(&server.url(), TOKEN)
        .unwrap()
        .with_retry(fast_retry());
    (server, client, ledger)
}

/// Ingests concurrently while a stream follows, then checks order, the chain and artifacts.
async fn exercise(client: &ControlPlaneClient) -> u64 {
    let mut stream = client.stream_events(0).await.unwrap();
    let mut writers = Vec::new();
    for i in 0..TARGETS {
        let client = client.clone();
        writers.push(tokio::spawn(async move {
            let events = attempts_of_target(i);
            let n = events.len() as u64;
            let answer = client
                .ingest(&IngestRequest {
                    target: format!("target-{i}"),
                    bundle_id: format!("bundle-{i}"),
                    events,
                    artifacts: Vec::new(),
                    expectations: Vec::new(),
                })
                .await
                .unwrap();
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
        let (server, client, ledger) =
            serve(store.events(), store.graphs(), store.artifacts()).await;
        let total = exercise(&client).await;
        ledger.flush().await.unwrap();
        server.shutdown().await;
        total
    };
    // Reopened: the graph resumes from its checkpoint and answers the same.
    let store = leviathan_store_sled::SledStore::open(dir.path()).unwrap();
    let (_server, client, _) = serve(store.events(), store.graphs(), store.artifacts()).await;
    let summary = client.graph_summary().await.unwrap();
    assert_eq!(summary.checkpoint.unwrap().seq, total);
    assert_eq!(summary.attempts_by_status["succeeded"], TARGETS as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_postgres() {
    let db = leviathan_store_pg::testkit::TestDatabase::create().await;
    let store = db.store().await;
    let (_server, client, _) = serve(store.events(), store.graphs(), store.artifacts()).await;
    let total = exercise(&client).await;
    // A second control plane on the same database sees the same log and graph.
    let other = db.store().await;
    let (_other_server, other_client, _) =
        serve(other.events(), other.graphs(), other.artifacts()).await;
    assert_eq!(
        other_client.head().await.unwrap(),
        client.head().await.unwrap()
    );
    let summary = other_client.graph_summary().await.unwrap();
    assert_eq!(summary.checkpoint.unwrap().seq, total);
}
