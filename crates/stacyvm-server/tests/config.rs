//! Config loading, env overrides, secrets and validation through the public API.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use stacyvm_server::config::{
    Config, ConfigError, CorsOrigins, DatabaseTarget, LogFormat, LogLevel, Overflow,
    ProviderChoice, RateLimitKey, Sources, ValidConfig,
};
use stacyvm_types::GoDuration;

// Verbatim from reference/remote-worker-staging.md.
const STAGING_CONTROL_PLANE: &str = r#"server:
  host: "127.0.0.1"
  port: 7423

providers:
  default: "mock"
  mock:
    enabled: true
  docker:
    enabled: false
  firecracker:
    enabled: false

auth:
  api_key: "dev-api-key-dev-api-key-dev-api-key"
  admin_api_key: "dev-admin-key-dev-admin-key-dev"
  worker_token: "dev-worker-token-dev-worker-token"
  worker_tokens:
    worker-a: "dev-worker-a-token-dev-worker-a-token"
  admin_fallback_enabled: false

database:
  driver: "sqlite"
  path: "/tmp/stacyvm-remote-worker-staging.db"
"#;

// Verbatim from reference/remote-worker-staging.md.
const STAGING_WORKER: &str = r#"worker:
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

fn valid(yaml: &str) -> ValidConfig {
    Config::from_yaml_str(yaml).unwrap().validate().unwrap()
}

fn invalid_key(yaml: &str) -> String {
    let err = Config::from_yaml_str(yaml)
        .and_then(Config::validate)
        .expect_err(yaml);
    err.key()
        .unwrap_or_else(|| panic!("no key in {err}"))
        .to_string()
}

fn secs(n: i64) -> GoDuration {
    GoDuration::from_secs(n)
}

#[test]
fn staging_control_plane_yaml_loads_and_validates() {
    let c = valid(STAGING_CONTROL_PLANE);
    assert_eq!(c.listen_addr(), "127.0.0.1:7423");
    assert_eq!(c.provider_default(), ProviderChoice::Mock);
    assert!(c.providers.mock.enabled);
    assert!(!c.providers.docker.enabled);
    assert!(c.wants_provider(ProviderChoice::Mock));
    assert!(!c.wants_provider(ProviderChoice::Docker));
    assert_eq!(c.auth.api_key, "dev-api-key-dev-api-key-dev-api-key");
    assert_eq!(
        c.effective_admin_key(),
        Some("dev-admin-key-dev-admin-key-dev")
    );
    assert_eq!(c.worker_token(), Some("dev-worker-token-dev-worker-token"));
    assert_eq!(
        c.auth.worker_tokens.get("worker-a").map(String::as_str),
        Some("dev-worker-a-token-dev-worker-a-token")
    );
    assert!(!c.auth.admin_fallback_enabled);
    assert!(c.api_auth_enabled());
    assert_eq!(
        c.database(),
        &DatabaseTarget::Sqlite {
            path: "/tmp/stacyvm-remote-worker-staging.db".into()
        }
    );
    assert!(c.warnings().is_empty(), "{:?}", c.warnings());
}

#[test]
fn staging_worker_yaml_loads_and_validates() {
    let c = valid(STAGING_WORKER);
    assert_eq!(c.worker_id(), Some("worker-a"));
    assert_eq!(c.worker.control_plane_url, "http://127.0.0.1:7423");
    assert_eq!(c.worker_rpc_url().as_deref(), Some("http://127.0.0.1:7430"));
    assert_eq!(c.worker_preview_domain(), "localhost");
    assert_eq!(c.heartbeat_interval(), Duration::from_secs(2));
    assert_eq!(c.worker_stale_after(), Duration::from_secs(6));
    assert_eq!(
        c.worker_token(),
        Some("dev-worker-a-token-dev-worker-a-token")
    );
    assert!(c.warnings().is_empty(), "{:?}", c.warnings());
}

#[test]
fn staging_files_load_through_stacyvm_config() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("control-plane.yaml"), STAGING_CONTROL_PLANE).unwrap();
    // A ./stacyvm.yaml must lose against the explicit file.
    std::fs::write(dir.path().join("stacyvm.yaml"), "server:\n  port: 1\n").unwrap();
    let sources = Sources::new(dir.path(), [("STACYVM_CONFIG", "control-plane.yaml")]);
    let c = Config::load_from(&sources).unwrap().validate().unwrap();
    assert_eq!(c.server.port, 7423);
    assert_eq!(
        c.source_path(),
        Some(dir.path().join("control-plane.yaml").as_path())
    );
}

