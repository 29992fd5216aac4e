//! Implementation detail of the `prost-db` crate: its procedural macros. Use them through
//! `prost_db` (`prost_db::embed_migrations!`).

mod embed;

/// Embeds a migrations root (one directory per schema) in the binary; see
/// `prost_db::embed_migrations!`.
#[proc_macro]
pub fn embed_migrations(input: proc_macro::TokenStream) -> proc_macro::TokenStream {
    embed::expand(input.into()).into()
}
