//! The worker's use of `stacyvm-auth`, in one place: who may call `/rpc` (wire-reference §8.4)
//! and the self-minted `worker:control-plane` token (§8.2).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::HeaderMap;
use stacyvm_auth::{mint, AuthError, RpcAuthenticator, Secret, Verifier, AUD_CONTROL_PLANE};

use crate::config::WorkerConfig;

/// Lifetime of a self-minted control-plane token (one per request).
const SELF_MINT_TTL: Duration = Duration::from_secs(5 * 60);

pub(crate) fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Checks `/rpc` callers: `X-Worker-ID` must be this worker and the token must be its own
/// static token or a signed `worker:rpc` token for it.
#[derive(Debug)]
pub(crate) struct RpcAuth {
    inner: RpcAuthenticator,
}

impl RpcAuth {
    pub(crate) fn new(cfg: &WorkerConfig) -> Self {
        let static_token = match (&cfg.rpc_token_file, &cfg.rpc_token) {
            (Some(path), _) => Some(Secret::file(path)),
            (None, Some(t)) => Some(Secret::inline(t.clone())),
            (None, None) => None,
        };
        RpcAuth {
            inner: RpcAuthenticator::new(cfg.id.clone(), static_token, cfg.verifier.clone()),
        }
    }

    /// False when no credential can ever pass (no token, no signing key).
    pub(crate) fn configured(&self) -> bool {
        self.inner.configured()
    }

    pub(crate) fn check(&self, headers: &HeaderMap) -> Result<(), AuthError> {
        let worker_id = headers
            .get("x-worker-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        self.inner
            .authenticate(worker_id, token_from(headers), now_unix())
    }
}

/// `X-Worker-Token`, else `Authorization` with a literal `Bearer ` prefix stripped (the whole
/// value when the prefix is absent), as the original worker reads it.
fn token_from(headers: &HeaderMap) -> &str {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .filter(|s| !s.is_empty())
    };
    if let Some(t) = get("x-worker-token") {
        return t;
    }
    match get("authorization") {
        Some(v) => v.strip_prefix("Bearer ").unwrap_or(v),
        None => "",
    }
}

/// A fresh `worker:control-plane` token signed with `keys`' current primary key.
pub(crate) fn mint_control_plane_token(
    keys: &Verifier,
    worker_id: &str,
) -> Result<String, AuthError> {
    let key = keys.primary_key()?.ok_or(AuthError::NoSigningKey)?;
    mint(
        &key,
        worker_id,
        AUD_CONTROL_PLANE,
        SELF_MINT_TTL,
        &[],
        now_unix(),
    )
    .map(|(token, _)| token)
}

/// Reads a token file (trimmed) for one request.
pub(crate) fn read_token_file(path: &std::path::Path) -> Result<String, AuthError> {
    Secret::file(path).get()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn token_header_precedence() {
        let mut h = HeaderMap::new();
        assert_eq!(token_from(&h), "");
        h.insert("authorization", HeaderValue::from_static("Bearer abc"));
        assert_eq!(token_from(&h), "abc");
        h.insert("authorization", HeaderValue::from_static("raw"));
        assert_eq!(token_from(&h), "raw");
        h.insert("x-worker-token", HeaderValue::from_static("xyz"));
        assert_eq!(token_from(&h), "xyz");
    }

    #[test]
    fn minted_token_verifies_for_control_plane() {
        let key = "k".repeat(32);
        let t = mint_control_plane_token(&Verifier::new(vec![key.clone()], vec![]), "w1").unwrap();
        let claims = Verifier::new(vec![key], vec![])
            .verify(&t, AUD_CONTROL_PLANE, now_unix())
            .unwrap();
        assert_eq!(claims.worker_id, "w1");
    }
}
