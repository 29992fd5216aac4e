// `permanent_errors` records the errors the error type calls permanent: it needs
// `PermanentError`, and says so on the handler's return type.
use prost_db::idempotency::Tx;

#[derive(serde::Serialize)]
struct Event {
    id: String,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
enum ChargeError {
    CardDeclined,
}

#[prost_db::idempotent_handler(key = event.id, permanent_errors)]
async fn charge(tx: &mut Tx, event: &Event) -> Result<(), ChargeError> {
    let _ = (tx, event);
    Err(ChargeError::CardDeclined)
}

fn main() {
    let _ = charge;
}
