use super::*;

#[test]
fn defaults_resolve_under_data_dir() {
    let s = MicrovmConfig::default().validate(false).unwrap();
    assert_eq!(s.kernel, PathBuf::from(DEFAULT_DATA_DIR).join("vmlinux"));
    assert_eq!(
        s.initrd,
        PathBuf::from(DEFAULT_DATA_DIR).join("initramfs.cpio.gz")
    );
    assert_eq!(s.accel, Accel::Tcg);
    assert_eq!(s.network, NetworkMode::None);
    let s = MicrovmConfig::default().validate(true).unwrap();
    assert_eq!(s.accel, Accel::Kvm);
}

#[test]
fn explicit_values_and_refusals() {
    let c = MicrovmConfig {
        accel: "tcg".into(),
        network_mode: "user".into(),
        kernel_path: "/k".into(),
        ..Default::default()
    };
    let s = c.validate(true).unwrap();
    assert_eq!((s.accel, s.network), (Accel::Tcg, NetworkMode::User));
    assert_eq!(s.kernel, PathBuf::from("/k"));
    let pooled = MicrovmConfig {
        warm_pool: 3,
        ..Default::default()
    };
    assert_eq!(pooled.validate(false).unwrap().warm_pool, 3);
    for bad in [
        MicrovmConfig {
            accel: "hvf".into(),
            ..Default::default()
        },
        MicrovmConfig {
            network_mode: "bridge".into(),
            ..Default::default()
        },
        MicrovmConfig {
            warm_pool: -1,
            ..Default::default()
        },
        MicrovmConfig {
            warm_pool: MAX_WARM_POOL + 1,
            ..Default::default()
        },
        MicrovmConfig {
            warm_pool: 1,
            snapshots: false,
            ..Default::default()
        },
        MicrovmConfig {
            run_as: "a b".into(),
            ..Default::default()
        },
    ] {
        assert!(
            matches!(bad.validate(false), Err(ProviderError::InvalidInput(_))),
            "{bad:?}"
        );
    }
}
