//! The [`Db`] handle: opening the pool in the service's schema and handing out connections.

use std::fmt;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Postgres, Transaction};

use super::DbConfig;
use super::session::{BeginError, before_acquire, begin_on};
use crate::error::{Error, Origin, Result, Server};
use crate::idempotency::{Chains, HandlerMode};
use crate::ident::{Identifier, IdentifierKind};
use crate::pooler::{self, Pooled, Pooler, schema_check};

/// Opens a chained slot's transaction
/// ([`HandlerMode::Chained`](crate::idempotency::HandlerMode::Chained)) with the one
/// opening statement ([`chained_statement`](super::session::chained_statement)): behind a
/// transaction pooler it checks the schema as [`begin`] does.
///
/// # Errors
///
/// [`Error::SettingOutOfRange`](crate::Error::SettingOutOfRange) before anything is sent;
/// [`Error::SchemaMismatch`]; the mapped driver error otherwise.
pub(crate) async fn begin_chained(
    db: &Db,
    lock_timeout: Duration,
) -> Result<Transaction<'static, Postgres>> {
    super::session::begin_chained_on(&db.pool, lock_timeout, db.pooled.as_deref())
        .await
        .map_err(|e| db.begin_error(e))
}

/// Starts a transaction on a connection of `db`'s pool with the one `BEGIN` statement
/// ([`begin_statement`](super::session::begin_statement)): [`Db::begin`] with `None`, the
/// idempotent handler with its `lock_timeout`.
///
/// # Errors
///
/// [`Error::SettingOutOfRange`] before anything is sent; the mapped driver error otherwise.
pub(crate) async fn begin(
    db: &Db,
    lock_timeout: Option<Duration>,
) -> Result<Transaction<'static, Postgres>> {
    begin_on(&db.pool, lock_timeout, db.pooled.as_deref())
        .await
        .map_err(|e| db.begin_error(e))
}

/// A schema-isolated connection pool for one service.
///
/// Every connection of the pool has `search_path` set to the service's schema when it is
/// opened (as a startup parameter, so it costs no round trip), and [`Db::connect`] checks
/// `current_schema()` before returning. Cloning a `Db` is cheap and shares the pool.
///
/// # Session state
///
/// Every user of a pooled connection starts from the session it was opened with, whatever
/// the last user did with `SET`: `SET SESSION AUTHORIZATION DEFAULT; RESET ALL` runs before
/// it gets the connection, at no round trip of its own. [`Db::begin`] and the idempotent
/// handler send it in their `BEGIN` query; [`Db::acquire`] and every statement through
/// [`Db::pool`] get it from the pool, in the round trip sqlx would spend pinging the idle
/// connection. So `search_path`, `statement_timeout` ([`DbConfig::statement_timeout`] is
/// restored, a `SET` is not), `lock_timeout`, `ROLE` and every other parameter a handler
/// body, a migration script or a raw query changes last only until its connection is
/// released. A `SET` holds for the rest of its transaction, or of the acquired connection
/// it was made on. What is not a parameter survives: session advisory locks, temporary
/// tables, prepared statements, `LISTEN`. sqlx's `try_acquire` skips the pool's checks, and
/// with them the reset.
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
    pub(super) pool: PgPool,
    service: Identifier,
    schema: Identifier,
    server: std::sync::Arc<Server>,
    pooled: Option<std::sync::Arc<Pooled>>,
    chains: std::sync::Arc<Chains>,
}

impl Db {
    /// Opens the pool, after validating the service and schema names, and verifies that the
    /// schema exists and is the connection's `current_schema()`.
    ///
    /// # Errors
    ///
    /// - [`Error::InvalidIdentifier`] for a bad service or schema name, and
    ///   [`Error::SettingOutOfRange`] for a statement timeout PostgreSQL cannot hold
    ///   (nothing is sent to the server);
    /// - [`Error::Connect`] if the server cannot be reached (names host and port, never the
    ///   password);
    /// - [`Error::SchemaMissing`] if the schema does not exist and `create_schema` is off;
    /// - [`Error::PoolerDetected`] if, configured for a direct connection
    ///   ([`Pooler::None`], the default), it finds a pooler that refuses the startup
    ///   `options` or drops them (their `search_path` is not the client's); with
    ///   [`Pooler::Auto`] it connects as for [`Pooler::Transaction`] instead, and fails so
    ///   only if the login role's default `search_path` is not the schema.
    #[tracing::instrument(name = "prost_db.connect", skip_all, fields(service = %config.service, schema = %config.schema))]
    pub async fn connect(config: DbConfig) -> Result<Db> {
        match config.pooler {
            Pooler::None => Db::open(config, false).await,
            Pooler::Transaction => Db::open(config, true).await,
            Pooler::Auto => match Db::open(config.clone(), false).await {
                Err(Error::PoolerDetected { evidence, .. }) => {
                    tracing::info!(%evidence, "a transaction pooler is in the way: connecting as Pooler::Transaction");
                    let (connect, schema) = (config.connect.clone(), config.schema.clone());
                    Db::open(config, true).await.map_err(|e| match e {
                        Error::SchemaMismatch { actual, .. } => pooler::detected(
                            &connect,
                            &schema,
                            true,
                            format!(
                                "{evidence}; without it, the login role's default search_path \
                                 puts the connection in schema {actual:?}"
                            ),
                        ),
                        other => other,
                    })
                }
                other => other,
            },
        }
    }

