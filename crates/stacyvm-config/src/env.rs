//! The YAML tree between file and struct: normalising what the file says, and applying
//! `STACYVM_A_B_C` environment overrides. Keys are found by walking the *default* config's tree,
//! so names with underscores (`worker_token` vs `worker_tokens`) resolve exactly.

use std::collections::BTreeMap;

use serde_norway::{Mapping, Number, Value};

use crate::ConfigError;

/// The shape of a leaf key, read off its default value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LeafKind {
    Bool,
    Int,
    Float,
    /// Strings, including Go durations.
    Str,
    List,
    /// A free-form string map such as `auth.worker_tokens` (an empty mapping in the defaults).
    Map,
}

#[derive(Debug, Clone)]
pub(crate) struct Leaf {
    pub path: Vec<String>,
    pub kind: LeafKind,
}

impl Leaf {
    pub fn dotted(&self) -> String {
        self.path.join(".")
    }

    pub fn env_var(&self) -> String {
        format!("STACYVM_{}", self.path.join("_").to_ascii_uppercase())
    }
}

fn kind_of(v: &Value) -> Option<LeafKind> {
    Some(match v {
        Value::Bool(_) => LeafKind::Bool,
        Value::Number(n) if n.is_f64() => LeafKind::Float,
        Value::Number(_) => LeafKind::Int,
        Value::String(_) => LeafKind::Str,
        Value::Sequence(_) => LeafKind::List,
        Value::Mapping(m) if m.is_empty() => LeafKind::Map,
        _ => return None,
    })
}

/// Every leaf key of the defaults tree (a non-empty mapping is a section, not a leaf).
pub(crate) fn leaves(defaults: &Value) -> Vec<Leaf> {
    fn walk(v: &Value, path: &mut Vec<String>, out: &mut Vec<Leaf>) {
        if let Value::Mapping(m) = v {
            if !m.is_empty() {
                for (k, child) in m {
                    if let Value::String(k) = k {
                        path.push(k.clone());
                        walk(child, path, out);
                        path.pop();
                    }
                }
                return;
            }
        }
        if let Some(kind) = kind_of(v) {
            out.push(Leaf {
                path: path.clone(),
                kind,
            });
        }
    }
    let mut out = Vec::new();
    walk(defaults, &mut Vec::new(), &mut out);
    out
}

fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "1" => Some(true),
        "false" | "0" => Some(false),
        _ => None,
    }
}

fn split_list(s: &str) -> Vec<Value> {
    s.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| Value::String(s.to_string()))
        .collect()
}

/// Turns an env string into a YAML value of the leaf's kind.
fn env_value(kind: LeafKind, raw: &str) -> Result<Value, String> {
    Ok(match kind {
        LeafKind::Str => Value::String(raw.to_string()),
        LeafKind::Bool => Value::Bool(
            parse_bool(raw).ok_or_else(|| format!("{raw:?} is not a boolean (true/false/1/0)"))?,
        ),
        LeafKind::Int => Value::Number(
            raw.trim()
                .parse::<i64>()
                .map_err(|_| format!("{raw:?} is not an integer"))?
                .into(),
        ),
        LeafKind::Float => {
            let f = raw
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .ok_or_else(|| format!("{raw:?} is not a number"))?;
            Value::Number(Number::from(f))
        }
        LeafKind::List => Value::Sequence(split_list(raw)),
        LeafKind::Map => {
            let mut m = Mapping::new();
            for item in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let (k, v) = item
                    .split_once('=')
                    .ok_or_else(|| format!("entry {item:?} is not key=value"))?;
                let k = k.trim();
                if k.is_empty() {
                    return Err(format!("entry {item:?} has an empty key"));
                }
                m.insert(
                    Value::String(k.to_string()),
                    Value::String(v.trim().to_string()),
                );
            }
            Value::Mapping(m)
        }
    })
}

