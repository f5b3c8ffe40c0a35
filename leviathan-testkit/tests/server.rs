//! The test server's shutdown: when it returns, nothing of the served router is left alive.

use std::sync::{Arc, Weak};

use axum::{Router, extract::State, routing::get};
use leviathan_testkit::TestServer;

/// Stands for a router's state that must be released on shutdown (a store holding a lock).
struct Resource;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_returns_after_every_connection_let_go_of_the_state() {
    for round in 0..100 {
        let resource = Arc::new(Resource);
        let watcher: Weak<Resource> = Arc::downgrade(&resource);
        let router = Router::new()
            .route("/", get(|State(_): State<Arc<Resource>>| async { "ok" }))
            .with_state(resource);
        let server = TestServer::spawn(router).await.unwrap();
        // Several pooled keep-alive connections, each with its own connection task.
        let client = reqwest::Client::new();
        let requests = (0..8).map(|_| {
            let client = client.clone();
            let url = server.url();
            async move { client.get(url).send().await.unwrap().text().await.unwrap() }
        });
        for answer in futures::future::join_all(requests).await {
            assert_eq!(answer, "ok");
        }
        server.shutdown().await;
        assert!(
            watcher.upgrade().is_none(),
            "round {round}: the router's state outlived shutdown"
        );
    }
}
