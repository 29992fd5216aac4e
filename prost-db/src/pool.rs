//! The connection manager: a pool bound to one service and its schema.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Postgres, Transaction};

use crate::error::{Error, Result};
use crate::ident::{Identifier, IdentifierKind};

/// Default minimum number of pooled connections (the seed's "5-25 connections").
pub const DEFAULT_MIN_CONNECTIONS: u32 = 5;
/// Default maximum number of pooled connections.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 25;
/// Default time to wait for a free connection.
pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default time after which an idle connection above `min_connections` is closed.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// Default maximum age of a connection.
pub const DEFAULT_MAX_LIFETIME: Duration = Duration::from_secs(1800);

/// How to connect a service: where the database is, which schema the service owns, and the
/// pool's limits.
///
/// Build it in code with [`DbConfig::new`] or from the environment with
/// [`DbConfig::from_env`]. `Debug` never shows the password.
///
/// | variable | meaning | default |
/// |---|---|---|
/// | `DATABASE_URL` | `postgres://user[:password]@host:port/database` | required |
/// | `PROST_DB_SCHEMA` | the service's schema | the service name |
/// | `PROST_DB_MIN_CONNECTIONS` | connections kept open | 5 |
/// | `PROST_DB_MAX_CONNECTIONS` | upper bound of the pool | 25 |
/// | `PROST_DB_ACQUIRE_TIMEOUT_MS` | wait for a free connection | 30000 |
/// | `PROST_DB_IDLE_TIMEOUT_MS` | close idle connections after (0 = never) | 600000 |
/// | `PROST_DB_MAX_LIFETIME_MS` | recycle connections after (0 = never) | 1800000 |
/// | `PROST_DB_STATEMENT_TIMEOUT_MS` | server-side `statement_timeout` (0 = none) | none |
/// | `PROST_DB_CREATE_SCHEMA` | create the schema if missing (`true`/`false`) | false |
///
/// ```
/// use std::time::Duration;
/// use prost_db::DbConfig;
///
/// let config = DbConfig::new("postgres://app:secret@db.internal:5432/prost", "catalog")?
///     .max_connections(10)
///     .statement_timeout(Duration::from_secs(5));
/// assert_eq!(config.schema_name(), "catalog");
/// assert!(!format!("{config:?}").contains("secret"));
/// # Ok::<(), prost_db::Error>(())
/// ```
#[derive(Clone)]
pub struct DbConfig {
    connect: PgConnectOptions,
    service: String,
    schema: String,
    create_schema: bool,
    min_connections: u32,
    max_connections: u32,
    acquire_timeout: Duration,
    idle_timeout: Option<Duration>,
    max_lifetime: Option<Duration>,
    statement_timeout: Option<Duration>,
}

impl DbConfig {
    /// A configuration for `service` on the database at `url`; the schema defaults to the
    /// service name.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] if the URL cannot be parsed (the message never repeats the URL).
    pub fn new(url: &str, service: &str) -> Result<Self> {
        let connect = PgConnectOptions::from_str(url).map_err(|_| {
            Error::Config(
                "the database URL is not a valid PostgreSQL URL; expected postgres://user[:password]@host:port/database"
                    .into(),
            )
        })?;
        Ok(Self::from_connect_options(connect, service))
    }

    /// A configuration from already built sqlx connect options.
    pub fn from_connect_options(connect: PgConnectOptions, service: &str) -> Self {
        DbConfig {
            connect,
            service: service.to_owned(),
            schema: service.to_owned(),
            create_schema: false,
            min_connections: DEFAULT_MIN_CONNECTIONS,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            acquire_timeout: DEFAULT_ACQUIRE_TIMEOUT,
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
            max_lifetime: Some(DEFAULT_MAX_LIFETIME),
            statement_timeout: None,
        }
    }

    /// A configuration for `service` read from `DATABASE_URL` and the `PROST_DB_*` variables
    /// listed on [`DbConfig`].
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the variable that is missing or malformed.
    pub fn from_env(service: &str) -> Result<Self> {
        Self::from_vars(service, |name| std::env::var(name).ok())
    }

