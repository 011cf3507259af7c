#![allow(clippy::unwrap_used)]

use clap::Parser;
use serde_json::Value;

use super::*;
use crate::cli::{Cli, Command, WorkerCommand};

const KEY: &str = "cli-test-signing-key-cli-test-signing-key";
const NOW: i64 = 1_778_236_200; // 2026-05-08T10:30:00Z

fn parse(args: &[&str]) -> TokenArgs {
    let mut argv = vec!["stacyvm", "worker", "token"];
    argv.extend_from_slice(args);
    match Cli::try_parse_from(argv).unwrap().command {
        Command::Worker(w) => match w.command {
            Some(WorkerCommand::Token(t)) => *t,
            _ => panic!("no token command"),
        },
        other => panic!("{other:?}"),
    }
}

fn issue_args(args: &[&str]) -> IssueArgs {
    let t = parse(args);
    assert!(t.command.is_none());
    t.issue
}

fn verify_args(args: &[&str]) -> VerifyArgs {
    let mut argv = vec!["verify"];
    argv.extend_from_slice(args);
    match parse(&argv).command {
        Some(TokenCommand::Verify(v)) => v,
        other => panic!("{other:?}"),
    }
}

fn issue_json(args: &[&str]) -> Value {
    let mut argv = args.to_vec();
    argv.extend_from_slice(&["--signing-key", KEY, "--format", "json"]);
    serde_json::from_str(&issue(issue_args(&argv), NOW).unwrap()).unwrap()
}

#[test]
fn issue_json_has_the_documented_shape_and_verifies() {
    let v = issue_json(&["worker-a", "--scope", "worker:heartbeat", "--ttl", "10m"]);
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "audience",
            "expires_at",
            "issued_at",
            "scopes",
            "token",
            "token_id",
            "worker_id"
        ]
    );
    assert_eq!(v["worker_id"], "worker-a");
    assert_eq!(v["audience"], AUD_CONTROL_PLANE);
    assert_eq!(v["issued_at"], "2026-05-08T10:30:00Z");
    assert_eq!(v["expires_at"], "2026-05-08T10:40:00Z");
    assert_eq!(v["scopes"], serde_json::json!(["worker:heartbeat"]));
    let token = v["token"].as_str().unwrap();
    let claims = Verifier::new(vec![KEY.into()], vec![])
        .verify(token, AUD_CONTROL_PLANE, NOW + 1)
        .unwrap();
    assert_eq!(claims.jti, v["token_id"].as_str().unwrap());
    assert_eq!(claims.jti.len(), 32);
    assert_eq!(claims.exp - claims.iat, 600);
}

#[test]
fn issue_token_format_prints_only_the_token() {
    let out = issue(issue_args(&["w1", "--signing-key", KEY]), NOW).unwrap();
    assert!(out.ends_with('\n'));
    let token = out.trim_end();
    assert!(!token.contains('\n'));
    assert!(stacyvm_auth::looks_signed(token));
}

#[test]
fn issue_honours_token_id_not_before_and_audience() {
    let v = issue_json(&[
        "w1",
        "--token-id",
        "incident-42",
        "--not-before",
        "1m",
        "--audience",
        "worker:rpc",
    ]);
    assert_eq!(v["token_id"], "incident-42");
    assert_eq!(v["not_before"], "2026-05-08T10:31:00Z");
    let c = decode_unverified(v["token"].as_str().unwrap()).unwrap();
    assert_eq!(
        (c.jti.as_str(), c.aud.as_str(), c.nbf),
        ("incident-42", AUD_RPC, NOW + 60)
    );
    let v = Verifier::new(vec![KEY.into()], vec![]);
    let token = issue_json(&["w1", "--not-before", "1m"])["token"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        v.verify(&token, AUD_CONTROL_PLANE, NOW).is_err(),
        "not valid yet"
    );
    assert!(
        v.verify(&token, AUD_CONTROL_PLANE, NOW + 30).is_ok(),
        "within skew"
    );
}

#[test]
fn issue_rejects_bad_input() {
    let bad: &[&[&str]] = &[
        &["w1", "--ttl", "16m"],
        &["w1", "--ttl", "0s"],
        &["w1", "--ttl", "-5m"],
        &["w1", "--ttl", "5 minutes"],
        &["w1", "--audience", "worker:other"],
        &["w1", "--scope", "worker:hearbeat"],
        &["w1", "--not-before", "5m"],
        &["w1", "--not-before", "-1s"],
        &["  ", "--ttl", "5m"],
    ];
    for args in bad {
        let mut argv = args.to_vec();
        argv.extend_from_slice(&["--signing-key", KEY]);
        assert!(issue(issue_args(&argv), NOW).is_err(), "{args:?}");
    }
    // --signing-key and --signing-key-file together are refused by clap.
    let argv = [
        "stacyvm",
        "worker",
        "token",
        "w1",
        "--signing-key",
        "a",
        "--signing-key-file",
        "f",
    ];
    assert!(Cli::try_parse_from(argv).is_err());
}

#[test]
fn issue_reads_the_key_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("key");
    std::fs::write(&path, format!("{KEY}\n")).unwrap();
    let out = issue(
        issue_args(&["w1", "--signing-key-file", path.to_str().unwrap()]),
        NOW,
    )
    .unwrap();
    let v = Verifier::new(vec![KEY.into()], vec![]);
    assert!(v.verify(out.trim(), AUD_CONTROL_PLANE, NOW).is_ok());
    std::fs::write(&path, "\n").unwrap();
    let err = issue(
        issue_args(&["w1", "--signing-key-file", path.to_str().unwrap()]),
        NOW,
    );
    assert!(format!("{:#}", err.unwrap_err()).contains("empty"));
}

