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
                        reserve_until: None,
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

/// What an order of the saga scenario is meant to end as.
///
/// ```
/// use prost_shop::scenario::Kind;
/// assert!(Kind::OutOfStock.cancelled() && Kind::Late.cancelled() && !Kind::Normal.cancelled());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// In stock, confirmed in time.
    Normal,
    /// One line is a sold-out product: the catalog refuses it.
    OutOfStock,
    /// Its hold is short and its confirmation arrives after it expired.
    Late,
}

impl Kind {
    /// Whether the order must end cancelled.
    pub fn cancelled(self) -> bool {
        self != Kind::Normal
    }
}

/// One cart of the saga scenario.
#[derive(Debug, Clone)]
pub struct CartPlan {
    /// The cart.
    pub cart_id: Uuid,
    /// Its owner.
    pub user_id: Uuid,
    /// The checkout request's key, the saga's correlation id.
    pub correlation_id: Uuid,
    /// Its lines (distinct products).
    pub items: Vec<OrderItem>,
    /// What it should end as.
    pub kind: Kind,
    /// Its checkout's hold (`None`: the orders service's default).
    pub hold: Option<Duration>,
}

/// The order saga's scenario: carts to check out over a catalog of products, some of them
/// asking for a sold-out product, some with a hold too short for their confirmation.
///
/// ```
/// use std::time::Duration;
/// use prost_shop::scenario::{Kind, SagaPlan};
/// let plan = SagaPlan::new(1000, 0.05, 0.01, 50, 7).late_hold(Duration::from_secs(1));
/// assert_eq!(plan.count(Kind::OutOfStock), 50);
/// assert_eq!(plan.count(Kind::Late), 10);
/// assert_eq!(plan.count(Kind::Normal), 940);
/// ```
#[derive(Debug, Clone)]
pub struct SagaPlan {
    /// Products in stock, ids `1..=products`; product `products + 1` is sold out.
    pub products: i64,
    /// Initial stock of every product in stock.
    pub initial_stock: i32,
    /// The carts.
    pub carts: Vec<CartPlan>,
}

impl SagaPlan {
    /// `orders` carts over `products` products: exactly `round(orders * out_of_stock)` ask
    /// for the sold-out product and `round(orders * late)` others are [`Kind::Late`]
    /// (without a hold until [`late_hold`](Self::late_hold) gives them one).
    pub fn new(orders: usize, out_of_stock: f64, late: f64, products: i64, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let short = ((orders as f64) * out_of_stock).round() as usize;
        let slow = ((orders as f64) * late).round() as usize;
        let mut kinds = vec![Kind::Normal; orders];
        for (wanted, kind) in [(short, Kind::OutOfStock), (slow, Kind::Late)] {
            let mut chosen = 0;
            while chosen < wanted.min(orders) {
                let i = rng.below(orders as u64) as usize;
                if kinds[i] == Kind::Normal {
                    kinds[i] = kind;
                    chosen += 1;
                }
            }
        }
        let carts = kinds
            .into_iter()
            .map(|kind| {
                let lines = (1 + rng.below(3) as usize).min(products as usize);
                let mut items: Vec<OrderItem> = Vec::with_capacity(lines);
                while items.len() < lines {
                    let product_id = 1 + rng.below(products as u64) as i64;
                    if items.iter().all(|i| i.product_id != product_id) {
                        items.push(OrderItem {
                            product_id,
                            quantity: 1 + rng.below(3) as i32,
                            price: Decimal::new(999, 2),
                        });
                    }
                }
                if kind == Kind::OutOfStock {
                    items[0].product_id = products + 1;
                }
                let id = |rng: &mut Rng| Uuid::from_u64_pair(rng.next_u64(), rng.next_u64());
                CartPlan {
                    cart_id: id(&mut rng),
                    user_id: id(&mut rng),
                    correlation_id: id(&mut rng),
                    items,
                    kind,
                    hold: None,
                }
            })
            .collect();
        SagaPlan {
            products,
            initial_stock: 1_000_000,
            carts,
        }
    }

    /// Gives the [`Kind::Late`] carts this hold (and the others none).
    #[must_use]
    pub fn late_hold(mut self, hold: Duration) -> Self {
        for cart in &mut self.carts {
            if cart.kind == Kind::Late {
                cart.hold = Some(hold);
            }
        }
        self
    }

    /// Gives every cart for which `pick` is true this hold.
    #[must_use]
    pub fn hold_where(mut self, hold: Duration, pick: impl Fn(usize, &CartPlan) -> bool) -> Self {
        for (i, cart) in self.carts.iter_mut().enumerate() {
            if pick(i, cart) {
                cart.hold = Some(hold);
            }
        }
        self
    }

