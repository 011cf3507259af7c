//! Worker settings: the `worker.*` / `auth.*` config keys (wire-reference §11) with the
//! `stacyvm worker` flags (§12) layered on top, checked into a [`WorkerConfig`].

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use stacyvm_auth::{Secret, Verifier};
use stacyvm_config::ValidConfig;
use stacyvm_provider::ProviderRegistry;
use stacyvm_types::parse_go_duration;

/// Bootstrap-issued tokens live this long unless `--bootstrap-token-ttl` says otherwise.
const DEFAULT_BOOTSTRAP_TTL: Duration = Duration::from_secs(5 * 60);
/// The control plane refuses worker tokens that live longer than this.
const MAX_TOKEN_TTL: Duration = Duration::from_secs(15 * 60);

/// `stacyvm worker` flags. `None` = not given (the config value applies).
#[derive(Clone, Default)]
pub struct WorkerOverrides {
    pub id: Option<String>,
    pub control_plane: Option<String>,
    pub worker_token: Option<String>,
    pub worker_token_file: Option<PathBuf>,
    pub worker_signing_key_file: Option<PathBuf>,
    pub bootstrap_admin_key: Option<String>,
    pub bootstrap_admin_key_file: Option<PathBuf>,
    /// Go duration text.
    pub bootstrap_token_ttl: Option<String>,
    /// Go duration text.
    pub heartbeat_interval: Option<String>,
    pub listen: Option<String>,
    pub preview_domain: Option<String>,
    pub once: bool,
}

impl fmt::Debug for WorkerOverrides {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerOverrides")
            .field("id", &self.id)
            .field("control_plane", &self.control_plane)
            .field(
                "worker_token",
                &self.worker_token.as_ref().map(|_| "<redacted>"),
            )
            .field("worker_token_file", &self.worker_token_file)
            .field("worker_signing_key_file", &self.worker_signing_key_file)
            .field(
                "bootstrap_admin_key",
                &self.bootstrap_admin_key.as_ref().map(|_| "<redacted>"),
            )
            .field("bootstrap_admin_key_file", &self.bootstrap_admin_key_file)
            .field("bootstrap_token_ttl", &self.bootstrap_token_ttl)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("listen", &self.listen)
            .field("preview_domain", &self.preview_domain)
            .field("once", &self.once)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerConfigError {
    #[error("invalid {key}: {reason}")]
    Invalid { key: &'static str, reason: String },
    #[error("--worker-token-file conflicts with an explicit --worker-token; give one of them")]
    TokenConflict,
    #[error("--bootstrap-admin-key conflicts with --bootstrap-admin-key-file; give one of them")]
    BootstrapKeyConflict,
    #[error("cannot read {flag} {}", path.display())]
    ReadFile {
        flag: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{flag} {} is empty", path.display())]
    EmptyFile { flag: &'static str, path: PathBuf },
}

fn invalid(key: &'static str, reason: impl Into<String>) -> WorkerConfigError {
    WorkerConfigError::Invalid {
        key,
        reason: reason.into(),
    }
}

/// How the worker proves its identity to the control plane (wire-reference §8.3, in order).
#[derive(Clone)]
pub(crate) enum Credential {
    /// Re-read on every request, so the file can be rotated underneath a running worker.
    TokenFile(PathBuf),
    /// A fresh token from `POST /api/v1/admin/worker-tokens` per request.
    Bootstrap {
        admin_key: String,
        ttl: Duration,
    },
    Static(String),
    /// Self-minted `worker:control-plane` token per request, signed with the verifier's
    /// current primary key (a key file is re-read when rotated).
    Signed(Verifier),
    Missing,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::TokenFile(p) => write!(f, "TokenFile({})", p.display()),
            Credential::Bootstrap { ttl, .. } => write!(f, "Bootstrap(ttl {ttl:?})"),
            Credential::Static(_) => f.write_str("Static(<redacted>)"),
            Credential::Signed(_) => f.write_str("Signed(<redacted>)"),
            Credential::Missing => f.write_str("Missing"),
        }
    }
}

/// The worker's RPC TLS files (`worker.rpc_tls.*`, worker side).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Set ⇒ clients must present a certificate issued by this CA.
    pub client_ca: Option<PathBuf>,
}

/// Everything `run` needs, checked. Build it with [`WorkerConfig::from_config`].
#[derive(Clone)]
pub struct WorkerConfig {
    pub(crate) id: String,
    pub(crate) hostname: String,
    /// No trailing slash.
    pub(crate) control_plane_url: String,
    pub(crate) listen_addr: Option<String>,
    pub(crate) preview_domain: String,
    pub(crate) heartbeat_interval: Duration,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) once: bool,
    pub(crate) credential: Credential,
    /// The token `/rpc` callers may present besides signed ones: the token file or the static
    /// token (the one this worker heartbeats with).
    pub(crate) rpc_token_file: Option<PathBuf>,
    pub(crate) rpc_token: Option<String>,
    /// Verifies signed `worker:rpc` tokens (and signs the self-minted ones): the key file's
    /// current content first, if one is given, then the inline keys; the revoked token ids.
    pub(crate) verifier: Verifier,
    pub(crate) tls: Option<TlsFiles>,
    /// PEM of `worker.rpc_tls.ca_file`: CAs trusted for an `https` control plane.
    pub(crate) control_plane_ca: Option<Vec<u8>>,
    pub(crate) max_sandboxes: i64,
    pub(crate) max_sandboxes_per_owner: i64,
    /// `server.max_exec_output`: the same cap on collected output as the control plane's.
    pub(crate) max_exec_output: usize,
    /// `server.preview_unisolated`: previews of sandboxes on providers without isolation
    /// (mock), whose ports are this host's own.
    pub(crate) preview_unisolated: bool,
    /// Built from the config by `run` unless injected with [`WorkerConfig::with_providers`].
    pub(crate) source: ValidConfig,
    pub(crate) providers: Option<ProviderRegistry>,
}

