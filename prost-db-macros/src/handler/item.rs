//! The annotated item, which must be a fn (free or in an impl block).

use proc_macro2::{Span, TokenStream};
use quote::ToTokens;
use syn::parse::{Parse, ParseStream};
use syn::spanned::Spanned;

pub(super) struct HandlerFn {
    pub item: syn::ItemFn,
}

impl HandlerFn {
    pub fn into_tokens(self) -> TokenStream {
        self.item.into_token_stream()
    }
}

impl Parse for HandlerFn {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let item: syn::Item = input.parse()?;
        match item {
            syn::Item::Fn(item) => Ok(HandlerFn { item }),
            other => Err(syn::Error::new(
                keyword_span(&other),
                "#[idempotent_handler] applies to an `async fn` whose first parameter is the transaction, \
                 e.g. `async fn reserve(tx: &mut Tx, event: &Event) -> Result<T, E>`",
            )),
        }
    }
}

fn keyword_span(item: &syn::Item) -> Span {
    match item {
        syn::Item::Struct(item) => item.struct_token.span,
        syn::Item::Enum(item) => item.enum_token.span,
        syn::Item::Union(item) => item.union_token.span,
        syn::Item::Impl(item) => item.impl_token.span,
        syn::Item::Trait(item) => item.trait_token.span,
        syn::Item::Const(item) => item.const_token.span,
        syn::Item::Static(item) => item.static_token.span,
        syn::Item::Type(item) => item.type_token.span,
        syn::Item::Mod(item) => item.mod_token.span,
        other => other.span(),
    }
}

#[cfg(test)]
mod tests {
    use quote::quote;

    use super::HandlerFn;

    #[test]
    fn accepts_free_fns_and_methods() {
        assert!(
            syn::parse2::<HandlerFn>(quote!(
                async fn f(tx: &mut Tx, e: &E) -> Result<(), E> {}
            ))
            .is_ok()
        );
        assert!(
            syn::parse2::<HandlerFn>(quote!(
                pub async fn f(&self, tx: &mut Tx, e: E) -> Result<(), E> {}
            ))
            .is_ok()
        );
    }

    #[test]
    fn rejects_a_struct_at_its_keyword() {
        let error = syn::parse2::<HandlerFn>(quote!(
            struct Handler;
        ))
        .err()
        .unwrap();
        assert!(
            error
                .to_string()
                .starts_with("#[idempotent_handler] applies to an `async fn`")
        );
    }
}
