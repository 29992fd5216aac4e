//! Reading SQL scripts: mapping PostgreSQL's error positions to lines, and splitting a
//! non-transactional script into the statements that must be sent one by one.

/// The 1-based line of `script` holding the character at PostgreSQL's 1-based `position`
/// into the text that was sent, where that text was `prefix_chars` characters of our own
/// followed by the script.
pub(crate) fn line_of_position(script: &str, prefix_chars: usize, position: usize) -> Option<u32> {
    let index = position.checked_sub(1)?.checked_sub(prefix_chars)?;
    let byte = script
        .char_indices()
        .nth(index)
        .map_or(script.len(), |(i, _)| i);
    let line = script[..byte].bytes().filter(|&b| b == b'\n').count() + 1;
    u32::try_from(line).ok()
}

/// The 1-based line at byte `offset` of `script`.
pub(crate) fn line_of_offset(script: &str, offset: usize) -> u32 {
    let line = script[..offset.min(script.len())]
        .bytes()
        .filter(|&b| b == b'\n')
        .count()
        + 1;
    u32::try_from(line).unwrap_or(u32::MAX)
}

/// Splits `sql` at top-level semicolons, keeping quoted strings, quoted identifiers,
/// dollar-quoted bodies and comments intact. Returns each non-blank statement with its byte
/// offset in `sql`.
pub(crate) fn split_statements<'s>(sql: &'s str) -> Vec<(usize, &'s str)> {
    let bytes = sql.as_bytes();
    let mut statements = Vec::new();
    let mut start = 0;
    let mut i = 0;
    let push = |from: usize, to: usize, out: &mut Vec<(usize, &'s str)>| {
        let text = &sql[from..to];
        if !prost_db_core::source::is_blank(text) {
            let lead = text.len() - text.trim_start().len();
            out.push((from + lead, text.trim()));
        }
    };
    while i < bytes.len() {
        match bytes[i] {
            b'\'' => {
                // E'..' strings allow backslash escapes; '' is an escaped quote in both kinds.
                let escapes = i > 0 && matches!(bytes[i - 1], b'e' | b'E');
                i += 1;
                while i < bytes.len() {
                    match bytes[i] {
                        b'\\' if escapes => i += 1,
                        b'\'' if bytes.get(i + 1) == Some(&b'\'') => i += 1,
                        b'\'' => break,
                        _ => {}
                    }
                    i += 1;
                }
                i += 1;
            }
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += 1;
                }
                i += 1;
            }
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                let mut depth = 0usize;
                while i < bytes.len() {
                    if bytes[i] == b'/' && bytes.get(i + 1) == Some(&b'*') {
                        depth += 1;
                        i += 2;
                    } else if bytes[i] == b'*' && bytes.get(i + 1) == Some(&b'/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
            }
            // `a$b$` is an identifier and `$1` a parameter, not the start of a `$tag$` string.
            b'$' if i > 0
                && (bytes[i - 1].is_ascii_alphanumeric()
                    || matches!(bytes[i - 1], b'_' | b'$')) =>
            {
                i += 1;
            }
            b'$' => match dollar_tag(&sql[i..]) {
                Some(tag) => {
                    let body = i + tag.len();
                    i = sql[body..]
                        .find(tag)
                        .map_or(bytes.len(), |end| body + end + tag.len());
                }
                None => i += 1,
            },
            b';' => {
                push(start, i, &mut statements);
                i += 1;
                start = i;
            }
            _ => i += 1,
        }
    }
    push(start, bytes.len().min(sql.len()), &mut statements);
    statements
}

/// `$tag$` or `$$` at the start of `text`, if it opens a dollar-quoted string.
fn dollar_tag(text: &str) -> Option<&str> {
    let rest = &text[1..];
    let end = rest.find('$')?;
    let tag = &rest[..end];
    let valid = tag
        .chars()
        .enumerate()
        .all(|(n, c)| c == '_' || c.is_alphabetic() || (n > 0 && c.is_ascii_digit()));
    valid.then(|| &text[..end + 2])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_positions_to_lines_after_a_prefix() {
        let script = "CREATE TABLE a (id int);\nCREATE TABLE b (id int);\nSELEC 1;\n";
        let prefix = "SET LOCAL search_path TO \"s\";\n";
        let position = prefix.chars().count() + script.find("SELEC").unwrap() + 1;
        assert_eq!(
            line_of_position(script, prefix.chars().count(), position),
            Some(3)
        );
        assert_eq!(line_of_position(script, 10, 5), None);
    }

    #[test]
    fn a_dollar_inside_an_identifier_does_not_open_a_quote() {
        let sql = "CREATE TABLE a$b$ (id int);\nCREATE TABLE c (id int);\n";
        let parts: Vec<_> = split_statements(sql).into_iter().map(|(_, s)| s).collect();
        assert_eq!(parts.len(), 2, "{parts:#?}");
        assert!(parts[1].contains("TABLE c"));
    }

    #[test]
    fn splits_around_quotes_comments_and_dollar_bodies() {
        let sql = "-- prost-db:no-transaction\nCREATE INDEX CONCURRENTLY i ON t (a);\n\
                   SELECT 'a;b', E'it\\'s;', \"odd;name\" FROM t; /* x; /* y; */ */\n\
                   CREATE FUNCTION f() RETURNS int AS $body$ SELECT 1; $body$ LANGUAGE sql;\n\
                   DO $$ BEGIN PERFORM 1; END $$;\n-- trailing comment\n";
        let parts: Vec<_> = split_statements(sql).into_iter().map(|(_, s)| s).collect();
        assert_eq!(parts.len(), 4, "{parts:#?}");
        assert!(parts[0].ends_with("ON t (a)"));
        assert!(parts[1].contains("\"odd;name\""));
        assert!(parts[2].contains("SELECT 1; $body$"));
        assert!(parts[3].starts_with("/* x;") || parts[3].starts_with("DO"));
    }

    #[test]
    fn offsets_point_at_statements() {
        let sql = "SELECT 1;\n\nSELECT 2";
        let parts = split_statements(sql);
        assert_eq!(parts[1], (11, "SELECT 2"));
        assert_eq!(line_of_offset(sql, parts[1].0), 3);
    }
}