    /// Like [`from_env`](Self::from_env), reading variables through `var` instead of the
    /// process environment.
    ///
    /// ```
    /// use std::collections::HashMap;
    /// use prost_db::DbConfig;
    ///
    /// let vars = HashMap::from([
    ///     ("DATABASE_URL", "postgres://postgres@127.0.0.1/prost"),
    ///     ("PROST_DB_MAX_CONNECTIONS", "8"),
    /// ]);
    /// let config = DbConfig::from_vars("orders", |k| vars.get(k).map(|v| v.to_string()))?;
    /// assert_eq!(config.get_max_connections(), 8);
    /// # Ok::<(), prost_db::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the variable that is missing or malformed.
    pub fn from_vars(service: &str, var: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let url = var("DATABASE_URL").ok_or_else(|| {
            Error::Config(
                "DATABASE_URL is not set; set it to postgres://user[:password]@host:port/database"
                    .into(),
            )
        })?;
        let mut config = Self::new(&url, service)?;
        if let Some(schema) = var("PROST_DB_SCHEMA") {
            config.schema = schema;
        }
        let number = |name: &str| -> Result<Option<u64>> {
            var(name)
                .map(|v| {
                    v.trim().parse::<u64>().map_err(|_| {
                        Error::Config(format!("{name} must be a whole number, got {v:?}"))
                    })
                })
                .transpose()
        };
        let millis = |v: u64| (v > 0).then(|| Duration::from_millis(v));
        if let Some(n) = number("PROST_DB_MIN_CONNECTIONS")? {
            config.min_connections = pool_size("PROST_DB_MIN_CONNECTIONS", n)?;
        }
        if let Some(n) = number("PROST_DB_MAX_CONNECTIONS")? {
            config.max_connections = pool_size("PROST_DB_MAX_CONNECTIONS", n)?;
        }
        if let Some(n) = number("PROST_DB_ACQUIRE_TIMEOUT_MS")? {
            config.acquire_timeout = Duration::from_millis(n);
        }
        if let Some(n) = number("PROST_DB_IDLE_TIMEOUT_MS")? {
            config.idle_timeout = millis(n);
        }
        if let Some(n) = number("PROST_DB_MAX_LIFETIME_MS")? {
            config.max_lifetime = millis(n);
        }
        if let Some(n) = number("PROST_DB_STATEMENT_TIMEOUT_MS")? {
            config.statement_timeout = millis(n);
        }
        if let Some(v) = var("PROST_DB_CREATE_SCHEMA") {
            config.create_schema = match v.trim() {
                "1" | "true" | "yes" => true,
                "0" | "false" | "no" => false,
                _ => {
                    return Err(Error::Config(format!(
                        "PROST_DB_CREATE_SCHEMA must be true or false, got {v:?}"
                    )));
                }
            };
        }
        Ok(config)
    }

    /// Use `schema` instead of the service name as the service's schema.
    #[must_use]
    pub fn schema(mut self, schema: &str) -> Self {
        self.schema = schema.to_owned();
        self
    }

    /// Create the schema at connect time if it does not exist (needs `CREATE` on the
    /// database). Off by default: a missing schema usually means migrations did not run.
    #[must_use]
    pub fn create_schema(mut self, create: bool) -> Self {
        self.create_schema = create;
        self
    }

    /// Connections the pool keeps open (default 5).
    #[must_use]
    pub fn min_connections(mut self, n: u32) -> Self {
        self.min_connections = n;
        self
    }

    /// Upper bound of the pool (default 25).
    #[must_use]
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = n;
        self
    }

    /// How long [`Db::acquire`] and [`Db::begin`] wait for a free connection (default 30 s).
    #[must_use]
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// Close connections idle for longer than this, down to `min_connections` (default 10 min).
    #[must_use]
    pub fn idle_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.idle_timeout = timeout.into();
        self
    }

    /// Replace connections older than this (default 30 min).
    #[must_use]
    pub fn max_lifetime(mut self, lifetime: impl Into<Option<Duration>>) -> Self {
        self.max_lifetime = lifetime.into();
        self
    }

    /// Server-side `statement_timeout` for every connection of the pool (default none).
    #[must_use]
    pub fn statement_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.statement_timeout = timeout.into();
        self
    }

    /// The service name.
    pub fn service_name(&self) -> &str {
        &self.service
    }

    /// The schema the service's connections use.
    pub fn schema_name(&self) -> &str {
        &self.schema
    }

    /// The configured maximum pool size.
    pub fn get_max_connections(&self) -> u32 {
        self.max_connections
    }

    /// The sqlx connect options (host, port, credentials), without the pool settings.
    pub fn connect_options(&self) -> &PgConnectOptions {
        &self.connect
    }

    fn target(&self) -> Target {
        Target {
            host: self.connect.get_host().to_owned(),
            port: self.connect.get_port(),
            database: self
                .connect
                .get_database()
                .unwrap_or(self.connect.get_username())
                .to_owned(),
            user: self.connect.get_username().to_owned(),
        }
    }
}

