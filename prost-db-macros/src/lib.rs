//! Implementation detail of the `prost-db` crate: its procedural macros. Use them through
//! `prost_db`.

mod embed;
mod errors;
mod handler;
mod schema;

use proc_macro::TokenStream;

/// See `prost_db::idempotent_handler`.
#[proc_macro_attribute]
pub fn idempotent_handler(args: TokenStream, item: TokenStream) -> TokenStream {
    handler::expand(args.into(), item.into()).into()
}

/// See `prost_db::Schema`.
#[proc_macro_derive(Schema, attributes(schema, sqlx))]
pub fn derive_schema(input: TokenStream) -> TokenStream {
    schema::derive(input.into()).into()
}

/// See `prost_db::embed_migrations!`.
#[proc_macro]
pub fn embed_migrations(input: TokenStream) -> TokenStream {
    embed::expand(input.into()).into()
}