impl fmt::Debug for WorkerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerConfig")
            .field("id", &self.id)
            .field("control_plane_url", &self.control_plane_url)
            .field("listen_addr", &self.listen_addr)
            .field("preview_domain", &self.preview_domain)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("once", &self.once)
            .field("credential", &self.credential)
            .field("verifier", &self.verifier)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

impl WorkerConfig {
    /// Applies the flags over the validated config file and checks the result.
    pub fn from_config(
        cfg: &ValidConfig,
        flags: WorkerOverrides,
    ) -> Result<WorkerConfig, WorkerConfigError> {
        let hostname = hostname();
        let id = pick(flags.id, cfg.worker_id())
            .unwrap_or_else(|| hostname.clone())
            .trim()
            .to_string();
        if id.is_empty() {
            return Err(invalid("worker id", "empty (set worker.id or --id)"));
        }
        let control_plane_url = pick(flags.control_plane, Some(&cfg.worker.control_plane_url))
            .unwrap_or_default()
            .trim()
            .trim_end_matches('/')
            .to_string();
        check_http_url(&control_plane_url)
            .map_err(|r| invalid("control plane url (--control-plane)", r))?;
        let listen_addr = pick(flags.listen, Some(&cfg.worker.listen_addr))
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty());
        if let Some(addr) = &listen_addr {
            check_listen(addr).map_err(|r| invalid("listen address (--listen)", r))?;
        }
        let preview_domain = pick(flags.preview_domain, Some(cfg.worker_preview_domain()))
            .unwrap_or_default()
            .trim()
            .to_string();
        let heartbeat_interval = match flags.heartbeat_interval {
            Some(s) => duration("--heartbeat-interval", &s)?,
            None => cfg.heartbeat_interval(),
        };
        if heartbeat_interval.is_zero() {
            return Err(invalid("heartbeat interval", "must be positive"));
        }
        let bootstrap_ttl = match flags.bootstrap_token_ttl {
            Some(s) => duration("--bootstrap-token-ttl", &s)?,
            None => DEFAULT_BOOTSTRAP_TTL,
        };
        if bootstrap_ttl < Duration::from_secs(1) || bootstrap_ttl > MAX_TOKEN_TTL {
            return Err(invalid(
                "--bootstrap-token-ttl",
                "must be between 1s and 15m0s",
            ));
        }

