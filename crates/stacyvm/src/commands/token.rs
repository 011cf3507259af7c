//! `stacyvm worker token`: issue, inspect, verify, rotation-plan (wire §12, docs/worker-auth.md).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Serialize;
use stacyvm_auth::{
    decode_unverified, mint, sign, Claims, Scope, Secret, Verifier, AUD_CONTROL_PLANE, AUD_RPC,
    MAX_LIFETIME_SECS, SKEW_SECS,
};
use stacyvm_config::{Config, ValidConfig};
use stacyvm_types::{format_go_duration, parse_go_duration};

use crate::cli_token::{
    IssueArgs, IssueFormat, PlanFormat, RotationPlanArgs, TokenArgs, TokenCommand, VerifyArgs,
};

const SIGNING_KEY_ENV: &str = "STACYVM_AUTH_WORKER_SIGNING_KEY";

pub fn run(args: TokenArgs) -> anyhow::Result<ExitCode> {
    let out = match args.command {
        None => issue(args.issue, now_unix())?,
        Some(TokenCommand::Inspect { token }) => to_json(&inspect(&token)?)?,
        Some(TokenCommand::Verify(v)) => verify(v, now_unix())?,
        Some(TokenCommand::RotationPlan(p)) => rotation_plan(p)?,
    };
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}

fn now_unix() -> i64 {
    chrono::Utc::now().timestamp()
}

fn load_config() -> anyhow::Result<ValidConfig> {
    Config::load()
        .context("loading configuration")?
        .validate()
        .context("invalid configuration")
}

/// Go's 2-space indented encoder output, with its trailing newline.
fn to_json<T: Serialize>(v: &T) -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(v)? + "\n")
}

fn rfc3339(unix: i64) -> String {
    if unix <= 0 {
        return String::new();
    }
    chrono::DateTime::from_timestamp(unix, 0)
        .map(|t| stacyvm_types::format_rfc3339_secs(&t))
        .unwrap_or_default()
}

fn read_secret_file(path: &str, what: &str) -> anyhow::Result<String> {
    Secret::file(path.trim())
        .get()
        .with_context(|| format!("reading the {what} file"))
}

/// --signing-key-file, else --signing-key, else $STACYVM_AUTH_WORKER_SIGNING_KEY.
fn explicit_signing_key(
    flag: Option<String>,
    file: Option<&str>,
) -> anyhow::Result<Option<String>> {
    if let Some(path) = file {
        return read_secret_file(path, "signing key").map(Some);
    }
    let key = flag.or_else(|| std::env::var(SIGNING_KEY_ENV).ok());
    Ok(key.map(|k| k.trim().to_string()).filter(|k| !k.is_empty()))
}

/// A non-negative Go duration.
fn duration_flag(flag: &str, value: &str) -> anyhow::Result<Duration> {
    let d = parse_go_duration(value.trim()).with_context(|| format!("--{flag}"))?;
    d.to_std()
        .with_context(|| format!("--{flag} must not be negative (got {value})"))
}

fn token_ttl(value: &str) -> anyhow::Result<Duration> {
    let ttl = duration_flag("ttl", value)?;
    let max = Duration::from_secs(MAX_LIFETIME_SECS.unsigned_abs());
    if ttl < Duration::from_secs(1) || ttl > max {
        bail!("--ttl must be at least 1s and at most 15m0s (got {value})");
    }
    Ok(ttl)
}

fn check_audience(aud: &str) -> anyhow::Result<()> {
    if aud != AUD_CONTROL_PLANE && aud != AUD_RPC {
        bail!("--audience must be {AUD_CONTROL_PLANE:?} or {AUD_RPC:?} (got {aud:?})");
    }
    Ok(())
}

#[derive(Debug, Serialize)]
struct IssueResult {
    token: String,
    token_id: String,
    worker_id: String,
    audience: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    scopes: Vec<String>,
    issued_at: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    not_before: String,
    expires_at: String,
}

