//! Tokens of one statement (already split by [`crate::split`]), for the catalog's parser.
//! Tokens borrow the statement's text; identifiers are folded and strings decoded only when
//! asked.

use std::borrow::Cow;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A keyword or unquoted identifier.
    Word,
    /// A `"quoted"` identifier (text without the quotes, `""` not yet undoubled).
    Quoted,
    /// A string: `'...'`, `E'...'`, `$tag$...$tag$` (text is the whole literal).
    Str,
    Number,
    /// `$1`.
    Param,
    /// Punctuation and operators: `(`, `)`, `,`, `.`, `;`, `[`, `]`, `::`, `=`, `||`, ...
    Op,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Token<'s> {
    pub kind: Kind,
    pub text: &'s str,
    pub line: u32,
}

impl<'s> Token<'s> {
    /// Whether this is the unquoted keyword `keyword` (given in lower case).
    pub fn is(&self, keyword: &str) -> bool {
        self.kind == Kind::Word && self.text.eq_ignore_ascii_case(keyword)
    }

    pub fn is_op(&self, op: &str) -> bool {
        self.kind == Kind::Op && self.text == op
    }

    /// An identifier: a word or a quoted identifier.
    pub fn is_ident(&self) -> bool {
        matches!(self.kind, Kind::Word | Kind::Quoted)
    }

    /// The identifier as PostgreSQL stores it: unquoted folds to lower case.
    pub fn ident(&self) -> String {
        match self.kind {
            Kind::Quoted => self.text.replace("\"\"", "\""),
            _ => self.text.to_ascii_lowercase(),
        }
    }

    /// The value of a string literal.
    pub fn string(&self) -> Option<Cow<'s, str>> {
        (self.kind == Kind::Str).then(|| decode_string(self.text))
    }
}

/// The value of a string literal as written (`'it''s'`, `E'a\nb'`, `$$x$$`, `U&'..'`).
fn decode_string(text: &str) -> Cow<'_, str> {
    if let Some(rest) = text.strip_prefix('$') {
        let tag_end = rest.find('$').map_or(0, |i| i + 2);
        let body = &text[tag_end.min(text.len())..];
        let body = body
            .get(..body.len().saturating_sub(tag_end))
            .unwrap_or_default();
        return Cow::Borrowed(body);
    }
    let (escapes, quoted) = match text.as_bytes().first() {
        Some(b'e' | b'E') => (true, &text[1..]),
        Some(b'\'') => (false, text),
        // B'', X'', N'', U&'': the part in quotes.
        _ => (false, text.find('\'').map_or(text, |i| &text[i..])),
    };
    let inner = quoted
        .strip_prefix('\'')
        .and_then(|s| s.strip_suffix('\''))
        .unwrap_or(quoted);
    if !escapes {
        return if inner.contains("''") {
            Cow::Owned(inner.replace("''", "'"))
        } else {
            Cow::Borrowed(inner)
        };
    }
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some('r') => out.push('\r'),
                Some('b') => out.push('\u{8}'),
                Some('f') => out.push('\u{c}'),
                Some(other) => out.push(other),
                None => {}
            },
            '\'' => {
                // `''` inside E'': one quote.
                if chars.clone().next() == Some('\'') {
                    chars.next();
                }
                out.push('\'');
            }
            other => out.push(other),
        }
    }
    Cow::Owned(out)
}

fn is_word_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

fn is_op_byte(b: u8) -> bool {
    matches!(
        b,
        b'+' | b'-'
            | b'*'
            | b'/'
            | b'<'
            | b'>'
            | b'='
            | b'~'
            | b'!'
            | b'@'
            | b'#'
            | b'%'
            | b'^'
            | b'&'
            | b'|'
            | b'`'
            | b'?'
    )
}