#[test]
fn defaults_match_the_reference_with_our_changes() {
    let c = Config::default().validate().unwrap();
    assert!(c.warnings().is_empty(), "{:?}", c.warnings());
    assert_eq!(c.listen_addr(), "0.0.0.0:7423");
    assert_eq!(c.server.preview_domain, "localhost");
    assert_eq!(c.cors(), &CorsOrigins::Any);
    assert_eq!(c.provider_default(), ProviderChoice::Auto);
    assert!(!c.providers.docker.enabled);
    assert!(!c.providers.firecracker.enabled);
    assert!(!c.providers.mock.enabled);
    assert_eq!(c.providers.docker.runtime, "runc");
    assert_eq!(c.docker_memory_bytes(), Some(512 * 1024 * 1024));
    assert_eq!(c.providers.docker.dropped_caps, vec!["ALL".to_string()]);
    assert!(c.providers.docker.pool_security.workspace_permissions);
    let m = &c.providers.microvm;
    assert_eq!(
        (
            m.enabled,
            m.qemu_path.as_str(),
            m.accel.as_str(),
            m.warm_pool
        ),
        (false, "qemu-system-x86_64", "auto", 0)
    );
    assert_eq!(m.network_mode, "none");
    assert_eq!(c.default_ttl(), secs(1800));
    assert_eq!(c.default_ttl().to_string(), "30m0s");
    assert_eq!(c.max_ttl(), Some(secs(86400)));
    assert_eq!(c.default_exec_timeout(), None);
    assert_eq!(c.max_exec_timeout(), Some(secs(600)));
    assert_eq!(c.defaults.memory_mb, 1024);
    assert_eq!(
        (c.max_sandboxes(), c.max_sandboxes_per_owner()),
        (None, None)
    );
    assert_eq!(c.spawn_overflow(), Overflow::Reject);
    assert_eq!(c.spawn_queue_timeout(), Duration::from_secs(30));
    assert_eq!(c.max_spawn_queue(), 100);
    assert!(c.auth.admin_fallback_enabled);
    assert_eq!(c.auth.oidc_groups_claim, "groups");
    assert_eq!(c.auth.oidc_tenant_claim, "tenant_id");
    assert!(!c.api_auth_enabled());
    assert_eq!(c.effective_admin_key(), None);
    let r = &c.rate_limit;
    assert_eq!(
        (r.enabled, r.requests_per_minute, r.burst),
        (false, 120, 60)
    );
    assert_eq!(c.rate_limit_key(), RateLimitKey::Owner);
    assert_eq!((r.bucket_ttl, r.cleanup_interval), (secs(900), secs(60)));
    assert_eq!(
        c.database(),
        &DatabaseTarget::Sqlite {
            path: "stacyvm.db".into()
        }
    );
    assert_eq!(
        (c.log_level(), c.log_format()),
        (LogLevel::Info, LogFormat::Json)
    );
    assert_eq!(c.worker.control_plane_url, "http://localhost:7423");
    assert_eq!(c.worker_rpc_url(), None);
    assert_eq!(c.heartbeat_interval(), Duration::from_secs(30));
    assert_eq!(c.worker_stale_after(), Duration::from_secs(90));
    assert_eq!(c.worker_shutdown_timeout(), Duration::from_secs(10));
    assert_eq!(c.reconcile_interval(), Duration::from_secs(30));
    assert_eq!(c.server_shutdown_timeout(), Duration::from_secs(30));
    assert_eq!(c.max_body_bytes(), 64 * 1024 * 1024);
    assert_eq!(
        (c.pool.max_vms, c.pool.memory_mb, c.pool.overflow.as_str()),
        (10, 2048, "reject")
    );
    assert_eq!(c.worker_id(), None);
    assert_eq!(c.worker_preview_domain(), "localhost");
    assert_eq!(c.source_path(), None);
}

/// Every key of §11 (plus ours) set to a non-default value.
const EVERY_KEY: &str = r#"
server:
  {host: "::1", port: 8080, preview_domain: preview.example.com, reconcile_interval: 45s,
   cors_allowed_origins: ["https://app.example.com", "http://localhost:3000"],
   max_body_bytes: 1048576, shutdown_timeout: 5s}
worker:
  {id: w1, control_plane_url: https://cp.example.com, listen_addr: 0.0.0.0:7430,
   preview_domain: w1.example.com, heartbeat_interval: 5s, shutdown_timeout: 20s,
   stale_after_intervals: 4, rpc_tls:
     {enabled: true, server_cert_file: /tls/server.crt, server_key_file: /tls/server.key,
      client_ca_file: /tls/clients.pem, ca_file: /tls/ca.pem, client_cert_file: /tls/client.crt,
      client_key_file: /tls/client.key, server_name: worker.internal, insecure_skip_verify: true}}
