//! Per-test databases: each test gets a fresh, uniquely named database that is dropped
//! afterwards, so tests run in parallel and reruns start clean.
//!
//! The server comes from `PROST_DB_TEST_URL`, else `DATABASE_URL`, else
//! `postgres://postgres@127.0.0.1:5432/postgres`; the database named in the URL is used only
//! to create and drop test databases.
//!
//! Each [`TestDb`] holds a session-level advisory lock named after its database on that
//! maintenance connection. A process killed mid-test loses its connection and with it the
//! lock, so the next [`TestDb::new`] anywhere finds the database unlocked and drops it:
//! leaked `prost_test_*` databases never pile up.
//!
//! ```no_run
//! use prost_db::testing::TestDb;
//!
//! #[tokio::test]
//! async fn products_start_empty() -> Result<(), prost_db::Error> {
//!     let test_db = TestDb::new().await?;
//!     let catalog = test_db.db("catalog").await?;
//!     assert!(catalog.list_tables().await?.is_empty());
//!     test_db.close().await
//! }
//! ```

use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{AssertSqlSafe, Connection};
use tokio::sync::OnceCell;

use crate::error::{Error, Result};
use crate::ident::{Identifier, IdentifierKind};
use crate::pool::{Db, DbConfig};

/// Prefix of every database made by [`TestDb`].
pub const TEST_DATABASE_PREFIX: &str = "prost_test_";

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

static COUNTER: AtomicU64 = AtomicU64::new(0);
static SWEPT: OnceCell<()> = OnceCell::const_new();

/// The server URL tests use: `PROST_DB_TEST_URL`, `DATABASE_URL`, or the local default.
pub fn server_url() -> String {
    std::env::var("PROST_DB_TEST_URL")
        .or_else(|_| std::env::var("DATABASE_URL"))
        .unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

/// A fresh database for one test. Drop it with [`close`](TestDb::close); if a test panics
/// first, `Drop` removes it.
pub struct TestDb {
    name: Identifier,
    server: PgConnectOptions,
    // Holds the advisory lock that marks the database as in use.
    guard: Option<PgConnection>,
}

impl TestDb {
    /// Creates an empty database named `prost_test_<pid>_<time>_<n>`.
    ///
    /// # Errors
    ///
    /// [`Error::Connect`] if the server is unreachable.
    pub async fn new() -> Result<TestDb> {
        Self::create(None).await
    }

    /// Creates a database as a copy of `template` (which no session may be connected to).
    /// Cloning a migrated template is much faster than migrating every test's database.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidIdentifier`] for a bad template name; the database error otherwise.
    pub async fn from_template(template: &str) -> Result<TestDb> {
        let template = Identifier::new(IdentifierKind::Database, template)?;
        Self::create(Some(template)).await
    }

    async fn create(template: Option<Identifier>) -> Result<TestDb> {
        let server = server_options()?;
        let mut guard = maintenance_connection(&server).await?;
        SWEPT
            .get_or_try_init(|| async {
                sweep(&mut guard).await?;
                Ok::<(), Error>(())
            })
            .await?;

        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() % 1_000_000_000_000)
            .unwrap_or_default();
        let name = format!(
            "{TEST_DATABASE_PREFIX}{}_{}_{}",
            std::process::id(),
            nanos,
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let name = Identifier::new(IdentifierKind::Database, &name)?;

        sqlx::query("SELECT pg_advisory_lock(hashtext($1))")
            .bind(name.as_str())
            .execute(&mut guard)
            .await?;
        let sql = match &template {
            Some(template) => format!("CREATE DATABASE {name} TEMPLATE {template}"),
            None => format!("CREATE DATABASE {name}"),
        };
        sqlx::query(AssertSqlSafe(sql)).execute(&mut guard).await?;
        Ok(TestDb {
            name,
            server,
            guard: Some(guard),
        })
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        self.name.as_str()
    }

    /// Connect options for this database.
    pub fn connect_options(&self) -> PgConnectOptions {
        self.server.clone().database(self.name.as_str())
    }

    /// A `postgres://` URL for this database (for CLIs and child processes). It carries the
    /// password of the server URL, if that had one.
    pub fn url(&self) -> String {
        with_database(&server_url(), self.name.as_str())
    }

    /// A [`DbConfig`] for `service` on this database, creating the schema if missing and
    /// with a small pool (2 to 10 connections) to keep parallel tests within the server's
    /// connection limit.
    pub fn config(&self, service: &str) -> DbConfig {
        DbConfig::from_connect_options(self.connect_options(), service)
            .create_schema(true)
            .min_connections(2)
            .max_connections(10)
    }

    /// A [`Db`] for `service`, with its schema created.
    ///
    /// # Errors
    ///
    /// As [`Db::connect`].
    pub async fn db(&self, service: &str) -> Result<Db> {
        Db::connect(self.config(service)).await
    }

    /// A plain pool on this database (no `search_path` override), for setup and assertions.
    ///
    /// # Errors
    ///
    /// [`Error::Connect`] if the server is unreachable.
    pub async fn pool(&self) -> Result<sqlx::PgPool> {
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(10)
            .connect_with(self.connect_options())
            .await
            .map_err(Error::from)
    }

    /// Drops the database (terminating its remaining connections).
    ///
    /// # Errors
    ///
    /// The database error, if the drop failed; the next run's sweep retries it.
    pub async fn close(mut self) -> Result<()> {
        let mut guard = self
            .guard
            .take()
            .expect("guard present until close or drop");
        let result = drop_database(&mut guard, &self.name).await;
        guard.close().await.ok();
        result
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(guard) = self.guard.take() else {
            return;
        };
        // The guard's socket belongs to the test's runtime, which may be the very thread we
        // block here; drop the database over a fresh connection on a thread of its own.
        let server = self.server.clone();
        let name = self.name.clone();
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async move {
                let mut conn = PgConnection::connect_with(&server).await.ok()?;
                drop_database(&mut conn, &name).await.ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(()))) {
            eprintln!(
                "prost-db: could not drop test database {}; the next test run removes it",
                self.name.as_str()
            );
        }
        drop(guard);
    }
}

