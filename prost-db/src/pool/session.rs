//! Session state of pooled connections: the reset before each hand-out and the one `BEGIN`.

use std::time::Duration;

use sqlx::postgres::PgPool;
use sqlx::{AssertSqlSafe, Postgres, Transaction};

use crate::error::{Error, Origin, Result, pg_timeout_millis};
use crate::pooler::{Pooled, failed_schema_check};

/// The statements that return a session to the service's defaults: whatever the previous user
/// of the connection `SET` (a `search_path`, a `statement_timeout`, a `ROLE`), the next one
/// starts from the startup parameters [`Db::connect`](crate::Db::connect) sent (and the role's
/// and database's defaults below them). `RESET ALL` leaves `role` alone; `SET SESSION
/// AUTHORIZATION DEFAULT` resets it, and is allowed for any login role since it names the role
/// that logged in.
pub(crate) const RESTORE_SESSION: &str = "SET SESSION AUTHORIZATION DEFAULT; RESET ALL";

/// A `BEGIN` path pings a connection before use only if it sat idle this long: sqlx pings
/// every connection as it goes back to the pool, so one used a moment ago is known alive.
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(1);

tokio::task_local! {
    /// Set while a `BEGIN` path acquires: its statement restores the session itself.
    static RESTORES_ITSELF: ();
}

/// What the pool runs on an idle connection before handing it out. A `BEGIN` path
/// ([`begin_on`]) restores the session in its own statement, so it only pings a connection
/// idle for longer than [`PING_IF_IDLE_FOR`]; any other hand-out (`Db::acquire`, a
/// statement through `Db::pool()`) gets [`RESTORE_SESSION`] in the round trip sqlx would
/// spend on its liveness ping, and a connection that fails it is replaced.
pub(super) async fn before_acquire(
    conn: &mut sqlx::PgConnection,
    idle_for: Duration,
) -> sqlx::Result<bool> {
    if RESTORES_ITSELF.try_with(|_| ()).is_ok() {
        if idle_for >= PING_IF_IDLE_FOR {
            sqlx::Connection::ping(conn).await?;
        }
    } else {
        sqlx::raw_sql(RESTORE_SESSION).execute(conn).await?;
    }
    Ok(true)
}

/// The statement that starts a transaction for [`Db::begin`](crate::Db::begin) (`None`) and for the
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
    let mut sql = opening(begin, pooled, Scope::Transaction);
    if let Some(millis) = lock_millis {
        sql.push_str(&format!("; SET LOCAL lock_timeout = {millis}"));
    }
    Ok(sql)
}

/// How long the settings of an opening statement last.
#[derive(Clone, Copy)]
enum Scope {
    /// `SET LOCAL`: until the transaction ends ([`begin_statement`]).
    Transaction,
    /// `SET`: for the session, across every `COMMIT AND CHAIN` ([`chained_statement`]).
    Session,
}

/// The opening both `BEGIN` paths share: `begin` and the session restored; behind a pooler,
/// the reset and the schema check first, then `begin` and the pooler's statement timeout
/// set in `scope`.
fn opening(begin: &str, pooled: Option<&Pooled>, scope: Scope) -> String {
    let Some(pooled) = pooled else {
        return format!("{begin}; {RESTORE_SESSION}");
    };
    let mut sql = format!("{RESTORE_SESSION}; ");
    if let Some(check) = &pooled.schema_check {
        sql.push_str(check);
        sql.push_str("; ");
    }
    sql.push_str(begin);
    if let Some(millis) = pooled.statement_timeout {
        let set = match scope {
            Scope::Transaction => "SET LOCAL",
            Scope::Session => "SET",
        };
        sql.push_str(&format!("; {set} statement_timeout = {millis}"));
    }
    sql
}

/// Starts a transaction on a connection of `pool` with [`begin_statement`].
///
/// # Errors
///
/// [`Error::SettingOutOfRange`] before anything is sent; the mapped driver error otherwise.
pub(super) async fn begin_on(
    pool: &PgPool,
    lock_timeout: Option<Duration>,
    pooled: Option<&Pooled>,
) -> std::result::Result<Transaction<'static, Postgres>, BeginError> {
    let statement = begin_statement(lock_timeout, pooled).map_err(BeginError::Refused)?;
    // The only values in it are integers the program computed and the validated schema name.
    RESTORES_ITSELF
        .scope((), pool.begin_with(AssertSqlSafe(statement)))
        .await
        .map_err(|e| match failed_schema_check(&e) {
            Some(actual) => BeginError::WrongSchema(actual),
            None => BeginError::Refused(Error::from_sqlx(e, Origin::Pool(pool))),
        })
}

/// The statement that opens a chained slot
/// ([`HandlerMode::Chained`](crate::idempotency::HandlerMode::Chained)), in one round trip:
/// the session restored, `lock_timeout` set for the session and committed (so that it
/// survives every `COMMIT AND CHAIN`), and the first READ COMMITTED transaction chained on:
///
/// - `BEGIN ISOLATION LEVEL READ COMMITTED; SET SESSION AUTHORIZATION DEFAULT; RESET ALL;
///   SET lock_timeout = <ms>; COMMIT AND CHAIN`
///
/// Behind a transaction pooler (`pooled`), as in [`begin_statement`], the reset and the
/// schema check come first, in the implicit transaction of the same query, so a failed check
/// leaves no transaction open; the statement timeout is a session setting too (the slot
/// pins its server connection for as long as it is kept, and `SET LOCAL` would end with the
/// first chain):
///
/// - `SET SESSION AUTHORIZATION DEFAULT; RESET ALL; DO <check>; BEGIN ISOLATION LEVEL READ
///   COMMITTED[; SET statement_timeout = <ms>]; SET lock_timeout = <ms>; COMMIT AND CHAIN`
///
/// # Errors
///
/// [`Error::SettingOutOfRange`] for a timeout beyond PostgreSQL's range.
pub(crate) fn chained_statement(lock_timeout: Duration, pooled: Option<&Pooled>) -> Result<String> {
    let millis = pg_timeout_millis("lock_timeout", lock_timeout)?.max(1);
    let begin = "BEGIN ISOLATION LEVEL READ COMMITTED";
    let mut sql = opening(begin, pooled, Scope::Session);
    sql.push_str(&format!("; SET lock_timeout = {millis}; COMMIT AND CHAIN"));
    Ok(sql)
}

/// The chained slot's opening statement ([`chained_statement`]) on a connection of `pool`
/// ([`begin_chained`](super::begin_chained)).
pub(super) async fn begin_chained_on(
    pool: &PgPool,
    lock_timeout: Duration,
    pooled: Option<&Pooled>,
) -> std::result::Result<Transaction<'static, Postgres>, BeginError> {
    let statement = chained_statement(lock_timeout, pooled).map_err(BeginError::Refused)?;
    // The only values in it are integers the program computed and the validated schema name.
    RESTORES_ITSELF
        .scope((), pool.begin_with(AssertSqlSafe(statement)))
        .await
        .map_err(|e| match failed_schema_check(&e) {
            Some(actual) => BeginError::WrongSchema(actual),
            None => BeginError::Refused(Error::from_sqlx(e, Origin::Pool(pool))),
        })
}

/// Why [`begin_on`] failed.
pub(super) enum BeginError {
    /// The schema check found the transaction in this schema instead of the service's.
    WrongSchema(String),
    /// Anything else.
    Refused(Error),
}
