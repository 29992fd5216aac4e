//! The catalog (products) service: reserves stock when an order is created.

use prost_db::events::Event;
use prost_db::outbox::Outbox;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::events::{OrderCreated, OrderFailed, StockReserved};

/// What handling an `OrderCreated` ended as; stored as the handler's result, so a duplicate
/// delivery replays it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reservation {
    /// Every line is reserved; one reservation id per line.
    Reserved(Vec<Uuid>),
    /// Some line was short; nothing was reserved and `OrderFailed` was staged.
    Rejected(String),
}

/// The body of the catalog's `OrderCreated` handler, on the caller's transaction: lock the
/// order's products (in id order, so concurrent orders cannot deadlock), check stock,
/// decrement it, write one `inventory_reservations` row per line, and stage `StockReserved`
/// per line (or one `OrderFailed`) in the outbox.
///
/// It is not idempotent by itself: run it through the idempotent handler
/// ([`crate::handlers::reserve_stock`]).
///
/// # Errors
///
/// The database error (the transaction must then be rolled back).
pub async fn reserve_stock_body(
    tx: &mut PgConnection,
    outbox: &Outbox,
    products_exchange: &str,
    event: &Event<OrderCreated>,
) -> Result<Reservation, prost_db::Error> {
    let order = &event.payload;
    let mut ids: Vec<i64> = order.items.iter().map(|i| i.product_id).collect();
    ids.sort_unstable();
    ids.dedup();
    let stock: Vec<(i64, i32)> = sqlx::query_as(
        "SELECT id, stock_quantity FROM products WHERE id = ANY($1) ORDER BY id FOR UPDATE",
    )
    .bind(&ids)
    .fetch_all(&mut *tx)
    .await?;
    for item in &order.items {
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
        if available.is_none_or(|s| s < wanted) {
            let reason = format!("insufficient inventory for product {}", item.product_id);
            let failed = Event::new(
                order.order_id.to_string(),
                event.envelope.correlation_id.clone(),
                OrderFailed {
                    order_id: order.order_id,
                    reason: reason.clone(),
                },
            );
            outbox.stage(&mut *tx, products_exchange, &failed).await?;
            return Ok(Reservation::Rejected(reason));
        }
    }

    let product_ids: Vec<i64> = order.items.iter().map(|i| i.product_id).collect();
    let quantities: Vec<i32> = order.items.iter().map(|i| i.quantity).collect();
    let reservations: Vec<Uuid> = order.items.iter().map(|_| Uuid::new_v4()).collect();
    sqlx::query(
        "UPDATE products p SET stock_quantity = p.stock_quantity - x.quantity, updated_at = now() \
         FROM (SELECT product_id, sum(quantity)::int AS quantity \
               FROM unnest($1::bigint[], $2::int[]) AS t(product_id, quantity) \
               GROUP BY product_id) x \
         WHERE p.id = x.product_id",
    )
    .bind(&product_ids)
    .bind(&quantities)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO inventory_reservations (product_id, quantity, order_id, reservation_id) \
         SELECT t.product_id, t.quantity, $3, t.reservation_id \
         FROM unnest($1::bigint[], $2::int[], $4::uuid[]) AS t(product_id, quantity, reservation_id)",
    )
    .bind(&product_ids)
    .bind(&quantities)
    .bind(order.order_id)
    .bind(&reservations)
    .execute(&mut *tx)
    .await?;
    let reserved: Vec<Event<StockReserved>> = order
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
                },
            )
        })
        .collect();
    outbox
        .stage_all(&mut *tx, products_exchange, &reserved)
        .await?;
    Ok(Reservation::Reserved(reservations))
}
