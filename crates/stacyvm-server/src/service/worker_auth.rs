//! Worker credentials: checking the ones workers present (wire §8.1) and issuing signed
//! tokens (`POST /admin/worker-tokens`).

use std::time::Duration;

use stacyvm_auth::{Scope, Scopes};
use stacyvm_types::{parse_go_duration, Timestamp};

use super::Workers;
use crate::error::{ServiceError, ServiceResult};
use crate::log_throttle::LogThrottle;

/// Rejected-credential WARN lines: 20 a minute at most.
static REJECTED_LOG: LogThrottle = LogThrottle::new(20, Duration::from_secs(60));

/// Longest lifetime of an issued token (15 min, the verifier's limit).
const MAX_TOKEN_TTL_SECS: u64 = 900;

/// What an admin asks a token for.
#[derive(Debug, Clone, Default)]
pub struct TokenRequest {
    pub worker_id: String,
    /// Go duration text; empty = 5m.
    pub ttl: String,
    /// Scope names (`worker:heartbeat`, …); an unknown one is refused.
    pub scopes: Vec<String>,
    /// `worker:control-plane` (default) or `worker:rpc`.
    pub audience: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct IssuedToken {
    pub token: String,
    pub worker_id: String,
    pub expires_at: Timestamp,
}

fn now_unix() -> i64 {
    chrono::Utc::now().timestamp()
}

impl Workers<'_> {
    /// The scopes worker `id` holds with `token`. No worker credentials configured is
    /// `NotConfigured`; anything else refused is `Unauthorized` (the reason is only logged).
    pub fn authenticate(self, id: &str, token: &str) -> ServiceResult<Scopes> {
        let Some(auth) = self.svc.worker_auth.as_ref().filter(|a| a.configured()) else {
            return Err(ServiceError::NotConfigured(
                "worker token is not configured".into(),
            ));
        };
        let denied = || ServiceError::Unauthorized("invalid or missing worker credentials".into());
        if id.is_empty() || token.is_empty() {
            return Err(denied());
        }
        auth.authenticate(id, token, now_unix()).map_err(|e| {
            // Anyone who reaches the port can present bad credentials: bound the lines.
            if let Some(held_back) = REJECTED_LOG.admit() {
                tracing::warn!(worker = %id, error = %e, held_back, "worker credential rejected");
            }
            denied()
        })
    }

    /// Signs a token for a worker with the current signing key (a key file is re-read when
    /// rotated), else the configured primary key.
    pub fn issue_token(self, req: TokenRequest) -> ServiceResult<IssuedToken> {
        let current = match self.svc.worker_auth.as_ref().map(|a| a.signing_key()) {
            Some(Ok(k)) => k,
            Some(Err(e)) => {
                tracing::error!(error = %e, "worker signing key unreadable");
                return Err(ServiceError::NotConfigured(
                    "worker signing key is unavailable".into(),
                ));
            }
            None => None,
        };
        let Some(key) = current.or_else(|| self.svc.worker_signing_key.clone()) else {
            return Err(ServiceError::NotConfigured(
                "worker signing key is not configured".into(),
            ));
        };
        let worker_id = req.worker_id.trim();
        if worker_id.is_empty() {
            return Err(ServiceError::bad_request("worker_id is required"));
        }
        let ttl_text = match req.ttl.trim() {
            "" => "5m",
            t => t,
        };
        let ttl = parse_go_duration(ttl_text)
            .ok()
            .and_then(|d| d.to_std())
            .filter(|d| !d.is_zero() && d.as_secs() <= MAX_TOKEN_TTL_SECS)
            .ok_or_else(|| {
                ServiceError::bad_request("ttl must be a positive duration of at most 15m")
            })?;
        // An unknown scope is refused, not silently dropped.
        let scopes = req
            .scopes
            .iter()
            .map(|s| s.parse::<Scope>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| {
                ServiceError::bad_request(format!("{e}; known scopes: {}", Scope::known_list()))
            })?;
        let audience = match req.audience.trim() {
            "" => stacyvm_auth::AUD_CONTROL_PLANE,
            a if a == stacyvm_auth::AUD_CONTROL_PLANE => stacyvm_auth::AUD_CONTROL_PLANE,
            a if a == stacyvm_auth::AUD_RPC => stacyvm_auth::AUD_RPC,
            _ => {
                return Err(ServiceError::bad_request(
                    "audience must be worker:control-plane or worker:rpc",
                ))
            }
        };
        let (token, claims) =
            stacyvm_auth::mint(&key, worker_id, audience, ttl, &scopes, now_unix())
                .map_err(|e| ServiceError::bad_request(e.to_string()))?;
        Ok(IssuedToken {
            token,
            worker_id: worker_id.to_string(),
            expires_at: chrono::DateTime::from_timestamp(claims.exp, 0).unwrap_or_default(),
        })
    }
}
