//! `#[idempotent_handler]`: parse the arguments, view the fn, validate, expand; on errors,
//! keep the user's fn so that one mistake gives one error.

mod args;
mod expand;
mod fallback;
mod item;
mod valid;

use proc_macro2::TokenStream;

pub(crate) fn expand(args: TokenStream, item: TokenStream) -> TokenStream {
    let (args, mut errors) = args::parse(args);
    let item = match syn::parse2::<item::HandlerFn>(item.clone()) {
        Ok(item) => item,
        Err(error) => return fallback::original(item, error, errors),
    };
    let config = match valid::validate(args, &item) {
        Ok(config) => config,
        Err(error) => return fallback::original(item.into_tokens(), error, errors),
    };
    let mut tokens = expand::wrapper(&item, &config);
    if let Some(error) = errors.take() {
        tokens.extend(error.to_compile_error());
    }
    tokens
}