providers:
  default: docker
  mock: {enabled: true}
  firecracker:
    {enabled: true, firecracker_path: /opt/fc, kernel_path: /opt/vmlinux,
     default_rootfs: /opt/rootfs.ext4, agent_path: /opt/agent, data_dir: /opt/data}
  docker:
    {enabled: true, socket: "unix:///run/docker.sock", runtime: runsc,
     default_image: "ubuntu:24.04", network_mode: none, seccomp_profile: /etc/seccomp.json,
     read_only_rootfs: true, memory: 1g, cpus: 2.5, pids_limit: 128, user: "1000:1000",
     dropped_caps: [NET_RAW], added_caps: [CHOWN], tmpfs: {/tmp: "rw,size=64m"},
     pool_security:
       {per_user_uid: true, pid_namespace: true, workspace_permissions: false, hidepid: true}}
  e2b: {enabled: true, api_key: e2b-secret, base_url: "https://e2b.example.com"}
  custom:
    {enabled: true, name: mine, base_url: "https://custom.example.com", api_key: custom-secret,
     timeout: 2m}
  proot:
    {enabled: true, rootfs_path: /r, proot_binary: /usr/bin/proot, workspace_base: /w,
     default_timeout: 90s, max_sandboxes: 3, max_memory_mb: 256, max_disk_mb: 2048,
     languages: [ruby]}
  microvm:
    {enabled: true, qemu_path: /usr/bin/qemu-system-x86_64, kernel_path: /vm/vmlinux,
     initrd_path: /vm/initrd.img, data_dir: /vm/data, accel: tcg, warm_pool: 2,
     network_mode: user}
defaults:
  {ttl: 1h, image: "python:3.12", memory_mb: 2048, vcpus: 2, disk_size_mb: 4096, pool_size: 3,
   pool_template: py, max_ttl: 48h, default_exec_timeout: 30s, max_exec_timeout: 20m,
   max_sandboxes: 50, max_sandboxes_per_owner: 5, spawn_overflow: queue,
   spawn_queue_timeout: 1m, max_spawn_queue: 10}
auth:
  {api_key: api-secret, admin_api_key: admin-secret, admin_fallback_enabled: false,
   worker_token: shared-secret, worker_token_file: /secrets/worker-token,
   worker_tokens: {w1: w1-secret}, worker_signing_key: signing-secret,
   worker_signing_key_file: /secrets/signing-key, worker_signing_keys: [old-signing-secret],
   worker_revoked_token_ids: [abc123], admin_audit_retention: 720h,
   oidc_issuer: "https://idp.example.com", oidc_audience: stacyvm,
   oidc_jwks_url: "https://idp.example.com/jwks", oidc_public_key: oidc-key,
   oidc_public_key_file: /secrets/oidc.pem, oidc_groups_claim: roles, oidc_tenant_claim: org,
   oidc_admin_groups: [admins], oidc_operator_groups: [ops], oidc_viewer_groups: [viewers],
   enabled: true, oidc_enabled: true}
rate_limit:
  {enabled: true, requests_per_minute: 600, burst: 100, key_by: ip, bucket_ttl: 30m,
   cleanup_interval: 2m}
database: {driver: postgres, path: other.db, dsn: "postgres://stacy:pg-secret@db/stacyvm"}
logging: {level: debug, format: pretty}
pool:
  {enabled: true, max_vms: 20, max_users_per_vm: 8, image: "debian:12", memory_mb: 4096,
   vcpus: 4, overflow: queue}
"#;

#[test]
fn every_key_parses() {
    let c = Config::from_yaml_str(EVERY_KEY).unwrap();
    let got = serde_yaml::to_value(&c).unwrap();
    let def = serde_yaml::to_value(Config::default()).unwrap();
    let keys = Config::keys();
    assert_eq!(
        keys.len(),
        130,
        "schema size changed: update this test and docs"
    );
    for (key, _) in &keys {
        let at = |v: &serde_yaml::Value| {
            key.split('.')
                .try_fold(v, |node, seg| node.get(seg))
                .cloned()
                .unwrap_or_else(|| panic!("{key} missing"))
        };
        assert_ne!(at(&got), at(&def), "{key} not set by the every-key YAML");
    }
    assert_eq!(c.defaults.ttl, secs(3600));
    assert_eq!(c.auth.admin_audit_retention, secs(720 * 3600));
    assert_eq!(c.providers.docker.cpus, 2.5);
    assert_eq!(c.providers.docker.tmpfs.get("/tmp").unwrap(), "rw,size=64m");
    assert_eq!(c.worker.rpc_tls.server_name, "worker.internal");
}

