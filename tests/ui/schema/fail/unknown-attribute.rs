#[derive(prost_db::Schema)]
#[schema(schema = "catalog", table = "products")]
struct Product {
    #[schema(primary_key)]
    id: i64,
}

fn main() {}