impl fmt::Debug for DbConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let target = self.target();
        f.debug_struct("DbConfig")
            .field("host", &target.host)
            .field("port", &target.port)
            .field("database", &target.database)
            .field("user", &target.user)
            .field("password", &"<redacted>")
            .field("service", &self.service)
            .field("schema", &self.schema)
            .field("create_schema", &self.create_schema)
            .field("min_connections", &self.min_connections)
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("max_lifetime", &self.max_lifetime)
            .field("statement_timeout", &self.statement_timeout)
            .finish()
    }
}

fn pool_size(name: &str, n: u64) -> Result<u32> {
    u32::try_from(n)
        .map_err(|_| Error::Config(format!("{name} must be at most {}, got {n}", u32::MAX)))
}

#[derive(Debug, Clone)]
struct Target {
    host: String,
    port: u16,
    database: String,
    user: String,
}

impl Target {
    fn connect_error(&self, source: sqlx::Error) -> Error {
        Error::Connect {
            host: self.host.clone(),
            port: self.port,
            database: self.database.clone(),
            user: self.user.clone(),
            source,
        }
    }
}

/// A schema-isolated connection pool for one service.
///
/// Every connection of the pool has `search_path` set to the service's schema when it is
/// opened (as a startup parameter, so it costs no round trip and cannot be lost by a
/// `SET` on one connection), and [`Db::connect`] checks `current_schema()` before returning.
/// Cloning a `Db` is cheap and shares the pool.
///
/// ```no_run
/// use prost_db::{Db, DbConfig};
///
/// # async fn run() -> Result<(), prost_db::Error> {
/// let db = Db::connect(DbConfig::from_env("catalog")?).await?;
/// // Unqualified names resolve in the `catalog` schema.
/// sqlx::query("CREATE TABLE IF NOT EXISTS products (id BIGINT PRIMARY KEY)")
///     .execute(db.pool())
///     .await?;
/// assert_eq!(db.current_schema().await?, "catalog");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Db {
    pool: PgPool,
    service: Identifier,
    schema: Identifier,
    target: std::sync::Arc<Target>,
    acquire_timeout: Duration,
}

impl Db {
    /// Opens the pool, after validating the service and schema names, and verifies that the
    /// schema exists and is the connection's `current_schema()`.
    ///
    /// # Errors
    ///
    /// - [`Error::InvalidIdentifier`] for a bad service or schema name (nothing is sent to
    ///   the server);
    /// - [`Error::Connect`] if the server cannot be reached (names host and port, never the
    ///   password);
    /// - [`Error::SchemaMissing`] if the schema does not exist and `create_schema` is off.
    #[tracing::instrument(name = "prost_db.connect", skip_all, fields(service = %config.service, schema = %config.schema))]
    pub async fn connect(config: DbConfig) -> Result<Db> {
        let service = Identifier::new(IdentifierKind::Service, &config.service)?;
        let schema = Identifier::new(IdentifierKind::Schema, &config.schema)?;
        let target = config.target();

        let mut options = config
            .connect
            .clone()
            .application_name(service.as_str())
            .options([("search_path", schema.as_str())]);
        if let Some(timeout) = config.statement_timeout {
            options = options.options([("statement_timeout", timeout.as_millis())]);
        }

        if config.create_schema {
            create_schema_if_missing(&config.connect, &schema, &target).await?;
        }

        let pool = PgPoolOptions::new()
            .min_connections(config.min_connections.min(config.max_connections))
            .max_connections(config.max_connections)
            .acquire_timeout(config.acquire_timeout)
            .idle_timeout(config.idle_timeout)
            .max_lifetime(config.max_lifetime)
            .connect_with(options)
            .await
            .map_err(|e| target.connect_error(e))?;

        let db = Db {
            pool,
            service,
            schema,
            target: std::sync::Arc::new(target),
            acquire_timeout: config.acquire_timeout,
        };
        db.verify_schema().await?;
        tracing::debug!("connected");
        Ok(db)
    }

    /// Checks that a connection from the pool is in the configured schema.
    ///
    /// # Errors
    ///
    /// [`Error::SchemaMissing`] or [`Error::SchemaMismatch`].
    pub async fn verify_schema(&self) -> Result<()> {
        let actual = self.current_schema().await?;
        if actual == self.schema.as_str() {
            Ok(())
        } else {
            Err(Error::SchemaMismatch {
                service: self.service.as_str().to_owned(),
                expected: self.schema.as_str().to_owned(),
                actual,
            })
        }
    }

    /// The underlying sqlx pool; queries through it run in the service's schema.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The service name, as recorded in `idempotency_records.service_name`.
    pub fn service(&self) -> &str {
        self.service.as_str()
    }

