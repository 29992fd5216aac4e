//! What saga operations fail with: [`SagaError`] and its conversions.

use uuid::Uuid;

/// What a saga operation can fail with.
///
/// ```
/// use prost_db::saga::SagaError;
/// let conflict = SagaError::Conflict { correlation_id: uuid::Uuid::nil(), version: 3 };
/// assert!(conflict.is_conflict());
/// assert!(conflict.to_string().contains("version 3"));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SagaError {
    /// Another transaction moved the saga after it was read: roll back and run the step
    /// again, so that it decides on what that transaction did.
    #[error(
        "saga {correlation_id} was changed by another step since it was read at version {version}; roll back and run this step again"
    )]
    Conflict {
        /// The saga.
        correlation_id: Uuid,
        /// The version this step read.
        version: i64,
    },

    /// The machine does not allow this transition.
    #[error("saga {correlation_id} ({saga_type}) cannot go from {from:?} to {to:?}")]
    InvalidTransition {
        /// The saga.
        correlation_id: Uuid,
        /// Its type.
        saga_type: String,
        /// Its status.
        from: String,
        /// The status asked for.
        to: String,
    },

    /// A status the machine does not know was asked for (in a sweep, say).
    #[error("saga type {saga_type:?} has no status {status:?}; its statuses are {known:?}")]
    UnknownStatus {
        /// The saga type.
        saga_type: String,
        /// The status asked for.
        status: String,
        /// The machine's statuses.
        known: Vec<&'static str>,
    },

    /// The machine could leave a saga unfinished.
    #[error("invalid saga machine {saga_type:?}: {reason}")]
    InvalidMachine {
        /// The saga type.
        saga_type: String,
        /// What is wrong.
        reason: String,
    },

    /// No saga of this type has this correlation id.
    #[error("no {saga_type:?} saga has correlation id {correlation_id}")]
    NotFound {
        /// The correlation id looked up.
        correlation_id: Uuid,
        /// The saga type.
        saga_type: String,
    },

    /// A saga with this correlation id exists already.
    #[error("a saga with correlation id {correlation_id} exists already")]
    AlreadyStarted {
        /// The correlation id.
        correlation_id: Uuid,
    },

    /// A link column that [`SagaTables::link`](super::SagaTables::link) did not declare.
    #[error("{column:?} is not a link column of the saga tables; declared: {declared:?}")]
    UnknownLink {
        /// The column given.
        column: String,
        /// The declared link columns.
        declared: Vec<String>,
    },

    /// The payload could not be converted to or from JSON.
    #[error("cannot convert the payload of saga {correlation_id}: {source}")]
    Payload {
        /// The saga.
        correlation_id: Uuid,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },

    /// The tables lack columns the store needs ([`SagaStore::verify`](super::SagaStore::verify)).
    #[error("{table} lacks the column(s) the saga store needs: {}; add them in a migration", missing.join(", "))]
    MissingColumns {
        /// The table, qualified.
        table: String,
        /// Every missing column.
        missing: Vec<String>,
    },

    /// The database failed.
    #[error(transparent)]
    Database(Box<crate::Error>),
}

impl From<crate::Error> for SagaError {
    fn from(error: crate::Error) -> Self {
        SagaError::Database(Box::new(error))
    }
}

impl SagaError {
    /// Whether this is a [`Conflict`](Self::Conflict): run the step again.
    ///
    /// ```
    /// let e = prost_db::saga::SagaError::AlreadyStarted { correlation_id: uuid::Uuid::nil() };
    /// assert!(!e.is_conflict());
    /// ```
    pub fn is_conflict(&self) -> bool {
        matches!(self, SagaError::Conflict { .. })
    }
}

impl From<sqlx::Error> for SagaError {
    fn from(error: sqlx::Error) -> Self {
        SagaError::from(crate::Error::Database(error))
    }
}

/// A conflict is worth retrying, and database errors are classified as usual; every other
/// saga error is permanent.
#[cfg(feature = "amqp")]
impl From<SagaError> for crate::amqp::DeliveryError {
    fn from(error: SagaError) -> Self {
        match error {
            SagaError::Conflict { .. } => crate::amqp::DeliveryError::transient(error),
            SagaError::Database(e) => crate::amqp::DeliveryError::from(*e),
            other => crate::amqp::DeliveryError::permanent(other),
        }
    }
}
