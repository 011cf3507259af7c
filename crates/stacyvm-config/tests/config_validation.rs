//! Config secrets, redaction and validation rules through the public API.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use stacyvm_config::{
    Config, ConfigError, CorsOrigins, DatabaseTarget, LogFormat, LogLevel, Overflow,
    ProviderChoice, RateLimitKey, ValidConfig,
};

mod config_support;
use config_support::{EVERY_KEY, STAGING_CONTROL_PLANE, STAGING_WORKER};

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
server.trusted_proxies[1]          <= server: {trusted_proxies: [10.0.0.0/8, proxy.local]}
server.trusted_proxies[0]          <= server: {trusted_proxies: [10.1.2.3/8]}
server.trusted_proxies[0]          <= server: {trusted_proxies: [192.168.0.0/33]}
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
providers.bwrap.network_mode       <= providers: {bwrap: {network_mode: bridge}}
providers.bwrap.dns                <= providers: {bwrap: {dns: [resolver.example]}}
providers.docker.memory            <= providers: {docker: {memory: lots}}
providers.docker.cpus              <= providers: {docker: {cpus: -1}}
server.port                        <= server: {port: 65536}
server.port                        <= server: {port: -1}
server.max_body_bytes              <= server: {max_body_bytes: 0}
server.max_exec_output             <= server: {max_exec_output: 0}
server.max_sync_execs              <= server: {max_sync_execs: -2}
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
    assert_eq!(valid("server: {port: 0}").listen_addr(), "127.0.0.1:0");
    assert_eq!(
        valid("server: {host: \"::\", port: 80, allow_unauthenticated: true}").listen_addr(),
        "[::]:80"
    );
    assert_eq!(
        valid("server: {cors_allowed_origins: []}").cors(),
        &CorsOrigins::List(vec![])
    );
    assert!(
        valid("server: {}").trusted_proxies().is_empty(),
        "no proxy is trusted by default"
    );
    let nets: Vec<String> =
        valid("server: {trusted_proxies: [10.0.0.0/8, \"127.0.0.1\", \"fd00::/8\"]}")
            .trusted_proxies()
            .iter()
            .map(ToString::to_string)
            .collect();
    assert_eq!(nets, ["10.0.0.0/8", "127.0.0.1/32", "fd00::/8"]);
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

/// The key the chosen driver does not read is named, not silently dropped.
#[test]
fn the_other_drivers_database_key_is_a_warning() {
    let c = valid("database: {driver: sqlite, dsn: /tmp/x.db}");
    let w = c.warnings();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains("database.dsn") && w[0].contains("database.path"),
        "{w:?}"
    );
    let c = valid("database: {driver: postgres, dsn: \"postgres://h/db\", path: /tmp/x.db}");
    let w = c.warnings();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].starts_with("database.path is set but ignored"),
        "{w:?}"
    );
    let c = valid("database: {driver: postgres, dsn: \"postgres://h/db\"}");
    assert!(c.warnings().is_empty());
    assert!(valid("database: {path: /tmp/x.db}").warnings().is_empty());
}

#[test]
fn validate_all_collects_every_error_and_validate_keeps_the_first() {
    let yaml = "database: {driver: oracle}\nlogging: {level: loud}\ndefaults: {ttl: -5s, max_sandboxes: -1}\nserver: {port: 70000}\nauth: {worker_tokens: {w1: \"\"}}\npool: {enabled: true}\n";
    let invalid = Config::from_yaml_str(yaml)
        .unwrap()
        .validate_all()
        .unwrap_err();
    let keys: Vec<_> = invalid.errors.iter().filter_map(ConfigError::key).collect();
    assert_eq!(
        keys,
        [
            "defaults.ttl",
            "defaults.max_sandboxes",
            "server.port",
            "auth.worker_tokens.w1",
            "database.driver",
            "logging.level",
        ]
    );
    assert!(invalid
        .warnings
        .iter()
        .any(|w| w.starts_with("pool.enabled")));
    // serve and worker stop on the first error, as before.
    assert_eq!(invalid_key(yaml), "defaults.ttl");
    // One error per key: a negative count is not also reported as "must be > 0".
    let invalid = Config::from_yaml_str("rate_limit: {enabled: true, burst: -1}")
        .unwrap()
        .validate_all()
        .unwrap_err();
    assert_eq!(invalid.errors.len(), 1, "{:?}", invalid.errors);
}

#[test]
fn short_signing_key_warnings_name_the_key() {
    let c = valid("auth: {worker_signing_key: short, worker_signing_keys: [\"0123456789abcdef0123456789abcdef\", tiny]}");
    assert_eq!(
        c.warnings(),
        [
            "auth.worker_signing_key is shorter than 32 bytes; use a long random key",
            "auth.worker_signing_keys[1] is shorter than 32 bytes; use a long random key",
        ]
    );
}

#[test]
fn process_keys() {
    let c = valid("");
    assert_eq!(c.process_output_buffer(), 1 << 20);
    assert_eq!(
        c.process_retain_exited(),
        std::time::Duration::from_secs(600)
    );
    assert_eq!(c.process_agent(), None);
    let c = valid("processes: {output_buffer: 65536, retain_exited: 0s, agent: /opt/agent}");
    assert_eq!(c.process_output_buffer(), 65536);
    assert!(c.process_retain_exited().is_zero());
    assert_eq!(c.process_agent(), Some("/opt/agent"));
    for (yaml, key) in [
        ("processes: {output_buffer: 100}", "processes.output_buffer"),
        (
            "processes: {output_buffer: 2147483648}",
            "processes.output_buffer",
        ),
        ("processes: {retain_exited: -1s}", "processes.retain_exited"),
        ("processes: {agent: bin/agent}", "processes.agent"),
    ] {
        assert_eq!(invalid_key(yaml), key, "{yaml}");
    }
    let c = Config::from_yaml_str_with_env("", [("STACYVM_PROCESSES_OUTPUT_BUFFER", "8192")])
        .unwrap()
        .validate()
        .unwrap();
    assert_eq!(c.process_output_buffer(), 8192);
}
