//! What a handler run can fail with, classified for the consumer.

/// Why a handler run did not produce a result.
///
/// The variants tell a consumer what to do with the delivery:
///
/// | variant | recorded? | consumer |
/// |---|---|---|
/// | [`Failed`](Self::Failed) | no, rolled back | retry (requeue with delay) |
/// | [`Permanent`](Self::Permanent) | yes, as the final result | dead-letter |
/// | [`PayloadMismatch`](Self::PayloadMismatch) | first delivery's record kept | dead-letter |
/// | [`Codec`](Self::Codec) | no | dead-letter (a deploy changed the result type) |
/// | [`Database`](Self::Database) | no, rolled back | retry if [`is_transient`](Self::is_transient) |
///
/// ```
/// use prost_db::idempotency::HandlerError;
///
/// let failed: HandlerError<std::io::Error> = HandlerError::Failed(std::io::Error::other("boom"));
/// assert!(failed.should_retry());
/// assert!(failed.user_error().is_some());
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandlerError<E> {
    /// The body returned `Err`. Its transaction rolled back and nothing was recorded, so a
    /// redelivery runs the body again.
    #[error("handler failed: {0}")]
    Failed(E),

    /// The body returned an error that [`PermanentError::is_permanent`] marked permanent
    /// (handlers with `permanent_errors` only). It was recorded as the event's final result:
    /// `replayed` is false on the delivery that recorded it and true on duplicates.
    #[error("handler failed permanently: {error}")]
    Permanent {
        /// The error, fresh or replayed from the record.
        error: E,
        /// Whether this error was read back from an earlier delivery's record.
        replayed: bool,
    },

    /// An event with this id was already handled with a different payload: either the
    /// publisher reused an id, or the event was altered. The stored record is kept.
    #[error(
        "event {event_id:?} was already handled by {action:?} with a different payload; not replaying its result"
    )]
    PayloadMismatch {
        /// The idempotency key.
        event_id: String,
        /// The handler's action.
        action: String,
    },

    /// The result (or permanent error) could not be converted to or from JSON, e.g. a stored
    /// result written by an older version of the result type.
    #[error("cannot convert the stored result of event {event_id:?} for {action:?}: {source}")]
    Codec {
        /// The idempotency key.
        event_id: String,
        /// The handler's action.
        action: String,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },

    /// The database failed: connection lost, pool exhausted, lock timeout while waiting
    /// for an in-flight twin, serialization failure, or any other SQL error. The
    /// transaction rolled back.
    #[error(transparent)]
    Database(#[from] crate::Error),
}

impl<E> HandlerError<E> {
    /// Whether the same delivery may succeed later: [`Failed`](Self::Failed) (the user's
    /// error, rolled back) and transient [`Database`](Self::Database) errors.
    ///
    /// ```
    /// use prost_db::idempotency::HandlerError;
    ///
    /// let mismatch: HandlerError<()> = HandlerError::PayloadMismatch {
    ///     event_id: "e1".into(),
    ///     action: "reserve".into(),
    /// };
    /// assert!(!mismatch.should_retry());
    /// ```
    pub fn should_retry(&self) -> bool {
        match self {
            HandlerError::Failed(_) => true,
            HandlerError::Database(_) => self.is_transient(),
            _ => false,
        }
    }

    /// Whether this is a database error that is expected to go away: the crate's one
    /// classification, [`Error::is_transient`](crate::Error::is_transient) (a lost or
    /// refused connection, a pool timeout, a lock or statement timeout, a serialization
    /// failure or deadlock, a server shutting down, short of resources or read-only after a
    /// failover, a record purged while it was read, a broker error, ...).
    ///
    /// ```
    /// use prost_db::idempotency::HandlerError;
    ///
    /// let timeout: HandlerError<()> =
    ///     HandlerError::Database(prost_db::Error::PoolTimedOut(std::time::Duration::from_secs(1)));
    /// assert!(timeout.is_transient());
    /// ```
    pub fn is_transient(&self) -> bool {
        matches!(self, HandlerError::Database(error) if error.is_transient())
    }

    /// The user's error, for [`Failed`](Self::Failed) and [`Permanent`](Self::Permanent).
    ///
    /// ```
    /// use prost_db::idempotency::HandlerError;
    ///
    /// let e: HandlerError<&str> = HandlerError::Permanent { error: "no such product", replayed: true };
    /// assert_eq!(e.user_error(), Some(&"no such product"));
    /// ```
    pub fn user_error(&self) -> Option<&E> {
        match self {
            HandlerError::Failed(error) | HandlerError::Permanent { error, .. } => Some(error),
            _ => None,
        }
    }

    /// A short name for logs and tracing spans.
    ///
    /// ```
    /// use prost_db::idempotency::HandlerError;
    /// assert_eq!(HandlerError::Failed(()).kind(), "failed");
    /// ```
    pub fn kind(&self) -> &'static str {
        match self {
            HandlerError::Failed(_) => "failed",
            HandlerError::Permanent { .. } => "permanent_error",
            HandlerError::PayloadMismatch { .. } => "payload_mismatch",
            HandlerError::Codec { .. } => "codec_error",
            HandlerError::Database(_) => "database_error",
        }
    }
}

/// An error type some of whose values are final: retrying the event cannot help (the
/// product does not exist, the order was cancelled). Used by handlers declared with
/// `#[idempotent_handler(permanent_errors)]`: a permanent error is stored as the event's
/// result, its effects rolled back, and every duplicate gets it back as
/// [`HandlerError::Permanent`] without running the body. Other errors roll back and leave no
/// record.
///
/// ```
/// use prost_db::idempotency::PermanentError;
///
/// #[derive(Debug, serde::Serialize, serde::Deserialize)]
/// enum ReserveError { UnknownProduct(i64), Database(String) }
///
/// impl PermanentError for ReserveError {
///     fn is_permanent(&self) -> bool {
///         matches!(self, ReserveError::UnknownProduct(_))
///     }
/// }
///
/// assert!(ReserveError::UnknownProduct(3).is_permanent());
/// ```
#[diagnostic::on_unimplemented(
    message = "`permanent_errors` needs to know which `{Self}` values are permanent",
    label = "this error type does not implement `PermanentError`",
    note = "implement `prost_db::idempotency::PermanentError` for `{Self}` (its `is_permanent` says which errors are recorded as final), or remove `permanent_errors`"
)]
pub trait PermanentError: serde::Serialize + serde::de::DeserializeOwned {
    /// Whether this error is final and should be recorded.
    fn is_permanent(&self) -> bool;
}
