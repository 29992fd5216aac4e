//! The topology: exchanges and queue families, declared and deleted on the broker.

use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, ExchangeKind};

use super::{OrderedQueues, QueueSpec};
use crate::error::Result;

/// Everything a set of services declares on the broker: topic exchanges and queue families.
///
/// Declaring is idempotent, so every service may declare the whole topology at startup, as in
/// the seed.
///
/// ```no_run
/// use prost_db::amqp::{self, QueueSpec, Topology};
///
/// # async fn run() -> prost_db::Result<()> {
/// let topology = Topology::new()
///     .exchange("orders.events")
///     .queue(QueueSpec::new("products.events").bind("orders.events", "order.*"));
/// let connection = amqp::connect(&amqp::url_from_env()).await?;
/// topology.declare(&connection.create_channel().await?).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Topology {
    exchanges: Vec<String>,
    queues: Vec<QueueSpec>,
    ordered: Vec<OrderedQueues>,
}

impl Topology {
    /// An empty topology.
    ///
    /// ```
    /// assert!(prost_db::amqp::Topology::new().queues().is_empty());
    /// ```
    pub fn new() -> Self {
        Topology::default()
    }

    /// The shop's topology, every name prefixed with `prefix` (empty in production, unique
    /// per test). Exchanges `products.events`, `cart.events`, `orders.events`, and a queue
    /// family per service, with the seed's bindings plus the two it was missing (orders
    /// never saw `product.stock.*`, and `product.*` cannot match three-word keys).
    ///
    /// ```
    /// let topology = prost_db::amqp::Topology::shop("");
    /// assert_eq!(topology.exchanges().len(), 3);
    /// assert_eq!(topology.queues()[0].queue(), "products.events.queue");
    /// ```
    pub fn shop(prefix: &str) -> Self {
        let ex = |name: &str| format!("{prefix}{name}");
        Topology::new()
            .exchange(ex("products.events"))
            .exchange(ex("cart.events"))
            .exchange(ex("orders.events"))
            .queue(
                QueueSpec::new(ex("products.events"))
                    .bind(ex("products.events"), "product.*")
                    .bind(ex("orders.events"), "order.*"),
            )
            .queue(
                QueueSpec::new(ex("cart.events"))
                    .bind(ex("products.events"), "product.stock.*")
                    .bind(ex("cart.events"), "cart.#")
                    .bind(ex("orders.events"), "order.failed")
                    .bind(ex("orders.events"), "order.placed"),
            )
            .queue(
                QueueSpec::new(ex("orders.events"))
                    .bind(ex("cart.events"), "cart.checkout.*")
                    .bind(ex("orders.events"), "order.*")
                    .bind(ex("products.events"), "product.stock.*"),
            )
    }

    /// Adds a durable topic exchange.
    ///
    /// ```
    /// let topology = prost_db::amqp::Topology::new().exchange("orders.events");
    /// assert_eq!(topology.exchanges(), &["orders.events".to_owned()]);
    /// ```
    #[must_use]
    pub fn exchange(mut self, name: impl Into<String>) -> Self {
        self.exchanges.push(name.into());
        self
    }

    /// Adds a queue family.
    ///
    /// ```
    /// use prost_db::amqp::{QueueSpec, Topology};
    /// let topology = Topology::new().queue(QueueSpec::new("orders.events"));
    /// assert_eq!(topology.queues().len(), 1);
    /// ```
    #[must_use]
    pub fn queue(mut self, spec: QueueSpec) -> Self {
        self.queues.push(spec);
        self
    }

    /// Adds a family of partition queues that keep each aggregate's events in order
    /// across consumers (see [`OrderedQueues`] for the recipe).
    ///
    /// ```
    /// use prost_db::amqp::{OrderedQueues, Topology};
    /// let topology = Topology::new()
    ///     .exchange("accounts.events")
    ///     .ordered(OrderedQueues::new("ledger", 4).bind("accounts.events", "account.#"));
    /// assert_eq!(topology.ordered_queues()[0].partitions().len(), 4);
    /// ```
    #[must_use]
    pub fn ordered(mut self, ordered: OrderedQueues) -> Self {
        self.ordered.push(ordered);
        self
    }

    /// The ordered queue families.
    ///
    /// ```
    /// assert!(prost_db::amqp::Topology::shop("").ordered_queues().is_empty());
    /// ```
    pub fn ordered_queues(&self) -> &[OrderedQueues] {
        &self.ordered
    }

    /// The exchanges.
    ///
    /// ```
    /// assert_eq!(prost_db::amqp::Topology::shop("").exchanges()[0], "products.events");
    /// ```
    pub fn exchanges(&self) -> &[String] {
        &self.exchanges
    }

    /// The queue families.
    ///
    /// ```
    /// assert_eq!(prost_db::amqp::Topology::shop("").queues().len(), 3);
    /// ```
    pub fn queues(&self) -> &[QueueSpec] {
        &self.queues
    }

