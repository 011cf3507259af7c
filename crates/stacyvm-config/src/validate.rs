//! `Config::validate()`: every rule of wire-reference §11 plus ours. Every rule is checked and
//! every failure collected (`stacyvm config lint` prints them all; `serve` and `worker` stop on
//! the first, in the order below); then the warnings for settings we parse but do not act on.

use stacyvm_types::GoDuration;

use crate::certs::check_rpc_tls_certs;
use crate::env::leaves;
use crate::formats::{check_host_port, check_http_url, check_origin, parse_docker_memory};
use crate::secrets::resolve_secret_files;
use crate::valid::{
    Accel, CorsOrigins, DatabaseTarget, LogFormat, LogLevel, MicrovmNetwork, Overflow,
    ProviderChoice, RateLimitKey, ValidConfig,
};
use crate::{defaults_tree, Config, ConfigError};

type Result<T> = std::result::Result<T, ConfigError>;

/// Every error (in check order) and every warning of a config that did not validate.
#[derive(Debug)]
pub struct Invalid {
    pub errors: Vec<ConfigError>,
    pub warnings: Vec<String>,
}

pub(crate) fn validate(c: Config) -> Result<ValidConfig> {
    validate_all(c).map_err(|mut invalid| invalid.errors.swap_remove(0))
}

/// Keeps the `Ok` value, or records the error and yields `None`.
fn keep<T>(errors: &mut Vec<ConfigError>, r: Result<T>) -> Option<T> {
    r.map_err(|e| errors.push(e)).ok()
}

pub(crate) fn validate_all(mut c: Config) -> std::result::Result<ValidConfig, Invalid> {
    let mut errs = Vec::new();
    let e = &mut errs;
    let secret_files = keep(e, resolve_secret_files(&mut c)).unwrap_or_default();
    check_durations(&c, e);
    check_counts(&c, e);
    let cors = check_server(&c, e);
    let trusted_proxies = check_trusted_proxies(&c, e);
    check_worker(&c, e);
    check_rpc_tls_certs(&c, e);
    check_processes(&c, e);
    crate::images::check(&c.images, e);
    let provider = check_providers(&c, e);
    let docker_memory_bytes = keep(
        e,
        parse_docker_memory(&c.providers.docker.memory)
            .map_err(|r| ConfigError::invalid("providers.docker.memory", r)),
    );
    let accel = keep(
        e,
        parse_enum::<Accel>("providers.microvm.accel", &c.providers.microvm.accel),
    );
    let microvm_network = keep(
        e,
        parse_enum::<MicrovmNetwork>(
            "providers.microvm.network_mode",
            &c.providers.microvm.network_mode,
        ),
    );
    let spawn_overflow = keep(
        e,
        parse_overflow("defaults.spawn_overflow", &c.defaults.spawn_overflow),
    );
    keep(e, parse_overflow("pool.overflow", &c.pool.overflow));
    let rate_limit_key = keep(e, check_rate_limit(&c));
    check_auth(&c, e);
    let database = keep(e, check_database(&c));
    let log_level = keep(e, parse_enum::<LogLevel>("logging.level", &c.logging.level));
    let log_format = keep(
        e,
        parse_enum::<LogFormat>("logging.format", &c.logging.format),
    );
    let warnings = warnings(&c);
    // Every section parsed (each `None` left an error) and nothing else was wrong.
    let all = (
        provider,
        log_level,
        log_format,
        spawn_overflow,
        rate_limit_key,
        accel,
        microvm_network,
        database,
        docker_memory_bytes,
        errs.is_empty(),
    );
    let (
        Some(provider),
        Some(log_level),
        Some(log_format),
        Some(spawn_overflow),
        Some(rate_limit_key),
        Some(accel),
        Some(microvm_network),
        Some(database),
        Some(docker_memory_bytes),
        true,
    ) = all
    else {
        return Err(Invalid {
            errors: errs,
            warnings,
        });
    };
    Ok(ValidConfig {
        secret_files,
        inner: c,
        warnings,
        provider,
        log_level,
        log_format,
        spawn_overflow,
        rate_limit_key,
        accel,
        microvm_network,
        cors,
        trusted_proxies,
        database,
        docker_memory_bytes,
    })
}

