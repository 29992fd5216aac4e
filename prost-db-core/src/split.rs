//! Splitting a SQL script into statements: the one splitter that the migrator (to run a
//! script step by step and locate errors) and the compile-time catalog share, so both always
//! see the same statements.
//!
//! The rules are psql's, which is how most migration scripts are tested by hand:
//!
//! - a statement ends at a `;` outside quotes, comments, parentheses and SQL-standard
//!   function bodies (`CREATE FUNCTION ... BEGIN ATOMIC ...; ...; END`, counting `CASE ...
//!   END` inside);
//! - `'...'` (with `''`), `E'...'` (with backslash escapes), `"..."` identifiers,
//!   `$tag$...$tag$` bodies, `--` and nested `/* */` comments are opaque; `$1` and `a$b`
//!   are not dollar quotes;
//! - a backslash outside all of these starts a psql meta-command (`\set`, `\connect`, ...),
//!   which runs to the end of its line. The server cannot run one, so it comes out as a
//!   [`StatementKind::MetaCommand`]: migration loading rejects the file, naming the line
//!   ([`SourceError::MetaCommand`](crate::source::SourceError::MetaCommand)), for the
//!   migrator and the catalog alike.
//!
//! ```
//! use prost_db_core::split::{split, StatementKind};
//!
//! let sql = "CREATE TABLE t (a TEXT DEFAULT ';');\n\
//!            CREATE FUNCTION f() RETURNS int LANGUAGE sql\n\
//!            BEGIN ATOMIC SELECT 1; SELECT 2; END;\n\
//!            -- done\n";
//! let statements = split(sql);
//! assert_eq!(statements.len(), 2);
//! assert_eq!(statements[1].line, 2);
//! assert!(statements[1].text.ends_with("SELECT 2; END"));
//! assert_eq!(statements[1].kind, StatementKind::Sql);
//! ```

/// One statement of a script.
///
/// ```
/// let s = &prost_db_core::split::split("\n  SELECT 1 -- note\n;")[0];
/// assert_eq!((s.text, s.offset, s.line), ("SELECT 1", 3, 2));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Statement<'s> {
    /// From its first token to its last, without comments around it or the `;`.
    pub text: &'s str,
    /// The byte offset of `text` in the script.
    pub offset: usize,
    /// The line `text` starts on, from 1.
    pub line: u32,
    /// What it is.
    pub kind: StatementKind,
}

/// What a [`Statement`] is.
///
/// ```
/// use prost_db_core::split::{split, StatementKind, Unterminated};
///
/// assert_eq!(split("\\set x 1\n")[0].kind, StatementKind::MetaCommand);
/// assert_eq!(split("SELECT 'oops")[0].kind, StatementKind::Unterminated(Unterminated::String));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatementKind {
    /// SQL for the server.
    Sql,
    /// A psql meta-command line (`\set ON_ERROR_STOP on`): not SQL.
    MetaCommand,
    /// The script ends inside a quote, comment or body; the statement runs to the end.
    Unterminated(Unterminated),
}

/// What a script ends inside of.
///
/// ```
/// use prost_db_core::split::{split, StatementKind, Unterminated};
///
/// assert_eq!(split("DO $$ BEGIN")[0].kind, StatementKind::Unterminated(Unterminated::DollarQuote));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unterminated {
    /// A `'...'` string.
    String,
    /// A `"..."` identifier.
    QuotedIdentifier,
    /// A `$tag$...$tag$` body.
    DollarQuote,
    /// A `/* ... */` comment.
    BlockComment,
}

impl Unterminated {
    /// What to call it in a message.
    ///
    /// ```
    /// assert_eq!(prost_db_core::split::Unterminated::String.describe(), "a quoted string");
    /// ```
    pub fn describe(self) -> &'static str {
        match self {
            Unterminated::String => "a quoted string",
            Unterminated::QuotedIdentifier => "a quoted identifier",
            Unterminated::DollarQuote => "a dollar-quoted body",
            Unterminated::BlockComment => "a block comment",
        }
    }
}

/// Splits `sql` into its statements, in order. Statements holding only comments are left
/// out. See the [module docs](self) for the rules.
///
/// ```
/// let statements = prost_db_core::split::split("SELECT 1;\n\nSELECT ';' /* ; */;");
/// assert_eq!(statements.iter().map(|s| s.line).collect::<Vec<_>>(), [1, 3]);
/// ```
pub fn split(sql: &str) -> Vec<Statement<'_>> {
    let mut splitter = Splitter {
        sql,
        bytes: sql.as_bytes(),
        i: 0,
        line: 1,
        out: Vec::new(),
        start: None,
        end: 0,
        parens: 0,
        words: 0,
        routine: Routine::Unknown,
        begins: 0,
    };
    splitter.run();
    splitter.out
}

