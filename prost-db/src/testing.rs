//! Per-test databases: each test gets a fresh, uniquely named database that is dropped
//! afterwards, so tests run in parallel and reruns start clean.
//!
//! Behind the `testing` feature: enable it where tests, benchmarks and examples are built,
//! `prost-db = { version = "...", features = ["testing"] }` under `[dev-dependencies]`.
//!
//! The server comes from `PROST_DB_TEST_URL`, else `DATABASE_URL`, else
//! `postgres://postgres@127.0.0.1:5432/postgres` (or the URL given to
//! [`TestDb::on_server`]); the database named in the URL, the maintenance database, is used
//! only to create and drop test databases.
//!
//! Each [`TestDb`] keeps a session open on the server from before its database exists until
//! it is dropped, named after the database (`application_name = prost_db owner <name>`):
//! the mark of a live owner, visible in `pg_stat_activity` to every session of the cluster
//! whatever database it is connected to. A process killed mid-test loses its session and
//! with it the mark, so the next [`TestDb::new`] anywhere finds the database unowned and
//! drops it: leaked `prost_test_*` databases never pile up, and a live one is never dropped,
//! even by a process that uses another maintenance database. (The session also holds a
//! session-level advisory lock named after the database, the mark of earlier versions,
//! which a sweep respects too.)
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

use crate::error::{Error, Origin, Result};
use crate::ident::{Identifier, IdentifierKind, is_test_database_name};
use crate::pool::{Db, DbConfig};

/// Prefix of every database made by [`TestDb`].
pub const TEST_DATABASE_PREFIX: &str = "prost_test_";

/// The prefix of every role a test names with [`TestDb::role_name`]: the only roles
/// [`sweep_leaked_roles`] may drop.
///
/// ```
/// assert_eq!(prost_db::testing::TEST_ROLE_PREFIX, "prost_test_role_");
/// ```
pub const TEST_ROLE_PREFIX: &str = "prost_test_role_";

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The `application_name` of the session that marks `database` as owned.
const OWNER_PREFIX: &str = "prost_db owner ";

static COUNTER: AtomicU64 = AtomicU64::new(0);
static SWEPT: OnceCell<()> = OnceCell::const_new();

