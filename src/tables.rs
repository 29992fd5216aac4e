//! One struct per table of the shop, checked at compile time against `migrations/shop`.
//!
//! ```no_run
//! use prost_shop::tables;
//!
//! # async fn run(db: prost_db::Db) -> Result<(), prost_db::Error> {
//! db.check_tables(tables::ALL).await?;
//! # Ok(()) }
//! ```

use chrono::{DateTime, Utc};
use prost_db::Schema;
use rust_decimal::Decimal;
use uuid::Uuid;

/// `catalog.categories`.
#[derive(Debug, Clone, Schema, sqlx::FromRow)]
#[schema(schema = "catalog", table = "categories")]
pub struct Category {
    pub id: i64,
    pub name: String,
    pub description: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
}

/// `catalog.products`.
#[derive(Debug, Clone, Schema, sqlx::FromRow)]
#[schema(schema = "catalog", table = "products")]
pub struct Product {
    pub id: i64,
    pub name: String,
    pub description: Option<String>,
    pub price: Decimal,
    pub category_id: Option<i64>,
    pub sku: String,
    pub stock_quantity: i32,
    pub image_url: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
}

/// `catalog.inventory_reservations`: stock held for an order.
#[derive(Debug, Clone, Schema, sqlx::FromRow)]
#[schema(schema = "catalog", table = "inventory_reservations")]
pub struct StockReservation {
    pub id: Uuid,
    pub product_id: i64,
    pub quantity: i32,
    pub order_id: i64,
    pub reservation_id: Uuid,
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub released_at: Option<DateTime<Utc>>,
}

/// `catalog.order_holds`: the catalog's decision on an order's stock (one row per order).
#[derive(Debug, Clone, Schema, sqlx::FromRow)]
#[schema(schema = "catalog", table = "order_holds")]
pub struct OrderHold {
    pub order_id: i64,
    pub status: String,
    pub reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// `users.users`.
#[derive(Debug, Clone, Schema, sqlx::FromRow)]
#[schema(schema = "users", table = "users")]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub username: String,
    pub password_hash: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
}

/// `cart.carts`.
#[derive(Debug, Clone, Schema, sqlx::FromRow)]
#[schema(schema = "cart", table = "carts")]
pub struct Cart {
    pub id: Uuid,
    pub user_id: Uuid,
    pub status: String,
    pub total: Decimal,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub abandoned_at: Option<DateTime<Utc>>,
    pub saga_correlation_id: Option<Uuid>,
    pub order_id: Option<i64>,
    pub checked_out_at: Option<DateTime<Utc>>,
    pub closed_at: Option<DateTime<Utc>>,
}

/// `cart.cart_items`.
#[derive(Debug, Clone, Schema, sqlx::FromRow)]
#[schema(schema = "cart", table = "cart_items")]
pub struct CartItem {
    pub id: Uuid,
    pub cart_id: Uuid,
    pub product_id: i64,
    pub quantity: i32,
    pub price: Decimal,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// `orders.orders`.
#[derive(Debug, Clone, Schema, sqlx::FromRow)]
#[schema(schema = "orders", table = "orders")]
pub struct Order {
    pub id: i64,
    pub user_id: Uuid,
    pub cart_id: Option<Uuid>,
    pub total: Decimal,
    pub status: String,
    pub saga_correlation_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub shipped_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub cancelled_at: Option<DateTime<Utc>>,
}

/// `orders.order_items`.
#[derive(Debug, Clone, Schema, sqlx::FromRow)]
#[schema(schema = "orders", table = "order_items")]
pub struct OrderItem {
    pub id: i64,
    pub order_id: i64,
    pub product_id: i64,
    pub quantity: i32,
    pub price: Decimal,
    pub created_at: DateTime<Utc>,
}

/// `orders.saga_states`.
#[derive(Debug, Clone, Schema, sqlx::FromRow)]
#[schema(schema = "orders", table = "saga_states")]
pub struct SagaState {
    pub id: Uuid,
    pub correlation_id: Uuid,
    pub saga_type: String,
    pub status: String,
    pub order_id: Option<i64>,
    pub payload: serde_json::Value,
    pub compensation_log: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub version: i64,
}

/// `orders.compensation_log`.
#[derive(Debug, Clone, Schema, sqlx::FromRow)]
#[schema(schema = "orders", table = "compensation_log")]
pub struct CompensationLogEntry {
    pub id: Uuid,
    pub order_id: i64,
    pub saga_correlation_id: Uuid,
    pub compensation_event: String,
    pub compensation_payload: serde_json::Value,
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
    pub compensation_key: Option<String>,
}

/// `orders.inventory_reservations`: the order service's view of its reservations.
#[derive(Debug, Clone, Schema, sqlx::FromRow)]
#[schema(schema = "orders", table = "inventory_reservations")]
pub struct OrderReservation {
    pub id: Uuid,
    pub order_id: i64,
    pub product_id: i64,
    pub quantity: i32,
    pub reservation_id: Uuid,
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub released_at: Option<DateTime<Utc>>,
    pub fulfilled_at: Option<DateTime<Utc>>,
}

/// Every shop table, for [`prost_db::Db::check_tables`] at startup.
pub const ALL: &[&prost_db::schema::TableDescription] = &[
    <Category as prost_db::schema::Schema>::TABLE,
    <Product as prost_db::schema::Schema>::TABLE,
    <StockReservation as prost_db::schema::Schema>::TABLE,
    <OrderHold as prost_db::schema::Schema>::TABLE,
    <User as prost_db::schema::Schema>::TABLE,
    <Cart as prost_db::schema::Schema>::TABLE,
    <CartItem as prost_db::schema::Schema>::TABLE,
    <Order as prost_db::schema::Schema>::TABLE,
    <OrderItem as prost_db::schema::Schema>::TABLE,
    <SagaState as prost_db::schema::Schema>::TABLE,
    <CompensationLogEntry as prost_db::schema::Schema>::TABLE,
    <OrderReservation as prost_db::schema::Schema>::TABLE,
];
