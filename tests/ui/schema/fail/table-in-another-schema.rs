// `items` is in schema `app`, not `legacy`.
#[derive(prost_db::Schema)]
#[schema(migrations = "../migrations", schema = "legacy", table = "items")]
struct Item {
    id: i64,
}

fn main() {}
