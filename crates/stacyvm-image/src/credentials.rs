//! Registry credentials: an optional username and password per registry host.

use std::collections::BTreeMap;
use std::fmt;

use crate::reference::DEFAULT_REGISTRY;

/// Logins by registry host (`host[:port]`, Docker Hub as `docker.io`). `Debug` never shows a
/// password.
#[derive(Clone, Default)]
pub struct Credentials {
    logins: BTreeMap<String, Login>,
}

#[derive(Clone)]
struct Login {
    username: String,
    password: String,
}

impl Credentials {
    /// No logins: every registry is pulled from anonymously.
    pub fn anonymous() -> Self {
        Credentials::default()
    }

    /// Adds (or replaces) the login for `registry`.
    pub fn with_login(
        mut self,
        registry: &str,
        username: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        self.logins.insert(
            normalize_host(registry),
            Login {
                username: username.into(),
                password: password.into(),
            },
        );
        self
    }

    /// `(username, password)` for `registry`, if one was given.
    pub(crate) fn for_registry(&self, registry: &str) -> Option<(&str, &str)> {
        self.logins
            .get(&normalize_host(registry))
            .map(|l| (l.username.as_str(), l.password.as_str()))
    }
}

/// Docker Hub answers to several names; credentials given for any of them apply to all.
fn normalize_host(host: &str) -> String {
    let h = host.trim().trim_end_matches('/').to_ascii_lowercase();
    let h = h
        .strip_prefix("https://")
        .or_else(|| h.strip_prefix("http://"))
        .unwrap_or(&h)
        .to_string();
    match h.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            DEFAULT_REGISTRY.to_string()
        }
        _ => h,
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(
                self.logins
                    .iter()
                    .map(|(host, l)| (host, format!("{}:<redacted>", l.username))),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hub_aliases_share_a_login_and_debug_redacts() {
        let c = Credentials::anonymous()
            .with_login("https://index.docker.io/", "me", "s3cret")
            .with_login("Reg.Example:5000", "u", "p");
        assert_eq!(c.for_registry("docker.io"), Some(("me", "s3cret")));
        assert_eq!(c.for_registry("reg.example:5000"), Some(("u", "p")));
        assert_eq!(c.for_registry("other"), None);
        let dbg = format!("{c:?}");
        assert!(
            !dbg.contains("s3cret") && dbg.contains("me:<redacted>"),
            "{dbg}"
        );
    }
}
