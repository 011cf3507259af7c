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

/// An account name [`validate_user`] refuses. The text completes "must be …" and "invalid
/// user: …" alike.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a user name (letters, digits, '_', '-', '.'; at most 32) or a uid")]
pub struct InvalidUser;

/// The account to run a command as, trimmed; `None` when empty (the sandbox's default user).
/// A POSIX user name (at most 32 bytes: letters, digits, `_`, `-`, `.`, a `$` as Samba's
/// machine accounts end in, not starting with `-`) or a uid below `u32::MAX` (which is
/// `(uid_t)-1`, "no change"). Anything else is refused where it enters (a spawn, a config file)
/// rather than looked up as odd text in a sandbox's `/etc/passwd`.
pub fn validate_user(user: &str) -> Result<Option<&str>, InvalidUser> {
    let u = user.trim();
    if u.is_empty() {
        return Ok(None);
    }
    let name = u.len() <= 32
        && !u.starts_with('-')
        && u.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'$'));
    if !name || u.parse::<u64>().is_ok_and(|n| n > u64::from(u32::MAX - 1)) {
        return Err(InvalidUser);
    }
    Ok(Some(u))
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
    fn user_rules() {
        assert_eq!(validate_user(""), Ok(None));
        assert_eq!(validate_user("  "), Ok(None));
        assert_eq!(validate_user(" bob "), Ok(Some("bob")));
        for ok in [
            "root",
            "www-data",
            "a.b_c",
            "host$",
            "0",
            "1000",
            "4294967294",
        ] {
            assert_eq!(validate_user(ok), Ok(Some(ok)), "{ok}");
        }
        let long = "a".repeat(33);
        for bad in [
            "-x",
            "a b",
            "a/b",
            "ü",
            "4294967295",
            "99999999999",
            long.as_str(),
        ] {
            assert_eq!(validate_user(bad), Err(InvalidUser), "{bad}");
        }
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
