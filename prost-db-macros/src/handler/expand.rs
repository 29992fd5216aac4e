//! The wrapper: the user's signature with the transaction parameter replaced by `db`, and
//! the body moved into a closure handed to the runtime, which lends it the transaction.

use proc_macro2::{Group, Ident, Span, TokenStream, TokenTree};
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{AttrStyle, LitInt, ReturnType, Signature};

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
//         ::prost_db::__private::free_fn::<Result<u32, Error>>(module_path!(), "reserve")
//             .event(event)
//             .run(db, move |mut tx| async move {
//                 let tx: &mut Tx = &mut tx;
//                 body
//             })
//             .await
//     }
pub(super) fn wrapper(handler: &HandlerFn, config: &HandlerConfig) -> TokenStream {
    let HandlerConfig { krate, tx, ret, .. } = config;
    let item = handler.item;
    let outer = item.attrs.iter().filter(|a| a.style == AttrStyle::Outer);
    let inner = item.attrs.iter().filter(|a| a.style != AttrStyle::Outer);
    let vis = &item.vis;
    let sig = signature(handler, krate);

    // Spanned at the return type: a result type that cannot be stored is reported there.
    let private = respan(quote!(#krate::__private), ret.span());
    let new = match &config.action {
        Action::Named(action) => quote_spanned!(ret.span()=> #private::named::<#ret>(#action)),
        Action::Free(name) => quote_spanned! {ret.span()=>
            #private::free_fn::<#ret>(::core::module_path!(), #name)
        },
        Action::Method(name) => quote_spanned! {ret.span()=>
            #private::method::<#ret, Self>(::core::module_path!(), #name)
        },
    };
    let permanent_errors = config.permanent_errors.then(|| {
        // At the error type, where a missing `PermanentError` is reported.
        let (span, err) = match &handler.output {
            Output::Result { err, .. } => (err.span(), quote!(#err)),
            _ => (ret.span(), quote!(<#ret as #private::HandlerResult>::Err)),
        };
        let private = respan(quote!(#krate::__private), span);
        quote_spanned!(span=> .permanent_errors(#private::permanent_errors::<#err>()))
    });
    let service = config.service.as_ref().map(|s| quote!(.service(#s)));
    let lock_timeout = config
        .lock_timeout_ms
        .as_ref()
        .map(|ms: &LitInt| quote!(.lock_timeout_ms(#ms)));
    let key = match &config.key {
        // A reference is passed on as it is, so the event's own `EventId` impl is the one
        // checked (and a missing `Serialize` is one error, on that impl).
        Key::Event { ident, ty } if matches!(ty, syn::Type::Reference(_)) => {
            quote_spanned!(ty.span()=> .event(#ident))
        }
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
    let stmts = &item.block.stmts;
    let db = db_ident();
    quote! {
        #(#outer)*
        #vis #sig {
            #(#inner)*
            #new #permanent_errors #service #lock_timeout #key #fingerprint
                .run(#db, move |mut #lease| async move {
                    #bind_tx
                    #(#stmts)*
                })
                .await
        }
    }
}

/// `tokens` with every span set to `span`, so that an error about the expression they
/// start is reported at `span`.
fn respan(tokens: TokenStream, span: Span) -> TokenStream {
    tokens
        .into_iter()
        .map(|mut token| {
            if let TokenTree::Group(group) = &token {
                let mut respanned = Group::new(group.delimiter(), respan(group.stream(), span));
                respanned.set_span(span);
                token = TokenTree::Group(respanned);
            } else {
                token.set_span(span);
            }
            token
        })
        .collect()
}

/// The transaction is the closure's argument, so lifetimes the user named for the
/// parameter cannot apply; `'_` makes the closure take any borrow.
pub(super) fn elide_lifetimes(ty: &mut syn::Type) {
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
            out.contains(":: prost_db :: __private :: free_fn :: < Result < u32 , Error > > (:: core :: module_path ! () , \"reserve\")"),
            "{out}"
        );
        assert!(out.contains(". event (event)"), "{out}");
        assert!(out.contains(". run (db , move | mut tx | async move { let tx : & '_ mut Tx = & mut tx ; Ok (1) }) . await"), "{out}");
        assert!(!out.contains("compile_error"), "{out}");
    }

    #[test]
    fn an_event_by_value_is_lent_and_a_reference_passed_on() {
        let by_value = expand(
            quote!(),
            quote! { async fn reserve(tx: &mut Tx, event: Event) -> Result<(), Error> { Ok(()) } },
        );
        assert!(by_value.contains(". event (& event)"), "{by_value}");
        let by_ref = expand(
            quote!(),
            quote! { async fn reserve(tx: &mut Tx, event: &mut Event) -> Result<(), Error> { Ok(()) } },
        );
        assert!(by_ref.contains(". event (event)"), "{by_ref}");
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
        assert!(out.contains("my :: db :: __private :: named :: < Result < () , X > > (\"a\") . permanent_errors (my :: db :: __private :: permanent_errors :: < X > ()) . service (\"billing\") . lock_timeout_ms (250) . key (& (event . order_id)) . fingerprint (& (event . lines))"), "{out}");
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
                "__private :: method :: < Result < () , X > , Self > (:: core :: module_path ! () , \"handle\")"
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

/// The expansion the docs show is the macro's output, token for token.
#[cfg(test)]
mod docs {
    use std::path::Path;

    use proc_macro2::TokenStream;

    /// The visible lines of the code block after `marker`: rustdoc's hidden `# ` lines
    /// dropped.
    fn block_after(text: &str, marker: &str, file: &Path) -> String {
        let start = text
            .find(marker)
            .unwrap_or_else(|| panic!("{} lacks `{marker}`", file.display()));
        let mut lines = text[start..].lines().skip_while(|l| !l.starts_with("```"));
        lines.next();
        lines
            .take_while(|l| !l.starts_with("```"))
            .filter(|l| !(l.starts_with("# ") || *l == "#"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The tokens, one space apart, without the trailing commas rustfmt adds: what is
    /// left once layout is ignored.
    fn normalized(tokens: TokenStream) -> Vec<String> {
        use proc_macro2::{Delimiter, TokenTree};
        let mut out: Vec<String> = Vec::new();
        for token in tokens {
            let (open, close, inner) = match &token {
                TokenTree::Group(group) => match group.delimiter() {
                    Delimiter::Parenthesis => ("(", ")", group.stream()),
                    Delimiter::Bracket => ("[", "]", group.stream()),
                    Delimiter::Brace => ("{", "}", group.stream()),
                    Delimiter::None => ("", "", group.stream()),
                },
                other => {
                    if other.to_string() == ">" && out.last().is_some_and(|t| t == ",") {
                        out.pop();
                    }
                    out.push(other.to_string());
                    continue;
                }
            };
            let mut inner = normalized(inner);
            if inner.last().is_some_and(|t| t == ",") {
                inner.pop();
            }
            out.push(open.to_owned());
            out.extend(inner);
            out.push(close.to_owned());
        }
        out
    }

    fn check(file: &str) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        let input = block_after(&text, "<!-- expansion: input -->", &path);
        let output = block_after(&text, "<!-- expansion: output -->", &path);

        let mut item: syn::ItemFn = syn::parse_str(&input).unwrap();
        let attr = item.attrs.remove(0);
        assert!(attr.path().is_ident("idempotent_handler"), "{input}");
        let args = match &attr.meta {
            syn::Meta::List(list) => list.tokens.clone(),
            _ => TokenStream::new(),
        };
        let expanded = crate::handler::expand(args, quote::quote!(#item));
        let shown: TokenStream = output.parse().unwrap();
        assert_eq!(
            normalized(shown),
            normalized(expanded),
            "{file} shows another expansion than the macro's"
        );
        assert!(output.lines().count() <= 15, "{file}: {output}");
    }

    #[test]
    fn the_macro_docs_show_the_real_expansion() {
        check("../prost-db/src/idempotency/handler.md");
    }

    #[test]
    fn the_readme_shows_the_real_expansion() {
        check("../README.md");
    }
}
