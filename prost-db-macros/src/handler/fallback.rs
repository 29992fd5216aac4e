//! What a misused attribute emits besides its errors: the handler as callers will see it,
//! with a body that never runs, so that one mistake gives one error and not a wave of type
//! mismatches at every call.

use proc_macro2::TokenStream;
use quote::quote;
use syn::AttrStyle;

use super::ast::HandlerFn;
use super::expand::{elide_lifetimes, signature};

/// The rewritten signature over `unreachable!()`.
pub(super) fn stub(handler: &HandlerFn, krate: &TokenStream) -> TokenStream {
    let item = handler.item;
    let outer = item.attrs.iter().filter(|a| a.style == AttrStyle::Outer);
    let vis = &item.vis;
    let sig = signature(handler, krate);
    // The transaction's type, still named, so that its import is not reported unused.
    let tx_ty = handler.tx.map(|tx| {
        let mut ty = (*tx.arg.ty).clone();
        elide_lifetimes(&mut ty);
        quote!(let _: ::core::option::Option<#ty> = ::core::option::Option::None;)
    });
    quote! {
        #(#outer)*
        #[allow(unused_variables, clippy::unused_async)]
        #vis #sig {
            #tx_ty
            ::core::unreachable!("#[idempotent_handler] failed to expand")
        }
    }
}

#[cfg(test)]
mod tests {
    use quote::quote;

    #[test]
    fn a_misused_attribute_still_gives_the_rewritten_signature() {
        let out = crate::handler::expand(
            quote!(actoin = "x"),
            quote! { pub fn reserve(tx: &mut Tx, event: &Event) -> Result<u32, Error> { body() } },
        )
        .to_string();
        assert!(
            out.contains("pub async fn reserve (db : & :: prost_db :: Db , event : & Event) -> :: core :: result :: Result < :: prost_db :: idempotency :: Outcome < u32 >"),
            "{out}"
        );
        assert!(out.contains(":: core :: unreachable !"), "{out}");
        assert!(!out.contains("body ()"), "{out}");
        assert_eq!(out.matches("compile_error").count(), 2, "{out}");
    }

    #[test]
    fn without_a_transaction_db_goes_before_the_first_parameter() {
        let out = crate::handler::expand(
            quote!(),
            quote! { async fn reserve(&self, event: &Event) -> u32 { 0 } },
        )
        .to_string();
        assert!(out.contains("async fn reserve (& self , db : & :: prost_db :: Db , event : & Event) -> :: core :: result :: Result < :: prost_db :: idempotency :: Outcome < u32 > , :: prost_db :: idempotency :: HandlerError < :: core :: convert :: Infallible > >"), "{out}");
    }

    #[test]
    fn an_item_that_is_not_a_fn_is_kept_as_written() {
        let out = crate::handler::expand(
            quote!(),
            quote!(
                struct Event;
            ),
        )
        .to_string();
        assert!(out.starts_with("struct Event ;"), "{out}");
        assert!(out.contains("applies to an `async fn`"), "{out}");
    }
}