fn issue(a: IssueArgs, now: i64) -> anyhow::Result<String> {
    let worker_id = a
        .worker_id
        .as_deref()
        .unwrap_or_default()
        .trim()
        .to_string();
    if worker_id.is_empty() {
        bail!("worker id is required");
    }
    let ttl = token_ttl(&a.ttl)?;
    let audience = a.audience.trim();
    check_audience(audience)?;
    let delay = duration_flag("not-before", &a.not_before)?;
    if delay >= ttl {
        bail!(
            "--not-before ({}) must be shorter than --ttl ({})",
            a.not_before,
            a.ttl
        );
    }
    // The control plane and workers refuse a token with an unknown scope: refuse it here first.
    let scopes = a
        .scopes
        .iter()
        .map(|s| s.parse::<Scope>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("{e}; known scopes: {}", Scope::known_list()))?;
    let key = match explicit_signing_key(a.signing_key, a.signing_key_file.as_deref())? {
        Some(k) => k,
        None => {
            let cfg = load_config()?;
            cfg.config().auth.worker_signing_key.trim().to_string()
        }
    };
    if key.is_empty() {
        bail!(
            "worker signing key is required (--signing-key, --signing-key-file, \
             ${SIGNING_KEY_ENV} or auth.worker_signing_key)"
        );
    }
    let (_, mut claims) = mint(&key, &worker_id, audience, ttl, &scopes, now)?;
    let token_id = a.token_id.as_deref().unwrap_or_default().trim();
    if !token_id.is_empty() {
        claims.jti = token_id.to_string();
    }
    if !delay.is_zero() {
        claims.nbf = now.saturating_add(i64::try_from(delay.as_secs()).unwrap_or(i64::MAX));
    }
    let token = sign(&key, &claims);
    Ok(match a.format {
        IssueFormat::Token => format!("{token}\n"),
        IssueFormat::Json => to_json(&IssueResult {
            token,
            token_id: claims.jti,
            worker_id: claims.worker_id,
            audience: claims.aud,
            scopes: claims.scopes,
            issued_at: rfc3339(claims.iat),
            not_before: rfc3339(claims.nbf),
            expires_at: rfc3339(claims.exp),
        })?,
    })
}

#[derive(Debug, Serialize)]
struct InspectResult {
    signature_verified: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    worker_id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    token_id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    audience: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    scopes: Vec<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    issued_at: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    not_before: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    expires_at: String,
}

impl InspectResult {
    fn new(c: Claims, signature_verified: bool) -> Self {
        Self {
            signature_verified,
            issued_at: rfc3339(c.iat),
            not_before: rfc3339(c.nbf),
            expires_at: rfc3339(c.exp),
            worker_id: c.worker_id,
            token_id: c.jti,
            audience: c.aud,
            scopes: c.scopes,
        }
    }
}

fn inspect(token: &str) -> anyhow::Result<InspectResult> {
    let claims = decode_unverified(token.trim()).context("invalid signed worker token format")?;
    Ok(InspectResult::new(claims, false))
}

fn verify(a: VerifyArgs, now: i64) -> anyhow::Result<String> {
    let cfg = load_config()?;
    let revoked = cfg.config().auth.worker_revoked_token_ids.clone();
    verify_with(a, cfg.worker_signing_keys(), revoked, now)
}

/// `config_keys`/`config_revoked`: `auth.worker_signing_key[s]` and
/// `auth.worker_revoked_token_ids`, always honoured on top of the flags.
fn verify_with(
    a: VerifyArgs,
    config_keys: Vec<String>,
    config_revoked: Vec<String>,
    now: i64,
) -> anyhow::Result<String> {
    let token = a.token.trim();
    let primary = match explicit_signing_key(a.signing_key, a.signing_key_file.as_deref())? {
        Some(k) => vec![k],
        None => Vec::new(),
    };
    let mut keys: Vec<String> = primary
        .into_iter()
        .chain(config_keys)
        .chain(a.verification_keys)
        .collect();
    for path in &a.verification_key_files {
        keys.push(read_secret_file(path, "verification key")?);
    }
    let mut revoked = config_revoked;
    revoked.extend(a.revoked_token_ids);
    let verifier = Verifier::new(keys, revoked);
    if verifier.is_empty() {
        bail!(
            "worker signing key is required (--signing-key, --signing-key-file, \
             --verification-key, ${SIGNING_KEY_ENV} or auth.worker_signing_key[s])"
        );
    }
    let audience = match a.audience.as_deref().map(str::trim) {
        Some(aud) => {
            check_audience(aud)?;
            aud.to_string()
        }
        // No expectation given: accept whichever known audience the token names.
        None => match decode_unverified(token) {
            Ok(c) if c.aud == AUD_RPC => AUD_RPC.to_string(),
            _ => AUD_CONTROL_PLANE.to_string(),
        },
    };
    let claims = verifier
        .verify(token, &audience, now)
        .context("worker token verification failed")?;
    if let Some(expected) = a
        .worker_id
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        if claims.worker_id != expected {
            bail!(
                "worker token verification failed: token is for worker {:?}, expected {expected:?}",
                claims.worker_id
            );
        }
    }
    to_json(&InspectResult::new(claims, true))
}

