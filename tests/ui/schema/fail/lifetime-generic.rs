// A struct whose only generic parameter is a lifetime is type-checked like any other.
#[derive(prost_db::Schema)]
#[schema(schema = "users", table = "users")]
struct User<'a> {
    id: uuid::Uuid,
    email: &'a str,
    username: i32,
}

fn main() {}
