//! `stacyvm worker certify [--file F] [--production] [--format text|json|markdown] [--out F]`:
//! the "worker identity certification output" the staging guide asks production workers for.
//! It loads the configuration exactly as `stacyvm worker` would and checks the worker's
//! identity setup (id, credential kind, secret files, signing-key rotation and revocation, mTLS
//! material and its expiry, reachability of the control plane and of its own RPC address),
//! then writes a report. Exit 1 when a check fails (with `--production`, warnings fail too).
//! See docs/worker.md, "Certifying a worker".

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use serde::Serialize;
use stacyvm_config::{cert_facts, AuthSection, Config, RpcTlsSection, Sources, CONFIG_ENV_VAR};

use super::certify_report::render;

/// Certificates that end within this many days are a warning.
const EXPIRY_WARN_DAYS: i64 = 30;
/// Shortest signing key accepted without a warning (bytes).
const MIN_SIGNING_KEY: usize = 32;

#[derive(Debug, Args)]
pub struct CertifyArgs {
    /// Check this config file instead of the lookup ($STACYVM_CONFIG, ./stacyvm.yaml, ...).
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Hold the setup to production rules: warnings fail the run.
    #[arg(long)]
    pub production: bool,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Write the report here instead of standard output.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Seconds to wait for each reachability check.
    #[arg(long, default_value_t = 5)]
    pub timeout: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
    Markdown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Warn,
    Fail,
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub status: Status,
    pub detail: String,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub worker_id: String,
    pub config: String,
    pub production: bool,
    /// The worst status of all checks, after `--production` turned warnings into failures.
    pub result: Status,
    pub checks: Vec<Check>,
}

#[derive(Default)]
struct Checks(Vec<Check>);

impl Checks {
    fn add(&mut self, name: &str, status: Status, detail: impl Into<String>) {
        self.0.push(Check {
            name: name.to_string(),
            status,
            detail: detail.into(),
        });
    }
}

