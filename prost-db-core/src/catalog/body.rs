//! What a `DO` block or a routine body can do to the catalog: the DDL statements it holds
//! (and under which guard each runs), the dynamic SQL it executes, and the routines it
//! calls. Bodies that hold only queries, data changes, notices and assignments do nothing.

use super::classify::{Class, classify};
use super::lex::{Kind, Token, tokens};

mod dynamic;

use dynamic::dynamic_string;

/// When a statement inside a body runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Guard {
    /// Always (straight-line code).
    Always,
    /// `IF NOT EXISTS (query) THEN`: the string literals of the query.
    IfNotExists(Vec<String>),
    /// `IF EXISTS (query) THEN`: the string literals of the query.
    IfExists(Vec<String>),
    /// In a block whose `EXCEPTION` handler catches `duplicate_*` (or `others`) errors.
    OnDuplicate,
    /// Any other condition, a loop, or after an early `RETURN`: may run or not, or many times.
    Unknown,
}

/// A DDL statement written in the body.
#[derive(Debug, Clone)]
pub(crate) struct StaticDdl {
    pub text: String,
    pub line: u32,
    pub guard: Guard,
}

/// An `EXECUTE` of a computed string.
#[derive(Debug, Clone)]
pub(crate) struct Dynamic {
    /// The statement with every computed part replaced by [`PLACEHOLDER`], if the string is
    /// built from literals (`format('...', ...)`, `'...' || x || '...'`, `'...'`).
    pub template: Option<String>,
    /// The statement itself, when every part is a literal.
    pub literal: Option<String>,
    pub line: u32,
    pub guard: Guard,
}

/// A call of a routine, with its string-literal arguments.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    pub name: String,
    pub literals: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Effects {
    pub ddl: Vec<StaticDdl>,
    pub dynamic: Vec<Dynamic>,
    pub calls: Vec<Call>,
    /// Every string literal of the body (names a dynamic statement may target).
    pub literals: Vec<String>,
}

#[cfg(test)]
impl Effects {
    pub fn is_empty(&self) -> bool {
        self.ddl.is_empty() && self.dynamic.is_empty()
    }
}

/// Stands for a computed part of a dynamic statement: an identifier no table has.
pub(crate) const PLACEHOLDER: &str = "__prost_db_dynamic__";

#[derive(Debug, Clone)]
enum Frame {
    /// `BEGIN ... END`, with whether its handler catches duplicates.
    Block {
        duplicate_handler: bool,
    },
    /// The `EXCEPTION` section of a block: runs only on errors.
    Handler,
    If(Guard),
    Loop,
    Case,
}

/// Analyses a PL/pgSQL body (`language` `plpgsql`), or an SQL body (`sql`: statements), or
/// anything else (scanned for DDL words, conservatively). `line` is the body's first line.
pub(crate) fn analyse(body: &str, line: u32, language: &str) -> Effects {
    match language {
        "plpgsql" => plpgsql(body, line),
        "sql" => sql(body, line),
        _ => other(body, line),
    }
}

fn sql(body: &str, line: u32) -> Effects {
    let mut effects = Effects::default();
    for statement in crate::split::split(body) {
        let line = line + statement.line - 1;
        match classify(statement.text) {
            Class::Model | Class::Unknown | Class::Special => effects.ddl.push(StaticDdl {
                text: statement.text.to_owned(),
                line,
                guard: Guard::Always,
            }),
            Class::Query | Class::Call => {
                let toks = tokens(statement.text, line);
                collect_calls(&toks, &mut effects.calls);
                effects.literals.extend(
                    toks.iter()
                        .filter_map(|t| t.string().map(|s| s.into_owned())),
                );
            }
            _ => {}
        }
    }
    effects
}

fn other(body: &str, line: u32) -> Effects {
    let lower = body.to_ascii_lowercase();
    let mut effects = Effects::default();
    if ["alter ", "create ", "drop ", "execute"]
        .iter()
        .any(|w| lower.contains(w))
    {
        effects.dynamic.push(Dynamic {
            template: None,
            literal: None,
            line,
            guard: Guard::Unknown,
        });
    }
    effects
}

/// Where a statement may start: after `;`, `BEGIN`, `THEN`, `ELSE`, `LOOP`, `DECLARE`...
fn starts_statement(previous: Option<&Token<'_>>) -> bool {
    match previous {
        None => true,
        Some(t) => {
            t.is_op(";")
                || t.is_op(">>")
                || ["begin", "then", "else", "loop", "declare", "exception"]
                    .iter()
                    .any(|k| t.is(k))
        }
    }
}

