// 0003 added the label 'refunded': a row with it would not decode.
#[derive(sqlx::Type, prost_db::Schema)]
#[sqlx(type_name = "order_status", rename_all = "snake_case")]
#[schema(migrations = "../migrations")]
enum OrderStatus {
    Pending,
    Paid,
    Canceled,
}

fn main() {}
