//! Batch mode: the deliveries of one event type collected into batches, each run through
//! [`IdempotencyStore::run_batch_events`] in one transaction; the forming batches, and the
//! channel's unsettled delivery tags that decide when one `multiple` ack may settle many.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use lapin::message::Delivery;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use super::delivery::decode_envelope;
use super::{Consumer, Delivered};
use crate::amqp::DeliveryError;
use crate::error::{Error, Result};
use crate::events::{Envelope, Event, EventPayload};
use crate::idempotency::{IdempotencyStore, TxLease};

/// How a batch handler groups deliveries: at most `max` per batch, and a batch that is not
/// full starts `wait` after its first delivery arrived.
///
/// ```
/// use std::time::Duration;
/// use prost_db::amqp::Batching;
///
/// let batching = Batching::new(32, Duration::from_millis(5));
/// assert_eq!(batching.max(), 32);
/// assert_eq!(batching.wait(), Duration::from_millis(5));
/// assert_eq!(Batching::new(0, Duration::ZERO).max(), 1, "a batch holds one at least");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batching {
    max: usize,
    wait: Duration,
}

impl Batching {
    /// Batches of at most `max` deliveries (at least 1), each started when full or `wait`
    /// after its first delivery, whichever comes first.
    ///
    /// ```
    /// let batching = prost_db::amqp::Batching::new(128, std::time::Duration::from_millis(10));
    /// assert_eq!(batching.max(), 128);
    /// ```
    pub fn new(max: usize, wait: Duration) -> Self {
        Batching {
            max: max.max(1),
            wait,
        }
    }

    /// The most deliveries in one batch.
    ///
    /// ```
    /// assert_eq!(prost_db::amqp::Batching::new(8, std::time::Duration::ZERO).max(), 8);
    /// ```
    pub fn max(&self) -> usize {
        self.max
    }

    /// How long a batch that is not full waits for more deliveries.
    ///
    /// ```
    /// use std::time::Duration;
    /// assert_eq!(prost_db::amqp::Batching::new(8, Duration::from_millis(3)).wait(), Duration::from_millis(3));
    /// ```
    pub fn wait(&self) -> Duration {
        self.wait
    }
}

/// A batch run: per delivery, in order, `Ok(true)` for a duplicate; and whether the
/// batch rolled back and ran its events one at a time.
pub(super) type BatchFuture = Pin<Box<dyn Future<Output = BatchResults> + Send>>;

/// What a batch run returns.
pub(super) struct BatchResults {
    pub(super) results: Vec<std::result::Result<bool, DeliveryError>>,
    pub(super) fell_back: bool,
}

/// The type of a batch handler without a prepare step.
type NoPrepare<P> =
    fn(TxLease, Vec<Arc<Event<P>>>) -> std::future::Ready<std::result::Result<(), DeliveryError>>;

/// One event type's batch handler.
pub(super) struct BatchHandler {
    pub(super) batching: Batching,
    pub(super) run: Box<dyn Fn(Vec<Delivered>) -> BatchFuture + Send + Sync>,
}

/// Fault injection and test hooks of batch mode (feature `fault-injection`).
#[derive(Clone, Default)]
pub(super) struct BatchFaults {
    /// Ack every batch's successes with one `multiple` ack, whatever else is unsettled.
    pub(super) naive_multiple_ack: bool,
    /// Called with the batch's size after its transaction committed, before any ack.
    pub(super) after_commit: Option<Arc<dyn Fn(usize) + Send + Sync>>,
}

