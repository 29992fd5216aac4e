//! The control: the seed's order saga in the seed's shape, for comparison.
//!
//! The Go services never finished a saga because of plumbing bugs
//! (`research/seed-origin.md` §10: routing, types, correlation ids); those are fixed here,
//! so that what remains is the seed's *shape*:
//!
//! - no idempotency: each step runs in a bare transaction, and a redelivered event is
//!   applied again;
//! - publish after commit: events go to the broker after COMMIT, so a crash in between
//!   loses them;
//! - read, then write: the saga's status is read and then overwritten, with no version
//!   check, so two steps of one order (two lines, or a late line and the expiry) can both
//!   decide, or neither;
//! - no decision record in the catalog: a cancellation that overtakes its order releases
//!   nothing, and the order then reserves stock that nobody releases.
//!
//! The same events, tables and topology as the prost-db services.

use prost_db::events::Event;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::catalog::{Release, Reservation, lock_products, shortage, take_stock};
use crate::emit::Emitter;
use crate::error::ShopError;
use crate::events::{
    CartCheckoutInitiated, OrderCancelled, OrderConfirmed, OrderCreated, OrderFailed,
    StockReleased, StockReserved,
};
use crate::orders::{OrderSagaData, Step, correlation, insert_order, status};
use crate::topology::Exchanges;

/// The catalog's `OrderCreated`, seed-shaped: check, take, reserve, with no record of the
/// decision (a duplicate reserves again).
///
/// # Errors
///
/// The database error.
pub async fn reserve_stock_body(
    tx: &mut PgConnection,
    emit: &mut Emitter,
    products_exchange: &str,
    event: &Event<OrderCreated>,
) -> Result<Reservation, ShopError> {
    let order = &event.payload;
    let ids: Vec<i64> = order.items.iter().map(|i| i.product_id).collect();
    let stock = lock_products(tx, &ids).await?;
    if let Some(reason) = shortage(order, &stock) {
        let failed = Event::new(
            order.order_id.to_string(),
            event.envelope.correlation_id.clone(),
            OrderFailed {
                order_id: order.order_id,
                reason: reason.clone(),
            },
        );
        emit.emit(tx, products_exchange, &failed).await?;
        return Ok(Reservation::Rejected(reason));
    }
    let (reservations, reserved) = take_stock(tx, event).await?;
    emit.emit_all(tx, products_exchange, &reserved).await?;
    Ok(Reservation::Reserved(reservations))
}

/// The catalog's `OrderCancelled`, seed-shaped (`GetReservationsByOrderID` then
/// `ReleaseReservation` for each): every reservation of the order goes back to the stock,
/// whatever its status.
///
/// # Errors
///
/// The database error.
pub async fn release_stock_body(
    tx: &mut PgConnection,
    emit: &mut Emitter,
    products_exchange: &str,
    event: &Event<OrderCancelled>,
) -> Result<Release, ShopError> {
    let cancelled = &event.payload;
    let rows: Vec<(Uuid, i64, i32)> = sqlx::query_as(
        "SELECT reservation_id, product_id, quantity FROM inventory_reservations WHERE order_id = $1",
    )
    .bind(cancelled.order_id)
    .fetch_all(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE inventory_reservations SET status = 'released', released_at = now() WHERE order_id = $1",
    )
    .bind(cancelled.order_id)
    .execute(&mut *tx)
    .await?;
    crate::catalog::restock_and_announce(tx, emit, products_exchange, event, &rows).await
}

/// The catalog's `OrderConfirmed`, seed-shaped.
///
/// # Errors
///
/// The database error.
pub async fn fulfil_stock_body(
    tx: &mut PgConnection,
    event: &Event<OrderConfirmed>,
) -> Result<u64, ShopError> {
    Ok(sqlx::query(
        "UPDATE inventory_reservations SET status = 'fulfilled' \
         WHERE order_id = $1 AND status = 'reserved'",
    )
    .bind(event.payload.order_id)
    .execute(&mut *tx)
    .await?
    .rows_affected())
}

