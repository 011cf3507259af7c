use super::*;

#[test]
fn defaults_resolve_and_bad_values_are_named() {
    let s = BwrapConfig::default().validate().expect("defaults");
    assert_eq!(s.data_dir, PathBuf::from(BWRAP_DEFAULT_DATA_DIR));
    assert_eq!(s.images_dir, PathBuf::from(DEFAULT_IMAGES_DIR));
    assert_eq!(s.network, NetworkMode::None);
    assert_eq!(s.pids_limit, Some(256));
    for (c, key) in [
        (
            BwrapConfig {
                data_dir: "relative".into(),
                ..Default::default()
            },
            "data_dir",
        ),
        (
            BwrapConfig {
                network_mode: "bridge".into(),
                ..Default::default()
            },
            "network_mode",
        ),
        (
            BwrapConfig {
                cgroup_parent: "../escape".into(),
                ..Default::default()
            },
            "cgroup_parent",
        ),
        (
            BwrapConfig {
                dns: vec!["10.0.0.1".into(), "resolver.example".into()],
                ..Default::default()
            },
            "dns",
        ),
        (
            BwrapConfig {
                images_dir: "/a,b".into(),
                ..Default::default()
            },
            "images_dir",
        ),
    ] {
        let e = c.validate().expect_err(key);
        assert!(e.to_string().contains(key), "{e}");
    }
    let unlimited = BwrapConfig {
        pids_limit: 0,
        ..Default::default()
    };
    assert_eq!(unlimited.validate().map(|s| s.pids_limit).ok(), Some(None));
}
