#![deny(warnings)]

// A business key with a fingerprint of what the user names, on an event that is not
// `EventId` (nor `Serialize` as a whole), and a body written against `&mut PgConnection`.
use prost_db::idempotency::{HandlerError, Outcome};

#[derive(serde::Serialize)]
struct Line {
    sku: String,
    quantity: u32,
}

struct OrderPaid {
    order_id: i64,
    lines: Vec<Line>,
    paid_at: std::time::Instant,
}

#[prost_db::idempotent_handler(key = event.order_id, fingerprint = event.lines)]
async fn ship(tx: &mut sqlx::PgConnection, event: &OrderPaid) -> Result<usize, sqlx::Error> {
    let _ = (tx, event.paid_at);
    Ok(event
        .lines
        .iter()
        .map(|l| l.quantity as usize + l.sku.len())
        .sum())
}

async fn caller(db: &prost_db::Db, event: &OrderPaid) -> Result<usize, HandlerError<sqlx::Error>> {
    Ok(match ship(db, event).await? {
        Outcome::Processed(n) | Outcome::Duplicate(n) => n,
    })
}

fn main() {
    let _ = caller;
}
