//! The orders service's side of the saga: records the catalog's stock reservations.

use prost_db::events::Event;
use sqlx::PgConnection;

use crate::events::StockReserved;

/// The body of the orders service's `StockReserved` handler: one row in
/// `orders.inventory_reservations` per reservation. Not idempotent by itself: run it through
/// the idempotent handler ([`crate::handlers::record_stock_reserved`]).
///
/// # Errors
///
/// The database error.
pub async fn record_stock_reserved_body(
    tx: &mut PgConnection,
    event: &Event<StockReserved>,
) -> Result<(), prost_db::Error> {
    let reserved = &event.payload;
    sqlx::query(
        "INSERT INTO inventory_reservations (order_id, product_id, quantity, reservation_id) \
         VALUES ($1, $2, $3, $4)",
    )
    .bind(reserved.order_id)
    .bind(reserved.product_id)
    .bind(reserved.quantity)
    .bind(reserved.reservation_id)
    .execute(&mut *tx)
    .await?;
    Ok(())
}
