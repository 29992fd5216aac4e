//! `#[sqlx(rename_all = "...")]`: the same word splitting and case rules sqlx applies (it
//! uses the `heck` crate), so that a column or label name derived here is the one sqlx
//! reads and writes.

/// A `rename_all` rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RenameAll {
    Lower,
    Upper,
    Snake,
    ScreamingSnake,
    Kebab,
    Camel,
    Pascal,
}

/// The values sqlx accepts.
pub(crate) const RULES: &[&str] = &[
    "lowercase",
    "UPPERCASE",
    "snake_case",
    "SCREAMING_SNAKE_CASE",
    "kebab-case",
    "camelCase",
    "PascalCase",
];

impl RenameAll {
    pub fn parse(rule: &str) -> Option<RenameAll> {
        Some(match rule {
            "lowercase" => RenameAll::Lower,
            "UPPERCASE" => RenameAll::Upper,
            "snake_case" => RenameAll::Snake,
            "SCREAMING_SNAKE_CASE" => RenameAll::ScreamingSnake,
            "kebab-case" => RenameAll::Kebab,
            "camelCase" => RenameAll::Camel,
            "PascalCase" => RenameAll::Pascal,
            _ => return None,
        })
    }

    pub fn apply(self, name: &str) -> String {
        let words = words(name);
        let lower = |w: &str| w.to_lowercase();
        let capital = |w: &str| {
            let mut chars = w.chars();
            chars.next().map_or_else(String::new, |first| {
                first
                    .to_uppercase()
                    .chain(chars.as_str().to_lowercase().chars())
                    .collect()
            })
        };
        match self {
            RenameAll::Lower => name.to_lowercase(),
            RenameAll::Upper => name.to_uppercase(),
            RenameAll::Snake => words.iter().map(|w| lower(w)).collect::<Vec<_>>().join("_"),
            RenameAll::ScreamingSnake => words
                .iter()
                .map(|w| w.to_uppercase())
                .collect::<Vec<_>>()
                .join("_"),
            RenameAll::Kebab => words.iter().map(|w| lower(w)).collect::<Vec<_>>().join("-"),
            RenameAll::Camel => words
                .iter()
                .enumerate()
                .map(|(i, w)| if i == 0 { lower(w) } else { capital(w) })
                .collect(),
            RenameAll::Pascal => words.iter().map(|w| capital(w)).collect(),
        }
    }
}

/// Splits at non-alphanumeric characters, between a lower-case letter and an upper-case one
/// (`fooBar`), and before the last capital of an acronym (`HTTPServer` -> `HTTP`, `Server`).
/// Digits belong to the word they are in.
fn words(name: &str) -> Vec<&str> {
    let mut out = Vec::new();
    for part in name.split(|c: char| !c.is_alphanumeric()) {
        let chars: Vec<(usize, char)> = part.char_indices().collect();
        let mut start = 0;
        // Whether the last letter seen was upper case (`None`: no letter yet in this word).
        let mut upper: Option<bool> = None;
        for (k, &(i, c)) in chars.iter().enumerate() {
            let Some(&(next_i, next)) = chars.get(k + 1) else {
                break;
            };
            let mode = if c.is_lowercase() {
                Some(false)
            } else if c.is_uppercase() {
                Some(true)
            } else {
                upper
            };
            if mode == Some(false) && next.is_uppercase() {
                out.push(&part[start..next_i]);
                start = next_i;
                upper = None;
            } else if upper == Some(true) && c.is_uppercase() && next.is_lowercase() {
                if i > start {
                    out.push(&part[start..i]);
                }
                start = i;
                upper = None;
            } else {
                upper = mode;
            }
        }
        if start < part.len() {
            out.push(&part[start..]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_heck_on_field_and_variant_names() {
        let cases = [
            ("created_at", RenameAll::Camel, "createdAt"),
            ("created_at", RenameAll::Pascal, "CreatedAt"),
            ("created_at", RenameAll::ScreamingSnake, "CREATED_AT"),
            ("created_at", RenameAll::Kebab, "created-at"),
            ("InReview", RenameAll::Snake, "in_review"),
            ("HTTPServer", RenameAll::Snake, "http_server"),
            ("Version2Beta", RenameAll::Snake, "version2_beta"),
            ("OnHold", RenameAll::Lower, "onhold"),
            ("OnHold", RenameAll::Upper, "ONHOLD"),
            ("OnHold", RenameAll::Kebab, "on-hold"),
            ("Paid", RenameAll::Snake, "paid"),
            ("a", RenameAll::Pascal, "A"),
        ];
        for (name, rule, expected) in cases {
            assert_eq!(rule.apply(name), expected, "{name} {rule:?}");
        }
    }
}
