// The default key's event is fingerprinted, so it must serialize: the error is on the
// event's `EventId` impl, not in the handler.
use prost_db::idempotency::{EventId, Tx};

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
async fn reserve(tx: &mut Tx, event: &Event) -> Result<(), sqlx::Error> {
    let _ = (tx, event);
    Ok(())
}

fn main() {
    let _ = reserve;
}
