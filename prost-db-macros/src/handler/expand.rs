//! The wrapper: the user's signature with the transaction parameter replaced by the `Db`,
//! and the body moved into a closure handed to `run_with`.

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{FnArg, Ident};

use super::item::HandlerFn;
use super::valid::HandlerConfig;

// Input:
//     #[idempotent_handler]
//     pub async fn reserve(tx: &mut Tx, event: &StockReserved) -> Result<u32, Error> { body }
//
// Output:
//     pub async fn reserve(__prost_db_db: &::prost_db::Db, event: &StockReserved)
//         -> Result<Outcome<u32>, HandlerError<Error>>
//     {
//         let __prost_db_key = ::prost_db::__private::event_key(&event);
//         let __prost_db_fingerprint = fingerprint(&__prost_db_key, "reserve", &event)?;
//         ::prost_db::__private::run_with::<NeverRecord, _, _, _, _>(
//             __prost_db_db, Handler { action: "reserve", .. }, &__prost_db_key, __prost_db_fingerprint,
//             move |mut __prost_db_tx| async move {
//                 let __prost_db_ret = body::<Result<u32, Error>, _>(async {
//                     let tx: &mut Tx = &mut __prost_db_tx;
//                     body
//                 }).await;
//                 (__prost_db_tx, __prost_db_ret)
//             },
//         ).await
//     }
pub(super) fn wrapper(handler: &HandlerFn, config: &HandlerConfig) -> TokenStream {
    let HandlerConfig {
        krate,
        action,
        event,
        ret,
        tx_pat,
        tx_ty,
        ..
    } = config;
    let private = quote!(#krate::__private);
    let item = &handler.item;
    let attrs = &item.attrs;
    let vis = &item.vis;
    let block = &item.block;

    let db = Ident::new("__prost_db_db", Span::call_site());
    let mut sig = item.sig.clone();
    let tx_arg = &mut sig.inputs[config.tx_index];
    let tx_span = tx_arg.span();
    *tx_arg = syn::parse_quote_spanned!(tx_span=> #db: &#krate::Db);
    let output_span = ret.span();
    sig.output = syn::parse_quote_spanned! {output_span=>
        -> #private::Result<
            #krate::idempotency::Outcome<<#ret as #private::HandlerResult>::Ok>,
            #krate::idempotency::HandlerError<<#ret as #private::HandlerResult>::Err>,
        >
    };
    debug_assert!(matches!(sig.inputs[config.tx_index], FnArg::Typed(_)));

    let key = match &config.key {
        Some(expr) => quote_spanned!(expr.span()=> #private::key(&(#expr))),
        None => quote_spanned!(event.span()=> #private::event_key(&#event)),
    };
    let policy = if config.permanent_errors {
        quote!(#private::RecordPermanent)
    } else {
        quote!(#private::NeverRecord)
    };
    let service = match &config.service {
        Some(expr) => quote!(#private::Option::Some(#expr)),
        None => quote!(#private::Option::None),
    };
    let lock_timeout = match &config.lock_timeout_ms {
        Some(ms) => quote!(#private::Option::Some(#private::Duration::from_millis(#ms))),
        None => quote!(#private::Option::None),
    };
    let tx_binding = quote_spanned!(tx_ty.span()=> let #tx_pat: #tx_ty = &mut __prost_db_tx;);

    quote! {
        #(#attrs)*
        #vis #sig {
            let __prost_db_key = #key;
            let __prost_db_fingerprint =
                match #private::fingerprint(&__prost_db_key, #action, &#event) {
                    #private::Result::Ok(fingerprint) => fingerprint,
                    #private::Result::Err(error) => return #private::Result::Err(error),
                };
            #private::run_with::<#policy, _, _, _, _>(
                #db,
                #private::Handler { action: #action, service: #service, lock_timeout: #lock_timeout },
                &__prost_db_key,
                __prost_db_fingerprint,
                move |mut __prost_db_tx| async move {
                    let __prost_db_ret = #private::body::<#ret, _>(async {
                        #tx_binding
                        #block
                    })
                    .await;
                    (__prost_db_tx, __prost_db_ret)
                },
            )
            .await
        }
    }
}

#[cfg(test)]
mod tests {
    use quote::quote;
    use syn::parse_quote;

    use crate::handler::{args, item::HandlerFn, valid};

    fn expand(args: proc_macro2::TokenStream, item: syn::ItemFn) -> String {
        let handler = HandlerFn { item };
        let config = valid::validate(args::parse(args).0, &handler).ok().unwrap();
        super::wrapper(&handler, &config).to_string()
    }

    #[test]
    fn replaces_the_transaction_with_the_db_and_wraps_the_result() {
        let out = expand(
            quote!(),
            parse_quote! {
                pub async fn reserve(tx: &mut Tx, event: &Event) -> Result<u32, Error> { todo!() }
            },
        );
        assert!(out.contains(
            "pub async fn reserve (__prost_db_db : & :: prost_db :: Db , event : & Event)"
        ));
        assert!(out.contains(":: prost_db :: idempotency :: Outcome < < Result < u32 , Error > as :: prost_db :: __private :: HandlerResult > :: Ok >"));
        assert!(out.contains(":: prost_db :: __private :: event_key (& event)"));
        assert!(out.contains("action : \"reserve\""));
        assert!(out.contains("let tx : & mut Tx = & mut __prost_db_tx ;"));
        assert!(out.contains("NeverRecord"));
    }

    #[test]
    fn honours_every_argument() {
        let out = expand(
            quote!(
                action = "a",
                key = event.order_id,
                service = "billing",
                permanent_errors,
                lock_timeout_ms = 250,
                crate = my::db
            ),
            parse_quote! { async fn h(&self, tx: &mut Tx, event: E) -> Result<(), X> { todo!() } },
        );
        assert!(out.contains("async fn h (& self , __prost_db_db : & my :: db :: Db , event : E)"));
        assert!(out.contains("my :: db :: __private :: key (& (event . order_id))"));
        assert!(out.contains("action : \"a\""));
        assert!(out.contains("Some (\"billing\")"));
        assert!(out.contains("from_millis (250)"));
        assert!(out.contains("RecordPermanent"));
        assert!(!out.contains("::prost_db"));
    }
}
