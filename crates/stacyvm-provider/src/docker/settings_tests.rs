use super::*;

#[test]
fn memory_syntax() {
    assert_eq!(parse_memory("512m").unwrap(), Some(512 << 20));
    assert_eq!(parse_memory("1g").unwrap(), Some(1 << 30));
    assert_eq!(parse_memory("1.5G").unwrap(), Some(3 << 29));
    assert_eq!(parse_memory("1024").unwrap(), Some(1024));
    assert_eq!(parse_memory("").unwrap(), None);
    assert_eq!(parse_memory("0").unwrap(), None);
    assert!(parse_memory("lots").is_err());
    assert!(parse_memory("-1m").is_err());
}

#[test]
fn defaults_validate() {
    let s = DockerConfig::default().validate().unwrap();
    assert_eq!(s.runtime, None);
    assert_eq!(s.network_mode, "bridge");
    assert_eq!(s.memory_bytes, Some(512 << 20));
    assert_eq!(s.nano_cpus, Some(1_000_000_000));
    assert_eq!(s.pids_limit, Some(256));
    assert_eq!(s.dropped_caps, ["ALL"]);
    assert_eq!(s.seccomp_opt, None);
    assert_eq!(s.user, None);
}

#[test]
fn refuses_unisolated_or_odd_values() {
    let bad = [
        DockerConfig {
            network_mode: "host".into(),
            ..Default::default()
        },
        DockerConfig {
            network_mode: "container:abc".into(),
            ..Default::default()
        },
        DockerConfig {
            runtime: "run c".into(),
            ..Default::default()
        },
        DockerConfig {
            cpus: -1.0,
            ..Default::default()
        },
        DockerConfig {
            memory: "x".into(),
            ..Default::default()
        },
        DockerConfig {
            seccomp_profile: "/nonexistent/profile.json".into(),
            ..Default::default()
        },
        DockerConfig {
            added_caps: vec!["NET ADMIN".into()],
            ..Default::default()
        },
        DockerConfig {
            tmpfs: BTreeMap::from([("run".to_string(), String::new())]),
            ..Default::default()
        },
    ];
    for c in bad {
        assert!(
            matches!(c.validate(), Err(ProviderError::InvalidInput(_))),
            "{c:?}"
        );
    }
}

#[test]
fn seccomp_file_is_inlined_and_user_detected() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("s.json");
    std::fs::write(&p, r#"{"defaultAction":"SCMP_ACT_ALLOW"}"#).unwrap();
    let c = DockerConfig {
        seccomp_profile: p.to_str().unwrap().into(),
        user: "nobody".into(),
        runtime: "runsc".into(),
        ..Default::default()
    };
    let s = c.validate().unwrap();
    assert_eq!(
        s.seccomp_opt.as_deref(),
        Some(r#"seccomp={"defaultAction":"SCMP_ACT_ALLOW"}"#)
    );
    assert!(is_non_root(s.user.as_deref().unwrap()));
    assert_eq!(s.runtime.as_deref(), Some("runsc"));
    let root = DockerConfig {
        user: "0:0".into(),
        ..Default::default()
    };
    assert!(!is_non_root(&root.user));
    assert!(!is_non_root("root:wheel"));
    assert!(is_non_root("1000:1000"));
}
