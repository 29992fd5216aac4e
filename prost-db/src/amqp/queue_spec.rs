//! A queue family's specification: its names, queue type, retry tiers and bindings.

use std::time::Duration;

/// The delays of the retry tiers a [`QueueSpec`] declares by default: attempt 1 waits
/// 200 ms, attempt 2 one second, attempt 3 five seconds, every later attempt 30 s.
///
/// ```
/// use std::time::Duration;
/// assert_eq!(prost_db::amqp::DEFAULT_RETRY_DELAYS[0], Duration::from_millis(200));
/// ```
pub const DEFAULT_RETRY_DELAYS: [Duration; 4] = [
    Duration::from_millis(200),
    Duration::from_secs(1),
    Duration::from_secs(5),
    Duration::from_secs(30),
];

/// One service's inbound queue and the queues around it.
///
/// From a base name such as `products.events` it derives the seed's names:
///
/// | name | what |
/// |---|---|
/// | `products.events.queue` | the work queue, dead-lettering to `products.events.dlx` |
/// | `products.events.dlx` | topic exchange for rejected messages |
/// | `products.events.dlq` | bound to the DLX with `#`; poison messages rest here |
/// | `products.events.retry.200ms`, `.retry.1s`, `.retry.5s`, `.retry.30s` | retry tiers: one queue per delay, whose messages expire (queue TTL) back into the work queue |
///
/// A transient failure on attempt `n` sends the delivery to the `n`-th tier (the last one
/// for every later attempt). Each tier holds a single delay, so a message never waits
/// behind a longer one: RabbitMQ expires messages only at the head of a queue, which is
/// why one retry queue with per-message delays would hold a 200 ms retry behind a 30 s one.
///
/// ```
/// use std::time::Duration;
/// use prost_db::amqp::QueueSpec;
///
/// let spec = QueueSpec::new("products.events").bind("orders.events", "order.*");
/// assert_eq!(spec.queue(), "products.events.queue");
/// assert_eq!(spec.dead_letter_queue(), "products.events.dlq");
/// assert_eq!(spec.retry_queues()[0], (Duration::from_millis(200), "products.events.retry.200ms".to_owned()));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSpec {
    base: String,
    bindings: Vec<(String, String)>,
    /// `Some` for a quorum queue, `None` for a classic one.
    delivery_limit: Option<u32>,
    single_active_consumer: bool,
    retry_delays: Vec<Duration>,
    retry_in_place: bool,
}

/// The delivery limit of a [`QueueSpec`]'s quorum work queue unless
/// [`quorum`](QueueSpec::quorum) sets another (RabbitMQ 4's own default).
///
/// ```
/// assert_eq!(prost_db::amqp::DEFAULT_DELIVERY_LIMIT, 20);
/// ```
pub const DEFAULT_DELIVERY_LIMIT: u32 = 20;

impl QueueSpec {
    /// A queue family named after `base` (e.g. `"products.events"`), with no bindings yet.
    pub fn new(base: impl Into<String>) -> Self {
        QueueSpec {
            base: base.into(),
            bindings: Vec::new(),
            delivery_limit: Some(DEFAULT_DELIVERY_LIMIT),
            single_active_consumer: false,
            retry_delays: DEFAULT_RETRY_DELAYS.to_vec(),
            retry_in_place: false,
        }
    }

    /// The retry tiers' delays instead of [`DEFAULT_RETRY_DELAYS`]: attempt `n` waits the
    /// `n`-th shortest, and every attempt past the last tier waits the longest. Delays are
    /// whole milliseconds; duplicates and zero are dropped. Each delay is its own queue
    /// (named after it), so changing them declares new tiers next to the old ones, which
    /// can be deleted once empty.
    ///
    /// ```
    /// use std::time::Duration;
    /// let spec = prost_db::amqp::QueueSpec::new("orders.events")
    ///     .retry_delays([Duration::from_secs(1), Duration::from_millis(50)]);
    /// assert_eq!(spec.retry_queues()[0].1, "orders.events.retry.50ms");
    /// assert_eq!(spec.retry_queues()[1].1, "orders.events.retry.1s");
    /// ```
    #[must_use]
    pub fn retry_delays(mut self, delays: impl IntoIterator<Item = Duration>) -> Self {
        let mut delays: Vec<Duration> = delays
            .into_iter()
            .map(|delay| Duration::from_millis(delay.as_millis().try_into().unwrap_or(u64::MAX)))
            .filter(|delay| !delay.is_zero())
            .collect();
        delays.sort_unstable();
        delays.dedup();
        self.retry_delays = delays;
        self
    }

    /// The retry tiers: each delay and the queue that holds it, shortest first.
    ///
    /// ```
    /// let spec = prost_db::amqp::QueueSpec::new("cart.events");
    /// let names: Vec<String> = spec.retry_queues().into_iter().map(|(_, name)| name).collect();
    /// assert_eq!(names, ["cart.events.retry.200ms", "cart.events.retry.1s", "cart.events.retry.5s", "cart.events.retry.30s"]);
    /// ```
    pub fn retry_queues(&self) -> Vec<(Duration, String)> {
        if self.retry_in_place {
            return Vec::new();
        }
        self.retry_delays
            .iter()
            .map(|&delay| (delay, self.retry_queue_of(delay)))
            .collect()
    }

