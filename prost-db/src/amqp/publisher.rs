//! Publishing with publisher confirms: every publish is mandatory, and a message the broker
//! returns (no queue bound for it) or does not confirm in time is a failure.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use lapin::Confirmation;
use lapin::message::BasicReturnMessage;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection};
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::events::{Event, EventPayload};

/// How long a [`Publisher`] waits for the broker to take a batch (publish and confirm)
/// before it gives up on it.
///
/// ```
/// assert_eq!(prost_db::amqp::DEFAULT_CONFIRM_TIMEOUT, std::time::Duration::from_secs(10));
/// ```
pub const DEFAULT_CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

/// Header carrying the event's `aggregate_id` on every message prost-db publishes; the
/// consistent-hash exchange of an [`OrderedQueues`](crate::amqp::OrderedQueues) family
/// hashes it.
///
/// ```
/// assert_eq!(prost_db::amqp::AGGREGATE_ID_HEADER, "x-prost-aggregate-id");
/// ```
pub const AGGREGATE_ID_HEADER: &str = "x-prost-aggregate-id";

/// Publishes on a channel in confirm mode: a publish returns only once the broker has taken
/// responsibility for the message.
///
/// Every publish is `mandatory`: a message that no queue receives comes back
/// ([`Error::PublishReturned`]) instead of being confirmed and dropped. A broker that does
/// not confirm within the [timeout](Self::confirm_timeout) (a memory or disk alarm blocks
/// publishers) gives [`Error::PublishTimedOut`]; the channel is then abandoned, because a
/// late confirm could no longer be told apart from the next ones, and every later publish
/// on this `Publisher` fails the same way: open a new one.
///
/// Messages are persistent, `application/json`, with `message_id` = `event_id`,
/// `type` = `event_type` and the [`AGGREGATE_ID_HEADER`]. Clones share the channel; their
/// publishes take turns.
///
/// ```no_run
/// use prost_db::amqp::{self, Publisher};
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
/// # async fn run() -> prost_db::Result<()> {
/// let connection = amqp::connect(&amqp::url_from_env()).await?;
/// let publisher = Publisher::new(&connection).await?;
/// publisher
///     .publish("orders.events", &Event::new("7", "saga-1", OrderConfirmed { order_id: 7 }))
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Publisher {
    shared: Arc<Shared>,
    confirm_timeout: Duration,
}

#[derive(Debug)]
struct Shared {
    channel: Channel,
    /// One confirm window at a time: every confirm of a window is awaited before the next
    /// starts, so the messages the broker returns during it are the window's own.
    window: tokio::sync::Mutex<()>,
    abandoned: AtomicBool,
}

/// One message of a [`Publisher::publish_all`] batch.
///
/// ```
/// use prost_db::amqp::Message;
///
/// let message = Message::new("orders.events", "order.created", br#"{"n":1}"#)
///     .message_id("0195f3c5-8f2a-7cc1-9a6e-000000000001")
///     .event_type("OrderCreated")
///     .aggregate_id("1001");
/// assert_eq!(message.routing_key(), "order.created");
/// ```
#[derive(Debug, Clone)]
pub struct Message<'a> {
    exchange: &'a str,
    routing_key: &'a str,
    body: &'a [u8],
    properties: BasicProperties,
}

impl<'a> Message<'a> {
    /// A persistent JSON message for `exchange` with `routing_key`.
    ///
    /// ```
    /// let message = prost_db::amqp::Message::new("", "work.queue", b"{}");
    /// assert_eq!(message.exchange(), "");
    /// ```
    pub fn new(exchange: &'a str, routing_key: &'a str, body: &'a [u8]) -> Self {
        Message {
            exchange,
            routing_key,
            body,
            properties: persistent_json(),
        }
    }

