// A bad argument is one error: the handler still expands, so its caller compiles.
use prost_db::idempotency::Tx;

#[derive(serde::Serialize)]
struct Event {
    id: String,
}

#[prost_db::idempotent_handler(key = event.id, actoin = "reserve")]
async fn reserve(tx: &mut Tx, event: &Event) -> Result<(), sqlx::Error> {
    let _ = (tx, event);
    Ok(())
}

async fn caller(db: &prost_db::Db, event: &Event) {
    let _ = reserve(db, event).await;
}

fn main() {
    let _ = caller;
}
