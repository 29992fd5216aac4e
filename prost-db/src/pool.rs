//! The connection manager: a pool bound to one service and its schema.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Postgres, Transaction};

use crate::error::{Error, Origin, Result, Server, pg_timeout_millis};
use crate::ident::{Identifier, IdentifierKind};
use crate::pooler::{Pooler, failed_schema_check, schema_check};

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
/// | `PROST_DB_POOLER` | `transaction` behind PgBouncer in transaction mode ([`Pooler`]) | `none` |
/// | `PROST_DB_MIGRATE_URL` | a direct URL for the migrator behind a pooler | none |
///
/// Builders are named after the setting (`max_connections(n)`), and reading a setting back
/// is `get_` and the same name (`get_max_connections()`), as on sqlx's own option types.
///
/// ```
/// use std::time::Duration;
/// use prost_db::DbConfig;
///
/// let config = DbConfig::new("postgres://app:secret@db.internal:5432/prost", "catalog")?
///     .max_connections(10)
///     .statement_timeout(Duration::from_secs(5));
/// assert_eq!(config.get_schema(), "catalog");
/// assert_eq!(config.get_max_connections(), 10);
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
    pooler: Pooler,
    schema_check: bool,
    migrate: Option<PgConnectOptions>,
}

impl DbConfig {
    /// Default minimum number of pooled connections (the seed's "5-25 connections").
    ///
    /// ```
    /// assert_eq!(prost_db::DbConfig::DEFAULT_MIN_CONNECTIONS, 5);
    /// ```
    pub const DEFAULT_MIN_CONNECTIONS: u32 = 5;
    /// Default maximum number of pooled connections.
    ///
    /// ```
    /// assert_eq!(prost_db::DbConfig::DEFAULT_MAX_CONNECTIONS, 25);
    /// ```
    pub const DEFAULT_MAX_CONNECTIONS: u32 = 25;
    /// Default time to wait for a free connection.
    ///
    /// ```
    /// # use std::time::Duration;
    /// assert_eq!(prost_db::DbConfig::DEFAULT_ACQUIRE_TIMEOUT, Duration::from_secs(30));
    /// ```
    pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);
    /// Default time after which an idle connection above `min_connections` is closed.
    ///
    /// ```
    /// # use std::time::Duration;
    /// assert_eq!(prost_db::DbConfig::DEFAULT_IDLE_TIMEOUT, Duration::from_secs(600));
    /// ```
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(600);
    /// Default maximum age of a connection.
    ///
    /// ```
    /// # use std::time::Duration;
    /// assert_eq!(prost_db::DbConfig::DEFAULT_MAX_LIFETIME, Duration::from_secs(1800));
    /// ```
    pub const DEFAULT_MAX_LIFETIME: Duration = Duration::from_secs(1800);

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
    ///
    /// ```
    /// use sqlx::postgres::PgConnectOptions;
    ///
    /// let options = PgConnectOptions::new().host("db.internal").database("prost");
    /// let config = prost_db::DbConfig::from_connect_options(options, "orders");
    /// assert_eq!(config.get_service(), "orders");
    /// ```
    pub fn from_connect_options(connect: PgConnectOptions, service: &str) -> Self {
        DbConfig {
            connect,
            service: service.to_owned(),
            schema: service.to_owned(),
            create_schema: false,
            min_connections: Self::DEFAULT_MIN_CONNECTIONS,
            max_connections: Self::DEFAULT_MAX_CONNECTIONS,
            acquire_timeout: Self::DEFAULT_ACQUIRE_TIMEOUT,
            idle_timeout: Some(Self::DEFAULT_IDLE_TIMEOUT),
            max_lifetime: Some(Self::DEFAULT_MAX_LIFETIME),
            statement_timeout: None,
            pooler: Pooler::None,
            schema_check: true,
            migrate: None,
        }
    }

    /// A configuration for `service` read from `DATABASE_URL` and the `PROST_DB_*` variables
    /// listed on [`DbConfig`].
    ///
    /// ```no_run
    /// let config = prost_db::DbConfig::from_env("catalog")?;
    /// # Ok::<(), prost_db::Error>(())
    /// ```
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
    /// [`Error::Config`] naming the variable that is missing or malformed;
    /// [`Error::SettingOutOfRange`] for a statement timeout PostgreSQL cannot hold.
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
            config.checked_statement_timeout()?;
        }
        if let Some(v) = var("PROST_DB_POOLER") {
            config.pooler = Pooler::parse(&v)?;
        }
        if let Some(url) = var("PROST_DB_MIGRATE_URL") {
            config = config.migrate_url(&url).map_err(|_| {
                Error::Config(
                    "PROST_DB_MIGRATE_URL is not a valid PostgreSQL URL; expected postgres://user[:password]@host:port/database"
                        .into(),
                )
            })?;
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
    ///
    /// ```
    /// let config = prost_db::DbConfig::new("postgres://localhost/prost", "catalog")?.schema("catalog_v2");
    /// assert_eq!(config.get_schema(), "catalog_v2");
    /// # Ok::<(), prost_db::Error>(())
    /// ```
    #[must_use]
    pub fn schema(mut self, schema: &str) -> Self {
        self.schema = schema.to_owned();
        self
    }

    /// Create the schema at connect time if it does not exist (needs `CREATE` on the
    /// database). Off by default: a missing schema usually means migrations did not run.
    ///
    /// ```
    /// let config = prost_db::DbConfig::new("postgres://localhost/prost", "catalog")?.create_schema(true);
    /// # Ok::<(), prost_db::Error>(())
    /// ```
    #[must_use]
    pub fn create_schema(mut self, create: bool) -> Self {
        self.create_schema = create;
        self
    }

    /// Connections the pool keeps open (default 5).
    ///
    /// ```
    /// let config = prost_db::DbConfig::new("postgres://localhost/prost", "catalog")?.min_connections(1);
    /// # Ok::<(), prost_db::Error>(())
    /// ```
    #[must_use]
    pub fn min_connections(mut self, n: u32) -> Self {
        self.min_connections = n;
        self
    }

    /// Upper bound of the pool (default 25).
    ///
    /// ```
    /// let config = prost_db::DbConfig::new("postgres://localhost/prost", "catalog")?.max_connections(50);
    /// assert_eq!(config.get_max_connections(), 50);
    /// # Ok::<(), prost_db::Error>(())
    /// ```
    #[must_use]
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = n;
        self
    }

    /// How long [`Db::acquire`] and [`Db::begin`] wait for a free connection (default 30 s).
    ///
    /// ```
    /// # use std::time::Duration;
    /// let config = prost_db::DbConfig::new("postgres://localhost/prost", "catalog")?
    ///     .acquire_timeout(Duration::from_secs(5));
    /// # Ok::<(), prost_db::Error>(())
    /// ```
    #[must_use]
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// Close connections idle for longer than this, down to `min_connections` (default 10 min).
    ///
    /// ```
    /// # use std::time::Duration;
    /// let config = prost_db::DbConfig::new("postgres://localhost/prost", "catalog")?
    ///     .idle_timeout(None);
    /// # Ok::<(), prost_db::Error>(())
    /// ```
    #[must_use]
    pub fn idle_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.idle_timeout = timeout.into();
        self
    }

    /// Replace connections older than this (default 30 min).
    ///
    /// ```
    /// # use std::time::Duration;
    /// let config = prost_db::DbConfig::new("postgres://localhost/prost", "catalog")?
    ///     .max_lifetime(Duration::from_secs(3600));
    /// # Ok::<(), prost_db::Error>(())
    /// ```
    #[must_use]
    pub fn max_lifetime(mut self, lifetime: impl Into<Option<Duration>>) -> Self {
        self.max_lifetime = lifetime.into();
        self
    }

    /// Server-side `statement_timeout` for every connection of the pool (default none),
    /// sent as a startup parameter: it is the session's default, which every user of a
    /// pooled connection starts from. At most 2147483647 ms, PostgreSQL's limit:
    /// [`Db::connect`] rejects a longer one.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let config = prost_db::DbConfig::new("postgres://localhost/prost", "catalog")?
    ///     .statement_timeout(Duration::from_secs(5));
    /// assert_eq!(config.get_statement_timeout(), Some(Duration::from_secs(5)));
    /// # Ok::<(), prost_db::Error>(())
    /// ```
    #[must_use]
    pub fn statement_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.statement_timeout = timeout.into();
        self
    }

    /// What sits between the service and PostgreSQL (default [`Pooler::None`]); behind
    /// PgBouncer in transaction mode, [`Pooler::Transaction`] binds the schema through the
    /// login role's default `search_path` and checks it in every transaction (see
    /// [`Pooler`]).
    ///
    /// ```
    /// use prost_db::{DbConfig, Pooler};
    ///
    /// let config = DbConfig::new("postgres://catalog_svc@127.0.0.1:6432/prost", "catalog")?
    ///     .pooler(Pooler::Transaction);
    /// assert_eq!(config.get_pooler(), Pooler::Transaction);
    /// # Ok::<(), prost_db::Error>(())
    /// ```
    #[must_use]
    pub fn pooler(mut self, pooler: Pooler) -> Self {
        self.pooler = pooler;
        self
    }

    /// Behind [`Pooler::Transaction`], whether the `BEGIN` paths check `current_schema()`
    /// (default on). Turning it off lets a transaction run in whatever schema the pooled
    /// server connection's role default gives it: only for measuring what the check costs.
    ///
    /// ```
    /// let config = prost_db::DbConfig::new("postgres://localhost:6432/prost", "catalog")?
    ///     .pooler(prost_db::Pooler::Transaction)
    ///     .schema_check(false);
    /// # Ok::<(), prost_db::Error>(())
    /// ```
    #[must_use]
    pub fn schema_check(mut self, check: bool) -> Self {
        self.schema_check = check;
        self
    }

    /// A direct URL to PostgreSQL (not through the pooler) for the migrator: behind
    /// [`Pooler::Transaction`], [`Migrator`](crate::migrate::Migrator) runs over a
    /// connection to this URL, in the same database and schema, and refuses to run without
    /// one.
    ///
    /// ```
    /// let config = prost_db::DbConfig::new("postgres://svc@pgbouncer:6432/prost", "catalog")?
    ///     .pooler(prost_db::Pooler::Transaction)
    ///     .migrate_url("postgres://deployer@db.internal:5432/prost")?;
    /// assert_eq!(config.get_migrate_connect_options().map(|o| o.get_port()), Some(5432));
    /// # Ok::<(), prost_db::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Config`] if the URL cannot be parsed (the message never repeats the URL).
    pub fn migrate_url(mut self, url: &str) -> Result<Self> {
        let connect = PgConnectOptions::from_str(url).map_err(|_| {
            Error::Config(
                "the migrate URL is not a valid PostgreSQL URL; expected postgres://user[:password]@host:port/database"
                    .into(),
            )
        })?;
        self.migrate = Some(connect);
        Ok(self)
    }

    /// The configured pooler.
    ///
    /// ```
    /// let config = prost_db::DbConfig::new("postgres://localhost/prost", "catalog")?;
    /// assert_eq!(config.get_pooler(), prost_db::Pooler::None);
    /// # Ok::<(), prost_db::Error>(())
    /// ```
    pub fn get_pooler(&self) -> Pooler {
        self.pooler
    }

    /// The connect options of [`migrate_url`](Self::migrate_url), if one is set.
    ///
    /// ```
    /// let config = prost_db::DbConfig::new("postgres://localhost/prost", "catalog")?;
    /// assert!(config.get_migrate_connect_options().is_none());
    /// # Ok::<(), prost_db::Error>(())
    /// ```
    pub fn get_migrate_connect_options(&self) -> Option<&PgConnectOptions> {
        self.migrate.as_ref()
    }

    /// The service name.
    ///
    /// ```
    /// let config = prost_db::DbConfig::new("postgres://localhost/prost", "catalog")?;
    /// assert_eq!(config.get_service(), "catalog");
    /// # Ok::<(), prost_db::Error>(())
    /// ```
    pub fn get_service(&self) -> &str {
        &self.service
    }

    /// The schema the service's connections use.
    ///
    /// ```
    /// let config = prost_db::DbConfig::new("postgres://localhost/prost", "catalog")?;
    /// assert_eq!(config.get_schema(), "catalog");
    /// # Ok::<(), prost_db::Error>(())
    /// ```
    pub fn get_schema(&self) -> &str {
        &self.schema
    }

    /// The configured minimum pool size.
    ///
    /// ```
    /// let config = prost_db::DbConfig::new("postgres://localhost/prost", "catalog")?;
    /// assert_eq!(config.get_min_connections(), prost_db::DbConfig::DEFAULT_MIN_CONNECTIONS);
    /// # Ok::<(), prost_db::Error>(())
    /// ```
    pub fn get_min_connections(&self) -> u32 {
        self.min_connections
    }

    /// The configured maximum pool size.
    ///
    /// ```
    /// let config = prost_db::DbConfig::new("postgres://localhost/prost", "catalog")?;
    /// assert_eq!(config.get_max_connections(), prost_db::DbConfig::DEFAULT_MAX_CONNECTIONS);
    /// # Ok::<(), prost_db::Error>(())
    /// ```
    pub fn get_max_connections(&self) -> u32 {
        self.max_connections
    }

    /// The configured statement timeout.
    ///
    /// ```
    /// let config = prost_db::DbConfig::new("postgres://localhost/prost", "catalog")?;
    /// assert_eq!(config.get_statement_timeout(), None);
    /// # Ok::<(), prost_db::Error>(())
    /// ```
    pub fn get_statement_timeout(&self) -> Option<Duration> {
        self.statement_timeout
    }

    /// The sqlx connect options (host, port, credentials), without the pool settings.
    ///
    /// ```
    /// let config = prost_db::DbConfig::new("postgres://app@db.internal:6432/prost", "catalog")?;
    /// assert_eq!(config.get_connect_options().get_port(), 6432);
    /// # Ok::<(), prost_db::Error>(())
    /// ```
    pub fn get_connect_options(&self) -> &PgConnectOptions {
        &self.connect
    }

    /// The statement timeout in milliseconds, if it is within PostgreSQL's range.
    fn checked_statement_timeout(&self) -> Result<Option<u32>> {
        self.statement_timeout
            .map(|timeout| pg_timeout_millis("statement_timeout", timeout))
            .transpose()
    }
}

