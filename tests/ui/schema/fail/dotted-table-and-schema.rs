#[derive(prost_db::Schema)]
#[schema(schema = "catalog", table = "users.users")]
struct User {
    id: uuid::Uuid,
}

fn main() {}
