//! The consumer's builder and handler registry: routes deliveries by event type to
//! handlers, one at a time or in batches; the session loop, settlement, batch mode and
//! delivery decoding live in the submodules.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use uuid::Uuid;

use super::QueueSpec;
use super::handler_error::DeliveryError;
use crate::error::Result;
use crate::events::{Event, EventPayload};

mod batch;
mod delivery;
mod lanes;
mod session;
mod settle;
mod settle_batch;

pub use batch::Batching;
pub use delivery::{ATTEMPT_HEADER, Delivered};
pub use settle::{DEAD_LETTER_REASON_HEADER, LAST_ERROR_HEADER};

/// A handler's run: `Ok(true)` for a duplicate.
type HandlerFuture = Pin<Box<dyn Future<Output = Result<bool, DeliveryError>> + Send>>;
type Handler = Arc<dyn Fn(Delivered) -> HandlerFuture + Send + Sync>;

/// What a handler returns on success: `()`, or an `#[idempotent_handler]`'s
/// [`Outcome`](crate::idempotency::Outcome), whose duplicates the consumer counts apart
/// ([`ConsumerStats::duplicates`] and the `duplicate` outcome of the deliveries metric).
///
/// ```
/// use prost_db::amqp::Handled;
/// use prost_db::idempotency::Outcome;
///
/// assert!(!().is_duplicate());
/// assert!(Outcome::Duplicate(7).is_duplicate());
/// ```
pub trait Handled: Send + 'static {
    /// Whether the delivery was a duplicate of one already processed.
    fn is_duplicate(&self) -> bool;
}

impl Handled for () {
    fn is_duplicate(&self) -> bool {
        false
    }
}

impl<T: Send + 'static> Handled for crate::idempotency::Outcome<T> {
    fn is_duplicate(&self) -> bool {
        crate::idempotency::Outcome::is_duplicate(self)
    }
}

/// What a consumer did, returned when it stops.
///
/// ```
/// let stats = prost_db::amqp::ConsumerStats::default();
/// assert_eq!(stats.acked + stats.retried + stats.dead_lettered, 0);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConsumerStats {
    /// Deliveries acked after their handler succeeded.
    pub acked: u64,
    /// Of the acked deliveries, those the handler reported as duplicates (see [`Handled`]).
    pub duplicates: u64,
    /// Deliveries sent to the retry queue after a transient failure.
    pub retried: u64,
    /// Deliveries dead-lettered (poison, permanent failure, too many attempts).
    pub dead_lettered: u64,
    /// Deliveries of an event type without a handler, acked and ignored.
    pub ignored: u64,
    /// Deliveries given back to the queue with a requeueing nack (the session stopped during a
    /// retry in place, or a retry or dead-letter copy went nowhere); the broker redelivers them.
    pub requeued: u64,
    /// Deliveries whose settlement did not reach the broker (an ack that failed, or that lapin
    /// did not send because the channel was gone); the broker redelivers them.
    pub unsettled: u64,
    /// Times [`Consumer::run_reconnecting`] re-established a lost connection.
    pub reconnects: u64,
}

/// A consumer of one queue family: routes deliveries by `event_type` to handlers and acks
/// only after the handler returned `Ok`.
///
/// Up to `prefetch` deliveries run concurrently, one at a time per handler run or, for the
/// event types registered with [`on_batch`](Self::on_batch), in batches. Shutdown stops taking new deliveries,
/// lets the running handlers finish and settle, and closes the channel, so the broker
/// requeues what was prefetched but not started.
///
/// ```no_run
/// use std::time::Duration;
/// use prost_db::amqp::{self, Consumer, DeliveryError, QueueSpec};
///
/// # async fn run(connection: prost_db::amqp::lapin::Connection) -> prost_db::Result<()> {
/// let stats = Consumer::new(QueueSpec::new("products.events"))
///     .prefetch(32)
///     .max_attempts(8)
///     .handler("OrderCreated", |delivered| async move {
///         let _ = delivered.envelope.event_id;
///         Ok::<(), DeliveryError>(())
///     })
///     .run(&connection, tokio::time::sleep(Duration::from_secs(10)))
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Consumer {
    spec: QueueSpec,
    handlers: HashMap<String, Handler>,
    batches: HashMap<String, Arc<batch::BatchHandler>>,
    batch_faults: batch::BatchFaults,
    prefetch: u16,
    max_attempts: u32,
    dead_letter_unknown: bool,
    serialize_by_aggregate: bool,
    ack_before_handling: bool,
    tag: String,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("queue", &self.spec.queue())
            .field("event_types", &self.handlers.keys().collect::<Vec<_>>())
            .field(
                "batched_event_types",
                &self.batches.keys().collect::<Vec<_>>(),
            )
            .field("prefetch", &self.prefetch)
            .field("max_attempts", &self.max_attempts)
            .field("serialize_by_aggregate", &self.serialize_by_aggregate)
            .finish_non_exhaustive()
    }
}

impl Consumer {
    /// A consumer of `spec`'s work queue with the defaults: prefetch 16, 10 attempts,
    /// retries through `spec`'s delay tiers (by default 200 ms, 1 s, 5 s, then 30 s: about
    /// three minutes in all, enough to ride out a database restart), unknown event types
    /// acked and ignored.
    ///
    /// ```
    /// let consumer = prost_db::amqp::Consumer::new(prost_db::amqp::QueueSpec::new("cart.events"));
    /// assert!(format!("{consumer:?}").contains("cart.events.queue"));
    /// ```
    pub fn new(spec: QueueSpec) -> Self {
        Consumer {
            spec,
            handlers: HashMap::new(),
            batches: HashMap::new(),
            batch_faults: batch::BatchFaults::default(),
            prefetch: 16,
            max_attempts: 10,
            dead_letter_unknown: false,
            serialize_by_aggregate: false,
            ack_before_handling: false,
            tag: format!("prost-{}", Uuid::new_v4()),
        }
    }

