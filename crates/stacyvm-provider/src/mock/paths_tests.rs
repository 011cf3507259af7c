use std::os::unix::fs::symlink;

use super::*;

fn root() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let r = d.path().canonicalize().unwrap();
    fs::create_dir_all(r.join("workspace/sub")).unwrap();
    (d, r)
}

#[test]
fn clean_rules() {
    assert_eq!(
        clean("/workspace//a/./b/../c").unwrap(),
        ["workspace", "a", "c"]
    );
    assert_eq!(clean("workspace/a").unwrap(), ["workspace", "a"]);
    assert!(clean("/").unwrap().is_empty());
    assert!(clean("").unwrap().is_empty());
    assert!(matches!(
        clean("../../etc/passwd"),
        Err(ProviderError::InvalidInput(_))
    ));
    assert!(matches!(
        clean("/a/../../b"),
        Err(ProviderError::InvalidInput(_))
    ));
    assert!(matches!(clean("a\0b"), Err(ProviderError::InvalidInput(_))));
}

#[test]
fn plain_paths_map_under_root() {
    let (_d, r) = root();
    let got = resolve(&r, "/workspace/new/file.txt", true).unwrap();
    assert_eq!(got.host, r.join("workspace/new/file.txt"));
    assert_eq!(got.rel.len(), 3);
    assert!(resolve(&r, "/", true).unwrap().is_root());
    assert_eq!(
        resolve(&r, "workspace", true).unwrap().host,
        r.join("workspace")
    );
}

#[test]
fn symlinks_inside_are_followed() {
    let (_d, r) = root();
    symlink("sub", r.join("workspace/rel")).unwrap();
    symlink(r.join("workspace/sub"), r.join("workspace/abs")).unwrap();
    symlink("../workspace/sub/x", r.join("workspace/dangling")).unwrap();
    for p in ["/workspace/rel/f", "/workspace/abs/f"] {
        assert_eq!(
            resolve(&r, p, true).unwrap().host,
            r.join("workspace/sub/f")
        );
    }
    assert_eq!(
        resolve(&r, "/workspace/dangling", true).unwrap().host,
        r.join("workspace/sub/x")
    );
    // Not following the final component keeps the link itself.
    assert_eq!(
        resolve(&r, "/workspace/rel", false).unwrap().host,
        r.join("workspace/rel")
    );
    // `..` after a link is taken physically, from the link's target.
    assert_eq!(
        resolve(&r, "/workspace/rel/../sub", true).unwrap().host,
        r.join("workspace/sub")
    );
}

#[test]
fn symlinks_outside_are_rejected() {
    let (_d, r) = root();
    let outside = tempfile::tempdir().unwrap();
    symlink("/etc", r.join("workspace/etc")).unwrap();
    symlink("../../..", r.join("workspace/up")).unwrap();
    symlink(outside.path().join("nope"), r.join("workspace/dangling")).unwrap();
    symlink("loop", r.join("workspace/loop")).unwrap();
    for p in [
        "/workspace/etc/passwd",
        "/workspace/etc",
        "/workspace/up",
        "/workspace/up/x",
        "/workspace/dangling",
    ] {
        let err = resolve(&r, p, true).unwrap_err();
        assert!(matches!(err, ProviderError::InvalidInput(_)), "{p}: {err}");
        assert!(!err.to_string().contains(r.to_str().unwrap()), "{err}");
    }
    assert!(matches!(
        resolve(&r, "/workspace/loop", true),
        Err(ProviderError::InvalidInput(_))
    ));
    // The link itself may still be named (deleted, moved) without following it.
    assert_eq!(
        resolve(&r, "/workspace/etc", false).unwrap().host,
        r.join("workspace/etc")
    );
    // ...but never traversed.
    assert!(resolve(&r, "/workspace/etc/x", false).is_err());
}
