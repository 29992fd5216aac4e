#![deny(warnings)]

mod framework {
    pub use ::prost_db as db;
}

use framework::db::idempotency::Tx;

#[derive(serde::Serialize)]
struct Event {
    id: uuid::Uuid,
}

#[framework::db::idempotent_handler(crate = self::framework::db, key = event.id)]
async fn reserve(tx: &mut Tx, event: &Event) -> Result<(), sqlx::Error> {
    let _ = (tx, event);
    Ok(())
}

async fn caller(db: &framework::db::Db, event: &Event) {
    let _ = reserve(db, event).await;
}

fn main() {
    let _ = caller;
}
