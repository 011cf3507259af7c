#![allow(clippy::unwrap_used)]

use super::*;

const KEY: &str = "test-signing-key-0123456789abcdef";
const NOW: i64 = 1_700_000_100;

/// Computed independently with Python's `hmac`/`hashlib`/`base64` (not with this crate):
/// payload = the JSON below, base64url without padding; sig = HMAC-SHA256(KEY,
/// "stacyvm-worker-v1." + payload), base64url without padding.
const VECTOR_A: &str = "stacyvm-worker-v1.eyJ3b3JrZXJfaWQiOiJ3b3JrZXItYSIsImp0aSI6IjAxMjM0NTY3ODlhYmNkZWYwMTIzNDU2Nzg5YWJjZGVmIiwiYXVkIjoid29ya2VyOmNvbnRyb2wtcGxhbmUiLCJzY29wZXMiOlsid29ya2VyOmhlYXJ0YmVhdCIsIndvcmtlcjpsZWFzZSJdLCJleHAiOjE3MDAwMDAzMDAsImlhdCI6MTcwMDAwMDAwMCwibmJmIjoxNzAwMDAwMDEwfQ.bOJ0jyRHxNkBCL5PlXhwgVyqd6WwnppsIX43euGz7GQ";
// {"worker_id":"worker-b","jti":"ffff…","aud":"worker:rpc","exp":1700000300,"iat":1700000000}
// Its signature contains '-' and '_' (URL-safe alphabet).
const VECTOR_B: &str = "stacyvm-worker-v1.eyJ3b3JrZXJfaWQiOiJ3b3JrZXItYiIsImp0aSI6ImZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmIiwiYXVkIjoid29ya2VyOnJwYyIsImV4cCI6MTcwMDAwMDMwMCwiaWF0IjoxNzAwMDAwMDAwfQ.Z2AKPbGwweWENgGEg1fd-1DMQ5R4J0N_5krGM7Lkn00";

fn vector_a_claims() -> Claims {
    Claims {
        worker_id: "worker-a".into(),
        jti: "0123456789abcdef0123456789abcdef".into(),
        aud: AUD_CONTROL_PLANE.into(),
        scopes: vec!["worker:heartbeat".into(), "worker:lease".into()],
        exp: 1_700_000_300,
        iat: 1_700_000_000,
        nbf: 1_700_000_010,
    }
}

fn good_claims() -> Claims {
    Claims {
        worker_id: "worker-a".into(),
        jti: "0123456789abcdef0123456789abcdef".into(),
        aud: AUD_CONTROL_PLANE.into(),
        scopes: vec![],
        exp: NOW + 300,
        iat: NOW,
        nbf: 0,
    }
}

fn verifier() -> Verifier {
    Verifier::new(vec![KEY.into()], vec![])
}

fn check(claims: &Claims) -> Result<Claims, AuthError> {
    verifier().verify(&sign(KEY, claims), AUD_CONTROL_PLANE, NOW)
}

#[test]
fn sign_matches_the_independent_vectors() {
    assert_eq!(sign(KEY, &vector_a_claims()), VECTOR_A);
    let b = Claims {
        worker_id: "worker-b".into(),
        jti: "f".repeat(32),
        aud: AUD_RPC.into(),
        scopes: vec![],
        exp: 1_700_000_300,
        iat: 1_700_000_000,
        nbf: 0,
    };
    assert_eq!(sign(KEY, &b), VECTOR_B);
}

#[test]
fn independent_vectors_verify_and_decode() {
    let a = verifier().verify(VECTOR_A, AUD_CONTROL_PLANE, NOW).unwrap();
    assert_eq!(a, vector_a_claims());
    let b = verifier().verify(VECTOR_B, AUD_RPC, NOW).unwrap();
    assert_eq!(b.worker_id, "worker-b");
    assert!(b.scopes.is_empty());
    assert_eq!(decode_unverified(VECTOR_A).unwrap(), vector_a_claims());
}

#[test]
fn round_trip() {
    let claims = good_claims();
    let token = sign(KEY, &claims);
    assert!(looks_signed(&token));
    assert_eq!(
        verifier().verify(&token, AUD_CONTROL_PLANE, NOW).unwrap(),
        claims
    );
}

