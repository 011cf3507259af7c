//! `images.*`: the OCI image store (crates/stacyvm-image, docs/images.md) that the `bwrap` and
//! `microvm` providers and `stacyvm image` read root filesystems from.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::secrets::debug_redacted;

/// Where the store lives when `images.root` is empty: the providers' own default, so a
/// provider section that names no store and `images.root` mean the same directory.
pub const DEFAULT_IMAGES_ROOT: &str = stacyvm_provider::DEFAULT_IMAGES_DIR;

#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImagesSection {
    /// The store's directory (blobs, unpacked layers, root filesystems); empty =
    /// [`DEFAULT_IMAGES_ROOT`].
    pub root: String,
    /// Registries (`host` or `host:port`) reached over plain HTTP. Loopback registries always
    /// are.
    pub insecure_registries: Vec<String>,
    /// PEM bundle of the CAs registries are checked against; empty = the system's.
    pub ca_file: String,
    /// Registry logins, `host: "user:password"` (a map of strings so that
    /// `STACYVM_IMAGES_REGISTRY_AUTH` can set it too).
    pub registry_auth: BTreeMap<String, String>,
}

debug_redacted!(ImagesSection {
    root,
    insecure_registries,
    ca_file,
    registry_auth: secret_map,
});

impl ImagesSection {
    /// The store's directory.
    pub fn root_dir(&self) -> std::path::PathBuf {
        if self.root.trim().is_empty() {
            DEFAULT_IMAGES_ROOT.into()
        } else {
            self.root.trim().into()
        }
    }

    /// The login for `host`, split at the first `:`.
    pub fn login(&self, host: &str) -> Option<(&str, &str)> {
        self.registry_auth.get(host)?.split_once(':')
    }

    /// Every `registry_auth` login.
    pub fn credentials(&self) -> stacyvm_image::Credentials {
        self.registry_auth
            .keys()
            .filter_map(|host| self.login(host).map(|(u, p)| (host, u, p)))
            .fold(
                stacyvm_image::Credentials::anonymous(),
                |c, (host, u, p)| c.with_login(host, u, p),
            )
    }

    /// The store at `root` as these settings reach registries: the insecure hosts, the CA file
    /// and the logins (which [`stacyvm_image::ImageStore::rootfs_or_pull`] uses). One place for
    /// `stacyvm image`, the providers that pull on spawn, and any other caller.
    pub fn open_store(
        &self,
        root: std::path::PathBuf,
    ) -> Result<stacyvm_image::ImageStore, crate::ConfigError> {
        use crate::ConfigError;
        let store = stacyvm_image::ImageStore::open(&root).map_err(|e| ConfigError::Key {
            key: "images.root".into(),
            message: format!("{}: {e}", root.display()),
        })?;
        let mut store = store
            .with_insecure_registries(self.insecure_registries.clone())
            .with_credentials(self.credentials());
        if !self.ca_file.is_empty() {
            let pem = std::fs::read(&self.ca_file).map_err(|e| ConfigError::Key {
                key: "images.ca_file".into(),
                message: format!("cannot read {}: {e}", self.ca_file),
            })?;
            store = store.with_ca_certificates(pem);
        }
        Ok(store)
    }
}

/// `images.*` rules: an absolute root, logins of the form `user:password`.
pub(crate) fn check(s: &ImagesSection, errors: &mut Vec<crate::ConfigError>) {
    use crate::ConfigError;
    if !s.root.trim().is_empty() && !std::path::Path::new(s.root.trim()).is_absolute() {
        errors.push(ConfigError::invalid(
            "images.root",
            format!("{:?} is not an absolute path", s.root),
        ));
    }
    if !s.ca_file.is_empty() && !std::path::Path::new(&s.ca_file).is_absolute() {
        errors.push(ConfigError::invalid(
            "images.ca_file",
            format!("{:?} is not an absolute path", s.ca_file),
        ));
    }
    for (host, login) in &s.registry_auth {
        if !login.contains(':') {
            // The value is a secret: name the host only.
            errors.push(ConfigError::invalid(
                format!("images.registry_auth.{host}"),
                "must be \"user:password\"",
            ));
        }
    }
    for (i, host) in s.insecure_registries.iter().enumerate() {
        if host.is_empty() || host.contains('/') || host.chars().any(char::is_whitespace) {
            errors.push(ConfigError::invalid(
                format!("images.insecure_registries[{i}]"),
                format!("{host:?} is not a host or host:port"),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The store `stacyvm image` and the providers open: an unreadable CA file is named by its
    /// key; the logins are split at the first `:` (a password may contain more).
    #[test]
    fn open_store_reads_the_ca_file_and_the_logins() {
        let t = tempfile::tempdir().expect("tempdir");
        let mut s = ImagesSection {
            ca_file: t.path().join("missing.pem").display().to_string(),
            ..ImagesSection::default()
        };
        s.registry_auth
            .insert("reg.example:5000".into(), "me:pa:ss".into());
        let err = s
            .open_store(t.path().join("store"))
            .expect_err("missing CA file");
        assert!(
            err.to_string().starts_with("images.ca_file: cannot read "),
            "{err}"
        );
        assert_eq!(s.login("reg.example:5000"), Some(("me", "pa:ss")));
        assert!(format!("{:?}", s.credentials()).contains("reg.example:5000"));
        assert!(!format!("{:?}", s.credentials()).contains("pa:ss"));

        std::fs::write(t.path().join("ca.pem"), "").expect("ca");
        s.ca_file = t.path().join("ca.pem").display().to_string();
        let store = s.open_store(t.path().join("store")).expect("open");
        assert_eq!(store.root(), t.path().join("store"));
    }
}
