#[derive(prost_db::Schema)]
#[schema(schema = "catalog", table = "prodcts")]
struct Product {
    id: i64,
}

fn main() {}
