//! Splitting a script into statements with sqlparser's tokenizer.

use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer};

/// One statement of a script: its tokens (with their positions in the file) and the line
/// it starts on.
///
/// ```
/// let statements = prost_db_core::catalog::split_statements("SELECT 1;\nSELECT 2;").unwrap();
/// assert_eq!(statements[1].line, 2);
/// ```
#[derive(Debug, Clone)]
pub struct Statement {
    /// The line of its first token, from 1.
    pub line: u64,
    /// Its tokens without the terminating `;`.
    pub tokens: Vec<TokenWithSpan>,
}

impl Statement {
    /// The statement's tokens without whitespace and comments (for the light scan of
    /// statements that do not parse).
    ///
    /// ```
    /// let statements = prost_db_core::catalog::split_statements("DO  $$ x $$").unwrap();
    /// assert_eq!(statements[0].words().count(), 2);
    /// ```
    pub fn words(&self) -> impl Iterator<Item = &Token> {
        self.tokens
            .iter()
            .map(|t| &t.token)
            .filter(|t| !matches!(t, Token::Whitespace(_)))
    }
}

/// Splits `sql` at top-level semicolons. Dollar-quoted bodies, comments and string
/// literals are single tokens, so semicolons inside them do not split. psql meta-command
/// lines (`\set ...`) are blanked first. Returns the tokenizer's error message (with its
/// line) if the text cannot be tokenized at all.
///
/// ```
/// use prost_db_core::catalog::split_statements;
///
/// let sql = "CREATE FUNCTION f() RETURNS int AS $$ SELECT 1; $$ LANGUAGE sql;\n\nSELECT ';';";
/// let statements = split_statements(sql).unwrap();
/// assert_eq!(statements.len(), 2);
/// assert_eq!(statements[1].line, 3);
/// ```
///
/// # Errors
///
/// The tokenizer's message, e.g. for an unterminated string.
pub fn split_statements(sql: &str) -> Result<Vec<Statement>, String> {
    let cleaned: String = sql
        .split_inclusive('\n')
        .map(|line| {
            if line.trim_start().starts_with('\\') {
                if line.ends_with('\n') { "\n" } else { "" }
            } else {
                line
            }
        })
        .collect();
    let dialect = PostgreSqlDialect {};
    let tokens = Tokenizer::new(&dialect, &cleaned)
        .tokenize_with_location()
        .map_err(|e| e.to_string())?;
    let mut statements = Vec::new();
    let mut current: Vec<TokenWithSpan> = Vec::new();
    for token in tokens
        .into_iter()
        .chain(std::iter::once(TokenWithSpan::wrap(Token::SemiColon)))
    {
        if token.token == Token::SemiColon {
            let first = current
                .iter()
                .find(|t| !matches!(t.token, Token::Whitespace(_)));
            if let Some(first) = first {
                statements.push(Statement {
                    line: first.span.start.line,
                    tokens: std::mem::take(&mut current),
                });
            }
            current.clear();
        } else {
            current.push(token);
        }
    }
    Ok(statements)
}
