//! Running behind a connection pooler in transaction mode (PgBouncer): how a service finds
//! its schema there, and the check that every transaction runs in it.

use sqlx::postgres::PgConnectOptions;

use crate::DbConfig;
use crate::error::Error;
use crate::ident::Identifier;

/// What sits between the service and PostgreSQL, set with
/// [`DbConfig::pooler`](crate::DbConfig::pooler) or `PROST_DB_POOLER`.
///
/// Behind [`Pooler::Transaction`] (PgBouncer's `pool_mode = transaction`), a client holds
/// a server connection only for one transaction, and pooled server connections are shared
/// by every client of the same database and user. So [`Db::connect`](crate::Db::connect):
///
/// - sends no startup `options` (PgBouncer refuses them): the schema comes from the login
///   role's default `search_path` (`ALTER ROLE <role> SET search_path = <schema>`, which
///   [`provision_service_role`](crate::provision_service_role) sets), and a configured
///   statement timeout becomes `SET LOCAL statement_timeout` in the `BEGIN` paths;
/// - checks `current_schema()` inside every transaction that [`Db::begin`](crate::Db::begin)
///   and the idempotent handler start, in their `BEGIN` query (no extra round trip), and in
///   chained mode's opening of each kept connection, and fails it with
///   [`Error::SchemaMismatch`] before any statement of the caller runs;
/// - sends every statement of the crate unnamed ([`Db::statements`](crate::Db::statements)),
///   and those outside a transaction in one of their own
///   ([`Db::autocommit`](crate::Db::autocommit));
/// - makes the migrator refuse to run unless a direct URL is configured
///   ([`DbConfig::migrate_url`](crate::DbConfig::migrate_url)): its session advisory lock
///   and session `SET`s need a server connection of their own.
///
/// Under [`Pooler::None`], `Db::connect` fails with [`Error::PoolerDetected`] when a pooler
/// refuses or drops the startup `options`; [`Pooler::Auto`] connects as
/// [`Pooler::Transaction`] then.
///
/// ```
/// use prost_db::{DbConfig, Pooler};
///
/// let config = DbConfig::new("postgres://catalog_svc@pgbouncer.internal:6432/prost", "catalog")?
///     .pooler(Pooler::Transaction);
/// assert_eq!(config.get_pooler(), Pooler::Transaction);
/// # Ok::<(), prost_db::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Pooler {
    /// A direct connection to PostgreSQL, or a pooler in session mode (the default): the
    /// schema travels as `-c search_path=<schema>` in the startup packet.
    #[default]
    None,
    /// A pooler in transaction mode, such as PgBouncer's `pool_mode = transaction`.
    Transaction,
    /// Detect it: connect as for [`Pooler::None`], and if a pooler refuses the startup
    /// `options` or drops them, connect again as for [`Pooler::Transaction`] (logged at
    /// `info`), which then needs the login role's default `search_path` to be the schema.
    Auto,
}

impl Pooler {
    /// Parses `PROST_DB_POOLER`: `none`, `transaction` or `auto`.
    ///
    /// ```
    /// use prost_db::Pooler;
    ///
    /// assert_eq!(Pooler::parse("transaction")?, Pooler::Transaction);
    /// assert!(Pooler::parse("statement").is_err());
    /// # Ok::<(), prost_db::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the accepted values.
    pub fn parse(value: &str) -> Result<Pooler, Error> {
        match value.trim() {
            "none" | "" => Ok(Pooler::None),
            "transaction" => Ok(Pooler::Transaction),
            "auto" => Ok(Pooler::Auto),
            other => Err(Error::Config(format!(
                "PROST_DB_POOLER must be `none`, `transaction` or `auto`, got {other:?}"
            ))),
        }
    }
}

/// What a [`Db`](crate::Db) behind [`Pooler::Transaction`] adds to its `BEGIN` paths and
/// migrations.
#[derive(Debug)]
pub(crate) struct Pooled {
    /// The schema check ([`schema_check`]), unless turned off.
    pub(crate) schema_check: Option<String>,
    /// The configured statement timeout, which cannot travel as a startup parameter.
    pub(crate) statement_timeout: Option<u32>,
    /// The direct URL the migrator uses.
    pub(crate) migrate: Option<PgConnectOptions>,
    /// The configuration the pool was opened with, for the migrator's direct `Db`.
    pub(crate) config: Box<DbConfig>,
}

