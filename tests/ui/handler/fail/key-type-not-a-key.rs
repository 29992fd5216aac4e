use prost_db::idempotency::Tx;

#[derive(serde::Serialize)]
struct Event {
    payload: Vec<u8>,
}

#[prost_db::idempotent_handler(key = event.payload)]
async fn reserve(tx: &mut Tx, event: &Event) -> Result<(), sqlx::Error> {
    let _ = (tx, event);
    Ok(())
}

fn main() {}