#[test]
fn inspect_shows_claims_unverified() {
    let token = issue_json(&["w1", "--scope", "worker:lease"])["token"]
        .as_str()
        .unwrap()
        .to_string();
    let Some(TokenCommand::Inspect { token: parsed }) = parse(&["inspect", &token]).command else {
        panic!("inspect not parsed");
    };
    let v: Value = serde_json::from_str(&to_json(&inspect(&parsed).unwrap()).unwrap()).unwrap();
    assert_eq!(v["signature_verified"], false);
    assert_eq!(v["worker_id"], "w1");
    assert_eq!(v["audience"], AUD_CONTROL_PLANE);
    assert_eq!(v["scopes"], serde_json::json!(["worker:lease"]));
    assert_eq!(v["issued_at"], "2026-05-08T10:30:00Z");
    assert!(v.get("not_before").is_none());
    assert!(inspect("not-a-token").is_err());
}

#[test]
fn verify_accepts_rotation_keys_and_reports_verified() {
    let token = issue_json(&["w1"])["token"].as_str().unwrap().to_string();
    // The signing key only as a config rotation key, a different active key on the flag.
    let a = verify_args(&[
        &token,
        "--signing-key",
        "new-active-key-new-active-key",
        "--worker-id",
        "w1",
    ]);
    let v: Value =
        serde_json::from_str(&verify_with(a, vec![KEY.into()], vec![], NOW).unwrap()).unwrap();
    assert_eq!(v["signature_verified"], true);
    assert_eq!(v["worker_id"], "w1");
    // ... or as a --verification-key.
    let a = verify_args(&[
        &token,
        "--verification-key",
        KEY,
        "--audience",
        AUD_CONTROL_PLANE,
    ]);
    assert!(verify_with(a, vec![], vec![], NOW).is_ok());
    // An rpc token verifies without --audience (its own known audience is used).
    let rpc = issue_json(&["w1", "--audience", "worker:rpc"])["token"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(verify_with(
        verify_args(&[&rpc, "--signing-key", KEY]),
        vec![],
        vec![],
        NOW
    )
    .is_ok());
}

#[test]
fn verify_fails_with_a_clear_message() {
    let token = issue_json(&["w1", "--token-id", "jti-7"])["token"]
        .as_str()
        .unwrap()
        .to_string();
    let msg = |args: &[&str], cfg_keys: Vec<String>, revoked: Vec<String>, now: i64| {
        let mut argv = vec![token.as_str()];
        argv.extend_from_slice(args);
        format!(
            "{:#}",
            verify_with(verify_args(&argv), cfg_keys, revoked, now).unwrap_err()
        )
    };
    assert!(msg(&["--signing-key", "wrong-key"], vec![], vec![], NOW).contains("invalid signature"));
    assert!(msg(&[], vec![], vec![], NOW).contains("signing key is required"));
    assert!(msg(&["--signing-key", KEY], vec![], vec![], NOW + 300).contains("expired"));
    assert!(msg(
        &["--signing-key", KEY, "--revoked-token-id", "jti-7"],
        vec![],
        vec![],
        NOW
    )
    .contains("revoked"));
    assert!(msg(&["--signing-key", KEY], vec![], vec!["jti-7".into()], NOW).contains("revoked"));
    assert!(msg(
        &["--signing-key", KEY, "--worker-id", "w2"],
        vec![],
        vec![],
        NOW
    )
    .contains("expected \"w2\""));
    assert!(msg(
        &["--signing-key", KEY, "--audience", AUD_RPC],
        vec![],
        vec![],
        NOW
    )
    .contains("audience"));
    assert!(msg(
        &["--signing-key", KEY, "--audience", "x"],
        vec![],
        vec![],
        NOW
    )
    .contains("--audience must be"));
}

#[test]
fn rotation_plan_text_and_json() {
    let plan_args = |args: &[&str]| {
        let mut argv = vec!["rotation-plan"];
        argv.extend_from_slice(args);
        match parse(&argv).command {
            Some(TokenCommand::RotationPlan(p)) => p,
            other => panic!("{other:?}"),
        }
    };
    let text = rotation_plan(plan_args(&[])).unwrap();
    assert!(text.starts_with("Signed worker token rotation plan\n"));
    assert!(text.contains("- new active key: auth.worker_signing_key\n"));
    assert!(text.contains("- maximum token TTL: 5m0s\n"));
    assert!(text.contains("Wait at least 5m30s"));
    let json = rotation_plan(plan_args(&[
        "--format",
        "json",
        "--ttl",
        "15m",
        "--new-key-ref",
        "vault:kv/new",
        "--previous-key-ref",
        "vault:kv/old",
    ]))
    .unwrap();
    let v: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["new_key_ref"], "vault:kv/new");
    assert_eq!(v["previous_key_ref"], "vault:kv/old");
    assert_eq!(v["max_token_ttl"], "15m0s");
    assert!(v["steps"].as_array().unwrap().len() >= 4);
    assert!(v["config_snippet"]
        .as_str()
        .unwrap()
        .contains("worker_signing_keys:"));
    assert!(v["validation"].as_array().unwrap().len() >= 2);
    assert!(v["text"].as_str().unwrap().contains("vault:kv/old"));
    assert!(rotation_plan(plan_args(&["--ttl", "16m"])).is_err());
    assert!(rotation_plan(plan_args(&["--new-key-ref", " "])).is_err());
}
