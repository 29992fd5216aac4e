#![deny(warnings)]

use prost_db::idempotency::{EventId, HandlerError, Outcome, Tx};

trait Priced: EventId + serde::Serialize + Sync {
    fn price(&self) -> i64;
}

#[prost_db::idempotent_handler(action = "charge")]
async fn charge<'e, E>(tx: &mut Tx, event: &'e E) -> Result<i64, sqlx::Error>
where
    E: Priced,
{
    let _ = tx;
    Ok(event.price())
}

async fn caller<E: Priced>(
    db: &prost_db::Db,
    event: &E,
) -> Result<Outcome<i64>, HandlerError<sqlx::Error>> {
    charge(db, event).await
}

fn main() {
    let _ = caller::<Order>;
}

#[derive(serde::Serialize)]
struct Order {
    id: String,
    price: i64,
}

impl EventId for Order {
    type Id = String;
    fn event_id(&self) -> &String {
        &self.id
    }
}

impl Priced for Order {
    fn price(&self) -> i64 {
        self.price
    }
}
