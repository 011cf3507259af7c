use super::*;
use crate::bwrap::cgroup::Layout;

#[test]
fn meta_round_trips_and_scan_finds_it() {
    let d = tempfile::tempdir().unwrap();
    let p = Paths::new(d.path(), "sb-1");
    p.create().unwrap();
    p.create_layer_dirs().unwrap();
    assert!(p.upper().join("workspace").is_dir());
    assert!(matches!(p.create(), Err(ProviderError::InvalidInput(_))));
    let meta = Meta {
        id: "sb-1".into(),
        image: "busybox".into(),
        lower: "/images/rootfs/x".into(),
        cgroups: Cgroups {
            layout: Layout::V1,
            dirs: vec!["/sys/fs/cgroup/memory/stacyvm/sb-1".into()],
        },
        pid: Some(42),
        cluster: None,
    };
    p.write_meta(&meta).unwrap();
    assert_eq!(p.read_meta(), Some(meta));
    std::fs::create_dir_all(d.path().join("sandboxes/.hidden")).unwrap();
    assert_eq!(scan(d.path()), ["sb-1"]);
    assert!(!is_our_bwrap(std::process::id(), &p));
}
