// Types the derive cannot check are accepted through an explicit opt-in: per field, or
// per Rust type for an extension type with a marker.
use prost_db::schema::{CompatibleWith, pg};

/// A label path of an `ltree` column.
struct LabelPath(#[allow(dead_code)] String);
impl CompatibleWith<pg::ltree> for LabelPath {}

#[derive(prost_db::Schema)]
#[schema(migrations = "../migrations", table = "orders")]
struct Order {
    id: i64,
    path: Option<LabelPath>,
    #[schema(unchecked_type)]
    size: Option<String>,
}

#[derive(prost_db::Schema)]
#[schema(migrations = "../migrations", table = "orders")]
struct OrderPath {
    id: i64,
    #[schema(unchecked_type)]
    path: Option<String>,
}

fn main() {
    use prost_db::schema::Schema;
    // The startup check still compares the type.
    assert_eq!(Order::TABLE.columns[2].sql_type, Some("dimensions"));
    assert_eq!(OrderPath::TABLE.columns[1].sql_type, Some("ltree"));
}