    /// Opens the pool as for a direct connection (the schema in the startup `options`) or,
    /// with `transaction`, as behind a transaction pooler; a direct one fails with
    /// [`Error::PoolerDetected`] if a pooler refuses or drops the `options`.
    async fn open(config: DbConfig, transaction: bool) -> Result<Db> {
        let service = Identifier::new(IdentifierKind::Service, &config.service)?;
        let schema = Identifier::new(IdentifierKind::Schema, &config.schema)?;
        let statement_timeout = config.checked_statement_timeout()?;

        let mut options = config.connect.clone().application_name(service.as_str());
        let pooled = if transaction {
            // No startup `options` (PgBouncer refuses them), and no named prepared
            // statements: a server connection is the client's only within a transaction.
            options = options.statement_cache_capacity(0);
            Some(std::sync::Arc::new(Pooled {
                schema_check: config.schema_check.then(|| schema_check(&schema)),
                statement_timeout,
                migrate: config.migrate.clone(),
                config: Box::new(config.clone()),
            }))
        } else {
            options = options.options([("search_path", schema.as_str())]);
            if let Some(millis) = statement_timeout {
                options = options.options([("statement_timeout", millis)]);
            }
            None
        };

        if config.create_schema {
            create_schema_if_missing(&config.connect, &schema).await?;
        }

        let pool = PgPoolOptions::new()
            .min_connections(config.min_connections.min(config.max_connections))
            .max_connections(config.max_connections)
            .acquire_timeout(config.acquire_timeout)
            .idle_timeout(config.idle_timeout)
            .max_lifetime(config.max_lifetime)
            // `before_acquire` pings or resets, which answers like a ping.
            .test_before_acquire(false)
            .before_acquire(|conn, meta| Box::pin(before_acquire(conn, meta.idle_for)))
            .connect_with(options.clone())
            .await
            .map_err(|e| match e.as_database_error() {
                Some(db) if !transaction && pooler::options_refused(&e) => pooler::detected(
                    &config.connect,
                    schema.as_str(),
                    false,
                    format!(
                        "it refused the startup parameter `options` ({})",
                        db.message()
                    ),
                ),
                _ => Error::from_sqlx(e, Origin::Connecting(&options)),
            })?;
        if !transaction {
            let probe = pooler::probe(&pool)
                .await
                .map_err(|e| Error::from_sqlx(e, Origin::Pool(&pool)))?;
            if let Some(evidence) = probe.dropped_options() {
                pool.close().await;
                return Err(pooler::detected(
                    &config.connect,
                    schema.as_str(),
                    false,
                    evidence,
                ));
            }
            if let Some(port) = probe.forwarded_from(config.connect.get_port()) {
                tracing::info!(
                    server_port = port,
                    "PostgreSQL listens on another port than the one connected to: a proxy or a \
                     session pooler forwards the connection"
                );
            }
        }

        let db = Db {
            pool,
            service,
            schema,
            server: std::sync::Arc::new(Server::of(&config.connect)),
            pooled,
            chains: Chains::new(config.handler_mode, config.chained_idle),
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
        &self.server.database
    }

    /// Starts a transaction on a pooled connection, in the session's default isolation
    /// level, with the session restored to the service's defaults (`BEGIN; SET SESSION
    /// AUTHORIZATION DEFAULT; RESET ALL`, one query).
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
        begin(self, None).await
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

    /// Closes every connection; in-flight queries finish first.
    ///
    /// Chained handler connections ([`HandlerMode::Chained`]) are given back first, idle
    /// ones at once and busy ones when their run ends.
    pub async fn close(&self) {
        self.chains.close();
        self.pool.close().await;
    }

    /// A failed `BEGIN` path's error: [`Error::SchemaMismatch`] for a failed schema check.
    fn begin_error(&self, error: BeginError) -> Error {
        match error {
            BeginError::WrongSchema(actual) => Error::SchemaMismatch {
                service: self.service.as_str().to_owned(),
                expected: self.schema.as_str().to_owned(),
                actual,
            },
            BeginError::Refused(e) => e,
        }
    }

    /// Maps a driver error met on this pool or one of its connections to the crate's error
    /// ([`Error::from_sqlx`]), naming the server for connection failures.
    pub(crate) fn map_err(&self, error: sqlx::Error) -> Error {
        Error::from_sqlx(error, Origin::Pool(&self.pool))
    }

    /// The `Db` the migrator runs on: `None` for this one (a direct connection); behind a
    /// transaction pooler, a small pool over the direct [`DbConfig::migrate_url`], in the
    /// same schema.
    ///
    /// # Errors
    ///
    /// [`MigrateError::ThroughPooler`](crate::migrate::MigrateError::ThroughPooler) without
    /// a migrate URL; as [`Db::connect`] for the direct connection.
    pub(crate) async fn for_migrations(&self) -> Result<Option<Db>> {
        let Some(pooled) = &self.pooled else {
            return Ok(None);
        };
        let Some(direct) = &pooled.migrate else {
            return Err(crate::migrate::MigrateError::ThroughPooler {
                schema: self.schema.as_str().to_owned(),
            }
            .into());
        };
        let mut config = (*pooled.config).clone();
        // The service's database, whatever the migrate URL names.
        config.connect = direct.clone().database(&self.server.database);
        config.pooler = Pooler::None;
        config.migrate = None;
        let config = config.min_connections(0).max_connections(2);
        Db::connect(config).await.map(Some)
    }

    /// The `Db` the framework's tables are installed on (`IdempotencyStore::install`,
    /// `outbox::install`): behind a transaction pooler with a [`DbConfig::migrate_url`], the
    /// migrator's direct one, as the role that owns the tables the migrations made; else
    /// `None`, this one.
    ///
    /// # Errors
    ///
    /// As [`Db::connect`] for the direct connection.
    pub(crate) async fn for_installs(&self) -> Result<Option<Db>> {
        match &self.pooled {
            Some(pooled) if pooled.migrate.is_some() => self.for_migrations().await,
            _ => Ok(None),
        }
    }

    /// Whether statements may be named prepared statements, which sqlx caches per
    /// connection: not behind a transaction pooler, where the next transaction of the same
    /// client connection may run on another server connection. [`Db::statements`] turns
    /// it into the kind every statement of the crate is built with.
    pub(crate) fn prepares(&self) -> bool {
        self.pooled.is_none()
    }

    /// The server this pool connects to, for errors on connections taken from it.
    pub(crate) fn server(&self) -> &std::sync::Arc<Server> {
        &self.server
    }

    /// The kept connections of [`HandlerMode::Chained`].
    pub(crate) fn chains(&self) -> &std::sync::Arc<Chains> {
        &self.chains
    }

    /// How many chained handler connections ([`HandlerMode::Chained`]) sit idle, kept for
    /// the next run; `0` in [`HandlerMode::Transaction`].
    ///
    /// ```no_run
    /// # fn f(db: &prost_db::Db) {
    /// println!("{} chained connections kept", db.chained_idle());
    /// # }
    /// ```
    pub fn chained_idle(&self) -> usize {
        self.chains.idle_count()
    }

    /// The idempotent handlers' [`HandlerMode`].
    ///
    /// ```no_run
    /// # fn f(db: &prost_db::Db) {
    /// println!("handlers run in {} mode", db.handler_mode());
    /// # }
    /// ```
    pub fn handler_mode(&self) -> HandlerMode {
        self.chains.mode()
    }
}

impl fmt::Debug for Db {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Db")
            .field("service", &self.service.as_str())
            .field("schema", &self.schema.as_str())
            .field("host", &self.server.host)
            .field("port", &self.server.port)
            .field("database", &self.server.database)
            .field("user", &self.server.user)
            .field("stats", &self.stats())
            .finish()
    }
}

/// Only a failure to connect is an [`Error::Connect`]; a refused `CREATE SCHEMA` (no
/// `CREATE` privilege on the database) is the server's error, not a reachability problem.
async fn create_schema_if_missing(connect: &PgConnectOptions, schema: &Identifier) -> Result<()> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect_with(connect)
        .await
        .map_err(|e| Error::from_sqlx(e, Origin::Connecting(connect)))?;
    let sql = format!("CREATE SCHEMA IF NOT EXISTS {schema}");
    // The simple protocol: one message, which holds through a transaction pooler too.
    let result = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
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
