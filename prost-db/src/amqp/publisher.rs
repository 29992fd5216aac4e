//! Publishing events with publisher confirms.

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, PublisherConfirm};

use crate::error::{Error, Result};
use crate::events::{Event, EventPayload};

/// Publishes events on a channel in confirm mode: a publish returns only once the broker has
/// taken responsibility for the message.
///
/// Messages are persistent, `application/json`, with `message_id` = `event_id` and
/// `type` = `event_type`.
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
    channel: Channel,
}

impl Publisher {
    /// Opens a channel on `connection` and puts it in confirm mode.
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
        Ok(Publisher { channel })
    }

    /// The channel (in confirm mode).
    ///
    /// ```no_run
    /// # fn run(publisher: prost_db::amqp::Publisher) {
    /// assert!(publisher.channel().status().connected());
    /// # }
    /// ```
    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// Publishes `event` to `exchange` with its type's routing key and waits for the
    /// broker's confirm.
    ///
    /// # Errors
    ///
    /// [`Error::Amqp`] if the channel fails, [`Error::PublishNotConfirmed`] if the broker
    /// nacks, [`Error::EventEncode`] if the payload cannot be serialized.
    ///
    /// See [`Publisher`] for an example.
    pub async fn publish<P: EventPayload>(&self, exchange: &str, event: &Event<P>) -> Result<()> {
        let body = event.to_json().map_err(Error::EventEncode)?;
        let confirm = self
            .send(
                exchange,
                P::ROUTING_KEY,
                &body,
                &event.envelope.event_id.to_string(),
                P::EVENT_TYPE,
                FieldTable::default(),
            )
            .await?;
        wait_confirm(confirm, exchange, P::ROUTING_KEY).await
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
        let confirm = self
            .channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                body,
                persistent_json().with_headers(headers),
            )
            .await?;
        wait_confirm(confirm, exchange, routing_key).await
    }

    /// Publishes without waiting; await the returned confirm (or many of them) later. This
    /// is how batches reach full speed.
    ///
    /// # Errors
    ///
    /// [`Error::Amqp`] if the channel fails.
    ///
    /// ```no_run
    /// # async fn run(publisher: prost_db::amqp::Publisher) -> prost_db::Result<()> {
    /// let confirm = publisher
    ///     .send("orders.events", "order.confirmed", b"{}", "id-1", "OrderConfirmed", Default::default())
    ///     .await?;
    /// assert!(confirm.await.map_err(prost_db::Error::from)?.is_ack());
    /// # Ok(()) }
    /// ```
    pub async fn send(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        message_id: &str,
        event_type: &str,
        headers: FieldTable,
    ) -> Result<PublisherConfirm> {
        Ok(self
            .channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                body,
                persistent_json()
                    .with_message_id(message_id.into())
                    .with_type(event_type.into())
                    .with_headers(headers),
            )
            .await?)
    }
}

/// Waits for one publisher confirm.
///
/// # Errors
///
/// [`Error::PublishNotConfirmed`] on a nack, [`Error::Amqp`] if the channel failed.
pub(crate) async fn wait_confirm(
    confirm: PublisherConfirm,
    exchange: &str,
    routing_key: &str,
) -> Result<()> {
    let confirmation = confirm.await?;
    if confirmation.is_ack() {
        Ok(())
    } else {
        Err(Error::PublishNotConfirmed {
            exchange: exchange.to_owned(),
            routing_key: routing_key.to_owned(),
        })
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
