//! Sandbox lifecycle states and the transitions allowed between them.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SandboxState {
    /// Transient while the provider builds the runtime; never persisted as a final answer.
    Creating,
    Running,
    Destroyed,
    Error,
    /// Owning worker is missing, stale or unreachable.
    Unhealthy,
    /// Past `expires_at` while its owner could not be reached; lease released.
    Expired,
    /// Frozen by `POST /sandboxes/{id}/pause` (or by its lifecycle): the runtime and its files
    /// are kept, its TTL clock stops, exec/files/process starts are refused (docs/state.md).
    Paused,
    /// Destroy was asked while its worker could not be reached: it no longer counts against
    /// limits, its lease is released, and reconciliation finishes the destroy when the worker
    /// returns (sandbox-model.md §2).
    Destroying,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown sandbox state {0:?}")]
pub struct UnknownState(pub String);

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid sandbox state transition from {from} to {to}")]
pub struct InvalidTransition {
    pub from: SandboxState,
    pub to: SandboxState,
}

impl SandboxState {
    pub const ALL: [SandboxState; 8] = [
        Self::Creating,
        Self::Running,
        Self::Destroyed,
        Self::Error,
        Self::Unhealthy,
        Self::Expired,
        Self::Paused,
        Self::Destroying,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Creating => "creating",
            Self::Running => "running",
            Self::Destroyed => "destroyed",
            Self::Error => "error",
            Self::Unhealthy => "unhealthy",
            Self::Expired => "expired",
            Self::Paused => "paused",
            Self::Destroying => "destroying",
        }
    }

    /// Whether the sandbox still holds (or may hold) a runtime and counts against limits.
    pub fn is_active(self) -> bool {
        !matches!(self, Self::Destroyed | Self::Expired | Self::Destroying)
    }

    /// Whether it counts against `max_sandboxes` and owner limits: active and not paused (paused
    /// sandboxes have their own limit, `max_paused_sandboxes`).
    pub fn counts_as_running(self) -> bool {
        self.is_active() && self != Self::Paused
    }

    /// `destroyed` is terminal. Every live state may be destroyed; health states move freely
    /// among each other because a returning worker's answer wins. Only a running sandbox is
    /// paused by the service (an unhealthy one may turn paused when its returning worker says
    /// so); a paused one resumes to running, or loses its worker (unhealthy) or its runtime
    /// (error). It never expires directly: its retention is the lifecycle's, not the TTL's.
    pub fn valid_transition(self, to: SandboxState) -> Result<(), InvalidTransition> {
        use SandboxState::*;
        let ok = match (self, to) {
            (Destroyed, _) => false,
            (_, Destroyed) => true,
            // Only a destroy ends it.
            (Destroying, _) => false,
            (_, Creating) => false,
            (Creating, Running | Error) => true,
            (Creating, _) => false,
            (_, Destroying) => true,
            (Expired, Running | Unhealthy) => true,
            (Expired, _) => false,
            (Paused, Running | Unhealthy | Error) => true,
            (Paused, _) => false,
            (Error, Paused) => false,
            (Running | Error | Unhealthy, _) => true,
        };
        if ok {
            Ok(())
        } else {
            Err(InvalidTransition { from: self, to })
        }
    }
}

impl fmt::Display for SandboxState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SandboxState {
    type Err = UnknownState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownState(s.to_string()))
    }
}

impl serde::Serialize for SandboxState {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for SandboxState {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for st in SandboxState::ALL {
            assert_eq!(st.as_str().parse::<SandboxState>(), Ok(st));
        }
        assert!("idle".parse::<SandboxState>().is_err());
    }

    #[test]
    fn transitions() {
        use SandboxState::*;
        assert!(Running.valid_transition(Destroyed).is_ok());
        assert!(Destroyed.valid_transition(Running).is_err());
        assert!(Running.valid_transition(Creating).is_err());
        assert!(Unhealthy.valid_transition(Running).is_ok());
        assert!(Expired.valid_transition(Error).is_err());
        assert!(Creating.valid_transition(Running).is_ok());
        assert!(Running.valid_transition(Paused).is_ok());
        assert!(Paused.valid_transition(Running).is_ok());
        assert!(Paused.valid_transition(Destroyed).is_ok());
        assert!(Paused.valid_transition(Expired).is_err());
        assert!(Creating.valid_transition(Paused).is_err());
        assert!(Expired.valid_transition(Paused).is_err());
        assert!(!Paused.counts_as_running() && Paused.is_active());
        for from in [Running, Error, Unhealthy, Expired, Paused] {
            assert!(from.valid_transition(Destroying).is_ok(), "{from}");
        }
        assert!(Creating.valid_transition(Destroying).is_err());
        assert!(Destroying.valid_transition(Running).is_err());
        assert!(Destroying.valid_transition(Destroyed).is_ok());
        assert!(!Destroying.is_active());
    }
}
