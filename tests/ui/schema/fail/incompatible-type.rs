#[derive(prost_db::Schema)]
#[schema(schema = "catalog", table = "products")]
struct Product {
    id: i32,
    name: String,
}

fn main() {}
