//! The one error enum of this crate.

use std::path::PathBuf;
use std::time::Duration;

/// Why a credential or token was refused, or could not be produced.
///
/// The HTTP layers map every variant except `NoSigningKey`, `Secret` and `InvalidTtl` to 401;
/// the variants stay distinct so logs can say why.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("malformed signed worker token")]
    Malformed,
    #[error("signed worker token has an invalid signature")]
    BadSignature,
    #[error("signed worker token has expired")]
    Expired,
    #[error("signed worker token is not valid yet")]
    NotYetValid,
    #[error("signed worker token lifetime exceeds 15m0s")]
    LifetimeTooLong,
    #[error("signed worker token audience does not match")]
    WrongAudience,
    #[error("signed worker token lacks the required `{0}` claim")]
    MissingClaim(&'static str),
    #[error("worker credential does not match requested worker")]
    WorkerMismatch,
    #[error("signed worker token has been revoked")]
    Revoked,
    #[error("unknown worker scope {0:?}")]
    UnknownScope(String),
    #[error("invalid or missing worker credentials")]
    InvalidCredentials,
    #[error("no worker signing key is configured")]
    NoSigningKey,
    #[error("secret file {}: {reason}", path.display())]
    Secret { path: PathBuf, reason: String },
    #[error("worker token ttl {0:?} must be at least 1s and at most 15m0s")]
    InvalidTtl(Duration),
}