#[derive(Debug, Serialize)]
struct RotationPlan {
    new_key_ref: String,
    previous_key_ref: String,
    max_token_ttl: String,
    steps: Vec<String>,
    config_snippet: String,
    validation: Vec<String>,
    text: String,
}

fn rotation_plan(a: RotationPlanArgs) -> anyhow::Result<String> {
    let new_ref = a.new_key_ref.trim();
    let prev_ref = a.previous_key_ref.trim();
    if new_ref.is_empty() || prev_ref.is_empty() {
        bail!("--new-key-ref and --previous-key-ref must not be empty");
    }
    let ttl = token_ttl(&a.ttl)?;
    let ttl_s = format_go_duration(i64::try_from(ttl.as_nanos()).unwrap_or(i64::MAX));
    let wait = format_go_duration(
        i64::try_from((ttl + Duration::from_secs(SKEW_SECS.unsigned_abs())).as_nanos())
            .unwrap_or(i64::MAX),
    );
    let steps = vec![
        format!(
            "Add the new key as the active signing key ({new_ref}) and move the current one \
             to the verification list ({prev_ref}), on the control plane and on every worker."
        ),
        "Restart (or reload) the control plane and the workers: new tokens are signed with the \
         new key, tokens signed with the previous key still verify."
            .to_string(),
        format!(
            "Wait at least {wait} (the longest token lifetime in use, {ttl_s}, plus {SKEW_SECS}s \
             clock skew) so every token signed with the previous key has expired."
        ),
        format!("Remove the previous key ({prev_ref}) everywhere and restart again."),
        "If a token leaked, add its token id (jti) to auth.worker_revoked_token_ids instead of \
         waiting."
            .to_string(),
    ];
    let config_snippet = format!(
        "auth:\n  worker_signing_key: \"<new key from {new_ref}>\"\n  worker_signing_keys:\n    \
         - \"<previous key from {prev_ref}>\"\n"
    );
    let validation = vec![
        format!("stacyvm worker token <worker-id> --ttl {ttl_s} --format json"),
        "stacyvm worker token verify '<signed-worker-token>' --worker-id <worker-id> \
         --audience worker:control-plane"
            .to_string(),
    ];
    let mut text = format!(
        "Signed worker token rotation plan\n\nKey references:\n- new active key: {new_ref}\n\
         - previous verification key: {prev_ref}\n- maximum token TTL: {ttl_s}\n\nSteps:\n"
    );
    for (i, step) in steps.iter().enumerate() {
        text.push_str(&format!("{}. {step}\n", i + 1));
    }
    text.push_str("\nConfig sketch:\n");
    text.push_str(&config_snippet);
    text.push_str("\nValidation:\n");
    for v in &validation {
        text.push_str(&format!("- {v}\n"));
    }
    let plan = RotationPlan {
        new_key_ref: new_ref.to_string(),
        previous_key_ref: prev_ref.to_string(),
        max_token_ttl: ttl_s,
        steps,
        config_snippet,
        validation,
        text,
    };
    match a.format {
        PlanFormat::Text => Ok(plan.text),
        PlanFormat::Json => to_json(&plan),
    }
}

#[cfg(test)]
#[path = "token_tests.rs"]
mod tests;
