//! The cart service's ends of the order saga: checkout starts it, the order's outcome closes
//! the cart.
//!
//! ```text
//!   active ── checkout ──► checked_out ── OrderConfirmed ──► ordered
//!                              │
//!                              └──────── OrderCancelled ──► checkout_cancelled
//! ```

use std::time::Duration;

use prost_db::events::Event;
use rust_decimal::Decimal;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::emit::Emitter;
use crate::error::ShopError;
use crate::events::{CartCheckoutInitiated, OrderItem};
use crate::topology::Exchanges;

/// A checkout request.
///
/// ```
/// use std::time::Duration;
/// let request = prost_shop::cart::Checkout::new(uuid::Uuid::new_v4()).hold(Duration::from_secs(600));
/// assert_eq!(request.hold, Some(Duration::from_secs(600)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkout {
    /// The request's idempotency key, which becomes the saga's correlation id: a retried
    /// request finds the saga it started.
    pub correlation_id: Uuid,
    /// How long the order may hold its stock before it is confirmed (`None`: the orders
    /// service's default).
    pub hold: Option<Duration>,
}

impl Checkout {
    /// A checkout whose saga has `correlation_id`.
    pub fn new(correlation_id: Uuid) -> Self {
        Checkout {
            correlation_id,
            hold: None,
        }
    }

    /// With a hold.
    #[must_use]
    pub fn hold(mut self, hold: Duration) -> Self {
        self.hold = Some(hold);
        self
    }
}

/// The cart's owner and total, and one of its lines (none for an empty cart).
type CheckoutRow = (Uuid, Decimal, Option<i64>, Option<i32>, Option<Decimal>);

/// The body of a checkout, on the caller's transaction: the cart goes from `active` to
/// `checked_out` under the request's correlation id, and `CartCheckoutInitiated` is emitted
/// with its lines. A retried request (same correlation id) changes nothing and returns
/// `false`.
///
/// # Errors
///
/// [`ShopError::Invalid`] if the cart does not exist, is empty, or was checked out by
/// another request; the database error (roll back).
pub async fn checkout_body(
    tx: &mut PgConnection,
    emit: &mut Emitter,
    ex: &Exchanges,
    cart_id: Uuid,
    request: Checkout,
) -> Result<bool, ShopError> {
    // The cart and its lines in one round trip; no row if the cart was not active.
    let rows: Vec<CheckoutRow> = crate::statements()
        .query_as(
            "WITH cart AS ( \
             UPDATE carts SET status = 'checked_out', saga_correlation_id = $2, \
                 checked_out_at = now(), updated_at = now() \
             WHERE id = $1 AND status = 'active' RETURNING id, user_id, total) \
         SELECT cart.user_id, cart.total, i.product_id, i.quantity, i.price \
         FROM cart LEFT JOIN cart_items i ON i.cart_id = cart.id ORDER BY i.product_id",
        )
        .bind(cart_id)
        .bind(request.correlation_id)
        .fetch_all(&mut *tx)
        .await?;
    let Some(&(user_id, total, ..)) = rows.first() else {
        let existing: Option<(String, Option<Uuid>)> = crate::statements()
            .query_as("SELECT status::text, saga_correlation_id FROM carts WHERE id = $1")
            .bind(cart_id)
            .fetch_optional(&mut *tx)
            .await?;
        return match existing {
            Some((_, Some(saga))) if saga == request.correlation_id => Ok(false),
            Some((status, _)) => Err(ShopError::Invalid(format!(
                "cart {cart_id} is {status}, not active"
            ))),
            None => Err(ShopError::Invalid(format!("no cart {cart_id}"))),
        };
    };
    let items: Vec<OrderItem> = rows
        .into_iter()
        .filter_map(|(_, _, product_id, quantity, price)| {
            Some(OrderItem {
                product_id: product_id?,
                quantity: quantity?,
                price: price?,
            })
        })
        .collect();
    if items.is_empty() {
        return Err(ShopError::Invalid(format!("cart {cart_id} is empty")));
    }
    let initiated = Event::new(
        cart_id.to_string(),
        request.correlation_id.to_string(),
        CartCheckoutInitiated {
            cart_id,
            user_id,
            total,
            items,
            reserve_for_ms: request.hold.map(|h| h.as_millis() as u64),
        },
    );
    emit.emit(tx, &ex.cart, &initiated).await?;
    Ok(true)
}

/// The body of the cart's `OrderConfirmed` and `OrderCancelled` steps: the checked-out
/// cart of the saga `correlation_id` ends `ordered` or `checkout_cancelled`. Returns
/// whether it changed (an event for a cart already closed changes nothing).
///
/// # Errors
///
/// The database error (roll back).
pub async fn close_body(
    tx: &mut PgConnection,
    correlation_id: Uuid,
    order_id: i64,
    ordered: bool,
) -> Result<bool, ShopError> {
    let status = if ordered {
        "ordered"
    } else {
        "checkout_cancelled"
    };
    Ok(crate::statements()
        .query(
            "UPDATE carts SET status = $2, order_id = $3, closed_at = now(), updated_at = now() \
         WHERE saga_correlation_id = $1 AND status = 'checked_out'",
        )
        .bind(correlation_id)
        .bind(status)
        .bind(order_id)
        .execute(&mut *tx)
        .await?
        .rows_affected()
        == 1)
}
