//! The wrapper: the user's signature with the transaction parameter replaced by `db`, and
//! the body moved into a closure handed to the runtime, which lends it the transaction.

use proc_macro2::{Ident, Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{AttrStyle, FnArg, LitInt, ReturnType, Signature};

use super::ast::{HandlerFn, Output};
use super::valid::{Action, HandlerConfig, Key};

/// The name of the parameter that replaces the transaction. Mixed-site hygiene: the body
/// cannot see it (it writes through the transaction), and no user name can capture it.
pub(super) fn db_ident() -> Ident {
    Ident::new("db", Span::mixed_site())
}

/// The signature callers see: `async`, `db: &Db` in the transaction's place, and the
/// output `Result<Outcome<T>, HandlerError<E>>` in the user's own types where the fn
/// returns `Result<T, E>`. Shared by the expansion and the fallback.
pub(super) fn signature(handler: &HandlerFn, krate: &TokenStream) -> Signature {
    let mut sig = handler.item.sig.clone();
    sig.asyncness.get_or_insert_with(Default::default);
    let db = db_ident();
    match handler.tx {
        Some(tx) => {
            let span = tx.arg.span();
            sig.inputs[tx.index] = syn::parse_quote_spanned!(span=> #db: &#krate::Db);
        }
        None => sig
            .inputs
            .insert(handler.db_index, syn::parse_quote!(#db: &#krate::Db)),
    }
    debug_assert!(matches!(sig.inputs[handler.db_index], FnArg::Typed(_)));
    let idempotency = quote!(#krate::idempotency);
    let (span, ok, err) = match &handler.output {
        Output::Result { ty, ok, err } => (ty.span(), quote!(#ok), quote!(#err)),
        Output::Alias(ty) => {
            let result = quote!(#krate::__private::HandlerResult);
            (
                ty.span(),
                quote!(<#ty as #result>::Ok),
                quote!(<#ty as #result>::Err),
            )
        }
        Output::Other(ty) => (ty.span(), quote!(#ty), quote!(::core::convert::Infallible)),
        Output::Unit => (
            sig.paren_token.span.close(),
            quote!(()),
            quote!(::core::convert::Infallible),
        ),
    };
    sig.output = ReturnType::Type(
        Default::default(),
        Box::new(syn::parse_quote_spanned! {span=>
            ::core::result::Result<#idempotency::Outcome<#ok>, #idempotency::HandlerError<#err>>
        }),
    );
    sig
}

// Input:
//     #[idempotent_handler]
//     pub async fn reserve(tx: &mut Tx, event: &StockReserved) -> Result<u32, Error> { body }
//
// Output:
//     pub async fn reserve(db: &::prost_db::Db, event: &StockReserved)
//         -> ::core::result::Result<Outcome<u32>, HandlerError<Error>>
//     {
//         ::prost_db::__private::Handler::free(module_path!(), "reserve")
//             .event(&event)
//             .run::<Result<u32, Error>, _>(db, move |mut tx| async move {
//                 let tx: &mut Tx = &mut tx;
//                 body
//             })
//             .await
//     }
pub(super) fn wrapper(handler: &HandlerFn, config: &HandlerConfig) -> TokenStream {
    let HandlerConfig { krate, tx, ret, .. } = config;
    let private = quote!(#krate::__private);
    let item = handler.item;
    let outer = item.attrs.iter().filter(|a| a.style == AttrStyle::Outer);
    let inner = item.attrs.iter().filter(|a| a.style != AttrStyle::Outer);
    let vis = &item.vis;
    let sig = signature(handler, krate);
    let block = &item.block;

    let new = match &config.action {
        Action::Named(action) => quote!(#private::Handler::new(#action)),
        Action::Free(name) => quote!(#private::Handler::free(::core::module_path!(), #name)),
        Action::Method(name) => {
            quote!(#private::Handler::method::<Self>(::core::module_path!(), #name))
        }
    };
    let permanent_errors = config.permanent_errors.then(|| quote!(.permanent_errors()));
    let service = config.service.as_ref().map(|s| quote!(.service(#s)));
    let lock_timeout = config
        .lock_timeout_ms
        .as_ref()
        .map(|ms: &LitInt| quote!(.lock_timeout_ms(#ms)));
    let key = match &config.key {
        Key::Event { ident, ty } => quote_spanned!(ty.span()=> .event(&#ident)),
        Key::Expr(expr) => quote_spanned!(expr.span()=> .key(&(#expr))),
    };
    let fingerprint = config
        .fingerprint
        .as_ref()
        .map(|expr| quote_spanned!(expr.span()=> .fingerprint(&(#expr))));
    let (tx_pat, mut tx_ty) = (&tx.arg.pat, (*tx.arg.ty).clone());
    elide_lifetimes(&mut tx_ty);
    let lease = Ident::new("tx", Span::mixed_site());
    let bind_tx = quote_spanned!(tx_ty.span()=> let #tx_pat: #tx_ty = &mut #lease;);
    let stmts = &block.stmts;
    let db = db_ident();
    // Spanned at the return type: a result type the runtime cannot store, or an error type
    // that `permanent_errors` cannot classify, is reported there. Naming it lets `?` and
    // `return` in the body see it.
    let run = quote_spanned! {ret.span()=>
        .run::<#ret, _>(#db, move |mut #lease| async move {
            #bind_tx
            #(#stmts)*
        })
    };
    quote! {
        #(#outer)*
        #vis #sig {
            #(#inner)*
            #new #permanent_errors #service #lock_timeout #key #fingerprint #run.await
        }
    }
}

/// The transaction is the closure's argument, so lifetimes the user named for the
/// parameter cannot apply; `'_` makes the closure take any borrow.
fn elide_lifetimes(ty: &mut syn::Type) {
    struct Elide;
    impl syn::visit_mut::VisitMut for Elide {
        fn visit_lifetime_mut(&mut self, lifetime: &mut syn::Lifetime) {
            if lifetime.ident != "static" {
                *lifetime = syn::Lifetime::new("'_", lifetime.span());
            }
        }
    }
    syn::visit_mut::VisitMut::visit_type_mut(&mut Elide, ty);
}

#[cfg(test)]
mod tests {
    use proc_macro2::TokenStream;
    use quote::quote;

    fn expand(args: TokenStream, item: TokenStream) -> String {
        crate::handler::expand(args, item).to_string()
    }

    #[test]
    fn replaces_the_transaction_with_db_and_names_the_users_types() {
        let out = expand(
            quote!(),
            quote! {
                pub async fn reserve(tx: &'t mut Tx, event: &Event) -> Result<u32, Error> { Ok(1) }
            },
        );
        assert!(
            out.contains("pub async fn reserve (db : & :: prost_db :: Db , event : & Event)"),
            "{out}"
        );
        assert!(out.contains(
            "-> :: core :: result :: Result < :: prost_db :: idempotency :: Outcome < u32 > , :: prost_db :: idempotency :: HandlerError < Error > >"
        ), "{out}");
        assert!(
            out.contains("Handler :: free (:: core :: module_path ! () , \"reserve\")"),
            "{out}"
        );
        assert!(out.contains(". event (& event)"), "{out}");
        assert!(out.contains(". run :: < Result < u32 , Error > , _ > (db , move | mut tx | async move { let tx : & '_ mut Tx = & mut tx ; Ok (1) }) . await"), "{out}");
        assert!(!out.contains("compile_error"), "{out}");
    }

    #[test]
    fn an_alias_result_is_projected() {
        let out = expand(
            quote!(),
            quote! {
                async fn f(tx: &mut Tx, event: &E) -> io::Result<u8> { Ok(1) }
            },
        );
        assert!(out.contains("Outcome < < io :: Result < u8 > as :: prost_db :: __private :: HandlerResult > :: Ok >"), "{out}");
    }

    #[test]
    fn honours_every_argument() {
        let out = expand(
            quote!(
                action = "a",
                key = event.order_id,
                fingerprint = event.lines,
                service = "billing",
                permanent_errors,
                lock_timeout_ms = 250,
                crate = my::db
            ),
            quote! { async fn h(&self, tx: &mut Tx, event: E) -> Result<(), X> { Ok(()) } },
        );
        assert!(
            out.contains("async fn h (& self , db : & my :: db :: Db , event : E)"),
            "{out}"
        );
        assert!(out.contains("my :: db :: __private :: Handler :: new (\"a\") . permanent_errors () . service (\"billing\") . lock_timeout_ms (250) . key (& (event . order_id)) . fingerprint (& (event . lines))"), "{out}");
        assert!(!out.contains("prost_db"), "{out}");
    }

    #[test]
    fn a_method_takes_its_action_from_self() {
        let out = expand(
            quote!(),
            quote! {
                async fn handle(&self, tx: &mut Tx, event: &E) -> Result<(), X> { Ok(()) }
            },
        );
        assert!(
            out.contains(
                "Handler :: method :: < Self > (:: core :: module_path ! () , \"handle\")"
            ),
            "{out}"
        );
    }

    #[test]
    fn outer_attributes_stay_outside_and_inner_ones_inside() {
        let out = expand(
            quote!(),
            quote! {
                /// Docs.
                async fn f(tx: &mut Tx, event: &E) -> Result<(), X> {
                    #![allow(unused)]
                    Ok(())
                }
            },
        );
        assert!(out.starts_with("# [doc = r\" Docs.\"] async fn f"), "{out}");
        assert!(out.contains("{ # ! [allow (unused)] :: prost_db"), "{out}");
        assert!(!out.contains("# ! [allow (unused)] Ok"), "{out}");
    }
}
