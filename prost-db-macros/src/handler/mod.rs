//! `#[idempotent_handler]`: parse the arguments (`args`), view the fn (`ast`), check both
//! (`valid`), expand (`expand`); on errors, the rewritten signature over a body that never
//! runs (`fallback`), so that one mistake gives one error.

mod args;
mod ast;
mod expand;
mod fallback;
mod valid;

use proc_macro2::TokenStream;

use crate::errors::Errors;

pub(crate) fn expand(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    let args = args::parse(args, &mut errors);
    let item = match syn::parse2::<syn::Item>(item.clone()) {
        Ok(syn::Item::Fn(item)) => item,
        Ok(other) => {
            errors.push(syn::Error::new(
                ast::keyword_span(&other),
                "#[idempotent_handler] applies to an `async fn` whose first parameter is the transaction, \
                 e.g. `async fn reserve(tx: &mut Tx, event: &Event) -> Result<T, E>`",
            ));
            return with_errors(item, &errors);
        }
        // Mid-edit code that does not parse: keep it for the IDE, with the parser's error.
        Err(error) => {
            errors.push(error);
            return with_errors(item, &errors);
        }
    };
    let handler = ast::HandlerFn::from_syn(&item);
    let krate = valid::krate(&args);
    match valid::validate(args, &handler, &mut errors) {
        Some(config) if errors.is_empty() => expand::wrapper(&handler, &config),
        _ => with_errors(fallback::stub(&handler, &krate), &errors),
    }
}

fn with_errors(mut tokens: TokenStream, errors: &Errors) -> TokenStream {
    tokens.extend(errors.to_compile_errors());
    tokens
}
