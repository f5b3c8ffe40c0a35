//! A background HTTP server bound to an ephemeral port on 127.0.0.1, stopped when dropped.

use std::net::{Ipv4Addr, SocketAddr};

use axum::{Extension, Router};
use tokio::{
    net::TcpListener,
    sync::{mpsc, oneshot},
    task::JoinHandle,
};

/// An axum router served on `127.0.0.1:<ephemeral port>` until this handle is dropped.
#[derive(Debug)]
pub struct TestServer {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    released: mpsc::Receiver<()>,
}

/// Held by every copy of the served router; never sent on. The receiving end closes when the
/// last copy (in the server or in a connection task) is dropped.
#[derive(Clone)]
struct RouterHeld {
    _sender: mpsc::Sender<()>,
}

impl TestServer {
    /// Binds an ephemeral port on the loopback interface and serves `router` in a tokio task.
    pub async fn spawn(router: Router) -> std::io::Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = oneshot::channel::<()>();
        let (held, released) = mpsc::channel(1);
        let router = router.layer(Extension(RouterHeld { _sender: held }));
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, router).with_graceful_shutdown(async move {
                let _ = rx.await;
            });
            if let Err(error) = serve.await {
                tracing::warn!(%error, "test server stopped with an error");
            }
        });
        Ok(Self {
            addr,
            shutdown: Some(tx),
            task: Some(task),
            released,
        })
    }

    /// The bound socket address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL, `http://127.0.0.1:<port>`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting connections, waits for in-flight requests to finish, then for every
    /// connection task to drop its copy of the router, so that the router's state (a store
    /// holding a directory lock, say) is released when this returns.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        // axum reports the server closed before each connection task has dropped its service.
        while self.released.recv().await.is_some() {}
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
