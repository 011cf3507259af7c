//! Pulls from a real `docker-registry` that wants a login (htpasswd, bcrypt) and, over HTTPS,
//! a certificate from a CA made for the test; and pulls on demand (`rootfs_or_pull`), once for
//! concurrent callers. Every refused pull must leave the store as it was.

mod common;

use std::sync::atomic::Ordering;

use common::*;
use stacyvm_image::{Credentials, ImageError, ImageRef, ImageStore};

const USER: &str = "stacy";
const PASSWORD: &str = "s3cret-pw";

fn r(s: &str) -> ImageRef {
    ImageRef::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn store() -> (tempfile::TempDir, ImageStore) {
    let t = tempfile::tempdir().expect("tempdir");
    let s = ImageStore::open(t.path().join("store")).expect("open store");
    (t, s)
}

fn login() -> Access {
    Access {
        login: Some((USER.into(), PASSWORD.into())),
        tls: false,
    }
}

/// A refused pull: `unauthorized`, a message naming the registry and nothing of the host or the
/// registry's answer, and an empty store.
fn assert_refused(err: &ImageError, registry: &str, store: &ImageStore) {
    assert!(matches!(err, ImageError::Unauthorized { .. }), "{err:?}");
    assert_eq!(err.code(), "unauthorized");
    assert_eq!(
        err.to_string(),
        format!("not authorized to pull from {registry}")
    );
    assert_store_empty(store.root());
}

#[tokio::test]
async fn a_registry_with_a_login_refuses_none_and_a_wrong_one_and_takes_the_right_one() {
    let reg = Registry::start_with(login()).await;
    let img = image(&two_layer_tars(), true, "amd64");
    reg.push_image("team/app", "v1", &img).await;
    let name = r(&format!("{}/team/app:v1", reg.host()));
    let (_t, store) = store();

    let err = store
        .pull(&name, &Credentials::anonymous())
        .await
        .expect_err("pulled without a login");
    assert_refused(&err, &reg.host(), &store);

    let wrong = Credentials::anonymous().with_login(&reg.host(), USER, "not-the-password");
    let err = store.pull(&name, &wrong).await.expect_err("wrong password");
    assert_refused(&err, &reg.host(), &store);

    // A login for another registry is not sent here.
    let elsewhere = Credentials::anonymous().with_login("other.example:5000", USER, PASSWORD);
    let err = store.pull(&name, &elsewhere).await.expect_err("other host");
    assert_refused(&err, &reg.host(), &store);

    let right = Credentials::anonymous().with_login(&reg.host(), USER, PASSWORD);
    let pulled = store
        .pull(&name, &right)
        .await
        .expect("pull with the login");
    assert_eq!(pulled.manifest_digest.as_str(), img.manifest_digest);
    assert_two_layer_rootfs(&store.rootfs(&name).await.expect("rootfs").path);

    // A missing tag behind the login is still `not_found`, not `unauthorized`.
    let missing = r(&format!("{}/team/app:nope", reg.host()));
    let err = store.pull(&missing, &right).await.expect_err("missing tag");
    assert_eq!(err.code(), "not_found", "{err:?}");
}

#[tokio::test]
async fn an_https_registry_is_trusted_through_the_configured_ca_only() {
    let reg = Registry::start_with(Access {
        login: Some((USER.into(), PASSWORD.into())),
        tls: true,
    })
    .await;
    let img = image(&two_layer_tars(), true, "amd64");
    reg.push_image("team/app", "v1", &img).await;
    let name = r(&format!("{}/team/app:v1", reg.host()));
    assert!(!name.is_loopback_registry(), "{name} would be plain HTTP");
    let creds = Credentials::anonymous().with_login(&reg.host(), USER, PASSWORD);

    // The system bundle does not know the test's CA.
    let (_t, untrusting) = store();
    let err = untrusting
        .pull(&name, &creds)
        .await
        .expect_err("trusted an unknown CA");
    assert_eq!(err.code(), "network", "{err:?}");
    assert!(
        err.to_string()
            .starts_with(&format!("network error while fetching manifest {name}")),
        "{err}"
    );
    assert_store_empty(untrusting.root());

    let (_t2, store) = store();
    let store = store.with_ca_certificates(reg.ca_pem.clone().expect("ca"));
    let err = store
        .pull(&name, &Credentials::anonymous())
        .await
        .expect_err("pulled without a login");
    assert_refused(&err, &reg.host(), &store);
    let pulled = store.pull(&name, &creds).await.expect("pull over https");
    assert_eq!(pulled.manifest_digest.as_str(), img.manifest_digest);
    assert_two_layer_rootfs(&store.rootfs(&name).await.expect("rootfs").path);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_pulls_on_demand_of_one_image_download_it_once() {
    let reg = Registry::start_with(login()).await;
    let big = noise(1024 * 1024, 11);
    let tar = LayerBuilder::new().file("big.bin", &big, 0o644).build();
    let img = image(std::slice::from_ref(&tar), true, "amd64");
    reg.push_image("team/big", "v1", &img).await;
    let proxy = DroppingProxy::counting(reg.addr).await;
    let name = r(&format!("{}/team/big:v1", proxy.addr));
    let (_t, store) = store();

    let refused = store.rootfs_or_pull(&name).await.expect_err("no login");
    assert_refused(&refused, &proxy.addr.to_string(), &store);

    let store = store.with_credentials(Credentials::anonymous().with_login(
        &proxy.addr.to_string(),
        USER,
        PASSWORD,
    ));
    let calls: Vec<_> = (0..4)
        .map(|_| {
            let (store, name) = (store.clone(), name.clone());
            tokio::spawn(async move { store.rootfs_or_pull(&name).await })
        })
        .collect();
    let mut paths = Vec::new();
    for c in calls {
        paths.push(c.await.expect("join").expect("rootfs_or_pull").path);
    }
    paths.dedup();
    assert_eq!(paths.len(), 1, "{paths:?}");
    let got = std::fs::read(paths[0].join("big.bin")).expect("read");
    assert!(got == big, "big.bin differs");
    // One download of the 1 MiB layer (plus manifests and config); four would be 4 MiB.
    let served = proxy.served.load(Ordering::Relaxed);
    assert!(
        (1024 * 1024..1536 * 1024).contains(&served),
        "{served} bytes served"
    );

    // Present now: nothing is asked of the registry.
    store.rootfs_or_pull(&name).await.expect("again");
    assert_eq!(proxy.served.load(Ordering::Relaxed), served);
}
