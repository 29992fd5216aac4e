//! The seed's scenario: 10,000 orders a day, 2% "network failures", each redelivered 3
//! times, so 600 duplicates; and the checks that nothing was applied twice or lost.

use std::time::Duration;

use prost_db::Db;
use prost_db::amqp::{Message, Publisher};
use prost_db::events::Event;
use rust_decimal::Decimal;
use uuid::Uuid;

use crate::events::{OrderCreated, OrderItem};

/// A deterministic pseudo-random generator (splitmix64), so a run can be replayed.
///
/// ```
/// use prost_shop::scenario::Rng;
/// let (mut a, mut b) = (Rng::new(7), Rng::new(7));
/// assert_eq!(a.next_u64(), b.next_u64());
/// assert!(a.below(10) < 10);
/// ```
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
}

/// What to replay.
///
/// ```
/// use prost_shop::scenario::Plan;
/// // The seed's numbers: 10,000 orders, 2% failures, 3 redeliveries each.
/// let plan = Plan::new(10_000, 0.02, 3, 100, 1);
/// assert_eq!(plan.failed_events, 200);
/// assert_eq!(plan.duplicates(), 600);
/// assert_eq!(plan.deliveries.len(), 10_600);
/// ```
#[derive(Debug, Clone)]
pub struct Plan {
    /// Products seeded in `catalog.products`, ids `1..=products`.
    pub products: i64,
    /// Initial stock of every product.
    pub initial_stock: i32,
    /// The distinct order events.
    pub orders: Vec<Event<OrderCreated>>,
    /// Publication order: indexes into `orders`, duplicates included.
    pub deliveries: Vec<usize>,
    /// Events that suffered a "network failure".
    pub failed_events: usize,
}

impl Plan {
    /// `events` orders over `products` products; a fraction `failure_rate` of them is
    /// delivered `1 + redeliveries` times, the first duplicate right behind the original
    /// (so concurrent consumers race on it), the others later.
    pub fn new(
        events: usize,
        failure_rate: f64,
        redeliveries: usize,
        products: i64,
        seed: u64,
    ) -> Self {
        let mut rng = Rng::new(seed);
        let orders: Vec<Event<OrderCreated>> = (0..events)
            .map(|n| {
                let order_id = n as i64 + 1;
                let lines = 1 + rng.below(3) as usize;
                let items: Vec<OrderItem> = (0..lines)
                    .map(|_| OrderItem {
                        product_id: 1 + rng.below(products as u64) as i64,
                        quantity: 1 + rng.below(3) as i32,
                        price: Decimal::new(999, 2),
                    })
                    .collect();
                let total = items
                    .iter()
                    .map(|i| i.price * Decimal::from(i.quantity))
                    .sum();
                let correlation = Uuid::new_v4().to_string();
                Event::new(
                    order_id.to_string(),
                    correlation,
                    OrderCreated {
                        order_id,
                        user_id: Uuid::new_v4(),
                        total,
                        items,
                    },
                )
            })
            .collect();
        // Exactly round(events * rate) failures, spread evenly at random.
        let failures = ((events as f64) * failure_rate).round() as usize;
        let mut failed = vec![false; events];
        let mut chosen = 0;
        while chosen < failures.min(events) {
            let i = rng.below(events as u64) as usize;
            if !failed[i] {
                failed[i] = true;
                chosen += 1;
            }
        }
        let mut deliveries: Vec<usize> = Vec::with_capacity(events + failures * redeliveries);
        let mut later: Vec<usize> = Vec::new();
        for (i, &f) in failed.iter().enumerate() {
            deliveries.push(i);
            if f && redeliveries > 0 {
                deliveries.push(i);
                later.extend(std::iter::repeat_n(i, redeliveries - 1));
            }
        }
        for dup in later {
            let pos = rng.below(deliveries.len() as u64 + 1) as usize;
            let pos = pos.max(deliveries.iter().position(|&d| d == dup).unwrap_or(0) + 1);
            deliveries.insert(pos.min(deliveries.len()), dup);
        }
        Plan {
            products,
            initial_stock: 1_000_000,
            orders,
            deliveries,
            failed_events: failures,
        }
    }

    /// Duplicate deliveries in the plan.
    pub fn duplicates(&self) -> usize {
        self.deliveries.len() - self.orders.len()
    }

    /// Units the plan takes from the stock when every order is applied once.
    pub fn expected_units(&self) -> i64 {
        self.orders
            .iter()
            .flat_map(|o| &o.payload.items)
            .map(|i| i64::from(i.quantity))
            .sum()
    }

