// sqlx::FromRow does not read #[schema(column)]: the row would fail with ColumnNotFound.
#[derive(prost_db::Schema, sqlx::FromRow)]
#[schema(schema = "catalog", table = "products")]
struct Product {
    id: i64,
    #[schema(column = "name")]
    title: String,
}

fn main() {}
