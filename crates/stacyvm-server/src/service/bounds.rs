//! Size limits of client text the store keeps (sandbox and template rows). Sandbox rows stay
//! after destroy, as in the original (history, `GET /sandboxes/{id}` of a destroyed one), so
//! every stored field is bounded where it enters instead: a row is a few hundred KiB at most.

use std::collections::BTreeMap;

use crate::error::{ServiceError, ServiceResult};

/// Names: templates, images (a reference with registry, path and digest fits easily).
pub(super) const MAX_NAME: usize = 128;
pub(super) const MAX_IMAGE: usize = 512;
/// Free text (a template's description, one setup command).
pub(super) const MAX_TEXT: usize = 4096;
/// Entries of a map or list (metadata, env, setup, allowed hosts, secrets).
pub(super) const MAX_ENTRIES: usize = 64;
pub(super) const MAX_KEY: usize = 256;
pub(super) const MAX_VALUE: usize = 4096;

pub(super) fn check_len(field: &str, value: &str, max: usize) -> ServiceResult<()> {
    if value.len() > max {
        return Err(ServiceError::bad_request(format!(
            "{field} is longer than {max} bytes"
        )));
    }
    Ok(())
}

/// At most [`MAX_ENTRIES`] keys of ≤[`MAX_KEY`] bytes with values of ≤[`MAX_VALUE`] bytes.
pub(super) fn check_map(field: &str, map: &BTreeMap<String, String>) -> ServiceResult<()> {
    if map.len() > MAX_ENTRIES
        || map
            .iter()
            .any(|(k, v)| k.len() > MAX_KEY || v.len() > MAX_VALUE)
    {
        return Err(ServiceError::bad_request(format!(
            "{field} is limited to {MAX_ENTRIES} keys of ≤{MAX_KEY} bytes with values ≤{MAX_VALUE} bytes"
        )));
    }
    Ok(())
}

/// At most [`MAX_ENTRIES`] items of ≤`max` bytes each.
pub(super) fn check_list<'a>(
    field: &str,
    items: impl ExactSizeIterator<Item = &'a str>,
    max: usize,
) -> ServiceResult<()> {
    let mut items = items;
    if items.len() > MAX_ENTRIES || items.any(|s| s.len() > max) {
        return Err(ServiceError::bad_request(format!(
            "{field} is limited to {MAX_ENTRIES} entries of ≤{max} bytes"
        )));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn limits_name_the_field() {
        assert!(check_len("template", &"a".repeat(MAX_NAME), MAX_NAME).is_ok());
        let e = check_len("template", &"a".repeat(MAX_NAME + 1), MAX_NAME).unwrap_err();
        assert!(
            e.to_string().contains("template is longer than 128 bytes"),
            "{e}"
        );
        let big: BTreeMap<_, _> = (0..=MAX_ENTRIES)
            .map(|i| (i.to_string(), String::new()))
            .collect();
        assert!(check_map("metadata", &big).is_err());
        let long = BTreeMap::from([("k".to_string(), "v".repeat(MAX_VALUE + 1))]);
        assert!(check_map("env", &long).is_err());
        let setup = ["x".repeat(MAX_TEXT + 1)];
        assert!(check_list("setup", setup.iter().map(String::as_str), MAX_TEXT).is_err());
        assert!(check_list("setup", ["ls"].into_iter(), MAX_TEXT).is_ok());
    }
}