/// The orders service's `CartCheckoutInitiated`, seed-shaped: the order and a saga row.
///
/// # Errors
///
/// The database error (a duplicate violates the unique correlation id).
pub async fn create_order_body(
    tx: &mut PgConnection,
    emit: &mut Emitter,
    ex: &Exchanges,
    default_hold: std::time::Duration,
    event: &Event<CartCheckoutInitiated>,
) -> Result<i64, ShopError> {
    let correlation_id = correlation(event)?;
    let checkout = &event.payload;
    let order_id = insert_order(tx, correlation_id, checkout).await?;
    let hold = checkout
        .reserve_for_ms
        .map_or(default_hold, std::time::Duration::from_millis);
    let data = OrderSagaData {
        order_id,
        cart_id: checkout.cart_id,
        lines: checkout.items.len() as i64,
        reason: None,
    };
    let expires_at: chrono::DateTime<chrono::Utc> = sqlx::query_scalar(
        "INSERT INTO saga_states (correlation_id, saga_type, status, order_id, payload, expires_at) \
         VALUES ($1, 'order', 'reserving', $2, $3, now() + make_interval(secs => $4)) \
         RETURNING expires_at",
    )
    .bind(correlation_id)
    .bind(order_id)
    .bind(sqlx::types::Json(&data))
    .bind(hold.as_secs_f64())
    .fetch_one(&mut *tx)
    .await?;
    let created = crate::orders::order_created(event, order_id, expires_at);
    emit.emit(tx, &ex.orders, &created).await?;
    Ok(order_id)
}

/// The saga row as the seed reads it: status, order, lines, expired.
async fn read_saga(
    tx: &mut PgConnection,
    correlation_id: Uuid,
) -> Result<(String, i64, i64, bool), ShopError> {
    let row: Option<(String, i64, i64, bool)> = sqlx::query_as(
        "SELECT status::text, order_id, (payload->>'lines')::bigint, expires_at <= now() \
         FROM saga_states WHERE correlation_id = $1",
    )
    .bind(correlation_id)
    .fetch_optional(&mut *tx)
    .await?;
    row.ok_or_else(|| ShopError::Invalid(format!("no saga {correlation_id}")))
}

async fn set_status(
    tx: &mut PgConnection,
    correlation_id: Uuid,
    saga: &str,
    order: &str,
) -> Result<(), ShopError> {
    sqlx::query("UPDATE saga_states SET status = $2, updated_at = now() WHERE correlation_id = $1")
        .bind(correlation_id)
        .bind(saga)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "UPDATE orders SET status = $2, updated_at = now(), \
         cancelled_at = CASE WHEN $2 = 'cancelled' THEN now() END \
         WHERE saga_correlation_id = $1",
    )
    .bind(correlation_id)
    .bind(order)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Moves the saga to compensating and emits `OrderCancelled`, seed-shaped.
///
/// # Errors
///
/// The database error.
pub async fn cancel(
    tx: &mut PgConnection,
    emit: &mut Emitter,
    ex: &Exchanges,
    correlation_id: Uuid,
    order_id: i64,
    reason: &str,
) -> Result<(), ShopError> {
    set_status(tx, correlation_id, status::COMPENSATING, "cancelling").await?;
    sqlx::query(
        "UPDATE compensation_log SET status = 'requested' \
         WHERE saga_correlation_id = $1 AND status = 'pending'",
    )
    .bind(correlation_id)
    .execute(&mut *tx)
    .await?;
    let cancelled = Event::new(
        order_id.to_string(),
        correlation_id.to_string(),
        OrderCancelled {
            order_id,
            reason: reason.to_owned(),
        },
    );
    emit.emit(tx, &ex.orders, &cancelled).await?;
    Ok(())
}