    /// The service's schema.
    pub fn schema(&self) -> &str {
        self.schema.as_str()
    }

    /// The service's schema as a validated identifier, for building SQL.
    pub fn schema_ident(&self) -> &Identifier {
        &self.schema
    }

    /// The database name this pool connects to.
    pub fn database(&self) -> &str {
        &self.target.database
    }

    /// Starts a transaction on a pooled connection.
    ///
    /// ```no_run
    /// # async fn run(db: prost_db::Db) -> Result<(), prost_db::Error> {
    /// let mut tx = db.begin().await?;
    /// sqlx::query("UPDATE products SET stock = stock - 1 WHERE id = $1")
    ///     .bind(7_i64)
    ///     .execute(&mut *tx)
    ///     .await?;
    /// tx.commit().await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::PoolTimedOut`] if no connection became free in time, or [`Error::Connect`].
    pub async fn begin(&self) -> Result<Transaction<'static, Postgres>> {
        self.pool.begin().await.map_err(|e| self.map_err(e))
    }

    /// Takes a connection from the pool.
    ///
    /// ```no_run
    /// # async fn run(db: prost_db::Db) -> Result<(), prost_db::Error> {
    /// let mut conn = db.acquire().await?;
    /// let n: i64 = sqlx::query_scalar("SELECT count(*) FROM products")
    ///     .fetch_one(&mut *conn)
    ///     .await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::PoolTimedOut`] if no connection became free in time, or [`Error::Connect`].
    pub async fn acquire(&self) -> Result<sqlx::pool::PoolConnection<Postgres>> {
        self.pool.acquire().await.map_err(|e| self.map_err(e))
    }

    /// A cheap liveness check: one `SELECT current_schema()` round trip.
    ///
    /// ```no_run
    /// # async fn run(db: prost_db::Db) -> Result<(), prost_db::Error> {
    /// let health = db.health().await?;
    /// println!("{:?}, {} of {} connections idle", health.latency, health.pool.idle, health.pool.size);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// The connection error, or [`Error::SchemaMissing`] if the schema was dropped.
    pub async fn health(&self) -> Result<Health> {
        let started = Instant::now();
        self.verify_schema().await?;
        Ok(Health {
            latency: started.elapsed(),
            pool: self.stats(),
        })
    }

    /// The pool's current size and idle count.
    pub fn stats(&self) -> PoolStats {
        PoolStats {
            size: self.pool.size(),
            idle: self.pool.num_idle(),
            max: self.pool.options().get_max_connections(),
            min: self.pool.options().get_min_connections(),
        }
    }

    /// Closes every connection; in-flight queries finish first.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Maps a driver error to the crate's error, naming the server for connection failures.
    pub(crate) fn map_err(&self, error: sqlx::Error) -> Error {
        match error {
            sqlx::Error::PoolTimedOut => Error::PoolTimedOut(self.acquire_timeout),
            e @ (sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::PoolClosed) => {
                self.target.connect_error(e)
            }
            e => Error::Database(e),
        }
    }
}

impl fmt::Debug for Db {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Db")
            .field("service", &self.service.as_str())
            .field("schema", &self.schema.as_str())
            .field("host", &self.target.host)
            .field("port", &self.target.port)
            .field("database", &self.target.database)
            .field("user", &self.target.user)
            .field("stats", &self.stats())
            .finish()
    }
}

/// Only a failure to connect is an [`Error::Connect`]; a refused `CREATE SCHEMA` (no
/// `CREATE` privilege on the database) is the server's error, not a reachability problem.
async fn create_schema_if_missing(
    connect: &PgConnectOptions,
    schema: &Identifier,
    target: &Target,
) -> Result<()> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect_with(connect)
        .await
        .map_err(|e| target.connect_error(e))?;
    let sql = format!("CREATE SCHEMA IF NOT EXISTS {schema}");
    let result = sqlx::query(sqlx::AssertSqlSafe(sql))
        .execute(&mut conn)
        .await;
    // Two services created at once can both miss the schema and race on the catalog.
    let result = match result {
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("23505") => Ok(()),
        other => other.map(drop),
    };
    conn.close().await.ok();
    result.map_err(Error::Database)
}

/// The result of [`Db::health`].
#[derive(Debug, Clone, Copy)]
pub struct Health {
    /// Round-trip time of the check.
    pub latency: Duration,
    /// Pool statistics at the time of the check.
    pub pool: PoolStats,
}

/// Pool statistics, from [`Db::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// Open connections, busy or idle.
    pub size: u32,
    /// Idle connections.
    pub idle: usize,
    /// Configured maximum.
    pub max: u32,
    /// Configured minimum.
    pub min: u32,
}
