//! The orders service: the order saga's orchestrator. Its state lives in
//! `orders.saga_states` (through [`prost_db::saga::SagaStore`]), its compensations in
//! `orders.compensation_log`, its view of the catalog's reservations in
//! `orders.inventory_reservations`.
//!
//! ```text
//!   CartCheckoutInitiated
//!            │ create the order, start the saga, emit OrderCreated
//!            ▼
//!       reserving ── StockReserved (each line: register its release) ──┐
//!        │  │  │                                                        │ all lines, in time
//!        │  │  └── OrderFailed (out of stock) ───────────► cancelled    ▼
//!        │  │                                                       confirmed
//!        │  └── expired (sweep), or the last StockReserved late ──┐  (OrderConfirmed)
//!        │                                                         ▼
//!        └──────────────────────────────────────────────────► compensating
//!                                                    (OrderCancelled; releases requested)
//!                                                                  │ every line StockReleased,
//!                                                                  ▼ or OrderFailed (none held)
//!                                                              cancelled
//! ```
//!
//! Every step moves the saga through [`SagaStore::transition`] (at least a touch that bumps
//! its version), so two steps of one saga never decide at once: the loser gets a conflict,
//! rolls back, and runs again on what the winner committed.

use std::time::Duration;

use prost_db::events::Event;
use prost_db::saga::{Compensation, CompensationStatus, NewSaga, Saga, SagaMachine, SagaStore, Tx};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::emit::Emitter;
use crate::error::ShopError;
use crate::events::{
    CartCheckoutInitiated, OrderCancelled, OrderConfirmed, OrderCreated, OrderFailed,
    StockReleased, StockReserved,
};
use crate::topology::Exchanges;

/// The order saga's statuses.
pub mod status {
    /// Waiting for the catalog to reserve every line, until the saga's deadline.
    pub const RESERVING: &str = "reserving";
    /// Terminal: every line reserved in time; the order is confirmed.
    pub const CONFIRMED: &str = "confirmed";
    /// Cancelled (expired); waiting for the catalog to release what it held.
    pub const COMPENSATING: &str = "compensating";
    /// Terminal: the order is cancelled and nothing is held for it.
    pub const CANCELLED: &str = "cancelled";
}

/// The order saga's state machine.
///
/// ```
/// use prost_shop::orders::{ORDER_SAGA, status};
/// ORDER_SAGA.validate().unwrap();
/// assert!(ORDER_SAGA.allows(status::RESERVING, status::COMPENSATING));
/// assert!(!ORDER_SAGA.allows(status::COMPENSATING, status::CONFIRMED));
/// ```
pub static ORDER_SAGA: SagaMachine = SagaMachine {
    saga_type: "order",
    initial: status::RESERVING,
    transitions: &[
        (status::RESERVING, status::CONFIRMED),
        (status::RESERVING, status::COMPENSATING),
        (status::RESERVING, status::CANCELLED),
        (status::COMPENSATING, status::CANCELLED),
    ],
    terminal: &[status::CONFIRMED, status::CANCELLED],
};

/// The order saga's store: `orders.saga_states` and `orders.compensation_log`, linked by
/// `order_id`.
///
/// # Errors
///
/// Never for these names; the `Result` is the store's.
///
/// ```
/// let store = prost_shop::orders::saga_store().unwrap();
/// assert_eq!(store.tables().links(), ["order_id"]);
/// ```
pub fn saga_store() -> Result<SagaStore, prost_db::saga::SagaError> {
    let tables = prost_db::saga::SagaTables::new("orders")?.link("order_id")?;
    Ok(SagaStore::new(tables, &ORDER_SAGA)?.with_statements(crate::statements()))
}

/// The order saga's own data (`saga_states.payload`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderSagaData {
    /// The order.
    pub order_id: i64,
    /// The cart it was checked out from.
    pub cart_id: Uuid,
    /// Its lines: each one is reserved once, and released once if the saga fails.
    pub lines: i64,
    /// Why it was cancelled.
    pub reason: Option<String>,
}

/// What a step did to its saga (stored as the handler's result).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Step {
    /// The saga started.
    Started,
    /// Recorded; the saga still waits.
    Waiting,
    /// The saga was confirmed.
    Confirmed,
    /// The saga is compensating.
    Compensating,
    /// The saga was cancelled.
    Cancelled,
    /// The saga had ended; the (late) event changed nothing.
    Ignored,
}

