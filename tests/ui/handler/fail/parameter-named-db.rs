// The wrapper takes `db: &Db` in place of the transaction; another `db` would be ambiguous.
use prost_db::idempotency::Tx;

#[derive(serde::Serialize)]
struct Event {
    id: String,
}

#[prost_db::idempotent_handler(key = event.id)]
async fn reserve(tx: &mut Tx, event: &Event, db: &str) -> Result<(), sqlx::Error> {
    let _ = (tx, event, db);
    Ok(())
}

fn main() {}
