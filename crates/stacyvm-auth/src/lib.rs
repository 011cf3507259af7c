//! Pure worker-auth logic, shared by the control plane, the worker and the CLI.
//!
//! - Signed worker tokens (`stacyvm-worker-v1.<payload>.<sig>`, HMAC-SHA256): [`sign`],
//!   [`mint`], [`Verifier`], [`decode_unverified`].
//! - Static-token and signed-token checks on both ends of the worker link:
//!   [`WorkerAuthenticator`] (control plane) and [`RpcAuthenticator`] (worker).
//! - [`Secret`]: a value given inline or as a file that may be rotated on disk.
//!
//! No I/O besides reading secret files; time is always passed in as unix seconds.
//! See `docs/worker-auth.md` for the formats and rules.

mod authenticator;
mod error;
mod scope;
mod secret;
mod token;

pub use authenticator::{RpcAuthenticator, WorkerAuthenticator};
pub use error::AuthError;
pub use scope::{Scope, Scopes};
pub use secret::Secret;
pub use token::{
    ct_eq, decode_unverified, looks_signed, mint, new_token_id, sign, Claims, Verifier,
    AUD_CONTROL_PLANE, AUD_RPC, MAX_LIFETIME_SECS, SKEW_SECS, TOKEN_PREFIX,
};
