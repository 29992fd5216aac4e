//! Exactly-once effects under at-least-once delivery.
//!
//! A message broker may deliver an event twice: after a lost ack, a consumer restart, or a
//! publisher retry. A handler wrapped by [`#[idempotent_handler]`](crate::idempotent_handler)
//! (or run through [`IdempotencyStore::run`]) applies the event's effects once and replays
//! the first result to every duplicate:
//!
//! - the body's writes and the idempotency record commit atomically, in one READ COMMITTED
//!   transaction;
//! - a duplicate of a committed event never runs the body: it gets
//!   [`Outcome::Duplicate`] with the stored result;
//! - a duplicate delivered while the first is still in flight waits on the unique index
//!   (bounded by the lock timeout) and then either replays the first's result or, if the
//!   first rolled back, is processed normally; it never adds a second effect;
//! - a body that fails rolls back and leaves no record, so a redelivery retries;
//! - a duplicate whose fingerprint differs from the first delivery's is
//!   [`HandlerError::PayloadMismatch`], never a silent replay; the fingerprint is a hash
//!   of a canonical JSON form ([`Fingerprint`]) of what the key's source names: the
//!   event's [`EventId::fingerprint`] by default, nothing with a business key unless the
//!   handler names it (see [`#[idempotent_handler]`](crate::idempotent_handler));
//! - with `permanent_errors`, errors that [`PermanentError::is_permanent`] marks are
//!   recorded as the event's final result and replayed as errors.
//!
//! # How it works, and why this way
//!
//! Per delivery, the runtime sends these statements, each one round trip:
//!
//! 1. `BEGIN ISOLATION LEVEL READ COMMITTED; SET LOCAL lock_timeout = ...` (one query).
//! 2. The claim: `INSERT` of a record without result `ON CONFLICT DO NOTHING`. If a twin
//!    holds the key uncommitted, the unique index makes this insert wait for the twin's
//!    transaction: twin committed, 0 rows; twin rolled back, 1 row. (The claim also sets
//!    the lock timeout itself, with `set_config(.., true)`, so that
//!    [`IdempotencyStore::claim`] bounds its wait in a transaction begun elsewhere.)
//! 3. Claimed (1 row): the body, on the same transaction (lent to it as a [`TxLease`]);
//!    then the result is written into the record (skipped when it serializes to `null`,
//!    e.g. `()`: the claim already stored that), and `COMMIT`. A new event whose result is
//!    `()` costs 4 statements; one that returns data, 5.
//! 4. Taken (0 rows): a `SELECT` of the record (a new snapshot, so it sees the twin that
//!    just committed); its fingerprint is checked and its result replayed. A duplicate
//!    costs 3 statements; the empty transaction's `ROLLBACK` is queued and sent when the
//!    connection goes back to the pool, off the delivery's path.
//!
//! In [`HandlerMode::Chained`] the same statements run on a kept connection whose
//! transaction each event ends with `COMMIT AND CHAIN`, so the `BEGIN` round trip goes;
//! [`IdempotencyStore::run_batch`] runs many events of one action in one transaction with
//! one claim for all keys. [`HandlerMode`] shows the exact statements of each.
//!
//! The unique index on `(event_id, service_name, action)` is what decides; a
//! `SELECT`-then-`INSERT` check is a race and is not used. A body that fails rolls back, and
//! the claim with it, so a redelivery (or the twin waiting on it) processes the event.
//! Claiming first means a twin in flight never runs its body: it waits and then replays.
//!
//! The alternative, writing the record with its result just before `COMMIT`, saves the
//! result `UPDATE` for handlers that return data, but needs a duplicate check before the
//! body and runs a twin's body only to roll it back. Both shapes cost one statement more
//! than the bare transaction, and sqlx sends every statement as its own round trip; the
//! README's benchmark section has the figures.
//!
//! ```no_run
//! use prost_db::idempotency::{EventId, Outcome, Tx};
//! use prost_db::{Db, idempotent_handler};
//!
//! #[derive(serde::Serialize)]
//! struct StockReserved { event_id: uuid::Uuid, product_id: i64, quantity: i32 }
//!
//! impl EventId for StockReserved {
//!     type Id = uuid::Uuid;
//!     fn event_id(&self) -> &uuid::Uuid { &self.event_id }
//! }
//!
//! #[idempotent_handler]
//! async fn reserve_stock(tx: &mut Tx, event: &StockReserved) -> Result<i32, sqlx::Error> {
//!     sqlx::query_scalar("UPDATE products SET stock = stock - $2 WHERE id = $1 RETURNING stock")
//!         .bind(event.product_id)
//!         .bind(event.quantity)
//!         .fetch_one(&mut **tx)
//!         .await
//! }
//!
//! # async fn run(db: Db, event: StockReserved) -> Result<(), Box<dyn std::error::Error>> {
//! match reserve_stock(&db, &event).await? {
//!     Outcome::Processed(stock) => println!("reserved, {stock} left"),
//!     Outcome::Duplicate(stock) => println!("already reserved, {stock} left then"),
//! }
//! # Ok(()) }
//! ```

