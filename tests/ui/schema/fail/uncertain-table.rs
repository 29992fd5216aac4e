// A DO block adds a column whose name is computed: the derive warns that `legacy.accounts`
// is uncertain, and the unknown-column error says how to opt out. (`email`, added by an
// idempotent DO block guarded by its own name, is known.)
#[derive(prost_db::Schema)]
#[schema(migrations = "../migrations", schema = "legacy", table = "accounts")]
struct Account {
    id: i64,
    email: Option<String>,
    nickname: Option<String>,
}

fn main() {}
