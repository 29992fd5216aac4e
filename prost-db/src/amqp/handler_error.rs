//! How a handler failed: worth retrying, or never going to work.

use std::error::Error as StdError;
use std::fmt;

type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// Why a delivery's handler failed, as the consumer acts on it: retry later (transient) or
/// dead-letter now (permanent). An `#[idempotent_handler]` returns
/// [`idempotency::HandlerError`](crate::idempotency::HandlerError), which converts into this.
///
/// Conversions from [`crate::Error`] and [`sqlx::Error`] classify by cause: lost connections,
/// pool timeouts, serialization failures, deadlocks, lock and statement timeouts and server
/// shutdowns are transient; everything else (constraint violations, bad SQL, bad data) is
/// permanent.
///
/// ```
/// use prost_db::amqp::DeliveryError;
///
/// let e = DeliveryError::from(sqlx::Error::PoolTimedOut);
/// assert!(e.is_transient());
/// let e = DeliveryError::permanent("unknown product 42");
/// assert!(!e.is_transient());
/// assert_eq!(e.to_string(), "permanent: unknown product 42");
/// ```
#[derive(Debug)]
pub enum DeliveryError {
    /// May succeed later (database down, lock timeout): retried with delay.
    Transient(BoxError),
    /// Will never succeed: dead-lettered at once.
    Permanent(BoxError),
}

impl DeliveryError {
    /// A transient failure.
    ///
    /// ```
    /// assert!(prost_db::amqp::DeliveryError::transient("busy").is_transient());
    /// ```
    pub fn transient(error: impl Into<BoxError>) -> Self {
        DeliveryError::Transient(error.into())
    }

    /// A permanent failure.
    ///
    /// ```
    /// assert!(!prost_db::amqp::DeliveryError::permanent("bad sku").is_transient());
    /// ```
    pub fn permanent(error: impl Into<BoxError>) -> Self {
        DeliveryError::Permanent(error.into())
    }

    /// Whether a retry may succeed.
    ///
    /// ```
    /// assert!(prost_db::amqp::DeliveryError::transient("x").is_transient());
    /// ```
    pub fn is_transient(&self) -> bool {
        matches!(self, DeliveryError::Transient(_))
    }
}

impl fmt::Display for DeliveryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeliveryError::Transient(e) => write!(f, "transient: {e}"),
            DeliveryError::Permanent(e) => write!(f, "permanent: {e}"),
        }
    }
}

impl StdError for DeliveryError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            DeliveryError::Transient(e) | DeliveryError::Permanent(e) => Some(&**e),
        }
    }
}

/// Whether a driver error may go away on retry.
pub(crate) fn sqlx_is_transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(e) => e.code().is_some_and(|code| sqlstate_is_transient(&code)),
        _ => false,
    }
}

fn sqlstate_is_transient(code: &str) -> bool {
    code.starts_with("08") // connection exception
        || code.starts_with("53") // insufficient resources (too many connections, ...)
        || code.starts_with("57P") // admin shutdown, crash shutdown, cannot connect now
        || matches!(
            code,
            "40001" // serialization_failure
            | "40P01" // deadlock_detected
            | "55P03" // lock_not_available (lock_timeout)
            | "57014" // query_canceled (statement_timeout)
        )
}

impl From<sqlx::Error> for DeliveryError {
    fn from(error: sqlx::Error) -> Self {
        if sqlx_is_transient(&error) {
            DeliveryError::Transient(error.into())
        } else {
            DeliveryError::Permanent(error.into())
        }
    }
}

impl From<crate::Error> for DeliveryError {
    fn from(error: crate::Error) -> Self {
        let transient = match &error {
            crate::Error::Connect { .. } | crate::Error::PoolTimedOut(_) => true,
            crate::Error::Database(e) => sqlx_is_transient(e),
            _ => false,
        };
        if transient {
            DeliveryError::Transient(error.into())
        } else {
            DeliveryError::Permanent(error.into())
        }
    }
}

/// An idempotent handler's error, classified as the idempotency runtime prescribes:
/// [`Failed`](crate::idempotency::HandlerError::Failed) (rolled back) and transient
/// database errors are retried; permanent errors, payload mismatches and undecodable
/// stored results are dead-lettered.
///
/// ```
/// use prost_db::amqp::DeliveryError;
/// use prost_db::idempotency::HandlerError as IdempotencyError;
///
/// let mismatch: IdempotencyError<std::io::Error> = IdempotencyError::PayloadMismatch {
///     event_id: "e1".into(),
///     action: "reserve".into(),
/// };
/// assert!(!DeliveryError::from(mismatch).is_transient());
/// ```
impl<E> From<crate::idempotency::HandlerError<E>> for DeliveryError
where
    E: StdError + Send + Sync + 'static,
{
    fn from(error: crate::idempotency::HandlerError<E>) -> Self {
        if error.should_retry() {
            DeliveryError::Transient(error.into())
        } else {
            DeliveryError::Permanent(error.into())
        }
    }
}

impl From<serde_json::Error> for DeliveryError {
    fn from(error: serde_json::Error) -> Self {
        DeliveryError::Permanent(error.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_are_classified() {
        for code in [
            "08006", "40001", "40P01", "55P03", "57P01", "57014", "53300",
        ] {
            assert!(sqlstate_is_transient(code), "{code}");
        }
        for code in ["23505", "23514", "42P01", "22P02"] {
            assert!(!sqlstate_is_transient(code), "{code}");
        }
    }
}