/// The server URL tests use: `PROST_DB_TEST_URL`, `DATABASE_URL`, or the local default.
///
/// ```
/// assert!(prost_db::testing::server_url().starts_with("postgres"));
/// ```
pub fn server_url() -> String {
    std::env::var("PROST_DB_TEST_URL")
        .or_else(|_| std::env::var("DATABASE_URL"))
        .unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

/// A fresh database for one test. Drop it with [`close`](TestDb::close); if a test panics
/// first, `Drop` removes it.
pub struct TestDb {
    name: Identifier,
    url: String,
    server: PgConnectOptions,
    // The owner's session: its application_name (and advisory lock) mark the database live.
    guard: Option<PgConnection>,
}

impl TestDb {
    /// Creates an empty database named `prost_test_<pid>_<time>_<n>`.
    ///
    /// # Errors
    ///
    /// [`Error::Connect`] if the server is unreachable.
    pub async fn new() -> Result<TestDb> {
        Self::create(&server_url(), None).await
    }

    /// Creates an empty database on the server of `url`, whose database is the maintenance
    /// database (instead of the one [`server_url`] names).
    ///
    /// ```no_run
    /// # async fn run() -> prost_db::Result<()> {
    /// let test_db = prost_db::testing::TestDb::on_server("postgres://postgres@127.0.0.1:5432/template1").await?;
    /// test_db.close().await
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a URL that does not parse; [`Error::Connect`] if the server is
    /// unreachable.
    pub async fn on_server(url: &str) -> Result<TestDb> {
        Self::create(url, None).await
    }

    /// Creates a database as a copy of `template` (which no session may be connected to).
    /// Cloning a migrated template is much faster than migrating every test's database.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidIdentifier`] for a bad template name; the database error otherwise.
    pub async fn from_template(template: &str) -> Result<TestDb> {
        let template = Identifier::new(IdentifierKind::Database, template)?;
        Self::create(&server_url(), Some(template)).await
    }

    async fn create(url: &str, template: Option<Identifier>) -> Result<TestDb> {
        let server = server_options(url)?;
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

        // The owner's mark exists before the database does, so that no sweep that can see
        // the database misses it.
        let mut guard =
            maintenance_connection(&server.clone().application_name(&owner_mark(&name))).await?;
        SWEPT
            .get_or_try_init(|| async {
                sweep(&mut guard).await?;
                sweep_roles(&mut guard).await?;
                Ok::<(), Error>(())
            })
            .await?;
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
            url: url.to_owned(),
            server,
            guard: Some(guard),
        })
    }

    /// The database's name.
    ///
    /// ```no_run
    /// # async fn run(test_db: prost_db::testing::TestDb) {
    /// assert!(test_db.name().starts_with(prost_db::testing::TEST_DATABASE_PREFIX));
    /// # }
    /// ```
    pub fn name(&self) -> &str {
        self.name.as_str()
    }

    /// A role name for this test: `prost_test_role_<word>_<pid>_<time>_<n>`, carrying the
    /// database's suffix, so that [`sweep_leaked_roles`] drops it once a killed run left it
    /// behind. The prefix ([`TEST_ROLE_PREFIX`]) keeps the sweep off every role that a test
    /// did not name this way, on whatever server the tests run against.
    ///
    /// ```no_run
    /// # async fn run(test_db: prost_db::testing::TestDb) {
    /// let role = test_db.role_name("catalog");
    /// assert!(role.starts_with("prost_test_role_catalog_"));
    /// # }
    /// ```
    pub fn role_name(&self, word: &str) -> String {
        let suffix = self.name.as_str().trim_start_matches(TEST_DATABASE_PREFIX);
        format!("{TEST_ROLE_PREFIX}{word}_{suffix}")
    }

    /// Connect options for this database.
    ///
    /// ```no_run
    /// # async fn run(test_db: prost_db::testing::TestDb) -> Result<(), sqlx::Error> {
    /// let pool = sqlx::PgPool::connect_with(test_db.connect_options()).await?;
    /// # Ok(()) }
    /// ```
    pub fn connect_options(&self) -> PgConnectOptions {
        self.server.clone().database(self.name.as_str())
    }

    /// A `postgres://` URL for this database (for CLIs and child processes). It carries the
    /// password of the server URL, if that had one.
    ///
    /// ```no_run
    /// # async fn run(test_db: prost_db::testing::TestDb) {
    /// std::process::Command::new("psql").arg(test_db.url()).arg("-c").arg("SELECT 1");
    /// # }
    /// ```
    pub fn url(&self) -> String {
        with_database(&self.url, self.name.as_str())
    }

    /// A [`DbConfig`] for `service` on this database, creating the schema if missing and
    /// with a small pool (2 to 10 connections) to keep parallel tests within the server's
    /// connection limit.
    ///
    /// ```no_run
    /// # async fn run(test_db: prost_db::testing::TestDb) -> prost_db::Result<()> {
    /// let db = prost_db::Db::connect(test_db.config("catalog").max_connections(1)).await?;
    /// # Ok(()) }
    /// ```
    pub fn config(&self, service: &str) -> DbConfig {
        DbConfig::from_connect_options(self.connect_options(), service)
            .create_schema(true)
            .min_connections(2)
            .max_connections(10)
    }

    /// A [`Db`] for `service`, with its schema created.
    ///
    /// ```no_run
    /// # async fn run(test_db: prost_db::testing::TestDb) -> prost_db::Result<()> {
    /// let catalog = test_db.db("catalog").await?;
    /// assert_eq!(catalog.current_schema().await?, "catalog");
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Db::connect`].
    pub async fn db(&self, service: &str) -> Result<Db> {
        Db::connect(self.config(service)).await
    }

    /// A plain pool on this database (no `search_path` override), for setup and assertions.
    ///
    /// ```no_run
    /// # async fn run(test_db: prost_db::testing::TestDb) -> prost_db::Result<()> {
    /// let admin = test_db.pool().await?;
    /// sqlx::query("CREATE SCHEMA catalog").execute(&admin).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Connect`] if the server is unreachable.
    pub async fn pool(&self) -> Result<sqlx::PgPool> {
        let options = self.connect_options();
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(10)
            .connect_with(options.clone())
            .await
            .map_err(|e| Error::from_sqlx(e, Origin::Connecting(&options)))
    }

    /// Drops the database (terminating its remaining connections).
    ///
    /// ```no_run
    /// # async fn run(test_db: prost_db::testing::TestDb) -> prost_db::Result<()> {
    /// test_db.close().await?;
    /// # Ok(()) }
    /// ```
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

fn server_options(url: &str) -> Result<PgConnectOptions> {
    PgConnectOptions::from_str(url).map_err(|_| {
        Error::Config(
            "the test server URL (PROST_DB_TEST_URL / DATABASE_URL) is not a valid PostgreSQL URL"
                .into(),
        )
    })
}

fn owner_mark(name: &Identifier) -> String {
    format!("{OWNER_PREFIX}{}", name.as_str())
}

async fn maintenance_connection(server: &PgConnectOptions) -> Result<PgConnection> {
    PgConnection::connect_with(server)
        .await
        .map_err(|e| Error::from_sqlx(e, Origin::Connecting(server)))
}

async fn drop_database(conn: &mut PgConnection, name: &Identifier) -> Result<()> {
    if !is_test_database_name(name.as_str()) {
        return Err(Error::Config(format!(
            "refusing to drop {:?}: it is not named like a test database",
            name.as_str()
        )));
    }
    let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
    sqlx::query(AssertSqlSafe(sql)).execute(&mut *conn).await?;
    Ok(())
}

