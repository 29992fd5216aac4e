// One error, with a did-you-mean; not a second one about the default table name.
#[derive(prost_db::Schema)]
#[schema(schema = "catalog", tabel = "products")]
struct Product {
    id: i64,
}

fn main() {}
