//! The values a saga store reads and writes: sagas, new sagas, compensations, sweep reports.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::SagaError;

/// One saga as read from the states table, with its payload decoded as `P`.
///
/// Change [`payload`](Self::payload) and [`expires_at`](Self::expires_at) freely; they are
/// written by the next [`SagaStore::transition`](super::SagaStore::transition), which also
/// updates `status`, `version`, `updated_at` and `expired` in place.
///
/// ```
/// # fn show(saga: prost_db::saga::Saga<serde_json::Value>) {
/// println!("{} is {} (version {})", saga.correlation_id, saga.status, saga.version);
/// # }
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Saga<P> {
    /// The row's id.
    pub id: Uuid,
    /// The saga's correlation id, carried by each of its events.
    pub correlation_id: Uuid,
    /// The machine's `saga_type`.
    pub saga_type: String,
    /// The current status.
    pub status: String,
    /// Bumped by every transition; the optimistic-concurrency check.
    pub version: i64,
    /// The saga's own data.
    pub payload: P,
    /// When it started.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// Its deadline: [`SagaStore::sweep_expired`](super::SagaStore::sweep_expired) finds it
    /// after this.
    pub expires_at: DateTime<Utc>,
    /// Whether `expires_at` had passed by the database clock when the row was read (the
    /// statement's transaction time, `now()`).
    pub expired: bool,
}

/// A saga to start: its correlation id, payload and time to live.
///
/// ```
/// use std::time::Duration;
/// let new = prost_db::saga::NewSaga::new(uuid::Uuid::new_v4(), vec![1, 2, 3], Duration::from_secs(60));
/// let new = new.link("order_id", 42)?;
/// # Ok::<(), prost_db::saga::SagaError>(())
/// ```
#[derive(Debug, Clone)]
pub struct NewSaga<P> {
    pub(super) correlation_id: Uuid,
    pub(super) payload: P,
    pub(super) expires_in: Duration,
    pub(super) links: serde_json::Map<String, serde_json::Value>,
}

impl<P> NewSaga<P> {
    /// A saga in the machine's initial status, expiring `expires_in` after it starts (by
    /// the database clock).
    ///
    /// ```
    /// use std::time::Duration;
    /// let new = prost_db::saga::NewSaga::new(uuid::Uuid::nil(), (), Duration::from_secs(300));
    /// # let _ = new;
    /// ```
    pub fn new(correlation_id: Uuid, payload: P, expires_in: Duration) -> Self {
        NewSaga {
            correlation_id,
            payload,
            expires_in,
            links: serde_json::Map::new(),
        }
    }

    /// Sets link column `column` (declared with [`SagaTables::link`](super::SagaTables::link))
    /// to `value`; PostgreSQL converts the JSON value to the column's type.
    ///
    /// # Errors
    ///
    /// [`SagaError::Payload`] if `value` does not serialize.
    ///
    /// ```
    /// use std::time::Duration;
    /// let new = prost_db::saga::NewSaga::new(uuid::Uuid::nil(), (), Duration::from_secs(1))
    ///     .link("order_id", 7_i64)?;
    /// # Ok::<(), prost_db::saga::SagaError>(())
    /// ```
    pub fn link(mut self, column: &str, value: impl Serialize) -> Result<Self, SagaError> {
        let value = serde_json::to_value(value).map_err(|source| SagaError::Payload {
            correlation_id: self.correlation_id,
            source,
        })?;
        self.links.insert(column.to_owned(), value);
        Ok(self)
    }
}

/// What undoes a step: registered with the step, run if the saga fails.
///
/// `key` is unique within the saga (a reservation id, say): registering or completing the
/// same key twice changes nothing.
///
/// ```
/// let release = prost_db::saga::Compensation::new(
///     "5f2b...", "StockReleased", &serde_json::json!({ "product_id": 7, "quantity": 2 }),
/// )?;
/// assert_eq!(release.key, "5f2b...");
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compensation {
    /// Unique within the saga.
    pub key: String,
    /// What the compensation is (`compensation_event`), e.g. the event that confirms it.
    pub event: String,
    /// Its data (`compensation_payload`).
    pub payload: serde_json::Value,
}

impl Compensation {
    /// A compensation with `payload` serialized to JSON.
    ///
    /// # Errors
    ///
    /// The JSON error if `payload` does not serialize.
    ///
    /// ```
    /// let c = prost_db::saga::Compensation::new("k", "Refund", &42)?;
    /// assert_eq!(c.payload, 42);
    /// # Ok::<(), serde_json::Error>(())
    /// ```
    pub fn new(
        key: impl Into<String>,
        event: impl Into<String>,
        payload: &impl Serialize,
    ) -> Result<Self, serde_json::Error> {
        Ok(Compensation {
            key: key.into(),
            event: event.into(),
            payload: serde_json::to_value(payload)?,
        })
    }
}

/// Where a compensation is in its life.
///
/// ```
/// use prost_db::saga::CompensationStatus;
/// assert_eq!(CompensationStatus::Requested.as_str(), "requested");
/// assert_eq!("completed".parse::<CompensationStatus>(), Ok(CompensationStatus::Completed));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CompensationStatus {
    /// Registered by a step; runs only if the saga fails.
    Pending,
    /// The saga is compensating: it has to run.
    Requested,
    /// It ran.
    Completed,
    /// The saga succeeded: it will never run.
    Discarded,
}

impl CompensationStatus {
    /// The value in the `status` column.
    ///
    /// ```
    /// assert_eq!(prost_db::saga::CompensationStatus::Pending.as_str(), "pending");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            CompensationStatus::Pending => "pending",
            CompensationStatus::Requested => "requested",
            CompensationStatus::Completed => "completed",
            CompensationStatus::Discarded => "discarded",
        }
    }
}

impl std::str::FromStr for CompensationStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "pending" => CompensationStatus::Pending,
            "requested" => CompensationStatus::Requested,
            "completed" => CompensationStatus::Completed,
            "discarded" => CompensationStatus::Discarded,
            other => return Err(format!("unknown compensation status {other:?}")),
        })
    }
}

impl fmt::Display for CompensationStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A compensation row.
///
/// ```
/// # fn show(record: prost_db::saga::CompensationRecord) {
/// println!("{} {} is {}", record.event, record.key, record.status);
/// # }
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct CompensationRecord {
    /// Unique within the saga.
    pub key: String,
    /// `compensation_event`.
    pub event: String,
    /// `compensation_payload`.
    pub payload: serde_json::Value,
    /// Its status.
    pub status: CompensationStatus,
    /// When it was registered.
    pub created_at: DateTime<Utc>,
    /// When it was completed or discarded.
    pub completed_at: Option<DateTime<Utc>>,
}

/// What one [`SagaStore::sweep_expired`](super::SagaStore::sweep_expired) did.
///
/// ```
/// let report: prost_db::saga::SweepReport<std::io::Error> = Default::default();
/// assert_eq!(report.swept, 0);
/// assert!(report.failed.is_empty());
/// ```
#[derive(Debug)]
pub struct SweepReport<E> {
    /// Expired sagas whose step committed.
    pub swept: usize,
    /// Expired sagas whose step failed (rolled back; the next sweep tries them again).
    pub failed: Vec<(Uuid, E)>,
}

impl<E> Default for SweepReport<E> {
    fn default() -> Self {
        SweepReport {
            swept: 0,
            failed: Vec::new(),
        }
    }
}