trait Named: Sized + Copy {
    fn parse_name(s: &str) -> Option<Self>;
    fn all_names() -> String;
}

macro_rules! named {
    ($($t:ty),*) => {$(
        impl Named for $t {
            fn parse_name(s: &str) -> Option<Self> { <$t>::parse(s) }
            fn all_names() -> String { <$t>::names() }
        }
    )*};
}
named!(
    Accel,
    MicrovmNetwork,
    LogLevel,
    LogFormat,
    Overflow,
    RateLimitKey,
    ProviderChoice
);

fn parse_enum<T: Named>(key: &str, value: &str) -> Result<T> {
    T::parse_name(value).ok_or_else(|| {
        ConfigError::invalid(key, format!("{value:?} is not one of: {}", T::all_names()))
    })
}

/// Empty means the default, as in the original.
fn parse_overflow(key: &str, value: &str) -> Result<Overflow> {
    if value.trim().is_empty() {
        return Ok(Overflow::Reject);
    }
    parse_enum(key, value)
}

fn check_durations(c: &Config, errors: &mut Vec<ConfigError>) {
    let all: [(&str, GoDuration); 14] = [
        ("server.reconcile_interval", c.server.reconcile_interval),
        ("server.shutdown_timeout", c.server.shutdown_timeout),
        ("worker.heartbeat_interval", c.worker.heartbeat_interval),
        ("worker.shutdown_timeout", c.worker.shutdown_timeout),
        ("defaults.ttl", c.defaults.ttl),
        ("defaults.max_ttl", c.defaults.max_ttl),
        (
            "defaults.default_exec_timeout",
            c.defaults.default_exec_timeout,
        ),
        ("defaults.max_exec_timeout", c.defaults.max_exec_timeout),
        (
            "defaults.spawn_queue_timeout",
            c.defaults.spawn_queue_timeout,
        ),
        ("auth.admin_audit_retention", c.auth.admin_audit_retention),
        ("rate_limit.bucket_ttl", c.rate_limit.bucket_ttl),
        ("rate_limit.cleanup_interval", c.rate_limit.cleanup_interval),
        ("providers.custom.timeout", c.providers.custom.timeout),
        (
            "providers.proot.default_timeout",
            c.providers.proot.default_timeout,
        ),
    ];
    for (key, d) in all {
        if d.is_negative() {
            errors.push(ConfigError::invalid(
                key,
                format!("duration {d} is negative"),
            ));
        }
    }
    let mut positive = vec![
        ("server.reconcile_interval", c.server.reconcile_interval),
        ("worker.heartbeat_interval", c.worker.heartbeat_interval),
        ("defaults.ttl", c.defaults.ttl),
    ];
    if c.rate_limit.enabled {
        positive.push(("rate_limit.bucket_ttl", c.rate_limit.bucket_ttl));
        positive.push(("rate_limit.cleanup_interval", c.rate_limit.cleanup_interval));
    }
    for (key, d) in positive {
        if d.is_zero() {
            errors.push(ConfigError::invalid(key, "must be greater than 0"));
        }
    }
}

