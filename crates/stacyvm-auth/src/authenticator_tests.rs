#![allow(clippy::unwrap_used)]

use super::*;
use crate::token::{sign, Claims};
use crate::{Scope, Scopes};

const KEY: &str = "cp-signing-key-cp-signing-key-cp-signing";
const NOW: i64 = 1_800_000_000;
const SHARED: &str = "dev-worker-token-dev-worker-token";
const WORKER_A: &str = "dev-worker-a-token-dev-worker-a-token";

fn claims(worker: &str, aud: &str, jti: &str) -> Claims {
    Claims {
        worker_id: worker.into(),
        jti: jti.into(),
        aud: aud.into(),
        scopes: vec![],
        exp: NOW + 300,
        iat: NOW,
        nbf: 0,
    }
}

/// The staging guide's control plane: shared token + per-worker token for worker-a.
fn staging_cp() -> WorkerAuthenticator {
    let mut per = BTreeMap::new();
    per.insert("worker-a".to_string(), WORKER_A.to_string());
    WorkerAuthenticator::new(Some(Secret::inline(SHARED)), per, Verifier::default())
}

fn signed_cp(revoked: &[&str]) -> WorkerAuthenticator {
    let revoked = revoked.iter().map(|s| (*s).to_string()).collect();
    WorkerAuthenticator::new(
        Some(Secret::inline(SHARED)),
        BTreeMap::new(),
        Verifier::new(vec![KEY.into()], revoked),
    )
}

#[test]
fn configured_reflects_any_credential() {
    let none = WorkerAuthenticator::new(None, BTreeMap::new(), Verifier::default());
    assert!(!none.configured());
    let empty_inline = WorkerAuthenticator::new(
        Some(Secret::inline("")),
        BTreeMap::new(),
        Verifier::default(),
    );
    assert!(!empty_inline.configured());
    assert!(staging_cp().configured());
    let only_key = WorkerAuthenticator::new(
        None,
        BTreeMap::new(),
        Verifier::new(vec![KEY.into()], vec![]),
    );
    assert!(only_key.configured());
    // Nothing configured: nothing authenticates, not even an empty token.
    assert!(none.authenticate("w", "", NOW).is_err());
    assert!(none.authenticate("w", "x", NOW).is_err());
}

#[test]
fn per_worker_token_beats_shared() {
    let cp = staging_cp();
    assert_eq!(
        cp.authenticate("worker-a", WORKER_A, NOW).unwrap(),
        Scopes::ALL
    );
    // worker-a has its own token, so the shared one is refused for it.
    assert!(matches!(
        cp.authenticate("worker-a", SHARED, NOW),
        Err(AuthError::InvalidCredentials)
    ));
    // Other workers use the shared token, and cannot borrow worker-a's.
    assert!(cp.authenticate("worker-b", SHARED, NOW).is_ok());
    assert!(matches!(
        cp.authenticate("worker-b", WORKER_A, NOW),
        Err(AuthError::InvalidCredentials)
    ));
    assert!(cp.authenticate("worker-b", "", NOW).is_err());
    assert!(cp.authenticate("", SHARED, NOW).is_err());
}

#[test]
fn static_tokens_grant_all_scopes() {
    let scopes = staging_cp().authenticate("worker-b", SHARED, NOW).unwrap();
    assert_eq!(scopes, Scopes::ALL);
}

#[test]
fn signed_token_for_the_header_worker_is_accepted_with_its_scopes() {
    let cp = signed_cp(&[]);
    let mut c = claims("worker-a", AUD_CONTROL_PLANE, "jti-1");
    c.scopes = vec!["worker:heartbeat".into()];
    let scopes = cp.authenticate("worker-a", &sign(KEY, &c), NOW).unwrap();
    assert!(scopes.contains(Scope::Heartbeat));
    assert!(!scopes.contains(Scope::Spawn));
    // No scopes at all means every scope, as in the original.
    c.scopes = vec![];
    assert_eq!(
        cp.authenticate("worker-a", &sign(KEY, &c), NOW).unwrap(),
        Scopes::ALL
    );
}

