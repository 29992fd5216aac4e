// `size` is of a composite type, which the derive cannot check against a Rust type.
#[derive(prost_db::Schema)]
#[schema(migrations = "../migrations", table = "orders")]
struct Order {
    id: i64,
    size: Option<String>,
}

fn main() {}
