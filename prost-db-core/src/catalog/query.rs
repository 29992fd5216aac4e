//! The select list and `FROM` tables of a `CREATE TABLE ... AS` / `SELECT ... INTO` query:
//! enough to give the new table its columns when they follow from known tables, casts and
//! literals. Anything else (an operator, most functions, a subquery, `UNION`) leaves a
//! column's type unknown, and the table is flagged.

use super::lex::{Kind, Token};
use super::parse::{Name, Parser, TypeName};

#[derive(Debug, Clone)]
pub(crate) enum Expr {
    /// `*` or `alias.*`.
    Star(Option<String>),
    /// `a`, `t.a`, `s.t.a`.
    Column(Vec<String>),
    Cast(Box<Expr>, TypeName),
    Literal(Literal),
    /// A call whose type the catalog knows or whose name names the column.
    Function(String),
    /// `DATE '2024-01-01'`.
    TypedLiteral(TypeName),
    /// `CURRENT_DATE`, `CURRENT_TIMESTAMP`, ...
    Keyword(String),
    Other,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Literal {
    Text,
    Integer(bool),
    Numeric,
    Bool,
    Null,
}

#[derive(Debug, Clone)]
pub(crate) struct Item {
    pub expr: Expr,
    pub alias: Option<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct FromTable {
    pub table: Name,
    pub alias: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Query {
    pub items: Vec<Item>,
    pub from: Vec<FromTable>,
    /// `SELECT ... INTO [TEMP] name`.
    pub into: Option<(Name, bool)>,
    /// Why the columns cannot be worked out at all, if so.
    pub opaque: Option<&'static str>,
}

/// The words that start a clause of a `SELECT` after its select list.
const CLAUSES: &[&str] = &[
    "from",
    "into",
    "where",
    "group",
    "having",
    "window",
    "order",
    "limit",
    "offset",
    "fetch",
    "for",
    "union",
    "intersect",
    "except",
];

/// The clause words that may follow a `FROM` list.
const CLAUSES_AFTER_FROM: &[&str] = CLAUSES.split_at(1).1;

/// Splits `tokens` at commas at depth 0, up to (not including) a word of `stop` at depth 0.
fn top_level_list<'a, 's>(tokens: &'a [Token<'s>], stop: &[&str]) -> (Vec<&'a [Token<'s>]>, usize) {
    let mut items = Vec::new();
    let mut depth = 0u32;
    let mut start = 0;
    let mut i = 0;
    while i < tokens.len() {
        let t = &tokens[i];
        if depth == 0 && t.kind == Kind::Word && stop.iter().any(|s| t.is(s)) {
            break;
        }
        if t.is_op("(") || t.is_op("[") {
            depth += 1;
        } else if t.is_op(")") || t.is_op("]") {
            depth = depth.saturating_sub(1);
        } else if depth == 0 && t.is_op(",") {
            items.push(&tokens[start..i]);
            start = i + 1;
        }
        i += 1;
    }
    if start < i {
        items.push(&tokens[start..i]);
    }
    (items, i)
}

pub(crate) fn parse(tokens: &[Token<'_>]) -> Query {
    let mut query = Query::default();
    let mut rest = tokens;
    if rest.first().is_some_and(|t| t.is("with")) {
        query.opaque = Some("a WITH query");
        return query;
    }
    if rest.first().is_some_and(|t| t.is_op("(")) {
        query.opaque = Some("a parenthesised query");
        return query;
    }
    if !rest.first().is_some_and(|t| t.is("select")) {
        query.opaque = Some("a query that is not a SELECT");
        return query;
    }
    rest = &rest[1..];
    if rest.first().is_some_and(|t| t.is("all")) {
        rest = &rest[1..];
    } else if rest.first().is_some_and(|t| t.is("distinct")) {
        rest = &rest[1..];
        if rest.first().is_some_and(|t| t.is("on")) {
            query.opaque = Some("SELECT DISTINCT ON");
            return query;
        }
    }
    let (items, end) = top_level_list(rest, CLAUSES);
    query.items = items.into_iter().map(item).collect();
    rest = &rest[end..];
    if rest.first().is_some_and(|t| t.is("into")) {
        rest = &rest[1..];
        let mut temporary = false;
        while let Some(t) = rest.first() {
            if t.is("temp") || t.is("temporary") {
                temporary = true;
            } else if !(t.is("unlogged") || t.is("table") || t.is("local") || t.is("global")) {
                break;
            }
            rest = &rest[1..];
        }
        let mut parser = Parser::new(rest, 0);
        match parser.name() {
            Ok(name) => {
                let used = parser.position();
                query.into = Some((name, temporary));
                rest = &rest[used..];
            }
            Err(_) => {
                query.opaque = Some("an INTO target that is not a name");
                return query;
            }
        }
    }
    if rest.first().is_some_and(|t| t.is("from")) {
        rest = &rest[1..];
        match from_list(rest, &mut query.from) {
            Ok(after) => rest = after,
            Err(reason) => {
                query.opaque = Some(reason);
                return query;
            }
        }
    }
    let mut depth = 0u32;
    for t in rest {
        if t.is_op("(") {
            depth += 1;
        } else if t.is_op(")") {
            depth = depth.saturating_sub(1);
        } else if depth == 0 && (t.is("union") || t.is("intersect") || t.is("except")) {
            query.opaque = Some("UNION, INTERSECT or EXCEPT");
            return query;
        } else if depth == 0 && t.is("into") {
            query.opaque = Some("INTO after FROM");
            return query;
        }
    }
    query
}

/// The tables of a `FROM` list, up to the next clause.
fn from_list<'a, 's>(
    mut rest: &'a [Token<'s>],
    out: &mut Vec<FromTable>,
) -> Result<&'a [Token<'s>], &'static str> {
    // A `FROM` list ends at any later clause: every clause word but `from` itself.
    const ENDS: &[&str] = CLAUSES_AFTER_FROM;
    const JOINS: &[&str] = &[
        "join", "inner", "left", "right", "full", "cross", "natural", "outer",
    ];
    loop {
        let Some(first) = rest.first() else {
            return Ok(rest);
        };
        if first.kind == Kind::Word && ENDS.iter().any(|e| first.is(e)) {
            return Ok(rest);
        }
        if first.is("lateral") || first.is_op("(") || first.is("only") {
            return Err("a subquery or LATERAL in FROM");
        }
        let mut parser = Parser::new(rest, 0);
        let Ok(table) = parser.name() else {
            return Err("a FROM item that is not a table");
        };
        let mut i = parser.position();
        if rest.get(i).is_some_and(|t| t.is_op("(")) {
            return Err("a function in FROM");
        }
        let mut alias = None;
        if rest.get(i).is_some_and(|t| t.is("as")) {
            i += 1;
        }
        if let Some(t) = rest.get(i)
            && t.is_ident()
            && !(t.kind == Kind::Word
                && (ENDS.iter().any(|e| t.is(e))
                    || JOINS.iter().any(|j| t.is(j))
                    || t.is("on")
                    || t.is("using")
                    || t.is("tablesample")))
        {
            alias = Some(t.ident());
            i += 1;
            if rest.get(i).is_some_and(|t| t.is_op("(")) {
                return Err("column aliases in FROM");
            }
        }
        out.push(FromTable { table, alias });
        rest = &rest[i..];
        // ON expr / USING (cols), then the next join or comma.
        let mut depth = 0u32;
        let mut j = 0;
        while j < rest.len() {
            let t = &rest[j];
            if t.is_op("(") {
                depth += 1;
            } else if t.is_op(")") {
                depth = depth.saturating_sub(1);
            } else if depth == 0 {
                if t.is("using") {
                    return Err("JOIN ... USING");
                }
                if t.is_op(",") {
                    j += 1;
                    break;
                }
                if t.kind == Kind::Word && (ENDS.iter().any(|e| t.is(e))) {
                    break;
                }
                if t.is("join") {
                    j += 1;
                    break;
                }
            }
            j += 1;
        }
        rest = &rest[j..];
    }
}

