//! Embedding the control plane in your own axum service.
//!
//! The control plane is an ordinary `axum::Router` built from the core traits, so a service can
//! mount it under a prefix next to its own routes, on any backend. This example mounts it under
//! `/leviathan` on the in-memory backends, adds a route of its own, reports one fact through the
//! typed client, reads the graph summary back and verifies the chain.
//!
//! ```sh
//! cargo run --example embed_router
//! ```

use std::sync::Arc;

use axum::{Router, routing::get};
use leviathan::{
    api::{ApiConfig, ApiState, BearerToken, client::ControlPlaneClient, wire::IngestRequest},
    core::{
        EventId, Ledger, NewEvent, TargetId, Timestamp,
        catalogue::TargetRegistered,
        memory::{MemoryArtifactStore, MemoryEventStore, MemoryGraphStore},
    },
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The stores: swap in leviathan_store_sled::SledStore or leviathan_store_pg::PgStore.
    let ledger = Arc::new(
        Ledger::open(
            Arc::new(MemoryEventStore::new()),
            Arc::new(MemoryGraphStore::new()),
        )
        .await?,
    );
    let token = BearerToken::generate()?;
    let secret = token.expose().to_owned();
    let control_plane = leviathan::api::router(ApiState::new(
        ledger,
        Arc::new(MemoryArtifactStore::new()),
        ApiConfig::new(token),
    ));

    // Your service: its own routes, with the control plane mounted under a prefix.
    let app = Router::new()
        .route("/", get(|| async { "my service\n" }))
        .nest("/leviathan", control_plane);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let client = ControlPlaneClient::new(&format!("{base}/leviathan"), secret)?;
    let registered = TargetRegistered {
        target_id: TargetId::new("demo")?,
        name: Some("Demo repository".into()),
        repo_url: "https://github.com/acme/demo.git".into(),
        default_branch: "main".into(),
        test_command: None,
    };
    let event = NewEvent::new(
        EventId::new("embed-example-1")?,
        Timestamp::now(),
        Some("embedder".into()),
        &registered,
    );
    let response = client
        .ingest(&IngestRequest {
            target: "demo".into(),
            bundle_id: "bundle-embed-example".into(),
            events: vec![event],
            artifacts: Vec::new(),
            expectations: Vec::new(),
        })
        .await?;
    println!(
        "ingested {} event(s); head seq {:?}",
        response.ingested,
        response.head.map(|h| h.seq)
    );

    let summary = client.graph_summary().await?;
    println!("nodes by type: {:?}", summary.nodes_by_type);
    let verified = client.verify_chain().await?;
    println!("chain verification: {verified:?}");
    println!("own route: {}", reqwest_free_get(&base).await?);

    server.abort();
    Ok(())
}

/// The service's own route, fetched with a plain TCP request to keep the example's dependencies
/// to what the workspace already has.
async fn reqwest_free_get(base: &str) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(
            format!("GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    Ok(response
        .rsplit("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned())
}
