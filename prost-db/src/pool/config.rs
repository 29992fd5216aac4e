//! How a service connects: [`DbConfig`], its builders, getters and environment variables.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;

use crate::error::{Error, Result, Server, pg_timeout_millis};
use crate::idempotency::{CHAINED_IDLE, HandlerMode};
use crate::pooler::Pooler;

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
/// | `PROST_DB_HANDLER_MODE` | idempotent handlers' [`HandlerMode`]: `transaction` or `chained` | `transaction` |
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
    pub(super) connect: PgConnectOptions,
    pub(super) service: String,
    pub(super) schema: String,
    pub(super) create_schema: bool,
    pub(super) min_connections: u32,
    pub(super) max_connections: u32,
    pub(super) acquire_timeout: Duration,
    pub(super) idle_timeout: Option<Duration>,
    pub(super) max_lifetime: Option<Duration>,
    pub(super) statement_timeout: Option<Duration>,
    pub(super) pooler: Pooler,
    pub(super) schema_check: bool,
    pub(super) migrate: Option<PgConnectOptions>,
    pub(super) handler_mode: HandlerMode,
    pub(super) chained_idle: Duration,
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
            handler_mode: HandlerMode::Transaction,
            chained_idle: CHAINED_IDLE,
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
        if let Some(v) = var("PROST_DB_HANDLER_MODE") {
            config.handler_mode = v.parse().map_err(|_| {
                Error::Config(format!(
                    "PROST_DB_HANDLER_MODE must be transaction or chained, got {v:?}"
                ))
            })?;
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

    /// How long [`Db::acquire`](super::Db::acquire) and [`Db::begin`](super::Db::begin) wait
    /// for a free connection (default 30 s).
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
    /// [`Db::connect`](super::Db::connect) rejects a longer one.
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
    pub(super) fn checked_statement_timeout(&self) -> Result<Option<u32>> {
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
            .field("handler_mode", &self.handler_mode)
            .finish()
    }
}

fn pool_size(name: &str, n: u64) -> Result<u32> {
    u32::try_from(n)
        .map_err(|_| Error::Config(format!("{name} must be at most {}, got {n}", u32::MAX)))
}
