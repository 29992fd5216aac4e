//! The consumer: decode, route by event type, settle after the handler returned.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions,
    BasicPublishOptions, BasicQosOptions, BasicRejectOptions, ConfirmSelectOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection};
use tokio::task::JoinSet;
use tracing::Instrument;
use uuid::Uuid;

use super::handler_error::HandlerError;
use super::publisher::{header_str, wait_confirm};
use super::topology::{QueueSpec, backoff};
use crate::error::Result;
use crate::events::{Envelope, Event, EventPayload};

/// Header holding the delivery attempt (1 on first publish; absent means 1).
///
/// ```
/// assert_eq!(prost_db::amqp::ATTEMPT_HEADER, "x-prost-attempt");
/// ```
pub const ATTEMPT_HEADER: &str = "x-prost-attempt";
/// Header on retry and dead-lettered copies: the handler's last error.
///
/// ```
/// assert_eq!(prost_db::amqp::LAST_ERROR_HEADER, "x-prost-last-error");
/// ```
pub const LAST_ERROR_HEADER: &str = "x-prost-last-error";
/// Header on dead-lettered copies: why the message was given up.
///
/// ```
/// assert_eq!(prost_db::amqp::DEAD_LETTER_REASON_HEADER, "x-prost-dead-letter-reason");
/// ```
pub const DEAD_LETTER_REASON_HEADER: &str = "x-prost-dead-letter-reason";

type HandlerFuture = Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send>>;
type Handler = Arc<dyn Fn(Delivered) -> HandlerFuture + Send + Sync>;

/// A decoded delivery, as handlers see it.
///
/// ```
/// use prost_db::amqp::Delivered;
/// use prost_db::events::Envelope;
///
/// let delivered = Delivered::new(Envelope::new("Ping", "1", "ping", "c"), br#"{}"#.to_vec());
/// assert_eq!(delivered.attempt, 1);
/// ```
#[derive(Debug, Clone)]
pub struct Delivered {
    /// The event's envelope.
    pub envelope: Envelope,
    /// The whole JSON body (envelope and payload).
    pub body: Arc<[u8]>,
    /// 1 for the first try, +1 for every retry through the retry queue.
    pub attempt: u32,
    /// Whether the broker marked this delivery as redelivered (a consumer died or
    /// disconnected before settling it).
    pub redelivered: bool,
    /// The routing key the message was published with.
    pub routing_key: String,
}

impl Delivered {
    /// A delivery of `body` with `envelope`, first attempt (for tests and direct calls).
    ///
    /// ```
    /// use prost_db::amqp::Delivered;
    /// use prost_db::events::Envelope;
    /// let delivered = Delivered::new(Envelope::new("Ping", "1", "ping", "c"), b"{}".to_vec());
    /// assert!(!delivered.redelivered);
    /// ```
    pub fn new(envelope: Envelope, body: Vec<u8>) -> Self {
        Delivered {
            envelope,
            body: body.into(),
            attempt: 1,
            redelivered: false,
            routing_key: String::new(),
        }
    }

    /// Decodes the body as a typed event.
    ///
    /// # Errors
    ///
    /// [`HandlerError::Permanent`] if the payload does not match `P` (a poison message).
    ///
    /// ```
    /// use prost_db::amqp::Delivered;
    /// use prost_db::events::{Event, EventPayload};
    ///
    /// #[derive(serde::Serialize, serde::Deserialize)]
    /// struct Ping { n: u32 }
    /// impl EventPayload for Ping {
    ///     const EVENT_TYPE: &'static str = "Ping";
    ///     const AGGREGATE_TYPE: &'static str = "ping";
    ///     const ROUTING_KEY: &'static str = "ping";
    /// }
    /// let event = Event::new("1", "c", Ping { n: 5 });
    /// let delivered = Delivered::new(event.envelope.clone(), event.to_json().unwrap());
    /// assert_eq!(delivered.decode::<Ping>().unwrap().payload.n, 5);
    /// ```
    pub fn decode<P: EventPayload>(&self) -> Result<Event<P>, HandlerError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            HandlerError::permanent(format!("cannot decode {} payload: {e}", P::EVENT_TYPE))
        })
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
    /// Deliveries sent to the retry queue after a transient failure.
    pub retried: u64,
    /// Deliveries dead-lettered (poison, permanent failure, too many attempts).
    pub dead_lettered: u64,
    /// Deliveries of an event type without a handler, acked and ignored.
    pub ignored: u64,
    /// Deliveries whose settlement failed (channel gone); the broker redelivers them.
    pub unsettled: u64,
    /// Times [`Consumer::run_reconnecting`] re-established a lost connection.
    pub reconnects: u64,
}

