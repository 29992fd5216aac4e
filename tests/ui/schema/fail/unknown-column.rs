#[derive(prost_db::Schema)]
#[schema(schema = "catalog", table = "products")]
struct Product {
    id: i64,
    nme: String,
}

fn main() {}
