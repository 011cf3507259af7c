//! Finding the file, reading it, applying env overrides, and deserialising (strict).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_norway::Value;

use crate::{env, validate, Config, ConfigError, ValidConfig, CONFIG_ENV_VAR};

/// Where [`Config::load_from`] looks: injected so tests never touch the process environment.
#[derive(Debug, Clone)]
pub struct Sources {
    /// Environment variables (`STACYVM_*` overrides, `STACYVM_CONFIG`, `HOME`).
    pub env: BTreeMap<String, String>,
    /// Directory that `./stacyvm.yaml` and a relative `STACYVM_CONFIG` resolve against.
    pub cwd: PathBuf,
}

impl Sources {
    pub fn new<K, V>(cwd: impl Into<PathBuf>, env: impl IntoIterator<Item = (K, V)>) -> Self
    where
        K: Into<String>,
        V: Into<String>,
    {
        Sources {
            env: env.into_iter().map(|(k, v)| (k.into(), v.into())).collect(),
            cwd: cwd.into(),
        }
    }

    /// The real process environment and working directory. Variables that are not valid UTF-8
    /// are skipped (none of ours can be).
    pub fn from_process() -> Result<Self, ConfigError> {
        let cwd = std::env::current_dir().map_err(ConfigError::CurrentDir)?;
        let env = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect::<BTreeMap<_, _>>();
        Ok(Sources { env, cwd })
    }

    fn var(&self, name: &str) -> Option<&str> {
        self.env
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// The config file to read, if any, in lookup order.
    pub fn locate(&self) -> Result<Option<PathBuf>, ConfigError> {
        if let Some(explicit) = self.var(CONFIG_ENV_VAR) {
            let path = self.cwd.join(explicit);
            if !path.is_file() {
                return Err(ConfigError::ExplicitFileMissing { path });
            }
            return Ok(Some(path));
        }
        let local = self.cwd.join("stacyvm.yaml");
        if local.is_file() {
            return Ok(Some(local));
        }
        if let Some(home) = self.var("HOME") {
            let home_cfg = Path::new(home).join(".stacyvm").join("config.yaml");
            if home_cfg.is_file() {
                return Ok(Some(home_cfg));
            }
        }
        Ok(None)
    }
}

impl Config {
    /// Loads from the process environment and working directory (see the module docs).
    pub fn load() -> Result<Config, ConfigError> {
        Config::load_from(&Sources::from_process()?)
    }

    /// Loads with injected sources: file lookup, then env overrides.
    pub fn load_from(sources: &Sources) -> Result<Config, ConfigError> {
        let Some(path) = sources.locate()? else {
            return Config::build(None, "built-in defaults", &sources.env);
        };
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        let mut config = Config::build(Some(&text), &path.display().to_string(), &sources.env)?;
        config.source = Some(path);
        Ok(config)
    }

    /// Parses YAML text with no env overrides (tests, `config lint`).
    pub fn from_yaml_str(yaml: &str) -> Result<Config, ConfigError> {
        Config::build(Some(yaml), "config", &BTreeMap::new())
    }

    /// Parses YAML text, then applies `STACYVM_*` overrides from `env`.
    pub fn from_yaml_str_with_env<K, V>(
        yaml: &str,
        env: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Config, ConfigError>
    where
        K: Into<String>,
        V: Into<String>,
    {
        let env = env
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect::<BTreeMap<_, _>>();
        Config::build(Some(yaml), "config", &env)
    }

    /// Every leaf key as `(dotted key, env var)`, in schema order (docs and tests use it).
    pub fn keys() -> Vec<(String, String)> {
        env::leaves(&defaults_tree())
            .iter()
            .map(|l| (l.dotted(), l.env_var()))
            .collect()
    }

    /// Checks every rule, resolves `*_file` secrets, and returns the validated config.
    pub fn validate(self) -> Result<ValidConfig, ConfigError> {
        validate::validate(self)
    }

    /// Like [`Config::validate`], but on failure returns every error (and the warnings), for
    /// `stacyvm config lint`. `validate` fails with the first of these errors.
    pub fn validate_all(self) -> Result<ValidConfig, validate::Invalid> {
        validate::validate_all(self)
    }

    fn build(
        yaml: Option<&str>,
        origin: &str,
        env: &BTreeMap<String, String>,
    ) -> Result<Config, ConfigError> {
        let mut tree = match yaml {
            Some(text) => {
                serde_norway::from_str::<Value>(text).map_err(|source| ConfigError::Syntax {
                    origin: origin.to_string(),
                    source,
                })?
            }
            None => Value::Null,
        };
        let defaults = defaults_tree();
        env::normalize(&mut tree, &defaults);
        let from_env = env::apply_env(&mut tree, &defaults, env)?;
        serde_path_to_error::deserialize::<_, Config>(tree).map_err(|err| {
            let key = match err.path().to_string() {
                root if root == "." => "(top level)".to_string(),
                key => key,
            };
            let message = err.inner().to_string();
            match from_env.get(&key) {
                Some(var) => ConfigError::Env {
                    var: var.clone(),
                    key,
                    message,
                },
                None => ConfigError::Key { key, message },
            }
        })
    }
}

/// The default config as a YAML tree: the schema the env walker and warnings work from.
pub(crate) fn defaults_tree() -> Value {
    // Serialising plain structs of strings, numbers and maps cannot fail; an empty tree would
    // only disable env overrides, never panic.
    serde_norway::to_value(Config::default()).unwrap_or(Value::Null)
}
