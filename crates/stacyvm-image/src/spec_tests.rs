//! Unit tests of `spec.rs`.

use super::*;

fn desc(platform: Option<(&str, &str)>, hex: char) -> serde_json::Value {
    let mut d = serde_json::json!({
        "mediaType": OCI_MANIFEST,
        "digest": format!("sha256:{}", hex.to_string().repeat(64)),
        "size": 1,
    });
    if let Some((os, arch)) = platform {
        d["platform"] = serde_json::json!({"os": os, "architecture": arch});
    }
    d
}

#[test]
fn index_picks_linux_amd64_among_platforms() {
    let body = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [desc(Some(("linux", "arm64")), 'a'), desc(Some(("linux", "amd64")), 'b')],
    });
    let bytes = serde_json::to_vec(&body).expect("json");
    let ManifestOrIndex::Index(idx) = ManifestOrIndex::parse(&bytes, "t").expect("parse") else {
        panic!("not an index")
    };
    let got = idx.pick_host_platform().expect("pick");
    assert!(got.digest.hex().starts_with('b'));

    let only_arm = Index {
        manifests: vec![serde_json::from_value(desc(Some(("linux", "arm64")), 'a')).expect("desc")],
    };
    assert!(only_arm.pick_host_platform().is_none());
}

#[test]
fn runtime_config_reads_docker_nulls() {
    let c: ConfigFile = serde_json::from_str(
        r#"{"os":"linux","architecture":"","config":{"Env":["A=1"],"Cmd":null,"Entrypoint":["/bin/sh"],
            "WorkingDir":"/w"},"rootfs":{"type":"layers","diff_ids":[]}}"#,
    )
    .expect("parse");
    let rc = c.config.expect("config");
    assert_eq!(rc.env, ["A=1"]);
    assert!(rc.cmd.is_empty());
    assert_eq!(rc.working_dir, "/w");
    assert_eq!(rc.user, "");
}
