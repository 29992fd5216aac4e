#[derive(prost_db::Schema, sqlx::FromRow)]
#[schema(schema = "catalog", table = "products")]
struct Product {
    id: i64,
    #[sqlx(skip)]
    cached_label: Vec<std::collections::HashMap<String, i32>>,
    #[schema(unchecked)]
    price: f64,
}

fn main() {
    use prost_db::schema::Schema;
    let columns = Product::TABLE.columns;
    assert_eq!(columns.len(), 2);
    assert_eq!((columns[1].name, columns[1].sql_type), ("price", None));
    let _ = Product {
        id: 1,
        cached_label: Vec::new(),
        price: 1.0,
    };
}
