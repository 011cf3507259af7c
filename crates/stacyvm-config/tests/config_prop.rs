//! Property tests of config loading (hardening harness, docs/testing.md): config files and
//! `STACYVM_*` overrides are operator input, often templated by other tools. Any text and any
//! override value must give a config or an error that names its key, never a panic.

use proptest::prelude::*;
use stacyvm_config::{Config, ConfigError};

fn keys() -> Vec<(String, String)> {
    Config::keys()
}

/// A YAML document built from the schema's own keys (nested as in the file) with arbitrary
/// scalar values, so that most generated files get past parsing into the typed sections.
fn yaml_doc() -> impl Strategy<Value = String> {
    let scalar = prop_oneof![
        Just("true".to_string()),
        Just("0".to_string()),
        Just("-1".to_string()),
        Just("30s".to_string()),
        Just("[]".to_string()),
        Just("{}".to_string()),
        Just("~".to_string()),
        "[a-z0-9./:-]{0,12}",
        any::<i64>().prop_map(|n| n.to_string()),
        "\\PC{0,12}".prop_map(|s| format!("{s:?}")),
    ];
    prop::collection::vec((prop::sample::select(keys()), scalar), 0..12).prop_map(|pairs| {
        let mut out = String::new();
        for ((dotted, _), value) in pairs {
            // One document per pair would need merging; a flow mapping per top-level key
            // keeps each pair independent and still nested.
            let mut parts: Vec<&str> = dotted.split('.').collect();
            let leaf = parts.pop().unwrap_or_default();
            let mut line = format!("{leaf}: {value}");
            for p in parts.iter().rev() {
                line = format!("{p}: {{{line}}}");
            }
            out.push_str(&line);
            out.push('\n');
        }
        out
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn any_text_is_a_config_or_an_error(text in "\\PC{0,256}") {
        if let Ok(c) = Config::from_yaml_str(&text) {
            let _ = c.validate_all();
        }
    }

    #[test]
    fn schema_shaped_files_are_a_config_or_an_error(doc in yaml_doc()) {
        if let Ok(c) = Config::from_yaml_str(&doc) {
            let _ = c.validate_all();
        }
    }

    /// A bad override is reported against its own key.
    #[test]
    fn any_override_is_taken_or_named(key in prop::sample::select(keys()), value in "\\PC{0,40}") {
        let (dotted, var) = key;
        match Config::from_yaml_str_with_env("", [(var.clone(), value)]) {
            Ok(c) => { let _ = c.validate_all(); }
            Err(e) => {
                let named = e.key().map(str::to_string);
                prop_assert_eq!(named.as_deref(), Some(dotted.as_str()), "{}", e);
                if let ConfigError::Env { var: named_var, .. } = &e {
                    prop_assert_eq!(named_var, &var);
                }
            }
        }
    }
}
