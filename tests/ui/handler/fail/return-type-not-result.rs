use prost_db::idempotency::Tx;

#[derive(serde::Serialize)]
struct Event {
    id: String,
}

#[prost_db::idempotent_handler(key = event.id)]
async fn reserve(tx: &mut Tx, event: &Event) -> u64 {
    let _ = (tx, event);
    1
}

fn main() {}