fn item(tokens: &[Token<'_>]) -> Item {
    let mut alias = None;
    let mut body = tokens;
    if body.len() >= 2 && body[body.len() - 2].is("as") && body[body.len() - 1].is_ident() {
        alias = Some(body[body.len() - 1].ident());
        body = &body[..body.len() - 2];
    }
    let (expr, used) = expression(body);
    if used < body.len() {
        // `expr alias`
        if alias.is_none() && used + 1 == body.len() && body[used].is_ident() {
            alias = Some(body[used].ident());
            return Item { expr, alias };
        }
        return Item {
            expr: Expr::Other,
            alias,
        };
    }
    Item { expr, alias }
}

/// A primary expression and its casts; returns how many tokens it used.
fn expression(tokens: &[Token<'_>]) -> (Expr, usize) {
    let (mut expr, mut used) = primary(tokens);
    while tokens.get(used).is_some_and(|t| t.is_op("::")) {
        let mut parser = Parser::new(&tokens[used + 1..], 0);
        let Ok(ty) = parser.type_name() else {
            return (Expr::Other, tokens.len());
        };
        used += 1 + parser.position();
        expr = Expr::Cast(Box::new(expr), ty);
    }
    (expr, used)
}

fn primary(tokens: &[Token<'_>]) -> (Expr, usize) {
    let Some(first) = tokens.first() else {
        return (Expr::Other, 0);
    };
    if first.is_op("*") {
        return (Expr::Star(None), 1);
    }
    match first.kind {
        Kind::Str => return (Expr::Literal(Literal::Text), 1),
        Kind::Number => {
            let literal = if first.text.bytes().all(|b| b.is_ascii_digit()) {
                Literal::Integer(first.text.parse::<i32>().is_ok())
            } else {
                Literal::Numeric
            };
            return (Expr::Literal(literal), 1);
        }
        _ => {}
    }
    if first.is("true") || first.is("false") {
        return (Expr::Literal(Literal::Bool), 1);
    }
    if first.is("null") {
        return (Expr::Literal(Literal::Null), 1);
    }
    if first.kind == Kind::Word
        && [
            "current_date",
            "current_timestamp",
            "localtimestamp",
            "current_time",
            "localtime",
            "current_user",
            "session_user",
            "current_schema",
        ]
        .iter()
        .any(|k| first.is(k))
        && !tokens.get(1).is_some_and(|t| t.is_op("("))
    {
        return (Expr::Keyword(first.text.to_ascii_lowercase()), 1);
    }
    if first.is("cast") && tokens.get(1).is_some_and(|t| t.is_op("(")) {
        // CAST ( expr AS type )
        let close = matching(tokens, 1);
        let inner = &tokens[2..close.min(tokens.len())];
        let as_at = {
            let mut depth = 0u32;
            inner.iter().position(|t| {
                if t.is_op("(") {
                    depth += 1;
                } else if t.is_op(")") {
                    depth = depth.saturating_sub(1);
                }
                depth == 0 && t.is("as")
            })
        };
        let Some(as_at) = as_at else {
            return (Expr::Other, close + 1);
        };
        let (arg, used) = expression(&inner[..as_at]);
        let arg = if used == as_at { arg } else { Expr::Other };
        let mut parser = Parser::new(&inner[as_at + 1..], 0);
        return match parser.type_name() {
            Ok(ty) if parser.position() == inner.len() - as_at - 1 => {
                (Expr::Cast(Box::new(arg), ty), close + 1)
            }
            _ => (Expr::Other, close + 1),
        };
    }
    if first.is_ident() {
        let mut parts = vec![first.ident()];
        let mut i = 1;
        while tokens.get(i).is_some_and(|t| t.is_op(".")) {
            match tokens.get(i + 1) {
                Some(t) if t.is_ident() => {
                    parts.push(t.ident());
                    i += 2;
                }
                Some(t) if t.is_op("*") => {
                    return (Expr::Star(Some(parts.pop().unwrap_or_default())), i + 2);
                }
                _ => return (Expr::Other, tokens.len()),
            }
        }
        if tokens.get(i).is_some_and(|t| t.is_op("(")) {
            let close = matching(tokens, i);
            return (Expr::Function(parts.pop().unwrap_or_default()), close + 1);
        }
        if tokens.get(i).is_some_and(|t| t.kind == Kind::Str) {
            // A typed literal: DATE '2024-01-01', interval '1 day'.
            let mut parser = Parser::new(tokens, 0);
            if let Ok(ty) = parser.type_name()
                && tokens
                    .get(parser.position())
                    .is_some_and(|t| t.kind == Kind::Str)
            {
                return (Expr::TypedLiteral(ty), parser.position() + 1);
            }
        }
        return (Expr::Column(parts), i);
    }
    (Expr::Other, tokens.len())
}

/// The index of the `)` closing the `(` at `open`.
fn matching(tokens: &[Token<'_>], open: usize) -> usize {
    let mut depth = 0u32;
    for (i, t) in tokens.iter().enumerate().skip(open) {
        if t.is_op("(") {
            depth += 1;
        } else if t.is_op(")") {
            depth -= 1;
            if depth == 0 {
                return i;
            }
        }
    }
    tokens.len()
}