    /// Carts of `kind`.
    pub fn count(&self, kind: Kind) -> usize {
        self.carts.iter().filter(|c| c.kind == kind).count()
    }

    /// Inserts the products (the sold-out one with stock 0) into `catalog.products`.
    ///
    /// # Errors
    ///
    /// The database error.
    pub async fn seed_products(&self, pool: &sqlx::PgPool) -> Result<(), prost_db::Error> {
        sqlx::query(
            "INSERT INTO catalog.products (id, name, price, sku, stock_quantity) \
             SELECT g, 'Product ' || g, 9.99, 'SKU-' || g, CASE WHEN g <= $1 THEN $2 ELSE 0 END \
             FROM generate_series(1, $1 + 1) g",
        )
        .bind(self.products)
        .bind(self.initial_stock)
        .execute(pool)
        .await?;
        Ok(())
    }

    /// Inserts the carts and their lines into `cart.carts` and `cart.cart_items`.
    ///
    /// # Errors
    ///
    /// The database error.
    pub async fn seed_carts(&self, pool: &sqlx::PgPool) -> Result<(), prost_db::Error> {
        let ids: Vec<Uuid> = self.carts.iter().map(|c| c.cart_id).collect();
        let users: Vec<Uuid> = self.carts.iter().map(|c| c.user_id).collect();
        let totals: Vec<Decimal> = self
            .carts
            .iter()
            .map(|c| {
                c.items
                    .iter()
                    .map(|i| i.price * Decimal::from(i.quantity))
                    .sum()
            })
            .collect();
        sqlx::query(
            "INSERT INTO cart.carts (id, user_id, total) \
             SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::numeric[])",
        )
        .bind(&ids)
        .bind(&users)
        .bind(&totals)
        .execute(pool)
        .await?;
        let lines = self
            .carts
            .iter()
            .flat_map(|c| c.items.iter().map(move |i| (c.cart_id, i)));
        let (mut carts, mut products, mut quantities, mut prices) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (cart_id, item) in lines {
            carts.push(cart_id);
            products.push(item.product_id);
            quantities.push(item.quantity);
            prices.push(item.price);
        }
        sqlx::query(
            "INSERT INTO cart.cart_items (cart_id, product_id, quantity, price) \
             SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::int[], $4::numeric[])",
        )
        .bind(&carts)
        .bind(&products)
        .bind(&quantities)
        .bind(&prices)
        .execute(pool)
        .await?;
        Ok(())
    }

    /// Checks out every cart through `client`, `concurrency` at a time; returns how many
    /// checkouts started a saga.
    ///
    /// # Errors
    ///
    /// The first checkout that failed.
    pub async fn checkout_all(
        &self,
        client: &crate::services::CartClient,
        concurrency: usize,
    ) -> Result<usize, crate::error::ShopError> {
        use futures_util::StreamExt;
        let started = futures_util::stream::iter(&self.carts)
            .map(|cart| {
                let mut request = crate::cart::Checkout::new(cart.correlation_id);
                request.hold = cart.hold;
                client.checkout(cart.cart_id, request)
            })
            .buffer_unordered(concurrency.max(1))
            .collect::<Vec<_>>()
            .await;
        let mut n = 0;
        for result in started {
            n += usize::from(result?);
        }
        Ok(n)
    }

    /// Checks out every cart like [`checkout_all`](Self::checkout_all), `chunk` at a time,
    /// each chunk once `ready` says so: customers arrive as the shop keeps up, as in a real
    /// shop, instead of all at once, so that queues stay short and no order waits behind
    /// thousands of others for longer than its hold.
    ///
    /// # Errors
    ///
    /// The first checkout that failed.
    pub async fn checkout_paced<F, Fut>(
        &self,
        client: &crate::services::CartClient,
        concurrency: usize,
        chunk: usize,
        mut ready: F,
    ) -> Result<usize, crate::error::ShopError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let mut started = 0;
        for carts in self.carts.chunks(chunk.max(1)) {
            while !ready().await {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let part = SagaPlan {
                products: self.products,
                initial_stock: self.initial_stock,
                carts: carts.to_vec(),
            };
            started += part.checkout_all(client, concurrency).await?;
        }
        Ok(started)
    }

    /// Reads how every saga ended, across the three schemas (`pool`: any connection to the
    /// shop's database).
    ///
    /// # Errors
    ///
    /// The database error.
    pub async fn verify(&self, pool: &sqlx::PgPool) -> Result<SagaReport, prost_db::Error> {
        verify_sagas(pool, self).await
    }
}

