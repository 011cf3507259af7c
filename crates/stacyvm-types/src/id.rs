//! Identifier rules: sandbox ids and owner ids.

use rand::Rng;

/// A fresh sandbox id: `sb-` followed by 8 lowercase hex digits (4 random bytes).
pub fn new_sandbox_id() -> String {
    let n: u32 = rand::thread_rng().gen();
    format!("sb-{n:08x}")
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OwnerIdError {
    #[error("owner_id is required")]
    Empty,
    #[error("owner_id must be at most 128 characters")]
    TooLong,
    #[error("owner_id must not contain path separators")]
    Separator,
    #[error("owner_id must not contain whitespace or control characters")]
    Control,
}

/// Validates an owner id and returns it trimmed. Rules: ≤128 chars, no `/` `\`, no whitespace or
/// control characters (the original's rule, shared by quotas and spawn).
pub fn validate_owner_id(raw: &str) -> Result<String, OwnerIdError> {
    let id = raw.trim();
    if id.is_empty() {
        return Err(OwnerIdError::Empty);
    }
    if id.chars().count() > 128 {
        return Err(OwnerIdError::TooLong);
    }
    if id.contains('/') || id.contains('\\') {
        return Err(OwnerIdError::Separator);
    }
    if id.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(OwnerIdError::Control);
    }
    Ok(id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sandbox_id_shape() {
        let id = new_sandbox_id();
        assert_eq!(id.len(), 11);
        assert!(id.starts_with("sb-"));
        assert!(id[3..]
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    }

    #[test]
    fn owner_rules() {
        assert_eq!(validate_owner_id("  alice ").as_deref(), Ok("alice"));
        assert_eq!(validate_owner_id(""), Err(OwnerIdError::Empty));
        assert_eq!(validate_owner_id("a/b"), Err(OwnerIdError::Separator));
        assert_eq!(validate_owner_id("a\\b"), Err(OwnerIdError::Separator));
        assert_eq!(validate_owner_id("a b"), Err(OwnerIdError::Control));
        assert_eq!(validate_owner_id("a\u{7}b"), Err(OwnerIdError::Control));
        assert_eq!(
            validate_owner_id(&"x".repeat(129)),
            Err(OwnerIdError::TooLong)
        );
        assert!(validate_owner_id(&"x".repeat(128)).is_ok());
    }
}
