#[derive(prost_db::Schema, sqlx::FromRow)]
#[schema(schema = "users", table = "users")]
struct User<'a> {
    id: uuid::Uuid,
    email: &'a str,
    password_hash: Option<std::borrow::Cow<'a, str>>,
}

fn main() {
    use prost_db::schema::Schema;
    assert_eq!(User::TABLE.columns.len(), 3);
}