#[test]
fn a_token_with_an_unknown_scope_is_refused_not_widened() {
    // The original dropped unknown scopes and granted all when none remained: a typo gave
    // full rights. Any unknown scope now refuses the whole token.
    let cp = signed_cp(&[]);
    let mut c = claims("worker-a", AUD_CONTROL_PLANE, "jti-1");
    for bad in [
        vec!["worker:heartbeats-typo"],
        vec!["admin:*"],
        vec!["worker:heartbeat", "admin:*"],
    ] {
        c.scopes = bad.iter().map(|s| s.to_string()).collect();
        let err = cp
            .authenticate("worker-a", &sign(KEY, &c), NOW)
            .unwrap_err();
        assert!(
            matches!(err, AuthError::UnknownScope(_)),
            "{bad:?}: {err:?}"
        );
    }
}

#[test]
fn valid_signed_token_mismatch_does_not_fall_back() {
    // A CP whose shared token IS the presented string would accept it statically; a valid
    // signature for another worker must still be refused.
    let token = sign(KEY, &claims("worker-b", AUD_CONTROL_PLANE, "jti-1"));
    let cp = WorkerAuthenticator::new(
        Some(Secret::inline(token.clone())),
        BTreeMap::new(),
        Verifier::new(vec![KEY.into()], vec!["jti-r".into()]),
    );
    assert!(matches!(
        cp.authenticate("worker-a", &token, NOW),
        Err(AuthError::WorkerMismatch)
    ));
    let revoked = sign(KEY, &claims("worker-a", AUD_CONTROL_PLANE, "jti-r"));
    let cp = WorkerAuthenticator::new(
        Some(Secret::inline(revoked.clone())),
        BTreeMap::new(),
        Verifier::new(vec![KEY.into()], vec!["jti-r".into()]),
    );
    assert!(matches!(
        cp.authenticate("worker-a", &revoked, NOW),
        Err(AuthError::Revoked)
    ));
    // Wrong audience (an RPC token shown to the CP) is final too.
    let rpc = sign(KEY, &claims("worker-a", AUD_RPC, "jti-2"));
    assert!(matches!(
        signed_cp(&[]).authenticate("worker-a", &rpc, NOW),
        Err(AuthError::WrongAudience)
    ));
    // Expired, too.
    let mut old = claims("worker-a", AUD_CONTROL_PLANE, "jti-3");
    old.exp = NOW;
    assert!(matches!(
        signed_cp(&[]).authenticate("worker-a", &sign(KEY, &old), NOW),
        Err(AuthError::Expired)
    ));
}

#[test]
fn token_signed_by_an_unknown_key_falls_through_to_static() {
    let foreign = sign(
        "unknown-key-unknown-key-unknown",
        &claims("w", AUD_CONTROL_PLANE, "j"),
    );
    let cp = WorkerAuthenticator::new(
        Some(Secret::inline(foreign.clone())),
        BTreeMap::new(),
        Verifier::new(vec![KEY.into()], vec![]),
    );
    assert!(cp.authenticate("w", &foreign, NOW).is_ok());
    assert!(matches!(
        signed_cp(&[]).authenticate("w", &foreign, NOW),
        Err(AuthError::BadSignature)
    ));
}

#[test]
fn shared_token_from_a_file_follows_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("worker-token");
    std::fs::write(&path, "token-one\n").unwrap();
    let cp = WorkerAuthenticator::new(
        Some(Secret::file(&path)),
        BTreeMap::new(),
        Verifier::default(),
    );
    assert!(cp.authenticate("w", "token-one", NOW).is_ok());
    std::fs::write(&path, "token-two-rotated\n").unwrap();
    assert!(cp.authenticate("w", "token-one", NOW).is_err());
    assert!(cp.authenticate("w", "token-two-rotated", NOW).is_ok());
    std::fs::remove_file(&path).unwrap();
    assert!(matches!(
        cp.authenticate("w", "token-two-rotated", NOW),
        Err(AuthError::Secret { .. })
    ));
}