/// Whether the statement being read creates a function or procedure, decided from its first
/// words (`CREATE [OR REPLACE] {FUNCTION | PROCEDURE}`), as psql does.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Routine {
    Unknown,
    Create,
    CreateOr,
    CreateOrReplace,
    Yes,
    No,
}

struct Splitter<'s> {
    sql: &'s str,
    bytes: &'s [u8],
    i: usize,
    line: u32,
    out: Vec<Statement<'s>>,
    /// Offset and line of the current statement's first token.
    start: Option<(usize, u32)>,
    /// End of the current statement's last token.
    end: usize,
    parens: u32,
    words: u32,
    routine: Routine,
    /// `BEGIN` (and `CASE` inside one) minus `END`, in a function body.
    begins: u32,
}

fn is_word_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

impl<'s> Splitter<'s> {
    fn run(&mut self) {
        let len = self.bytes.len();
        while self.i < len {
            let b = self.bytes[self.i];
            match b {
                b'\n' => {
                    self.line += 1;
                    self.i += 1;
                }
                b' ' | b'\t' | b'\r' | b'\x0c' => self.i += 1,
                b'-' if self.peek(1) == Some(b'-') => {
                    // A line comment: to the end of the line (the newline is counted above).
                    self.i = self.find_byte(b'\n').unwrap_or(len);
                }
                b'/' if self.peek(1) == Some(b'*') => {
                    if !self.block_comment() {
                        self.unterminated(Unterminated::BlockComment);
                    }
                }
                b'\'' => {
                    self.token_start();
                    if !self.string(false) {
                        self.unterminated(Unterminated::String);
                    }
                }
                b'"' => {
                    self.token_start();
                    if !self.quoted_identifier() {
                        self.unterminated(Unterminated::QuotedIdentifier);
                    }
                }
                b'$' => {
                    self.token_start();
                    match self.dollar_tag() {
                        Some(tag_len) => {
                            if !self.dollar_body(tag_len) {
                                self.unterminated(Unterminated::DollarQuote);
                            }
                        }
                        // `$1`: a parameter.
                        None => self.i += 1,
                    }
                }
                b'\\' => self.meta_command(),
                b';' if self.parens == 0 && self.begins == 0 => {
                    self.finish(StatementKind::Sql);
                    self.i += 1;
                }
                b'(' => {
                    self.token_start();
                    self.parens += 1;
                    self.i += 1;
                }
                b')' => {
                    self.token_start();
                    self.parens = self.parens.saturating_sub(1);
                    self.i += 1;
                }
                b if is_word_start(b) => self.word(),
                b if b.is_ascii_digit() => {
                    // A number, with what can follow its digits (`1e5`, `1.5`): never a word.
                    self.token_start();
                    while self.i < len && is_word_byte(self.bytes[self.i]) {
                        self.i += 1;
                    }
                    self.end = self.i;
                }
                _ => {
                    self.token_start();
                    self.i += 1;
                }
            }
        }
        self.finish(StatementKind::Sql);
    }

    fn peek(&self, ahead: usize) -> Option<u8> {
        self.bytes.get(self.i + ahead).copied()
    }

    fn find_byte(&self, wanted: u8) -> Option<usize> {
        self.bytes[self.i..]
            .iter()
            .position(|&b| b == wanted)
            .map(|p| self.i + p)
    }

    /// Counts the newlines in `from..to` and moves there; `to` ends the current token.
    fn advance_over(&mut self, to: usize) {
        let newlines = self.bytes[self.i..to]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        self.line += u32::try_from(newlines).unwrap_or(u32::MAX);
        self.i = to;
        self.end = to;
    }

    fn token_start(&mut self) {
        if self.start.is_none() {
            self.start = Some((self.i, self.line));
        }
        self.end = self.i + 1;
    }

    fn finish(&mut self, kind: StatementKind) {
        if let Some((offset, line)) = self.start.take() {
            self.out.push(Statement {
                text: &self.sql[offset..self.end],
                offset,
                line,
                kind,
            });
        }
        self.parens = 0;
        self.words = 0;
        self.routine = Routine::Unknown;
        self.begins = 0;
    }

    /// The rest of the script is one statement that never ends.
    fn unterminated(&mut self, what: Unterminated) {
        let len = self.bytes.len();
        self.advance_over(len);
        if self.start.is_none() {
            // A comment that never ends, after the last statement: nothing to run.
            return;
        }
        self.finish(StatementKind::Unterminated(what));
    }

