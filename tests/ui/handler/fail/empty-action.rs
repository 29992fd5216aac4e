use prost_db::idempotency::Tx;

#[derive(serde::Serialize)]
struct Event {
    id: String,
}

#[prost_db::idempotent_handler(key = event.id, action = "")]
async fn reserve(tx: &mut Tx, event: &Event) -> Result<(), sqlx::Error> {
    let _ = (tx, event);
    Ok(())
}

fn main() {}