/// How the order sagas of a run ended, read from the database.
///
/// ```
/// let report = prost_shop::scenario::SagaReport::default();
/// assert!(report.problems().is_empty() || !report.is_consistent());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SagaReport {
    /// Carts checked out.
    pub checked_out: u64,
    /// Sagas that ended `confirmed`.
    pub confirmed: u64,
    /// Sagas that ended `cancelled`.
    pub cancelled: u64,
    /// Sagas in flight (`reserving`, `compensating`), plus checked-out carts whose order
    /// was never created: they will never finish on their own.
    pub stuck: u64,
    /// Of the stuck: carts whose order was never created (an event lost).
    pub lost: u64,
    /// Carts still `checked_out` (their end never reached them).
    pub carts_open: u64,
    /// Carts `ordered` whose saga is not confirmed, or `checkout_cancelled` whose saga is not
    /// cancelled.
    pub carts_wrong: u64,
    /// Confirmed sagas whose kind says cancelled, and the reverse.
    pub outcomes_wrong: u64,
    /// Sum of available stock if every confirmed order took its units once.
    pub expected_stock: i64,
    /// Sum of available stock in the database.
    pub actual_stock: i64,
    /// Products whose available + held (reserved or fulfilled) differs from the initial
    /// stock.
    pub products_unbalanced: u64,
    /// Confirmed orders whose fulfilled reservations are not exactly their lines.
    pub confirmed_misheld: u64,
    /// Units still held (reserved or fulfilled) for orders that are not confirmed.
    pub held_for_unconfirmed: i64,
    /// Reservation lines that had to be released (reserved for orders not confirmed).
    pub compensations_needed: u64,
    /// Of those, released.
    pub compensations_run: u64,
    /// Compensations completed in `orders.compensation_log`.
    pub compensations_completed: u64,
}

impl SagaReport {
    /// Everything that is not exactly right, one line each.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut check = |bad: bool, what: String| {
            if bad {
                problems.push(what);
            }
        };
        check(
            self.stuck > 0,
            format!("{} sagas stuck ({} lost)", self.stuck, self.lost),
        );
        check(
            self.carts_open > 0,
            format!("{} carts still checked out", self.carts_open),
        );
        check(
            self.carts_wrong > 0,
            format!("{} carts closed wrong", self.carts_wrong),
        );
        check(
            self.outcomes_wrong > 0,
            format!("{} orders ended against their kind", self.outcomes_wrong),
        );
        check(
            self.expected_stock != self.actual_stock,
            format!(
                "stock {} instead of {}",
                self.actual_stock, self.expected_stock
            ),
        );
        check(
            self.products_unbalanced > 0,
            format!(
                "{} products where available + held differs from the initial stock",
                self.products_unbalanced
            ),
        );
        check(
            self.confirmed_misheld > 0,
            format!(
                "{} confirmed orders hold other than their lines",
                self.confirmed_misheld
            ),
        );
        check(
            self.held_for_unconfirmed != 0,
            format!(
                "{} units held for orders that are not confirmed",
                self.held_for_unconfirmed
            ),
        );
        check(
            self.compensations_run != self.compensations_needed
                || self.compensations_completed != self.compensations_needed,
            format!(
                "compensations: {} needed, {} released, {} completed",
                self.compensations_needed, self.compensations_run, self.compensations_completed
            ),
        );
        problems
    }

    /// Whether every saga ended right.
    pub fn is_consistent(&self) -> bool {
        self.problems().is_empty()
    }

    /// Whether every saga ended (consistently or not).
    pub fn all_terminal(&self) -> bool {
        self.stuck == 0 && self.carts_open == 0
    }
}