/// Drops the `prost_test_*` databases whose owner is gone, and returns their names.
///
/// [`TestDb::new`] runs this once per process; call it yourself to clean up without creating
/// a database. A database is left alone while the [`TestDb`] that made it is alive, in this
/// process or any other, whatever maintenance database that one uses.
///
/// ```no_run
/// # async fn run() -> prost_db::Result<()> {
/// let dropped = prost_db::testing::sweep_leaked_databases().await?;
/// println!("dropped {dropped:?}");
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// [`Error::Connect`] if the server is unreachable.
pub async fn sweep_leaked_databases() -> Result<Vec<String>> {
    sweep_leaked_databases_on(&server_url()).await
}

/// [`sweep_leaked_databases`] through the maintenance database of `url`.
///
/// ```no_run
/// # async fn run() -> prost_db::Result<()> {
/// prost_db::testing::sweep_leaked_databases_on("postgres://postgres@127.0.0.1:5432/postgres").await?;
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// [`Error::Config`] for a URL that does not parse; [`Error::Connect`] if the server is
/// unreachable.
pub async fn sweep_leaked_databases_on(url: &str) -> Result<Vec<String>> {
    let server = server_options(url)?;
    let mut conn = maintenance_connection(&server).await?;
    let dropped = sweep(&mut conn).await;
    conn.close().await.ok();
    dropped
}

async fn sweep(conn: &mut PgConnection) -> Result<Vec<String>> {
    let mut dropped_names = Vec::new();
    // One statement: a database it lists was created after its owner's session started,
    // so that session, if still alive, is in the same statement's view of the cluster.
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT d.datname::text FROM pg_catalog.pg_database d \
         WHERE d.datname LIKE 'prost\\_test\\_%' AND NOT EXISTS ( \
             SELECT 1 FROM pg_catalog.pg_stat_activity a \
             WHERE a.application_name = left($1 || d.datname::text, 63))",
    )
    .bind(OWNER_PREFIX)
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

/// Drops the roles that dead test runs left behind, and returns their names.
///
/// A test role is named after its [`TestDb`] ([`TestDb::role_name`]:
/// `prost_test_role_<word>_<pid>_<time>_<n>` for the database `prost_test_<pid>_<time>_<n>`);
/// a role without the [`TEST_ROLE_PREFIX`] is never looked at. One is dropped only when it is provably a
/// leftover: its database is gone, the session that marks that database's owner alive is
/// gone (so its test ended, or was killed), and no session is logged in as the role. A live
/// test's roles, in this process or any other, are never touched. [`TestDb::new`] runs this
/// once per process, after the database sweep.
///
/// ```no_run
/// # async fn run() -> prost_db::Result<()> {
/// let dropped = prost_db::testing::sweep_leaked_roles().await?;
/// println!("dropped {dropped:?}");
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// [`Error::Connect`] if the server is unreachable.
pub async fn sweep_leaked_roles() -> Result<Vec<String>> {
    sweep_leaked_roles_on(&server_url()).await
}

/// [`sweep_leaked_roles`] through the maintenance database of `url`.
///
/// ```no_run
/// # async fn run() -> prost_db::Result<()> {
/// prost_db::testing::sweep_leaked_roles_on("postgres://postgres@127.0.0.1:5432/postgres").await?;
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// [`Error::Config`] for a URL that does not parse; [`Error::Connect`] if the server is
/// unreachable.
pub async fn sweep_leaked_roles_on(url: &str) -> Result<Vec<String>> {
    let server = server_options(url)?;
    let mut conn = maintenance_connection(&server).await?;
    let dropped = sweep_roles(&mut conn).await;
    conn.close().await.ok();
    dropped
}

async fn sweep_roles(conn: &mut PgConnection) -> Result<Vec<String>> {
    // One statement, as for databases: a role it lists was created after its test's owner
    // session started, so that session, if alive, is in the same view of the cluster.
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT r.rolname::text FROM ( \
             SELECT rolname, rolsuper, \
                    $2 || substring(rolname FROM '_([0-9]+_[0-9]+_[0-9]+)$') AS db \
             FROM pg_catalog.pg_roles) r \
         WHERE starts_with(r.rolname, $3) \
         AND r.rolname ~ '^[a-z0-9_]+_[0-9]+_[0-9]+_[0-9]+$' AND NOT r.rolsuper \
         AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_database d WHERE d.datname = r.db) \
         AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity a \
             WHERE a.application_name = left($1 || r.db, 63) OR a.usename = r.rolname)",
    )
    .bind(OWNER_PREFIX)
    .bind(TEST_DATABASE_PREFIX)
    .bind(TEST_ROLE_PREFIX)
    .fetch_all(&mut *conn)
    .await?;
    let mut dropped = Vec::new();
    for name in names {
        let Ok(role) = Identifier::new(IdentifierKind::Role, &name) else {
            continue;
        };
        let sql = format!("DROP ROLE IF EXISTS {role}");
        match sqlx::query(AssertSqlSafe(sql)).execute(&mut *conn).await {
            Ok(_) => {
                tracing::info!(role = name.as_str(), "dropped leaked test role");
                dropped.push(name);
            }
            // Still owning something, or dropped meanwhile by a parallel sweep.
            Err(error) => tracing::warn!(role = name.as_str(), %error, "leaked test role kept"),
        }
    }
    Ok(dropped)
}

#[cfg(test)]
mod tests;