mod batch;
mod chained;
mod error;
mod fingerprint;
mod key;
mod partition_ddl;
mod partitions;
mod record;
pub(crate) mod runtime;
mod store;

pub(crate) use chained::Chains;
pub use chained::{CHAINED_IDLE, HandlerMode};
pub use error::{HandlerError, PermanentError};
pub use fingerprint::Fingerprint;
#[doc(hidden)]
pub use key::SerializedEvent;
pub use key::{EventId, IdempotencyKey};
pub use partitions::{ExpiredKeys, Maintenance, OTHER_PARTITION, PartitionedRecords, key_time};
pub use record::{Claim, StoredRecord};
pub use store::{DEFAULT_LOCK_TIMEOUT, IdempotencyStore, TABLE_NAME, Tx, TxLease};

/// What a handler run ended as: the body ran now, or the event had been handled before.
///
/// Both carry the handler's result: the fresh one, or the one stored by the first delivery.
///
/// ```
/// use prost_db::idempotency::Outcome;
///
/// let outcome = Outcome::Duplicate(7);
/// assert!(outcome.is_duplicate());
/// assert_eq!(outcome.into_inner(), 7);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Outcome<T> {
    /// The body ran and its effects committed together with the record.
    Processed(T),
    /// An earlier delivery of the same event was processed; this is its stored result, and
    /// the body did not run.
    Duplicate(T),
}

impl<T> Outcome<T> {
    /// The result, whether fresh or replayed.
    ///
    /// ```
    /// # use prost_db::idempotency::Outcome;
    /// assert_eq!(Outcome::Processed("ok").into_inner(), "ok");
    /// ```
    pub fn into_inner(self) -> T {
        match self {
            Outcome::Processed(value) | Outcome::Duplicate(value) => value,
        }
    }

    /// A reference to the result.
    ///
    /// ```
    /// # use prost_db::idempotency::Outcome;
    /// assert_eq!(*Outcome::Duplicate(3).value(), 3);
    /// ```
    pub fn value(&self) -> &T {
        match self {
            Outcome::Processed(value) | Outcome::Duplicate(value) => value,
        }
    }

    /// Whether this delivery was a duplicate.
    ///
    /// ```
    /// # use prost_db::idempotency::Outcome;
    /// assert!(!Outcome::Processed(()).is_duplicate());
    /// ```
    pub fn is_duplicate(&self) -> bool {
        matches!(self, Outcome::Duplicate(_))
    }

    /// The outcome's name as used in tracing spans: `"processed"` or `"duplicate"`.
    ///
    /// ```
    /// # use prost_db::idempotency::Outcome;
    /// assert_eq!(Outcome::Processed(()).as_str(), "processed");
    /// ```
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Processed(_) => "processed",
            Outcome::Duplicate(_) => "duplicate",
        }
    }
}
