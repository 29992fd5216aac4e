//! The one classification of what is worth retrying: [`Error::is_transient`].

use super::Error;

impl Error {
    /// Whether the same operation may succeed if retried later: the one classification
    /// that [`idempotency::HandlerError`](crate::idempotency::HandlerError) and the
    /// consumer's handler errors use.
    ///
    /// Transient: a failure to connect ([`Connect`](Self::Connect)), a pool timeout, an
    /// idempotency record purged while it was read, RabbitMQ errors and unconfirmed
    /// publishes, and these driver errors: I/O, TLS, protocol, pool closed, and the
    /// SQLSTATEs of a lost or refused connection (class `08`), a server short of resources
    /// (class `53`), shutting down or restarting (class `57P`), a serialization failure
    /// (`40001`), a deadlock (`40P01`), a statement whose completion is unknown (`40003`),
    /// a lock timeout (`55P03`), a cancelled statement or statement timeout (`57014`), and
    /// a write on a read-only server (`25006`, an old primary after a failover). Everything
    /// else (constraint violations, bad SQL, bad data, configuration) is permanent.
    ///
    /// ```
    /// use std::time::Duration;
    /// use prost_db::Error;
    ///
    /// assert!(Error::PoolTimedOut(Duration::from_secs(30)).is_transient());
    /// assert!(Error::Database(sqlx::Error::PoolClosed).is_transient());
    /// assert!(!Error::Database(sqlx::Error::RowNotFound).is_transient());
    /// assert!(!Error::Config("bad".into()).is_transient());
    /// ```
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Connect { .. }
            | Error::PoolTimedOut(_)
            | Error::IdempotencyRecordVanished { .. }
            | Error::PublishNotConfirmed { .. } => true,
            #[cfg(feature = "amqp")]
            Error::Amqp(_) | Error::AmqpConnect { .. } => true,
            Error::Database(error) => sqlx_error_is_transient(error),
            _ => false,
        }
    }
}

/// Whether a driver error may go away on retry; see [`Error::is_transient`].
pub(crate) fn sqlx_error_is_transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(e) => e.code().is_some_and(|code| sqlstate_is_transient(&code)),
        _ => false,
    }
}

/// Whether a SQLSTATE names a condition that may clear by itself.
pub(super) fn sqlstate_is_transient(code: &str) -> bool {
    code.starts_with("08") // connection exception
        || code.starts_with("53") // insufficient resources: too many connections, disk full, out of memory
        || code.starts_with("57P") // admin or crash shutdown, cannot connect now, ...
        || matches!(
            code,
            "25006" // read_only_sql_transaction: a write reached a standby (after a failover)
            | "40001" // serialization_failure
            | "40003" // statement_completion_unknown
            | "40P01" // deadlock_detected
            | "55P03" // lock_not_available: lock_timeout
            | "57014" // query_canceled: statement_timeout
        )
}