impl fmt::Debug for DbConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let target = Server::of(&self.connect);
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
            .field("pooler", &self.pooler)
            .field("schema_check", &self.schema_check)
            .field("migrate", &self.migrate.as_ref().map(Server::of))
            .finish()
    }
}

fn pool_size(name: &str, n: u64) -> Result<u32> {
    u32::try_from(n)
        .map_err(|_| Error::Config(format!("{name} must be at most {}, got {n}", u32::MAX)))
}

/// The statements that return a session to the service's defaults: whatever the previous
/// user of the connection `SET` (a `search_path`, a `statement_timeout`, a `ROLE`), the
/// next one starts from the startup parameters [`Db::connect`] sent (and the role's and
/// database's defaults below them). `RESET ALL` leaves `role` alone; `SET SESSION
/// AUTHORIZATION DEFAULT` resets it, and is allowed for any login role since it names the
/// role that logged in.
pub(crate) const RESTORE_SESSION: &str = "SET SESSION AUTHORIZATION DEFAULT; RESET ALL";

/// A `BEGIN` path pings a connection before use only if it sat idle this long: sqlx pings
/// every connection as it goes back to the pool, so one used a moment ago is known alive.
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(1);

tokio::task_local! {
    /// Set while a `BEGIN` path acquires: its statement restores the session itself.
    static RESTORES_ITSELF: ();
}

