//! `stacyvm worker token ...`: issue, inspect and verify signed worker tokens (wire §12).

use clap::{Args, Subcommand, ValueEnum};

/// `stacyvm worker token <worker-id>` issues a token; the subcommands inspect or verify one.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct TokenArgs {
    #[command(subcommand)]
    pub command: Option<TokenCommand>,
    #[command(flatten)]
    pub issue: IssueArgs,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print a token's claims WITHOUT verifying its signature.
    Inspect {
        /// The signed worker token.
        token: String,
    },
    /// Verify a token against the signing keys and revocation list; exits non-zero if invalid.
    Verify(VerifyArgs),
    /// Print a key-rotation plan (names key references, never key material).
    RotationPlan(RotationPlanArgs),
}

#[derive(Debug, Args)]
pub struct IssueArgs {
    /// Worker id the token is issued for.
    #[arg(required = true, value_name = "WORKER_ID")]
    pub worker_id: Option<String>,
    /// Signing key (default: $STACYVM_AUTH_WORKER_SIGNING_KEY, then auth.worker_signing_key).
    #[arg(long)]
    pub signing_key: Option<String>,
    /// File holding the signing key (content trimmed); conflicts with --signing-key.
    #[arg(long, conflicts_with = "signing_key")]
    pub signing_key_file: Option<String>,
    /// Token lifetime, Go duration, > 0 and <= 15m.
    #[arg(long, default_value = "5m", allow_hyphen_values = true)]
    pub ttl: String,
    /// Token audience.
    #[arg(long, default_value = stacyvm_auth::AUD_CONTROL_PLANE)]
    pub audience: String,
    /// Explicit token id (`jti`) for incident tracking; random 32 hex when empty.
    #[arg(long)]
    pub token_id: Option<String>,
    /// Delay before the token becomes valid (sets `nbf`), Go duration, < --ttl.
    #[arg(long, default_value = "0s", allow_hyphen_values = true)]
    pub not_before: String,
    /// Worker scope to include (repeatable); none means all worker scopes.
    #[arg(long = "scope")]
    pub scopes: Vec<String>,
    /// Output format.
    #[arg(long, value_enum, ignore_case = true, default_value = "token")]
    pub format: IssueFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IssueFormat {
    Token,
    Json,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The signed worker token.
    pub token: String,
    /// Active signing key (default: $STACYVM_AUTH_WORKER_SIGNING_KEY, then config).
    #[arg(long)]
    pub signing_key: Option<String>,
    /// File holding the active signing key; conflicts with --signing-key.
    #[arg(long, conflicts_with = "signing_key")]
    pub signing_key_file: Option<String>,
    /// Additional key accepted during rotation (repeatable).
    #[arg(long = "verification-key")]
    pub verification_keys: Vec<String>,
    /// File holding an additional key accepted during rotation (repeatable).
    #[arg(long = "verification-key-file")]
    pub verification_key_files: Vec<String>,
    /// Expected audience; when omitted, the token's own audience if it is a known one.
    #[arg(long)]
    pub audience: Option<String>,
    /// Expected worker id.
    #[arg(long)]
    pub worker_id: Option<String>,
    /// Token id to treat as revoked, on top of auth.worker_revoked_token_ids (repeatable).
    #[arg(long = "revoked-token-id")]
    pub revoked_token_ids: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RotationPlanArgs {
    /// Where the operator keeps the new active key.
    #[arg(long, default_value = "auth.worker_signing_key")]
    pub new_key_ref: String,
    /// Where the operator keeps the previous key during the overlap.
    #[arg(long, default_value = "auth.worker_signing_keys[0]")]
    pub previous_key_ref: String,
    /// Longest token lifetime in use (wait this long, plus skew, before dropping the old key).
    #[arg(long, default_value = "5m")]
    pub ttl: String,
    /// Output format.
    #[arg(long, value_enum, ignore_case = true, default_value = "text")]
    pub format: PlanFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PlanFormat {
    Text,
    Json,
}