/// A consumer of one queue family: routes deliveries by `event_type` to handlers and acks
/// only after the handler returned `Ok`.
///
/// Up to `prefetch` deliveries run concurrently. Shutdown stops taking new deliveries,
/// lets the running handlers finish and settle, and closes the channel, so the broker
/// requeues what was prefetched but not started.
///
/// ```no_run
/// use std::time::Duration;
/// use prost_db::amqp::{self, Consumer, HandlerError, QueueSpec};
///
/// # async fn run(connection: prost_db::amqp::lapin::Connection) -> prost_db::Result<()> {
/// let stats = Consumer::new(QueueSpec::new("products.events"))
///     .prefetch(32)
///     .max_attempts(8)
///     .retry_delay(Duration::from_millis(200), Duration::from_secs(30))
///     .handler("OrderCreated", |delivered| async move {
///         let _ = delivered.envelope.event_id;
///         Ok::<(), HandlerError>(())
///     })
///     .run(&connection, tokio::time::sleep(Duration::from_secs(10)))
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Consumer {
    spec: QueueSpec,
    handlers: HashMap<String, Handler>,
    prefetch: u16,
    max_attempts: u32,
    retry_base: Duration,
    retry_max: Duration,
    dead_letter_unknown: bool,
    ack_before_handling: bool,
    tag: String,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("queue", &self.spec.queue())
            .field("event_types", &self.handlers.keys().collect::<Vec<_>>())
            .field("prefetch", &self.prefetch)
            .field("max_attempts", &self.max_attempts)
            .finish_non_exhaustive()
    }
}

