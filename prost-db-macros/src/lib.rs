//! Implementation detail of the `prost-db` crate.

mod handler;

use proc_macro::TokenStream;

/// See `prost_db::idempotent_handler`.
#[proc_macro_attribute]
pub fn idempotent_handler(args: TokenStream, item: TokenStream) -> TokenStream {
    handler::expand(args.into(), item.into()).into()
}