    /// Inserts the plan's products into `catalog` (whose schema must be migrated).
    ///
    /// # Errors
    ///
    /// The database error.
    pub async fn seed_products(&self, catalog: &Db) -> Result<(), prost_db::Error> {
        sqlx::query(
            "INSERT INTO products (id, name, price, sku, stock_quantity) \
             SELECT g, 'Product ' || g, 9.99, 'SKU-' || g, $2 FROM generate_series(1, $1) g",
        )
        .bind(self.products)
        .bind(self.initial_stock)
        .execute(catalog.pool())
        .await?;
        Ok(())
    }

    /// Publishes every delivery of the plan to `exchange`, with confirms.
    ///
    /// # Errors
    ///
    /// The broker error.
    pub async fn publish(
        &self,
        publisher: &Publisher,
        exchange: &str,
    ) -> Result<(), prost_db::Error> {
        self.publish_range(publisher, exchange, 0..self.deliveries.len())
            .await
    }

    /// Publishes deliveries `range` of the plan.
    ///
    /// # Errors
    ///
    /// The broker error.
    pub async fn publish_range(
        &self,
        publisher: &Publisher,
        exchange: &str,
        range: std::ops::Range<usize>,
    ) -> Result<(), prost_db::Error> {
        let bodies: Vec<Vec<u8>> = self
            .orders
            .iter()
            .map(Event::to_json)
            .collect::<Result<_, _>>()
            .map_err(prost_db::Error::EventEncode)?;
        for chunk in self.deliveries[range].chunks(500) {
            let messages: Vec<Message> = chunk
                .iter()
                .map(|&i| Message::event(exchange, &self.orders[i], &bodies[i]))
                .collect();
            for outcome in publisher.publish_all(&messages).await? {
                outcome?;
            }
        }
        Ok(())
    }

    /// Compares the catalog's state with the plan.
    ///
    /// # Errors
    ///
    /// The database error.
    pub async fn verify(&self, catalog: &Db) -> Result<Verification, prost_db::Error> {
        let actual_stock: i64 = sqlx::query_scalar(
            "SELECT coalesce(sum(stock_quantity), 0)::bigint FROM products WHERE id <= $1",
        )
        .bind(self.products)
        .fetch_one(catalog.pool())
        .await?;
        let per_order: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT order_id, count(*) FROM inventory_reservations GROUP BY order_id",
        )
        .fetch_all(catalog.pool())
        .await?;
        let mut expected_lines = std::collections::HashMap::new();
        for o in &self.orders {
            expected_lines.insert(o.payload.order_id, o.payload.items.len() as i64);
        }
        let mut applied_twice = 0u64;
        let mut extra_applications = 0u64;
        let mut extra_lines = 0i64;
        let mut seen = 0usize;
        for (order_id, lines) in per_order {
            let expected = expected_lines.get(&order_id).copied().unwrap_or(0).max(1);
            seen += 1;
            if lines > expected {
                applied_twice += 1;
                extra_lines += lines - expected;
                extra_applications += ((lines - expected) / expected) as u64;
            }
        }
        let initial = self.products * i64::from(self.initial_stock);
        Ok(Verification {
            expected_stock: initial - self.expected_units(),
            actual_stock,
            orders_applied_twice: applied_twice,
            extra_applications,
            extra_reservations: extra_lines,
            orders_missing: self.orders.len().saturating_sub(seen) as u64,
        })
    }
}

/// The catalog's state compared with the plan.
///
/// ```
/// use prost_shop::scenario::Verification;
/// let v = Verification {
///     expected_stock: 10, actual_stock: 8, orders_applied_twice: 1,
///     extra_applications: 1, extra_reservations: 2, orders_missing: 0,
/// };
/// assert_eq!(v.erroneous_state_changes(), 1);
/// assert!(!v.is_consistent());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verification {
    /// Sum of stock if every order was applied exactly once.
    pub expected_stock: i64,
    /// Sum of stock in the database.
    pub actual_stock: i64,
    /// Orders with more reservations than lines (applied more than once).
    pub orders_applied_twice: u64,
    /// Applications of an order beyond the first (a duplicate that changed state).
    pub extra_applications: u64,
    /// Reservation rows beyond one per line.
    pub extra_reservations: i64,
    /// Orders with no reservation at all (lost).
    pub orders_missing: u64,
}

impl Verification {
    /// State changes that should not have happened: every extra application of an order
    /// (the seed's "600 erroneous state changes") plus every lost order.
    pub fn erroneous_state_changes(&self) -> u64 {
        self.extra_applications + self.orders_missing
    }

    /// Whether the state is exactly what the plan expects.
    pub fn is_consistent(&self) -> bool {
        self.erroneous_state_changes() == 0 && self.expected_stock == self.actual_stock
    }
}

/// Waits until `done` returns true, polling every 100 ms, for at most `timeout`.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use std::time::Duration;
/// assert!(prost_shop::scenario::wait_until(Duration::from_secs(1), || async { true }).await);
/// # }
/// ```
pub async fn wait_until<F, Fut>(timeout: Duration, mut done: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if done().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