impl Consumer {
    /// A consumer of `spec`'s work queue with the defaults: prefetch 16, 10 attempts,
    /// retries after 200 ms doubling up to 30 s (about 80 s in all, enough to ride out a
    /// database restart), unknown event types acked and ignored.
    ///
    /// ```
    /// let consumer = prost_db::amqp::Consumer::new(prost_db::amqp::QueueSpec::new("cart.events"));
    /// assert!(format!("{consumer:?}").contains("cart.events.queue"));
    /// ```
    pub fn new(spec: QueueSpec) -> Self {
        Consumer {
            spec,
            handlers: HashMap::new(),
            prefetch: 16,
            max_attempts: 10,
            retry_base: Duration::from_millis(200),
            retry_max: Duration::from_secs(30),
            dead_letter_unknown: false,
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

    /// Delay before the first retry and the cap of its doubling.
    ///
    /// ```
    /// use std::time::Duration;
    /// use prost_db::amqp::{Consumer, QueueSpec};
    /// let consumer = Consumer::new(QueueSpec::new("cart.events"))
    ///     .retry_delay(Duration::from_secs(1), Duration::from_secs(60));
    /// # let _ = consumer;
    /// ```
    #[must_use]
    pub fn retry_delay(mut self, base: Duration, max: Duration) -> Self {
        self.retry_base = base;
        self.retry_max = max.max(base);
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

    /// Only for tests that demonstrate why acking must wait for the commit: ack every
    /// delivery before its handler runs. A crash then loses messages.
    #[doc(hidden)]
    #[must_use]
    pub fn unsafe_ack_before_handling(mut self, yes: bool) -> Self {
        self.ack_before_handling = yes;
        self
    }

    /// Routes deliveries whose `event_type` is `event_type` to `handler`.
    ///
    /// ```
    /// use prost_db::amqp::{Consumer, HandlerError, QueueSpec};
    ///
    /// let consumer = Consumer::new(QueueSpec::new("orders.events"))
    ///     .handler("OrderShipped", |_delivered| async { Ok::<(), HandlerError>(()) });
    /// # let _ = consumer;
    /// ```
    #[must_use]
    pub fn handler<F, Fut>(mut self, event_type: &str, handler: F) -> Self
    where
        F: Fn(Delivered) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        self.handlers.insert(
            event_type.to_owned(),
            Arc::new(move |delivered| Box::pin(handler(delivered))),
        );
        self
    }

    /// Routes events of type `P` to `handler`, decoding the payload first (a payload that
    /// does not decode is dead-lettered).
    ///
    /// ```
    /// use prost_db::amqp::{Consumer, HandlerError, QueueSpec};
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
    ///         Ok::<(), HandlerError>(())
    ///     });
    /// # let _ = consumer;
    /// ```
    #[must_use]
    pub fn on<P, F, Fut>(self, handler: F) -> Self
    where
        P: EventPayload,
        F: Fn(Event<P>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        self.handler(P::EVENT_TYPE, move |delivered: Delivered| {
            let handler = Arc::clone(&handler);
            async move { handler(delivered.decode::<P>()?).await }
        })
    }

    /// Consumes until `shutdown` completes (or the broker cancels the consumer), then
    /// finishes the deliveries in flight and returns what it did.
    ///
    /// # Errors
    ///
    /// [`Error::Amqp`](crate::Error::Amqp) if the channel cannot be set up or the connection
    /// is lost; deliveries not yet settled are redelivered by the broker. To ride out a lost
    /// connection instead, use [`run_reconnecting`](Self::run_reconnecting).
    ///
    /// ```no_run
    /// use prost_db::amqp::{Consumer, QueueSpec};
    /// # async fn run(connection: prost_db::amqp::lapin::Connection) -> prost_db::Result<()> {
    /// let stats = Consumer::new(QueueSpec::new("cart.events"))
    ///     .run(&connection, async { let _ = tokio::signal::ctrl_c().await; })
    ///     .await?;
    /// assert_eq!(stats.unsettled, 0);
    /// # Ok(()) }
    /// ```
    #[tracing::instrument(name = "prost_db.consume", skip_all, fields(queue = %self.spec.queue()))]
    pub async fn run(
        self,
        connection: &Connection,
        shutdown: impl Future<Output = ()>,
    ) -> Result<ConsumerStats> {
        let consumer = Arc::new(self);
        tokio::pin!(shutdown);
        let mut stats = ConsumerStats::default();
        let ended = consumer
            .session(connection, shutdown.as_mut(), &mut stats)
            .await;
        tracing::info!(?stats, "consumer stopped");
        match ended {
            Ended::Shutdown | Ended::Cancelled => Ok(stats),
            Ended::ChannelClosed(e) | Ended::Lost(e) | Ended::Refused(e) => Err(e.into()),
        }
    }

    /// Connects to `url` and consumes like [`run`](Self::run), but when the connection is
    /// lost (broker restart, network cut, connection closed by an operator) it reconnects
    /// with backoff (100 ms doubling up to 5 s, without limit) and consumes again, until
    /// `shutdown` completes. Deliveries that were in flight when the connection went are
    /// redelivered by the broker; idempotent handlers turn those that had committed into
    /// duplicates. Handlers still running when the connection goes get 5 s to finish
    /// (their results cannot be acked any more), then are cancelled, which rolls back what
    /// they had not committed. [`ConsumerStats::reconnects`] counts the reconnections.
    ///
    /// If the broker cancels the consumer (a queue moved on failover) or closes the channel
    /// (its `consumer_timeout`, say) while the connection stays up, it subscribes again on a
    /// new channel. The first connection is not retried, so that a wrong URL, wrong
    /// credentials or a broker that is down make the service fail at startup instead of
    /// waiting in silence.
    ///
    /// # Errors
    ///
    /// [`Error::AmqpConnect`](crate::Error::AmqpConnect) if the first connection fails;
    /// [`Error::Amqp`](crate::Error::Amqp) if the broker refuses the channel or the consumer
    /// while the connection stays up (a missing queue, say), which reconnecting cannot fix.
    ///
    /// ```no_run
    /// use prost_db::amqp::{self, Consumer, QueueSpec};
    /// # async fn run() -> prost_db::Result<()> {
    /// let stats = Consumer::new(QueueSpec::new("cart.events"))
    ///     .run_reconnecting(&amqp::url_from_env(), async {
    ///         let _ = tokio::signal::ctrl_c().await;
    ///     })
    ///     .await?;
    /// println!("acked {}, reconnected {} times", stats.acked, stats.reconnects);
    /// # Ok(()) }
    /// ```
    #[tracing::instrument(name = "prost_db.consume", skip_all, fields(queue = %self.spec.queue()))]
    pub async fn run_reconnecting(
        self,
        url: &str,
        shutdown: impl Future<Output = ()>,
    ) -> Result<ConsumerStats> {
        let consumer = Arc::new(self);
        tokio::pin!(shutdown);
        let mut stats = ConsumerStats::default();
        let mut connection = super::connect(url).await?;
        loop {
            let ended = consumer
                .session(&connection, shutdown.as_mut(), &mut stats)
                .await;
            match ended {
                Ended::Shutdown => break,
                Ended::Refused(e) => {
                    let _ = connection.close(200, "consumer stopped".into()).await;
                    return Err(e.into());
                }
                Ended::Cancelled | Ended::ChannelClosed(_) => {
                    // The connection is fine: subscribe again on a new channel. If the
                    // queue is gone, that is refused and returned.
                    tracing::warn!("consumer cancelled or channel closed; subscribing again");
                    tokio::select! {
                        biased;
                        () = shutdown.as_mut() => break,
                        () = tokio::time::sleep(super::RECONNECT_DELAY_MIN) => {}
                    }
                }
                Ended::Lost(error) => {
                    tracing::warn!(%error, "connection lost; reconnecting");
                    let _ = connection.close(200, "consumer stopped".into()).await;
                    match super::reconnect(url, shutdown.as_mut()).await {
                        Some(live) => connection = live,
                        None => break,
                    }
                    stats.reconnects += 1;
                    tracing::info!(reconnects = stats.reconnects, "reconnected");
                }
            }
        }
        let _ = connection.close(200, "consumer stopped".into()).await;
        tracing::info!(?stats, "consumer stopped");
        Ok(stats)
    }

    /// One channel's consumption, until shutdown, a broker cancel or an error; settles or
    /// gives back everything it took before returning.
    async fn session<S: Future<Output = ()>>(
        self: &Arc<Self>,
        connection: &Connection,
        mut shutdown: Pin<&mut S>,
        stats: &mut ConsumerStats,
    ) -> Ended {
        let setup = async {
            let channel = connection.create_channel().await?;
            channel
                .basic_qos(self.prefetch, BasicQosOptions::default())
                .await?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            let deliveries = channel
                .basic_consume(
                    self.spec.queue().into(),
                    self.tag.as_str().into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            Ok::<_, lapin::Error>((channel, deliveries))
        };
        let (channel, mut deliveries) = match setup.await {
            Ok(ready) => ready,
            Err(e) if connection.status().connected() => return Ended::Refused(e),
            Err(e) => return Ended::Lost(e),
        };

        let ctx = Arc::new(Context {
            channel: channel.clone(),
            retry_queue: self.spec.retry_queue(),
            dead_letter_exchange: self.spec.dead_letter_exchange(),
            consumer: Arc::clone(self),
        });
        let mut in_flight: JoinSet<Settled> = JoinSet::new();
        let ended = loop {
            tokio::select! {
                biased;
                () = shutdown.as_mut() => break Ended::Shutdown,
                Some(done) = in_flight.join_next(), if !in_flight.is_empty() => {
                    stats.record(done.unwrap_or(Settled::Unsettled));
                }
                next = deliveries.next() => match next {
                    Some(Ok(delivery)) => {
                        in_flight.spawn(Arc::clone(&ctx).process(delivery));
                    }
                    Some(Err(e)) if connection.status().connected() => {
                        break Ended::ChannelClosed(e);
                    }
                    Some(Err(e)) => break Ended::Lost(e),
                    None if connection.status().connected() => break Ended::Cancelled,
                    None => {
                        let state = if connection.status().errored() {
                            lapin::ConnectionState::Error
                        } else {
                            lapin::ConnectionState::Closed
                        };
                        break Ended::Lost(lapin::ErrorKind::InvalidConnectionState(state).into());
                    }
                },
            }
        };

        if matches!(ended, Ended::Shutdown | Ended::Cancelled) {
            // Stop the flow; prefetched deliveries not yet started are requeued on close.
            let _ = channel
                .basic_cancel(self.tag.as_str().into(), BasicCancelOptions::default())
                .await;
        }
        settle_in_flight(&mut in_flight, stats, connection, &channel).await;
        let _ = channel.close(200, "consumer stopped".into()).await;
        ended
    }
}

/// How long handlers in flight may run on after their connection was lost.
const LOST_CONNECTION_GRACE: Duration = Duration::from_secs(5);

/// Why a session ended.
enum Ended {
    Shutdown,
    /// The broker cancelled the consumer (its queue was deleted, or moved on failover).
    Cancelled,
    /// The channel closed under a live connection (e.g. the broker's `consumer_timeout`).
    ChannelClosed(lapin::Error),
    /// The connection is gone: reconnecting may help.
    Lost(lapin::Error),
    /// The broker refused the channel or the consumer on a live connection (a missing
    /// queue, say): neither subscribing again nor reconnecting will help.
    Refused(lapin::Error),
}

/// Waits for the handlers in flight and records how they settled. While the channel is
/// open they take as long as they need. Once it is gone nothing can be settled any more
/// (the broker redelivers it all): handlers get a grace period to finish their
/// transactions (a committed one makes the redelivery a duplicate), then are cancelled,
/// which rolls back what they had not committed. The grace is also a bound: an ack issued
/// just as the connection died may never complete.
async fn settle_in_flight(
    in_flight: &mut JoinSet<Settled>,
    stats: &mut ConsumerStats,
    connection: &Connection,
    channel: &Channel,
) {
    loop {
        match tokio::time::timeout(Duration::from_millis(100), in_flight.join_next()).await {
            Ok(Some(done)) => stats.record(done.unwrap_or(Settled::Unsettled)),
            Ok(None) => return,
            Err(_) if connection.status().connected() && channel.status().connected() => {}
            Err(_) => break,
        }
    }
    let drained = tokio::time::timeout(LOST_CONNECTION_GRACE, async {
        while let Some(done) = in_flight.join_next().await {
            stats.record(done.unwrap_or(Settled::Unsettled));
        }
    })
    .await;
    if drained.is_err() {
        stats.unsettled += in_flight.len() as u64;
        in_flight.shutdown().await;
    }
}

struct Context {
    channel: Channel,
    retry_queue: String,
    dead_letter_exchange: String,
    consumer: Arc<Consumer>,
}

enum Settled {
    Acked,
    Retried,
    DeadLettered,
    Ignored,
    Unsettled,
}

impl ConsumerStats {
    fn record(&mut self, settled: Settled) {
        match settled {
            Settled::Acked => self.acked += 1,
            Settled::Retried => self.retried += 1,
            Settled::DeadLettered => self.dead_lettered += 1,
            Settled::Ignored => self.ignored += 1,
            Settled::Unsettled => self.unsettled += 1,
        }
    }
}

impl Context {
    async fn process(self: Arc<Self>, delivery: Delivery) -> Settled {
        let attempt = attempt_of(&delivery);
        let envelope = match decode_envelope(&delivery.data) {
            Ok(envelope) => envelope,
            Err(reason) => {
                tracing::warn!(%reason, "poison message");
                return self.dead_letter(delivery, &reason, None).await;
            }
        };
        let span = tracing::info_span!(
            "prost_db.handle",
            event_id = %envelope.event_id,
            event_type = %envelope.event_type,
            attempt,
            outcome = tracing::field::Empty,
        );
        self.handle(delivery, envelope, attempt, span.clone())
            .instrument(span)
            .await
    }

    async fn handle(
        &self,
        delivery: Delivery,
        envelope: Envelope,
        attempt: u32,
        span: tracing::Span,
    ) -> Settled {
        let Some(handler) = self.consumer.handlers.get(&envelope.event_type).cloned() else {
            if self.consumer.dead_letter_unknown {
                let reason = format!("no handler for event type {:?}", envelope.event_type);
                return self.dead_letter(delivery, &reason, None).await;
            }
            return match delivery.acker.ack(BasicAckOptions::default()).await {
                Ok(_) => Settled::Ignored,
                Err(_) => Settled::Unsettled,
            };
        };
        if self.consumer.ack_before_handling
            && delivery
                .acker
                .ack(BasicAckOptions::default())
                .await
                .is_err()
        {
            return Settled::Unsettled;
        }

        let delivered = Delivered {
            envelope,
            body: delivery.data.as_slice().into(),
            attempt,
            redelivered: delivery.redelivered,
            routing_key: delivery.routing_key.as_str().to_owned(),
        };
        let result = AssertUnwindSafe(handler(delivered))
            .catch_unwind()
            .await
            .unwrap_or_else(|_| Err(HandlerError::permanent("handler panicked")));
        if self.consumer.ack_before_handling {
            return Settled::Acked;
        }

        match result {
            Ok(()) => {
                span.record("outcome", "acked");
                // If the ack is lost, the redelivery is a duplicate the handler skips.
                match delivery.acker.ack(BasicAckOptions::default()).await {
                    Ok(_) => Settled::Acked,
                    Err(e) => {
                        tracing::warn!(error = %e, "ack failed; the broker will redeliver");
                        Settled::Unsettled
                    }
                }
            }
            Err(error @ HandlerError::Transient(_)) if attempt < self.consumer.max_attempts => {
                span.record("outcome", "retry");
                tracing::warn!(%error, "transient failure; retrying");
                self.retry(delivery, attempt, &error).await
            }
            Err(error @ HandlerError::Transient(_)) => {
                span.record("outcome", "dead-lettered");
                let reason = format!("too many attempts ({attempt}): {error}");
                self.dead_letter(delivery, &reason, Some(&error)).await
            }
            Err(error) => {
                span.record("outcome", "dead-lettered");
                let reason = error.to_string();
                self.dead_letter(delivery, &reason, Some(&error)).await
            }
        }
    }

    /// Publishes a delayed copy with the next attempt number, then acks the original; if
    /// the copy is not confirmed, the original is requeued instead.
    async fn retry(&self, delivery: Delivery, attempt: u32, error: &HandlerError) -> Settled {
        let delay = backoff(self.consumer.retry_base, self.consumer.retry_max, attempt);
        let mut headers = headers_of(&delivery);
        headers.insert(
            ATTEMPT_HEADER.into(),
            AMQPValue::LongLongInt(i64::from(attempt) + 1),
        );
        headers.insert(LAST_ERROR_HEADER.into(), header_str(&error.to_string()));
        let properties = delivery
            .properties
            .clone()
            .with_headers(headers)
            .with_expiration(delay.as_millis().to_string().into());
        let published = self
            .channel
            .basic_publish(
                "".into(),
                self.retry_queue.as_str().into(),
                BasicPublishOptions::default(),
                &delivery.data,
                properties,
            )
            .await;
        let confirmed = match published {
            Ok(confirm) => wait_confirm(confirm, "", &self.retry_queue).await,
            Err(e) => Err(e.into()),
        };
        match confirmed {
            Ok(()) => match delivery.acker.ack(BasicAckOptions::default()).await {
                Ok(_) => Settled::Retried,
                Err(_) => Settled::Unsettled,
            },
            Err(e) => {
                tracing::warn!(error = %e, "retry copy not confirmed; requeueing");
                let requeue = BasicNackOptions {
                    requeue: true,
                    ..BasicNackOptions::default()
                };
                let _ = delivery.acker.nack(requeue).await;
                Settled::Unsettled
            }
        }
    }

    /// Publishes a copy carrying `reason` to the dead-letter exchange, then acks the
    /// original; if that fails, rejects the original without requeue (the queue's DLX still
    /// catches it, without our reason).
    async fn dead_letter(
        &self,
        delivery: Delivery,
        reason: &str,
        error: Option<&HandlerError>,
    ) -> Settled {
        tracing::warn!(%reason, "dead-lettering");
        let mut headers = headers_of(&delivery);
        headers.insert(DEAD_LETTER_REASON_HEADER.into(), header_str(reason));
        if let Some(error) = error {
            headers.insert(LAST_ERROR_HEADER.into(), header_str(&error.to_string()));
        }
        headers.insert(
            "x-prost-original-exchange".into(),
            header_str(delivery.exchange.as_str()),
        );
        let properties = delivery.properties.clone().with_headers(headers);
        let published = self
            .channel
            .basic_publish(
                self.dead_letter_exchange.as_str().into(),
                delivery.routing_key.clone(),
                BasicPublishOptions::default(),
                &delivery.data,
                properties,
            )
            .await;
        let confirmed = match published {
            Ok(confirm) => {
                wait_confirm(
                    confirm,
                    &self.dead_letter_exchange,
                    delivery.routing_key.as_str(),
                )
                .await
            }
            Err(e) => Err(e.into()),
        };
        let settled = match confirmed {
            Ok(()) => delivery.acker.ack(BasicAckOptions::default()).await,
            Err(_) => {
                delivery
                    .acker
                    .reject(BasicRejectOptions { requeue: false })
                    .await
            }
        };
        match settled {
            Ok(_) => Settled::DeadLettered,
            Err(_) => Settled::Unsettled,
        }
    }
}

fn headers_of(delivery: &Delivery) -> FieldTable {
    delivery.properties.headers().clone().unwrap_or_default()
}

fn attempt_of(delivery: &Delivery) -> u32 {
    let Some(headers) = delivery.properties.headers() else {
        return 1;
    };
    let n = match headers.inner().get(ATTEMPT_HEADER) {
        Some(AMQPValue::LongLongInt(n)) => *n,
        Some(AMQPValue::LongInt(n)) => i64::from(*n),
        Some(AMQPValue::LongUInt(n)) => i64::from(*n),
        Some(AMQPValue::ShortInt(n)) => i64::from(*n),
        Some(AMQPValue::ShortUInt(n)) => i64::from(*n),
        _ => 1,
    };
    u32::try_from(n.max(1)).unwrap_or(u32::MAX)
}

/// Reads the envelope, naming precisely what is wrong with a poison message.
fn decode_envelope(body: &[u8]) -> std::result::Result<Envelope, String> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("undecodable: not JSON ({e})"))?;
    let Some(object) = value.as_object() else {
        return Err("undecodable: not a JSON object".to_owned());
    };
    match object.get("event_id") {
        None | Some(serde_json::Value::Null) => return Err("missing event_id".to_owned()),
        Some(serde_json::Value::String(s)) if Uuid::parse_str(s).is_ok() => {}
        Some(other) => return Err(format!("invalid event_id {other}: expected a UUID")),
    }
    if !object
        .get("event_type")
        .is_some_and(serde_json::Value::is_string)
    {
        return Err("missing event_type".to_owned());
    }
    serde_json::from_value(value).map_err(|e| format!("undecodable envelope: {e}"))
}

#[cfg(test)]
mod tests {
    use super::decode_envelope;

    #[test]
    fn poison_reasons_are_precise() {
        assert!(
            decode_envelope(b"{nope")
                .unwrap_err()
                .starts_with("undecodable")
        );
        assert_eq!(
            decode_envelope(br#"{"event_type":"X"}"#).unwrap_err(),
            "missing event_id"
        );
        assert!(
            decode_envelope(br#"{"event_id":"42","event_type":"X"}"#)
                .unwrap_err()
                .starts_with("invalid event_id")
        );
        let ok = br#"{"event_id":"0195f3c5-8f2a-7cc1-9a6e-000000000001","event_type":"X",
            "aggregate_id":"1","aggregate_type":"x","version":"1",
            "timestamp":"2026-01-01T00:00:00Z","correlation_id":"c","extra":1}"#;
        assert_eq!(decode_envelope(ok).unwrap().event_type, "X");
    }
}
