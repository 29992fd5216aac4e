#[derive(prost_db::Schema)]
#[schema(migrations = "../migrations", table = "orders")]
struct Order {
    id: i64,
    status: i32,
}

fn main() {}
