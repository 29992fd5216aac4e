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

/// Splits `sql` into its statements with the splitter the catalog uses too
/// ([`prost_db_core::split`]); returns each with its byte offset in `sql`.
pub(crate) fn split_statements(sql: &str) -> Vec<(usize, &str)> {
    prost_db_core::split::split(sql)
        .into_iter()
        .map(|s| (s.offset, s.text))
        .collect()
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
    fn offsets_point_at_statements() {
        let sql = "SELECT 1;\n\nSELECT 2";
        let parts = split_statements(sql);
        assert_eq!(parts[1], (11, "SELECT 2"));
        assert_eq!(line_of_offset(sql, parts[1].0), 3);
    }
}