    /// Deliveries in flight at once (the channel's `basic.qos` prefetch).
    ///
    /// ```
    /// use prost_db::amqp::{Consumer, QueueSpec};
    /// let consumer = Consumer::new(QueueSpec::new("cart.events")).prefetch(64);
    /// assert!(format!("{consumer:?}").contains("prefetch: 64"));
    /// ```
    #[must_use]
    pub fn prefetch(mut self, prefetch: u16) -> Self {
        self.prefetch = prefetch.max(1);
        self
    }

    /// Attempts before a transiently failing message is dead-lettered.
    ///
    /// ```
    /// use prost_db::amqp::{Consumer, QueueSpec};
    /// let consumer = Consumer::new(QueueSpec::new("cart.events")).max_attempts(3);
    /// assert!(format!("{consumer:?}").contains("max_attempts: 3"));
    /// ```
    #[must_use]
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// Dead-letter deliveries whose `event_type` has no handler, instead of acking them
    /// (topic bindings such as `order.*` usually bring types a service ignores).
    ///
    /// ```
    /// use prost_db::amqp::{Consumer, QueueSpec};
    /// let strict = Consumer::new(QueueSpec::new("cart.events")).dead_letter_unknown(true);
    /// # let _ = strict;
    /// ```
    #[must_use]
    pub fn dead_letter_unknown(mut self, yes: bool) -> Self {
        self.dead_letter_unknown = yes;
        self
    }

    /// Runs the deliveries of one aggregate (same `aggregate_type` and `aggregate_id`) one
    /// after another, in the order they arrived, while deliveries of different aggregates
    /// run concurrently up to the prefetch; transient failures are then retried in place,
    /// so a later event never overtakes an earlier one. With a single active consumer per
    /// queue this keeps each aggregate's order across processes: see
    /// [`OrderedQueues`](crate::amqp::OrderedQueues).
    ///
    /// ```
    /// use prost_db::amqp::{Consumer, OrderedQueues};
    /// let ordered = OrderedQueues::new("ledger", 4);
    /// let consumers: Vec<Consumer> = ordered
    ///     .partitions()
    ///     .into_iter()
    ///     .map(|spec| Consumer::new(spec).prefetch(32).serialize_by_aggregate())
    ///     .collect();
    /// # let _ = consumers;
    /// ```
    #[must_use]
    pub fn serialize_by_aggregate(mut self) -> Self {
        self.serialize_by_aggregate = true;
        self
    }

    /// Fault injection for the control tests that show why acking must wait for the commit
    /// (feature `fault-injection`, never for a service): ack every delivery before its
    /// handler runs. A crash then loses messages.
    #[cfg(feature = "fault-injection")]
    #[doc(hidden)]
    #[must_use]
    pub fn unsafe_ack_before_handling(mut self, yes: bool) -> Self {
        self.ack_before_handling = yes;
        self
    }

    /// Routes deliveries whose `event_type` is `event_type` to `handler`.
    ///
    /// ```
    /// use prost_db::amqp::{Consumer, DeliveryError, QueueSpec};
    ///
    /// let consumer = Consumer::new(QueueSpec::new("orders.events"))
    ///     .handler("OrderShipped", |_delivered| async { Ok::<(), DeliveryError>(()) });
    /// # let _ = consumer;
    /// ```
    #[must_use]
    pub fn handler<F, Fut, R>(mut self, event_type: &str, handler: F) -> Self
    where
        F: Fn(Delivered) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, DeliveryError>> + Send + 'static,
        R: Handled,
    {
        self.batches.remove(event_type);
        self.handlers.insert(
            event_type.to_owned(),
            Arc::new(move |delivered| {
                let run = handler(delivered);
                Box::pin(async move { run.await.map(|handled| handled.is_duplicate()) })
            }),
        );
        self
    }

    /// Routes events of type `P` to `handler`, decoding the payload first (a payload that
    /// does not decode is dead-lettered).
    ///
    /// ```
    /// use prost_db::amqp::{Consumer, DeliveryError, QueueSpec};
    /// use prost_db::events::{Event, EventPayload};
    ///
    /// #[derive(serde::Serialize, serde::Deserialize)]
    /// struct OrderConfirmed { order_id: i64 }
    /// impl EventPayload for OrderConfirmed {
    ///     const EVENT_TYPE: &'static str = "OrderConfirmed";
    ///     const AGGREGATE_TYPE: &'static str = "order";
    ///     const ROUTING_KEY: &'static str = "order.confirmed";
    /// }
    ///
    /// let consumer = Consumer::new(QueueSpec::new("orders.events"))
    ///     .on(|event: Event<OrderConfirmed>| async move {
    ///         let _ = event.payload.order_id;
    ///         Ok::<(), DeliveryError>(())
    ///     });
    /// # let _ = consumer;
    /// ```
    #[must_use]
    pub fn on<P, F, Fut, R>(self, handler: F) -> Self
    where
        P: EventPayload,
        F: Fn(Event<P>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, DeliveryError>> + Send + 'static,
        R: Handled,
    {
        let handler = Arc::new(handler);
        self.handler(P::EVENT_TYPE, move |delivered: Delivered| {
            let handler = Arc::clone(&handler);
            async move { handler(delivered.decode::<P>()?).await }
        })
    }
}
