//! Typed identifiers: a sandbox id, a worker id and where a sandbox runs.
//!
//! They are parsed once at the edge (HTTP path, RPC envelope, store row) and travel typed from
//! there, so no layer compares strings with `"local"` or treats an empty string as "none".

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;

use serde::{Deserialize, Serialize};

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                $name(s)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                $name(s.to_string())
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl From<&$name> for String {
            fn from(id: &$name) -> String {
                id.0.clone()
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }
    };
}

string_id!(
    /// A sandbox id. Fresh ones are `sb-` + 8 lower-case hex digits ([`SandboxId::random`]);
    /// ids read from a request are taken as given (an unknown id is a 404, not a 400).
    SandboxId
);

string_id!(
    /// A worker id as registered by heartbeat. `local` is the control plane itself; use
    /// [`Placement`] to tell the two apart.
    WorkerId
);

impl SandboxId {
    /// A fresh id: `sb-` followed by 8 lower-case hex digits (4 random bytes).
    pub fn random() -> SandboxId {
        SandboxId(crate::id::new_sandbox_id())
    }
}

impl WorkerId {
    /// The id of the control plane's own worker.
    pub const LOCAL: &'static str = "local";

    pub fn local() -> WorkerId {
        WorkerId(Self::LOCAL.to_string())
    }

    pub fn is_local(&self) -> bool {
        self.0 == Self::LOCAL
    }
}

/// Where a sandbox runs: in the control plane's own providers or on a remote worker.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Placement {
    Local,
    Remote(WorkerId),
}

impl Placement {
    /// From the stored/wire `worker_id`: empty or `local` is [`Placement::Local`] (wire
    /// reference §9: remote iff non-empty and not `local`, compared as stored, untrimmed).
    pub fn from_worker_id(worker_id: &str) -> Placement {
        match worker_id {
            "" | WorkerId::LOCAL => Placement::Local,
            other => Placement::Remote(WorkerId::from(other)),
        }
    }

    /// The `worker_id` text for the wire and the store (`local` for [`Placement::Local`]).
    pub fn worker_id(&self) -> &str {
        match self {
            Placement::Local => WorkerId::LOCAL,
            Placement::Remote(w) => w.as_str(),
        }
    }

    pub fn is_remote(&self) -> bool {
        matches!(self, Placement::Remote(_))
    }

    /// The remote worker, if any.
    pub fn remote(&self) -> Option<&WorkerId> {
        match self {
            Placement::Local => None,
            Placement::Remote(w) => Some(w),
        }
    }
}

impl From<Placement> for WorkerId {
    /// The worker that runs it: [`WorkerId::local`] for [`Placement::Local`].
    fn from(p: Placement) -> WorkerId {
        match p {
            Placement::Local => WorkerId::local(),
            Placement::Remote(w) => w,
        }
    }
}

impl From<WorkerId> for Placement {
    fn from(w: WorkerId) -> Placement {
        Placement::from_worker_id(w.as_str())
    }
}

impl fmt::Display for Placement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.worker_id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_round_trips_through_the_worker_id_column() {
        for (text, want) in [
            ("local", Placement::Local),
            ("", Placement::Local),
            ("worker-a", Placement::Remote(WorkerId::from("worker-a"))),
        ] {
            let p = Placement::from_worker_id(text);
            assert_eq!(p, want, "{text:?}");
            assert_eq!(Placement::from_worker_id(p.worker_id()), p);
        }
        assert_eq!(Placement::Local.worker_id(), "local");
        assert!(!Placement::Local.is_remote());
        assert!(Placement::from_worker_id("w").is_remote());
        assert_eq!(Placement::from(WorkerId::local()), Placement::Local);
    }

    #[test]
    fn ids_serialise_as_plain_strings() {
        let id = SandboxId::from("sb-0000abcd");
        assert_eq!(
            serde_json::to_string(&id).ok().as_deref(),
            Some("\"sb-0000abcd\"")
        );
        let back: Result<SandboxId, _> = serde_json::from_str("\"sb-0000abcd\"");
        assert_eq!(back.ok(), Some(id.clone()));
        assert_eq!(id, "sb-0000abcd");
        assert_eq!(format!("{id} {id:?}"), "sb-0000abcd \"sb-0000abcd\"");
    }

    #[test]
    fn random_sandbox_ids_have_the_original_shape() {
        let id = SandboxId::random();
        assert_eq!(id.len(), 11);
        assert!(id.starts_with("sb-"));
    }
}
