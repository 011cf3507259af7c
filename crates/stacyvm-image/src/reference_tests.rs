//! Unit tests of `reference.rs`.

use super::*;

fn canon(s: &str) -> String {
    ImageRef::parse(s)
        .unwrap_or_else(|e| panic!("{s}: {e}"))
        .to_string()
}

const D: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

#[test]
fn docker_hub_short_names_are_expanded() {
    assert_eq!(canon("busybox"), "docker.io/library/busybox:latest");
    assert_eq!(canon("busybox:1.36"), "docker.io/library/busybox:1.36");
    assert_eq!(canon("library/busybox"), "docker.io/library/busybox:latest");
    assert_eq!(canon("user/app:v1"), "docker.io/user/app:v1");
    assert_eq!(
        canon("index.docker.io/busybox"),
        "docker.io/library/busybox:latest"
    );
    assert_eq!(
        canon("docker.io/busybox"),
        "docker.io/library/busybox:latest"
    );
}

#[test]
fn hosts_ports_and_digests() {
    assert_eq!(canon("localhost/app"), "localhost/app:latest");
    assert_eq!(canon("localhost:5000/a/b:t"), "localhost:5000/a/b:t");
    assert_eq!(canon("127.0.0.1:5000/app:v1"), "127.0.0.1:5000/app:v1");
    assert_eq!(canon("[::1]:5000/app"), "[::1]:5000/app:latest");
    assert_eq!(canon("ghcr.io/o/r/x:1"), "ghcr.io/o/r/x:1");
    assert_eq!(
        canon(&format!("busybox@{D}")),
        format!("docker.io/library/busybox@{D}")
    );
    assert_eq!(
        canon(&format!("reg.example:443/app:v2@{D}")),
        format!("reg.example:443/app:v2@{D}")
    );
    let r = ImageRef::parse(&format!("app@{D}")).expect("parse");
    assert_eq!(r.tag(), None);
    assert_eq!(r.digest().map(Digest::as_str), Some(D));
}

#[test]
fn separators_in_path_components() {
    assert_eq!(canon("x/a.b_c__d-e--f"), "docker.io/x/a.b_c__d-e--f:latest");
    // A '.' in the first component makes it a host, which '_' cannot be part of.
    for bad in ["a..b", "a___b", "_a", "a-", "a/.b", "a.b_c/g"] {
        assert!(ImageRef::parse(bad).is_err(), "{bad} accepted");
    }
}

#[test]
fn bad_references_are_rejected_with_a_reason() {
    for bad in [
        "",
        "Busybox",
        "busybox:",
        "busybox:-x",
        "busybox@sha256:abc",
        "busybox@md5:abc",
        "a//b",
        "/busybox",
        "busybox/",
        "host:port/app",
        "[::1/app",
        "bad host/app",
        "app:tag with space",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    ] {
        match ImageRef::parse(bad) {
            Err(ImageError::InvalidReference { reason, .. }) => assert!(!reason.is_empty()),
            other => panic!("{bad:?} gave {other:?}"),
        }
    }
    let long = format!("x/{}", "a".repeat(300));
    assert!(ImageRef::parse(&long).is_err());
    assert!(ImageRef::parse(&format!("a:{}", "t".repeat(129))).is_err());
}

#[test]
fn serde_round_trips_the_canonical_text_and_validates() {
    let r: ImageRef = serde_json::from_str("\"busybox\"").expect("deserialize");
    assert_eq!(
        serde_json::to_string(&r).expect("serialize"),
        "\"docker.io/library/busybox:latest\""
    );
    assert!(serde_json::from_str::<ImageRef>("\"Bad Ref\"").is_err());
}

#[test]
fn loopback_registries() {
    for (s, want) in [
        ("localhost:5000/a", true),
        ("127.0.0.1:1/a", true),
        ("127.8.0.1/a", true),
        ("[::1]:5000/a", true),
        ("busybox", false),
        ("10.0.0.1:5000/a", false),
        ("localhost.example.com/a", false),
    ] {
        let r = ImageRef::parse(s).expect("parse");
        assert_eq!(r.is_loopback_registry(), want, "{s}");
    }
}
