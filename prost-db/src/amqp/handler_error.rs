//! How a handler failed: worth retrying, or never going to work.

use std::error::Error as StdError;
use std::fmt;

type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// Why a delivery's handler failed, as the consumer acts on it: retry later (transient) or
/// dead-letter now (permanent). An `#[idempotent_handler]` returns
/// [`idempotency::HandlerError`](crate::idempotency::HandlerError), which converts into this.
///
/// Conversions from [`crate::Error`] and [`sqlx::Error`] classify by cause, with the crate's
/// one classification, [`Error::is_transient`](crate::Error::is_transient): lost
/// connections, pool timeouts, serialization failures, deadlocks, lock and statement
/// timeouts, server shutdowns, a read-only server and broker errors are transient;
/// everything else (constraint violations, bad SQL, bad data) is permanent.
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

impl From<sqlx::Error> for DeliveryError {
    fn from(error: sqlx::Error) -> Self {
        if crate::error::sqlx_error_is_transient(&error) {
            DeliveryError::Transient(error.into())
        } else {
            DeliveryError::Permanent(error.into())
        }
    }
}

impl From<crate::Error> for DeliveryError {
    fn from(error: crate::Error) -> Self {
        if error.is_transient() {
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

impl DeliveryError {
    /// A batch handler's error: the body's own by its conversion (its cause says whether a
    /// retry may help), the runtime's as the runtime says.
    pub(crate) fn from_handler<E: Into<DeliveryError>>(
        error: crate::idempotency::HandlerError<E>,
    ) -> Self {
        use crate::idempotency::HandlerError;
        let runtime: HandlerError<std::convert::Infallible> = match error {
            HandlerError::Failed(error) | HandlerError::Permanent { error, .. } => {
                return error.into();
            }
            HandlerError::PayloadMismatch { event_id, action } => {
                HandlerError::PayloadMismatch { event_id, action }
            }
            HandlerError::Codec {
                event_id,
                action,
                source,
            } => HandlerError::Codec {
                event_id,
                action,
                source,
            },
            HandlerError::Database(error) => HandlerError::Database(error),
        };
        DeliveryError::from(runtime)
    }
}

impl From<serde_json::Error> for DeliveryError {
    fn from(error: serde_json::Error) -> Self {
        DeliveryError::Permanent(error.into())
    }
}
