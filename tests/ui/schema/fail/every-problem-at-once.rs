#[derive(prost_db::Schema)]
#[schema(schema = "catalog", table = "products")]
struct Product {
    id: i32,
    nme: String,
    description: String,
    #[schema(colour = "red")]
    sku: String,
}

fn main() {}
