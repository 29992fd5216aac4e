// `migrations` must be the root (one directory per schema), not one schema's directory.
#[derive(prost_db::Schema)]
#[schema(migrations = "../migrations/app", table = "items")]
struct Item {
    id: i64,
}

fn main() {}
