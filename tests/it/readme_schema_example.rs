use chrono::{DateTime, Utc};
use prost_db::schema::Schema;

#[derive(prost_db::Schema, sqlx::FromRow)]
#[schema(schema = "catalog", table = "products")]
pub struct Product {
    pub id: i64,                           // BIGSERIAL PRIMARY KEY -> int8 NOT NULL
    #[sqlx(rename = "name")]
    pub title: String,                     // VARCHAR(255) NOT NULL
    pub price: rust_decimal::Decimal,      // NUMERIC(10, 2)
    pub description: Option<String>,       // TEXT (nullable, so Option)
    pub deleted_at: Option<DateTime<Utc>>,
    #[sqlx(skip)]
    pub label: String,                     // not a column
}

/// At startup, one round trip checks the table; then rows decode as usual.
pub async fn products(db: &prost_db::Db) -> Result<Vec<Product>, prost_db::Error> {
    db.check_tables(&[Product::TABLE]).await?;
    let products = sqlx::query_as::<_, Product>("SELECT * FROM catalog.products ORDER BY id")
        .fetch_all(db.pool())
        .await?;
    Ok(products)
}