/// What the pool runs on an idle connection before handing it out. A `BEGIN` path
/// ([`begin`]) restores the session in its own statement, so it only pings a connection
/// idle for longer than [`PING_IF_IDLE_FOR`]; any other hand-out (`Db::acquire`, a
/// statement through `Db::pool()`) gets [`RESTORE_SESSION`] in the round trip sqlx would
/// spend on its liveness ping, and a connection that fails it is replaced.
async fn before_acquire(conn: &mut sqlx::PgConnection, idle_for: Duration) -> sqlx::Result<bool> {
    if RESTORES_ITSELF.try_with(|_| ()).is_ok() {
        if idle_for >= PING_IF_IDLE_FOR {
            sqlx::Connection::ping(conn).await?;
        }
    } else {
        sqlx::raw_sql(RESTORE_SESSION).execute(conn).await?;
    }
    Ok(true)
}

/// The statement that starts a transaction for [`Db::begin`] (`None`) and for the
/// idempotent handler (its `lock_timeout`): the one place the `BEGIN` paths' text is built.
/// It is one query, so restoring the session and bounding lock waits cost no round trip of
/// their own:
///
/// - `BEGIN; SET SESSION AUTHORIZATION DEFAULT; RESET ALL`
/// - `BEGIN ISOLATION LEVEL READ COMMITTED; SET SESSION AUTHORIZATION DEFAULT; RESET ALL;
///   SET LOCAL lock_timeout = <ms>`
///
/// The reset is part of the transaction: if it rolls back, the connection goes back to the
/// pool as it came, and the next user restores it again (a `BEGIN` path here, anyone else
/// in [`before_acquire`]). `RESET ALL` keeps the isolation level `BEGIN` set.
///
/// Behind a transaction pooler (`pooled`), the reset and the schema check come first, in
/// the implicit transaction of the same query (so on the same server connection): a failed
/// check rolls them back and leaves no transaction open, and `BEGIN` follows with the
/// statement timeout as `SET LOCAL`:
///
/// - `SET SESSION AUTHORIZATION DEFAULT; RESET ALL; DO <check>; BEGIN[ ISOLATION LEVEL READ
///   COMMITTED][; SET LOCAL statement_timeout = <ms>][; SET LOCAL lock_timeout = <ms>]`
///
/// # Errors
///
/// [`Error::SettingOutOfRange`] for a timeout beyond PostgreSQL's range.
pub(crate) fn begin_statement(
    lock_timeout: Option<Duration>,
    pooled: Option<&Pooled>,
) -> Result<String> {
    let lock_millis = lock_timeout
        // `0` would turn the bound off: a zero timeout waits the least PostgreSQL can.
        .map(|timeout| pg_timeout_millis("lock_timeout", timeout).map(|ms| ms.max(1)))
        .transpose()?;
    let begin = match lock_millis {
        None => "BEGIN",
        Some(_) => "BEGIN ISOLATION LEVEL READ COMMITTED",
    };
    let mut sql = match pooled {
        None => format!("{begin}; {RESTORE_SESSION}"),
        Some(pooled) => {
            let mut sql = format!("{RESTORE_SESSION}; ");
            if let Some(check) = &pooled.schema_check {
                sql.push_str(check);
                sql.push_str("; ");
            }
            sql.push_str(begin);
            if let Some(millis) = pooled.statement_timeout {
                sql.push_str(&format!("; SET LOCAL statement_timeout = {millis}"));
            }
            sql
        }
    };
    if let Some(millis) = lock_millis {
        sql.push_str(&format!("; SET LOCAL lock_timeout = {millis}"));
    }
    Ok(sql)
}

