//! Secret handling: `*_file` twins and redacted `Debug` output.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use crate::{Config, ConfigError};

/// Debug-prints `"<redacted>"` for a non-empty secret and `""` for an empty one, so a dump
/// still shows whether the secret is set.
pub(crate) struct Redacted<'a>(pub &'a str);

impl fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("\"\"")
        } else {
            f.write_str("\"<redacted>\"")
        }
    }
}

/// A list of secrets (signing keys), each shown as [`Redacted`].
pub(crate) fn secret_list(keys: &[String]) -> Vec<Redacted<'_>> {
    keys.iter().map(|k| Redacted(k)).collect()
}

/// `impl Debug` for a section: the fields listed, in order, the ones marked `secret` (a
/// string), `secret_map` (a map of them) or `secret_list` (a list of them) redacted. Each
/// name is written once, not once as text and once as the field.
macro_rules! debug_redacted {
    ($ty:ident { $($field:ident $(: $how:ident)?),* $(,)? }) => {
        impl std::fmt::Debug for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($ty))
                    $(.field(stringify!($field), &debug_redacted!(@show $($how)? self.$field)))*
                    .finish()
            }
        }
    };
    (@show $v:expr) => { $v };
    (@show secret $v:expr) => { $crate::secrets::Redacted(&$v) };
    (@show secret_map $v:expr) => { $crate::secrets::RedactedMap(&$v) };
    (@show secret_list $v:expr) => { $crate::secrets::secret_list(&$v) };
}
pub(crate) use debug_redacted;

/// A map whose keys are public (worker ids) and whose values are secrets (tokens).
pub(crate) struct RedactedMap<'a>(pub &'a BTreeMap<String, String>);

impl fmt::Debug for RedactedMap<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(k, v)| (k, Redacted(v))))
            .finish()
    }
}

/// The secret keys that have a `<key>_file` twin, as dotted paths (a test checks this list
/// against every `*_file` key of the schema).
pub(crate) const SECRET_FILE_KEYS: &[&str] = &[
    "auth.worker_token",
    "auth.worker_signing_key",
    "auth.oidc_public_key",
];

fn twin_mut<'a>(config: &'a mut Config, key: &str) -> Option<(&'a mut String, &'a mut String)> {
    let auth = &mut config.auth;
    match key {
        "auth.worker_token" => Some((&mut auth.worker_token, &mut auth.worker_token_file)),
        "auth.worker_signing_key" => Some((
            &mut auth.worker_signing_key,
            &mut auth.worker_signing_key_file,
        )),
        "auth.oidc_public_key" => Some((&mut auth.oidc_public_key, &mut auth.oidc_public_key_file)),
        _ => None,
    }
}

/// Reads every set `*_file` into its value key (content trimmed) and clears the `_file` key, so
/// the secret has one home afterwards and a second call is a no-op. Setting both the value and
/// the file, an unreadable file and an empty file are errors naming the key, never the content.
/// Returns the files read, by value key, so rotating services can re-read them.
pub(crate) fn resolve_secret_files(
    config: &mut Config,
) -> Result<BTreeMap<String, PathBuf>, ConfigError> {
    let mut read = BTreeMap::new();
    for key in SECRET_FILE_KEYS {
        let Some((value, file)) = twin_mut(config, key) else {
            continue;
        };
        let path = file.trim();
        if path.is_empty() {
            continue;
        }
        let file_key = format!("{key}_file");
        if !value.is_empty() {
            return Err(ConfigError::SecretConflict {
                key: (*key).to_string(),
                file_key,
            });
        }
        let path = PathBuf::from(path);
        let content = std::fs::read_to_string(&path).map_err(|source| ConfigError::SecretRead {
            file_key: file_key.clone(),
            path: path.clone(),
            source,
        })?;
        let content = content.trim();
        if content.is_empty() {
            return Err(ConfigError::SecretEmpty { file_key, path });
        }
        *value = content.to_string();
        file.clear();
        read.insert((*key).to_string(), path);
    }
    Ok(read)
}