    /// The message for `event`, published to `exchange` with its type's routing key;
    /// `body` is the event's JSON ([`Event::to_json`]).
    ///
    /// ```
    /// use prost_db::amqp::Message;
    /// use prost_db::events::{Event, EventPayload};
    /// # #[derive(serde::Serialize, serde::Deserialize)]
    /// # struct Ping { n: u8 }
    /// # impl EventPayload for Ping {
    /// #     const EVENT_TYPE: &'static str = "Ping";
    /// #     const AGGREGATE_TYPE: &'static str = "ping";
    /// #     const ROUTING_KEY: &'static str = "ping.sent";
    /// # }
    /// let event = Event::new("1", "c", Ping { n: 1 });
    /// let body = event.to_json().unwrap();
    /// assert_eq!(Message::event("pings", &event, &body).routing_key(), "ping.sent");
    /// ```
    pub fn event<P: EventPayload>(exchange: &'a str, event: &Event<P>, body: &'a [u8]) -> Self {
        Message::new(exchange, P::ROUTING_KEY, body)
            .message_id(&event.envelope.event_id.to_string())
            .event_type(P::EVENT_TYPE)
            .aggregate_id(&event.envelope.aggregate_id)
    }

    /// Sets the `message_id` property (prost-db uses the `event_id`).
    ///
    /// ```
    /// let message = prost_db::amqp::Message::new("x", "k", b"{}").message_id("id-1");
    /// # let _ = message;
    /// ```
    #[must_use]
    pub fn message_id(mut self, id: &str) -> Self {
        self.properties = self.properties.with_message_id(id.into());
        self
    }

    /// Sets the `type` property (prost-db uses the `event_type`).
    ///
    /// ```
    /// let message = prost_db::amqp::Message::new("x", "k", b"{}").event_type("Ping");
    /// # let _ = message;
    /// ```
    #[must_use]
    pub fn event_type(mut self, event_type: &str) -> Self {
        self.properties = self.properties.with_type(event_type.into());
        self
    }

    /// Sets the [`AGGREGATE_ID_HEADER`].
    ///
    /// ```
    /// let message = prost_db::amqp::Message::new("x", "k", b"{}").aggregate_id("order-7");
    /// # let _ = message;
    /// ```
    #[must_use]
    pub fn aggregate_id(mut self, aggregate_id: &str) -> Self {
        let mut headers = self.properties.headers().clone().unwrap_or_default();
        headers.insert(AGGREGATE_ID_HEADER.into(), header_str(aggregate_id));
        self.properties = self.properties.with_headers(headers);
        self
    }

    /// Adds `headers` to the message's headers.
    ///
    /// ```
    /// use prost_db::amqp::{Message, lapin::types::{AMQPValue, FieldTable}};
    /// let mut headers = FieldTable::default();
    /// headers.insert("x-tenant".into(), AMQPValue::LongString("acme".into()));
    /// let message = Message::new("x", "k", b"{}").headers(headers);
    /// # let _ = message;
    /// ```
    #[must_use]
    pub fn headers(mut self, headers: FieldTable) -> Self {
        let mut all = self.properties.headers().clone().unwrap_or_default();
        for (name, value) in headers.inner() {
            all.insert(name.clone(), value.clone());
        }
        self.properties = self.properties.with_headers(all);
        self
    }

    /// A copy of a delivered message, with its properties (the consumer's retry and
    /// dead-letter copies).
    pub(crate) fn with_properties(mut self, properties: BasicProperties) -> Self {
        self.properties = properties;
        self
    }

    /// The exchange.
    ///
    /// ```
    /// assert_eq!(prost_db::amqp::Message::new("x", "k", b"{}").exchange(), "x");
    /// ```
    pub fn exchange(&self) -> &str {
        self.exchange
    }

    /// The routing key.
    ///
    /// ```
    /// assert_eq!(prost_db::amqp::Message::new("x", "k", b"{}").routing_key(), "k");
    /// ```
    pub fn routing_key(&self) -> &str {
        self.routing_key
    }

    /// Whether the broker returned this message: same exchange and routing key, and the
    /// same `message_id` when both carry one.
    fn is(&self, returned: &BasicReturnMessage) -> bool {
        let delivery = &returned.delivery;
        delivery.exchange.as_str() == self.exchange
            && delivery.routing_key.as_str() == self.routing_key
            && match (
                self.properties.message_id(),
                delivery.properties.message_id(),
            ) {
                (Some(ours), Some(theirs)) => ours == theirs,
                _ => true,
            }
    }

    fn returned(&self, returned: &BasicReturnMessage) -> Error {
        Error::PublishReturned {
            exchange: self.exchange.to_owned(),
            routing_key: self.routing_key.to_owned(),
            reply: format!("{} {}", returned.reply_code, returned.reply_text),
        }
    }