/// The saga's correlation id, from the event's envelope.
pub(crate) fn correlation<P>(event: &Event<P>) -> Result<Uuid, ShopError> {
    Uuid::parse_str(&event.envelope.correlation_id).map_err(|_| {
        ShopError::Invalid(format!(
            "event {} has correlation id {:?}, not a saga's UUID",
            event.envelope.event_id, event.envelope.correlation_id
        ))
    })
}

/// The compensation that undoes a reservation: the catalog's release, confirmed by its
/// `StockReleased`.
fn release_of(
    reservation_id: Uuid,
    product_id: i64,
    quantity: i32,
) -> Result<Compensation, ShopError> {
    Compensation::new(
        reservation_id.to_string(),
        "StockReleased",
        &serde_json::json!({
            "reservation_id": reservation_id,
            "product_id": product_id,
            "quantity": quantity,
        }),
    )
    .map_err(|e| ShopError::Invalid(e.to_string()))
}

/// The context of the orders service's steps.
#[derive(Debug, Clone)]
pub struct OrdersContext {
    /// The saga store.
    pub store: SagaStore,
    /// The exchanges.
    pub ex: Exchanges,
    /// How long an order may hold stock when its checkout does not say.
    pub default_hold: Duration,
}

/// The body of `CartCheckoutInitiated`: creates the order and its lines, starts the saga
/// (deadline: the checkout's hold), and emits `OrderCreated`. Returns the order id. Run it
/// through an idempotent handler.
///
/// # Errors
///
/// [`ShopError::Invalid`] for a checkout without lines or without a saga correlation id;
/// the database error (roll back).
pub async fn create_order_body(
    tx: &mut Tx<'_>,
    emit: &mut Emitter,
    ctx: &OrdersContext,
    event: &Event<CartCheckoutInitiated>,
) -> Result<i64, ShopError> {
    let correlation_id = correlation(event)?;
    let checkout = &event.payload;
    if checkout.items.is_empty() {
        return Err(ShopError::Invalid(format!(
            "checkout of cart {} has no lines",
            checkout.cart_id
        )));
    }
    let order_id = insert_order(tx, correlation_id, checkout).await?;
    let hold = checkout
        .reserve_for_ms
        .map_or(ctx.default_hold, Duration::from_millis);
    let data = OrderSagaData {
        order_id,
        cart_id: checkout.cart_id,
        lines: checkout.items.len() as i64,
        reason: None,
    };
    let saga = ctx
        .store
        .start(
            tx,
            NewSaga::new(correlation_id, data, hold).link("order_id", order_id)?,
        )
        .await?;
    let created = order_created(event, order_id, saga.expires_at);
    emit.emit(tx, &ctx.ex.orders, &created).await?;
    Ok(order_id)
}

/// The `OrderCreated` that answers `event` (shared with the seed-shaped body): the order,
/// its lines, and the saga's deadline as the reservation's end.
pub(crate) fn order_created(
    event: &Event<CartCheckoutInitiated>,
    order_id: i64,
    expires_at: chrono::DateTime<chrono::Utc>,
) -> Event<OrderCreated> {
    let checkout = &event.payload;
    Event::new(
        order_id.to_string(),
        event.envelope.correlation_id.clone(),
        OrderCreated {
            order_id,
            user_id: checkout.user_id,
            total: checkout.total,
            items: checkout.items.clone(),
            reserve_until: Some(expires_at),
        },
    )
}

/// Inserts the order and its lines (one statement); returns its id.
pub(crate) async fn insert_order(
    tx: &mut PgConnection,
    correlation_id: Uuid,
    checkout: &CartCheckoutInitiated,
) -> Result<i64, ShopError> {
    let products: Vec<i64> = checkout.items.iter().map(|i| i.product_id).collect();
    let quantities: Vec<i32> = checkout.items.iter().map(|i| i.quantity).collect();
    let prices: Vec<rust_decimal::Decimal> = checkout.items.iter().map(|i| i.price).collect();
    Ok(crate::statements().query_scalar(
        "WITH created AS ( \
             INSERT INTO orders (user_id, cart_id, total, status, saga_correlation_id) \
             VALUES ($1, $2, $3, 'pending', $4) RETURNING id), \
         lines AS ( \
             INSERT INTO order_items (order_id, product_id, quantity, price) \
             SELECT created.id, t.product_id, t.quantity, t.price \
             FROM created, unnest($5::bigint[], $6::int[], $7::numeric[]) AS t(product_id, quantity, price)) \
         SELECT id FROM created",
    )
    .bind(checkout.user_id)
    .bind(checkout.cart_id)
    .bind(checkout.total)
    .bind(correlation_id)
    .bind(&products)
    .bind(&quantities)
    .bind(&prices)
    .fetch_one(&mut *tx)
    .await?)
}

