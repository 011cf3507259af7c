//! Signed worker tokens: `stacyvm-worker-v1.<b64url(claims JSON)>.<b64url(HMAC-SHA256)>`.
//!
//! The byte format is the original's (wire-reference §8.2); the acceptance rules are ours
//! (DECISIONS.md): `iat`, `exp`, `aud` and `jti` are required, the lifetime is capped at
//! 15 minutes, the audience must match exactly.

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::{AuthError, Scope, Scopes, Secret};

/// First dot-separated part of every signed worker token.
pub const TOKEN_PREFIX: &str = "stacyvm-worker-v1";
/// Audience of tokens a worker presents to the control plane (`/api/v1/worker/*`).
pub const AUD_CONTROL_PLANE: &str = "worker:control-plane";
/// Audience of tokens the control plane presents to a worker's `/rpc`.
pub const AUD_RPC: &str = "worker:rpc";
/// Longest accepted `exp - iat`, and longest ttl `mint` issues (15 minutes).
pub const MAX_LIFETIME_SECS: i64 = 900;
/// Clock skew tolerated on `nbf` and `iat` (never on `exp`).
pub const SKEW_SECS: i64 = 30;

type HmacSha256 = Hmac<Sha256>;

/// Token claims. Field order and omissions follow the Go original's JSON encoding, so a token
/// we sign has the same bytes the original would produce for the same claims.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Claims {
    pub worker_id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub jti: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub aud: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    pub exp: i64,
    #[serde(skip_serializing_if = "is_zero")]
    pub iat: i64,
    #[serde(skip_serializing_if = "is_zero")]
    pub nbf: i64,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

/// Signs `claims` with `key` (the key string's bytes, used as given).
pub fn sign(key: &str, claims: &Claims) -> String {
    // Serialising a struct of strings and integers cannot fail; fall back to `{}` regardless.
    let json = serde_json::to_vec(claims).unwrap_or_else(|_| b"{}".to_vec());
    let payload = URL_SAFE_NO_PAD.encode(json);
    let sig = signature(key, &payload);
    format!("{TOKEN_PREFIX}.{payload}.{sig}")
}

fn signature(key: &str, payload: &str) -> String {
    let mut mac = match HmacSha256::new_from_slice(key.as_bytes()) {
        Ok(m) => m,
        // HMAC takes keys of any length; this arm is unreachable in practice.
        Err(_) => return String::new(),
    };
    mac.update(TOKEN_PREFIX.as_bytes());
    mac.update(b".");
    mac.update(payload.as_bytes());
    URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

/// Mints a fresh token: random 32-hex `jti`, `iat = now_unix`, `exp = now_unix + ttl`
/// (whole seconds). `ttl` must be between 1 s and 15 min. No scopes means every scope.
pub fn mint(
    key: &str,
    worker_id: &str,
    audience: &str,
    ttl: Duration,
    scopes: &[Scope],
    now_unix: i64,
) -> Result<(String, Claims), AuthError> {
    let max = Duration::from_secs(MAX_LIFETIME_SECS.unsigned_abs());
    if ttl < Duration::from_secs(1) || ttl > max {
        return Err(AuthError::InvalidTtl(ttl));
    }
    // Whole seconds, as the claims are; at most 900, so the cast is lossless.
    let secs = ttl.as_secs() as i64;
    let key = key.trim();
    if key.is_empty() {
        return Err(AuthError::NoSigningKey);
    }
    if worker_id.is_empty() {
        return Err(AuthError::MissingClaim("worker_id"));
    }
    if audience.is_empty() {
        return Err(AuthError::MissingClaim("aud"));
    }
    let claims = Claims {
        worker_id: worker_id.to_string(),
        jti: new_token_id(),
        aud: audience.to_string(),
        scopes: scopes.iter().map(|s| s.as_str().to_string()).collect(),
        exp: now_unix.saturating_add(secs),
        iat: now_unix,
        nbf: 0,
    };
    Ok((sign(key, &claims), claims))
}

/// A random token id: 16 bytes as 32 lower-case hex characters.
pub fn new_token_id() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Splits a token into its payload and signature parts, checking the shape only.
fn split(token: &str) -> Result<(&str, &str), AuthError> {
    let mut parts = token.split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(prefix), Some(payload), Some(sig), None)
            if prefix == TOKEN_PREFIX && !payload.is_empty() && !sig.is_empty() =>
        {
            Ok((payload, sig))
        }
        _ => Err(AuthError::Malformed),
    }
}

fn decode_payload(payload: &str) -> Result<Claims, AuthError> {
    let json = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| AuthError::Malformed)?;
    serde_json::from_slice(&json).map_err(|_| AuthError::Malformed)
}

/// The claims of a well-formed token, WITHOUT checking its signature or any claim.
/// For display (`stacyvm worker token inspect`) only; never for authorisation.
pub fn decode_unverified(token: &str) -> Result<Claims, AuthError> {
    let (payload, _) = split(token)?;
    decode_payload(payload)
}

/// Whether `token` claims to be a signed worker token (so it is never mistaken for a JWT).
pub fn looks_signed(token: &str) -> bool {
    token
        .strip_prefix(TOKEN_PREFIX)
        .is_some_and(|rest| rest.starts_with('.'))
}

