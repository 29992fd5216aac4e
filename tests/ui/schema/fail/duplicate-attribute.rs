#[derive(prost_db::Schema)]
#[schema(schema = "catalog", table = "products", table = "categories")]
struct Product {
    id: i64,
}

fn main() {}
