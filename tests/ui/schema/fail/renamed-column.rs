// `title` is renamed to `name` by 0002 of the fixture migrations.
#[derive(prost_db::Schema)]
#[schema(migrations = "../migrations", table = "items")]
struct Item {
    id: i64,
    title: String,
}

fn main() {}
