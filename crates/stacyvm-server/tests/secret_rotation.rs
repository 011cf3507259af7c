//! `auth.worker_token_file` is re-read when the file changes: a rotated token is accepted and
//! the old one refused, without a restart.

#![allow(clippy::unwrap_used)]

use stacyvm_server::config::Config;
use stacyvm_server::worker_rpc;

#[test]
fn worker_token_file_rotates_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("worker-token");
    std::fs::write(&file, "first-token-0123456789\n").unwrap();
    let yaml = format!(
        "providers: {{default: mock, mock: {{enabled: true}}}}\nauth: {{worker_token_file: {:?}}}\n",
        file.to_str().unwrap()
    );
    let cfg = Config::from_yaml_str(&yaml).unwrap().validate().unwrap();
    let (auth, _client) = worker_rpc(&cfg).unwrap();
    let now = chrono::Utc::now().timestamp();
    assert!(auth
        .authenticate("w1", "first-token-0123456789", now)
        .is_ok());
    // Rotate: a different length and a fresh inode make the change visible at once.
    let tmp = dir.path().join("worker-token.new");
    std::fs::write(&tmp, "second-token-rotated-0123456789").unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    assert!(auth
        .authenticate("w1", "second-token-rotated-0123456789", now)
        .is_ok());
    assert!(auth
        .authenticate("w1", "first-token-0123456789", now)
        .is_err());
}
