// A PostgreSQL enum's labels carry no data.
#[derive(prost_db::Schema)]
#[schema(migrations = "../migrations")]
enum OrderStatus {
    Pending,
    Paid(i64),
}

fn main() {}
