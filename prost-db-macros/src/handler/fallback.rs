//! Error output that keeps the user's item.

use proc_macro2::TokenStream;

/// The item as written, plus every error: the fn still exists, so its callers and the IDE
/// see no second wave of errors.
pub(super) fn original(
    item: TokenStream,
    error: syn::Error,
    args_error: Option<syn::Error>,
) -> TokenStream {
    let mut error = error;
    if let Some(args_error) = args_error {
        error.combine(args_error);
    }
    let mut tokens = item;
    tokens.extend(error.to_compile_error());
    tokens
}

#[cfg(test)]
mod tests {
    use quote::quote;

    #[test]
    fn keeps_the_item_and_adds_every_error() {
        let item = quote!(
            struct Event;
        );
        let first = syn::Error::new(proc_macro2::Span::call_site(), "first");
        let second = syn::Error::new(proc_macro2::Span::call_site(), "second");
        let out = super::original(item, first, Some(second)).to_string();
        assert!(out.starts_with("struct Event ;"));
        assert!(out.contains("\"first\"") && out.contains("\"second\""));
    }
}