#[test]
fn key_list_covers_reference_section_11() {
    let keys: BTreeSet<String> = Config::keys().into_iter().map(|(k, _)| k).collect();
    let wanted = "
        server.host server.port server.preview_domain server.cors_allowed_origins worker.id
        worker.control_plane_url worker.listen_addr worker.preview_domain
        worker.heartbeat_interval worker.shutdown_timeout worker.rpc_tls.client_ca_file
        worker.rpc_tls.insecure_skip_verify providers.default providers.mock.enabled
        providers.firecracker.agent_path providers.docker.pool_security.hidepid
        providers.docker.tmpfs providers.e2b.base_url providers.custom.timeout
        providers.proot.languages defaults.pool_template defaults.max_spawn_queue
        auth.worker_tokens auth.worker_signing_keys auth.worker_revoked_token_ids
        auth.admin_audit_retention auth.oidc_public_key_file auth.oidc_viewer_groups
        auth.enabled auth.oidc_enabled rate_limit.cleanup_interval database.dsn logging.format
        pool.max_users_per_vm pool.overflow providers.microvm.initrd_path
        worker.stale_after_intervals server.reconcile_interval server.max_body_bytes
        server.shutdown_timeout
    ";
    for key in wanted.split_whitespace() {
        assert!(keys.contains(key), "{key} missing");
    }
}

#[test]
fn env_overrides_beat_file_and_defaults() {
    let yaml = "server:\n  port: 9000\n  host: 10.0.0.1\nauth:\n  worker_token: from-file\n";
    let env = [
        ("STACYVM_SERVER_PORT", "7500"),
        ("STACYVM_AUTH_WORKER_TOKEN", "from-env"),
        ("STACYVM_AUTH_WORKER_TOKENS", "w1=t1, w2 = t2"),
        ("STACYVM_DATABASE_DRIVER", "postgres"),
        ("STACYVM_DATABASE_DSN", "postgres://u:p@h/db"),
        (
            "STACYVM_SERVER_CORS_ALLOWED_ORIGINS",
            "https://a.example.com, http://b:81",
        ),
        ("STACYVM_PROVIDERS_MOCK_ENABLED", "1"),
        ("STACYVM_PROVIDERS_DOCKER_CPUS", "0.5"),
        ("STACYVM_DEFAULTS_TTL", "10m"),
        (
            "STACYVM_PROVIDERS_DOCKER_POOL_SECURITY_PER_USER_UID",
            "true",
        ),
        ("STACYVM_WORKER_RPC_TLS_SERVER_NAME", "w.internal"),
        ("STACYVM_LOGGING_LEVEL", ""),
        ("STACYVM_NOT_A_KEY", "ignored"),
        ("STACYVM_SERVER", "ignored too"),
    ];
    let c = Config::from_yaml_str_with_env(yaml, env)
        .unwrap()
        .validate()
        .unwrap();
    assert_eq!(c.listen_addr(), "10.0.0.1:7500");
    assert_eq!(c.worker_token(), Some("from-env"));
    assert_eq!(c.auth.worker_tokens.len(), 2);
    assert_eq!(c.auth.worker_tokens["w2"], "t2");
    assert_eq!(
        c.database(),
        &DatabaseTarget::Postgres {
            dsn: "postgres://u:p@h/db".into()
        }
    );
    assert_eq!(
        c.cors(),
        &CorsOrigins::List(vec!["https://a.example.com".into(), "http://b:81".into()])
    );
    assert!(c.providers.mock.enabled);
    assert_eq!(c.providers.docker.cpus, 0.5);
    assert_eq!(c.default_ttl(), secs(600));
    assert!(c.providers.docker.pool_security.per_user_uid);
    assert_eq!(c.worker.rpc_tls.server_name, "w.internal");
    assert_eq!(
        c.log_level(),
        LogLevel::Info,
        "empty env value counts as unset"
    );
}

#[test]
fn env_applies_without_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let sources = Sources::new(
        dir.path(),
        [("STACYVM_SERVER_PORT", "7999"), ("HOME", "/nonexistent")],
    );
    let c = Config::load_from(&sources).unwrap();
    assert_eq!(c.server.port, 7999);
    assert_eq!(c.source, None);
}