/// The tokens of `text`, which starts on `line`. Comments are dropped. Text that the
/// splitter accepted always lexes; an unterminated literal becomes one token to the end.
pub(crate) fn tokens(text: &str, line: u32) -> Vec<Token<'_>> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(text.len() / 4);
    let mut line = line;
    let mut i = 0;
    let len = bytes.len();
    while i < len {
        let b = bytes[i];
        let start = i;
        let kind;
        match b {
            b'\n' => {
                line += 1;
                i += 1;
                continue;
            }
            b' ' | b'\t' | b'\r' | b'\x0c' => {
                i += 1;
                continue;
            }
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                i = text[i..].find('\n').map_or(len, |p| i + p);
                continue;
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                let mut depth = 0u32;
                while i < len {
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
                        if bytes[i] == b'\n' {
                            line += 1;
                        }
                        i += 1;
                    }
                }
                continue;
            }
            b'\'' => {
                i = string_end(bytes, i, false);
                kind = Kind::Str;
            }
            b'"' => {
                let mut j = i + 1;
                while j < len {
                    if bytes[j] == b'"' {
                        if bytes.get(j + 1) == Some(&b'"') {
                            j += 2;
                            continue;
                        }
                        break;
                    }
                    j += 1;
                }
                let token_line = line;
                line += count_newlines(&bytes[i..j.min(len)]);
                out.push(Token {
                    kind: Kind::Quoted,
                    text: &text[i + 1..j.min(len)],
                    line: token_line,
                });
                i = (j + 1).min(len);
                continue;
            }
            b'$' => match dollar_tag(bytes, i) {
                Some(tag_len) => {
                    let tag = &bytes[i..i + tag_len];
                    let body = i + tag_len;
                    i = bytes[body..]
                        .windows(tag_len)
                        .position(|w| w == tag)
                        .map_or(len, |at| body + at + tag_len);
                    kind = Kind::Str;
                }
                None => {
                    i += 1;
                    while i < len && bytes[i].is_ascii_digit() {
                        i += 1;
                    }
                    kind = Kind::Param;
                }
            },
            b if is_word_start(b) => {
                i += 1;
                while i < len && is_word_byte(bytes[i]) {
                    i += 1;
                }
                if i < len
                    && bytes[i] == b'\''
                    && i - start == 1
                    && matches!(b, b'e' | b'E' | b'b' | b'B' | b'x' | b'X' | b'n' | b'N')
                {
                    // E'..', B'..', X'..', N'..'
                    let escapes = b == b'e' || b == b'E';
                    i = string_end(bytes, i, escapes);
                    kind = Kind::Str;
                } else if i < len
                    && bytes[i] == b'&'
                    && i - start == 1
                    && (b == b'u' || b == b'U')
                    && bytes.get(i + 1) == Some(&b'\'')
                {
                    i = string_end(bytes, i + 1, false);
                    kind = Kind::Str;
                } else {
                    kind = Kind::Word;
                }
            }
            b if b.is_ascii_digit()
                || (b == b'.' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit)) =>
            {
                i += 1;
                while i < len
                    && (bytes[i].is_ascii_alphanumeric()
                        || bytes[i] == b'_'
                        || (bytes[i] == b'.' && bytes.get(i + 1) != Some(&b'.'))
                        || ((bytes[i] == b'+' || bytes[i] == b'-')
                            && matches!(bytes[i - 1], b'e' | b'E')))
                {
                    i += 1;
                }
                kind = Kind::Number;
            }
            b':' if bytes.get(i + 1) == Some(&b':') => {
                i += 2;
                kind = Kind::Op;
            }
            b if is_op_byte(b) => {
                i += 1;
                while i < len && is_op_byte(bytes[i]) {
                    // `--` and `/*` start comments even inside an operator.
                    if (bytes[i] == b'-' && bytes.get(i + 1) == Some(&b'-'))
                        || (bytes[i] == b'/' && bytes.get(i + 1) == Some(&b'*'))
                    {
                        break;
                    }
                    i += 1;
                }
                kind = Kind::Op;
            }
            _ => {
                // ( ) [ ] , ; : . and anything else: one character.
                i += text[i..].chars().next().map_or(1, char::len_utf8);
                kind = Kind::Op;
            }
        }
        let token_line = line;
        if kind == Kind::Str {
            line += count_newlines(&bytes[start..i]);
        }
        out.push(Token {
            kind,
            text: &text[start..i],
            line: token_line,
        });
    }
    out
}

fn count_newlines(bytes: &[u8]) -> u32 {
    u32::try_from(bytes.iter().filter(|&&b| b == b'\n').count()).unwrap_or(u32::MAX)
}

