//! The migration session: the dedicated connection one operation runs its scripts on,
//! opened with the migrator's settings and closed afterwards, so nothing a script sets
//! reaches the service's pool.

use std::ops::{Deref, DerefMut};
use std::time::Duration;

use sqlx::Connection;
use sqlx::postgres::PgConnection;

use super::migrator::Run;
use super::settings::millis;
use crate::Error;

/// A connection of its own for one migrator operation.
///
/// Its settings are startup parameters, so `RESET ALL` (sent before every script) returns
/// to them: `search_path` is the schema, `statement_timeout` and `lock_timeout` are the
/// migrator's, whatever the service's pool uses. They come after the `Db`'s own startup
/// parameters, and PostgreSQL applies the last value given.
pub(super) struct Session {
    conn: PgConnection,
}

impl Session {
    /// Connects with the `Db`'s connect options (host, credentials, `application_name`)
    /// and the migrator's settings, and learns the backend pid for the lock watch.
    pub(super) async fn open(run: &mut Run<'_>) -> Result<Session, Error> {
        let server_ms = |setting, value: Option<Duration>| -> Result<String, Error> {
            Ok(value
                .map(|d| millis(setting, d))
                .transpose()?
                .unwrap_or(0)
                .to_string())
        };
        let options = (*run.pool.connect_options()).clone().options([
            ("search_path", run.schema.as_str().to_owned()),
            (
                "statement_timeout",
                server_ms("statement_timeout", run.migrator.statement_timeout)?,
            ),
            (
                "lock_timeout",
                server_ms("ddl_lock_timeout", run.migrator.ddl_lock_timeout)?,
            ),
        ]);
        let mut conn = PgConnection::connect_with(&options).await?;
        run.queries += 1;
        let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut conn)
            .await?;
        run.session_pid = Some(pid);
        Ok(Session { conn })
    }

    /// Releases the session-scoped migration lock, if the run took it, and closes the
    /// connection. If the unlock fails the connection is dropped instead, which ends the
    /// session on the server and the lock with it.
    pub(super) async fn close(mut self, run: &mut Run<'_>) {
        run.session_pid = None;
        if run.session_locked {
            run.session_locked = false;
            if run.release_session_lock(&mut self.conn).await.is_err() {
                return;
            }
        }
        self.conn.close().await.ok();
    }
}

impl Deref for Session {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        &self.conn
    }
}

impl DerefMut for Session {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.conn
    }
}