    /// `/* ... */`, nested. `false` if it never ends.
    fn block_comment(&mut self) -> bool {
        let end_of_token = self.end;
        let mut depth = 0u32;
        let mut j = self.i;
        let len = self.bytes.len();
        let mut newlines = 0u32;
        while j < len {
            match self.bytes[j] {
                b'/' if self.bytes.get(j + 1) == Some(&b'*') => {
                    depth += 1;
                    j += 2;
                }
                b'*' if self.bytes.get(j + 1) == Some(&b'/') => {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        self.line += newlines;
                        self.i = j;
                        // A comment is not a token: the statement's end stays where it was.
                        self.end = end_of_token;
                        return true;
                    }
                }
                b'\n' => {
                    newlines += 1;
                    j += 1;
                }
                _ => j += 1,
            }
        }
        false
    }

    /// `'...'` from its opening quote; `escapes` for `E'...'`. `false` if it never ends.
    fn string(&mut self, escapes: bool) -> bool {
        let len = self.bytes.len();
        let mut j = self.i + 1;
        while j < len {
            match self.bytes[j] {
                b'\\' if escapes => j += 2,
                b'\'' if self.bytes.get(j + 1) == Some(&b'\'') => j += 2,
                b'\'' => {
                    self.advance_over(j + 1);
                    return true;
                }
                _ => j += 1,
            }
        }
        false
    }

    /// `"..."` from its opening quote, `""` inside. `false` if it never ends.
    fn quoted_identifier(&mut self) -> bool {
        let len = self.bytes.len();
        let mut j = self.i + 1;
        while j < len {
            if self.bytes[j] == b'"' {
                if self.bytes.get(j + 1) == Some(&b'"') {
                    j += 2;
                    continue;
                }
                self.advance_over(j + 1);
                return true;
            }
            j += 1;
        }
        false
    }

    /// The length of the `$tag$` opening a dollar quote at `i`, if one does.
    fn dollar_tag(&self) -> Option<usize> {
        let rest = &self.bytes[self.i + 1..];
        let close = rest.iter().position(|&b| !is_word_byte(b) || b == b'$')?;
        if rest[close] != b'$' {
            return None;
        }
        match rest.first() {
            Some(b) if close > 0 && !is_word_start(*b) => None,
            _ => Some(close + 2),
        }
    }

    /// The body of a dollar quote whose tag (`$..$`, `tag_len` bytes) starts at `i`.
    fn dollar_body(&mut self, tag_len: usize) -> bool {
        let tag = &self.bytes[self.i..self.i + tag_len];
        let body = self.i + tag_len;
        let found = self.bytes[body..]
            .windows(tag_len)
            .position(|window| window == tag);
        match found {
            Some(at) => {
                self.advance_over(body + at + tag_len);
                true
            }
            None => false,
        }
    }

    /// A word: a keyword or identifier, or the `E` of `E'...'`.
    fn word(&mut self) {
        self.token_start();
        let from = self.i;
        let len = self.bytes.len();
        let mut j = from + 1;
        while j < len && is_word_byte(self.bytes[j]) {
            j += 1;
        }
        let word = &self.bytes[from..j];
        if j < len && self.bytes[j] == b'\'' {
            // A prefixed string: E'..' allows backslash escapes; B'', X'', N'', U&'' do not.
            self.i = j;
            let escapes = word.eq_ignore_ascii_case(b"e");
            if !self.string(escapes) {
                self.unterminated(Unterminated::String);
            }
            return;
        }
        self.i = j;
        self.end = j;
        self.track_routine(word);
    }

    /// psql's rule for SQL-standard bodies: in `CREATE [OR REPLACE] FUNCTION|PROCEDURE`,
    /// `BEGIN` opens a block, `CASE` inside one opens another, `END` closes one, and a `;`
    /// inside a block does not end the statement.
    fn track_routine(&mut self, word: &[u8]) {
        self.words += 1;
        let is = |keyword: &[u8]| word.eq_ignore_ascii_case(keyword);
        self.routine = match (self.routine, self.words) {
            (Routine::Unknown, 1) if is(b"create") => Routine::Create,
            (Routine::Create, 2) if is(b"or") => Routine::CreateOr,
            (Routine::CreateOr, 3) if is(b"replace") => Routine::CreateOrReplace,
            (Routine::Create, 2) | (Routine::CreateOrReplace, 4)
                if is(b"function") || is(b"procedure") =>
            {
                Routine::Yes
            }
            (Routine::Yes, _) => Routine::Yes,
            _ => Routine::No,
        };
        if self.routine != Routine::Yes || self.parens > 0 {
            return;
        }
        if is(b"begin") {
            self.begins += 1;
        } else if is(b"case") {
            if self.begins > 0 {
                self.begins += 1;
            }
        } else if is(b"end") {
            self.begins = self.begins.saturating_sub(1);
        }
    }

    /// `\command ...` to the end of the line. What was read before it on the same statement
    /// is a statement of its own (as psql sends its buffer at `\g`).
    fn meta_command(&mut self) {
        self.finish(StatementKind::Sql);
        let len = self.bytes.len();
        let eol = self.find_byte(b'\n').unwrap_or(len);
        let text = self.sql[self.i..eol].trim_end();
        self.out.push(Statement {
            text,
            offset: self.i,
            line: self.line,
            kind: StatementKind::MetaCommand,
        });
        self.i = eol;
    }
}

#[cfg(test)]
mod tests;
