//! The catalog (products) service's steps of the order saga: reserve an order's stock or
//! refuse it, release it when the order is cancelled, fulfil it when the order is confirmed.
//!
//! Every step first takes the order's row in `order_holds` (inserting it, or locking it),
//! so the steps of one order are serialized whatever order their events arrive in, and the
//! row records what the catalog decided:
//!
//! ```text
//!                 OrderCreated                   OrderConfirmed
//!   (no row) ─────────────────► reserved ─────────────────────────► fulfilled
//!      │                        │    │ OrderCancelled
//!      │ OrderCreated, short    │    └──────────────► released   (StockReleased per line)
//!      │                        ▼
//!      │                     rejected   (OrderFailed)
//!      │ OrderCancelled first
//!      └──────────────────► cancelled   (OrderFailed; the late OrderCreated reserves nothing)
//! ```
//!
//! The catalog never releases stock on its own clock: the orders service decides when an
//! order expired, so a confirmation and an expiry can never both win.

use prost_db::events::Event;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::emit::Emitter;
use crate::error::ShopError;
use crate::events::{
    OrderCancelled, OrderConfirmed, OrderCreated, OrderFailed, StockReleased, StockReserved,
};

/// What handling an `OrderCreated` ended as; stored as the handler's result, so a duplicate
/// delivery replays it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reservation {
    /// Every line is reserved; one reservation id per line.
    Reserved(Vec<Uuid>),
    /// Some line was short; nothing was reserved and `OrderFailed` was emitted.
    Rejected(String),
    /// The catalog had decided on this order before (its cancellation came first): nothing
    /// was done. Holds the order's hold status.
    AlreadyDecided(String),
}

/// What handling an `OrderCancelled` ended as.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Release {
    /// The order's reservations were released: this many lines, this many units.
    Released {
        /// Lines released.
        lines: u32,
        /// Units back in stock.
        units: i64,
    },
    /// The cancellation arrived before the order: a tombstone was left, nothing was held.
    Tombstone,
    /// Nothing to release: the order was rejected, or released or fulfilled already.
    Nothing(String),
}

/// The reason the catalog gives when a cancellation overtook the order.
pub const CANCELLED_BEFORE_RESERVATION: &str = "cancelled before any stock was reserved";

/// Takes the order's hold row: inserts it with `status` if it is new (returns `None`), or
/// locks it and returns its status.
async fn take_hold(
    tx: &mut PgConnection,
    order_id: i64,
    status: &str,
    reason: Option<&str>,
) -> Result<Option<String>, ShopError> {
    let inserted: Option<i64> = crate::statements()
        .query_scalar(
            "INSERT INTO order_holds (order_id, status, reason) VALUES ($1, $2, $3) \
         ON CONFLICT (order_id) DO NOTHING RETURNING order_id",
        )
        .bind(order_id)
        .bind(status)
        .bind(reason)
        .fetch_optional(&mut *tx)
        .await?;
    if inserted.is_some() {
        return Ok(None);
    }
    let existing: String = crate::statements()
        .query_scalar("SELECT status::text FROM order_holds WHERE order_id = $1 FOR UPDATE")
        .bind(order_id)
        .fetch_one(&mut *tx)
        .await?;
    Ok(Some(existing))
}