/// The body of `StockReserved` (one line of an order): records the reservation and
/// registers its release as the compensation, in the step's transaction. When the last
/// line arrives in time the saga is confirmed; a line that arrives after the deadline
/// starts the compensation instead; a line that arrives while compensating is released
/// with the others. Run it through an idempotent handler.
///
/// # Errors
///
/// [`ShopError::Saga`] with a conflict if another step moved the saga meanwhile (run it
/// again); the database error (roll back).
pub async fn stock_reserved_body(
    tx: &mut Tx<'_>,
    emit: &mut Emitter,
    ctx: &OrdersContext,
    event: &Event<StockReserved>,
) -> Result<Step, ShopError> {
    let store = &ctx.store;
    let correlation_id = correlation(event)?;
    let mut saga: Saga<OrderSagaData> = store.get(&mut **tx, correlation_id).await?;
    let line = &event.payload;
    // Record the line, and count the order's reserved lines, in one round trip (the
    // outer SELECT does not see the CTE's row, hence the sum).
    let reserved: i64 = crate::statements()
        .query_scalar(
            "WITH added AS ( \
             INSERT INTO inventory_reservations \
                 (order_id, product_id, quantity, reservation_id, expires_at) \
             VALUES ($1, $2, $3, $4, coalesce($5, now() + interval '24 hours')) \
             ON CONFLICT (reservation_id) DO NOTHING RETURNING 1) \
         SELECT (SELECT count(*) FROM inventory_reservations \
                 WHERE order_id = $1 AND status = 'reserved') \
              + (SELECT count(*) FROM added)",
        )
        .bind(saga.payload.order_id)
        .bind(line.product_id)
        .bind(line.quantity)
        .bind(line.reservation_id)
        .bind(line.expires_at)
        .fetch_one(&mut **tx)
        .await?;
    if store.machine().is_terminal(&saga.status) {
        return Ok(Step::Ignored);
    }
    let undo = release_of(line.reservation_id, line.product_id, line.quantity)?;
    store.register_compensation(tx, &saga, &undo).await?;
    if saga.status == status::COMPENSATING {
        // The catalog releases this line with the others: its release is due too.
        store.request_compensations(tx, &saga).await?;
        store
            .transition(tx, &mut saga, status::COMPENSATING)
            .await?;
        return Ok(Step::Compensating);
    }
    if saga.expired {
        let reason = "stock was reserved after the order's hold expired";
        cancel_expired(tx, emit, ctx, &mut saga, reason).await?;
        return Ok(Step::Compensating);
    }
    if reserved < saga.payload.lines {
        store.transition(tx, &mut saga, status::RESERVING).await?;
        return Ok(Step::Waiting);
    }
    store.transition(tx, &mut saga, status::CONFIRMED).await?;
    let order_id = saga.payload.order_id;
    crate::statements()
        .query(
            "WITH confirmed AS ( \
             UPDATE orders SET status = 'confirmed', updated_at = now() WHERE id = $1) \
         UPDATE inventory_reservations SET status = 'fulfilled', fulfilled_at = now() \
         WHERE order_id = $1 AND status = 'reserved'",
        )
        .bind(order_id)
        .execute(&mut **tx)
        .await?;
    store.discard_compensations(tx, &saga).await?;
    let confirmed = Event::new(
        order_id.to_string(),
        event.envelope.correlation_id.clone(),
        OrderConfirmed { order_id },
    );
    emit.emit(tx, &ctx.ex.orders, &confirmed).await?;
    Ok(Step::Confirmed)
}

/// Cancels an expired saga: `compensating`, the order `cancelling`, every registered
/// release requested, and `OrderCancelled` emitted (the catalog releases what it holds,
/// the cart closes). Used by the expiry sweep and by a late `StockReserved`.
///
/// # Errors
///
/// A conflict if another step moved the saga; the database error.
pub async fn cancel_expired(
    tx: &mut Tx<'_>,
    emit: &mut Emitter,
    ctx: &OrdersContext,
    saga: &mut Saga<OrderSagaData>,
    reason: &str,
) -> Result<(), ShopError> {
    saga.payload.reason = Some(reason.to_owned());
    ctx.store.transition(tx, saga, status::COMPENSATING).await?;
    let order_id = saga.payload.order_id;
    crate::statements()
        .query("UPDATE orders SET status = 'cancelling', updated_at = now() WHERE id = $1")
        .bind(order_id)
        .execute(&mut **tx)
        .await?;
    ctx.store.request_compensations(tx, saga).await?;
    let cancelled = Event::new(
        order_id.to_string(),
        saga.correlation_id.to_string(),
        OrderCancelled {
            order_id,
            reason: reason.to_owned(),
        },
    );
    emit.emit(tx, &ctx.ex.orders, &cancelled).await?;
    Ok(())
}

