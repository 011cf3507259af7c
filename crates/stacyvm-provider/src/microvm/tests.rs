use super::*;

#[test]
fn runtime_ids() {
    assert!(valid_runtime_id("sb-0123abcd"));
    for bad in ["", "-x", ".x", "a/b", "../x", "a b"] {
        assert!(!valid_runtime_id(bad), "{bad}");
    }
}

#[tokio::test]
async fn health_names_missing_assets_and_unknown_ids_are_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let p = MicrovmProvider::new(MicrovmConfig {
        data_dir: dir.path().to_string_lossy().into_owned(),
        qemu_path: "/bin/sh".into(),
        ..Default::default()
    })
    .unwrap();
    let e = p.health().await.unwrap_err();
    assert!(
        matches!(&e, ProviderError::Unavailable(m) if m.contains("guest kernel")),
        "{e:?}"
    );
    assert!(
        !e.to_string().contains(&*dir.path().to_string_lossy()),
        "host path leaked: {e}"
    );
    assert!(matches!(
        p.status("sb-00000000").await,
        Err(ProviderError::SandboxNotFound(_))
    ));
    assert!(matches!(
        p.destroy("sb-00000000").await,
        Err(ProviderError::SandboxNotFound(_))
    ));
    assert_eq!(p.list_runtimes().await.unwrap(), Some(Vec::new()));
}

/// VM directories of another installation sharing the state directory are not listed (so
/// never reconciled away); those without a cluster (older builds, workers) are (hardening
/// finding 12).
#[tokio::test]
async fn lists_only_its_own_and_unlabelled_vm_directories() {
    let dir = tempfile::tempdir().unwrap();
    let p = MicrovmProvider::new(MicrovmConfig {
        data_dir: dir.path().to_string_lossy().into_owned(),
        qemu_path: "/bin/sh".into(),
        cluster: Some("aaaaaaaaaaaaaaaa".into()),
        ..Default::default()
    })
    .unwrap();
    let spec = |id: &str| SandboxSpec {
        id: id.into(),
        image: "img".into(),
        memory_mb: 0,
        vcpus: 0,
        owner_id: String::new(),
        metadata: Default::default(),
    };
    for (id, cluster) in [
        ("sb-0000000a", Some("aaaaaaaaaaaaaaaa")),
        ("sb-0000000b", Some("bbbbbbbbbbbbbbbb")),
        ("sb-00000000", None),
    ] {
        let paths = VmPaths::new(&p.vms_dir(), id);
        std::fs::create_dir_all(&paths.dir).unwrap();
        boot::write_meta(&paths, &VmMeta::of(&spec(id), cluster))
            .await
            .unwrap();
    }
    let listed: Vec<String> = p
        .list_runtimes()
        .await
        .unwrap()
        .unwrap()
        .into_iter()
        .map(|r| r.runtime_id)
        .collect();
    assert_eq!(listed, ["sb-00000000", "sb-0000000a"]);
}
