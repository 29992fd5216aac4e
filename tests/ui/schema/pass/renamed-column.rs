// The column of a field is the one sqlx::FromRow reads: #[sqlx(rename)].
#[derive(prost_db::Schema, sqlx::FromRow)]
#[schema(schema = "catalog", table = "products")]
struct Product {
    id: i64,
    #[sqlx(rename = "name")]
    title: String,
}

fn main() {
    use prost_db::schema::Schema;
    assert_eq!(Product::TABLE.columns[1].name, "name");
}