async fn finish_cancelled(
    tx: &mut Tx<'_>,
    ctx: &OrdersContext,
    saga: &mut Saga<OrderSagaData>,
) -> Result<(), ShopError> {
    ctx.store.transition(tx, saga, status::CANCELLED).await?;
    crate::statements()
        .query(
            "UPDATE orders SET status = 'cancelled', cancelled_at = now(), updated_at = now() \
         WHERE id = $1",
        )
        .bind(saga.payload.order_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The body of `StockReleased` (the catalog ran one line's compensation): completes that
/// compensation (once, whatever the redeliveries), and cancels the saga when every line is
/// released. Run it through an idempotent handler.
///
/// # Errors
///
/// [`ShopError::Invalid`] for a release the saga never asked for; a conflict; the database
/// error.
pub async fn stock_released_body(
    tx: &mut Tx<'_>,
    ctx: &OrdersContext,
    event: &Event<StockReleased>,
) -> Result<Step, ShopError> {
    let store = &ctx.store;
    let correlation_id = correlation(event)?;
    let mut saga: Saga<OrderSagaData> = store.get(&mut **tx, correlation_id).await?;
    let line = &event.payload;
    if saga.status == status::RESERVING {
        return Err(ShopError::Invalid(format!(
            "reservation {} of saga {correlation_id} was released, but the saga is not compensating",
            line.reservation_id
        )));
    }
    crate::statements()
        .query(
            "INSERT INTO inventory_reservations \
             (order_id, product_id, quantity, reservation_id, status, released_at) \
         VALUES ($1, $2, $3, $4, 'released', now()) \
         ON CONFLICT (reservation_id) DO UPDATE SET status = 'released', released_at = now() \
         WHERE inventory_reservations.status <> 'released'",
        )
        .bind(saga.payload.order_id)
        .bind(line.product_id)
        .bind(line.quantity)
        .bind(line.reservation_id)
        .execute(&mut **tx)
        .await?;
    let undo = release_of(line.reservation_id, line.product_id, line.quantity)?;
    store.complete_compensation(tx, &saga, &undo).await?;
    if store.machine().is_terminal(&saga.status) {
        return Ok(Step::Ignored);
    }
    let completed = store
        .compensations(&mut **tx, correlation_id)
        .await?
        .iter()
        .filter(|c| c.status == CompensationStatus::Completed)
        .count() as i64;
    if completed < saga.payload.lines {
        store
            .transition(tx, &mut saga, status::COMPENSATING)
            .await?;
        return Ok(Step::Compensating);
    }
    finish_cancelled(tx, ctx, &mut saga).await?;
    Ok(Step::Cancelled)
}

/// The body of `OrderFailed` (the catalog holds nothing for the order: it was out of stock,
/// or its cancellation came first): the saga is cancelled. If it was still reserving, the
/// order is cancelled now and `OrderCancelled` emitted for the cart. Run it through an
/// idempotent handler.
///
/// # Errors
///
/// A conflict; the database error.
pub async fn order_failed_body(
    tx: &mut Tx<'_>,
    emit: &mut Emitter,
    ctx: &OrdersContext,
    event: &Event<OrderFailed>,
) -> Result<Step, ShopError> {
    let correlation_id = correlation(event)?;
    let mut saga: Saga<OrderSagaData> = ctx.store.get(&mut **tx, correlation_id).await?;
    if ctx.store.machine().is_terminal(&saga.status) {
        return Ok(Step::Ignored);
    }
    let was_reserving = saga.status == status::RESERVING;
    if saga.payload.reason.is_none() {
        saga.payload.reason = Some(event.payload.reason.clone());
    }
    finish_cancelled(tx, ctx, &mut saga).await?;
    if was_reserving {
        let cancelled = Event::new(
            saga.payload.order_id.to_string(),
            event.envelope.correlation_id.clone(),
            OrderCancelled {
                order_id: saga.payload.order_id,
                reason: event.payload.reason.clone(),
            },
        );
        emit.emit(tx, &ctx.ex.orders, &cancelled).await?;
    }
    Ok(Step::Cancelled)
}