fn check_counts(c: &Config, errors: &mut Vec<ConfigError>) {
    let d = &c.defaults;
    let p = &c.pool;
    let pr = &c.providers.proot;
    let non_negative = [
        ("defaults.max_sandboxes", d.max_sandboxes),
        (
            "defaults.max_sandboxes_per_owner",
            d.max_sandboxes_per_owner,
        ),
        ("defaults.max_spawn_queue", d.max_spawn_queue),
        ("defaults.disk_size_mb", d.disk_size_mb),
        ("defaults.pool_size", d.pool_size),
        (
            "rate_limit.requests_per_minute",
            c.rate_limit.requests_per_minute,
        ),
        ("rate_limit.burst", c.rate_limit.burst),
        ("pool.max_vms", p.max_vms),
        ("pool.max_users_per_vm", p.max_users_per_vm),
        ("pool.memory_mb", p.memory_mb),
        ("pool.vcpus", p.vcpus),
        ("providers.proot.max_sandboxes", pr.max_sandboxes),
        ("providers.proot.max_memory_mb", pr.max_memory_mb),
        ("providers.proot.max_disk_mb", pr.max_disk_mb),
        ("providers.microvm.warm_pool", c.providers.microvm.warm_pool),
    ];
    for (key, n) in non_negative {
        if n < 0 {
            errors.push(ConfigError::invalid(key, format!("{n} is negative")));
        }
    }
    let l = &c.limits;
    let mut positive = vec![
        ("defaults.memory_mb", d.memory_mb),
        ("defaults.vcpus", d.vcpus),
        ("limits.max_memory_mb", l.max_memory_mb),
        ("limits.max_vcpus", l.max_vcpus),
        ("limits.max_disk_mb", l.max_disk_mb),
        ("server.max_body_bytes", c.server.max_body_bytes),
        ("server.max_exec_output", c.server.max_exec_output),
        ("server.max_sync_execs", c.server.max_sync_execs),
        (
            "worker.stale_after_intervals",
            c.worker.stale_after_intervals,
        ),
    ];
    if c.rate_limit.enabled {
        positive.push((
            "rate_limit.requests_per_minute",
            c.rate_limit.requests_per_minute,
        ));
        positive.push(("rate_limit.burst", c.rate_limit.burst));
    }
    for (key, n) in positive {
        // A negative count was reported above already.
        if n <= 0 && !errors.iter().any(|e| e.key() == Some(key)) {
            errors.push(ConfigError::invalid(
                key,
                format!("{n} must be greater than 0"),
            ));
        }
    }
    // What a spawn gets without asking must be something it may ask for.
    for (key, n, max_key, max) in [
        (
            "defaults.memory_mb",
            d.memory_mb,
            "limits.max_memory_mb",
            l.max_memory_mb,
        ),
        ("defaults.vcpus", d.vcpus, "limits.max_vcpus", l.max_vcpus),
        (
            "defaults.disk_size_mb",
            d.disk_size_mb,
            "limits.max_disk_mb",
            l.max_disk_mb,
        ),
    ] {
        if max > 0 && n > max {
            errors.push(ConfigError::invalid(
                key,
                format!("{n} exceeds {max_key} ({max})"),
            ));
        }
    }
}