/// What a [`Db`] behind [`Pooler::Transaction`] adds to its `BEGIN` paths and migrations.
#[derive(Debug)]
pub(crate) struct Pooled {
    /// The schema check ([`schema_check`]), unless turned off.
    schema_check: Option<String>,
    /// The configured statement timeout, which cannot travel as a startup parameter.
    statement_timeout: Option<u32>,
    /// The direct URL the migrator uses.
    pub(crate) migrate: Option<PgConnectOptions>,
    /// The configuration the pool was opened with, for the migrator's direct `Db`.
    pub(crate) config: Box<DbConfig>,
}

/// Starts a transaction on a connection of `db`'s pool with [`begin_statement`].
///
/// # Errors
///
/// [`Error::SettingOutOfRange`] before anything is sent; the mapped driver error otherwise.
pub(crate) async fn begin(
    db: &Db,
    lock_timeout: Option<Duration>,
) -> Result<Transaction<'static, Postgres>> {
    let statement = begin_statement(lock_timeout, db.pooled.as_deref())?;
    // The only values in it are integers the program computed and the validated schema name.
    RESTORES_ITSELF
        .scope((), db.pool.begin_with(AssertSqlSafe(statement)))
        .await
        .map_err(|e| match failed_schema_check(&e) {
            Some(actual) => Error::SchemaMismatch {
                service: db.service.as_str().to_owned(),
                expected: db.schema.as_str().to_owned(),
                actual,
            },
            None => db.map_err(e),
        })
}

