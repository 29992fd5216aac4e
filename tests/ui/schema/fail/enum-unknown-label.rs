// 0003 renamed the label 'cancelled' to 'canceled'.
#[derive(sqlx::Type, prost_db::Schema)]
#[sqlx(type_name = "order_status", rename_all = "snake_case")]
#[schema(migrations = "../migrations")]
enum OrderStatus {
    Pending,
    Paid,
    Refunded,
    Cancelled,
}

fn main() {}
