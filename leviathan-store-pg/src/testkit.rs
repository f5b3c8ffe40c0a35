//! Fresh PostgreSQL databases for tests (feature `testkit`).
//!
//! Each [`TestDatabase`] is a new database `leviathan_test_<uuid>` on the server named by
//! `DATABASE_URL` (default [`DEFAULT_SERVER_URL`]), dropped with `DROP DATABASE ... WITH (FORCE)`
//! when the value is dropped, even from synchronous code (the drop runs on a thread of its own
//! with its own runtime). When no server is reachable, [`TestDatabase::create`] panics with a
//! message that says how to start one: tests that need PostgreSQL fail, they are never skipped.
//!
//! ```no_run
//! # async fn demo() {
//! use leviathan_store_pg::testkit::TestDatabase;
//! let db = TestDatabase::create().await;
//! let store = db.store().await;
//! // ... use store.events(), store.graphs(), store.artifacts(), or db.url() ...
//! drop(store);
//! drop(db); // the database is gone
//! # }
//! ```
//!
//! In a crate's `Cargo.toml`:
//! `[dev-dependencies] leviathan-store-pg = { workspace = true, features = ["testkit"] }`.

use sqlx::{Connection, PgConnection};

use crate::{PgStore, location::Location};

/// The server tests use when `DATABASE_URL` is not set.
pub const DEFAULT_SERVER_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The server URL tests use: `DATABASE_URL`, or [`DEFAULT_SERVER_URL`].
pub fn server_url() -> String {
    std::env::var("DATABASE_URL")
        .ok()
        .filter(|url| !url.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_SERVER_URL.to_owned())
}

/// A database created for one test and dropped with this value.
pub struct TestDatabase {
    name: String,
    url: String,
    server_url: String,
    location: Location,
}

impl TestDatabase {
    /// Creates an empty database on the test server.
    ///
    /// # Panics
    ///
    /// When the server cannot be reached or the database cannot be created, with a message
    /// saying how to start PostgreSQL or point `DATABASE_URL` at one.
    pub async fn create() -> Self {
        let server_url = server_url();
        let location = match Location::parse(&server_url) {
            Ok(location) => location,
            Err(err) => panic!("DATABASE_URL is not a usable PostgreSQL URL: {err}"),
        };
        let mut admin = match PgConnection::connect(&server_url).await {
            Ok(conn) => conn,
            Err(err) => panic!(
                "tests need PostgreSQL, but {location} is not reachable: {}\n\
                 Start the local server with `pg_ctlcluster 15 main start`, or set DATABASE_URL \
                 to a server where this user may create databases.",
                location.scrub(&err.to_string())
            ),
        };
        let name = format!("leviathan_test_{}", uuid::Uuid::new_v4().simple());
        if let Err(err) = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut admin)
            .await
        {
            panic!(
                "cannot create test database {name} on {location}: {}",
                location.scrub(&err.to_string())
            );
        }
        let _ = admin.close().await;
        let mut url = match url::Url::parse(&server_url) {
            Ok(url) => url,
            Err(err) => panic!("DATABASE_URL does not parse: {err}"),
        };
        url.set_path(&format!("/{name}"));
        Self {
            name,
            url: url.to_string(),
            server_url,
            location,
        }
    }

    /// The database's URL (with the server URL's credentials).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A [`PgStore`] on this database (migrated on connect).
    ///
    /// # Panics
    ///
    /// When connecting fails.
    pub async fn store(&self) -> PgStore {
        match PgStore::connect(&self.url).await {
            Ok(store) => store,
            Err(err) => panic!(
                "cannot open a PgStore on test database {}: {err}",
                self.name
            ),
        }
    }
}

impl std::fmt::Debug for TestDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestDatabase")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Drop for TestDatabase {
    /// Drops the database, terminating any connection still open to it. Runs on a thread of its
    /// own with its own runtime, so it works from async and sync code alike; a failure is
    /// reported on stderr (panicking in a drop could abort the test process).
    fn drop(&mut self) {
        let (name, server_url, location) = (
            self.name.clone(),
            self.server_url.clone(),
            self.location.clone(),
        );
        let dropped = std::thread::spawn(move || -> Result<(), String> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime
                .block_on(async {
                    let mut admin = PgConnection::connect(&server_url)
                        .await
                        .map_err(|e| e.to_string())?;
                    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                    )))
                    .execute(&mut admin)
                    .await
                    .map_err(|e| e.to_string())?;
                    let _ = admin.close().await;
                    Ok(())
                })
                .map_err(|e: String| location.scrub(&e))
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(err)) => eprintln!("warning: could not drop test database {}: {err}", self.name),
            Err(_) => eprintln!("warning: dropping test database {} panicked", self.name),
        }
    }
}
