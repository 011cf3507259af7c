//! Worker scopes: the closed set of rights a worker credential can carry.
//!
//! Tokens carry scopes as strings (the original's wire format); they are parsed into [`Scope`]
//! where a token is issued and where it is checked, and an unknown scope is refused at both
//! points. The original silently dropped unknown scopes and then granted every scope to a token
//! left with none, so a typo (`worker:heartbeats`) gave full rights.

use std::fmt;
use std::str::FromStr;

use crate::AuthError;

/// One worker scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    Heartbeat,
    Spawn,
    Destroy,
    Status,
    Exec,
    Files,
    Logs,
    Lease,
}

impl Scope {
    /// Every scope, in the original's order.
    pub const ALL: [Scope; 8] = [
        Scope::Heartbeat,
        Scope::Spawn,
        Scope::Destroy,
        Scope::Status,
        Scope::Exec,
        Scope::Files,
        Scope::Logs,
        Scope::Lease,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Scope::Heartbeat => "worker:heartbeat",
            Scope::Spawn => "worker:spawn",
            Scope::Destroy => "worker:destroy",
            Scope::Status => "worker:status",
            Scope::Exec => "worker:exec",
            Scope::Files => "worker:files",
            Scope::Logs => "worker:logs",
            Scope::Lease => "worker:lease",
        }
    }

    const fn bit(self) -> u16 {
        1 << (self as u16)
    }

    /// The known scopes as one comma-separated line, for error messages.
    pub fn known_list() -> String {
        Scope::ALL.map(Scope::as_str).join(", ")
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = AuthError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == s)
            .ok_or_else(|| AuthError::UnknownScope(s.to_string()))
    }
}

/// A set of scopes (a bit set: copying it is free).
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct Scopes(u16);

impl Scopes {
    /// Every scope: what static tokens, and signed tokens that name none, are granted.
    pub const ALL: Scopes = Scopes((1 << Scope::ALL.len()) - 1);

    pub const fn empty() -> Scopes {
        Scopes(0)
    }

    pub fn contains(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }

    pub fn insert(&mut self, scope: Scope) {
        self.0 |= scope.bit();
    }

    pub fn iter(self) -> impl Iterator<Item = Scope> {
        Scope::ALL.into_iter().filter(move |s| self.contains(*s))
    }

    /// The scopes of a token's claim: every entry must be known; an empty claim means all
    /// scopes (as in the original, so tokens minted without scopes keep working).
    pub fn from_claim<S: AsRef<str>>(claimed: &[S]) -> Result<Scopes, AuthError> {
        if claimed.is_empty() {
            return Ok(Scopes::ALL);
        }
        let mut set = Scopes::empty();
        for s in claimed {
            set.insert(s.as_ref().parse()?);
        }
        Ok(set)
    }

    /// The claim's strings for these scopes, in the original's order.
    pub fn to_claim(self) -> Vec<String> {
        self.iter().map(|s| s.as_str().to_string()).collect()
    }
}

impl fmt::Debug for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl FromIterator<Scope> for Scopes {
    fn from_iter<I: IntoIterator<Item = Scope>>(iter: I) -> Self {
        let mut set = Scopes::empty();
        for s in iter {
            set.insert(s);
        }
        set
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_scope_round_trips_through_its_text() {
        for s in Scope::ALL {
            assert_eq!(s.as_str().parse::<Scope>().unwrap(), s);
            assert_eq!(s.to_string(), s.as_str());
        }
    }

    #[test]
    fn unknown_scopes_are_refused_not_dropped() {
        let err = Scopes::from_claim(&["worker:heartbeat", "worker:heartbeats-typo"]).unwrap_err();
        assert!(matches!(err, AuthError::UnknownScope(ref s) if s == "worker:heartbeats-typo"));
        assert!(Scopes::from_claim(&["admin:*"]).is_err());
        assert!(Scopes::from_claim(&[""]).is_err());
    }

    #[test]
    fn an_empty_claim_means_every_scope_and_a_named_one_only_itself() {
        assert_eq!(Scopes::from_claim::<&str>(&[]).unwrap(), Scopes::ALL);
        let one = Scopes::from_claim(&["worker:lease"]).unwrap();
        assert!(one.contains(Scope::Lease));
        assert!(!one.contains(Scope::Heartbeat));
        assert_eq!(one.to_claim(), vec!["worker:lease".to_string()]);
        assert_eq!(Scopes::ALL.iter().count(), Scope::ALL.len());
    }
}
