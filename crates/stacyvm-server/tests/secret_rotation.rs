//! `auth.worker_token_file` and `auth.worker_signing_key_file` are re-read when the file
//! changes: a rotated secret is accepted and the old one refused, without a restart.

#![allow(clippy::unwrap_used)]

use stacyvm_config::Config;
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

/// `auth.worker_signing_key_file` likewise: tokens signed with the rotated key pass, the old
/// key's are refused, `worker_signing_keys` stay accepted, and the `worker:rpc` tokens the
/// control plane mints for workers switch to the new key.
#[test]
fn worker_signing_key_file_rotates_without_restart() {
    use std::time::Duration;

    use stacyvm_auth::{mint, Verifier, AUD_CONTROL_PLANE, AUD_RPC};

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("signing-key");
    let one = "signing-key-one-signing-key-one-signing-key-one";
    let two = "signing-key-two-signing-key-two-signing-key-two-2";
    let rot = "rotation-key-rotation-key-rotation-key-rotation";
    std::fs::write(&file, format!("{one}\n")).unwrap();
    let yaml = format!(
        "providers: {{default: mock, mock: {{enabled: true}}}}\n\
         auth: {{worker_signing_key_file: {:?}, worker_signing_keys: [{rot}]}}\n",
        file.to_str().unwrap()
    );
    let cfg = Config::from_yaml_str(&yaml).unwrap().validate().unwrap();
    let (auth, _client) = worker_rpc(&cfg).unwrap();
    let now = chrono::Utc::now().timestamp();
    let token = |key: &str| {
        mint(
            key,
            "w1",
            AUD_CONTROL_PLANE,
            Duration::from_secs(60),
            &[],
            now,
        )
        .unwrap()
        .0
    };
    let rpc_token_signed_with = |key: &str| {
        let t = auth.rpc_credential_for("w1", now).unwrap().unwrap();
        Verifier::new(vec![key.into()], vec![])
            .verify(&t, AUD_RPC, now)
            .is_ok()
    };
    assert!(auth.authenticate("w1", &token(one), now).is_ok());
    assert!(auth.authenticate("w1", &token(rot), now).is_ok());
    assert!(auth.authenticate("w1", &token(two), now).is_err());
    assert!(rpc_token_signed_with(one));
    assert_eq!(auth.signing_key().unwrap().as_deref(), Some(one));

    let tmp = dir.path().join("signing-key.new");
    std::fs::write(&tmp, two).unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    assert!(auth.authenticate("w1", &token(two), now).is_ok());
    assert!(auth.authenticate("w1", &token(rot), now).is_ok());
    assert!(auth.authenticate("w1", &token(one), now).is_err());
    assert!(rpc_token_signed_with(two) && !rpc_token_signed_with(one));
    assert_eq!(auth.signing_key().unwrap().as_deref(), Some(two));
}