/// When a statement at this point of the body runs.
fn guard_of(stack: &[Frame], returned: bool) -> Guard {
    if returned {
        return Guard::Unknown;
    }
    let mut guard = Guard::Always;
    let mut conditions = 0;
    for frame in stack {
        match frame {
            Frame::Loop | Frame::Case | Frame::Handler => return Guard::Unknown,
            Frame::If(g) => {
                conditions += 1;
                guard = g.clone();
            }
            Frame::Block {
                duplicate_handler: true,
            } if conditions == 0 => guard = Guard::OnDuplicate,
            Frame::Block { .. } => {}
        }
    }
    if conditions > 1 {
        Guard::Unknown
    } else {
        guard
    }
}

fn plpgsql(body: &str, line: u32) -> Effects {
    let toks = tokens(body, line);
    let handlers = block_handlers(&toks);
    let mut effects = Effects {
        literals: toks
            .iter()
            .filter_map(|t| t.string().map(|s| s.into_owned()))
            .collect(),
        ..Effects::default()
    };
    let mut stack: Vec<Frame> = Vec::new();
    let mut returned = false;
    let mut i = 0;
    while i < toks.len() {
        let t = &toks[i];
        let at_start = starts_statement(i.checked_sub(1).map(|p| &toks[p]));
        if t.is("end") {
            // END IF / END LOOP / END CASE close their frame, a plain END its block.
            if toks
                .get(i + 1)
                .is_some_and(|n| n.is("if") || n.is("loop") || n.is("case"))
            {
                i += 1;
            }
            stack.pop();
            i += 1;
            continue;
        }
        if t.is("begin") {
            stack.push(Frame::Block {
                duplicate_handler: handlers.get(&i).copied().unwrap_or(false),
            });
            i += 1;
            continue;
        }
        if t.is("exception") && matches!(stack.last(), Some(Frame::Block { .. })) {
            if let Some(frame) = stack.last_mut() {
                *frame = Frame::Handler;
            }
            i += 1;
            continue;
        }
        if at_start && t.is("when") {
            // A handler's or a CASE statement's branch: its statements follow THEN.
            i = find_word(&toks, i, "then").map_or(toks.len(), |p| p + 1);
            continue;
        }
        if at_start && t.is("if") {
            let (guard, then_at) = if_guard(&toks, i);
            stack.push(Frame::If(guard));
            i = then_at + 1;
            continue;
        }
        if t.is("elsif") || (t.is("else") && matches!(stack.last(), Some(Frame::If(_)))) {
            if let Some(Frame::If(guard)) = stack.last_mut() {
                *guard = Guard::Unknown;
            }
            i = if t.is("elsif") {
                find_word(&toks, i, "then").map_or(toks.len(), |p| p + 1)
            } else {
                i + 1
            };
            continue;
        }
        if t.is("loop") {
            stack.push(Frame::Loop);
            i += 1;
            continue;
        }
        if at_start && (t.is("for") || t.is("while") || t.is("foreach")) {
            // FOR ... LOOP: the LOOP keyword opens the frame.
            i = find_word(&toks, i, "loop").unwrap_or(toks.len());
            continue;
        }
        if at_start && t.is("case") {
            stack.push(Frame::Case);
            i += 1;
            continue;
        }
        if at_start && (t.is("return") || t.is("exit") || t.is("continue")) {
            if stack
                .iter()
                .any(|f| matches!(f, Frame::If(_) | Frame::Case | Frame::Handler))
            {
                returned = true;
            }
            i = end_of_statement(&toks, i);
            continue;
        }
        if at_start && t.is("execute") {
            let end = end_of_statement(&toks, i);
            let (template, literal) = dynamic_string(&toks[i + 1..end]);
            effects.dynamic.push(Dynamic {
                template,
                literal,
                line: t.line,
                guard: guard_of(&stack, returned),
            });
            i = end;
            continue;
        }
        if at_start && t.kind == Kind::Word {
            let end = end_of_statement(&toks, i);
            let from = token_offset(body, t);
            let to = toks.get(end.saturating_sub(1)).map_or(body.len(), |last| {
                token_offset(body, last) + last.text.len()
            });
            let text = &body[from..to.max(from)];
            match classify(text) {
                Class::Model | Class::Special => effects.ddl.push(StaticDdl {
                    text: text.to_owned(),
                    line: t.line,
                    guard: guard_of(&stack, returned),
                }),
                Class::Do | Class::Routine => effects.dynamic.push(Dynamic {
                    template: None,
                    literal: None,
                    line: t.line,
                    guard: Guard::Unknown,
                }),
                _ => collect_calls(&toks[i..end], &mut effects.calls),
            }
            i = end;
            continue;
        }
        i += 1;
    }
    effects
}

