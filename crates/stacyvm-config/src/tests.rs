//! Unit tests of the internals; behaviour through the public API is in tests/config.rs.

use std::collections::BTreeSet;

use super::*;
use crate::env::{leaves, LeafKind};
use crate::formats::{check_host_port, check_http_url, check_origin, parse_docker_memory};
use crate::secrets::SECRET_FILE_KEYS;

#[test]
fn env_names_are_unique_per_key() {
    let keys = Config::keys();
    let vars: BTreeSet<_> = keys.iter().map(|(_, v)| v.clone()).collect();
    assert_eq!(vars.len(), keys.len(), "two keys map to one env var");
    assert!(keys.len() > 100, "only {} keys found", keys.len());
}

#[test]
fn leaf_kinds_come_from_defaults() {
    let tree = defaults_tree();
    let kind = |k: &str| {
        leaves(&tree)
            .into_iter()
            .find(|l| l.dotted() == k)
            .map(|l| l.kind)
    };
    assert_eq!(kind("server.port"), Some(LeafKind::Int));
    assert_eq!(kind("providers.docker.cpus"), Some(LeafKind::Float));
    assert_eq!(kind("auth.worker_tokens"), Some(LeafKind::Map));
    assert_eq!(kind("providers.docker.tmpfs"), Some(LeafKind::Map));
    assert_eq!(kind("server.cors_allowed_origins"), Some(LeafKind::List));
    assert_eq!(kind("defaults.ttl"), Some(LeafKind::Str));
    assert_eq!(kind("worker.rpc_tls.enabled"), Some(LeafKind::Bool));
    assert_eq!(kind("worker.rpc_tls"), None, "a section is not a leaf");
}

#[test]
fn every_file_twin_is_a_secret_key() {
    let keys: BTreeSet<String> = Config::keys().into_iter().map(|(k, _)| k).collect();
    let twins: BTreeSet<String> = keys
        .iter()
        .filter_map(|k| k.strip_suffix("_file"))
        .filter(|base| keys.contains(*base))
        .map(str::to_string)
        .collect();
    let listed: BTreeSet<String> = SECRET_FILE_KEYS.iter().map(|s| s.to_string()).collect();
    assert_eq!(twins, listed);
}

#[test]
fn origins() {
    for ok in [
        "http://localhost",
        "https://app.example.com",
        "http://127.0.0.1:3000",
        "https://[::1]:8443",
    ] {
        assert!(check_origin(ok).is_ok(), "{ok}");
    }
    for bad in [
        "",
        "localhost:3000",
        "ftp://x",
        "https://",
        "https://a.com/",
        "https://a.com/path",
        "https://*.a.com",
        "https://u:p@a.com",
        "https://a.com:99999",
        "https://a.com:x",
        "https://a b.com",
    ] {
        assert!(check_origin(bad).is_err(), "{bad}");
    }
}

#[test]
fn urls_and_listen_addrs() {
    assert!(check_http_url("http://127.0.0.1:7423").is_ok());
    assert!(check_http_url("https://cp.example.com/base").is_ok());
    assert!(check_http_url("127.0.0.1:7423").is_err());
    assert!(check_http_url("http://:7423").is_err());
    assert!(check_host_port("127.0.0.1:7430").is_ok());
    assert!(check_host_port(":7430").is_ok());
    assert!(check_host_port("[::1]:7430").is_ok());
    assert!(check_host_port("127.0.0.1").is_err());
    assert!(check_host_port("http://127.0.0.1:7430").is_err());
    assert!(check_host_port("h:70000").is_err());
}

#[test]
fn docker_memory() {
    assert_eq!(parse_docker_memory(""), Ok(None));
    assert_eq!(parse_docker_memory("512m"), Ok(Some(512 << 20)));
    assert_eq!(parse_docker_memory("1g"), Ok(Some(1 << 30)));
    assert_eq!(parse_docker_memory("1.5GiB"), Ok(Some(3 << 29)));
    assert_eq!(parse_docker_memory("2 kb"), Ok(Some(2048)));
    assert_eq!(parse_docker_memory("100"), Ok(Some(100)));
    assert!(parse_docker_memory("lots").is_err());
    assert!(parse_docker_memory("5x").is_err());
    assert!(parse_docker_memory("-5m").is_err());
}
