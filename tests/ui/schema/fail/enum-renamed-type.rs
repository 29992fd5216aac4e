// 0003 renamed the type `mood` to `feeling`.
#[derive(sqlx::Type, prost_db::Schema)]
#[sqlx(type_name = "mood", rename_all = "lowercase")]
#[schema(migrations = "../migrations")]
enum Mood {
    Happy,
    Sad,
}

fn main() {}