#[test]
fn bad_env_values_name_the_variable() {
    for (var, value) in [
        ("STACYVM_SERVER_PORT", "http"),
        ("STACYVM_PROVIDERS_MOCK_ENABLED", "yes please"),
        ("STACYVM_DEFAULTS_TTL", "5 minutes"),
        ("STACYVM_AUTH_WORKER_TOKENS", "no-equals-sign"),
        ("STACYVM_PROVIDERS_DOCKER_CPUS", "inf"),
    ] {
        let err = Config::from_yaml_str_with_env("", [(var, value)]).unwrap_err();
        match &err {
            ConfigError::Env { var: v, .. } => assert_eq!(v, var),
            other => panic!("{var}: expected an env error, got {other}"),
        }
        assert!(err.to_string().contains(var), "{err}");
    }
}

#[test]
fn lookup_order() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let cwd = dir.path().join("cwd");
    std::fs::create_dir_all(home.join(".stacyvm")).unwrap();
    std::fs::create_dir_all(&cwd).unwrap();
    let env = |extra: Option<&str>| {
        let mut e = vec![("HOME".to_string(), home.display().to_string())];
        if let Some(p) = extra {
            e.push(("STACYVM_CONFIG".to_string(), p.to_string()));
        }
        Sources::new(&cwd, e)
    };
    let port = |s: &Sources| Config::load_from(s).unwrap().server.port;

    assert_eq!(port(&env(None)), 7423, "no file: defaults");
    std::fs::write(home.join(".stacyvm/config.yaml"), "server: {port: 1001}").unwrap();
    assert_eq!(port(&env(None)), 1001, "home config");
    std::fs::write(cwd.join("stacyvm.yaml"), "server: {port: 1002}").unwrap();
    assert_eq!(port(&env(None)), 1002, "./stacyvm.yaml beats home");
    let explicit = dir.path().join("explicit.yaml");
    std::fs::write(&explicit, "server: {port: 1003}").unwrap();
    assert_eq!(port(&env(Some(explicit.to_str().unwrap()))), 1003);

    let err = Config::load_from(&env(Some("missing.yaml"))).unwrap_err();
    assert!(matches!(err, ConfigError::ExplicitFileMissing { .. }));
    assert!(err.to_string().contains("missing.yaml"), "{err}");
}

#[test]
fn unknown_keys_are_rejected_with_their_path() {
    for (yaml, key) in [
        ("server:\n  prot: 1\n", "server.prot"),
        ("sever:\n  port: 1\n", "sever"),
        (
            "worker:\n  rpc_tls:\n    enabeld: true\n",
            "worker.rpc_tls.enabeld",
        ),
        (
            "providers:\n  docker:\n    pool_security: {hidepid: true, typo: 1}\n",
            "providers.docker.pool_security.typo",
        ),
        ("providers:\n  qemu: {enabled: true}\n", "providers.qemu"),
    ] {
        let err = Config::from_yaml_str(yaml).unwrap_err();
        assert_eq!(err.key(), Some(key), "{yaml}: {err}");
        assert!(err.to_string().contains(key), "{err}");
    }
}

#[test]
fn durations() {
    let err = Config::from_yaml_str("defaults:\n  ttl: 5 minutes\n").unwrap_err();
    assert_eq!(err.key(), Some("defaults.ttl"), "{err}");
    let err = Config::from_yaml_str("rate_limit:\n  bucket_ttl: 30\n").unwrap_err();
    assert_eq!(err.key(), Some("rate_limit.bucket_ttl"), "{err}");
    assert!(err.to_string().contains("unit"), "{err}");
    let err = Config::from_yaml_str("defaults:\n  ttl: 1d\n").unwrap_err();
    assert_eq!(err.key(), Some("defaults.ttl"), "{err}");

    let c = valid(
        "defaults:\n  max_ttl: 0\n  default_exec_timeout: \"0\"\n  max_exec_timeout: 1h30m\n",
    );
    assert_eq!(c.max_ttl(), None);
    assert_eq!(c.default_exec_timeout(), None);
    assert_eq!(c.max_exec_timeout(), Some(secs(5400)));
    assert_eq!(c.defaults.max_exec_timeout.to_string(), "1h30m0s");

    assert_eq!(
        invalid_key("defaults:\n  max_ttl: -1s\n"),
        "defaults.max_ttl"
    );
    assert_eq!(
        invalid_key("auth:\n  admin_audit_retention: -5m\n"),
        "auth.admin_audit_retention"
    );
    assert_eq!(
        invalid_key("worker:\n  heartbeat_interval: 0s\n"),
        "worker.heartbeat_interval"
    );
    assert_eq!(
        invalid_key("worker:\n  shutdown_timeout: -1s\n"),
        "worker.shutdown_timeout"
    );
}