        let flag_token = flags.worker_token.filter(|t| !t.trim().is_empty());
        if flag_token.is_some() && flags.worker_token_file.is_some() {
            return Err(WorkerConfigError::TokenConflict);
        }
        let static_token = flag_token
            .or_else(|| cfg.worker_token().map(str::to_string))
            .map(|t| t.trim().to_string());
        let token_file = flags.worker_token_file;
        if let Some(path) = &token_file {
            // Checked now so a typo fails at startup; read again on every request later.
            read_secret("--worker-token-file", path)?;
        }
        let admin_key = match (
            flags.bootstrap_admin_key.filter(|k| !k.trim().is_empty()),
            flags.bootstrap_admin_key_file,
        ) {
            (Some(_), Some(_)) => return Err(WorkerConfigError::BootstrapKeyConflict),
            (Some(k), None) => Some(k.trim().to_string()),
            (None, Some(p)) => Some(read_secret("--bootstrap-admin-key-file", &p)?),
            (None, None) => None,
        };
        // A primary key from a file (the flag, else `auth.worker_signing_key_file`) is re-read
        // when it changes; it is read once here only so a bad file stops the start.
        let (signing_key_file, signing_keys) = match (
            &flags.worker_signing_key_file,
            cfg.secret_file("auth.worker_signing_key"),
        ) {
            (Some(path), _) => {
                read_secret("--worker-signing-key-file", path)?;
                (Some(path.clone()), cfg.worker_signing_keys())
            }
            (None, Some(path)) => (
                Some(path.to_path_buf()),
                cfg.auth.worker_signing_keys.clone(),
            ),
            (None, None) => (None, cfg.worker_signing_keys()),
        };
        let mut verifier = Verifier::new(signing_keys, cfg.auth.worker_revoked_token_ids.clone());
        if let Some(path) = &signing_key_file {
            verifier = verifier.with_key_file(Secret::file(path));
        }
        let credential = if let Some(path) = &token_file {
            Credential::TokenFile(path.clone())
        } else if let Some(admin_key) = admin_key {
            Credential::Bootstrap {
                admin_key,
                ttl: bootstrap_ttl,
            }
        } else if let Some(t) = &static_token {
            Credential::Static(t.clone())
        } else if !verifier.is_empty() {
            Credential::Signed(verifier.clone())
        } else {
            Credential::Missing
        };

        let t = &cfg.worker.rpc_tls;
        let tls = (t.enabled && listen_addr.is_some())
            .then(|| {
                let cert = t.server_cert_file.trim();
                let key = t.server_key_file.trim();
                if cert.is_empty() || key.is_empty() {
                    return Err(invalid(
                        "worker.rpc_tls",
                        "server_cert_file and server_key_file are required when listening with TLS",
                    ));
                }
                let ca = t.client_ca_file.trim();
                Ok(TlsFiles {
                    cert: cert.into(),
                    key: key.into(),
                    client_ca: (!ca.is_empty()).then(|| ca.into()),
                })
            })
            .transpose()?;

        let ca_file = t.ca_file.trim();
        let control_plane_ca = if ca_file.is_empty() {
            None
        } else {
            let path = PathBuf::from(ca_file);
            let pem = std::fs::read(&path).map_err(|source| WorkerConfigError::ReadFile {
                flag: "worker.rpc_tls.ca_file",
                path,
                source,
            })?;
            Some(pem)
        };

        Ok(WorkerConfig {
            id,
            hostname,
            control_plane_url,
            listen_addr,
            preview_domain,
            heartbeat_interval,
            shutdown_timeout: cfg.worker_shutdown_timeout(),
            once: flags.once,
            credential,
            rpc_token_file: token_file,
            rpc_token: static_token,
            verifier,
            tls,
            control_plane_ca,
            max_sandboxes: cfg.defaults.max_sandboxes,
            max_sandboxes_per_owner: cfg.defaults.max_sandboxes_per_owner,
            max_exec_output: cfg.max_exec_output(),
            preview_unisolated: cfg.server.preview_unisolated,
            source: cfg.clone(),
            providers: None,
        })
    }

    /// Runs these providers instead of the ones the config names (tests, embedding).
    pub fn with_providers(mut self, providers: ProviderRegistry) -> Self {
        self.providers = Some(providers);
        self
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn control_plane_url(&self) -> &str {
        &self.control_plane_url
    }

    pub fn listen_addr(&self) -> Option<&str> {
        self.listen_addr.as_deref()
    }

    pub fn heartbeat_interval(&self) -> Duration {
        self.heartbeat_interval
    }

    pub fn shutdown_timeout(&self) -> Duration {
        self.shutdown_timeout
    }

    /// Scheme of the advertised `rpc_url`.
    pub(crate) fn rpc_scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }
}

/// The flag when given, else the config value when non-blank.
fn pick(flag: Option<String>, config: Option<&str>) -> Option<String> {
    flag.filter(|s| !s.trim().is_empty())
        .or_else(|| config.filter(|s| !s.trim().is_empty()).map(str::to_string))
}

fn duration(key: &'static str, text: &str) -> Result<Duration, WorkerConfigError> {
    let d = parse_go_duration(text.trim()).map_err(|e| invalid(key, e.to_string()))?;
    d.to_std()
        .ok_or_else(|| invalid(key, "must not be negative"))
}