/// `localhost`, `127.0.0.0/8` and `::1` (brackets allowed).
fn is_loopback_host(host: &str) -> bool {
    let h = host.trim().trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost")
        || h.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn check_processes(c: &Config, errors: &mut Vec<ConfigError>) {
    use crate::sections::{MAX_OUTPUT_BUFFER, MIN_OUTPUT_BUFFER};
    let p = &c.processes;
    if !(MIN_OUTPUT_BUFFER..=MAX_OUTPUT_BUFFER).contains(&p.output_buffer) {
        errors.push(ConfigError::invalid(
            "processes.output_buffer",
            format!(
                "{} is outside {MIN_OUTPUT_BUFFER}..={MAX_OUTPUT_BUFFER} bytes",
                p.output_buffer
            ),
        ));
    }
    if p.retain_exited.is_negative() {
        errors.push(ConfigError::invalid(
            "processes.retain_exited",
            "must not be negative",
        ));
    }
    if c.lifecycle.paused_retention.is_negative() {
        errors.push(ConfigError::invalid(
            "lifecycle.paused_retention",
            "must not be negative",
        ));
    }
    if c.lifecycle.snapshot_grace.nanos() < 1_000_000_000 {
        errors.push(ConfigError::invalid(
            "lifecycle.snapshot_grace",
            "must be at least 1s (a snapshot being recorded must not be swept)",
        ));
    }
    let e = &c.e2b;
    if !e.listen.trim().is_empty() {
        if let Err(r) = check_host_port(e.listen.trim()) {
            errors.push(ConfigError::invalid("e2b.listen", r));
        }
    }
    for (name, t) in &e.templates {
        if name.trim().is_empty() || name.len() > 128 {
            errors.push(ConfigError::invalid(
                "e2b.templates",
                "template ids must be 1..=128 characters",
            ));
        }
        if t.memory_mb < 0 || t.vcpus < 0 {
            errors.push(ConfigError::invalid(
                format!("e2b.templates.{name}"),
                "memory_mb and vcpus must not be negative",
            ));
        }
        if let Err(e) = stacyvm_types::validate_user(&t.user) {
            errors.push(ConfigError::invalid(
                format!("e2b.templates.{name}.user"),
                format!("must be {e}"),
            ));
        }
    }
    if c.defaults.max_paused_sandboxes < 0 {
        errors.push(ConfigError::invalid(
            "defaults.max_paused_sandboxes",
            "must not be negative",
        ));
    }
    if !p.agent.is_empty() && !std::path::Path::new(&p.agent).is_absolute() {
        errors.push(ConfigError::invalid(
            "processes.agent",
            format!("{:?} is not an absolute path", p.agent),
        ));
    }
}

fn check_server(c: &Config, errors: &mut Vec<ConfigError>) -> CorsOrigins {
    let s = &c.server;
    if !(0..=65535).contains(&s.port) {
        errors.push(ConfigError::invalid(
            "server.port",
            format!("{} is outside 0..65535", s.port),
        ));
    }
    if s.host.chars().any(char::is_whitespace) {
        errors.push(ConfigError::invalid("server.host", "contains whitespace"));
    }
    let keys = !c.auth.api_key.is_empty() || !c.auth.admin_api_key.is_empty();
    if !keys && !s.allow_unauthenticated && !s.host.is_empty() && !is_loopback_host(&s.host) {
        errors.push(ConfigError::invalid(
            "server.host",
            format!(
                "{:?} is reachable from other machines but no API key is configured: anyone \
                 reaching it could run commands; set auth.api_key (e.g. from \
                 `openssl rand -hex 32`), or server.allow_unauthenticated: true",
                s.host
            ),
        ));
    }
    let mut any = false;
    for (i, origin) in s.cors_allowed_origins.iter().enumerate() {
        if origin == "*" {
            any = true;
            continue;
        }
        if let Err(reason) = check_origin(origin) {
            errors.push(ConfigError::invalid(
                format!("server.cors_allowed_origins[{i}]"),
                reason,
            ));
        }
    }
    if any {
        CorsOrigins::Any
    } else {
        CorsOrigins::List(s.cors_allowed_origins.clone())
    }
}

/// `server.trusted_proxies`: CIDRs (`10.0.0.0/8`, `fd00::/8`) or bare addresses (one host).
fn check_trusted_proxies(c: &Config, errors: &mut Vec<ConfigError>) -> Vec<ipnet::IpNet> {
    let mut nets = Vec::new();
    for (i, raw) in c.server.trusted_proxies.iter().enumerate() {
        let raw = raw.trim();
        let parsed = raw
            .parse::<ipnet::IpNet>()
            .or_else(|_| raw.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
        match parsed {
            // `10.1.2.3/8` is almost certainly a typo for the network; say so.
            Ok(net) if net.addr() != net.network() => errors.push(ConfigError::invalid(
                format!("server.trusted_proxies[{i}]"),
                format!("{raw:?} has host bits set (did you mean {}?)", net.trunc()),
            )),
            Ok(net) => nets.push(net),
            Err(_) => errors.push(ConfigError::invalid(
                format!("server.trusted_proxies[{i}]"),
                format!("{raw:?} is not a CIDR (10.0.0.0/8) or an IP address"),
            )),
        }
    }
    nets
}

fn check_worker(c: &Config, errors: &mut Vec<ConfigError>) {
    let w = &c.worker;
    if !w.control_plane_url.trim().is_empty() {
        if let Err(r) = check_http_url(w.control_plane_url.trim()) {
            errors.push(ConfigError::invalid("worker.control_plane_url", r));
        }
    }
    if !w.listen_addr.trim().is_empty() {
        if let Err(r) = check_host_port(w.listen_addr.trim()) {
            errors.push(ConfigError::invalid("worker.listen_addr", r));
        }
    }
    let tls = &w.rpc_tls;
    if tls.enabled {
        let pairs = [
            (
                "worker.rpc_tls.server_cert_file",
                &tls.server_cert_file,
                "worker.rpc_tls.server_key_file",
                &tls.server_key_file,
            ),
            (
                "worker.rpc_tls.client_cert_file",
                &tls.client_cert_file,
                "worker.rpc_tls.client_key_file",
                &tls.client_key_file,
            ),
        ];
        for (a, av, b, bv) in pairs {
            if av.trim().is_empty() != bv.trim().is_empty() {
                let (set, unset) = if av.trim().is_empty() { (b, a) } else { (a, b) };
                errors.push(ConfigError::invalid(
                    unset,
                    format!("required when {set} is set"),
                ));
            }
        }
        if !w.listen_addr.trim().is_empty() && tls.server_cert_file.trim().is_empty() {
            errors.push(ConfigError::invalid(
                "worker.rpc_tls.server_cert_file",
                "required when worker.rpc_tls.enabled is true and worker.listen_addr is set",
            ));
        }
    }
}

const NOT_SHIPPED: [&str; 3] = ["e2b", "custom", "proot"];

fn check_providers(c: &Config, errors: &mut Vec<ConfigError>) -> Option<ProviderChoice> {
    let p = &c.providers;
    if p.firecracker.enabled {
        errors.push(ConfigError::FirecrackerUnavailable);
    }
    for (name, enabled) in [
        ("e2b", p.e2b.enabled),
        ("custom", p.custom.enabled),
        ("proot", p.proot.enabled),
    ] {
        if enabled {
            errors.push(ConfigError::ProviderNotShipped {
                key: format!("providers.{name}.enabled"),
                provider: name.to_string(),
            });
        }
    }
    let default = p.default.trim();
    let lower = default.to_ascii_lowercase();
    let choice = if default.is_empty() {
        Some(ProviderChoice::Auto)
    } else if lower == "firecracker" {
        errors.push(ConfigError::invalid(
            "providers.default",
            "the firecracker provider is not available in this build; use microvm",
        ));
        None
    } else if NOT_SHIPPED.contains(&lower.as_str()) || lower == p.custom.name.to_ascii_lowercase() {
        errors.push(ConfigError::ProviderNotShipped {
            key: "providers.default".into(),
            provider: default.to_string(),
        });
        None
    } else {
        keep(
            errors,
            parse_enum::<ProviderChoice>("providers.default", default),
        )
    };
    if p.microvm.enabled && p.microvm.qemu_path.trim().is_empty() {
        errors.push(ConfigError::invalid(
            "providers.microvm.qemu_path",
            "required when the microvm provider is enabled",
        ));
    }
    if !["none", "user"].contains(&p.bwrap.network_mode.trim()) {
        errors.push(ConfigError::invalid(
            "providers.bwrap.network_mode",
            format!("{:?} is not none or user", p.bwrap.network_mode),
        ));
    }
    if let Some(bad) = p
        .bwrap
        .dns
        .iter()
        .find(|a| a.trim().parse::<std::net::IpAddr>().is_err())
    {
        errors.push(ConfigError::invalid(
            "providers.bwrap.dns",
            format!("{bad:?} is not an IP address"),
        ));
    }
    let cpus = p.docker.cpus;
    if !cpus.is_finite() || cpus < 0.0 {
        errors.push(ConfigError::invalid(
            "providers.docker.cpus",
            format!("{cpus} is not a non-negative number"),
        ));
    }
    choice
}

fn check_rate_limit(c: &Config) -> Result<RateLimitKey> {
    let key_by = c.rate_limit.key_by.trim();
    if key_by.is_empty() {
        return Ok(RateLimitKey::Owner);
    }
    parse_enum("rate_limit.key_by", key_by)
}

fn check_auth(c: &Config, errors: &mut Vec<ConfigError>) {
    for (id, token) in &c.auth.worker_tokens {
        if id.trim().is_empty() {
            errors.push(ConfigError::invalid(
                "auth.worker_tokens",
                "a worker id is empty",
            ));
        } else if token.trim().is_empty() {
            errors.push(ConfigError::invalid(
                format!("auth.worker_tokens.{id}"),
                "token is empty",
            ));
        }
    }
}

/// The trimmed value of `key`, which the database `driver` needs.
fn required(value: &str, key: &str, driver: &str) -> Result<String> {
    match value.trim() {
        "" => Err(ConfigError::invalid(
            key,
            format!("required when database.driver is {driver}"),
        )),
        v => Ok(v.to_string()),
    }
}

fn check_database(c: &Config) -> Result<DatabaseTarget> {
    let db = &c.database;
    match db.driver.trim().to_ascii_lowercase().as_str() {
        "" | "sqlite" => Ok(DatabaseTarget::Sqlite {
            path: required(&db.path, "database.path", "sqlite")?.into(),
        }),
        "postgres" => Ok(DatabaseTarget::Postgres {
            dsn: required(&db.dsn, "database.dsn", "postgres")?,
        }),
        _ => Err(ConfigError::invalid(
            "database.driver",
            format!("{:?} is not one of: sqlite, postgres", db.driver),
        )),
    }
}

/// Keys whose value differs from the default, as dotted paths.
fn changed_keys(c: &Config) -> Vec<String> {
    let defaults = defaults_tree();
    let Ok(actual) = serde_norway::to_value(c) else {
        return Vec::new();
    };
    leaves(&defaults)
        .into_iter()
        .filter(|leaf| {
            let get = |tree: &serde_norway::Value| {
                leaf.path
                    .iter()
                    .try_fold(tree, |node, seg| node.get(seg.as_str()))
                    .cloned()
            };
            get(&actual) != get(&defaults)
        })
        .map(|leaf| leaf.dotted())
        .collect()
}

fn warnings(c: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let changed = changed_keys(c);
    for key in &changed {
        let why = if key.starts_with("pool.") || key.starts_with("providers.docker.pool_security.")
        {
            "pool mode is not implemented"
        } else if key.starts_with("auth.oidc_") && key != "auth.oidc_enabled" {
            "OIDC (and its tenant and group mapping) is not implemented"
        } else if key == "auth.enabled" || key == "auth.oidc_enabled" {
            "this key has no effect; API-key auth is on whenever auth.api_key or auth.admin_api_key is set"
        } else if let Some(p) = ["firecracker", "e2b", "custom", "proot"]
            .into_iter()
            .find(|p| key.starts_with(&format!("providers.{p}.")))
        {
            if p == "firecracker" {
                "the firecracker provider is not available in this build (use providers.microvm)"
            } else {
                "that provider is not shipped"
            }
        } else if matches!(
            key.as_str(),
            "defaults.pool_size" | "defaults.pool_template"
        ) {
            "this key is not used by StacyVM"
        } else {
            continue;
        };
        out.push(format!("{key} is set but ignored: {why}"));
    }
    // The key the other driver reads: easy to set by mistake and otherwise silent.
    let db = &c.database;
    let sqlite = matches!(
        db.driver.trim().to_ascii_lowercase().as_str(),
        "" | "sqlite"
    );
    if sqlite && !db.dsn.trim().is_empty() {
        out.push("database.dsn is set but ignored: the sqlite driver opens database.path".into());
    }
    if !sqlite && changed.iter().any(|k| k == "database.path") {
        out.push(
            "database.path is set but ignored: the postgres driver connects to database.dsn".into(),
        );
    }
    if c.worker.rpc_tls.insecure_skip_verify {
        out.push(
            "worker.rpc_tls.insecure_skip_verify is true: worker RPC certificates are not verified; use only for testing"
                .into(),
        );
    }
    let d = &c.defaults;
    if !d.max_ttl.is_zero() && d.ttl > d.max_ttl {
        out.push(format!(
            "defaults.ttl ({}) is longer than defaults.max_ttl ({}); spawns relying on the default ttl exceed max_ttl",
            d.ttl, d.max_ttl
        ));
    }
    let short = |k: &str| k.trim().len() < 32 && !k.trim().is_empty();
    let keys = std::iter::once((
        "auth.worker_signing_key".to_string(),
        &c.auth.worker_signing_key,
    ))
    .chain(
        c.auth
            .worker_signing_keys
            .iter()
            .enumerate()
            .map(|(i, k)| (format!("auth.worker_signing_keys[{i}]"), k)),
    );
    for (key, value) in keys {
        if short(value) {
            out.push(format!(
                "{key} is shorter than 32 bytes; use a long random key"
            ));
        }
    }
    out
}
