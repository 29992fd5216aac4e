//! How a handler failed: worth retrying, or never going to work.

use std::error::Error as StdError;
use std::fmt;

type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// A failed handler run, classified for the consumer.
///
/// Conversions from [`crate::Error`] and [`sqlx::Error`] classify by cause, with the crate's
/// one classification, [`Error::is_transient`](crate::Error::is_transient): lost
/// connections, pool timeouts, serialization failures, deadlocks, lock and statement
/// timeouts, server shutdowns, a read-only server and broker errors are transient;
/// everything else (constraint violations, bad SQL, bad data) is permanent.
///
/// ```
/// use prost_db::amqp::HandlerError;
///
/// let e = HandlerError::from(sqlx::Error::PoolTimedOut);
/// assert!(e.is_transient());
/// let e = HandlerError::permanent("unknown product 42");
/// assert!(!e.is_transient());
/// assert_eq!(e.to_string(), "permanent: unknown product 42");
/// ```
#[derive(Debug)]
pub enum HandlerError {
    /// May succeed later (database down, lock timeout): retried with delay.
    Transient(BoxError),
    /// Will never succeed: dead-lettered at once.
    Permanent(BoxError),
}

impl HandlerError {
    /// A transient failure.
    ///
    /// ```
    /// assert!(prost_db::amqp::HandlerError::transient("busy").is_transient());
    /// ```
    pub fn transient(error: impl Into<BoxError>) -> Self {
        HandlerError::Transient(error.into())
    }

    /// A permanent failure.
    ///
    /// ```
    /// assert!(!prost_db::amqp::HandlerError::permanent("bad sku").is_transient());
    /// ```
    pub fn permanent(error: impl Into<BoxError>) -> Self {
        HandlerError::Permanent(error.into())
    }

    /// Whether a retry may succeed.
    ///
    /// ```
    /// assert!(prost_db::amqp::HandlerError::transient("x").is_transient());
    /// ```
    pub fn is_transient(&self) -> bool {
        matches!(self, HandlerError::Transient(_))
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandlerError::Transient(e) => write!(f, "transient: {e}"),
            HandlerError::Permanent(e) => write!(f, "permanent: {e}"),
        }
    }
}

impl StdError for HandlerError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            HandlerError::Transient(e) | HandlerError::Permanent(e) => Some(&**e),
        }
    }
}

impl From<sqlx::Error> for HandlerError {
    fn from(error: sqlx::Error) -> Self {
        if crate::error::sqlx_error_is_transient(&error) {
            HandlerError::Transient(error.into())
        } else {
            HandlerError::Permanent(error.into())
        }
    }
}

impl From<crate::Error> for HandlerError {
    fn from(error: crate::Error) -> Self {
        if error.is_transient() {
            HandlerError::Transient(error.into())
        } else {
            HandlerError::Permanent(error.into())
        }
    }
}

/// An idempotent handler's error, classified as the idempotency runtime prescribes:
/// [`Failed`](crate::idempotency::HandlerError::Failed) (rolled back) and transient
/// database errors are retried; permanent errors, payload mismatches and undecodable
/// stored results are dead-lettered.
///
/// ```
/// use prost_db::amqp::HandlerError;
/// use prost_db::idempotency::HandlerError as IdempotencyError;
///
/// let mismatch: IdempotencyError<std::io::Error> = IdempotencyError::PayloadMismatch {
///     event_id: "e1".into(),
///     action: "reserve".into(),
/// };
/// assert!(!HandlerError::from(mismatch).is_transient());
/// ```
impl<E> From<crate::idempotency::HandlerError<E>> for HandlerError
where
    E: StdError + Send + Sync + 'static,
{
    fn from(error: crate::idempotency::HandlerError<E>) -> Self {
        if error.should_retry() {
            HandlerError::Transient(error.into())
        } else {
            HandlerError::Permanent(error.into())
        }
    }
}

impl From<serde_json::Error> for HandlerError {
    fn from(error: serde_json::Error) -> Self {
        HandlerError::Permanent(error.into())
    }
}
