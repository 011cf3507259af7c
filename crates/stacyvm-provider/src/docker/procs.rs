//! Background processes and directory watches on docker (runc and runsc alike): the static
//! agent is bind-mounted read-only into every new container at [`AGENT_BIN`]. The first
//! process call of a container starts it detached (`docker exec -d … --listen` on a tmpfs
//! socket, as the container's user, so processes run as exec's commands do) and reaches it
//! through a `docker exec -i … --bridge` whose demultiplexed stdio carries the agent protocol.
//! No network and no host socket is involved, so `network_mode: none` and gVisor work
//! unchanged. One connection per container, re-established when it breaks; a restarted
//! provider finds the agent still listening (the bridge is tried before anything is started,
//! since a second `--listen` would replace the first one's socket). Containers from builds
//! before the agent mount answer `Unavailable`: they are recreated, not patched.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bytes::Bytes;
use futures_util::StreamExt;
use stacyvm_protocol::agent::ProcStart;
use tokio::time::Instant;

use super::container::WORKSPACE;
use super::{api_err, lock, DockerProvider};
use crate::agent::conn::AgentConn;
use crate::agent::procs;
use crate::{ChunkSender, ExecRequest, ProcessSpec, ProviderError};

/// Where the agent binary is mounted in every container.
pub(crate) const AGENT_BIN: &str = "/.stacyvm/agent";
/// A tmpfs of its own, so the socket works with a read-only root filesystem.
pub(crate) const AGENT_RUN_DIR: &str = "/run/stacyvm";
const AGENT_SOCK: &str = "/run/stacyvm/agent.sock";

/// The agent's command line in the container: `--listen` to serve, `--bridge` to connect a
/// stdio bridge to the serving one.
fn agent_command(mode: &str) -> Vec<String> {
    vec![AGENT_BIN.to_string(), mode.into(), AGENT_SOCK.into()]
}
/// How long a freshly started agent may take to listen and answer (gVisor execs are slower).
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long one bridge attempt may take to answer the handshake.
const BRIDGE_TIMEOUT: Duration = Duration::from_secs(10);

type Slot = Arc<tokio::sync::Mutex<Option<Arc<AgentConn>>>>;

/// runtime id → its agent connection (the lock serialises starting the agent).
#[derive(Default)]
pub(super) struct Agents(Mutex<HashMap<String, Slot>>);

impl DockerProvider {
    /// Drops the container's agent connection, ending its readers (the container is gone).
    pub(super) async fn forget_agent(&self, runtime_id: &str) {
        let Some(slot) = lock(&self.agents.0).remove(runtime_id) else {
            return;
        };
        let conn = match tokio::time::timeout(Duration::from_secs(5), slot.lock()).await {
            Ok(guard) => guard.clone(),
            Err(_) => None,
        };
        if let Some(c) = conn {
            c.close();
        }
    }

