#[derive(prost_db::Schema, sqlx::FromRow)]
#[schema(schema = "catalog", table = "products")]
struct Product {
    id: i64,
    name: String,
    #[sqlx(rename = "name")]
    title: String,
}

fn main() {}
