// sqlx::FromRow does not read #[schema(skip)]: it would still read a `label` column.
#[derive(prost_db::Schema, sqlx::FromRow)]
#[schema(schema = "catalog", table = "products")]
struct Product {
    id: i64,
    #[schema(skip)]
    label: String,
}

fn main() {}
