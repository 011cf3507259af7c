//! Event kinds (`type` of a `GET /api/v1/events` record, wire-reference §7.3).

use std::fmt;
use std::str::FromStr;

macro_rules! event_kinds {
    ($($variant:ident => $text:literal),+ $(,)?) => {
        /// Every event kind the control plane publishes. New kinds are appended.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum EventKind {
            $($variant),+
        }

        impl EventKind {
            pub const ALL: &'static [EventKind] = &[$(EventKind::$variant),+];

            pub const fn as_str(self) -> &'static str {
                match self {
                    $(EventKind::$variant => $text),+
                }
            }
        }

        impl FromStr for EventKind {
            type Err = UnknownEventKind;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok(EventKind::$variant),)+
                    other => Err(UnknownEventKind(other.to_string())),
                }
            }
        }
    };
}

event_kinds! {
    SandboxCreated => "sandbox.created",
    SandboxRunning => "sandbox.running",
    SandboxDestroyed => "sandbox.destroyed",
    SandboxError => "sandbox.error",
    ExecStarted => "exec.started",
    ExecCompleted => "exec.completed",
    ExecFailed => "exec.failed",
    ExecTimeout => "exec.timeout",
    FileWritten => "file.written",
    FileRead => "file.read",
    OperationFailed => "operation.failed",
    ResourceLimit => "resource.limit",
    ProviderFailed => "provider.failed",
    ReconcileAction => "reconcile.action",
    SpawnQueued => "spawn.queued",
    SpawnDequeued => "spawn.dequeued",
    SpawnQueueTimeout => "spawn.queue_timeout",
    QuotaSaved => "quota.saved",
    QuotaDeleted => "quota.deleted",
    ProcessStarted => "process.started",
    ProcessExited => "process.exited",
    SandboxPaused => "sandbox.paused",
    SandboxResumed => "sandbox.resumed",
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown event kind {0:?}")]
pub struct UnknownEventKind(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_and_texts_are_unique() {
        let mut seen = std::collections::BTreeSet::new();
        for k in EventKind::ALL {
            assert_eq!(k.as_str().parse::<EventKind>(), Ok(*k));
            assert!(seen.insert(k.as_str()), "duplicate {k}");
        }
        assert!("sandbox.exploded".parse::<EventKind>().is_err());
    }
}
