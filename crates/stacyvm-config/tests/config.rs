//! Config loading, env overrides, secrets and validation through the public API.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use stacyvm_config::{
    Config, ConfigError, CorsOrigins, DatabaseTarget, LogFormat, LogLevel, Overflow,
    ProviderChoice, RateLimitKey, Sources, ValidConfig,
};
use stacyvm_types::GoDuration;

mod config_support;
use config_support::{EVERY_KEY, STAGING_CONTROL_PLANE, STAGING_WORKER};

// Verbatim from reference/remote-worker-staging.md.

// Verbatim from reference/remote-worker-staging.md.

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
    // No API key: loopback only (DECISIONS.md "Listening without keys").
    assert_eq!(c.listen_addr(), "127.0.0.1:7423");
    assert!(!c.server.allow_unauthenticated);
    assert!(!c.server.preview_unisolated);
    assert!(c.server.ui, "the console is on by default");
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
    assert_eq!((c.max_exec_output(), c.max_sync_execs()), (16 << 20, 16));
    assert_eq!(
        (c.pool.max_vms, c.pool.memory_mb, c.pool.overflow.as_str()),
        (10, 2048, "reject")
    );
    assert_eq!(c.worker_id(), None);
    assert_eq!(c.worker_preview_domain(), "localhost");
    assert_eq!(c.source_path(), None);
}

/// Every key of §11 (plus ours) set to a non-default value.

#[test]
fn every_key_parses() {
    let c = Config::from_yaml_str(EVERY_KEY).unwrap();
    let got = serde_norway::to_value(&c).unwrap();
    let def = serde_norway::to_value(Config::default()).unwrap();
    let keys = Config::keys();
    assert_eq!(
        keys.len(),
        165,
        "schema size changed: update this test and docs"
    );
    for (key, _) in &keys {
        let at = |v: &serde_norway::Value| {
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
        server.shutdown_timeout server.allow_unauthenticated server.preview_unisolated
        server.max_exec_output server.max_sync_execs server.ui
        limits.max_memory_mb limits.max_vcpus limits.max_disk_mb
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
        ("STACYVM_SERVER_ALLOW_UNAUTHENTICATED", "true"),
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
fn listening_without_keys_is_loopback_only() {
    let load = |yaml: &str| Config::from_yaml_str(yaml).unwrap().validate();
    // Keys configured: every address by default.
    let c = load("auth: {api_key: k}").unwrap();
    assert_eq!(c.listen_addr(), "0.0.0.0:7423");
    let c = load("auth: {admin_api_key: k}").unwrap();
    assert_eq!(c.listen_addr(), "0.0.0.0:7423");
    // Loopback hosts need no key.
    for host in ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"] {
        let c = load(&format!("server: {{host: \"{host}\"}}")).unwrap();
        assert!(c.listen_addr().ends_with(":7423"), "{host}");
    }
    // A public address without keys refuses to start, naming the key and the way out.
    for host in ["0.0.0.0", "::", "10.0.0.1", "example.com"] {
        let errs = load(&format!("server: {{host: \"{host}\"}}")).unwrap_err();
        let text = errs.to_string();
        assert!(text.contains("server.host"), "{host}: {text}");
        assert!(text.contains("allow_unauthenticated"), "{host}: {text}");
    }
    // ... unless said explicitly, or a key is set.
    let c = load("server: {host: 0.0.0.0, allow_unauthenticated: true}").unwrap();
    assert_eq!(c.listen_addr(), "0.0.0.0:7423");
    let c = load("server: {host: 0.0.0.0}\nauth: {api_key: k}").unwrap();
    assert_eq!(c.listen_addr(), "0.0.0.0:7423");
}

#[test]
fn limits_bound_the_defaults() {
    let c = Config::default().validate().unwrap();
    assert_eq!(
        (
            c.limits.max_memory_mb,
            c.limits.max_vcpus,
            c.limits.max_disk_mb
        ),
        (32768, 16, 65536)
    );
    let errs = Config::from_yaml_str("defaults: {memory_mb: 4096}\nlimits: {max_memory_mb: 2048}")
        .unwrap()
        .validate()
        .unwrap_err()
        .to_string();
    assert!(
        errs.contains("defaults.memory_mb") && errs.contains("limits.max_memory_mb"),
        "{errs}"
    );
    let errs = Config::from_yaml_str("limits: {max_vcpus: 0}")
        .unwrap()
        .validate()
        .unwrap_err()
        .to_string();
    assert!(errs.contains("limits.max_vcpus"), "{errs}");
}
