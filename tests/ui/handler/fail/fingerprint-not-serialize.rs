use prost_db::idempotency::Tx;

struct Lines(Vec<u32>);

struct Event {
    order_id: i64,
    lines: Lines,
}

#[prost_db::idempotent_handler(key = event.order_id, fingerprint = event.lines)]
async fn ship(tx: &mut Tx, event: &Event) -> Result<(), sqlx::Error> {
    let _ = (tx, event.lines.0.len());
    Ok(())
}

fn main() {
    let _ = ship;
}