/// The end (exclusive) of the string literal whose opening quote is at `at`.
fn string_end(bytes: &[u8], at: usize, escapes: bool) -> usize {
    let mut j = at + 1;
    while j < bytes.len() {
        match bytes[j] {
            b'\\' if escapes => j += 2,
            b'\'' if bytes.get(j + 1) == Some(&b'\'') => j += 2,
            b'\'' => return j + 1,
            _ => j += 1,
        }
    }
    bytes.len()
}

fn dollar_tag(bytes: &[u8], at: usize) -> Option<usize> {
    let rest = &bytes[at + 1..];
    let close = rest.iter().position(|&b| !is_word_byte(b) || b == b'$')?;
    if rest[close] != b'$' {
        return None;
    }
    match rest.first() {
        Some(b) if close > 0 && !is_word_start(*b) => None,
        _ => Some(close + 2),
    }
}

/// The first `n` words of `text` (keywords, folded to lower case), skipping comments; stops
/// at the first token that is not a word. Cheap: for deciding what a statement is.
pub(crate) fn first_words(text: &str, n: usize) -> Vec<&str> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(n);
    let mut i = 0;
    while i < bytes.len() && out.len() < n {
        let b = bytes[i];
        if b.is_ascii_whitespace() {
            i += 1;
        } else if b == b'-' && bytes.get(i + 1) == Some(&b'-') {
            i = text[i..].find('\n').map_or(bytes.len(), |p| i + p);
        } else if b == b'/' && bytes.get(i + 1) == Some(&b'*') {
            let mut depth = 0u32;
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
        } else if is_word_start(b) {
            let start = i;
            while i < bytes.len() && is_word_byte(bytes[i]) {
                i += 1;
            }
            if bytes.get(i) == Some(&b'\'') {
                break;
            }
            out.push(&text[start..i]);
        } else {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<(Kind, &str)> {
        tokens(text, 1).iter().map(|t| (t.kind, t.text)).collect()
    }

    #[test]
    fn words_strings_numbers_and_operators() {
        assert_eq!(
            kinds("SELECT a::int, 'x''y', E'\\n', $q$z$q$, 1.5e-3, $1 -- c\n/* d */ <> t.\"Q\""),
            [
                (Kind::Word, "SELECT"),
                (Kind::Word, "a"),
                (Kind::Op, "::"),
                (Kind::Word, "int"),
                (Kind::Op, ","),
                (Kind::Str, "'x''y'"),
                (Kind::Op, ","),
                (Kind::Str, "E'\\n'"),
                (Kind::Op, ","),
                (Kind::Str, "$q$z$q$"),
                (Kind::Op, ","),
                (Kind::Number, "1.5e-3"),
                (Kind::Op, ","),
                (Kind::Param, "$1"),
                (Kind::Op, "<>"),
                (Kind::Word, "t"),
                (Kind::Op, "."),
                (Kind::Quoted, "Q"),
            ]
        );
    }

    #[test]
    fn strings_decode_and_identifiers_fold() {
        let t = tokens(
            "'it''s' E'a\\tb' $$x$$ \"Say \"\"hi\"\"\" MiXed U&'d\\0061'",
            1,
        );
        assert_eq!(t[0].string().unwrap(), "it's");
        assert_eq!(t[1].string().unwrap(), "a\tb");
        assert_eq!(t[2].string().unwrap(), "x");
        assert_eq!(t[3].ident(), "Say \"hi\"");
        assert_eq!(t[4].ident(), "mixed");
        assert_eq!(t[5].kind, Kind::Str);
    }

    #[test]
    fn lines_follow_newlines_in_literals_and_comments() {
        let t = tokens("a\n'x\ny'\n/* \n */ b", 3);
        assert_eq!(t.iter().map(|t| t.line).collect::<Vec<_>>(), [3, 4, 7]);
    }

    #[test]
    fn first_words_skip_comments() {
        assert_eq!(
            first_words("/* x */ -- y\n CREATE UNIQUE INDEX i ON", 4),
            ["CREATE", "UNIQUE", "INDEX", "i"]
        );
        assert_eq!(first_words("SELECT(1)", 3), ["SELECT"]);
    }
}