    /// The connection to the agent of `runtime_id`'s container, starting the agent if none
    /// listens yet.
    pub(super) async fn agent(&self, runtime_id: &str) -> Result<Arc<AgentConn>, ProviderError> {
        let cid = self.container(runtime_id).await?;
        if self.settings.agent.is_none() {
            return Err(crate::agent::missing("docker"));
        }
        let slot = lock(&self.agents.0)
            .entry(runtime_id.to_string())
            .or_default()
            .clone();
        let mut slot = slot.lock().await;
        if let Some(c) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        *slot = None;
        let conn = match self.bridge(&cid, runtime_id, BRIDGE_TIMEOUT).await {
            Ok(c) => c,
            Err(_) => {
                self.start_agent(&cid, runtime_id).await?;
                let deadline = Instant::now() + START_TIMEOUT;
                loop {
                    match self.bridge(&cid, runtime_id, BRIDGE_TIMEOUT).await {
                        Ok(c) => break c,
                        Err(e) if Instant::now() >= deadline => return Err(e),
                        Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                }
            }
        };
        let conn = Arc::new(conn);
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// `docker exec -d <agent> --listen <sock>`, after checking the container has the agent.
    async fn start_agent(&self, cid: &str, runtime_id: &str) -> Result<(), ProviderError> {
        let info = self.inspect(cid, runtime_id).await?;
        let mounted = info
            .mounts
            .unwrap_or_default()
            .iter()
            .any(|m| m.destination.as_deref() == Some(AGENT_BIN));
        if !mounted {
            return Err(ProviderError::Unavailable(
                "this sandbox was created without the process agent (an older build or no agent \
                 binary at the time); recreate it for background processes"
                    .into(),
            ));
        }
        let opts = CreateExecOptions {
            cmd: Some(agent_command("--listen")),
            working_dir: Some("/".into()),
            ..Default::default()
        };
        let err = |e| api_err("starting the sandbox agent failed", e);
        let id = self.docker.create_exec(cid, opts).await.map_err(err)?.id;
        let start = StartExecOptions {
            detach: true,
            ..Default::default()
        };
        match self
            .docker
            .start_exec(&id, Some(start))
            .await
            .map_err(err)?
        {
            StartExecResults::Detached => Ok(()),
            StartExecResults::Attached { .. } => {
                Err(ProviderError::internal("agent exec started attached"))
            }
        }
    }

    /// `docker exec -i <agent> --bridge <sock>`, its stdout demultiplexed, then the handshake.
    async fn bridge(
        &self,
        cid: &str,
        runtime_id: &str,
        timeout: Duration,
    ) -> Result<AgentConn, ProviderError> {
        let opts = CreateExecOptions {
            attach_stdin: Some(true),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            cmd: Some(agent_command("--bridge")),
            working_dir: Some("/".into()),
            ..Default::default()
        };
        let (_, output, input) = self
            .start_attached(cid, opts, |e| {
                self.not_found_or(runtime_id, e, "connecting to the sandbox agent failed")
            })
            .await?;
        let stdout = output.filter_map(|item| async move {
            match item {
                Ok(LogOutput::StdOut { message } | LogOutput::Console { message }) => {
                    Some(Ok::<Bytes, io::Error>(message))
                }
                Ok(LogOutput::StdErr { message }) => {
                    tracing::debug!(target: "stacyvm::agent", "bridge: {}", String::from_utf8_lossy(&message).trim());
                    None
                }
                Ok(LogOutput::StdIn { .. }) => None,
                Err(e) => Some(Err(io::Error::other(e))),
            }
        });
        let reader = tokio_util::io::StreamReader::new(Box::pin(stdout));
        AgentConn::handshake_over(
            Box::new(reader),
            Box::new(input),
            runtime_id,
            Instant::now() + timeout,
        )
        .await
        .map_err(|e| ProviderError::Unavailable(format!("sandbox agent unreachable: {e}")))
    }

    /// Runs `req` as an exec on the container's agent (one agent round trip instead of a
    /// `docker exec` per command); `None` when the container cannot (no agent configured, a
    /// container from before the agent mount, an older agent): then `docker exec` runs it.
    pub(super) async fn exec_on_agent(
        &self,
        runtime_id: &str,
        req: &ExecRequest,
        out: &ChunkSender,
    ) -> Option<Result<i32, ProviderError>> {
        self.settings.agent.as_ref()?;
        let conn = match self.agent(runtime_id).await {
            Ok(c) => c,
            Err(e @ ProviderError::SandboxNotFound(_)) => return Some(Err(e)),
            Err(e) => {
                // Exec must not depend on the agent: `docker exec` still works.
                tracing::debug!(runtime_id, error = %e, "exec without the agent");
                return None;
            }
        };
        if !crate::agent::exec::supported(&conn) {
            return None;
        }
        let msg = match self.start_msg(&ProcessSpec {
            exec: req.clone(),
            ..ProcessSpec::default()
        }) {
            Ok(m) => m,
            Err(e) => return Some(Err(e)),
        };
        let max_chunk = stacyvm_protocol::agent::OUTPUT_CHUNK;
        Some(crate::agent::exec::run(conn, msg, req.timeout, out.clone(), max_chunk).await)
    }

    /// The `ProcStart` of `spec`: the environment checked, the workdir cleaned.
    pub(super) fn start_msg(&self, spec: &ProcessSpec) -> Result<ProcStart, ProviderError> {
        procs::start_msg_rooted(spec, WORKSPACE)
    }
}
