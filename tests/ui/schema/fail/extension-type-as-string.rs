// `path` is an `ltree`: a String is not accepted silently (opt in per field or per type).
#[derive(prost_db::Schema)]
#[schema(migrations = "../migrations", table = "orders")]
struct Order {
    id: i64,
    path: Option<String>,
}

fn main() {}
