#[prost_db::idempotent_handler]
async fn reserve() -> Result<(), sqlx::Error> {
    Ok(())
}

fn main() {}
