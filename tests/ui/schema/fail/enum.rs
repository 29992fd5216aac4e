#[derive(prost_db::Schema)]
#[schema(schema = "catalog", table = "products")]
enum Product {
    Id(i64),
}

fn main() {}
