// Both `catalog` and `orders` have an `inventory_reservations` table.
#[derive(prost_db::Schema)]
#[schema(table = "inventory_reservations")]
struct Reservation {
    id: uuid::Uuid,
}

fn main() {}
