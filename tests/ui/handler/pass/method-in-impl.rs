#![deny(warnings)]

use std::sync::Arc;

use prost_db::idempotency::{EventId, Tx};

#[derive(serde::Serialize)]
struct Event {
    id: String,
    quantity: i32,
}

impl EventId for Event {
    type Id = String;
    fn event_id(&self) -> &String {
        &self.id
    }
}

struct Inventory {
    limit: i32,
}

impl Inventory {
    #[prost_db::idempotent_handler]
    pub async fn reserve(
        &self,
        tx: &mut Tx,
        event: Arc<Event>,
        note: &str,
    ) -> Result<bool, sqlx::Error> {
        let _ = (tx, note);
        if event.quantity > self.limit {
            return Ok(false);
        }
        Ok(true)
    }
}

fn assert_send<F: std::future::Future + Send>(_: F) {}

fn main() {
    let _ = |db: prost_db::Db, inventory: Inventory, event: Arc<Event>| {
        assert_send(async move {
            inventory
                .reserve(&db, event, "note")
                .await
                .map(|o| o.into_inner())
        })
    };
}