/// Purges delete at most this many rows per statement: each batch is a transaction of its
/// own, so the locks it holds and the WAL it writes stay bounded however much is old.
pub(crate) const PURGE_BATCH_ROWS: i64 = 5_000;

/// Deletes the rows of `table` (schema-qualified, quoted) whose `column` is older than
/// `horizon`, in batches of [`PURGE_BATCH_ROWS`], and returns how many it deleted. The
/// cutoff is fixed once, on the server's clock, so rows that age past the horizon while the
/// purge runs stay for the next one. `table` and `column` are SQL of our own, never input.
pub(crate) async fn purge_in_batches(
    pool: &PgPool,
    table: &str,
    column: &str,
    horizon: Duration,
) -> Result<u64> {
    let map = |e| Error::from_sqlx(e, Origin::Pool(pool));
    let horizon = sqlx::postgres::types::PgInterval::try_from(horizon)
        .map_err(|_| Error::Config(format!("purge horizon {horizon:?} is out of range")))?;
    let cutoff: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("SELECT now() - $1")
        .bind(horizon)
        .fetch_one(pool)
        .await
        .map_err(map)?;
    // A TID scan: the batch's rows are found once and deleted by their physical address.
    let batch = format!(
        "DELETE FROM {table} WHERE ctid = ANY(ARRAY( \
             SELECT ctid FROM {table} WHERE {column} < $1 LIMIT $2))"
    );
    let mut deleted = 0;
    loop {
        let done = sqlx::query(AssertSqlSafe(batch.as_str()))
            .bind(cutoff)
            .bind(PURGE_BATCH_ROWS)
            .execute(pool)
            .await
            .map_err(map)?;
        deleted += done.rows_affected();
        if done.rows_affected() < PURGE_BATCH_ROWS as u64 {
            return Ok(deleted);
        }
    }
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
    pool: PgPool,
    service: Identifier,
    schema: Identifier,
    server: std::sync::Arc<Server>,
    pooled: Option<std::sync::Arc<Pooled>>,
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
    /// - [`Error::SchemaMissing`] if the schema does not exist and `create_schema` is off.
    #[tracing::instrument(name = "prost_db.connect", skip_all, fields(service = %config.service, schema = %config.schema))]
    pub async fn connect(config: DbConfig) -> Result<Db> {
        let service = Identifier::new(IdentifierKind::Service, &config.service)?;
        let schema = Identifier::new(IdentifierKind::Schema, &config.schema)?;
        let statement_timeout = config.checked_statement_timeout()?;

        let mut options = config
            .connect
            .clone()
            .application_name(service.as_str());
        let pooled = match config.pooler {
            Pooler::None => {
                options = options.options([("search_path", schema.as_str())]);
                if let Some(millis) = statement_timeout {
                    options = options.options([("statement_timeout", millis)]);
                }
                None
            }
            // No startup `options` (PgBouncer refuses them), and no named prepared
            // statements: a server connection is the client's only within a transaction.
            Pooler::Transaction => {
                options = options.statement_cache_capacity(0);
                Some(std::sync::Arc::new(Pooled {
                    schema_check: config.schema_check.then(|| schema_check(&schema)),
                    statement_timeout,
                    migrate: config.migrate.clone(),
                    config: Box::new(config.clone()),
                }))
            }
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
            .map_err(|e| Error::from_sqlx(e, Origin::Connecting(&options)))?;

        let db = Db {
            pool,
            service,
            schema,
            server: std::sync::Arc::new(Server::of(&config.connect)),
            pooled,
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

    /// Whether statements may be named prepared statements, which sqlx caches per
    /// connection: not behind a transaction pooler, where the next transaction of the same
    /// client connection may run on another server connection. The crate's own
    /// parameterized statements pass this to `persistent`.
    pub(crate) fn prepares(&self) -> bool {
        self.pooled.is_none()
    }

    /// The server this pool connects to, for errors on connections taken from it.
    pub(crate) fn server(&self) -> &std::sync::Arc<Server> {
        &self.server
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
