#[prost_db::idempotent_handler]
struct Reserve {
    product_id: i64,
}

fn main() {
    let _ = Reserve { product_id: 1 }.product_id;
}
