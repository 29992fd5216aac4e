// A DO block may add `email`: the derive warns that `legacy.accounts` is uncertain, and
// the unknown-column error says how to opt out.
#[derive(prost_db::Schema)]
#[schema(migrations = "../migrations", schema = "legacy", table = "accounts")]
struct Account {
    id: i64,
    email: Option<String>,
}

fn main() {}
