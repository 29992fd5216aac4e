// `legacy_code` is created by 0001 and dropped by 0002 of the fixture migrations.
#[derive(prost_db::Schema)]
#[schema(migrations = "../migrations", table = "items")]
struct Item {
    id: i64,
    legacy_code: Option<String>,
}

fn main() {}
