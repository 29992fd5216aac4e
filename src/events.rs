//! The shop's events (the seed's `shared/events`), with its type quirks fixed: order ids are
//! always `i64`, reservation ids are UUIDs, money is a decimal.
//!
//! ```
//! use prost_db::events::{Event, EventPayload};
//! use prost_shop::events::OrderConfirmed;
//!
//! let event = Event::new("1001", "saga-1", OrderConfirmed { order_id: 1001 });
//! assert_eq!(OrderConfirmed::ROUTING_KEY, "order.confirmed");
//! assert_eq!(serde_json::to_value(&event).unwrap()["event_type"], "OrderConfirmed");
//! ```

use chrono::{DateTime, Utc};
use prost_db::events::EventPayload;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Exchange of the catalog (products) service.
pub const PRODUCTS_EXCHANGE: &str = "products.events";
/// Exchange of the cart service.
pub const CART_EXCHANGE: &str = "cart.events";
/// Exchange of the orders service.
pub const ORDERS_EXCHANGE: &str = "orders.events";

macro_rules! event {
    ($(#[$doc:meta])* $name:ident, $aggregate:literal, $key:literal { $($(#[$fdoc:meta])* $field:ident : $ty:ty),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        pub struct $name {
            $($(#[$fdoc])* pub $field: $ty,)*
        }

        impl EventPayload for $name {
            const EVENT_TYPE: &'static str = stringify!($name);
            const AGGREGATE_TYPE: &'static str = $aggregate;
            const ROUTING_KEY: &'static str = $key;
        }
    };
}

/// A line of an order or a checkout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderItem {
    /// The product.
    pub product_id: i64,
    /// Units ordered.
    pub quantity: i32,
    /// Unit price.
    pub price: Decimal,
}

event!(
    /// A product was added to the catalog.
    ProductCreated, "product", "product.created" {
        /// Catalog id.
        product_id: i64,
        /// Display name.
        name: String,
        /// Long description.
        description: Option<String>,
        /// Unit price.
        price: Decimal,
        /// Stock keeping unit.
        sku: String,
        /// Category, if any.
        category_id: Option<i64>,
        /// Picture.
        image_url: Option<String>,
    }
);

event!(
    /// A product's details changed.
    ProductUpdated, "product", "product.updated" {
        /// Catalog id.
        product_id: i64,
        /// Display name.
        name: String,
        /// Long description.
        description: Option<String>,
        /// Unit price.
        price: Decimal,
        /// Picture.
        image_url: Option<String>,
    }
);

event!(
    /// Stock was reserved for an order line.
    StockReserved, "product", "product.stock.reserved" {
        /// The product.
        product_id: i64,
        /// Units reserved.
        quantity: i32,
        /// The order.
        order_id: i64,
        /// The reservation.
        reservation_id: Uuid,
        /// When the order's hold on it ends (absent in the seed's events).
        #[serde(default)]
        expires_at: Option<DateTime<Utc>>,
    }
);

event!(
    /// A reservation was released.
    StockReleased, "product", "product.stock.released" {
        /// The product.
        product_id: i64,
        /// Units released.
        quantity: i32,
        /// The reservation.
        reservation_id: Uuid,
        /// `order_cancelled`, `order_failed` or a failure reason.
        reason: String,
    }
);

event!(
    /// An item was put in a cart.
    ItemAddedToCart, "cart", "cart.item.added" {
        /// The cart.
        cart_id: Uuid,
        /// The product.
        product_id: i64,
        /// Units.
        quantity: i32,
        /// Unit price.
        price: Decimal,
    }
);

event!(
    /// An item was taken out of a cart.
    ItemRemovedFromCart, "cart", "cart.item.removed" {
        /// The cart.
        cart_id: Uuid,
        /// The product.
        product_id: i64,
        /// Units.
        quantity: i32,
        /// Unit price.
        price: Decimal,
    }
);

event!(
    /// A cart was emptied.
    CartCleared, "cart", "cart.cleared" {
        /// The cart.
        cart_id: Uuid,
        /// Its owner.
        user_id: Uuid,
    }
);

event!(
    /// Checkout started the order saga.
    CartCheckoutInitiated, "cart", "cart.checkout.initiated" {
        /// The cart.
        cart_id: Uuid,
        /// Its owner.
        user_id: Uuid,
        /// Order total.
        total: Decimal,
        /// The lines.
        items: Vec<OrderItem>,
        /// How long the order may hold its stock before it is confirmed, in milliseconds;
        /// `None`: the orders service's default.
        #[serde(default)]
        reserve_for_ms: Option<u64>,
    }
);

event!(
    /// An order was created; the catalog reserves its stock.
    OrderCreated, "order", "order.created" {
        /// The order.
        order_id: i64,
        /// The customer.
        user_id: Uuid,
        /// Order total.
        total: Decimal,
        /// The lines.
        items: Vec<OrderItem>,
        /// The order's deadline: it is cancelled if its stock is not all reserved by then.
        #[serde(default)]
        reserve_until: Option<DateTime<Utc>>,
    }
);

event!(
    /// All stock of an order is reserved.
    OrderPlaced, "order", "order.placed" {
        /// The order.
        order_id: i64,
        /// The customer.
        user_id: Uuid,
        /// Order total.
        total: Decimal,
        /// The lines.
        items: Vec<OrderItem>,
    }
);

event!(
    /// An order was confirmed.
    OrderConfirmed, "order", "order.confirmed" {
        /// The order.
        order_id: i64,
    }
);

event!(
    /// An order failed; compensations release its stock.
    OrderFailed, "order", "order.failed" {
        /// The order.
        order_id: i64,
        /// Why.
        reason: String,
    }
);

event!(
    /// An order was cancelled by the customer.
    OrderCancelled, "order", "order.cancelled" {
        /// The order.
        order_id: i64,
        /// Why.
        reason: String,
    }
);

event!(
    /// An order left the warehouse.
    OrderShipped, "order", "order.shipped" {
        /// The order.
        order_id: i64,
        /// Carrier tracking number.
        tracking_number: String,
        /// When.
        shipped_at: DateTime<Utc>,
    }
);

event!(
    /// A user signed up.
    UserRegistered, "user", "user.registered" {
        /// The user.
        user_id: Uuid,
        /// E-mail address.
        email: String,
        /// Login name.
        username: String,
    }
);

event!(
    /// A user changed their profile.
    UserProfileUpdated, "user", "user.profile.updated" {
        /// The user.
        user_id: Uuid,
        /// E-mail address.
        email: String,
        /// Login name.
        username: String,
    }
);

#[cfg(test)]
mod tests {
    use super::*;
    use prost_db::events::Event;

    #[test]
    fn order_created_round_trips_in_the_seed_layout() {
        let event = Event::new(
            "1001",
            "saga-1",
            OrderCreated {
                order_id: 1001,
                user_id: Uuid::nil(),
                total: Decimal::new(1998, 2),
                items: vec![OrderItem {
                    product_id: 7,
                    quantity: 2,
                    price: Decimal::new(999, 2),
                }],
                reserve_until: None,
            },
        );
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["event_type"], "OrderCreated");
        assert_eq!(json["aggregate_type"], "order");
        assert_eq!(json["order_id"], 1001);
        let back: Event<OrderCreated> = serde_json::from_value(json).unwrap();
        assert_eq!(back, event);
    }
}