/// Whether `error` is a pooler refusing the startup parameter `options` (PgBouncer:
/// `unsupported startup parameter: options`).
pub(crate) fn options_refused(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .is_some_and(|e| e.message().contains("unsupported startup parameter"))
}

/// What a connection opened with the schema in its startup `options` reports, read by
/// [`probe`].
#[derive(Debug)]
pub(crate) struct Probe {
    /// `current_schema()`.
    schema: Option<String>,
    /// `search_path` and where its value came from (`client` when `options` arrived).
    search_path: String,
    source: String,
    /// `inet_server_port()`: the port PostgreSQL listens on.
    server_port: Option<i32>,
}

/// The one round trip that tells whether the startup `options` reached PostgreSQL (the
/// simple protocol: it holds through any pooler).
pub(crate) async fn probe(pool: &sqlx::PgPool) -> sqlx::Result<Probe> {
    use sqlx::Row;
    let row = sqlx::raw_sql(
        "SELECT current_schema()::text, current_setting('search_path'), \
         (SELECT source FROM pg_catalog.pg_settings WHERE name = 'search_path'), \
         inet_server_port()",
    )
    .fetch_one(pool)
    .await?;
    Ok(Probe {
        schema: row.try_get(0)?,
        search_path: row.try_get(1)?,
        source: row.try_get::<Option<String>, _>(2)?.unwrap_or_default(),
        server_port: row.try_get(3)?,
    })
}

impl Probe {
    /// Why this connection shows a pooler that dropped `options`, if it does.
    pub(crate) fn dropped_options(&self) -> Option<String> {
        (self.source != "client").then(|| {
            let port = match self.server_port {
                Some(port) => format!(" (PostgreSQL behind it listens on port {port})"),
                None => String::new(),
            };
            format!(
                "it dropped the startup parameter `options` (PgBouncer's \
                 `ignore_startup_parameters = options`){port}: the connection's search_path \
                 {:?} comes from the {} default, not from the client, and puts it in schema {:?}",
                self.search_path,
                if self.source.is_empty() {
                    "server's"
                } else {
                    &self.source
                },
                self.schema.as_deref().unwrap_or(""),
            )
        })
    }

    /// PostgreSQL's port, when it is not the one connected to: something forwards the
    /// connection (a pooler in session mode, a proxy); logged, not an error.
    pub(crate) fn forwarded_from(&self, port: u16) -> Option<i32> {
        self.server_port.filter(|p| *p != i32::from(port))
    }
}

/// The error for a pooler found in the way ([`Error::PoolerDetected`]) on a connection to
/// `connect` for `schema`; `auto` when [`Pooler::Auto`] could not get through it either.
pub(crate) fn detected(
    connect: &PgConnectOptions,
    schema: &str,
    auto: bool,
    evidence: String,
) -> Error {
    let user = connect.get_username().to_owned();
    let setting = if auto {
        format!(
            "give the login role its schema as default search_path (provision_service_role, \
             or ALTER ROLE \"{user}\" SET search_path = {schema}), or connect straight to \
             PostgreSQL"
        )
    } else {
        format!(
            "set DbConfig::pooler(Pooler::Transaction) (PROST_DB_POOLER=transaction) or \
             Pooler::Auto (PROST_DB_POOLER=auto), and give the login role {user:?} schema \
             {schema:?} as default search_path (provision_service_role); or connect straight \
             to PostgreSQL"
        )
    };
    Error::PoolerDetected {
        host: connect.get_host().to_owned(),
        port: connect.get_port(),
        user,
        evidence,
        setting,
    }
}

/// The message of the error the schema check raises; its `DETAIL` is the schema found.
/// It goes into a string literal: no quotes in it.
const SCHEMA_CHECK_FAILED: &str = "prost-db: the transaction is not in the schema of the service";

/// The statement, appended to a `BEGIN` query, that fails the transaction unless
/// `current_schema()` is `schema`. The name is a validated identifier (lower-case ASCII
/// letters, digits and `_`), so it needs no escaping inside the literal.
pub(crate) fn schema_check(schema: &Identifier) -> String {
    format!(
        "DO $prost_db_schema$ BEGIN IF current_schema() IS DISTINCT FROM '{schema}' THEN \
         RAISE EXCEPTION '{SCHEMA_CHECK_FAILED}' USING ERRCODE = '3F000', \
         DETAIL = coalesce(current_schema(), ''); END IF; END $prost_db_schema$",
        schema = schema.as_str()
    )
}

