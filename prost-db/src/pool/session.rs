//! Session state of pooled connections: the reset before each hand-out and the one `BEGIN`.

use std::time::Duration;

use sqlx::{AssertSqlSafe, Postgres, Transaction};

use super::Db;
use crate::error::{Result, pg_timeout_millis};

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
/// # Errors
///
/// [`Error::SettingOutOfRange`](crate::Error::SettingOutOfRange) for a timeout beyond PostgreSQL's range.
pub(crate) fn begin_statement(lock_timeout: Option<Duration>) -> Result<String> {
    Ok(match lock_timeout {
        None => format!("BEGIN; {RESTORE_SESSION}"),
        Some(timeout) => {
            // `0` would turn the bound off: a zero timeout waits the least PostgreSQL can.
            let millis = pg_timeout_millis("lock_timeout", timeout)?.max(1);
            format!(
                "BEGIN ISOLATION LEVEL READ COMMITTED; {RESTORE_SESSION}; SET LOCAL lock_timeout = {millis}"
            )
        }
    })
}

/// Starts a transaction on a connection of `db`'s pool with [`begin_statement`].
///
/// # Errors
///
/// [`Error::SettingOutOfRange`](crate::Error::SettingOutOfRange) before anything is sent; the mapped driver error otherwise.
pub(crate) async fn begin(
    db: &Db,
    lock_timeout: Option<Duration>,
) -> Result<Transaction<'static, Postgres>> {
    let statement = begin_statement(lock_timeout)?;
    // The only value in it is an integer the program computed, never input.
    RESTORES_ITSELF
        .scope((), db.pool().begin_with(AssertSqlSafe(statement)))
        .await
        .map_err(|e| db.map_err(e))
}

/// Opens a chained slot's transaction
/// ([`HandlerMode::Chained`](crate::idempotency::HandlerMode::Chained)), in one round
/// trip: the session restored, `lock_timeout` set for the session and committed (so that
/// it survives every `COMMIT AND CHAIN`), and the first READ COMMITTED transaction chained
/// on: `BEGIN ISOLATION LEVEL READ COMMITTED; SET SESSION AUTHORIZATION DEFAULT; RESET ALL;
/// SET lock_timeout = <ms>; COMMIT AND CHAIN`.
///
/// # Errors
///
/// [`Error::SettingOutOfRange`](crate::Error::SettingOutOfRange) before anything is sent;
/// the mapped driver error otherwise.
pub(crate) async fn begin_chained(
    db: &Db,
    lock_timeout: Duration,
) -> Result<Transaction<'static, Postgres>> {
    let millis = pg_timeout_millis("lock_timeout", lock_timeout)?.max(1);
    let statement = format!(
        "BEGIN ISOLATION LEVEL READ COMMITTED; {RESTORE_SESSION}; SET lock_timeout = {millis}; COMMIT AND CHAIN"
    );
    // The only value in it is an integer the program computed, never input.
    RESTORES_ITSELF
        .scope((), db.pool().begin_with(AssertSqlSafe(statement)))
        .await
        .map_err(|e| db.map_err(e))
}
