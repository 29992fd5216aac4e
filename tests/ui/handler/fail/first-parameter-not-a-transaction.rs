#[derive(serde::Serialize)]
struct Event {
    id: String,
}

#[prost_db::idempotent_handler(key = event.id)]
async fn reserve(event: &Event) -> Result<(), sqlx::Error> {
    let _ = event;
    Ok(())
}

fn main() {}
