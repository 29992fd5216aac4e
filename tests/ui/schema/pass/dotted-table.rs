#[derive(prost_db::Schema)]
#[schema(table = "catalog.products")]
struct Product {
    id: i64,
}

fn main() {
    use prost_db::schema::Schema;
    assert_eq!(Product::TABLE.qualified_name(), "catalog.products");
}