impl std::fmt::Debug for TestDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestDb")
            .field("name", &self.name.as_str())
            .finish_non_exhaustive()
    }
}

/// `url` with its database replaced by `database`, keeping the query. The path starts at
/// the first `/` or `?` after the authority: a query may hold slashes
/// (`?sslrootcert=/etc/ca.pem`), and the URL may have no path at all.
fn with_database(url: &str, database: &str) -> String {
    let authority = url.find("://").map_or(0, |i| i + 3);
    let path = url[authority..]
        .find(['/', '?'])
        .map_or(url.len(), |i| authority + i);
    let query = url[path..].find('?').map_or("", |i| &url[path + i..]);
    format!("{}/{database}{query}", &url[..path])
}

fn server_options() -> Result<PgConnectOptions> {
    PgConnectOptions::from_str(&server_url()).map_err(|_| {
        Error::Config("PROST_DB_TEST_URL / DATABASE_URL is not a valid PostgreSQL URL".into())
    })
}

async fn maintenance_connection(server: &PgConnectOptions) -> Result<PgConnection> {
    PgConnection::connect_with(server)
        .await
        .map_err(|source| Error::Connect {
            host: server.get_host().to_owned(),
            port: server.get_port(),
            database: server.get_database().unwrap_or("postgres").to_owned(),
            user: server.get_username().to_owned(),
            source,
        })
}

async fn drop_database(conn: &mut PgConnection, name: &Identifier) -> Result<()> {
    let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
    sqlx::query(AssertSqlSafe(sql)).execute(&mut *conn).await?;
    Ok(())
}

/// Drops the `prost_test_*` databases whose owner is gone, and returns their names.
///
/// [`TestDb::new`] runs this once per process; call it yourself to clean up without creating
/// a database. A database is left alone while the [`TestDb`] that made it is alive, in this
/// process or any other.
///
/// # Errors
///
/// [`Error::Connect`] if the server is unreachable.
pub async fn sweep_leaked_databases() -> Result<Vec<String>> {
    let server = server_options()?;
    let mut conn = maintenance_connection(&server).await?;
    let dropped = sweep(&mut conn).await;
    conn.close().await.ok();
    dropped
}

async fn sweep(conn: &mut PgConnection) -> Result<Vec<String>> {
    let mut dropped_names = Vec::new();
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT datname::text FROM pg_catalog.pg_database WHERE datname LIKE 'prost\\_test\\_%'",
    )
    .fetch_all(&mut *conn)
    .await?;
    for name in names {
        let Ok(name) = Identifier::new(IdentifierKind::Database, &name) else {
            continue;
        };
        let free: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtext($1))")
            .bind(name.as_str())
            .fetch_one(&mut *conn)
            .await?;
        if free {
            let dropped = drop_database(conn, &name).await;
            sqlx::query("SELECT pg_advisory_unlock(hashtext($1))")
                .bind(name.as_str())
                .execute(&mut *conn)
                .await?;
            if dropped.is_ok() {
                tracing::info!(database = name.as_str(), "dropped leaked test database");
                dropped_names.push(name.as_str().to_owned());
            }
        }
    }
    Ok(dropped_names)
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn test_url_replaces_only_the_database() {
        for (server, expected) in [
            (
                "postgres://postgres@127.0.0.1:5432/postgres",
                "postgres://postgres@127.0.0.1:5432/t1",
            ),
            ("postgres://u:pw@db:5432", "postgres://u:pw@db:5432/t1"),
            (
                "postgres://u@db/prost?sslmode=verify-full&sslrootcert=/etc/ca.pem",
                "postgres://u@db/t1?sslmode=verify-full&sslrootcert=/etc/ca.pem",
            ),
            (
                "postgresql://u@db?sslrootcert=/etc/ca.pem",
                "postgresql://u@db/t1?sslrootcert=/etc/ca.pem",
            ),
            (
                "postgres:///prost?host=/var/run/postgresql",
                "postgres:///t1?host=/var/run/postgresql",
            ),
        ] {
            assert_eq!(with_database(server, "t1"), expected, "{server}");
        }
    }
}