#[test]
fn weird_yaml_never_panics() {
    for yaml in [
        "",
        "---\n",
        "~",
        "[]",
        "42",
        "just a string",
        "server: [1, 2]",
        "server: 5",
        "auth:\n  worker_tokens: [a, b]\n",
        "auth:\n  worker_tokens: {w: {nested: map}}\n",
        "server:\n  cors_allowed_origins: {a: b}\n",
        "? [a, b]\n: c\n",
        "1: 2\n",
        "server:\n  port: 1e99\n",
        "server:\n  port: 99999999999999999999999\n",
        "providers:\n  docker:\n    tmpfs: 5\n",
        "defaults:\n  ttl: [1s]\n",
        "logging: {level: {a: b}}",
        "auth:\n",
        "a: &x [*x]",
        "{{{",
        "server:\n\tport: 1",
    ] {
        let r = std::panic::catch_unwind(|| Config::from_yaml_str(yaml).and_then(Config::validate));
        assert!(r.is_ok(), "panicked on {yaml:?}");
    }
    // Empty documents and null sections are just defaults.
    assert_eq!(Config::from_yaml_str("").unwrap(), Config::default());
    assert_eq!(
        Config::from_yaml_str("auth:\nserver:\n  port:\n").unwrap(),
        Config::default()
    );
    assert_eq!(invalid_key("server: [1, 2]"), "server");
    assert_eq!(
        invalid_key("auth:\n  worker_tokens: [a, b]\n"),
        "auth.worker_tokens"
    );
}

#[test]
fn scalars_are_coerced_like_the_original() {
    let c = valid("server:\n  port: \"8081\"\n  cors_allowed_origins: \"*\"\nworker:\n  id: 42\nproviders:\n  mock:\n    enabled: \"true\"\ndefaults:\n  image: 3.12\n");
    assert_eq!(c.server.port, 8081);
    assert_eq!(c.cors(), &CorsOrigins::Any);
    assert_eq!(c.worker_id(), Some("42"));
    assert!(c.providers.mock.enabled);
    assert_eq!(c.defaults.image, "3.12");
    let err = Config::from_yaml_str("providers:\n  mock:\n    enabled: sometimes\n").unwrap_err();
    assert_eq!(err.key(), Some("providers.mock.enabled"));
}

#[test]
fn debug_redacts_secrets() {
    let c = Config::from_yaml_str(EVERY_KEY).unwrap();
    let dump = format!("{c:?}");
    for secret in [
        "api-secret",
        "admin-secret",
        "shared-secret",
        "w1-secret",
        "signing-secret",
        "old-signing-secret",
        "oidc-key",
        "pg-secret",
        "e2b-secret",
        "custom-secret",
    ] {
        assert!(!dump.contains(secret), "{secret} leaked: {dump}");
    }
    assert!(dump.contains("<redacted>"));
    assert!(dump.contains("w1"), "worker ids stay visible");
    assert!(
        dump.contains("/secrets/worker-token"),
        "file paths stay visible"
    );

    let v = valid(STAGING_CONTROL_PLANE);
    let dump = format!("{v:?}");
    assert!(
        !dump.contains("dev-api-key") && !dump.contains("dev-worker"),
        "{dump}"
    );
    let pg = DatabaseTarget::Postgres {
        dsn: "postgres://u:hunter2@h/db".into(),
    };
    assert!(!format!("{pg:?}").contains("hunter2"));
    assert!(format!("{:?}", Config::default().auth).contains("api_key: \"\""));
}

fn write(dir: &Path, name: &str, content: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap();
    p.display().to_string()
}

