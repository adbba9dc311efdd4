//! Measures taken on the raw query text, before the parser sees it: the parser recurses
//! once per bracket and allocates per token, so both are bounded first.

/// What a scan of the query text found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextShape {
    /// The deepest bracket nesting (`{`, `(`, `[`) outside strings and comments.
    pub nesting: usize,
    /// Lexical tokens: names, numbers, strings and punctuators (`...` is one). Commas,
    /// white space and comments are not tokens in GraphQL.
    pub tokens: usize,
}

/// One pass over the bytes; strings and comments are skipped whole.
pub fn scan(query: &str) -> TextShape {
    let bytes = query.as_bytes();
    let (mut depth, mut nesting, mut tokens, mut i) = (0usize, 0usize, 0usize, 0usize);
    let is_name = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    while i < bytes.len() {
        match bytes[i] {
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b' ' | b'\t' | b'\n' | b'\r' | b',' => {
                i += 1;
                continue;
            }
            _ => {}
        }
        tokens += 1;
        match bytes[i] {
            b'"' if bytes[i..].starts_with(b"\"\"\"") => {
                i += 3;
                while i < bytes.len() && !bytes[i..].starts_with(b"\"\"\"") {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 3;
            }
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' && bytes[i] != b'\n' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'{' | b'(' | b'[' => {
                depth += 1;
                nesting = nesting.max(depth);
                i += 1;
            }
            b'}' | b')' | b']' => {
                depth = depth.saturating_sub(1);
                i += 1;
            }
            b'.' if bytes[i..].starts_with(b"...") => i += 3,
            b'-' | b'0'..=b'9' => {
                i += 1;
                while i < bytes.len()
                    && (bytes[i].is_ascii_alphanumeric() || matches!(bytes[i], b'.' | b'+' | b'-'))
                    && !bytes[i..].starts_with(b"...")
                {
                    i += 1;
                }
            }
            b if is_name(b) => {
                while i < bytes.len() && is_name(bytes[i]) {
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    TextShape { nesting, tokens }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nesting(query: &str) -> usize {
        scan(query).nesting
    }

    #[test]
    fn nesting_counts_brackets_but_not_strings_or_comments() {
        assert_eq!(nesting("{ a }"), 1);
        assert_eq!(nesting("{ a(x: [{ y: 1 }]) { b } }"), 4);
        assert_eq!(nesting(r#"{ a(s: "{{{{[[[(") }"#), 2);
        assert_eq!(nesting("{ a(s: \"\"\"{{{{\"\"\") }"), 2);
        assert_eq!(nesting("# {{{{{\n{ a }"), 1);
        assert_eq!(nesting(r#"{ a(s: "\"{{") }"#), 2);
        assert_eq!(nesting(&"{a".repeat(1000)), 1000);
    }

    #[test]
    fn tokens_are_counted_as_graphql_lexes_them() {
        assert_eq!(scan("{ a }").tokens, 3);
        assert_eq!(scan("query Q($n: Int = -1.5e3) { a(n: $n) }").tokens, 19);
        assert_eq!(scan("{ ...F } fragment F on Q { a, b }").tokens, 12);
        assert_eq!(
            scan("{ a(s: \"x y, z\" t: \"\"\"long { }\"\"\") } # a b c").tokens,
            11
        );
        assert_eq!(scan("").tokens, 0);
    }
}
