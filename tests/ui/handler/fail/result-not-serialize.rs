// The result is stored and replayed to duplicates, so it must convert to and from JSON.
use prost_db::idempotency::Tx;

#[derive(serde::Serialize)]
struct Event {
    id: String,
}

struct Receipt {
    total: i64,
}

#[prost_db::idempotent_handler(key = event.id)]
async fn charge(tx: &mut Tx, event: &Event) -> Result<Receipt, sqlx::Error> {
    let _ = (tx, event);
    Ok(Receipt { total: 1 })
}

fn main() {
    let _ = charge;
}
