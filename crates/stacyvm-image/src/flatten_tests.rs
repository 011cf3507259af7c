//! Unit tests of `flatten.rs`.

use std::os::unix::fs::symlink;
use std::path::PathBuf;

use super::*;

fn layer(root: &Path, name: &str, files: &[(&str, Option<&str>)]) -> PathBuf {
    let dir = root.join(name);
    fs::create_dir_all(&dir).expect("mkdir");
    for (path, content) in files {
        let p = dir.join(path);
        match content {
            Some(c) => {
                fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
                fs::write(&p, c).expect("write");
            }
            None => fs::create_dir_all(&p).expect("mkdir"),
        }
    }
    dir
}

fn tree(root: &Path) -> Vec<String> {
    fn walk(root: &Path, rel: &Path, out: &mut Vec<String>) {
        for e in sorted_entries(&root.join(rel)).expect("ls") {
            let child = rel.join(e.file_name());
            let ft = e.file_type().expect("type");
            if ft.is_dir() {
                out.push(format!("{}/", child.display()));
                walk(root, &child, out);
            } else if ft.is_symlink() {
                let t = fs::read_link(e.path()).expect("link");
                out.push(format!("{} -> {}", child.display(), t.display()));
            } else {
                let c = fs::read_to_string(e.path()).expect("read");
                out.push(format!("{}={c}", child.display()));
            }
        }
    }
    let mut out = Vec::new();
    walk(root, Path::new(""), &mut out);
    out
}

#[test]
fn whiteouts_and_opaque_dirs_apply_in_layer_order() {
    let t = tempfile::tempdir().expect("tempdir");
    let l1 = layer(
        t.path(),
        "l1",
        &[
            ("etc/a", Some("1")),
            ("etc/b", Some("1")),
            ("var/cache/x", Some("1")),
            ("var/cache/y", Some("1")),
            ("gone/deep/file", Some("1")),
            ("keep", Some("1")),
        ],
    );
    let l2 = layer(
        t.path(),
        "l2",
        &[
            ("etc/.wh.a", Some("")),
            ("etc/b", Some("2")),
            ("var/cache/.wh..wh..opq", Some("")),
            ("var/cache/z", Some("2")),
            (".wh.gone", Some("")),
            ("new", Some("2")),
        ],
    );
    // Layer 3 brings back a path layer 2 deleted: order matters.
    let l3 = layer(t.path(), "l3", &[("etc/a", Some("3")), ("gone", None)]);
    let dest = t.path().join("rootfs");
    fs::create_dir(&dest).expect("mkdir");
    flatten(&[&l1, &l2, &l3], &dest).expect("flatten");
    assert_eq!(
        tree(&dest),
        [
            "etc/",
            "etc/a=3",
            "etc/b=2",
            "gone/",
            "keep=1",
            "new=2",
            "var/",
            "var/cache/",
            "var/cache/z=2",
        ]
    );
    // Layers are left as they were; the rootfs shares their inodes.
    assert!(l1.join("etc/a").exists());
    let a = fs::metadata(l3.join("etc/a")).expect("meta").ino();
    assert_eq!(fs::metadata(dest.join("etc/a")).expect("meta").ino(), a);
}

#[test]
fn opaque_dir_keeps_its_own_layer_entries_and_whiteouts_never_follow_symlinks() {
    let t = tempfile::tempdir().expect("tempdir");
    let outside = t.path().join("outside");
    fs::create_dir(&outside).expect("mkdir");
    fs::write(outside.join("victim"), "host").expect("write");
    let l1 = layer(t.path(), "l1", &[("d/old", Some("1"))]);
    symlink(&outside, l1.join("link")).expect("symlink");
    let l2 = layer(
        t.path(),
        "l2",
        &[
            ("d/.wh..wh..opq", Some("")),
            ("d/fresh", Some("2")),
            ("link/.wh.victim", Some("")),
        ],
    );
    let dest = t.path().join("rootfs");
    fs::create_dir(&dest).expect("mkdir");
    flatten(&[&l1, &l2], &dest).expect("flatten");
    assert_eq!(
        fs::read_to_string(outside.join("victim")).expect("read"),
        "host"
    );
    // l2's real directory `link` replaces l1's symlink.
    assert_eq!(tree(&dest), ["d/", "d/fresh=2", "link/"]);
}

#[test]
fn a_file_replaces_a_lower_directory_and_the_reverse() {
    let t = tempfile::tempdir().expect("tempdir");
    let l1 = layer(t.path(), "l1", &[("x/inner", Some("1")), ("y", Some("1"))]);
    let l2 = layer(t.path(), "l2", &[("x", Some("2")), ("y/inner", Some("2"))]);
    let dest = t.path().join("rootfs");
    fs::create_dir(&dest).expect("mkdir");
    flatten(&[&l1, &l2], &dest).expect("flatten");
    assert_eq!(tree(&dest), ["x=2", "y/", "y/inner=2"]);
}