async fn set_hold(
    tx: &mut PgConnection,
    order_id: i64,
    status: &str,
    reason: Option<&str>,
) -> Result<(), ShopError> {
    crate::statements()
        .query(
            "UPDATE order_holds SET status = $2, reason = coalesce($3, reason), updated_at = now() \
         WHERE order_id = $1",
        )
        .bind(order_id)
        .bind(status)
        .bind(reason)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Locks `products` rows in id order, so that concurrent steps cannot deadlock, and
/// returns their stock.
pub(crate) async fn lock_products(
    tx: &mut PgConnection,
    ids: &[i64],
) -> Result<Vec<(i64, i32)>, ShopError> {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    Ok(crate::statements()
        .query_as(
            "SELECT id, stock_quantity FROM products WHERE id = ANY($1) ORDER BY id FOR UPDATE",
        )
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?)
}

/// The first line of `order` that the stock cannot serve, as a reason.
pub(crate) fn shortage(order: &OrderCreated, stock: &[(i64, i32)]) -> Option<String> {
    order.items.iter().find_map(|item| {
        let wanted: i32 = order
            .items
            .iter()
            .filter(|i| i.product_id == item.product_id)
            .map(|i| i.quantity)
            .sum();
        let available = stock
            .iter()
            .find(|(id, _)| *id == item.product_id)
            .map(|(_, s)| *s);
        available
            .is_none_or(|s| s < wanted)
            .then(|| format!("insufficient inventory for product {}", item.product_id))
    })
}

/// Takes the order's lines from the stock and writes one `inventory_reservations` row per
/// line; returns the reservation ids and the `StockReserved` events.
pub(crate) async fn take_stock(
    tx: &mut PgConnection,
    event: &Event<OrderCreated>,
) -> Result<(Vec<Uuid>, Vec<Event<StockReserved>>), ShopError> {
    let order = &event.payload;
    let product_ids: Vec<i64> = order.items.iter().map(|i| i.product_id).collect();
    let quantities: Vec<i32> = order.items.iter().map(|i| i.quantity).collect();
    let reservations: Vec<Uuid> = order.items.iter().map(|_| Uuid::new_v4()).collect();
    let expires_at: chrono::DateTime<chrono::Utc> = crate::statements().query_scalar(
        "WITH taken AS ( \
             UPDATE products p SET stock_quantity = p.stock_quantity - x.quantity, updated_at = now() \
             FROM (SELECT product_id, sum(quantity)::int AS quantity \
                   FROM unnest($1::bigint[], $2::int[]) AS t(product_id, quantity) \
                   GROUP BY product_id) x \
             WHERE p.id = x.product_id), \
         reserved AS ( \
             INSERT INTO inventory_reservations \
                 (product_id, quantity, order_id, reservation_id, expires_at) \
             SELECT t.product_id, t.quantity, $3, t.reservation_id, \
                    coalesce($5, now() + interval '24 hours') \
             FROM unnest($1::bigint[], $2::int[], $4::uuid[]) AS t(product_id, quantity, reservation_id) \
             RETURNING expires_at) \
         SELECT expires_at FROM reserved LIMIT 1",
    )
    .bind(&product_ids)
    .bind(&quantities)
    .bind(order.order_id)
    .bind(&reservations)
    .bind(order.reserve_until)
    .fetch_one(&mut *tx)
    .await?;
    let events = order
        .items
        .iter()
        .zip(&reservations)
        .map(|(item, &reservation_id)| {
            Event::new(
                item.product_id.to_string(),
                event.envelope.correlation_id.clone(),
                StockReserved {
                    product_id: item.product_id,
                    quantity: item.quantity,
                    order_id: order.order_id,
                    reservation_id,
                    expires_at: Some(expires_at),
                },
            )
        })
        .collect();
    Ok((reservations, events))
}

/// The body of the catalog's `OrderCreated` step, on the caller's transaction: all of the
/// order's lines are reserved (one `StockReserved` each), or none (`OrderFailed`). If the
/// order's cancellation got here first, nothing happens. Not idempotent by itself: run it
/// through an idempotent handler ([`crate::handlers::reserve_stock`]).
///
/// # Errors
///
/// [`ShopError::Invalid`] for an order without lines; the database error (roll back).
pub async fn reserve_stock_body(
    tx: &mut PgConnection,
    emit: &mut Emitter,
    products_exchange: &str,
    event: &Event<OrderCreated>,
) -> Result<Reservation, ShopError> {
    let order = &event.payload;
    if order.items.is_empty() {
        return Err(ShopError::Invalid(format!(
            "order {} has no lines",
            order.order_id
        )));
    }
    if let Some(status) = take_hold(tx, order.order_id, "reserved", None).await? {
        return Ok(Reservation::AlreadyDecided(status));
    }
    let ids: Vec<i64> = order.items.iter().map(|i| i.product_id).collect();
    let stock = lock_products(tx, &ids).await?;
    if let Some(reason) = shortage(order, &stock) {
        set_hold(tx, order.order_id, "rejected", Some(&reason)).await?;
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

/// Puts `rows` (`product_id`, `quantity`) back into the stock, locking the products in id
/// order first.
pub(crate) async fn restock(
    tx: &mut PgConnection,
    rows: &[(Uuid, i64, i32)],
) -> Result<(), ShopError> {
    let product_ids: Vec<i64> = rows.iter().map(|r| r.1).collect();
    let quantities: Vec<i32> = rows.iter().map(|r| r.2).collect();
    lock_products(tx, &product_ids).await?;
    crate::statements().query(
        "UPDATE products p SET stock_quantity = p.stock_quantity + x.quantity, updated_at = now() \
         FROM (SELECT product_id, sum(quantity)::int AS quantity \
               FROM unnest($1::bigint[], $2::int[]) AS t(product_id, quantity) \
               GROUP BY product_id) x \
         WHERE p.id = x.product_id",
    )
    .bind(&product_ids)
    .bind(&quantities)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// The body of the catalog's `OrderCancelled` step: releases what the order holds (one
/// `StockReleased` per line), or, if the cancellation overtook the order, leaves a
/// tombstone and answers `OrderFailed` (nothing was held). Run it through an idempotent
/// handler.
///
/// # Errors
///
/// The database error (roll back).
pub async fn release_stock_body(
    tx: &mut PgConnection,
    emit: &mut Emitter,
    products_exchange: &str,
    event: &Event<OrderCancelled>,
) -> Result<Release, ShopError> {
    let cancelled = &event.payload;
    let hold = take_hold(tx, cancelled.order_id, "cancelled", Some(&cancelled.reason)).await?;
    match hold.as_deref() {
        None => {
            let failed = Event::new(
                cancelled.order_id.to_string(),
                event.envelope.correlation_id.clone(),
                OrderFailed {
                    order_id: cancelled.order_id,
                    reason: CANCELLED_BEFORE_RESERVATION.to_owned(),
                },
            );
            emit.emit(tx, products_exchange, &failed).await?;
            return Ok(Release::Tombstone);
        }
        Some("reserved") => {}
        Some(other) => return Ok(Release::Nothing(other.to_owned())),
    }
    let rows: Vec<(Uuid, i64, i32)> = crate::statements()
        .query_as(
            "UPDATE inventory_reservations SET status = 'released', released_at = now() \
         WHERE order_id = $1 AND status = 'reserved' \
         RETURNING reservation_id, product_id, quantity",
        )
        .bind(cancelled.order_id)
        .fetch_all(&mut *tx)
        .await?;
    set_hold(tx, cancelled.order_id, "released", Some(&cancelled.reason)).await?;
    restock_and_announce(tx, emit, products_exchange, event, &rows).await
}

/// The end of a release, shared with the seed-shaped body: puts `rows` (reservation,
/// product, quantity) back into the stock and emits one `StockReleased` per row.
///
/// # Errors
///
/// The database error (roll back).
pub(crate) async fn restock_and_announce(
    tx: &mut PgConnection,
    emit: &mut Emitter,
    products_exchange: &str,
    event: &Event<OrderCancelled>,
    rows: &[(Uuid, i64, i32)],
) -> Result<Release, ShopError> {
    restock(tx, rows).await?;
    let reason = &event.payload.reason;
    let released: Vec<Event<StockReleased>> = rows
        .iter()
        .map(|&(reservation_id, product_id, quantity)| {
            Event::new(
                product_id.to_string(),
                event.envelope.correlation_id.clone(),
                StockReleased {
                    product_id,
                    quantity,
                    reservation_id,
                    reason: reason.clone(),
                },
            )
        })
        .collect();
    emit.emit_all(tx, products_exchange, &released).await?;
    Ok(Release::Released {
        lines: rows.len() as u32,
        units: rows.iter().map(|r| i64::from(r.2)).sum(),
    })
}

/// The body of the catalog's `OrderConfirmed` step: the order's reservations become
/// `fulfilled` (the stock stays taken). Returns how many lines.
///
/// # Errors
///
/// The database error (roll back).
pub async fn fulfil_stock_body(
    tx: &mut PgConnection,
    event: &Event<OrderConfirmed>,
) -> Result<u64, ShopError> {
    // Confirmation and cancellation of one order exclude each other (the orders service
    // decides once), so this step needs no serialization through the hold row.
    let order_id = event.payload.order_id;
    crate::statements()
        .query(
            "UPDATE order_holds SET status = 'fulfilled', updated_at = now() \
         WHERE order_id = $1 AND status = 'reserved'",
        )
        .bind(order_id)
        .execute(&mut *tx)
        .await?;
    Ok(crate::statements()
        .query(
            "UPDATE inventory_reservations SET status = 'fulfilled' \
         WHERE order_id = $1 AND status = 'reserved'",
        )
        .bind(order_id)
        .execute(&mut *tx)
        .await?
        .rows_affected())
}
