//! The statement an `EXECUTE` runs: a template of its text, computed parts replaced.

use super::PLACEHOLDER;
use crate::catalog::lex::Token;

/// The statement an `EXECUTE` runs, from the tokens after `EXECUTE` (up to `;`): a
/// template with computed parts replaced by [`PLACEHOLDER`], and the statement itself when
/// every part is a literal.
pub(super) fn dynamic_string(toks: &[Token<'_>]) -> (Option<String>, Option<String>) {
    // Up to INTO / USING at depth 0.
    let mut depth = 0u32;
    let end = toks
        .iter()
        .position(|t| {
            if t.is_op("(") {
                depth += 1;
            } else if t.is_op(")") {
                depth = depth.saturating_sub(1);
            }
            depth == 0 && (t.is("into") || t.is("using"))
        })
        .unwrap_or(toks.len());
    let expr = &toks[..end];
    if expr.first().is_some_and(|t| t.is("format")) && expr.get(1).is_some_and(|t| t.is_op("(")) {
        // format('template', arg, ...)
        let inner = &expr[2..expr.len().saturating_sub(1)];
        let mut args: Vec<&[Token<'_>]> = Vec::new();
        let mut depth = 0u32;
        let mut start = 0;
        for (k, t) in inner.iter().enumerate() {
            if t.is_op("(") {
                depth += 1;
            } else if t.is_op(")") {
                depth = depth.saturating_sub(1);
            } else if depth == 0 && t.is_op(",") {
                args.push(&inner[start..k]);
                start = k + 1;
            }
        }
        args.push(&inner[start..]);
        let Some(template) = args
            .first()
            .filter(|a| a.len() == 1)
            .and_then(|a| a[0].string())
        else {
            return (None, None);
        };
        let values: Vec<Option<String>> = args[1..]
            .iter()
            .map(|a| {
                (a.len() == 1)
                    .then(|| a[0].string().map(|s| s.into_owned()))
                    .flatten()
            })
            .collect();
        let (with_placeholders, literal) = format_template(&template, &values);
        return (Some(with_placeholders), literal);
    }
    // 'a' || x || 'b'  or  'a'
    let mut template = String::new();
    let mut literal = Some(String::new());
    let mut expect_operand = true;
    for t in expr {
        if expect_operand {
            if let Some(value) = t.string() {
                template.push_str(&value);
                if let Some(l) = literal.as_mut() {
                    l.push_str(&value);
                }
            } else {
                template.push_str(PLACEHOLDER);
                literal = None;
            }
            expect_operand = false;
        } else if t.is_op("||") {
            expect_operand = true;
        } else {
            // A function call or any other expression: skip its tokens.
            literal = None;
        }
    }
    if template.is_empty() || template == PLACEHOLDER {
        return (None, None);
    }
    (Some(template), literal)
}

/// `format`'s `%I`, `%L`, `%s` (and `%%`): substituted by the literal arguments where they
/// are literals, by [`PLACEHOLDER`] otherwise.
fn format_template(template: &str, values: &[Option<String>]) -> (String, Option<String>) {
    let mut out = String::new();
    let mut literal = Some(String::new());
    let mut next = 0;
    let mut chars = template.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            if let Some(l) = literal.as_mut() {
                l.push(c);
            }
            continue;
        }
        match chars.next() {
            Some('%') => {
                out.push('%');
                if let Some(l) = literal.as_mut() {
                    l.push('%');
                }
            }
            Some(kind @ ('I' | 'L' | 's')) => {
                let value = values.get(next).cloned().flatten();
                next += 1;
                match value {
                    Some(v) => {
                        let text = match kind {
                            'I' => quote_ident(&v),
                            'L' => format!("'{}'", v.replace('\'', "''")),
                            _ => v,
                        };
                        out.push_str(&text);
                        if let Some(l) = literal.as_mut() {
                            l.push_str(&text);
                        }
                    }
                    None => {
                        out.push_str(if kind == 'L' { "'x'" } else { PLACEHOLDER });
                        literal = None;
                    }
                }
            }
            _ => {
                out.push_str(PLACEHOLDER);
                literal = None;
            }
        }
    }
    (out, literal)
}

fn quote_ident(name: &str) -> String {
    if !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit()
    {
        name.to_owned()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}
