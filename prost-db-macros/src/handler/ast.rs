//! A typed view of the annotated fn: its receiver, the transaction and event parameters,
//! and its return type, each borrowing the user's tokens. No checks here (see `valid`).

use proc_macro2::Span;
use syn::spanned::Spanned;
use syn::{FnArg, GenericArgument, Item, ItemFn, PatType, PathArguments, ReturnType, Type};

pub(super) struct HandlerFn<'a> {
    pub item: &'a ItemFn,
    /// `self`, `&self`, ...: the handler is a method.
    pub has_receiver: bool,
    /// The first typed parameter, if it is a `&mut` reference: the transaction.
    pub tx: Option<Param<'a>>,
    /// Where the `db` parameter goes: the transaction's place, or before the first typed
    /// parameter when there is no transaction.
    pub db_index: usize,
    /// The parameter after the transaction (or the first one, without a transaction).
    pub event: Option<Param<'a>>,
    /// Every typed parameter, in order.
    pub params: Vec<Param<'a>>,
    pub output: Output<'a>,
}

#[derive(Clone, Copy)]
pub(super) struct Param<'a> {
    /// Position in `sig.inputs`.
    pub index: usize,
    pub arg: &'a PatType,
}

pub(super) enum Output<'a> {
    /// Written `Result<T, E>`: the wrapper can name `T` and `E`.
    Result {
        ty: &'a Type,
        ok: &'a Type,
        err: &'a Type,
    },
    /// A type whose name ends in `Result` (`io::Result<T>`, an alias).
    Alias(&'a Type),
    /// Any other type.
    Other(&'a Type),
    /// No `->`.
    Unit,
}

impl<'a> HandlerFn<'a> {
    pub fn from_syn(item: &'a ItemFn) -> Self {
        let sig = &item.sig;
        let has_receiver = matches!(sig.inputs.first(), Some(FnArg::Receiver(_)));
        let params: Vec<Param<'a>> = sig
            .inputs
            .iter()
            .enumerate()
            .filter_map(|(index, arg)| match arg {
                FnArg::Typed(arg) => Some(Param { index, arg }),
                FnArg::Receiver(_) => None,
            })
            .collect();
        let first = params.first().copied();
        let tx =
            first.filter(|p| matches!(&*p.arg.ty, Type::Reference(r) if r.mutability.is_some()));
        let db_index = first.map_or(sig.inputs.len(), |p| p.index);
        let event = params.get(usize::from(tx.is_some())).copied();
        HandlerFn {
            item,
            has_receiver,
            tx,
            db_index,
            event,
            params,
            output: Output::from_syn(&sig.output),
        }
    }
}

impl<'a> Output<'a> {
    fn from_syn(output: &'a ReturnType) -> Self {
        let ReturnType::Type(_, ty) = output else {
            return Output::Unit;
        };
        let Some(segment) = result_segment(ty) else {
            return Output::Other(ty);
        };
        if segment.ident == "Result"
            && let PathArguments::AngleBracketed(args) = &segment.arguments
            && args.args.len() == 2
            && let (Some(GenericArgument::Type(ok)), Some(GenericArgument::Type(err))) =
                (args.args.first(), args.args.last())
        {
            return Output::Result { ty, ok, err };
        }
        Output::Alias(ty)
    }

    /// The declared return type, if any.
    pub fn ty(&self) -> Option<&'a Type> {
        match self {
            Output::Result { ty, .. } | Output::Alias(ty) | Output::Other(ty) => Some(ty),
            Output::Unit => None,
        }
    }
}

/// The last path segment of a type named `...Result`.
fn result_segment(ty: &Type) -> Option<&syn::PathSegment> {
    match ty {
        Type::Path(path) if path.qself.is_none() => path
            .path
            .segments
            .last()
            .filter(|segment| segment.ident.to_string().ends_with("Result")),
        Type::Group(group) => result_segment(&group.elem),
        Type::Paren(paren) => result_segment(&paren.elem),
        _ => None,
    }
}

/// The item's keyword, to point an error at: "this struct is not a fn".
pub(super) fn keyword_span(item: &Item) -> Span {
    match item {
        Item::Struct(item) => item.struct_token.span,
        Item::Enum(item) => item.enum_token.span,
        Item::Union(item) => item.union_token.span,
        Item::Impl(item) => item.impl_token.span,
        Item::Trait(item) => item.trait_token.span,
        Item::Const(item) => item.const_token.span,
        Item::Static(item) => item.static_token.span,
        Item::Type(item) => item.type_token.span,
        Item::Mod(item) => item.mod_token.span,
        other => other.span(),
    }
}

#[cfg(test)]
mod tests {
    use quote::quote;
    use syn::parse_quote;

    use super::{HandlerFn, Output};

    #[test]
    fn a_free_fn_has_a_transaction_an_event_and_a_result() {
        let item: syn::ItemFn = parse_quote! {
            async fn reserve(tx: &mut Tx, event: &Event, note: &str) -> Result<u32, Error> { todo!() }
        };
        let view = HandlerFn::from_syn(&item);
        assert!(!view.has_receiver);
        assert_eq!(view.tx.unwrap().index, 0);
        assert_eq!(view.db_index, 0);
        assert_eq!(view.event.unwrap().index, 1);
        assert_eq!(view.params.len(), 3);
        let Output::Result { ok, err, .. } = view.output else {
            panic!("not a Result")
        };
        assert_eq!(quote!(#ok #err).to_string(), "u32 Error");
    }

    #[test]
    fn a_method_skips_its_receiver() {
        let item: syn::ItemFn = parse_quote! {
            async fn handle(&self, tx: &mut Tx, event: E) -> io::Result<()> { todo!() }
        };
        let view = HandlerFn::from_syn(&item);
        assert!(view.has_receiver);
        assert_eq!((view.tx.unwrap().index, view.event.unwrap().index), (1, 2));
        assert!(matches!(view.output, Output::Alias(_)));
    }

    #[test]
    fn without_a_mut_reference_first_there_is_no_transaction() {
        let item: syn::ItemFn = parse_quote! { async fn handle(&self, event: &E) -> u32 { 0 } };
        let view = HandlerFn::from_syn(&item);
        assert!(view.tx.is_none());
        assert_eq!((view.db_index, view.event.unwrap().index), (1, 1));
        assert!(matches!(view.output, Output::Other(_)));

        let item: syn::ItemFn = parse_quote! { fn handle() {} };
        let view = HandlerFn::from_syn(&item);
        assert!(view.tx.is_none() && view.event.is_none());
        assert!(matches!(view.output, Output::Unit));
        assert_eq!(view.db_index, 0);
    }
}