async fn verify_sagas(pool: &sqlx::PgPool, plan: &SagaPlan) -> Result<SagaReport, prost_db::Error> {
    let mut report = SagaReport::default();
    let statuses: Vec<(String, i64)> =
        sqlx::query_as("SELECT status::text, count(*) FROM orders.saga_states GROUP BY status")
            .fetch_all(pool)
            .await?;
    for (status, n) in statuses {
        match status.as_str() {
            crate::orders::status::CONFIRMED => report.confirmed = n as u64,
            crate::orders::status::CANCELLED => report.cancelled = n as u64,
            _ => report.stuck += n as u64,
        }
    }
    let (checked_out, open, lost, wrong): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE c.saga_correlation_id IS NOT NULL), \
                count(*) FILTER (WHERE c.status = 'checked_out'), \
                count(*) FILTER (WHERE c.saga_correlation_id IS NOT NULL AND s.id IS NULL), \
                count(*) FILTER (WHERE (c.status = 'ordered' AND s.status IS DISTINCT FROM 'confirmed') \
                                    OR (c.status = 'checkout_cancelled' AND s.status IS DISTINCT FROM 'cancelled')) \
         FROM cart.carts c LEFT JOIN orders.saga_states s ON s.correlation_id = c.saga_correlation_id",
    )
    .fetch_one(pool)
    .await?;
    report.checked_out = checked_out as u64;
    report.carts_open = open as u64;
    report.lost = lost as u64;
    report.stuck += lost as u64;
    report.carts_wrong = wrong as u64;

    let confirmed: Vec<Uuid> = sqlx::query_scalar(
        "SELECT correlation_id FROM orders.saga_states WHERE status = 'confirmed'",
    )
    .fetch_all(pool)
    .await?;
    let confirmed: std::collections::HashSet<Uuid> = confirmed.into_iter().collect();
    let cancelled: Vec<Uuid> = sqlx::query_scalar(
        "SELECT correlation_id FROM orders.saga_states WHERE status = 'cancelled'",
    )
    .fetch_all(pool)
    .await?;
    let cancelled: std::collections::HashSet<Uuid> = cancelled.into_iter().collect();
    for cart in &plan.carts {
        let wrong = if cart.kind.cancelled() {
            confirmed.contains(&cart.correlation_id)
        } else {
            cancelled.contains(&cart.correlation_id)
        };
        report.outcomes_wrong += u64::from(wrong);
    }

    let products: Vec<(i64, i32, i64, i64)> = sqlx::query_as(
        "WITH confirmed AS ( \
             SELECT o.id FROM orders.orders o \
             JOIN orders.saga_states s ON s.correlation_id = o.saga_correlation_id \
             WHERE s.status = 'confirmed'), \
         sold AS ( \
             SELECT i.product_id, sum(i.quantity)::bigint AS q FROM orders.order_items i \
             JOIN confirmed c ON c.id = i.order_id GROUP BY 1), \
         held AS ( \
             SELECT product_id, sum(quantity)::bigint AS q FROM catalog.inventory_reservations \
             WHERE status IN ('reserved', 'fulfilled') GROUP BY 1) \
         SELECT p.id, p.stock_quantity, coalesce(sold.q, 0), coalesce(held.q, 0) \
         FROM catalog.products p \
         LEFT JOIN sold ON sold.product_id = p.id LEFT JOIN held ON held.product_id = p.id",
    )
    .fetch_all(pool)
    .await?;
    for (id, stock, sold, held) in products {
        let initial = if id <= plan.products {
            i64::from(plan.initial_stock)
        } else {
            0
        };
        report.expected_stock += initial - sold;
        report.actual_stock += i64::from(stock);
        report.products_unbalanced += u64::from(i64::from(stock) + held != initial);
    }

    let (needed, run, held_for_unconfirmed): (i64, i64, i64) = sqlx::query_as(
        "WITH confirmed AS ( \
             SELECT o.id FROM orders.orders o \
             JOIN orders.saga_states s ON s.correlation_id = o.saga_correlation_id \
             WHERE s.status = 'confirmed') \
         SELECT count(*), count(*) FILTER (WHERE r.status = 'released'), \
                coalesce(sum(r.quantity) FILTER (WHERE r.status IN ('reserved', 'fulfilled')), 0)::bigint \
         FROM catalog.inventory_reservations r \
         WHERE r.order_id NOT IN (SELECT id FROM confirmed)",
    )
    .fetch_one(pool)
    .await?;
    report.compensations_needed = needed as u64;
    report.compensations_run = run as u64;
    report.held_for_unconfirmed = held_for_unconfirmed;
    let completed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM orders.compensation_log WHERE status = 'completed'",
    )
    .fetch_one(pool)
    .await?;
    report.compensations_completed = completed as u64;
    let misheld: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM orders.orders o \
         JOIN orders.saga_states s ON s.correlation_id = o.saga_correlation_id \
         WHERE s.status = 'confirmed' AND \
           (SELECT count(*) FROM catalog.inventory_reservations r \
            WHERE r.order_id = o.id AND r.status = 'fulfilled') \
           <> (SELECT count(*) FROM orders.order_items i WHERE i.order_id = o.id)",
    )
    .fetch_one(pool)
    .await?;
    report.confirmed_misheld = misheld as u64;
    Ok(report)
}