/// The schema a failed [`schema_check`] found, if `error` is that failure.
pub(crate) fn failed_schema_check(error: &sqlx::Error) -> Option<String> {
    let db = error.as_database_error()?;
    if db.message() != SCHEMA_CHECK_FAILED {
        return None;
    }
    let pg = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>()?;
    Some(pg.detail().unwrap_or_default().to_owned())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use super::{Pooled, Pooler, schema_check};
    use crate::ident::{Identifier, IdentifierKind};
    use crate::pool::{begin_statement, chained_statement};
    use crate::{DbConfig, Error};

    fn pooled(check: bool, statement_timeout: Option<u32>) -> Pooled {
        let schema = Identifier::new(IdentifierKind::Schema, "catalog").unwrap();
        Pooled {
            schema_check: check.then(|| schema_check(&schema)),
            statement_timeout,
            migrate: None,
            config: Box::new(DbConfig::new("postgres://localhost/prost", "catalog").unwrap()),
        }
    }

    #[test]
    fn the_pooled_begin_restores_and_checks_before_it_begins() {
        let sql = begin_statement(
            Some(Duration::from_millis(250)),
            Some(&pooled(true, Some(5000))),
        )
        .unwrap();
        let restore = sql.find("RESET ALL").unwrap();
        let check = sql
            .find("current_schema() IS DISTINCT FROM 'catalog'")
            .unwrap();
        let begin = sql.find("BEGIN ISOLATION LEVEL READ COMMITTED").unwrap();
        assert!(restore < check && check < begin, "{sql}");
        assert!(
            sql.ends_with("; SET LOCAL statement_timeout = 5000; SET LOCAL lock_timeout = 250"),
            "{sql}"
        );
        let unchecked = begin_statement(None, Some(&pooled(false, None))).unwrap();
        assert_eq!(
            unchecked,
            "SET SESSION AUTHORIZATION DEFAULT; RESET ALL; BEGIN"
        );
        // A direct connection's BEGIN is as before.
        assert_eq!(
            begin_statement(None, None).unwrap(),
            "BEGIN; SET SESSION AUTHORIZATION DEFAULT; RESET ALL"
        );
    }

    #[test]
    fn the_pooled_chained_opening_checks_before_it_begins_and_sets_session_timeouts() {
        let sql =
            chained_statement(Duration::from_millis(250), Some(&pooled(true, Some(5000)))).unwrap();
        let check = sql
            .find("current_schema() IS DISTINCT FROM 'catalog'")
            .unwrap();
        let begin = sql.find("BEGIN ISOLATION LEVEL READ COMMITTED").unwrap();
        assert!(
            sql.starts_with("SET SESSION AUTHORIZATION DEFAULT; RESET ALL; DO "),
            "{sql}"
        );
        assert!(check < begin, "{sql}");
        assert!(
            sql.ends_with(
                "; SET statement_timeout = 5000; SET lock_timeout = 250; COMMIT AND CHAIN"
            ),
            "{sql}"
        );
        // A direct connection's opening is as before.
        assert_eq!(
            chained_statement(Duration::from_millis(250), None).unwrap(),
            "BEGIN ISOLATION LEVEL READ COMMITTED; SET SESSION AUTHORIZATION DEFAULT; RESET ALL; \
             SET lock_timeout = 250; COMMIT AND CHAIN"
        );
    }

    #[test]
    fn the_pooler_and_the_migrate_url_come_from_the_environment() {
        let vars = HashMap::from([
            ("DATABASE_URL", "postgres://svc@127.0.0.1:6432/prost"),
            ("PROST_DB_POOLER", "transaction"),
            (
                "PROST_DB_MIGRATE_URL",
                "postgres://deployer:pw@127.0.0.1:5432/prost",
            ),
        ]);
        let config =
            DbConfig::from_vars("catalog", |k| vars.get(k).map(|v| v.to_string())).unwrap();
        assert_eq!(config.get_pooler(), Pooler::Transaction);
        assert_eq!(
            config.get_migrate_connect_options().map(|o| o.get_port()),
            Some(5432)
        );
        assert!(!format!("{config:?}").contains("pw"), "{config:?}");

        let bad = HashMap::from([
            ("DATABASE_URL", "postgres://svc@127.0.0.1:6432/prost"),
            ("PROST_DB_POOLER", "session"),
        ]);
        let err =
            DbConfig::from_vars("catalog", |k| bad.get(k).map(|v| v.to_string())).unwrap_err();
        assert!(
            matches!(&err, Error::Config(m) if m.contains("PROST_DB_POOLER")),
            "{err}"
        );
    }
}
