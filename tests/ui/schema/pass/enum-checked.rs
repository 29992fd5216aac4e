// The enum follows 0003's ADD VALUE and RENAME VALUE; a String holds any enum column.
#[derive(sqlx::Type, prost_db::Schema)]
#[sqlx(type_name = "order_status", rename_all = "snake_case")]
#[schema(migrations = "../migrations")]
enum OrderStatus {
    Pending,
    Paid,
    Refunded,
    #[sqlx(rename = "canceled")]
    Cancelled,
}

#[derive(prost_db::Schema)]
#[schema(migrations = "../migrations", table = "orders")]
struct Order {
    id: i64,
    status: OrderStatus,
    history: Vec<OrderStatus>,
    feeling: Option<String>,
}

fn main() {
    use prost_db::schema::{EnumColumn, Schema, pg};
    assert_eq!(
        <OrderStatus as EnumColumn<pg::Enum>>::SQL_ENUM,
        Some(("app", "order_status"))
    );
    assert_eq!(Order::TABLE.columns[2].sql_type, Some("_order_status"));
    let _ = [
        OrderStatus::Pending,
        OrderStatus::Paid,
        OrderStatus::Refunded,
        OrderStatus::Cancelled,
    ];
}