#[test]
fn claims_json_follows_go_field_order_and_omissions() {
    let mut c = good_claims();
    c.exp = 10;
    c.iat = 5;
    assert_eq!(
        serde_json::to_string(&c).unwrap(),
        r#"{"worker_id":"worker-a","jti":"0123456789abcdef0123456789abcdef","aud":"worker:control-plane","exp":10,"iat":5}"#
    );
    let empty = Claims::default();
    assert_eq!(
        serde_json::to_string(&empty).unwrap(),
        r#"{"worker_id":"","exp":0}"#
    );
}

#[test]
fn mint_produces_a_verifiable_token() {
    let scopes = [Scope::Heartbeat];
    let (token, claims) = mint(KEY, "w1", AUD_RPC, Duration::from_secs(300), &scopes, NOW).unwrap();
    assert_eq!(claims.scopes, vec!["worker:heartbeat".to_string()]);
    assert_eq!(claims.iat, NOW);
    assert_eq!(claims.exp, NOW + 300);
    assert_eq!(claims.nbf, 0);
    assert_eq!(claims.jti.len(), 32);
    assert!(claims
        .jti
        .bytes()
        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    let verified = verifier().verify(&token, AUD_RPC, NOW).unwrap();
    assert_eq!(verified, claims);
    let (_, other) = mint(KEY, "w1", AUD_RPC, Duration::from_secs(300), &[], NOW).unwrap();
    assert_ne!(other.jti, claims.jti, "jti must be random");
}

#[test]
fn mint_rejects_bad_ttl_and_missing_inputs() {
    for ttl in [
        Duration::ZERO,
        Duration::from_millis(999),
        Duration::from_secs(901),
        Duration::from_millis(900_001),
    ] {
        assert!(
            matches!(
                mint(KEY, "w", AUD_RPC, ttl, &[], NOW),
                Err(AuthError::InvalidTtl(_))
            ),
            "{ttl:?}"
        );
    }
    assert!(mint(KEY, "w", AUD_RPC, Duration::from_secs(900), &[], NOW).is_ok());
    let ttl = Duration::from_secs(60);
    assert!(matches!(
        mint("  ", "w", AUD_RPC, ttl, &[], NOW),
        Err(AuthError::NoSigningKey)
    ));
    assert!(matches!(
        mint(KEY, "", AUD_RPC, ttl, &[], NOW),
        Err(AuthError::MissingClaim("worker_id"))
    ));
}

#[test]
fn tampered_payload_or_signature_is_rejected() {
    let token = sign(KEY, &good_claims());
    let (head, sig) = token.rsplit_once('.').unwrap();
    // Payload of a different (otherwise valid) claim set, original signature.
    let mut other = good_claims();
    other.worker_id = "worker-b".into();
    let other_payload = sign(KEY, &other).split('.').nth(1).unwrap().to_string();
    let forged = format!("{TOKEN_PREFIX}.{other_payload}.{sig}");
    assert!(matches!(check_token(&forged), Err(AuthError::BadSignature)));
    // Flip one signature character.
    let mut bad_sig: Vec<char> = sig.chars().collect();
    bad_sig[3] = if bad_sig[3] == 'A' { 'B' } else { 'A' };
    let forged = format!("{head}.{}", bad_sig.into_iter().collect::<String>());
    assert!(matches!(check_token(&forged), Err(AuthError::BadSignature)));
    // Signed with another key.
    let foreign = sign("another-key-another-key-another-key", &good_claims());
    assert!(matches!(
        check_token(&foreign),
        Err(AuthError::BadSignature)
    ));
    // Padding added to the signature.
    assert!(matches!(
        check_token(&format!("{token}=")),
        Err(AuthError::BadSignature)
    ));
}

fn check_token(token: &str) -> Result<Claims, AuthError> {
    verifier().verify(token, AUD_CONTROL_PLANE, NOW)
}

#[test]
fn wrong_shape_is_malformed() {
    let token = sign(KEY, &good_claims());
    let parts: Vec<&str> = token.split('.').collect();
    let cases = [
        format!("stacyvm-worker-v2.{}.{}", parts[1], parts[2]),
        format!("{}.{}", parts[0], parts[1]),
        format!("{token}.extra"),
        format!("{}..{}", parts[0], parts[2]),
        String::new(),
        "garbage".into(),
    ];
    for case in &cases {
        assert!(
            matches!(check_token(case), Err(AuthError::Malformed)),
            "{case}"
        );
        assert!(decode_unverified(case).is_err(), "{case}");
    }
    // A correctly signed payload that is not base64url JSON claims.
    for payload in ["bm90LWpzb24", "e30=", "W10"] {
        let sig = signature(KEY, payload);
        let t = format!("{TOKEN_PREFIX}.{payload}.{sig}");
        let err = check_token(&t).unwrap_err();
        // `{}` decodes but lacks claims; the others do not decode at all.
        assert!(
            matches!(err, AuthError::Malformed | AuthError::MissingClaim(_)),
            "{payload}: {err:?}"
        );
    }
}

#[test]
fn expiry_has_no_skew() {
    let mut c = good_claims();
    c.exp = NOW;
    assert!(matches!(check(&c), Err(AuthError::Expired)), "exp == now");
    c.exp = NOW - 1;
    c.iat = NOW - 100;
    assert!(matches!(check(&c), Err(AuthError::Expired)));
    c.exp = NOW + 1;
    assert!(check(&c).is_ok(), "one second left");
}

#[test]
fn nbf_and_iat_tolerate_thirty_seconds_of_skew() {
    let mut c = good_claims();
    c.nbf = NOW + SKEW_SECS;
    assert!(check(&c).is_ok(), "nbf at the skew edge");
    c.nbf = NOW + SKEW_SECS + 1;
    assert!(matches!(check(&c), Err(AuthError::NotYetValid)));

    let mut c = good_claims();
    c.iat = NOW + SKEW_SECS;
    c.exp = c.iat + 60;
    assert!(check(&c).is_ok(), "iat at the skew edge");
    c.iat = NOW + SKEW_SECS + 1;
    c.exp = c.iat + 60;
    assert!(matches!(check(&c), Err(AuthError::NotYetValid)));
}

#[test]
fn lifetime_is_capped_at_fifteen_minutes() {
    let mut c = good_claims();
    c.iat = NOW - 10;
    c.exp = c.iat + MAX_LIFETIME_SECS;
    assert!(check(&c).is_ok());
    c.exp = c.iat + MAX_LIFETIME_SECS + 1;
    assert!(matches!(check(&c), Err(AuthError::LifetimeTooLong)));
}

#[test]
fn required_claims_are_enforced() {
    type Strip = fn(&mut Claims);
    let cases: [(&str, Strip); 5] = [
        ("worker_id", |c| c.worker_id.clear()),
        ("jti", |c| c.jti.clear()),
        ("aud", |c| c.aud.clear()),
        ("iat", |c| c.iat = 0),
        ("exp", |c| c.exp = 0),
    ];
    for (name, strip) in cases {
        let mut c = good_claims();
        strip(&mut c);
        let token = sign(KEY, &c);
        // The claim is really absent from the signed JSON (Go omits it the same way).
        let json = String::from_utf8(
            URL_SAFE_NO_PAD
                .decode(token.split('.').nth(1).unwrap())
                .unwrap(),
        )
        .unwrap();
        if name != "worker_id" && name != "exp" {
            assert!(!json.contains(&format!("\"{name}\"")), "{json}");
        }
        match check_token(&token) {
            Err(AuthError::MissingClaim(got)) => assert_eq!(got, name),
            other => panic!("{name}: {other:?}"),
        }
    }
}

#[test]
fn audience_must_match_exactly() {
    let token = sign(KEY, &good_claims());
    let v = verifier();
    assert!(matches!(
        v.verify(&token, AUD_RPC, NOW),
        Err(AuthError::WrongAudience)
    ));
    assert!(matches!(
        v.verify(&token, "", NOW),
        Err(AuthError::WrongAudience)
    ));
    assert!(matches!(
        v.verify(&token, "worker:control-plane ", NOW),
        Err(AuthError::WrongAudience)
    ));
    assert!(v.verify(&token, AUD_CONTROL_PLANE, NOW).is_ok());
}

#[test]
fn revoked_jti_is_rejected() {
    let claims = good_claims();
    let token = sign(KEY, &claims);
    let v = Verifier::new(
        vec![KEY.into()],
        vec![" other ".into(), format!(" {} ", claims.jti)],
    );
    assert!(v.is_revoked(&claims.jti));
    assert!(matches!(
        v.verify(&token, AUD_CONTROL_PLANE, NOW),
        Err(AuthError::Revoked)
    ));
    let v = Verifier::new(vec![KEY.into()], vec!["other".into()]);
    assert!(v.verify(&token, AUD_CONTROL_PLANE, NOW).is_ok());
}

#[test]
fn rotation_accepts_listed_keys_only() {
    let old = "old-key-old-key-old-key-old-key-old";
    let new = "new-key-new-key-new-key-new-key-new";
    let by_old = sign(old, &good_claims());
    let by_new = sign(new, &good_claims());
    let during = Verifier::new(vec![new.into(), old.into()], vec![]);
    assert_eq!(during.primary_key().unwrap().as_deref(), Some(new));
    assert!(during.verify(&by_old, AUD_CONTROL_PLANE, NOW).is_ok());
    assert!(during.verify(&by_new, AUD_CONTROL_PLANE, NOW).is_ok());
    let after = Verifier::new(vec![new.into()], vec![]);
    assert!(matches!(
        after.verify(&by_old, AUD_CONTROL_PLANE, NOW),
        Err(AuthError::BadSignature)
    ));
    assert!(after.verify(&by_new, AUD_CONTROL_PLANE, NOW).is_ok());
}

#[test]
fn verifier_keys_are_trimmed_deduped_and_ordered() {
    let v = Verifier::new(
        vec![
            "  ".into(),
            " b ".into(),
            "a".into(),
            "b".into(),
            String::new(),
        ],
        vec![],
    );
    assert_eq!(v.keys, vec!["b".to_string(), "a".to_string()]);
    assert_eq!(v.primary_key().unwrap().as_deref(), Some("b"));
    // A token signed with the untrimmed key string does not verify: keys are used trimmed.
    assert!(v
        .verify(&sign(" b ", &good_claims()), AUD_CONTROL_PLANE, NOW)
        .is_err());
    assert!(v
        .verify(&sign("b", &good_claims()), AUD_CONTROL_PLANE, NOW)
        .is_ok());
    let empty = Verifier::new(vec![" ".into()], vec![]);
    assert!(empty.is_empty());
    assert!(matches!(
        empty.verify(&sign("b", &good_claims()), AUD_CONTROL_PLANE, NOW),
        Err(AuthError::NoSigningKey)
    ));
}

#[test]
fn debug_redacts_keys() {
    let v = Verifier::new(
        vec!["super-secret-signing-key".into()],
        vec!["jti-1".into()],
    );
    let shown = format!("{v:?}");
    assert!(!shown.contains("super-secret"), "{shown}");
    assert!(shown.contains("jti-1"), "{shown}");
}

#[test]
fn ct_eq_compares_exactly() {
    assert!(ct_eq("", ""));
    assert!(ct_eq("secret-token", "secret-token"));
    assert!(!ct_eq("secret-token", "secret-tokeN"));
    assert!(!ct_eq("secret-token", "secret-token "));
    assert!(!ct_eq("secret-token", "secret-toke"));
    assert!(!ct_eq("", "x"));
    assert!(!ct_eq("x", ""));
    assert!(!ct_eq("ab", "ba"));
}

#[test]
fn looks_signed_needs_the_prefix_and_a_dot() {
    assert!(looks_signed("stacyvm-worker-v1.x.y"));
    assert!(looks_signed("stacyvm-worker-v1."));
    assert!(!looks_signed("stacyvm-worker-v1"));
    assert!(!looks_signed("stacyvm-worker-v10.x.y"));
    assert!(!looks_signed("eyJhbGciOi.x.y"));
}

#[test]
fn decode_unverified_ignores_signature_and_claim_rules() {
    let mut c = good_claims();
    c.exp = 1;
    c.iat = 0;
    let token = sign("some-other-key", &c);
    assert_eq!(decode_unverified(&token).unwrap(), c);
    // Unknown keys are ignored, as Go does.
    let payload = URL_SAFE_NO_PAD.encode(br#"{"worker_id":"w","exp":5,"extra":true}"#);
    let claims = decode_unverified(&format!("{TOKEN_PREFIX}.{payload}.sig")).unwrap();
    assert_eq!(claims.worker_id, "w");
    assert_eq!(claims.exp, 5);
}

mod props {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn any_claims_round_trip(
            worker_id in "\\PC{1,40}",
            jti in "[0-9a-f]{32}",
            scopes in proptest::collection::vec(proptest::sample::select(Scope::ALL.map(Scope::as_str).to_vec()), 0..4),
            life in 1i64..=MAX_LIFETIME_SECS,
            age in 0i64..=MAX_LIFETIME_SECS,
        ) {
            prop_assume!(age < life);
            let c = Claims {
                worker_id, jti, aud: AUD_RPC.into(),
                scopes: scopes.into_iter().map(str::to_string).collect(),
                iat: NOW - age, exp: NOW - age + life, nbf: 0,
            };
            let token = sign(KEY, &c);
            prop_assert_eq!(verifier().verify(&token, AUD_RPC, NOW).unwrap(), c.clone());
            prop_assert_eq!(decode_unverified(&token).unwrap(), c);
        }

        #[test]
        fn any_single_byte_change_is_rejected(pos in any::<prop::sample::Index>(), byte in 0x21u8..0x7f) {
            let token = sign(KEY, &good_claims());
            let mut bytes = token.clone().into_bytes();
            let i = pos.index(bytes.len());
            prop_assume!(bytes[i] != byte);
            bytes[i] = byte;
            let changed = String::from_utf8(bytes).unwrap();
            prop_assert!(check_token(&changed).is_err(), "{changed}");
        }

        #[test]
        fn arbitrary_input_never_panics(s in "\\PC{0,200}") {
            let _ = decode_unverified(&s);
            let _ = check_token(&s);
            let _ = check_token(&format!("{TOKEN_PREFIX}.{s}"));
        }
    }
}

#[test]
fn key_file_is_primary_and_reread_on_change() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("signing-key");
    let (one, two) = (
        "file-key-one-file-key-one-file-key-one",
        "file-key-two-file-key-two-file-key-two-longer",
    );
    let rotation = "rotation-key-rotation-key-rotation-key";
    std::fs::write(&path, format!("{one}\n")).unwrap();
    let v = Verifier::new(vec![rotation.into()], vec![]).with_key_file(Secret::file(&path));
    assert!(!v.is_empty());
    assert_eq!(v.primary_key().unwrap().as_deref(), Some(one));
    let by_one = sign(one, &good_claims());
    let by_two = sign(two, &good_claims());
    let by_rotation = sign(rotation, &good_claims());
    assert!(v.verify(&by_one, AUD_CONTROL_PLANE, NOW).is_ok());
    assert!(v.verify(&by_rotation, AUD_CONTROL_PLANE, NOW).is_ok());
    assert!(matches!(
        v.verify(&by_two, AUD_CONTROL_PLANE, NOW),
        Err(AuthError::BadSignature)
    ));

    // Rotate the file (a different length, so the change is seen whatever the mtime grain).
    std::fs::write(&path, two).unwrap();
    assert_eq!(v.primary_key().unwrap().as_deref(), Some(two));
    assert!(v.verify(&by_two, AUD_CONTROL_PLANE, NOW).is_ok());
    assert!(matches!(
        v.verify(&by_one, AUD_CONTROL_PLANE, NOW),
        Err(AuthError::BadSignature)
    ));
    assert!(v.verify(&by_rotation, AUD_CONTROL_PLANE, NOW).is_ok());

    // A vanished file fails closed, naming the file, never falling back to another key.
    std::fs::remove_file(&path).unwrap();
    assert!(matches!(
        v.verify(&by_rotation, AUD_CONTROL_PLANE, NOW),
        Err(AuthError::Secret { .. })
    ));
    assert!(v.primary_key().is_err());
}