/// The byte offset of `token` in `body` (tokens borrow the body's text).
fn token_offset(body: &str, token: &Token<'_>) -> usize {
    token.text.as_ptr() as usize - body.as_ptr() as usize
}

fn find_word(toks: &[Token<'_>], from: usize, word: &str) -> Option<usize> {
    let mut depth = 0u32;
    for (i, t) in toks.iter().enumerate().skip(from) {
        if t.is_op("(") {
            depth += 1;
        } else if t.is_op(")") {
            depth = depth.saturating_sub(1);
        } else if depth == 0 && t.is(word) {
            return Some(i);
        }
    }
    None
}

/// The index after the statement starting at `i` (its `;` at depth 0), or the end.
fn end_of_statement(toks: &[Token<'_>], i: usize) -> usize {
    let mut depth = 0u32;
    for (j, t) in toks.iter().enumerate().skip(i) {
        if t.is_op("(") {
            depth += 1;
        } else if t.is_op(")") {
            depth = depth.saturating_sub(1);
        } else if depth == 0 && t.is_op(";") {
            return j;
        }
    }
    toks.len()
}

/// The guard of `IF cond THEN` at `i`, and the index of its `THEN`.
fn if_guard(toks: &[Token<'_>], i: usize) -> (Guard, usize) {
    let then_at = find_word(toks, i + 1, "then").unwrap_or(toks.len());
    let cond = &toks[i + 1..then_at.min(toks.len())];
    let literals = |inner: &[Token<'_>]| -> Vec<String> {
        inner
            .iter()
            .filter_map(|t| t.string().map(|s| s.into_owned()))
            .collect()
    };
    let whole_parens = |inner: &[Token<'_>]| {
        inner.first().is_some_and(|t| t.is_op("(")) && inner.last().is_some_and(|t| t.is_op(")"))
    };
    let guard = if cond.len() > 2
        && cond[0].is("not")
        && cond[1].is("exists")
        && whole_parens(&cond[2..])
    {
        Guard::IfNotExists(literals(cond))
    } else if cond.len() > 1 && cond[0].is("exists") && whole_parens(&cond[1..]) {
        Guard::IfExists(literals(cond))
    } else {
        Guard::Unknown
    };
    (guard, then_at)
}

/// For every `BEGIN` (by token index): whether its block's `EXCEPTION` section catches
/// `duplicate_object`, `duplicate_table`, `duplicate_column`, `duplicate_schema` or `others`
/// and does nothing else but carry on.
fn block_handlers(toks: &[Token<'_>]) -> std::collections::HashMap<usize, bool> {
    let mut out = std::collections::HashMap::new();
    let mut open: Vec<(usize, bool)> = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        let t = &toks[i];
        if t.is("begin") {
            open.push((i, false));
        } else if t.is("end") {
            if toks
                .get(i + 1)
                .is_some_and(|n| n.is("if") || n.is("loop") || n.is("case"))
            {
                i += 2;
                continue;
            }
            // A CASE expression also ends with END: only blocks are on this stack, so an
            // END without a BEGIN open is one of those.
            if let Some((start, duplicate)) = open.pop() {
                out.insert(start, duplicate);
            }
        } else if t.is("exception") && !open.is_empty() {
            let mut conditions = Vec::new();
            let mut j = i + 1;
            while j < toks.len() && !toks[j].is("end") {
                if toks[j].is("when") {
                    let then_at = find_word(toks, j, "then").unwrap_or(toks.len());
                    conditions.extend(
                        toks[j + 1..then_at.min(toks.len())]
                            .iter()
                            .filter(|t| t.kind == Kind::Word && !t.is("or"))
                            .map(|t| t.text.to_ascii_lowercase()),
                    );
                    j = then_at;
                }
                j += 1;
            }
            let duplicate = !conditions.is_empty()
                && conditions
                    .iter()
                    .all(|c| c.starts_with("duplicate_") || c == "others");
            if let Some(last) = open.last_mut() {
                last.1 = duplicate;
            }
        }
        i += 1;
    }
    out
}

/// Calls `name(...)` in `toks`, with the string literals among their arguments.
pub(crate) fn collect_calls(toks: &[Token<'_>], out: &mut Vec<Call>) {
    for (i, t) in toks.iter().enumerate() {
        if t.kind == Kind::Word && toks.get(i + 1).is_some_and(|n| n.is_op("(")) {
            let mut depth = 0u32;
            let mut literals = Vec::new();
            for u in &toks[i + 1..] {
                if u.is_op("(") {
                    depth += 1;
                } else if u.is_op(")") {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                } else if let Some(s) = u.string() {
                    literals.push(s.into_owned());
                }
            }
            out.push(Call {
                name: t.text.to_ascii_lowercase(),
                literals,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_only_blocks_have_no_effects() {
        let effects = plpgsql(
            "DECLARE n int; BEGIN SELECT count(*) INTO n FROM t; IF n = 0 THEN RAISE NOTICE 'x'; END IF; \
             INSERT INTO log VALUES (n); UPDATE t SET a = a WHERE false; PERFORM pg_notify('c', 'x'); END",
            1,
        );
        assert!(effects.is_empty(), "{effects:?}");
    }

    #[test]
    fn guards_are_recognised() {
        let effects = plpgsql(
            "BEGIN\n\
             IF NOT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_name = 't' AND column_name = 'c') THEN\n\
                 ALTER TABLE t ADD COLUMN c int;\n\
             END IF;\n\
             ALTER TABLE t ADD COLUMN d int;\n\
             IF current_setting('server_version_num')::int > 1 THEN ALTER TABLE t ADD COLUMN e int; END IF;\n\
             FOR r IN SELECT 1 LOOP ALTER TABLE t ADD COLUMN f int; END LOOP;\n\
             END",
            1,
        );
        let guards: Vec<(&str, &Guard)> = effects
            .ddl
            .iter()
            .map(|d| (d.text.as_str(), &d.guard))
            .collect();
        assert_eq!(
            guards,
            [
                (
                    "ALTER TABLE t ADD COLUMN c int",
                    &Guard::IfNotExists(vec!["t".into(), "c".into()])
                ),
                ("ALTER TABLE t ADD COLUMN d int", &Guard::Always),
                ("ALTER TABLE t ADD COLUMN e int", &Guard::Unknown),
                ("ALTER TABLE t ADD COLUMN f int", &Guard::Unknown),
            ]
        );
        assert_eq!(effects.ddl[0].line, 3);
    }

    #[test]
    fn duplicate_handlers_make_create_idempotent() {
        let effects = plpgsql(
            "BEGIN CREATE TYPE mood AS ENUM ('a'); EXCEPTION WHEN duplicate_object THEN NULL; END",
            1,
        );
        assert_eq!(effects.ddl[0].guard, Guard::OnDuplicate);
        let effects = plpgsql(
            "BEGIN CREATE TYPE mood AS ENUM ('a'); EXCEPTION WHEN undefined_table THEN NULL; END",
            1,
        );
        assert_eq!(effects.ddl[0].guard, Guard::Always);
    }

    #[test]
    fn dynamic_statements_become_templates() {
        let effects = plpgsql(
            "DECLARE target text := 'orders'; BEGIN\n\
             EXECUTE format('ALTER TABLE ops.%I ADD COLUMN %I integer', target, 'v');\n\
             EXECUTE format('ANALYZE %I', 'orders');\n\
             EXECUTE 'GRANT SELECT ON ' || quote_ident(target) || ' TO PUBLIC';\n\
             EXECUTE stmt;\n\
             END",
            1,
        );
        let templates: Vec<(Option<&str>, Option<&str>)> = effects
            .dynamic
            .iter()
            .map(|d| (d.template.as_deref(), d.literal.as_deref()))
            .collect();
        assert_eq!(
            templates,
            [
                (
                    Some("ALTER TABLE ops.__prost_db_dynamic__ ADD COLUMN v integer"),
                    None
                ),
                (Some("ANALYZE orders"), Some("ANALYZE orders")),
                (Some("GRANT SELECT ON __prost_db_dynamic__ TO PUBLIC"), None),
                (None, None),
            ]
        );
        assert!(effects.literals.contains(&"orders".to_owned()));
    }

    #[test]
    fn calls_carry_their_literal_arguments() {
        let mut calls = Vec::new();
        collect_calls(
            &tokens("SELECT s.ensure_column('s.t', 'c', 'int'), now()", 1),
            &mut calls,
        );
        assert_eq!(calls[0].name, "ensure_column");
        assert_eq!(calls[0].literals, ["s.t", "c", "int"]);
        assert_eq!(calls[1].name, "now");
    }
}
