//! `stacyvm db migrate` and `stacyvm db backup` against a SQLite database named by a config
//! file, as an operator runs them.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output};

fn stacyvm(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stacyvm"))
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("HOME", dir)
        .env("STACYVM_CONFIG", dir.join("stacyvm.yaml"))
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn migrate_then_backup_with_overwrite_protection() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("cp.db");
    std::fs::write(
        dir.path().join("stacyvm.yaml"),
        format!("database:\n  driver: sqlite\n  path: {}\n", db.display()),
    )
    .unwrap();

    // Backing up a database that does not exist fails and creates nothing.
    let o = stacyvm(dir.path(), &["db", "backup", "out.db"]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(!db.exists());

    let o = stacyvm(dir.path(), &["db", "migrate"]);
    assert!(o.status.success(), "{}", text(&o));
    let out = text(&o);
    assert!(out.contains("schema version 0 -> "), "{out}");
    let o = stacyvm(dir.path(), &["db", "migrate"]);
    assert!(text(&o).contains("(up to date)"), "{}", text(&o));

    let o = stacyvm(dir.path(), &["db", "backup", "out.db"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("written to out.db"), "{}", text(&o));
    let first = std::fs::metadata(dir.path().join("out.db")).unwrap().len();
    assert!(first > 0);

    let o = stacyvm(dir.path(), &["db", "backup", "out.db"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("--force"), "{}", text(&o));
    let o = stacyvm(dir.path(), &["db", "backup", "out.db", "--force"]);
    assert!(o.status.success(), "{}", text(&o));

    // --database names the file explicitly.
    let o = stacyvm(
        dir.path(),
        &[
            "db",
            "backup",
            "second.db",
            "--database",
            db.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(dir.path().join("second.db").is_file());
}