#[test]
fn secret_files() {
    let dir = tempfile::tempdir().unwrap();
    let token = write(dir.path(), "token", "  file-token\n");
    let key = write(dir.path(), "key", "file-signing-key-0123456789abcdef\n");
    let pem = write(
        dir.path(),
        "pem",
        "-----BEGIN PUBLIC KEY-----\nAAA\n-----END PUBLIC KEY-----\n",
    );
    let yaml = format!(
        "auth:\n  worker_token_file: {token}\n  worker_signing_key_file: {key}\n  oidc_public_key_file: {pem}\n"
    );
    let c = valid(&yaml);
    assert_eq!(c.worker_token(), Some("file-token"));
    assert_eq!(
        c.worker_signing_keys(),
        vec!["file-signing-key-0123456789abcdef"]
    );
    assert!(c.auth.oidc_public_key.ends_with("END PUBLIC KEY-----"));
    assert!(
        c.auth.worker_token_file.is_empty(),
        "resolved into the value key"
    );
    // Validating the validated config again is a no-op, not a conflict.
    assert_eq!(
        c.into_inner().validate().unwrap().worker_token(),
        Some("file-token")
    );

    // The file key can come from the environment too.
    let c =
        Config::from_yaml_str_with_env("", [("STACYVM_AUTH_WORKER_TOKEN_FILE", token.as_str())])
            .unwrap()
            .validate()
            .unwrap();
    assert_eq!(c.worker_token(), Some("file-token"));

    let both = format!("auth:\n  worker_token: x\n  worker_token_file: {token}\n");
    let err = Config::from_yaml_str(&both)
        .unwrap()
        .validate()
        .unwrap_err();
    assert!(matches!(err, ConfigError::SecretConflict { .. }), "{err}");
    assert!(err.to_string().contains("auth.worker_token_file"));

    let empty = write(dir.path(), "empty", " \n\t\n");
    let err = Config::from_yaml_str(&format!("auth:\n  worker_signing_key_file: {empty}\n"))
        .unwrap()
        .validate()
        .unwrap_err();
    assert!(matches!(err, ConfigError::SecretEmpty { .. }), "{err}");
    assert_eq!(err.key(), Some("auth.worker_signing_key_file"));

    let missing = dir.path().join("nope").display().to_string();
    let err = Config::from_yaml_str(&format!("auth:\n  oidc_public_key_file: {missing}\n"))
        .unwrap()
        .validate()
        .unwrap_err();
    assert!(matches!(err, ConfigError::SecretRead { .. }), "{err}");
    assert!(
        err.to_string().contains("auth.oidc_public_key_file"),
        "{err}"
    );
}

#[test]
fn validation_rules_name_their_key() {
    // expected key <= YAML that must fail validation naming it
    let cases = r#"
database.driver                    <= database: {driver: mysql}
database.path                      <= database: {driver: sqlite, path: ""}
database.dsn                       <= database: {driver: postgres}
defaults.max_sandboxes             <= defaults: {max_sandboxes: -1}
defaults.max_sandboxes_per_owner   <= defaults: {max_sandboxes_per_owner: -2}
defaults.max_spawn_queue           <= defaults: {max_spawn_queue: -1}
rate_limit.requests_per_minute     <= rate_limit: {requests_per_minute: -1}
rate_limit.burst                   <= rate_limit: {burst: -1}
rate_limit.burst                   <= rate_limit: {enabled: true, burst: 0}
defaults.spawn_overflow            <= defaults: {spawn_overflow: drop}
pool.overflow                      <= pool: {overflow: wait}
rate_limit.key_by                  <= rate_limit: {key_by: user}
server.cors_allowed_origins[1]     <= server: {cors_allowed_origins: ["https://ok.example", "https://a.com/"]}
server.cors_allowed_origins[0]     <= server: {cors_allowed_origins: [example.com]}
logging.level                      <= logging: {level: verbose}
logging.format                     <= logging: {format: xml}
providers.firecracker.enabled      <= providers: {firecracker: {enabled: true}}
providers.e2b.enabled              <= providers: {e2b: {enabled: true}}
providers.custom.enabled           <= providers: {custom: {enabled: true}}
providers.proot.enabled            <= providers: {proot: {enabled: true}}
providers.default                  <= providers: {default: firecracker}
providers.default                  <= providers: {default: e2b}
providers.default                  <= providers: {default: lxc}
providers.microvm.accel            <= providers: {microvm: {accel: hvf}}
providers.microvm.network_mode     <= providers: {microvm: {network_mode: bridge}}
providers.microvm.warm_pool        <= providers: {microvm: {warm_pool: -1}}
providers.docker.memory            <= providers: {docker: {memory: lots}}
providers.docker.cpus              <= providers: {docker: {cpus: -1}}
server.port                        <= server: {port: 65536}
server.port                        <= server: {port: -1}
server.max_body_bytes              <= server: {max_body_bytes: 0}
worker.stale_after_intervals       <= worker: {stale_after_intervals: 0}
worker.listen_addr                 <= worker: {listen_addr: "http://0.0.0.0:7430"}
worker.control_plane_url           <= worker: {control_plane_url: "cp:7423"}
worker.rpc_tls.server_key_file     <= worker: {rpc_tls: {enabled: true, server_cert_file: /c}}
auth.worker_tokens.w1              <= auth: {worker_tokens: {w1: ""}}
defaults.memory_mb                 <= defaults: {memory_mb: 0}
"#;
    for line in cases.lines().filter(|l| !l.trim().is_empty()) {
        let (key, yaml) = line.split_once(" <= ").unwrap();
        assert_eq!(invalid_key(yaml), key.trim(), "{yaml}");
    }
    let err = Config::from_yaml_str("providers: {firecracker: {enabled: true}}")
        .unwrap()
        .validate()
        .unwrap_err();
    assert!(
        err.to_string().contains(
            "the firecracker provider is not available in this build; use providers.microvm"
        ),
        "{err}"
    );
}