    /// No retry tiers: the consumer retries a transiently failing delivery itself, after the
    /// same delays, holding on to it meanwhile, so that nothing behind it in the queue
    /// overtakes it (what [`OrderedQueues`](crate::amqp::OrderedQueues) partitions need).
    /// No tier queues are declared.
    ///
    /// ```
    /// let spec = prost_db::amqp::QueueSpec::new("ledger").retry_in_place();
    /// assert!(spec.retries_in_place());
    /// assert!(spec.retry_queues().is_empty());
    /// ```
    #[must_use]
    pub fn retry_in_place(mut self) -> Self {
        self.retry_in_place = true;
        self
    }

    /// Whether [`retry_in_place`](Self::retry_in_place) was chosen.
    ///
    /// ```
    /// assert!(!prost_db::amqp::QueueSpec::new("ledger").retries_in_place());
    /// ```
    pub fn retries_in_place(&self) -> bool {
        self.retry_in_place
    }

    pub(crate) fn has_retry_delays(&self) -> bool {
        !self.retry_delays.is_empty()
    }

    /// The tier a delivery goes to after failing its attempt `attempt` (1-based); with
    /// [`retry_in_place`](Self::retry_in_place), the delay the consumer waits itself.
    pub(crate) fn retry_tier(&self, attempt: u32) -> Option<(Duration, String)> {
        let last = self.retry_delays.len().checked_sub(1)?;
        let index = usize::try_from(attempt.saturating_sub(1)).map_or(last, |i| i.min(last));
        let delay = self.retry_delays[index];
        Some((delay, self.retry_queue_of(delay)))
    }

    fn retry_queue_of(&self, delay: Duration) -> String {
        let ms = delay.as_millis();
        if ms.is_multiple_of(1000) {
            format!("{}.retry.{}s", self.base, ms / 1000)
        } else {
            format!("{}.retry.{ms}ms", self.base)
        }
    }

    /// The work queue is a quorum queue (the default) that dead-letters a message after it
    /// was returned to the queue `limit` times without being settled (`x-delivery-limit`;
    /// [`DEFAULT_DELIVERY_LIMIT`] unless set here).
    ///
    /// The consumer's attempt count only sees handler failures; this bounds the other kind
    /// of poison message, one that kills the consumer process before it can settle. The
    /// broker dead-letters such a message with `x-first-death-reason: delivery_limit` to the
    /// family's dead-letter exchange, which is always declared: RabbitMQ 4 drops a message
    /// past the limit when a queue has none. A queue's type and arguments cannot change
    /// once declared (see [`Topology::declare`](crate::amqp::Topology::declare)).
    ///
    /// ```
    /// let spec = prost_db::amqp::QueueSpec::new("orders.events").quorum(5);
    /// assert_eq!(spec.delivery_limit(), Some(5));
    /// ```
    #[must_use]
    pub fn quorum(mut self, limit: u32) -> Self {
        self.delivery_limit = Some(limit.max(1));
        self
    }

    /// The work queue is a classic queue: single node, no delivery limit, for brokers or
    /// existing deployments that keep classic queues.
    ///
    /// ```
    /// let spec = prost_db::amqp::QueueSpec::new("orders.events").classic();
    /// assert_eq!(spec.delivery_limit(), None);
    /// ```
    #[must_use]
    pub fn classic(mut self) -> Self {
        self.delivery_limit = None;
        self
    }

    /// The quorum work queue's delivery limit; `None` for a [classic](Self::classic) queue.
    ///
    /// ```
    /// assert_eq!(prost_db::amqp::QueueSpec::new("orders.events").delivery_limit(), Some(20));
    /// ```
    pub fn delivery_limit(&self) -> Option<u32> {
        self.delivery_limit
    }

    /// Only one consumer of the work queue receives messages at a time
    /// (`x-single-active-consumer`); the others wait and take over, in order, when it goes.
    /// Keeps the queue's order across consumer processes; see
    /// [`OrderedQueues`](crate::amqp::OrderedQueues).
    ///
    /// ```
    /// let spec = prost_db::amqp::QueueSpec::new("orders.events").single_active_consumer();
    /// assert!(spec.is_single_active_consumer());
    /// ```
    #[must_use]
    pub fn single_active_consumer(mut self) -> Self {
        self.single_active_consumer = true;
        self
    }

    /// Whether [`single_active_consumer`](Self::single_active_consumer) was chosen.
    ///
    /// ```
    /// assert!(!prost_db::amqp::QueueSpec::new("orders.events").is_single_active_consumer());
    /// ```
    pub fn is_single_active_consumer(&self) -> bool {
        self.single_active_consumer
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_map_to_tiers_and_stay_on_the_last() {
        let spec = QueueSpec::new("t");
        let tier = |attempt| spec.retry_tier(attempt).unwrap();
        assert_eq!(
            tier(1),
            (Duration::from_millis(200), "t.retry.200ms".into())
        );
        assert_eq!(tier(2).1, "t.retry.1s");
        assert_eq!(tier(4).1, "t.retry.30s");
        assert_eq!(tier(9).1, "t.retry.30s");
        assert_eq!(tier(u32::MAX).1, "t.retry.30s");
        let odd = QueueSpec::new("t").retry_delays([Duration::from_micros(1500)]);
        assert_eq!(odd.retry_queues()[0].1, "t.retry.1ms");
        assert!(QueueSpec::new("t").retry_delays([]).retry_tier(1).is_none());
    }
}
