//! Who may call whom: the control plane's check of `/api/v1/worker/*` callers, the credential
//! it presents to a worker's `/rpc`, and the worker's check of `/rpc` callers.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::token::{ct_eq, looks_signed, mint, Verifier, AUD_CONTROL_PLANE, AUD_RPC};
use crate::{AuthError, Scopes, Secret};

/// Lifetime of the `worker:rpc` tokens the control plane mints per call.
const RPC_TOKEN_TTL: Duration = Duration::from_secs(300);

/// Control-plane side credentials (wire §8.1, §8.4 and DECISIONS.md).
#[derive(Debug)]
pub struct WorkerAuthenticator {
    shared: Option<Secret>,
    per_worker: BTreeMap<String, String>,
    verifier: Verifier,
}

impl WorkerAuthenticator {
    /// `shared`: `auth.worker_token` (inline or `_file`); `per_worker`: `auth.worker_tokens`;
    /// `verifier`: signing keys + revoked ids. Empty tokens count as not configured.
    pub fn new(
        shared: Option<Secret>,
        per_worker: BTreeMap<String, String>,
        verifier: Verifier,
    ) -> Self {
        Self {
            shared: shared.filter(|s| !s.is_unset()),
            per_worker: per_worker
                .into_iter()
                .filter(|(id, tok)| !id.is_empty() && !tok.is_empty())
                .collect(),
            verifier,
        }
    }

    /// The current primary signing key (re-read when it comes from a file), for issuing tokens.
    pub fn signing_key(&self) -> Result<Option<String>, AuthError> {
        self.verifier.primary_key()
    }

    /// False when no worker credential of any kind is configured (the API answers 503).
    pub fn configured(&self) -> bool {
        self.shared.is_some() || !self.per_worker.is_empty() || !self.verifier.is_empty()
    }

    /// The scopes granted to a caller of `/api/v1/worker/*` that sent `X-Worker-ID: worker_id`
    /// (already trimmed by the caller) and `token`.
    ///
    /// 1. A token with a valid signature (aud `worker:control-plane`) decides alone: its
    ///    `worker_id` must equal `worker_id`, its `jti` must not be revoked, its claims must
    ///    pass every check (an unknown scope included); any failure is final (no fallback to
    ///    static tokens). Scopes are the claim's, or all of them when it names none.
    /// 2. Otherwise, a worker with its own `auth.worker_tokens` entry must present exactly that
    ///    (the shared token is refused for it); any other worker must present the shared token.
    ///    Static tokens grant all scopes.
    pub fn authenticate(
        &self,
        worker_id: &str,
        token: &str,
        now_unix: i64,
    ) -> Result<Scopes, AuthError> {
        if worker_id.is_empty() || token.is_empty() {
            return Err(AuthError::InvalidCredentials);
        }
        let mut signed_err = None;
        if looks_signed(token) && !self.verifier.is_empty() {
            match self.verifier.verify(token, AUD_CONTROL_PLANE, now_unix) {
                Ok(claims) if claims.worker_id == worker_id => {
                    return Scopes::from_claim(&claims.scopes);
                }
                Ok(_) => return Err(AuthError::WorkerMismatch),
                // Not signed by any of our keys: it may still be a static token.
                Err(e @ (AuthError::BadSignature | AuthError::Malformed)) => signed_err = Some(e),
                Err(e) => return Err(e),
            }
        }
        let expected = match self.per_worker.get(worker_id) {
            Some(own) => Some(own.clone()),
            None => match &self.shared {
                Some(secret) => Some(secret.get()?),
                None => None,
            },
        };
        match expected {
            Some(exp) if !exp.is_empty() && ct_eq(&exp, token) => Ok(Scopes::ALL),
            _ => Err(signed_err.unwrap_or(AuthError::InvalidCredentials)),
        }
    }

    /// The token the control plane sends (`X-Worker-Token`) when calling worker `worker_id`'s
    /// RPC: its `auth.worker_tokens` entry, else the shared token, else a fresh 5-minute
    /// `worker:rpc` token signed with the primary key, else `None`.
    pub fn rpc_credential_for(
        &self,
        worker_id: &str,
        now_unix: i64,
    ) -> Result<Option<String>, AuthError> {
        if let Some(own) = self.per_worker.get(worker_id) {
            return Ok(Some(own.clone()));
        }
        if let Some(shared) = &self.shared {
            return shared.get().map(Some);
        }
        match self.verifier.primary_key()? {
            Some(key) => mint(&key, worker_id, AUD_RPC, RPC_TOKEN_TTL, &[], now_unix)
                .map(|(token, _)| Some(token)),
            None => Ok(None),
        }
    }
}

/// Worker side check of `/rpc` callers (wire §8.4): the caller must name this worker and
/// present either this worker's own static token or a signed `worker:rpc` token for it.
#[derive(Debug)]
pub struct RpcAuthenticator {
    worker_id: String,
    static_token: Option<Secret>,
    verifier: Verifier,
}

impl RpcAuthenticator {
    pub fn new(worker_id: String, static_token: Option<Secret>, verifier: Verifier) -> Self {
        Self {
            worker_id,
            static_token: static_token.filter(|s| !s.is_unset()),
            verifier,
        }
    }

    /// False when neither a static token nor a signing key is set: every call is refused.
    pub fn configured(&self) -> bool {
        self.static_token.is_some() || !self.verifier.is_empty()
    }

    /// `header_worker_id` is compared exactly (untrimmed), as the original does.
    pub fn authenticate(
        &self,
        header_worker_id: &str,
        token: &str,
        now_unix: i64,
    ) -> Result<(), AuthError> {
        if header_worker_id != self.worker_id {
            return Err(AuthError::WorkerMismatch);
        }
        if token.is_empty() {
            return Err(AuthError::InvalidCredentials);
        }
        let mut last_err = AuthError::InvalidCredentials;
        if let Some(secret) = &self.static_token {
            match secret.get() {
                Ok(own) if !own.is_empty() && ct_eq(&own, token) => return Ok(()),
                Ok(_) => {}
                Err(e) => last_err = e,
            }
        }
        if looks_signed(token) && !self.verifier.is_empty() {
            let claims = self.verifier.verify(token, AUD_RPC, now_unix)?;
            if claims.worker_id != self.worker_id {
                return Err(AuthError::WorkerMismatch);
            }
            return Ok(());
        }
        Err(last_err)
    }
}

#[cfg(test)]
#[path = "authenticator_tests.rs"]
mod tests;