#[test]
fn accepted_values() {
    for p in ["", "auto", "mock", "docker", "microvm", "Docker"] {
        let c = valid(&format!("providers: {{default: \"{p}\"}}"));
        let want = match p.to_ascii_lowercase().as_str() {
            "" | "auto" => ProviderChoice::Auto,
            "mock" => ProviderChoice::Mock,
            "docker" => ProviderChoice::Docker,
            _ => ProviderChoice::Microvm,
        };
        assert_eq!(c.provider_default(), want, "{p}");
        assert!(want == ProviderChoice::Auto || c.wants_provider(want));
    }
    for (level, want) in [
        ("trace", LogLevel::Trace),
        ("WARN", LogLevel::Warn),
        ("error", LogLevel::Error),
    ] {
        assert_eq!(
            valid(&format!("logging: {{level: {level}}}")).log_level(),
            want
        );
    }
    assert_eq!(
        valid("logging: {format: text}").log_format(),
        LogFormat::Text
    );
    assert_eq!(
        valid("defaults: {spawn_overflow: \"\"}").spawn_overflow(),
        Overflow::Reject
    );
    assert_eq!(
        valid("defaults: {spawn_overflow: queue}").spawn_overflow(),
        Overflow::Queue
    );
    assert_eq!(
        valid("rate_limit: {key_by: api_key}").rate_limit_key(),
        RateLimitKey::ApiKey
    );
    assert_eq!(
        valid("rate_limit: {key_by: \"\"}").rate_limit_key(),
        RateLimitKey::Owner
    );
    assert_eq!(valid("server: {port: 0}").listen_addr(), "0.0.0.0:0");
    assert_eq!(
        valid("server: {host: \"::\", port: 80}").listen_addr(),
        "[::]:80"
    );
    assert_eq!(
        valid("server: {cors_allowed_origins: []}").cors(),
        &CorsOrigins::List(vec![])
    );
    let c = valid("auth: {worker_signing_key: \" k1 \", worker_signing_keys: [k2, k1, \"\", k2]}");
    assert_eq!(c.worker_signing_keys(), vec!["k1", "k2"]);
    let c = valid("auth: {api_key: a}");
    assert_eq!(
        c.effective_admin_key(),
        Some("a"),
        "admin fallback is on by default"
    );
    let c = valid("providers: {docker: {tmpfs: [\"/tmp:rw,size=64m\", /run]}}");
    assert_eq!(c.providers.docker.tmpfs["/run"], "");
    assert_eq!(c.providers.docker.tmpfs["/tmp"], "rw,size=64m");
    let c = valid("worker: {listen_addr: \"127.0.0.1:7430\", rpc_tls: {enabled: true, server_cert_file: /c, server_key_file: /k}}");
    assert_eq!(
        c.worker_rpc_url().as_deref(),
        Some("https://127.0.0.1:7430")
    );
}

#[test]
fn warnings_for_settings_we_do_not_act_on() {
    let c = valid(
        "pool: {enabled: true}\nauth: {oidc_issuer: https://idp, enabled: true}\nproviders:\n  firecracker: {kernel_path: /k}\n  e2b: {api_key: x}\nworker: {rpc_tls: {insecure_skip_verify: true}}\ndefaults: {ttl: 48h}\n",
    );
    let w = c.warnings().join("\n");
    for needle in [
        "pool.enabled",
        "auth.oidc_issuer",
        "auth.enabled",
        "providers.firecracker.kernel_path",
        "providers.e2b.api_key",
        "insecure_skip_verify",
        "defaults.ttl",
    ] {
        assert!(w.contains(needle), "no warning about {needle}: {w}");
    }
    assert!(
        !w.contains("e2b.api_key is set but ignored: x"),
        "never print values"
    );
    assert_eq!(c.warnings().len(), 7, "{w}");
    let c = valid("auth: {worker_signing_key: short}");
    assert_eq!(c.warnings().len(), 1);
    assert!(valid(STAGING_WORKER).warnings().is_empty());
}
