//! Exchanges, queues, dead-letter and retry queues.

use std::time::Duration;

use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, ExchangeKind};

use crate::error::Result;

/// One service's inbound queue and the three queues around it.
///
/// From a base name such as `products.events` it derives the seed's names:
///
/// | name | what |
/// |---|---|
/// | `products.events.queue` | the work queue, dead-lettering to `products.events.dlx` |
/// | `products.events.dlx` | topic exchange for rejected messages |
/// | `products.events.dlq` | bound to the DLX with `#`; poison messages rest here |
/// | `products.events.retry` | delay queue: messages expire back into the work queue |
///
/// ```
/// use prost_db::amqp::QueueSpec;
///
/// let spec = QueueSpec::new("products.events").bind("orders.events", "order.*");
/// assert_eq!(spec.queue(), "products.events.queue");
/// assert_eq!(spec.dead_letter_queue(), "products.events.dlq");
/// assert_eq!(spec.retry_queue(), "products.events.retry");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSpec {
    base: String,
    bindings: Vec<(String, String)>,
    delivery_limit: Option<u32>,
}

impl QueueSpec {
    /// A queue family named after `base` (e.g. `"products.events"`), with no bindings yet.
    pub fn new(base: impl Into<String>) -> Self {
        QueueSpec {
            base: base.into(),
            bindings: Vec::new(),
            delivery_limit: None,
        }
    }

    /// Makes the work queue a quorum queue that dead-letters a message after it was
    /// returned to the queue `limit` times without being settled (`x-delivery-limit`).
    ///
    /// The consumer's attempt count only sees handler failures; this bounds the other kind
    /// of poison message, one that kills the consumer process before it can settle. The
    /// broker dead-letters such a message with `x-first-death-reason: delivery_limit`.
    /// A queue's type cannot change once declared: choose before the first deployment.
    ///
    /// ```
    /// let spec = prost_db::amqp::QueueSpec::new("orders.events").quorum(20);
    /// assert_eq!(spec.delivery_limit(), Some(20));
    /// ```
    #[must_use]
    pub fn quorum(mut self, limit: u32) -> Self {
        self.delivery_limit = Some(limit);
        self
    }

    /// The quorum queue's delivery limit, if [`quorum`](Self::quorum) was chosen.
    ///
    /// ```
    /// assert_eq!(prost_db::amqp::QueueSpec::new("orders.events").delivery_limit(), None);
    /// ```
    pub fn delivery_limit(&self) -> Option<u32> {
        self.delivery_limit
    }

    /// Also receive messages published to `exchange` whose routing key matches `pattern`
    /// (topic syntax: `*` one word, `#` any number of words).
    ///
    /// ```
    /// let spec = prost_db::amqp::QueueSpec::new("orders.events")
    ///     .bind("products.events", "product.stock.*");
    /// assert_eq!(spec.bindings()[0].1, "product.stock.*");
    /// ```
    #[must_use]
    pub fn bind(mut self, exchange: impl Into<String>, pattern: impl Into<String>) -> Self {
        self.bindings.push((exchange.into(), pattern.into()));
        self
    }

    /// The base name.
    ///
    /// ```
    /// assert_eq!(prost_db::amqp::QueueSpec::new("cart.events").base(), "cart.events");
    /// ```
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The work queue consumers read: `<base>.queue`.
    ///
    /// ```
    /// assert_eq!(prost_db::amqp::QueueSpec::new("cart.events").queue(), "cart.events.queue");
    /// ```
    pub fn queue(&self) -> String {
        format!("{}.queue", self.base)
    }

    /// The dead-letter exchange: `<base>.dlx`.
    ///
    /// ```
    /// let spec = prost_db::amqp::QueueSpec::new("cart.events");
    /// assert_eq!(spec.dead_letter_exchange(), "cart.events.dlx");
    /// ```
    pub fn dead_letter_exchange(&self) -> String {
        format!("{}.dlx", self.base)
    }

    /// The dead-letter queue: `<base>.dlq`.
    ///
    /// ```
    /// let spec = prost_db::amqp::QueueSpec::new("cart.events");
    /// assert_eq!(spec.dead_letter_queue(), "cart.events.dlq");
    /// ```
    pub fn dead_letter_queue(&self) -> String {
        format!("{}.dlq", self.base)
    }

    /// The delay queue for retries: `<base>.retry`.
    ///
    /// ```
    /// let spec = prost_db::amqp::QueueSpec::new("cart.events");
    /// assert_eq!(spec.retry_queue(), "cart.events.retry");
    /// ```
    pub fn retry_queue(&self) -> String {
        format!("{}.retry", self.base)
    }

    /// The `(exchange, pattern)` bindings of the work queue.
    ///
    /// ```
    /// let spec = prost_db::amqp::QueueSpec::new("cart.events").bind("cart.events", "cart.#");
    /// assert_eq!(spec.bindings(), &[("cart.events".to_owned(), "cart.#".to_owned())]);
    /// ```
    pub fn bindings(&self) -> &[(String, String)] {
        &self.bindings
    }
}

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
    /// [`Error::Amqp`](crate::Error::Amqp), e.g. when a queue exists with other arguments.
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
            if let Some(limit) = spec.delivery_limit {
                work_args.insert(
                    "x-queue-type".into(),
                    AMQPValue::LongString("quorum".into()),
                );
                work_args.insert(
                    "x-delivery-limit".into(),
                    AMQPValue::LongLongInt(i64::from(limit)),
                );
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

            // Retry copies carry a per-message expiration; on expiry the broker dead-letters
            // them through the default exchange straight back into the work queue.
            let mut retry_args = FieldTable::default();
            retry_args.insert(
                "x-dead-letter-exchange".into(),
                AMQPValue::LongString("".into()),
            );
            retry_args.insert(
                "x-dead-letter-routing-key".into(),
                AMQPValue::LongString(spec.queue().into()),
            );
            declare_queue(channel, &spec.retry_queue(), retry_args).await?;

            for (exchange, pattern) in &spec.bindings {
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
        for spec in &self.queues {
            for queue in [spec.queue(), spec.retry_queue(), spec.dead_letter_queue()] {
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
        for exchange in &self.exchanges {
            channel
                .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                .await?;
        }
        Ok(())
    }
}

async fn declare_queue(channel: &Channel, name: &str, args: FieldTable) -> Result<()> {
    channel
        .queue_declare(
            name.into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            args,
        )
        .await?;
    Ok(())
}

/// The delay before retry number `attempt` (1-based): `base * 2^(attempt-1)`, at most `max`.
pub(crate) fn backoff(base: Duration, max: Duration, attempt: u32) -> Duration {
    let factor = 1u32 << attempt.saturating_sub(1).min(16);
    base.saturating_mul(factor).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(1);
        assert_eq!(backoff(base, max, 1), Duration::from_millis(100));
        assert_eq!(backoff(base, max, 3), Duration::from_millis(400));
        assert_eq!(backoff(base, max, 30), max);
    }

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