/// Coerces a file scalar to the leaf's kind the way the original's loader did (`port: "7423"`,
/// `image: 3.11`, `ttl: 0`, `origins: "*"`). Values that cannot be coerced are left for serde
/// to reject with the key's path.
fn coerce(kind: LeafKind, v: &mut Value) {
    let scalar_string = |v: &Value| match v {
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    match kind {
        LeafKind::Str => {
            if let Some(s) = scalar_string(v) {
                *v = Value::String(s);
            }
        }
        LeafKind::Bool | LeafKind::Int | LeafKind::Float => {
            if let Value::String(s) = v {
                if let Ok(parsed) = env_value(kind, s) {
                    *v = parsed;
                }
            }
        }
        LeafKind::List => match v {
            Value::String(s) => *v = Value::Sequence(split_list(s)),
            Value::Sequence(items) => {
                for item in items {
                    if let Some(s) = scalar_string(item) {
                        *item = Value::String(s);
                    }
                }
            }
            _ => {}
        },
        LeafKind::Map => {
            if let Value::Mapping(m) = v {
                for (_, item) in m.iter_mut() {
                    if let Some(s) = scalar_string(item) {
                        *item = Value::String(s);
                    }
                }
            }
        }
    }
}

/// Normalises a file tree against the defaults: an empty document or section (`auth:`) is an
/// empty mapping, a known key set to null falls back to its default, and scalars are coerced.
/// Unknown keys are kept so deserialisation reports them.
pub(crate) fn normalize(file: &mut Value, defaults: &Value) {
    let Value::Mapping(dm) = defaults else {
        return;
    };
    if dm.is_empty() {
        // A free-form map leaf.
        if let Some(kind) = kind_of(defaults) {
            coerce(kind, file);
        }
        return;
    }
    if file.is_null() {
        *file = Value::Mapping(Mapping::new());
    }
    let Value::Mapping(fm) = file else {
        return;
    };
    fm.retain(|k, v| !(v.is_null() && dm.contains_key(k)));
    for (k, v) in fm.iter_mut() {
        let Some(d) = dm.get(k) else {
            continue;
        };
        match d {
            Value::Mapping(_) => normalize(v, d),
            _ => {
                if let Some(kind) = kind_of(d) {
                    coerce(kind, v);
                }
            }
        }
    }
}

/// Applies every `STACYVM_<PATH>` variable that names a leaf key; empty values count as unset
/// (as in the original). Returns dotted key → variable for each override applied, so a later
/// type error can name the variable rather than the key.
/// Keys whose values cannot be written as one environment variable.
const FILE_ONLY: [&str; 1] = ["e2b.templates"];

pub(crate) fn apply_env(
    tree: &mut Value,
    defaults: &Value,
    env: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut applied = BTreeMap::new();
    for leaf in leaves(defaults) {
        let var = leaf.env_var();
        let Some(raw) = env.get(&var).filter(|v| !v.is_empty()) else {
            continue;
        };
        let key = leaf.dotted();
        // A map of structured entries has no `k=v` form: it is set in the file only.
        if FILE_ONLY.contains(&key.as_str()) {
            return Err(ConfigError::Env {
                var,
                key,
                message: "this key is structured: set it in the config file".into(),
            });
        }
        let value = env_value(leaf.kind, raw).map_err(|message| ConfigError::Env {
            var: var.clone(),
            key: key.clone(),
            message,
        })?;
        if set_path(tree, &leaf.path, value) {
            applied.insert(key, var);
        }
    }
    Ok(applied)
}

/// Sets `path` in the tree, creating sections as needed. Returns false (leaving the tree as is)
/// when a section in the way is not a mapping; deserialisation then reports that section.
fn set_path(tree: &mut Value, path: &[String], value: Value) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut node = tree;
    for seg in parents {
        if node.is_null() {
            *node = Value::Mapping(Mapping::new());
        }
        let Value::Mapping(m) = node else {
            return false;
        };
        node = m
            .entry(Value::String(seg.clone()))
            .or_insert_with(|| Value::Mapping(Mapping::new()));
    }
    if node.is_null() {
        *node = Value::Mapping(Mapping::new());
    }
    let Value::Mapping(m) = node else {
        return false;
    };
    m.insert(Value::String(last.clone()), value);
    true
}
