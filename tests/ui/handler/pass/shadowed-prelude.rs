#![deny(warnings)]
#![allow(dead_code)]

use prost_db::idempotency::{EventId, Tx};

struct Result;
struct Ok;
struct Err;
struct Box;
struct Option;
struct Some;
struct None;
struct Vec;
struct String;
struct Duration;

#[derive(serde::Serialize)]
struct Event {
    id: u64,
}

impl EventId for Event {
    type Id = u64;
    fn event_id(&self) -> &u64 {
        &self.id
    }
}

#[prost_db::idempotent_handler(lock_timeout_ms = 1000, service = "shop")]
async fn reserve(tx: &mut Tx, event: &Event) -> ::core::result::Result<u64, sqlx::Error> {
    let _ = tx;
    ::core::result::Result::Ok(event.id)
}

fn main() {
    let _ = reserve;
}
