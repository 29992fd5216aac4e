// A table the migrations do not create (made by hand, by another tool): no catalog read,
// only names in the description, so the startup check still finds a missing table or column.
#[derive(prost_db::Schema)]
#[schema(unchecked, schema = "reporting", table = "daily_sales")]
struct DailySales {
    day: chrono::NaiveDate,
    total: rust_decimal::Decimal,
}

fn main() {
    use prost_db::schema::Schema;
    assert_eq!(DailySales::TABLE.qualified_name(), "reporting.daily_sales");
    assert_eq!(DailySales::TABLE.columns[1].nullable, None);
}
