#[derive(prost_db::Schema)]
#[schema(schema = "catalog", table = "products")]
struct Product {
    id: i64,
    #[schema(column = "name")]
    title: String,
}

fn main() {
    use prost_db::schema::Schema;
    assert_eq!(Product::TABLE.columns[1].name, "name");
}
