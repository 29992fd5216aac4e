//! Implementation detail of the `prost-db` crate.

mod schema;

/// Checks a struct against the tables the migrations create, at compile time, and
/// implements `prost_db::schema::Schema`. Documented on the re-export `prost_db::Schema`.
#[proc_macro_derive(Schema, attributes(schema))]
pub fn derive_schema(input: proc_macro::TokenStream) -> proc_macro::TokenStream {
    schema::derive(input.into()).into()
}