    fn not_confirmed(&self) -> Error {
        Error::PublishNotConfirmed {
            exchange: self.exchange.to_owned(),
            routing_key: self.routing_key.to_owned(),
        }
    }
}

impl Publisher {
    /// Opens a channel on `connection` and puts it in confirm mode, with the
    /// [`DEFAULT_CONFIRM_TIMEOUT`].
    ///
    /// # Errors
    ///
    /// [`Error::Amqp`] if the channel cannot be opened.
    ///
    /// ```no_run
    /// # async fn run(connection: prost_db::amqp::lapin::Connection) -> prost_db::Result<()> {
    /// let publisher = prost_db::amqp::Publisher::new(&connection).await?;
    /// # Ok(()) }
    /// ```
    pub async fn new(connection: &Connection) -> Result<Self> {
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Publisher {
            shared: Arc::new(Shared {
                channel,
                window: tokio::sync::Mutex::new(()),
                abandoned: AtomicBool::new(false),
            }),
            confirm_timeout: DEFAULT_CONFIRM_TIMEOUT,
        })
    }

    /// How long one publish or batch may wait for the broker (sending and confirms
    /// together) before it fails with [`Error::PublishTimedOut`].
    ///
    /// ```no_run
    /// # async fn run(connection: prost_db::amqp::lapin::Connection) -> prost_db::Result<()> {
    /// use std::time::Duration;
    /// let publisher = prost_db::amqp::Publisher::new(&connection)
    ///     .await?
    ///     .confirm_timeout(Duration::from_secs(2));
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn confirm_timeout(mut self, timeout: Duration) -> Self {
        self.confirm_timeout = timeout;
        self
    }

    /// The channel (in confirm mode).
    ///
    /// ```no_run
    /// # fn run(publisher: prost_db::amqp::Publisher) {
    /// assert!(publisher.channel().status().connected());
    /// # }
    /// ```
    pub fn channel(&self) -> &Channel {
        &self.shared.channel
    }

    /// Whether a timed-out publish made this publisher give up its channel; every publish
    /// fails from then on.
    ///
    /// ```no_run
    /// # fn run(publisher: prost_db::amqp::Publisher) {
    /// assert!(!publisher.is_abandoned());
    /// # }
    /// ```
    pub fn is_abandoned(&self) -> bool {
        self.shared.abandoned.load(Ordering::SeqCst)
    }

    /// Publishes `event` to `exchange` with its type's routing key and waits for the
    /// broker's confirm.
    ///
    /// # Errors
    ///
    /// [`Error::PublishReturned`] if no queue is bound for the routing key,
    /// [`Error::PublishNotConfirmed`] if the broker nacks, [`Error::PublishTimedOut`] if it
    /// does not answer in time, [`Error::Amqp`] if the channel fails,
    /// [`Error::EventEncode`] if the payload cannot be serialized.
    ///
    /// See [`Publisher`] for an example.
    pub async fn publish<P: EventPayload>(&self, exchange: &str, event: &Event<P>) -> Result<()> {
        let body = event.to_json().map_err(Error::EventEncode)?;
        self.publish_one(Message::event(exchange, event, &body))
            .await
    }

    /// Publishes raw JSON `body` and waits for the broker's confirm.
    ///
    /// # Errors
    ///
    /// As [`publish`](Self::publish).
    ///
    /// ```no_run
    /// # async fn run(publisher: prost_db::amqp::Publisher) -> prost_db::Result<()> {
    /// publisher.publish_raw("orders.events", "order.created", b"not json", Default::default()).await?;
    /// # Ok(()) }
    /// ```
    pub async fn publish_raw(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        headers: FieldTable,
    ) -> Result<()> {
        self.publish_one(Message::new(exchange, routing_key, body).headers(headers))
            .await
    }

    /// Publishes one message and waits for its confirm.
    pub(crate) async fn publish_one(&self, message: Message<'_>) -> Result<()> {
        let mut outcomes = self.publish_all(std::slice::from_ref(&message)).await?;
        outcomes
            .pop()
            .unwrap_or_else(|| Err(message.not_confirmed()))
    }

    /// Publishes `messages` back to back, then waits for all their confirms: how batches
    /// reach full speed. Returns one outcome per message, in order.
    ///
    /// # Errors
    ///
    /// The outer error means the batch as a whole failed and nothing is known of any
    /// message: [`Error::PublishTimedOut`] (the channel is abandoned) or [`Error::Amqp`].
    /// Each inner error is one message's: [`Error::PublishReturned`] or
    /// [`Error::PublishNotConfirmed`].
    ///
    /// ```no_run
    /// use prost_db::amqp::Message;
    /// # async fn run(publisher: prost_db::amqp::Publisher) -> prost_db::Result<()> {
    /// let bodies = [br#"{"n":1}"#, br#"{"n":2}"#];
    /// let messages: Vec<Message> = bodies
    ///     .iter()
    ///     .map(|body| Message::new("orders.events", "order.confirmed", *body))
    ///     .collect();
    /// for outcome in publisher.publish_all(&messages).await? {
    ///     outcome?;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn publish_all(&self, messages: &[Message<'_>]) -> Result<Vec<Result<()>>> {
        let Some(first) = messages.first() else {
            return Ok(Vec::new());
        };
        let _window = self.shared.window.lock().await;
        let timed_out = || Error::PublishTimedOut {
            exchange: first.exchange.to_owned(),
            routing_key: first.routing_key.to_owned(),
            after: self.confirm_timeout,
        };
        if self.is_abandoned() {
            return Err(timed_out());
        }
        // Dropped before the end (timeout, error, or the caller's own cancellation): confirms
        // may still be pending, so the channel is not used again.
        let abandon = Abandon(Some(&self.shared));
        let deadline = Instant::now() + self.confirm_timeout;
        let mut confirms = Vec::with_capacity(messages.len());
        for message in messages {
            let sent = tokio::time::timeout_at(
                deadline,
                self.shared.channel.basic_publish(
                    message.exchange.into(),
                    message.routing_key.into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..BasicPublishOptions::default()
                    },
                    message.body,
                    message.properties.clone(),
                ),
            )
            .await
            .map_err(|_| timed_out())?;
            confirms.push(sent?);
        }
        let mut outcomes = Vec::with_capacity(messages.len());
        let mut returned = Vec::new();
        for (message, confirm) in messages.iter().zip(confirms) {
            let confirmation = tokio::time::timeout_at(deadline, confirm)
                .await
                .map_err(|_| timed_out())??;
            outcomes.push(match confirmation {
                Confirmation::Ack(back) => {
                    returned.extend(back);
                    Ok(())
                }
                Confirmation::Nack(back) => {
                    returned.extend(back);
                    Err(message.not_confirmed())
                }
                Confirmation::NotRequested => Err(message.not_confirmed()),
            });
        }
        abandon.disarm();
        // The client hands a returned message to whichever confirm completes next, not
        // necessarily its own: match them by what they are.
        for back in &returned {
            let mut matched = false;
            for (message, outcome) in messages.iter().zip(outcomes.iter_mut()) {
                if messages.len() == 1 || message.is(back) {
                    *outcome = Err(message.returned(back));
                    matched = true;
                }
            }
            if matched {
                super::metrics::publish_returned(
                    back.delivery.exchange.as_str(),
                    back.delivery.routing_key.as_str(),
                );
            }
            if !matched {
                tracing::error!(
                    exchange = %back.delivery.exchange,
                    routing_key = %back.delivery.routing_key,
                    "the broker returned a message this batch cannot match"
                );
            }
        }
        Ok(outcomes)
    }
}

/// Abandons the channel when dropped armed.
struct Abandon<'a>(Option<&'a Shared>);

impl Abandon<'_> {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for Abandon<'_> {
    fn drop(&mut self) {
        let Some(shared) = self.0 else { return };
        shared.abandoned.store(true, Ordering::SeqCst);
        tracing::warn!("publisher channel abandoned with confirms outstanding");
        let channel = shared.channel.clone();
        // A blocked broker may never answer the close: bounded, and off the caller's path.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = tokio::time::timeout(
                    Duration::from_secs(5),
                    channel.close(200, "publisher gave up".into()),
                )
                .await;
            });
        }
    }
}

pub(crate) fn persistent_json() -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
}

pub(crate) fn header_str(value: &str) -> AMQPValue {
    AMQPValue::LongString(value.into())
}