#[test]
fn rpc_credential_prefers_per_worker_then_shared_then_minted() {
    let cp = staging_cp();
    assert_eq!(
        cp.rpc_credential_for("worker-a", NOW).unwrap().as_deref(),
        Some(WORKER_A)
    );
    assert_eq!(
        cp.rpc_credential_for("worker-b", NOW).unwrap().as_deref(),
        Some(SHARED)
    );

    let keys_only = WorkerAuthenticator::new(
        None,
        BTreeMap::new(),
        Verifier::new(vec![KEY.into()], vec![]),
    );
    let token = keys_only
        .rpc_credential_for("worker-c", NOW)
        .unwrap()
        .unwrap();
    let worker = RpcAuthenticator::new(
        "worker-c".into(),
        None,
        Verifier::new(vec!["unrelated-key".into(), KEY.into()], vec![]),
    );
    worker.authenticate("worker-c", &token, NOW).unwrap();
    let c = crate::decode_unverified(&token).unwrap();
    assert_eq!((c.aud.as_str(), c.exp - c.iat), (AUD_RPC, 300));

    let nothing = WorkerAuthenticator::new(None, BTreeMap::new(), Verifier::default());
    assert_eq!(nothing.rpc_credential_for("worker-c", NOW).unwrap(), None);
}

/// The staging guide end to end: the CP calls worker-a with worker-a's own token, which is
/// exactly what worker-a accepts on /rpc (the original sent the shared token and failed).
#[test]
fn staging_per_worker_config_works_in_both_directions() {
    let cp = staging_cp();
    let worker = RpcAuthenticator::new(
        "worker-a".into(),
        Some(Secret::inline(WORKER_A)),
        Verifier::default(),
    );
    assert!(cp.authenticate("worker-a", WORKER_A, NOW).is_ok());
    let cred = cp.rpc_credential_for("worker-a", NOW).unwrap().unwrap();
    worker.authenticate("worker-a", &cred, NOW).unwrap();
    assert!(worker.authenticate("worker-a", SHARED, NOW).is_err());
}

#[test]
fn rpc_side_checks_identity_and_audience() {
    let worker = RpcAuthenticator::new(
        "worker-a".into(),
        Some(Secret::inline(WORKER_A)),
        Verifier::new(vec![KEY.into()], vec!["gone".into()]),
    );
    assert!(worker.configured());
    worker.authenticate("worker-a", WORKER_A, NOW).unwrap();
    // Header id compared exactly, untrimmed.
    assert!(matches!(
        worker.authenticate("worker-a ", WORKER_A, NOW),
        Err(AuthError::WorkerMismatch)
    ));
    assert!(matches!(
        worker.authenticate("worker-a", "", NOW),
        Err(AuthError::InvalidCredentials)
    ));
    assert!(matches!(
        worker.authenticate("worker-a", "nope", NOW),
        Err(AuthError::InvalidCredentials)
    ));
    let ok = sign(KEY, &claims("worker-a", AUD_RPC, "j1"));
    worker.authenticate("worker-a", &ok, NOW).unwrap();
    let cp_aud = sign(KEY, &claims("worker-a", AUD_CONTROL_PLANE, "j2"));
    assert!(matches!(
        worker.authenticate("worker-a", &cp_aud, NOW),
        Err(AuthError::WrongAudience)
    ));
    let other = sign(KEY, &claims("worker-b", AUD_RPC, "j3"));
    assert!(matches!(
        worker.authenticate("worker-a", &other, NOW),
        Err(AuthError::WorkerMismatch)
    ));
    let revoked = sign(KEY, &claims("worker-a", AUD_RPC, "gone"));
    assert!(matches!(
        worker.authenticate("worker-a", &revoked, NOW),
        Err(AuthError::Revoked)
    ));

    let bare = RpcAuthenticator::new(
        "worker-a".into(),
        Some(Secret::inline("")),
        Verifier::default(),
    );
    assert!(!bare.configured());
    assert!(bare.authenticate("worker-a", "", NOW).is_err());
}
