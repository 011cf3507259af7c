//! The sandbox record and the small value types that cross every layer.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{GoDuration, Placement, PreviewToken, SandboxId, SandboxState, Timestamp};

/// One sandbox as the control plane records it.
#[derive(Debug, Clone, PartialEq)]
pub struct Sandbox {
    pub id: SandboxId,
    pub state: SandboxState,
    pub provider: String,
    pub image: String,
    pub memory_mb: i64,
    pub vcpus: i64,
    pub metadata: BTreeMap<String, String>,
    pub template: String,
    pub owner_id: String,
    /// Runtime id on the provider when it differs from `id` (remote sandboxes, pool mode).
    /// Stored as the `vm_id` column, empty for `None`.
    pub vm_id: Option<String>,
    /// Where it runs; stored (and sent) as `worker_id`, `local` for [`Placement::Local`].
    pub placement: Placement,
    pub tenant_id: String,
    pub preview_domain: String,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub updated_at: Timestamp,
    /// What happens at the TTL and when idle (`on_expire`, `idle_timeout` of the spawn).
    pub lifecycle: Lifecycle,
    /// When it was paused; `None` unless `state` is `paused`. `expires_at - paused_at` is the
    /// TTL left when it was frozen.
    pub paused_at: Option<Timestamp>,
    /// The last exec, file, process or preview activity the control plane recorded (written
    /// at a coarse interval, docs/state.md); `None` = none since it started.
    pub last_active_at: Option<Timestamp>,
    /// The capability its preview URLs ask for (docs/preview.md); drawn at spawn.
    pub preview_token: PreviewToken,
    /// The spawn's `public_preview`: its preview URLs need no token.
    pub public_preview: bool,
}

/// What the lifecycle does at a sandbox's TTL or idle deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum OnExpire {
    #[default]
    Destroy,
    Pause,
}

impl OnExpire {
    pub const ALL: [OnExpire; 2] = [OnExpire::Destroy, OnExpire::Pause];

    pub fn as_str(self) -> &'static str {
        match self {
            OnExpire::Destroy => "destroy",
            OnExpire::Pause => "pause",
        }
    }

    /// `""` is the default (`destroy`), as the spawn body may omit it.
    pub fn parse(s: &str) -> Option<OnExpire> {
        match s.trim() {
            "" => Some(OnExpire::Destroy),
            t => OnExpire::ALL.into_iter().find(|o| o.as_str() == t),
        }
    }
}

/// A sandbox's lifecycle policy, fixed at spawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Lifecycle {
    pub on_expire: OnExpire,
    /// Pause (or destroy, per `on_expire`) after this long without activity; `None` = never.
    pub idle_timeout: Option<GoDuration>,
}

impl Sandbox {
    /// The id the provider knows this sandbox by.
    pub fn runtime_id(&self) -> &str {
        self.vm_id.as_deref().unwrap_or(&self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::OnExpire;

    #[test]
    fn on_expire_round_trip() {
        for o in OnExpire::ALL {
            assert_eq!(OnExpire::parse(o.as_str()), Some(o));
        }
        assert_eq!(OnExpire::parse(""), Some(OnExpire::Destroy));
        assert_eq!(OnExpire::parse("hibernate"), None);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExecMode {
    /// `sh -c command`, with `args` single-quoted and appended.
    #[default]
    Shell,
    /// `command` is the program, `args` its literal argv.
    Argv,
}

impl ExecMode {
    /// `""`/`shell` or `argv` (whitespace trimmed), as the wire accepts.
    pub fn parse(s: &str) -> Option<ExecMode> {
        match s.trim() {
            "" | "shell" => Some(ExecMode::Shell),
            "argv" => Some(ExecMode::Argv),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ExecMode::Shell => "shell",
            ExecMode::Argv => "argv",
        }
    }
}

/// Exit code of a command its timeout killed (as `timeout(1)` reports it): what an exec stream
/// ends with, and what the agent records for a timed-out process.
pub const TIMEOUT_EXIT_CODE: i32 = 124;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamKind {
    Stdout,
    Stderr,
}

/// One slice of live command output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamChunk {
    pub stream: StreamKind,
    pub data: Vec<u8>,
}

/// A file entry as the API reports it (`mode` is provider-specific text; see wire reference §6).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FileInfo {
    pub path: String,
    pub size: i64,
    pub mode: String,
    pub is_dir: bool,
    pub mod_time: String,
}
