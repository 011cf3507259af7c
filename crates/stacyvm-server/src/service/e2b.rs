//! The E2B-compatible API's service calls (docs/e2b.md): creating a sandbox from an E2B
//! template with its environment and access token, and the record the data plane checks.
//! Everything else (processes, files, pause) is the native service, called by `e2b/` in http.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use stacyvm_store::E2bSandbox;
use stacyvm_types::{Sandbox, SandboxId, SandboxState};

use super::{Caller, Service, SpawnParams};
use crate::error::{ServiceError, ServiceResult};

/// The envd version the data plane answers as. The SDK gates features on it (e2b-wire.md
/// §2.6): 0.5.7 = the `stdin` flag, the default user, `CloseStdin` and octet-stream uploads,
/// all of which `http/e2b` implements; nothing newer is claimed.
pub const ENVD_VERSION: &str = "0.5.7";

/// Records kept in memory at most; past it the cache starts over (records never change, so a
/// miss costs one store read).
const MAX_CACHED: usize = 100_000;

/// The E2B records this control plane has read or written.
#[derive(Default)]
pub(super) struct RecordCache(Mutex<HashMap<SandboxId, Arc<E2bSandbox>>>);

impl RecordCache {
    fn get(&self, id: &SandboxId) -> Option<Arc<E2bSandbox>> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .cloned()
    }

    fn put(&self, r: Arc<E2bSandbox>) {
        let mut m = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if m.len() >= MAX_CACHED {
            m.clear();
        }
        m.insert(r.sandbox_id.clone(), r);
    }
}

/// A create request, as decoded from `NewSandbox`.
#[derive(Debug, Clone, Default)]
pub struct E2bCreate {
    pub template_id: String,
    /// Seconds; `None` = the SDK's default, 300.
    pub timeout_secs: Option<i64>,
    pub metadata: BTreeMap<String, String>,
    pub env_vars: BTreeMap<String, String>,
    /// `false` = no access token (the data plane is then open to whoever knows the id).
    pub secure: bool,
    /// Pause at the timeout instead of killing.
    pub auto_pause: bool,
    /// `network.allowPublicTraffic: true`: previews need no traffic token (docs/preview.md;
    /// unlike E2B, not the default).
    pub public_preview: bool,
}

/// A template as configured (`e2b.templates`); empty fields take the server's defaults.
pub use stacyvm_config::E2bTemplate;

/// The base of relative paths and the default working directory of `t`'s sandboxes: its
/// `workdir`, else the user's home when it has a user, else the agent's (`/workspace`).
pub fn effective_workdir(t: &E2bTemplate) -> String {
    match (t.workdir.trim(), t.user.trim()) {
        (w, _) if w.starts_with('/') => w.to_string(),
        (_, "") => "/workspace".into(),
        (_, "root" | "0") => "/root".into(),
        (_, u) => format!("/home/{u}"),
    }
}

/// The E2B API's calls.
#[derive(Clone, Copy)]
pub struct E2b<'a> {
    svc: &'a Service,
}

impl Service {
    pub fn e2b(&self) -> E2b<'_> {
        E2b { svc: self }
    }
}

/// The SDK's default timeout (seconds) when a create names none.
const DEFAULT_TIMEOUT_SECS: i64 = 300;

