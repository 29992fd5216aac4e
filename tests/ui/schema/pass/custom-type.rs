use prost_db::schema::{CompatibleWith, pg};

/// Money in a NUMERIC column.
struct Money(#[allow(dead_code)] rust_decimal::Decimal);
impl CompatibleWith<pg::numeric> for Money {}

/// The fixture's `item_state` enum, checked against its labels.
#[derive(sqlx::Type, prost_db::Schema)]
#[sqlx(type_name = "item_state", rename_all = "lowercase")]
#[schema(migrations = "../migrations")]
enum ItemState {
    New,
    Sold,
}

#[derive(prost_db::Schema)]
#[schema(schema = "catalog", table = "products")]
struct Product {
    id: i64,
    price: Money,
}

#[derive(prost_db::Schema)]
#[schema(migrations = "../migrations", table = "items")]
struct Item {
    id: i64,
    name: String,
    state: ItemState,
    price: Money,
    tags: Vec<String>,
}

fn main() {
    use prost_db::schema::Schema;
    assert_eq!(Item::TABLE.qualified_name(), "app.items");
    assert_eq!(Item::TABLE.columns[2].sql_type, Some("item_state"));
    assert_eq!(Item::TABLE.columns[4].sql_type, Some("_text"));
    let _ = (Product::TABLE, [ItemState::New, ItemState::Sold]);
}
