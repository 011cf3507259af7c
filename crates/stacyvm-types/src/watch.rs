//! Directory watches: the changes a watch reports, as every layer above the agent (provider,
//! worker RPC, HTTP) sees them.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What happened to an entry. fsnotify's meanings (what E2B's envd reports): a rename is
/// `rename` under the old name and `create` under the new one; `chmod` is any metadata change
/// (mode, owner, times).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum WatchKind {
    Create,
    Write,
    Remove,
    Rename,
    Chmod,
}

impl WatchKind {
    pub const ALL: [WatchKind; 5] = [
        WatchKind::Create,
        WatchKind::Write,
        WatchKind::Remove,
        WatchKind::Rename,
        WatchKind::Chmod,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            WatchKind::Create => "create",
            WatchKind::Write => "write",
            WatchKind::Remove => "remove",
            WatchKind::Rename => "rename",
            WatchKind::Chmod => "chmod",
        }
    }

    /// The kind named `s` exactly as [`Self::as_str`] writes it; `None` for anything else.
    pub fn parse(s: &str) -> Option<WatchKind> {
        WatchKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for WatchKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One change below a watched directory.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WatchEvent {
    /// Path relative to the watched directory (`a.txt`, `sub/b.txt` in a recursive watch).
    pub name: String,
    pub kind: WatchKind,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip() {
        for k in WatchKind::ALL {
            assert_eq!(WatchKind::parse(k.as_str()), Some(k));
            let json = serde_json::to_string(&k).unwrap();
            assert_eq!(json, format!("\"{k}\""));
            assert_eq!(serde_json::from_str::<WatchKind>(&json).unwrap(), k);
        }
        assert_eq!(WatchKind::parse("CREATE"), None);
        let e = WatchEvent {
            name: "sub/a.txt".into(),
            kind: WatchKind::Chmod,
        };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"name":"sub/a.txt","kind":"chmod"}"#
        );
    }
}