/// The orders service's `StockReserved`, seed-shaped: record the line and its compensation,
/// read the saga, count the lines, decide.
///
/// # Errors
///
/// The database error (a duplicate violates the unique reservation id).
pub async fn stock_reserved_body(
    tx: &mut PgConnection,
    emit: &mut Emitter,
    ex: &Exchanges,
    event: &Event<StockReserved>,
) -> Result<Step, ShopError> {
    let correlation_id = correlation(event)?;
    let line = &event.payload;
    sqlx::query(
        "INSERT INTO inventory_reservations \
             (order_id, product_id, quantity, reservation_id, expires_at) \
         VALUES ($1, $2, $3, $4, coalesce($5, now() + interval '24 hours'))",
    )
    .bind(line.order_id)
    .bind(line.product_id)
    .bind(line.quantity)
    .bind(line.reservation_id)
    .bind(line.expires_at)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO compensation_log \
             (order_id, saga_correlation_id, compensation_event, compensation_payload, compensation_key) \
         VALUES ($1, $2, 'StockReleased', $3, $4)",
    )
    .bind(line.order_id)
    .bind(correlation_id)
    .bind(sqlx::types::Json(serde_json::json!({
        "reservation_id": line.reservation_id,
        "product_id": line.product_id,
        "quantity": line.quantity,
    })))
    .bind(line.reservation_id.to_string())
    .execute(&mut *tx)
    .await?;
    let (saga_status, order_id, lines, expired) = read_saga(tx, correlation_id).await?;
    if saga_status != status::RESERVING {
        return Ok(Step::Ignored);
    }
    if expired {
        let reason = "stock was reserved after the order's hold expired";
        cancel(tx, emit, ex, correlation_id, order_id, reason).await?;
        return Ok(Step::Compensating);
    }
    let reserved: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM inventory_reservations WHERE order_id = $1 AND status = 'reserved'",
    )
    .bind(order_id)
    .fetch_one(&mut *tx)
    .await?;
    if reserved < lines {
        return Ok(Step::Waiting);
    }
    set_status(tx, correlation_id, status::CONFIRMED, "confirmed").await?;
    sqlx::query(
        "UPDATE inventory_reservations SET status = 'fulfilled', fulfilled_at = now() \
         WHERE order_id = $1 AND status = 'reserved'",
    )
    .bind(order_id)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE compensation_log SET status = 'discarded' \
         WHERE saga_correlation_id = $1 AND status = 'pending'",
    )
    .bind(correlation_id)
    .execute(&mut *tx)
    .await?;
    let confirmed = Event::new(
        order_id.to_string(),
        event.envelope.correlation_id.clone(),
        OrderConfirmed { order_id },
    );
    emit.emit(tx, &ex.orders, &confirmed).await?;
    Ok(Step::Confirmed)
}

/// The orders service's `StockReleased`, seed-shaped.
///
/// # Errors
///
/// The database error.
pub async fn stock_released_body(
    tx: &mut PgConnection,
    event: &Event<StockReleased>,
) -> Result<Step, ShopError> {
    let correlation_id = correlation(event)?;
    let line = &event.payload;
    sqlx::query(
        "UPDATE inventory_reservations SET status = 'released', released_at = now() \
         WHERE reservation_id = $1",
    )
    .bind(line.reservation_id)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE compensation_log SET status = 'completed', completed_at = now() \
         WHERE saga_correlation_id = $1 AND compensation_key = $2",
    )
    .bind(correlation_id)
    .bind(line.reservation_id.to_string())
    .execute(&mut *tx)
    .await?;
    let (saga_status, _, lines, _) = read_saga(tx, correlation_id).await?;
    if saga_status != status::COMPENSATING {
        return Ok(Step::Ignored);
    }
    let completed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM compensation_log \
         WHERE saga_correlation_id = $1 AND status = 'completed'",
    )
    .bind(correlation_id)
    .fetch_one(&mut *tx)
    .await?;
    if completed < lines {
        return Ok(Step::Compensating);
    }
    set_status(tx, correlation_id, status::CANCELLED, "cancelled").await?;
    Ok(Step::Cancelled)
}

/// The orders service's `OrderFailed`, seed-shaped.
///
/// # Errors
///
/// The database error.
pub async fn order_failed_body(
    tx: &mut PgConnection,
    emit: &mut Emitter,
    ex: &Exchanges,
    event: &Event<OrderFailed>,
) -> Result<Step, ShopError> {
    let correlation_id = correlation(event)?;
    let (saga_status, order_id, _, _) = read_saga(tx, correlation_id).await?;
    match saga_status.as_str() {
        status::RESERVING => {
            set_status(tx, correlation_id, status::CANCELLED, "cancelled").await?;
            let cancelled = Event::new(
                order_id.to_string(),
                event.envelope.correlation_id.clone(),
                OrderCancelled {
                    order_id,
                    reason: event.payload.reason.clone(),
                },
            );
            emit.emit(tx, &ex.orders, &cancelled).await?;
            Ok(Step::Cancelled)
        }
        status::COMPENSATING => {
            set_status(tx, correlation_id, status::CANCELLED, "cancelled").await?;
            Ok(Step::Cancelled)
        }
        _ => Ok(Step::Ignored),
    }
}

/// The expired sagas, as the seed would find them (no lock): correlation id and order.
///
/// # Errors
///
/// The database error.
pub async fn expired(tx: &mut PgConnection, limit: i64) -> Result<Vec<(Uuid, i64)>, ShopError> {
    Ok(sqlx::query_as(
        "SELECT correlation_id, order_id FROM saga_states \
         WHERE status = 'reserving' AND expires_at <= now() ORDER BY expires_at LIMIT $1",
    )
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?)
}
