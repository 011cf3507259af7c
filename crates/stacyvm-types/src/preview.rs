//! The per-sandbox preview token: the capability a preview request
//! (`{port}-{id}.{preview_domain}`) must carry unless the sandbox's previews are public
//! (docs/preview.md).

use std::fmt;

use rand::Rng;

/// A sandbox's preview token: 32 lowercase hex digits (128 random bits), drawn at spawn.
/// `Debug` never shows it; compare with [`PreviewToken::matches`] (constant time).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct PreviewToken(String);

impl PreviewToken {
    /// A fresh token from the thread's CSPRNG (as sandbox ids).
    pub fn random() -> Self {
        let bytes: [u8; 16] = rand::thread_rng().gen();
        PreviewToken(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// A stored token as it was written (`""` = none was issued).
    pub fn from_stored(s: impl Into<String>) -> Self {
        PreviewToken(s.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// No token was issued (a record from before tokens existed that the migration did not
    /// reach): nothing matches it.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `presented` is this token. The time taken depends only on the lengths, so a
    /// caller cannot find the token byte by byte; an empty token matches nothing.
    pub fn matches(&self, presented: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), presented.as_bytes());
        if a.is_empty() || a.len() != b.len() {
            return false;
        }
        a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

impl fmt::Debug for PreviewToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() {
            "PreviewToken(none)"
        } else {
            "PreviewToken(..)"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_tokens_are_128_bit_hex_and_differ() {
        let a = PreviewToken::random();
        assert_eq!(a.as_str().len(), 32);
        assert!(a
            .as_str()
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_ne!(a, PreviewToken::random());
    }

    #[test]
    fn matching_is_exact_and_empty_matches_nothing() {
        let t = PreviewToken::from_stored("0123456789abcdef0123456789abcdef");
        assert!(t.matches("0123456789abcdef0123456789abcdef"));
        assert!(!t.matches("0123456789abcdef0123456789abcdee"));
        assert!(!t.matches("0123456789ABCDEF0123456789ABCDEF"));
        assert!(!t.matches("0123456789abcdef"));
        assert!(!t.matches(""));
        let none = PreviewToken::default();
        assert!(none.is_empty() && !none.matches(""));
    }

    #[test]
    fn debug_hides_the_token() {
        let t = PreviewToken::random();
        let shown = format!("{t:?}");
        assert!(!shown.contains(t.as_str()), "{shown}");
    }
}
