// `orders.status` is an `order_status`; `Feeling` maps to `feeling`.
#[derive(sqlx::Type, prost_db::Schema)]
#[sqlx(type_name = "feeling", rename_all = "lowercase")]
#[schema(migrations = "../migrations")]
enum Feeling {
    Happy,
    Sad,
}

#[derive(prost_db::Schema)]
#[schema(migrations = "../migrations", table = "orders")]
struct Order {
    id: i64,
    status: Feeling,
}

fn main() {}