    /// Declares every exchange, queue and binding (durable; safe to repeat).
    ///
    /// # Errors
    ///
    /// [`Error::QueueInequivalent`](crate::Error::QueueInequivalent) when a queue exists with
    /// other arguments (a classic work queue from before quorum queues became the default,
    /// say), saying what to do; [`Error::Amqp`](crate::Error::Amqp) for other broker errors.
    ///
    /// ```no_run
    /// # async fn run(channel: prost_db::amqp::lapin::Channel) -> prost_db::Result<()> {
    /// prost_db::amqp::Topology::shop("").declare(&channel).await?;
    /// # Ok(()) }
    /// ```
    pub async fn declare(&self, channel: &Channel) -> Result<()> {
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        for exchange in &self.exchanges {
            channel
                .exchange_declare(
                    exchange.as_str().into(),
                    ExchangeKind::Topic,
                    durable,
                    FieldTable::default(),
                )
                .await?;
        }
        for spec in &self.queues {
            declare_family(channel, spec).await?;
        }
        for ordered in &self.ordered {
            ordered.declare_exchange(channel).await?;
            for spec in ordered.partitions() {
                declare_family(channel, &spec).await?;
            }
            ordered.bind_partitions(channel).await?;
        }
        Ok(())
    }

    /// Deletes every queue and exchange of the topology (for tests; messages are lost).
    ///
    /// # Errors
    ///
    /// [`Error::Amqp`](crate::Error::Amqp) if the channel fails.
    ///
    /// ```no_run
    /// # async fn run(channel: prost_db::amqp::lapin::Channel) -> prost_db::Result<()> {
    /// prost_db::amqp::Topology::shop("test-1.").delete(&channel).await?;
    /// # Ok(()) }
    /// ```
    pub async fn delete(&self, channel: &Channel) -> Result<()> {
        let partitions = self.ordered.iter().flat_map(OrderedQueues::partitions);
        for spec in self.queues.iter().cloned().chain(partitions) {
            let tiers = spec.retry_queues().into_iter().map(|(_, queue)| queue);
            for queue in [spec.queue(), spec.dead_letter_queue()]
                .into_iter()
                .chain(tiers)
            {
                channel
                    .queue_delete(queue.into(), QueueDeleteOptions::default())
                    .await?;
            }
            channel
                .exchange_delete(
                    spec.dead_letter_exchange().into(),
                    ExchangeDeleteOptions::default(),
                )
                .await?;
        }
        let hashes = self.ordered.iter().map(OrderedQueues::hash_exchange);
        for exchange in self.exchanges.iter().cloned().chain(hashes) {
            channel
                .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                .await?;
        }
        Ok(())
    }
}

/// Declares one queue family: its dead-letter exchange and queue, the work queue, the retry
/// tiers and the work queue's bindings.
async fn declare_family(channel: &Channel, spec: &QueueSpec) -> Result<()> {
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    let dlx = spec.dead_letter_exchange();
    channel
        .exchange_declare(
            dlx.as_str().into(),
            ExchangeKind::Topic,
            durable,
            FieldTable::default(),
        )
        .await?;

    let mut work_args = FieldTable::default();
    work_args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(dlx.as_str().into()),
    );
    if let Some(limit) = spec.delivery_limit() {
        work_args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
        work_args.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongLongInt(i64::from(limit)),
        );
    }
    if spec.is_single_active_consumer() {
        work_args.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
    }
    declare_queue(channel, &spec.queue(), work_args).await?;
    declare_queue(channel, &spec.dead_letter_queue(), FieldTable::default()).await?;
    channel
        .queue_bind(
            spec.dead_letter_queue().into(),
            dlx.as_str().into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;

    if !spec.has_retry_delays() {
        return Err(crate::Error::Config(format!(
            "queue family {:?} has no retry delays; give QueueSpec::retry_delays at least one",
            spec.base()
        )));
    }
    // Each tier's messages expire after the same time, at the head, and the broker
    // dead-letters them through the default exchange straight back into the work
    // queue.
    for (delay, queue) in spec.retry_queues() {
        let mut retry_args = FieldTable::default();
        retry_args.insert(
            "x-message-ttl".into(),
            AMQPValue::LongLongInt(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX)),
        );
        retry_args.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString("".into()),
        );
        retry_args.insert(
            "x-dead-letter-routing-key".into(),
            AMQPValue::LongString(spec.queue().into()),
        );
        declare_queue(channel, &queue, retry_args).await?;
    }

    for (exchange, pattern) in spec.bindings() {
        channel
            .queue_bind(
                spec.queue().into(),
                exchange.as_str().into(),
                pattern.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    Ok(())
}

async fn declare_queue(channel: &Channel, name: &str, args: FieldTable) -> Result<()> {
    let declared = channel
        .queue_declare(
            name.into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            args,
        )
        .await;
    match declared {
        Ok(_) => Ok(()),
        Err(error) => match error.kind() {
            // PRECONDITION_FAILED: the queue exists with other arguments.
            lapin::ErrorKind::ProtocolError(amqp) if amqp.get_id() == 406 => {
                Err(crate::Error::QueueInequivalent {
                    queue: name.to_owned(),
                    reason: amqp.get_message().to_string(),
                })
            }
            _ => Err(error.into()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shop_topology_routes_stock_events_to_orders() {
        let topology = Topology::shop("t.");
        let orders = &topology.queues()[2];
        assert_eq!(orders.queue(), "t.orders.events.queue");
        assert!(
            orders
                .bindings()
                .contains(&("t.products.events".into(), "product.stock.*".into()))
        );
    }
}