pub async fn run(args: CertifyArgs) -> anyhow::Result<ExitCode> {
    let mut sources = Sources::from_process().context("reading the environment")?;
    if let Some(f) = &args.file {
        sources
            .env
            .insert(CONFIG_ENV_VAR.into(), f.to_string_lossy().into_owned());
    }
    let mut checks = Checks::default();
    let (config, source) = match Config::load_from(&sources) {
        Err(e) => {
            checks.add("config", Status::Fail, e.to_string());
            (None, String::from("(not loaded)"))
        }
        Ok(c) => {
            let source = c
                .source
                .as_ref()
                .map_or("built-in defaults".to_string(), |p| p.display().to_string());
            match c.clone().validate_all() {
                Ok(v) if v.warnings().is_empty() => {
                    checks.add("config", Status::Pass, "loads and validates")
                }
                Ok(v) => checks.add("config", Status::Warn, v.warnings().join("; ")),
                Err(invalid) => {
                    let errors: Vec<String> =
                        invalid.errors.iter().map(|e| e.to_string()).collect();
                    checks.add("config", Status::Fail, errors.join("; "));
                }
            }
            (Some(c), source)
        }
    };
    let mut worker_id = String::new();
    if let Some(c) = &config {
        worker_id = c.worker.id.trim().to_string();
        identity(&mut checks, c);
        secrets(&mut checks, &c.auth);
        mtls(&mut checks, &c.worker.rpc_tls, &c.worker.listen_addr);
        reachability(&mut checks, c, Duration::from_secs(args.timeout.max(1))).await;
    }
    if args.production {
        for c in &mut checks.0 {
            if c.status == Status::Warn {
                c.status = Status::Fail;
                c.detail.push_str(" (--production: warnings fail)");
            }
        }
    }
    let result = checks
        .0
        .iter()
        .map(|c| c.status)
        .max()
        .unwrap_or(Status::Pass);
    let report = Report {
        worker_id,
        config: source,
        production: args.production,
        result,
        checks: checks.0,
    };
    let text = render(&report, args.format)?;
    match &args.out {
        Some(p) => std::fs::write(p, text).with_context(|| format!("writing {}", p.display()))?,
        None => print!("{text}"),
    }
    Ok(if result == Status::Fail {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Who the worker says it is and how it proves it.
fn identity(checks: &mut Checks, c: &Config) {
    if c.worker.id.trim().is_empty() {
        checks.add(
            "worker.id",
            Status::Warn,
            "not set: the hostname is used, so the identity changes with the host name",
        );
    } else {
        checks.add("worker.id", Status::Pass, c.worker.id.trim());
    }
    let a = &c.auth;
    let signing =
        !a.worker_signing_key.trim().is_empty() || !a.worker_signing_key_file.trim().is_empty();
    let token = !a.worker_token.trim().is_empty() || !a.worker_token_file.trim().is_empty();
    match (signing, token) {
        (true, _) => checks.add(
            "credential",
            Status::Pass,
            "signed identity: the worker mints short-lived tokens with the signing key",
        ),
        (false, true) => checks.add(
            "credential",
            Status::Warn,
            "a static worker token (shared or per-worker): fit for staging; production workers \
             should use a signed identity (auth.worker_signing_key_file)",
        ),
        (false, false) => checks.add(
            "credential",
            Status::Fail,
            "no worker credential: set auth.worker_signing_key_file or auth.worker_token_file",
        ),
    }
    if signing {
        let key_len = a.worker_signing_key.trim().len();
        if a.worker_signing_key_file.trim().is_empty() && key_len < MIN_SIGNING_KEY {
            checks.add(
                "signing key",
                Status::Warn,
                format!("{key_len} bytes; use at least {MIN_SIGNING_KEY} random bytes"),
            );
        }
        let previous = non_blank(&a.worker_signing_keys);
        checks.add(
            "key rotation",
            Status::Pass,
            match previous {
                0 => "one signing key; to rotate, move it to auth.worker_signing_keys and set a new primary".to_string(),
                n => format!("{n} previous key(s) still verify (remove them once their tokens have expired)"),
            },
        );
    }
    let revoked = non_blank(&a.worker_revoked_token_ids);
    checks.add(
        "revocation",
        Status::Pass,
        format!("{revoked} revoked token id(s) in auth.worker_revoked_token_ids"),
    );
}

/// How many of `v` are not blank.
fn non_blank(v: &[String]) -> usize {
    v.iter().filter(|k| !k.trim().is_empty()).count()
}

/// Secret files: present, non-empty, readable by the owner only. Inline secrets are flagged.
fn secrets(checks: &mut Checks, a: &AuthSection) {
    for (key, file, inline) in [
        (
            "auth.worker_token_file",
            &a.worker_token_file,
            &a.worker_token,
        ),
        (
            "auth.worker_signing_key_file",
            &a.worker_signing_key_file,
            &a.worker_signing_key,
        ),
    ] {
        let file = file.trim();
        if file.is_empty() {
            if !inline.trim().is_empty() {
                let inline_key = key.trim_end_matches("_file");
                checks.add(
                    inline_key,
                    Status::Warn,
                    format!("set inline (config or environment); prefer {key} with mode 0600"),
                );
            }
            continue;
        }
        let (status, detail) = private_file(Path::new(file));
        checks.add(key, status, detail);
    }
}

/// Whether `path` exists, is not empty and is readable by its owner only.
fn private_file(path: &Path) -> (Status, String) {
    match std::fs::metadata(path) {
        Err(e) => (Status::Fail, format!("{}: {e}", path.display())),
        Ok(m) if m.len() == 0 => (Status::Fail, format!("{}: empty", path.display())),
        Ok(m) if m.permissions().mode() & 0o077 != 0 => (
            Status::Warn,
            format!(
                "{}: mode {:o}; readable by others, chmod 600 it",
                path.display(),
                m.permissions().mode() & 0o777
            ),
        ),
        Ok(_) => (
            Status::Pass,
            format!("{}: present, owner-only", path.display()),
        ),
    }
}

/// mTLS material for the worker's RPC server: versions, expiry, key file modes.
fn mtls(checks: &mut Checks, t: &RpcTlsSection, listen: &str) {
    if !t.enabled {
        let status = if listen.trim().is_empty() || is_loopback(listen) {
            Status::Pass
        } else {
            Status::Warn
        };
        checks.add(
            "mtls",
            status,
            "worker.rpc_tls is off: RPC is plain HTTP (only on loopback or a trusted network)",
        );
        return;
    }
    if t.insecure_skip_verify {
        checks.add(
            "mtls",
            Status::Fail,
            "worker.rpc_tls.insecure_skip_verify is true",
        );
    }
    let now = chrono::Utc::now().timestamp();
    for (key, file) in [
        ("worker.rpc_tls.server_cert_file", &t.server_cert_file),
        ("worker.rpc_tls.client_ca_file", &t.client_ca_file),
        ("worker.rpc_tls.ca_file", &t.ca_file),
    ] {
        let file = file.trim();
        if file.is_empty() {
            continue;
        }
        let (status, detail) = match cert_facts(Path::new(file)) {
            Err(e) => (Status::Fail, e),
            // Only end-entity certificates must be v3 (webpki takes v1 trust anchors).
            Ok(f) if f.version != 3 && key.ends_with("server_cert_file") => (
                Status::Fail,
                format!(
                    "{file}: X.509 version {}; reissue with `stacyvm worker certs`",
                    f.version
                ),
            ),
            Ok(f) if f.not_after <= now => (
                Status::Fail,
                format!("{file}: expired {}", day(f.not_after)),
            ),
            Ok(f) if f.not_after - now < EXPIRY_WARN_DAYS * 86_400 => (
                Status::Warn,
                format!(
                    "{file}: expires {} (in under {EXPIRY_WARN_DAYS} days)",
                    day(f.not_after)
                ),
            ),
            Ok(f) => (
                Status::Pass,
                format!("{file}: version 3, valid until {}", day(f.not_after)),
            ),
        };
        checks.add(key, status, detail);
    }
    let key = t.server_key_file.trim();
    if key.is_empty() {
        checks.add("worker.rpc_tls.server_key_file", Status::Fail, "not set");
    } else {
        let (status, detail) = private_file(Path::new(key));
        checks.add("worker.rpc_tls.server_key_file", status, detail);
    }
    if t.client_ca_file.trim().is_empty() {
        checks.add(
            "worker.rpc_tls.client_ca_file",
            Status::Warn,
            "not set: the worker does not ask the control plane for a client certificate (TLS, not mTLS)",
        );
    }
}

fn day(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .map_or_else(|| unix.to_string(), |t| t.format("%Y-%m-%d").to_string())
}

fn is_loopback(addr: &str) -> bool {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The control plane answers `/api/v1/health`; the worker's RPC address is either free to
/// bind or already served (by this worker, presumably).
async fn reachability(checks: &mut Checks, c: &Config, timeout: Duration) {
    let url = c.worker.control_plane_url.trim().trim_end_matches('/');
    if url.is_empty() {
        checks.add(
            "control plane",
            Status::Fail,
            "worker.control_plane_url is not set",
        );
    } else {
        let client = reqwest::Client::builder().timeout(timeout).build();
        let answer = match client {
            Ok(cl) => cl.get(format!("{url}/api/v1/health")).send().await,
            Err(e) => {
                checks.add("control plane", Status::Fail, e.to_string());
                return;
            }
        };
        match answer {
            // 401 still proves it is a StacyVM control plane that is up (health needs the API
            // key when keys are set).
            Ok(r) if r.status().is_success() || r.status() == reqwest::StatusCode::UNAUTHORIZED => {
                checks.add(
                    "control plane",
                    Status::Pass,
                    format!("{url} answers ({})", r.status()),
                )
            }
            Ok(r) => checks.add(
                "control plane",
                Status::Fail,
                format!("{url} answered {}", r.status()),
            ),
            Err(e) => checks.add(
                "control plane",
                Status::Fail,
                format!("{url} unreachable: {e}"),
            ),
        }
    }
    let listen = c.worker.listen_addr.trim();
    if listen.is_empty() {
        checks.add(
            "worker rpc",
            Status::Warn,
            "worker.listen_addr is empty: the control plane cannot reach this worker (no remote sandboxes)",
        );
        return;
    }
    let connect = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(listen)).await;
    match connect {
        Ok(Ok(_)) => checks.add(
            "worker rpc",
            Status::Pass,
            format!("{listen}: something is serving it (the worker)"),
        ),
        _ => match std::net::TcpListener::bind(listen) {
            Ok(_) => checks.add(
                "worker rpc",
                Status::Pass,
                format!("{listen}: free to bind (worker not running)"),
            ),
            Err(e) => checks.add(
                "worker rpc",
                Status::Fail,
                format!("{listen}: cannot be served: {e}"),
            ),
        },
    }
}
