//! What the E2B-compatible API keeps of the sandboxes it created.

use std::collections::BTreeMap;

use stacyvm_types::SandboxState;

use super::{assert_conflict, assert_not_found, insert, sandbox, secs, t0};
use crate::{E2bSandbox, Store};

fn record(id: &str) -> E2bSandbox {
    E2bSandbox {
        sandbox_id: id.into(),
        template_id: "base".into(),
        env_vars: BTreeMap::from([
            ("PATH_EXTRA".to_string(), "/opt/bin".to_string()),
            // Unicode and `=` in a value must survive the JSON column unchanged.
            ("GREETING".to_string(), "héllo=wörld ✓ a=b".to_string()),
        ]),
        access_token: "tok-0123456789abcdef".into(),
        created_at: t0(),
    }
}

pub async fn e2b_sandbox_round_trip(store: &dyn Store) {
    // The E2B API records a sandbox it has just created, so the sandbox rows come first.
    for id in ["sb-e2b00001", "sb-e2b00002"] {
        insert(store, &sandbox(id, "alice", SandboxState::Running, t0())).await;
    }
    let first = record("sb-e2b00001");
    store.insert_e2b_sandbox(&first).await.expect("insert");
    assert_eq!(
        store.get_e2b_sandbox(&first.sandbox_id).await.expect("get"),
        first
    );

    // `secure: false` and no envVars: empty token and map round-trip too.
    let plain = E2bSandbox {
        env_vars: BTreeMap::new(),
        access_token: String::new(),
        created_at: t0() + secs(1),
        ..record("sb-e2b00002")
    };
    store
        .insert_e2b_sandbox(&plain)
        .await
        .expect("insert plain");
    assert_eq!(
        store
            .get_e2b_sandbox(&plain.sandbox_id)
            .await
            .expect("get plain"),
        plain
    );

    // Written once: a second record for the sandbox is refused and the first one stays.
    let again = E2bSandbox {
        template_id: "other".into(),
        access_token: "tok-other".into(),
        ..record("sb-e2b00001")
    };
    assert_conflict(store.insert_e2b_sandbox(&again).await, "second record");
    assert_eq!(
        store
            .get_e2b_sandbox(&first.sandbox_id)
            .await
            .expect("get after conflict"),
        first
    );

    assert_not_found(
        store.get_e2b_sandbox(&"sb-unknown".into()).await,
        "e2b sandbox",
        "unknown sandbox",
    );
}
