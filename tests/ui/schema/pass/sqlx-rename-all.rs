// sqlx's rename_all names the columns for both derives.
#[derive(prost_db::Schema, sqlx::FromRow)]
#[sqlx(rename_all = "camelCase")]
#[schema(migrations = "../migrations", table = "orders")]
struct Order {
    #[sqlx(rename = "id")]
    order_id: i64,
    created_at: chrono::DateTime<chrono::Utc>,
}

fn main() {
    use prost_db::schema::Schema;
    assert_eq!(Order::TABLE.columns[1].name, "createdAt");
}