impl Consumer {
    /// Routes events of type `P` to `body` in batches: the consumer collects up to
    /// `batching.max()` deliveries of this event type (or those that arrived within
    /// `batching.wait()` of the batch's first), decodes each, and runs the decoded ones
    /// through [`IdempotencyStore::run_batch_events`] under `action`: one claim for every
    /// event, the bodies of the new ones on one transaction, one commit. Only then are the
    /// deliveries settled: the successes with one `basic.ack` with `multiple` set where
    /// the channel allows it, each failure as [`on`](Self::on) settles it (retry tier or
    /// dead letter, by its error's classification).
    ///
    /// - A batch holds events of this one event type, handler and action: two event types
    ///   on one queue never share a batch, nor do two services (a store is one service's).
    /// - A delivery whose payload does not decode as `P` is dead-lettered alone; the rest
    ///   of its batch runs.
    /// - If a body fails (or the batch's statements do), the batch rolls back and its
    ///   events run again one at a time, so one poison event costs one batch: the others
    ///   are applied once, it is retried or dead-lettered alone.
    /// - Duplicates, within a batch or of earlier ones, replay the first result and count
    ///   as duplicates ([`ConsumerStats::duplicates`](super::ConsumerStats::duplicates)).
    /// - `body` may run twice for one event (in the batch, then alone after a rollback):
    ///   it gets the event as an `Arc`, and its writes must go through the transaction it
    ///   is lent.
    /// - Its error converts into a [`DeliveryError`] (`sqlx::Error`, [`crate::Error`] and
    ///   `DeliveryError` itself do), which says whether a retry may help.
    ///
    /// A `multiple` ack acks every unsettled delivery of the channel up to its tag, so the
    /// consumer tracks the channel's unsettled tags and sends one only for the successes
    /// below the first tag that is not this batch's (a delivery another handler is still
    /// running, say); the successes above it are acked one by one.
    ///
    /// The prefetch must be at least `batching.max()`, or a batch could never fill:
    /// [`run`](Self::run) refuses it, as it refuses batch handlers on a consumer that
    /// [`serialize_by_aggregate`](Self::serialize_by_aggregate)s or whose queue retries in
    /// place (both keep an order a batch does not). Registering the event type again, with
    /// `on`, `handler` or `on_batch`, replaces the handler.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use prost_db::amqp::{Batching, Consumer, QueueSpec};
    /// use prost_db::events::{Event, EventPayload};
    /// use prost_db::idempotency::{IdempotencyStore, Tx};
    ///
    /// #[derive(serde::Serialize, serde::Deserialize)]
    /// struct OrderShipped { order_id: i64 }
    /// impl EventPayload for OrderShipped {
    ///     const EVENT_TYPE: &'static str = "OrderShipped";
    ///     const AGGREGATE_TYPE: &'static str = "order";
    ///     const ROUTING_KEY: &'static str = "order.shipped";
    /// }
    ///
    /// # async fn run(db: prost_db::Db, connection: prost_db::amqp::lapin::Connection) -> prost_db::Result<()> {
    /// let stats = Consumer::new(QueueSpec::new("orders.events"))
    ///     .prefetch(64)
    ///     .on_batch(
    ///         IdempotencyStore::new(&db),
    ///         "mark_shipped",
    ///         Batching::new(32, Duration::from_millis(5)),
    ///         |mut tx, event: std::sync::Arc<Event<OrderShipped>>| async move {
    ///             let tx: &mut Tx = &mut tx;
    ///             sqlx::query("UPDATE orders SET shipped = true WHERE id = $1")
    ///                 .bind(event.payload.order_id)
    ///                 .execute(&mut **tx)
    ///                 .await?;
    ///             Ok::<(), sqlx::Error>(())
    ///         },
    ///     )
    ///     .run(&connection, async { let _ = tokio::signal::ctrl_c().await; })
    ///     .await?;
    /// println!("acked {} ({} duplicates)", stats.acked, stats.duplicates);
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn on_batch<P, F, Fut, T, E>(
        self,
        store: IdempotencyStore,
        action: impl Into<String>,
        batching: Batching,
        body: F,
    ) -> Self
    where
        P: EventPayload,
        F: Fn(TxLease, Arc<Event<P>>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<T, E>> + Send + 'static,
        T: Serialize + DeserializeOwned + Send + 'static,
        E: Into<DeliveryError> + Send + 'static,
    {
        self.register_batch(store, action.into(), batching, None::<NoPrepare<P>>, body)
    }

    /// Routes events of type `P` to `body` in batches, as [`on_batch`](Self::on_batch)
    /// does, with a prepare step: `prepare` runs once per batch on the batch's
    /// transaction, right after the claim and before any body, with the batch's claimed
    /// events (in delivery order; not its duplicates). A consumer's batch holds its events
    /// in the broker's order, so bodies that lock shared rows one event at a time lock them
    /// in an order nobody chose, and two consumers' batches deadlock: PostgreSQL aborts one
    /// after `deadlock_timeout` (1 s by default), and it runs again one event at a time.
    /// Lock, in `prepare`, every row the batch's bodies will touch in one order
    /// (`... WHERE id = ANY($1) ORDER BY id FOR UPDATE`) and concurrent batches queue on
    /// their first shared row instead.
    ///
    /// A failing `prepare` rolls the batch back and its events run one at a time, as for a
    /// failing body (its error is logged, not settled: only the bodies' errors settle a
    /// delivery). It does not run for a batch of one, nor when every event was a
    /// duplicate, nor on the one-at-a-time runs: those run as [`on`](Self::on) runs an
    /// event, so `prepare` may take locks or read ahead but must not write anything a body
    /// relies on. The counter `prost_db_consumer_batch_fallbacks_total` (`queue`,
    /// `event_type`) counts the batches that fell back, with a prepare step or without.
    ///
    /// ```no_run
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use prost_db::amqp::{Batching, Consumer, QueueSpec};
    /// use prost_db::events::{Event, EventPayload};
    /// use prost_db::idempotency::{IdempotencyStore, Tx};
    ///
    /// #[derive(serde::Serialize, serde::Deserialize)]
    /// struct OrderCreated { product_ids: Vec<i64> }
    /// impl EventPayload for OrderCreated {
    ///     const EVENT_TYPE: &'static str = "OrderCreated";
    ///     const AGGREGATE_TYPE: &'static str = "order";
    ///     const ROUTING_KEY: &'static str = "order.created";
    /// }
    ///
    /// # fn consumer(db: prost_db::Db) -> Consumer {
    /// Consumer::new(QueueSpec::new("catalog.events"))
    ///     .prefetch(64)
    ///     .on_batch_prepared(
    ///         IdempotencyStore::new(&db),
    ///         "reserve_stock",
    ///         Batching::new(32, Duration::from_millis(5)),
    ///         // Every product of the batch, locked in id order, before any body runs.
    ///         |mut tx, events: Vec<Arc<Event<OrderCreated>>>| async move {
    ///             let tx: &mut Tx = &mut tx;
    ///             let mut ids: Vec<i64> =
    ///                 events.iter().flat_map(|e| e.payload.product_ids.clone()).collect();
    ///             ids.sort_unstable();
    ///             ids.dedup();
    ///             sqlx::query("SELECT id FROM products WHERE id = ANY($1) ORDER BY id FOR UPDATE")
    ///                 .bind(&ids)
    ///                 .execute(&mut **tx)
    ///                 .await?;
    ///             Ok::<(), sqlx::Error>(())
    ///         },
    ///         |mut tx, event: Arc<Event<OrderCreated>>| async move {
    ///             let tx: &mut Tx = &mut tx;
    ///             for id in &event.payload.product_ids {
    ///                 sqlx::query("UPDATE products SET stock = stock - 1 WHERE id = $1")
    ///                     .bind(id)
    ///                     .execute(&mut **tx)
    ///                     .await?;
    ///             }
    ///             Ok::<(), sqlx::Error>(())
    ///         },
    ///     )
    /// # }
    /// ```
    #[must_use]
    pub fn on_batch_prepared<P, Pr, PFut, PE, F, Fut, T, E>(
        self,
        store: IdempotencyStore,
        action: impl Into<String>,
        batching: Batching,
        prepare: Pr,
        body: F,
    ) -> Self
    where
        P: EventPayload,
        Pr: Fn(TxLease, Vec<Arc<Event<P>>>) -> PFut + Send + Sync + 'static,
        PFut: Future<Output = std::result::Result<(), PE>> + Send + 'static,
        PE: Into<DeliveryError> + Send + 'static,
        F: Fn(TxLease, Arc<Event<P>>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<T, E>> + Send + 'static,
        T: Serialize + DeserializeOwned + Send + 'static,
        E: Into<DeliveryError> + Send + 'static,
    {
        self.register_batch(store, action.into(), batching, Some(prepare), body)
    }

    fn register_batch<P, Pr, PFut, PE, F, Fut, T, E>(
        mut self,
        store: IdempotencyStore,
        action: String,
        batching: Batching,
        prepare: Option<Pr>,
        body: F,
    ) -> Self
    where
        P: EventPayload,
        Pr: Fn(TxLease, Vec<Arc<Event<P>>>) -> PFut + Send + Sync + 'static,
        PFut: Future<Output = std::result::Result<(), PE>> + Send + 'static,
        PE: Into<DeliveryError> + Send + 'static,
        F: Fn(TxLease, Arc<Event<P>>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<T, E>> + Send + 'static,
        T: Serialize + DeserializeOwned + Send + 'static,
        E: Into<DeliveryError> + Send + 'static,
    {
        let body = Arc::new(body);
        let prepare = prepare.map(Arc::new);
        let action: Arc<str> = action.into();
        let store = Arc::new(store);
        let run = move |delivered: Vec<Delivered>| -> BatchFuture {
            let (store, action, body) =
                (Arc::clone(&store), Arc::clone(&action), Arc::clone(&body));
            let prepare = prepare.clone();
            Box::pin(async move {
                let mut results: Vec<Option<std::result::Result<bool, DeliveryError>>> =
                    Vec::with_capacity(delivered.len());
                let (mut events, mut at) = (Vec::new(), Vec::new());
                for (i, delivered) in delivered.iter().enumerate() {
                    match delivered.decode::<P>() {
                        Ok(event) => {
                            events.push(Arc::new(event));
                            at.push(i);
                            results.push(None);
                        }
                        Err(error) => results.push(Some(Err(error))),
                    }
                }
                let prepare = prepare.map(|prepare| {
                    move |lease: TxLease, claimed: Vec<&Arc<Event<P>>>| {
                        let claimed = claimed.into_iter().map(Arc::clone).collect();
                        let prepared = prepare(lease, claimed);
                        async move { prepared.await.map_err(Into::<DeliveryError>::into) }
                    }
                });
                let run = store
                    .run_batch_events_reporting(&action, &events, prepare, |lease, event| {
                        body(lease, Arc::clone(event))
                    })
                    .await;
                for (i, outcome) in at.into_iter().zip(run.results) {
                    results[i] = Some(
                        outcome
                            .map(|outcome| outcome.is_duplicate())
                            .map_err(DeliveryError::from_handler),
                    );
                }
                let results = results
                    .into_iter()
                    .map(|result| {
                        result.unwrap_or_else(|| Err(DeliveryError::permanent("no batch result")))
                    })
                    .collect();
                BatchResults {
                    results,
                    fell_back: run.fell_back,
                }
            })
        };
        self.handlers.remove(P::EVENT_TYPE);
        self.batches.insert(
            P::EVENT_TYPE.to_owned(),
            Arc::new(BatchHandler {
                batching,
                run: Box::new(run),
            }),
        );
        self
    }

    /// Fault injection for the control test of the `multiple` ack rule (feature
    /// `fault-injection`, never for a service): ack each batch's successes with one
    /// `multiple` ack whatever else the channel has unsettled, which also acks the
    /// deliveries other handlers are still running.
    #[cfg(feature = "fault-injection")]
    #[doc(hidden)]
    #[must_use]
    pub fn unsafe_naive_multiple_ack(mut self, yes: bool) -> Self {
        self.batch_faults.naive_multiple_ack = yes;
        self
    }

    /// Crash injection for the kill tests (feature `fault-injection`): `hook` runs with the
    /// batch's size after its transaction committed and before any of it is acked.
    #[cfg(feature = "fault-injection")]
    #[doc(hidden)]
    #[must_use]
    pub fn after_batch_commit_hook(mut self, hook: impl Fn(usize) + Send + Sync + 'static) -> Self {
        self.batch_faults.after_commit = Some(Arc::new(hook));
        self
    }

    /// Refuses batch handlers that could not work as documented.
    pub(super) fn check_batches(&self) -> Result<()> {
        let queue = self.spec.queue();
        for (event_type, handler) in &self.batches {
            let max = handler.batching.max();
            if usize::from(self.prefetch) < max {
                return Err(Error::Config(format!(
                    "consumer of {queue}: prefetch {} is below the batch size {max} of the \
                     {event_type:?} batch handler, so its batches could never fill; set \
                     .prefetch({max}) or more (twice the batch size lets the next batch form \
                     while one runs)",
                    self.prefetch
                )));
            }
            if self.serialize_by_aggregate {
                return Err(Error::Config(format!(
                    "consumer of {queue}: the {event_type:?} batch handler cannot run on a \
                     consumer that serializes by aggregate (a batch runs many aggregates' \
                     events at once); register it with .on() instead"
                )));
            }
            if self.spec.retries_in_place() {
                return Err(Error::Config(format!(
                    "consumer of {queue}: the {event_type:?} batch handler needs retry tiers, \
                     and this queue retries in place (an ordered queue); register it with \
                     .on() instead"
                )));
            }
            if self.ack_before_handling {
                return Err(Error::Config(format!(
                    "consumer of {queue}: batch handlers do not ack before handling"
                )));
            }
        }
        Ok(())
    }
}

/// What to do with a delivery the session received.
#[allow(clippy::large_enum_variant)] // moved once per delivery, straight to where it runs
pub(super) enum Routed {
    /// Run it on its own (no batch handler for its type, or a poison envelope).
    Alone(Delivery),
    /// Held in a forming batch.
    Held,
    /// A batch is full: run it.
    Full(Batch),
}

/// A batch to run: its handler and its deliveries, in delivery order.
pub(super) struct Batch {
    pub(super) handler: Arc<BatchHandler>,
    pub(super) deliveries: Vec<(Delivery, Envelope)>,
}

/// The batches forming, one per event type with a batch handler.
#[derive(Default)]
pub(super) struct Forming {
    batches: HashMap<String, (Instant, Batch)>,
}

impl Forming {
    /// Holds `delivery` in its event type's forming batch, if that type has a batch handler.
    pub(super) fn route(&mut self, delivery: Delivery, consumer: &Consumer) -> Routed {
        if consumer.batches.is_empty() {
            return Routed::Alone(delivery);
        }
        let Ok(envelope) = decode_envelope(&delivery.data) else {
            return Routed::Alone(delivery);
        };
        let Some(handler) = consumer.batches.get(&envelope.event_type) else {
            return Routed::Alone(delivery);
        };
        let max = handler.batching.max();
        let (_, batch) = self
            .batches
            .entry(envelope.event_type.clone())
            .or_insert_with(|| {
                let deadline = Instant::now() + handler.batching.wait();
                let batch = Batch {
                    handler: Arc::clone(handler),
                    deliveries: Vec::with_capacity(max),
                };
                (deadline, batch)
            });
        batch.deliveries.push((delivery, envelope));
        if batch.deliveries.len() < max {
            return Routed::Held;
        }
        let event_type = batch.deliveries[0].1.event_type.clone();
        match self.batches.remove(&event_type) {
            Some((_, batch)) => Routed::Full(batch),
            None => Routed::Held,
        }
    }

    /// When the next forming batch is due.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.batches.values().map(|(deadline, _)| *deadline).min()
    }

    /// The batches due by `now`.
    pub(super) fn due(&mut self, now: Instant) -> Vec<Batch> {
        let due: Vec<String> = self
            .batches
            .iter()
            .filter(|(_, (deadline, _))| *deadline <= now)
            .map(|(event_type, _)| event_type.clone())
            .collect();
        due.iter()
            .filter_map(|event_type| self.batches.remove(event_type))
            .map(|(_, batch)| batch)
            .collect()
    }
}

/// The delivery tags of the channel that are not settled yet: added when a delivery
/// arrives, removed once the task that took it has settled it (its ack, nack or reject
/// sent). A tag whose task ends without settling (a panic) stays: it is unsettled.
#[derive(Debug, Default)]
pub(super) struct Unsettled(Mutex<BTreeSet<u64>>);

impl Unsettled {
    pub(super) fn received(&self, tag: u64) {
        self.lock().insert(tag);
    }

    pub(super) fn settled(&self, tags: impl IntoIterator<Item = u64>) {
        let mut unsettled = self.lock();
        for tag in tags {
            unsettled.remove(&tag);
        }
    }

    /// The highest of `successes` that a `multiple` ack may name: every unsettled tag at
    /// or below it is one of `batch`'s (whose failures are settled already).
    pub(super) fn multiple_ack_limit(
        &self,
        batch: &BTreeSet<u64>,
        successes: &[u64],
    ) -> Option<u64> {
        multiple_ack_limit(&self.lock(), batch, successes)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<u64>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn multiple_ack_limit(
    unsettled: &BTreeSet<u64>,
    batch: &BTreeSet<u64>,
    successes: &[u64],
) -> Option<u64> {
    let foreign = unsettled.iter().find(|tag| !batch.contains(tag));
    successes
        .iter()
        .copied()
        .filter(|tag| foreign.is_none_or(|foreign| tag < foreign))
        .max()
}

#[cfg(test)]
mod tests {
    use super::multiple_ack_limit;
    use std::collections::BTreeSet;

    fn set(tags: &[u64]) -> BTreeSet<u64> {
        tags.iter().copied().collect()
    }

    #[test]
    fn a_multiple_ack_stops_below_the_first_tag_another_task_holds() {
        let batch = set(&[2, 3, 4, 5]);
        // Nothing else unsettled: the whole batch.
        assert_eq!(
            multiple_ack_limit(&set(&[2, 3, 4, 5]), &batch, &[2, 3, 4, 5]),
            Some(5)
        );
        // Tag 1 is another handler's, still running: nothing may be acked with `multiple`.
        assert_eq!(
            multiple_ack_limit(&set(&[1, 2, 3, 4, 5]), &batch, &[2, 3, 4, 5]),
            None
        );
        // Another's tag in the middle: up to below it.
        let batch = set(&[1, 2, 4, 5]);
        assert_eq!(
            multiple_ack_limit(&set(&[1, 2, 3, 4, 5]), &batch, &[1, 2, 4, 5]),
            Some(2)
        );
        // Later tags (other batches forming) do not matter; a settled failure (3) is ours.
        let batch = set(&[1, 2, 3]);
        assert_eq!(
            multiple_ack_limit(&set(&[1, 2, 3, 9]), &batch, &[1, 2]),
            Some(2)
        );
        assert_eq!(
            multiple_ack_limit(&set(&[1, 2, 3]), &batch, &[1, 3]),
            Some(3)
        );
        assert_eq!(multiple_ack_limit(&set(&[1, 2, 3]), &batch, &[]), None);
    }
}