impl<'a> E2b<'a> {
    /// The `domain` answered to the SDK: previews are `{port}-{id}.{domain}`.
    pub fn domain(self) -> &'a str {
        let s = self.svc.settings();
        if s.e2b.domain.is_empty() {
            &s.preview_domain
        } else {
            &s.e2b.domain
        }
    }

    /// `templateID` → what to spawn. `base` is the server's default image unless configured.
    pub fn template(self, id: &str) -> ServiceResult<E2bTemplate> {
        let s = self.svc.settings();
        match s.e2b.templates.get(id) {
            Some(t) => Ok(t.clone()),
            None if id == "base" => Ok(E2bTemplate::default()),
            None => Err(ServiceError::NotFound(format!(
                "template {id:?} was not found (e2b.templates lists the templates this server \
                 offers)"
            ))),
        }
    }

    /// Spawns the sandbox and records its E2B side. A sandbox whose record cannot be stored is
    /// destroyed again, so no sandbox exists without the token that guards it.
    pub async fn create(
        self,
        req: E2bCreate,
        caller: &Caller,
    ) -> ServiceResult<(Sandbox, Arc<E2bSandbox>)> {
        let t = self.template(&req.template_id)?;
        let timeout = req.timeout_secs.unwrap_or(DEFAULT_TIMEOUT_SECS);
        if timeout <= 0 {
            return Err(ServiceError::bad_request(
                "timeout must be a positive number of seconds",
            ));
        }
        check_env(&req.env_vars)?;
        let params = SpawnParams {
            image: t.image,
            provider: t.provider,
            memory_mb: t.memory_mb,
            vcpus: t.vcpus,
            ttl: format!("{timeout}s"),
            owner_id: caller.user_id.clone().unwrap_or_default(),
            template: String::new(),
            metadata: req.metadata,
            on_expire: if req.auto_pause { "pause" } else { "destroy" }.into(),
            idle_timeout: String::new(),
            public_preview: req.public_preview,
            volumes: Vec::new(),
            snapshot: String::new(),
        };
        let sb = self.svc.sandboxes().spawn(params, caller).await?;
        let record = E2bSandbox {
            sandbox_id: sb.id.clone(),
            template_id: req.template_id,
            env_vars: req.env_vars,
            access_token: if req.secure {
                new_token()
            } else {
                String::new()
            },
            created_at: chrono::Utc::now(),
        };
        if let Err(e) = self.svc.store.insert_e2b_sandbox(&record).await {
            tracing::warn!(sandbox_id = %sb.id, error = %e, "e2b record not stored; destroying the sandbox");
            if let Err(d) = self.svc.sandboxes().destroy(&sb.id).await {
                tracing::warn!(sandbox_id = %sb.id, error = %d, "sandbox without its e2b record not destroyed");
            }
            return Err(e.into());
        }
        let record = Arc::new(record);
        self.svc.e2b_records.put(record.clone());
        Ok((sb, record))
    }

    /// The E2B record of a sandbox; `None` for a sandbox the native API created.
    pub async fn record(self, id: &SandboxId) -> ServiceResult<Option<Arc<E2bSandbox>>> {
        if let Some(r) = self.svc.e2b_records.get(id) {
            return Ok(Some(r));
        }
        match self.svc.store.get_e2b_sandbox(id).await {
            Ok(r) => {
                let r = Arc::new(r);
                self.svc.e2b_records.put(r.clone());
                Ok(Some(r))
            }
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// What a write of `path` creates: the topmost of it and its missing ancestors (`path`
    /// itself when its parent exists).
    pub async fn first_missing(self, id: &SandboxId, path: &str) -> ServiceResult<String> {
        let files = self.svc.files();
        let mut top = path.trim_end_matches('/').to_string();
        while let Some((parent, _)) = top.rsplit_once('/') {
            if parent.is_empty() {
                break;
            }
            match files.stat(id, parent).await {
                Err(ServiceError::FileNotFound(_)) => top = parent.to_string(),
                Ok(_) => break,
                Err(e) => return Err(e),
            }
        }
        Ok(top)
    }

    /// Gives `path` (recursively) to `user` and its primary group: the API writes as the
    /// agent's user (root), and envd's files belong to the caller's user. A `user` of root is
    /// a no-op.
    pub async fn give_to(self, id: &SandboxId, user: &str, path: &str) -> ServiceResult<()> {
        if matches!(user, "" | "root" | "0") {
            return Ok(());
        }
        let script = r#"chown -R "$1" "$2" && chgrp -R "$(id -g "$1")" "$2""#;
        let res = self
            .svc
            .exec()
            .run(
                id,
                super::ExecParams {
                    command: "sh".into(),
                    args: vec![
                        "-c".into(),
                        script.into(),
                        "chown".into(),
                        user.into(),
                        path.into(),
                    ],
                    mode: "argv".into(),
                    ..super::ExecParams::default()
                },
            )
            .await?;
        if res.exit_code != 0 {
            return Err(ServiceError::bad_request(format!(
                "cannot give {path:?} to user {user:?}: {}",
                res.stderr.trim()
            )));
        }
        Ok(())
    }

    /// A sandbox that exists for the E2B API: destroyed ones are not found.
    pub async fn live(self, id: &SandboxId) -> ServiceResult<Sandbox> {
        let sb = self.svc.sandboxes().get(id).await?;
        if matches!(sb.state, SandboxState::Destroyed | SandboxState::Destroying) {
            return Err(ServiceError::SandboxNotFound(id.to_string()));
        }
        Ok(sb)
    }

    /// `timeout`: the sandbox now expires `secs` from now (a positive number of seconds).
    pub async fn set_timeout(self, id: &SandboxId, secs: i64) -> ServiceResult<()> {
        if secs <= 0 {
            return Err(ServiceError::bad_request(
                "timeout must be a positive number of seconds",
            ));
        }
        self.live(id).await?;
        self.svc.sandboxes().extend(id, &format!("{secs}s")).await?;
        Ok(())
    }

    /// `connect`: resumes a paused sandbox with the new timeout (true = resumed), or moves a
    /// running sandbox's expiry to `now + timeout` when that is later ("only extended").
    pub async fn connect(
        self,
        id: &SandboxId,
        timeout_secs: i64,
    ) -> ServiceResult<(Sandbox, bool)> {
        if timeout_secs <= 0 {
            return Err(ServiceError::bad_request(
                "timeout must be a positive number of seconds",
            ));
        }
        let sb = self.live(id).await?;
        let ttl = format!("{timeout_secs}s");
        if sb.state == SandboxState::Paused {
            return Ok((self.svc.sandboxes().resume(id, &ttl).await?, true));
        }
        let wanted = chrono::Utc::now() + chrono::Duration::seconds(timeout_secs);
        if wanted > sb.expires_at {
            return Ok((self.svc.sandboxes().extend(id, &ttl).await?, false));
        }
        Ok((sb, false))
    }
}

/// A 160-bit random token in hex (the form E2B's own tokens take is opaque to the SDK).
fn new_token() -> String {
    use rand::RngCore;
    let mut b = [0u8; 20];
    rand::thread_rng().fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Environment names a shell can set, values without NUL, bounded.
pub fn check_env(env: &BTreeMap<String, String>) -> ServiceResult<()> {
    const MAX_VARS: usize = 1024;
    const MAX_VALUE: usize = 128 * 1024;
    if env.len() > MAX_VARS {
        return Err(ServiceError::bad_request(format!(
            "at most {MAX_VARS} environment variables"
        )));
    }
    for (k, v) in env {
        let name_ok = !k.is_empty()
            && k.len() <= 256
            && !k.starts_with(|c: char| c.is_ascii_digit())
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !name_ok {
            return Err(ServiceError::bad_request(format!(
                "invalid environment variable name {k:?}"
            )));
        }
        if v.contains('\0') || v.len() > MAX_VALUE {
            return Err(ServiceError::bad_request(format!(
                "environment variable {k} has a NUL byte or is over {MAX_VALUE} bytes"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn env_names_are_checked() {
        let ok: BTreeMap<_, _> = [("FOO_1".to_string(), "a=b ü".to_string())].into();
        assert!(check_env(&ok).is_ok());
        for bad in ["", "1A", "A-B", "A B", "A=B"] {
            let m: BTreeMap<_, _> = [(bad.to_string(), "x".to_string())].into();
            assert!(check_env(&m).is_err(), "{bad:?} accepted");
        }
        let nul: BTreeMap<_, _> = [("A".to_string(), "x\0y".to_string())].into();
        assert!(check_env(&nul).is_err());
    }

    #[test]
    fn tokens_are_random_hex() {
        let (a, b) = (new_token(), new_token());
        assert_eq!(a.len(), 40);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
