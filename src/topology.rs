//! The order saga's exchanges and queues: who hears which event.
//!
//! | queue (service) | receives |
//! |---|---|
//! | `orders.events.queue` (orders) | `cart.checkout.initiated` from `cart.events`; `product.stock.*` and `order.failed` from `products.events` |
//! | `products.events.queue` (catalog) | `order.created`, `order.confirmed`, `order.cancelled` from `orders.events` |
//! | `cart.events.queue` (cart) | `order.confirmed`, `order.cancelled` from `orders.events` |
//!
//! Next to each work queue, `<base>.delay` holds messages that the fault injector delays
//! ([`crate::faults`]): their per-message expiration dead-letters them back into the work
//! queue.

use prost_db::amqp::lapin::Channel;
use prost_db::amqp::lapin::options::{QueueDeclareOptions, QueueDeleteOptions};
use prost_db::amqp::lapin::types::{AMQPValue, FieldTable};
use prost_db::amqp::{QueueSpec, Topology};

/// The three services of the saga.
///
/// ```
/// use prost_shop::topology::Service;
/// assert_eq!("orders".parse::<Service>(), Ok(Service::Orders));
/// assert_eq!(Service::Catalog.as_str(), "catalog");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    /// `cart`: starts the saga at checkout and closes the cart at its end.
    Cart,
    /// `orders`: the orchestrator; owns the saga's state.
    Orders,
    /// `catalog`: reserves, releases and fulfils stock.
    Catalog,
}

impl Service {
    /// Every service.
    pub const ALL: [Service; 3] = [Service::Cart, Service::Orders, Service::Catalog];

    /// The service's name, which is also its schema.
    pub fn as_str(self) -> &'static str {
        match self {
            Service::Cart => "cart",
            Service::Orders => "orders",
            Service::Catalog => "catalog",
        }
    }

    /// The base name of its queue family and of the exchange it publishes to.
    pub fn base(self) -> &'static str {
        match self {
            Service::Cart => "cart.events",
            Service::Orders => "orders.events",
            Service::Catalog => "products.events",
        }
    }
}

impl std::str::FromStr for Service {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Service::ALL
            .into_iter()
            .find(|service| service.as_str() == s)
            .ok_or_else(|| format!("unknown service {s:?}; expected cart, orders or catalog"))
    }
}

/// The exchanges, with the deployment's prefix (empty in production, unique per test).
///
/// ```
/// let ex = prost_shop::topology::Exchanges::new("t1.");
/// assert_eq!(ex.products, "t1.products.events");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchanges {
    /// The catalog's.
    pub products: String,
    /// The cart's.
    pub cart: String,
    /// The orders service's.
    pub orders: String,
}

impl Exchanges {
    /// The exchanges under `prefix`.
    pub fn new(prefix: &str) -> Self {
        Exchanges {
            products: format!("{prefix}products.events"),
            cart: format!("{prefix}cart.events"),
            orders: format!("{prefix}orders.events"),
        }
    }
}

/// The saga's queue family of `service`, under `prefix`.
///
/// ```
/// use prost_shop::topology::{Service, queue_spec};
/// assert_eq!(queue_spec("", Service::Orders).queue(), "orders.events.queue");
/// ```
pub fn queue_spec(prefix: &str, service: Service) -> QueueSpec {
    let ex = Exchanges::new(prefix);
    // Steps that lose an optimistic-concurrency race are retried soon: short tiers.
    let spec = QueueSpec::new(format!("{prefix}{}", service.base()))
        .retry_delays([50, 200, 800, 2000].map(std::time::Duration::from_millis));
    match service {
        Service::Orders => spec
            .bind(&ex.cart, "cart.checkout.initiated")
            .bind(&ex.products, "product.stock.*")
            .bind(&ex.products, "order.failed"),
        Service::Catalog => spec
            .bind(&ex.orders, "order.created")
            .bind(&ex.orders, "order.confirmed")
            .bind(&ex.orders, "order.cancelled"),
        Service::Cart => spec
            .bind(&ex.orders, "order.confirmed")
            .bind(&ex.orders, "order.cancelled"),
    }
}

/// The saga's whole topology under `prefix` (queues in the order of [`Service::ALL`]).
///
/// ```
/// let topology = prost_shop::topology::saga_topology("");
/// assert_eq!(topology.queues().len(), 3);
/// assert_eq!(topology.exchanges().len(), 3);
/// ```
pub fn saga_topology(prefix: &str) -> Topology {
    let ex = Exchanges::new(prefix);
    let mut topology = Topology::new()
        .exchange(ex.products)
        .exchange(ex.cart)
        .exchange(ex.orders);
    for service in Service::ALL {
        topology = topology.queue(queue_spec(prefix, service));
    }
    topology
}

/// The delay queue next to `spec`'s work queue.
///
/// ```
/// use prost_shop::topology::{Service, delay_queue, queue_spec};
/// assert_eq!(delay_queue(&queue_spec("", Service::Orders)), "orders.events.delay");
/// ```
pub fn delay_queue(spec: &QueueSpec) -> String {
    format!("{}.delay", spec.base())
}

/// The queues where `spec`'s messages wait to be handled: the work queue, its retry tiers
/// and the delay queue (not the dead-letter queue).
///
/// ```
/// use prost_shop::topology::{Service, queue_spec, waiting_queues};
/// let queues = waiting_queues(&queue_spec("", Service::Orders));
/// assert_eq!(queues[0], "orders.events.queue");
/// assert!(queues.contains(&"orders.events.delay".to_owned()));
/// ```
pub fn waiting_queues(spec: &QueueSpec) -> Vec<String> {
    let mut queues = vec![spec.queue(), delay_queue(spec)];
    queues.extend(spec.retry_queues().into_iter().map(|(_, queue)| queue));
    queues
}

/// Declares `topology` and a delay queue per queue family.
///
/// # Errors
///
/// The broker error.
pub async fn declare(topology: &Topology, channel: &Channel) -> Result<(), prost_db::Error> {
    topology.declare(channel).await?;
    for spec in topology.queues() {
        let mut args = FieldTable::default();
        args.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString("".into()),
        );
        args.insert(
            "x-dead-letter-routing-key".into(),
            AMQPValue::LongString(spec.queue().into()),
        );
        channel
            .queue_declare(
                delay_queue(spec).into(),
                QueueDeclareOptions {
                    durable: true,
                    ..QueueDeclareOptions::default()
                },
                args,
            )
            .await?;
    }
    Ok(())
}

/// Deletes `topology` and its delay queues (tests; messages are lost).
///
/// # Errors
///
/// The broker error.
pub async fn delete(topology: &Topology, channel: &Channel) -> Result<(), prost_db::Error> {
    for spec in topology.queues() {
        channel
            .queue_delete(delay_queue(spec).into(), QueueDeleteOptions::default())
            .await?;
    }
    topology.delete(channel).await
}