fn read_secret(flag: &'static str, path: &Path) -> Result<String, WorkerConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| WorkerConfigError::ReadFile {
        flag,
        path: path.to_path_buf(),
        source,
    })?;
    let text = text.trim();
    if text.is_empty() {
        return Err(WorkerConfigError::EmptyFile {
            flag,
            path: path.to_path_buf(),
        });
    }
    Ok(text.to_string())
}

fn check_http_url(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("{url:?}: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(format!("{url:?} is not an http(s) URL with a host"));
    }
    Ok(())
}

/// `host:port` or `[v6]:port` with a numeric port (0 = pick a free port).
fn check_listen(addr: &str) -> Result<(), String> {
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| format!("{addr:?} is not host:port"))?;
    port.parse::<u16>()
        .map_err(|_| format!("{addr:?} has no valid port"))?;
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err(format!("{addr:?}: bracket IPv6 hosts ([::1]:7430)"));
    }
    Ok(())
}

/// The OS hostname (worker id fallback and heartbeat `hostname`).
pub(crate) fn hostname() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_string())
        .find(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use stacyvm_config::Config;

    use super::*;

    fn valid(yaml: &str) -> ValidConfig {
        Config::from_yaml_str(yaml).unwrap().validate().unwrap()
    }

    const STAGING: &str = r#"
worker:
  id: "worker-a"
  control_plane_url: "http://127.0.0.1:7423"
  listen_addr: "127.0.0.1:7430"
  preview_domain: "localhost"
  heartbeat_interval: "2s"
providers:
  default: "mock"
  mock:
    enabled: true
  docker:
    enabled: false
  firecracker:
    enabled: false
auth:
  worker_token: "dev-worker-a-token-dev-worker-a-token"
"#;

    #[test]
    fn staging_guide_config() {
        let c = WorkerConfig::from_config(&valid(STAGING), WorkerOverrides::default()).unwrap();
        assert_eq!(c.id, "worker-a");
        assert_eq!(c.control_plane_url, "http://127.0.0.1:7423");
        assert_eq!(c.listen_addr.as_deref(), Some("127.0.0.1:7430"));
        assert_eq!(c.heartbeat_interval, Duration::from_secs(2));
        assert_eq!(c.preview_domain, "localhost");
        assert!(matches!(&c.credential, Credential::Static(t) if t.starts_with("dev-worker-a")));
        assert_eq!(c.rpc_scheme(), "http");
    }

    #[test]
    fn flags_override_config() {
        let flags = WorkerOverrides {
            id: Some("w2".into()),
            control_plane: Some("https://cp.example:8443/".into()),
            listen: Some("[::1]:0".into()),
            heartbeat_interval: Some("750ms".into()),
            preview_domain: Some("preview.example".into()),
            ..Default::default()
        };
        let c = WorkerConfig::from_config(&valid(STAGING), flags).unwrap();
        assert_eq!(c.id, "w2");
        assert_eq!(c.control_plane_url, "https://cp.example:8443");
        assert_eq!(c.listen_addr.as_deref(), Some("[::1]:0"));
        assert_eq!(c.heartbeat_interval, Duration::from_millis(750));
        assert_eq!(c.preview_domain, "preview.example");
    }

    #[test]
    fn bad_flags_are_rejected() {
        let cfg = valid(STAGING);
        let cases = [
            WorkerOverrides {
                control_plane: Some("ftp://x".into()),
                ..Default::default()
            },
            WorkerOverrides {
                listen: Some("127.0.0.1".into()),
                ..Default::default()
            },
            WorkerOverrides {
                heartbeat_interval: Some("0s".into()),
                ..Default::default()
            },
            WorkerOverrides {
                bootstrap_token_ttl: Some("1h".into()),
                ..Default::default()
            },
            WorkerOverrides {
                worker_token: Some("a".into()),
                worker_token_file: Some("/nonexistent".into()),
                ..Default::default()
            },
            WorkerOverrides {
                worker_token_file: Some("/nonexistent/token".into()),
                ..Default::default()
            },
        ];
        for flags in cases {
            let dbg = format!("{flags:?}");
            assert!(
                WorkerConfig::from_config(&cfg, flags).is_err(),
                "accepted {dbg}"
            );
        }
    }

    #[test]
    fn credential_precedence() {
        let dir = tempfile::tempdir().unwrap();
        let tok = dir.path().join("tok");
        std::fs::write(&tok, "file-token\n").unwrap();
        let yaml = "auth:\n  worker_token: static\n  worker_signing_key: k0123456789012345678901234567890\n";
        let cfg = valid(yaml);
        let c = |f: WorkerOverrides| WorkerConfig::from_config(&cfg, f).unwrap().credential;
        assert!(matches!(
            c(WorkerOverrides {
                worker_token_file: Some(tok.clone()),
                bootstrap_admin_key: Some("adm".into()),
                ..Default::default()
            }),
            Credential::TokenFile(_)
        ));
        assert!(matches!(
            c(WorkerOverrides {
                bootstrap_admin_key: Some("adm".into()),
                ..Default::default()
            }),
            Credential::Bootstrap { .. }
        ));
        assert!(matches!(c(WorkerOverrides::default()), Credential::Static(t) if t == "static"));
        let only_key = valid("auth:\n  worker_signing_key: k0123456789012345678901234567890\n");
        let c2 = WorkerConfig::from_config(&only_key, WorkerOverrides::default()).unwrap();
        assert!(matches!(c2.credential, Credential::Signed(_)));
        let none = WorkerConfig::from_config(&valid(""), WorkerOverrides::default()).unwrap();
        assert!(matches!(none.credential, Credential::Missing));
    }

    /// A signing key given as a file (flag or `auth.worker_signing_key_file`) is re-read when
    /// it changes: `/rpc` accepts tokens under the new key and refuses the old one, and the
    /// self-minted control-plane tokens switch keys; inline rotation keys stay accepted.
    #[test]
    fn signing_key_file_is_reread_on_change() {
        use axum::http::{HeaderMap, HeaderValue};
        use stacyvm_auth::{mint, AUD_CONTROL_PLANE, AUD_RPC};

        let one = "signing-key-one-signing-key-one-signing-key-one";
        let two = "signing-key-two-signing-key-two-signing-key-two-2";
        let rot = "rotation-key-rotation-key-rotation-key-rotation";
        for via_flag in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("signing-key");
            std::fs::write(&path, format!("{one}\n")).unwrap();
            let (cfg, flags) = if via_flag {
                let flags = WorkerOverrides {
                    worker_signing_key_file: Some(path.clone()),
                    ..Default::default()
                };
                (
                    valid(&format!("auth:\n  worker_signing_keys: [{rot}]\n")),
                    flags,
                )
            } else {
                let yaml = format!(
                    "auth:\n  worker_signing_key_file: {}\n  worker_signing_keys: [{rot}]\n",
                    path.display()
                );
                (valid(&yaml), WorkerOverrides::default())
            };
            let c = WorkerConfig::from_config(&cfg, flags).unwrap();
            let rpc = crate::auth::RpcAuth::new(&c);
            let now = crate::auth::now_unix();
            let accepts = |key: &str| {
                let (token, _) =
                    mint(key, &c.id, AUD_RPC, Duration::from_secs(60), &[], now).unwrap();
                let mut h = HeaderMap::new();
                h.insert("x-worker-id", HeaderValue::from_str(&c.id).unwrap());
                h.insert("x-worker-token", HeaderValue::from_str(&token).unwrap());
                rpc.check(&h).is_ok()
            };
            let Credential::Signed(keys) = &c.credential else {
                panic!("signed credential expected: {:?}", c.credential);
            };
            let minted_with = |key: &str| {
                let t = crate::auth::mint_control_plane_token(keys, &c.id).unwrap();
                Verifier::new(vec![key.into()], vec![])
                    .verify(&t, AUD_CONTROL_PLANE, now)
                    .is_ok()
            };
            assert!(
                accepts(one) && accepts(rot) && !accepts(two),
                "flag {via_flag}"
            );
            assert!(minted_with(one) && !minted_with(two), "flag {via_flag}");

            // A different length, so the change is seen whatever the mtime granularity.
            std::fs::write(&path, two).unwrap();
            assert!(
                accepts(two) && accepts(rot) && !accepts(one),
                "flag {via_flag}"
            );
            assert!(minted_with(two) && !minted_with(one), "flag {via_flag}");
        }
    }

    #[test]
    fn tls_files_only_when_listening() {
        let yaml = "worker:\n  listen_addr: 127.0.0.1:0\n  rpc_tls:\n    enabled: true\n    server_cert_file: /c.pem\n    server_key_file: /k.pem\n    client_ca_file: /ca.pem\n";
        let c = WorkerConfig::from_config(&valid(yaml), WorkerOverrides::default()).unwrap();
        let tls = c.tls.clone().unwrap();
        assert_eq!(tls.client_ca.as_deref(), Some(Path::new("/ca.pem")));
        assert_eq!(c.rpc_scheme(), "https");
    }
}
