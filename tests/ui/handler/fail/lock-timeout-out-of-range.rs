// PostgreSQL's `lock_timeout` is an `int` of milliseconds: a larger value would fail every
// `BEGIN` at run time, so it fails the build instead, on the literal.
use prost_db::idempotency::Tx;

#[derive(serde::Serialize)]
struct Event {
    id: String,
}

#[prost_db::idempotent_handler(key = event.id, lock_timeout_ms = 2147483648)]
async fn reserve(tx: &mut Tx, event: &Event) -> Result<(), sqlx::Error> {
    let _ = (tx, event);
    Ok(())
}

fn main() {}
