//! The settings for running at scale: behind a connection pooler, and the handlers' mode.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;

use super::DbConfig;
use crate::error::{Error, Result};
use crate::idempotency::HandlerMode;
use crate::pooler::Pooler;

impl DbConfig {
    /// How idempotent handlers get their transaction: [`HandlerMode::Transaction`] (the
    /// default) or [`HandlerMode::Chained`]; see [`HandlerMode`] for what each sends.
    ///
    /// ```
    /// use prost_db::idempotency::HandlerMode;
    /// let config = prost_db::DbConfig::new("postgres://localhost/prost", "catalog")?
    ///     .handler_mode(HandlerMode::Chained);
    /// assert_eq!(config.get_handler_mode(), HandlerMode::Chained);
    /// # Ok::<(), prost_db::Error>(())
    /// ```
    #[must_use]
    pub fn handler_mode(mut self, mode: HandlerMode) -> Self {
        self.handler_mode = mode;
        self
    }

    /// In [`HandlerMode::Chained`], how long a kept connection may sit idle before it goes
    /// back to the pool ([`CHAINED_IDLE`](crate::idempotency::CHAINED_IDLE) by default).
    ///
    /// ```
    /// # use std::time::Duration;
    /// let config = prost_db::DbConfig::new("postgres://localhost/prost", "catalog")?
    ///     .chained_idle(Duration::from_secs(1));
    /// assert_eq!(config.get_chained_idle(), Duration::from_secs(1));
    /// # Ok::<(), prost_db::Error>(())
    /// ```
    #[must_use]
    pub fn chained_idle(mut self, idle: Duration) -> Self {
        self.chained_idle = idle;
        self
    }

    /// The configured handler mode.
    ///
    /// ```
    /// let config = prost_db::DbConfig::new("postgres://localhost/prost", "catalog")?;
    /// assert_eq!(config.get_handler_mode(), prost_db::idempotency::HandlerMode::Transaction);
    /// # Ok::<(), prost_db::Error>(())
    /// ```
    pub fn get_handler_mode(&self) -> HandlerMode {
        self.handler_mode
    }

    /// The configured idle period of chained connections.
    ///
    /// ```
    /// let config = prost_db::DbConfig::new("postgres://localhost/prost", "catalog")?;
    /// assert_eq!(config.get_chained_idle(), prost_db::idempotency::CHAINED_IDLE);
    /// # Ok::<(), prost_db::Error>(())
    /// ```
    pub fn get_chained_idle(&self) -> Duration {
        self.chained_idle
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
}
