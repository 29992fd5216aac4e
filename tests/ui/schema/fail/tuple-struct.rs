#[derive(prost_db::Schema)]
#[schema(schema = "catalog", table = "products")]
struct Product(i64, String);

fn main() {}