/// Equality whose running time does not depend on where `a` and `b` differ.
/// (Their lengths may still show; tokens and signatures are not secret in length.)
pub fn ct_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut diff = u8::from(a.len() != b.len());
    for (i, x) in a.iter().enumerate() {
        let y = b.get(i).copied().unwrap_or(!*x);
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

/// Verifies signed tokens against an ordered key list (primary first, then rotation keys)
/// and a revocation list of `jti`s. The primary key may come from a file
/// ([`Verifier::with_key_file`]), re-read whenever it changes, so rotating it needs no restart.
#[derive(Clone, Default)]
pub struct Verifier {
    keys: Vec<String>,
    key_file: Option<Arc<Secret>>,
    revoked: Vec<String>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("keys", &format_args!("[{} redacted]", self.keys.len()))
            .field("key_file", &self.key_file)
            .field("revoked", &self.revoked)
            .finish()
    }
}

impl Verifier {
    /// `keys`: primary first; each is trimmed, empty ones dropped, duplicates removed.
    /// `revoked`: token ids (`jti`) to refuse; trimmed, empty ones dropped.
    pub fn new(keys: Vec<String>, revoked: Vec<String>) -> Self {
        Self {
            keys: clean(keys),
            key_file: None,
            revoked: clean(revoked),
        }
    }

    /// Makes `file`'s current content the primary key, ahead of the keys given to `new` (which
    /// then act as rotation keys). A file that cannot be read fails verification and minting
    /// rather than silently falling back.
    pub fn with_key_file(mut self, file: Secret) -> Self {
        self.key_file = Some(Arc::new(file));
        self
    }

    /// True when no key is configured: no signed token can verify.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.key_file.is_none()
    }

    /// The current keys, primary first (the key file's content, re-read if it changed).
    fn current_keys(&self) -> Result<Vec<String>, AuthError> {
        match &self.key_file {
            None => Ok(self.keys.clone()),
            Some(file) => {
                let mut keys = vec![file.get()?];
                keys.extend(self.keys.iter().cloned());
                Ok(clean(keys))
            }
        }
    }

    /// The key new tokens are signed with (the key file's content, else the first key).
    pub fn primary_key(&self) -> Result<Option<String>, AuthError> {
        Ok(self.current_keys()?.into_iter().next())
    }

    /// Whether `jti` is on the revocation list.
    pub fn is_revoked(&self, jti: &str) -> bool {
        self.revoked.iter().any(|r| r == jti)
    }

    /// Checks, in order: shape and prefix, signature under any key, claims decode, required
    /// claims (`worker_id`, `jti`, `aud`, `iat`, `exp`), audience == `expected_aud` exactly,
    /// `now < exp`, `nbf`/`iat` not beyond `now + 30 s`, `exp - iat <= 15 min`, not revoked.
    /// The caller checks `worker_id` against the identity it expects.
    pub fn verify(
        &self,
        token: &str,
        expected_aud: &str,
        now_unix: i64,
    ) -> Result<Claims, AuthError> {
        if self.is_empty() {
            return Err(AuthError::NoSigningKey);
        }
        let keys = self.current_keys()?;
        let (payload, sig) = split(token)?;
        // Check every key so the time taken does not tell which key matched.
        let matched = keys
            .iter()
            .fold(false, |ok, key| ct_eq(&signature(key, payload), sig) | ok);
        if !matched {
            return Err(AuthError::BadSignature);
        }
        let claims = decode_payload(payload)?;
        check_claims(&claims, expected_aud, now_unix)?;
        // A scope we do not know is refused, never dropped (see `Scopes::from_claim`).
        Scopes::from_claim(&claims.scopes)?;
        if self.is_revoked(&claims.jti) {
            return Err(AuthError::Revoked);
        }
        Ok(claims)
    }
}

fn check_claims(c: &Claims, expected_aud: &str, now: i64) -> Result<(), AuthError> {
    if c.worker_id.is_empty() {
        return Err(AuthError::MissingClaim("worker_id"));
    }
    if c.jti.is_empty() {
        return Err(AuthError::MissingClaim("jti"));
    }
    if c.aud.is_empty() {
        return Err(AuthError::MissingClaim("aud"));
    }
    if c.iat <= 0 {
        return Err(AuthError::MissingClaim("iat"));
    }
    if c.exp <= 0 {
        return Err(AuthError::MissingClaim("exp"));
    }
    if c.aud != expected_aud {
        return Err(AuthError::WrongAudience);
    }
    if now >= c.exp {
        return Err(AuthError::Expired);
    }
    let latest_start = now.saturating_add(SKEW_SECS);
    if c.nbf > 0 && latest_start < c.nbf {
        return Err(AuthError::NotYetValid);
    }
    if latest_start < c.iat {
        return Err(AuthError::NotYetValid);
    }
    if c.exp <= c.iat {
        return Err(AuthError::Malformed);
    }
    if c.exp - c.iat > MAX_LIFETIME_SECS {
        return Err(AuthError::LifetimeTooLong);
    }
    Ok(())
}

/// Trims, drops empty entries and repeats, keeping first-seen order.
fn clean(values: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(values.len());
    for v in values {
        let v = v.trim();
        if !v.is_empty() && !out.iter().any(|o| o == v) {
            out.push(v.to_string());
        }
    }
    out
}

#[cfg(test)]
#[path = "token_tests.rs"]
mod tests;
