// A handler the attribute cannot wrap (here: not `async`) is one error: the fn still has
// the signature callers expect (`async`, `db` in place of the transaction, `Outcome<T>`
// and `HandlerError<E>`), so the caller below, which uses all of it, compiles.
use prost_db::idempotency::{EventId, HandlerError, Outcome, Tx};

#[derive(serde::Serialize)]
struct Event {
    id: String,
}

impl EventId for Event {
    type Id = String;
    fn event_id(&self) -> &String {
        &self.id
    }
}

#[prost_db::idempotent_handler]
fn reserve(tx: &mut Tx, event: &Event) -> Result<u32, sqlx::Error> {
    let _ = (tx, event);
    Ok(1)
}

async fn caller(db: &prost_db::Db, event: &Event) -> Result<u32, HandlerError<sqlx::Error>> {
    match reserve(db, event).await? {
        Outcome::Processed(left) | Outcome::Duplicate(left) => Ok(left),
    }
}

fn main() {
    let _ = caller;
}
