//! Templates, quotas, workers and the admin audit trail.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use stacyvm_types::{Timestamp, WorkerId};

use super::{assert_between, assert_conflict, assert_not_found, secs, t0};
use crate::{
    AuditFilter, NewAdminAudit, OwnerQuota, Store, Template, TemplateSecret, WorkerRecord,
};

fn template(name: &str) -> Template {
    Template {
        name: name.into(),
        version: 1,
        image: "python:3.12".into(),
        description: "py".into(),
        setup: vec!["pip install x".into(), "echo ok".into()],
        allowed_hosts: vec!["pypi.org".into()],
        memory_mb: 512,
        cpu_cores: 1,
        ttl_seconds: 300,
        env: BTreeMap::from([("A".to_string(), "1".to_string())]),
        secrets: vec![TemplateSecret {
            name: "TOKEN".into(),
            inject_at: "/run/token".into(),
        }],
        pool_size: 2,
        created_at: t0(),
        updated_at: t0() + secs(1),
    }
}

pub async fn templates_crud(store: &dyn Store) {
    assert!(store.list_templates().await.expect("list").is_empty());
    for name in ["zeta", "alpha", "mid"] {
        store
            .create_template(&template(name))
            .await
            .expect("create");
    }
    assert_eq!(
        store.get_template("alpha").await.expect("get"),
        template("alpha")
    );
    assert_conflict(
        store.create_template(&template("mid")).await,
        "duplicate name",
    );
    let names: Vec<String> = store
        .list_templates()
        .await
        .expect("list")
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, ["alpha", "mid", "zeta"]);

    let replacement = Template {
        version: 2,
        image: "python:3.13".into(),
        description: String::new(),
        setup: Vec::new(),
        allowed_hosts: Vec::new(),
        memory_mb: 256,
        cpu_cores: 2,
        ttl_seconds: 60,
        env: BTreeMap::new(),
        secrets: Vec::new(),
        pool_size: 0,
        created_at: Timestamp::default(),
        updated_at: t0() + secs(100),
        ..template("mid")
    };
    store.replace_template(&replacement).await.expect("replace");
    let stored = store.get_template("mid").await.expect("get");
    assert_eq!(
        stored,
        Template {
            created_at: t0(),
            ..replacement.clone()
        },
        "keeps created_at"
    );
    assert_not_found(
        store.replace_template(&template("nope")).await,
        "template",
        "replace missing",
    );
    assert_not_found(store.get_template("nope").await, "template", "get missing");

    store.delete_template("mid").await.expect("delete");
    assert_not_found(store.get_template("mid").await, "template", "get deleted");
    assert_not_found(
        store.delete_template("mid").await,
        "template",
        "delete twice",
    );
    assert_eq!(store.list_templates().await.expect("list").len(), 2);
}

pub async fn quotas_crud(store: &dyn Store) {
    assert!(store.list_quotas().await.expect("list").is_empty());
    let q = |owner: &str, max: i64, at: Timestamp| OwnerQuota {
        owner_id: owner.into(),
        max_sandboxes: max,
        max_ttl_seconds: 7200,
        max_exec_timeout_seconds: 60,
        created_at: at,
        updated_at: at,
    };
    let first = q("bob", 3, t0());
    assert_eq!(store.upsert_quota(&first).await.expect("insert"), first);
    store
        .upsert_quota(&q("alice", 0, t0()))
        .await
        .expect("insert");

    let second = OwnerQuota {
        max_ttl_seconds: 0,
        ..q("bob", 5, t0() + secs(60))
    };
    let stored = store.upsert_quota(&second).await.expect("update");
    let want = OwnerQuota {
        created_at: t0(),
        ..second
    };
    assert_eq!(stored, want, "update keeps created_at");
    assert_eq!(store.get_quota("bob").await.expect("get"), want);
    let owners: Vec<String> = store
        .list_quotas()
        .await
        .expect("list")
        .into_iter()
        .map(|q| q.owner_id)
        .collect();
    assert_eq!(owners, ["alice", "bob"]);

    store.delete_quota("bob").await.expect("delete");
    assert_not_found(store.get_quota("bob").await, "owner_quota", "get deleted");
    assert_not_found(
        store.delete_quota("bob").await,
        "owner_quota",
        "delete twice",
    );
    assert_eq!(store.list_quotas().await.expect("list").len(), 1);
}

/// Heartbeat upserts: the store's clock stamps the row, `created_at` survives updates, and a
/// missing provider list (`None`) stays distinct from an empty one.
pub async fn workers_crud(store: &dyn Store) {
    assert!(store.list_workers().await.expect("list").is_empty());
    let long_ago = Utc
        .with_ymd_and_hms(2000, 1, 1, 0, 0, 0)
        .single()
        .expect("date");
    let mut capacity = serde_json::Map::new();
    capacity.insert("max_sandboxes".into(), serde_json::json!(4));
    capacity.insert("rpc_url".into(), serde_json::json!("http://10.0.0.2:7424"));
    let w = WorkerRecord {
        id: "w-b".into(),
        hostname: "host-b".into(),
        status: "online".into(),
        providers: None,
        capabilities: Some(Vec::new()),
        capacity,
        last_heartbeat: long_ago,
        created_at: long_ago,
        updated_at: long_ago,
    };
    let before = Utc::now();
    let first = store.upsert_worker(&w).await.expect("insert");
    let after = Utc::now();
    assert_between(first.last_heartbeat, before, after, "last_heartbeat");
    assert_eq!(first.updated_at, first.last_heartbeat);
    assert_eq!(first.created_at, first.last_heartbeat);
    assert_eq!(
        (&first.id, &first.hostname, &first.status, &first.capacity),
        (&w.id, &w.hostname, &w.status, &w.capacity)
    );
    assert_eq!(
        (first.providers.clone(), first.capabilities.clone()),
        (None, Some(Vec::new()))
    );
    assert_eq!(store.get_worker(&"w-b".into()).await.expect("get"), first);

    tokio::time::sleep(Duration::from_millis(2)).await;
    let beat = WorkerRecord {
        status: "draining".into(),
        providers: Some(vec!["mock".into(), "docker".into()]),
        capabilities: None,
        capacity: serde_json::Map::new(),
        ..w.clone()
    };
    let second = store.upsert_worker(&beat).await.expect("update");
    assert_eq!(second.created_at, first.created_at, "created_at kept");
    assert!(
        second.last_heartbeat > first.last_heartbeat,
        "heartbeat advances"
    );
    assert_eq!(second.updated_at, second.last_heartbeat);
    assert_eq!(second.status, "draining");
    assert_eq!(second.providers, beat.providers);
    assert_eq!(second.capabilities, None);
    assert!(second.capacity.is_empty());
    assert_eq!(store.get_worker(&"w-b".into()).await.expect("get"), second);

    store
        .upsert_worker(&WorkerRecord {
            id: "w-a".into(),
            ..w.clone()
        })
        .await
        .expect("insert");
    let ids: Vec<WorkerId> = store
        .list_workers()
        .await
        .expect("list")
        .into_iter()
        .map(|w| w.id)
        .collect();
    assert_eq!(ids, ["w-a", "w-b"]);
    store.delete_worker(&"w-b".into()).await.expect("delete");
    assert_not_found(
        store.get_worker(&"w-b".into()).await,
        "worker",
        "get deleted",
    );
    assert_not_found(
        store.delete_worker(&"w-b".into()).await,
        "worker",
        "delete twice",
    );
}

/// A first grant: generation 1, `expires_at = now + ttl` on the store's clock.
fn audit(actor: &str, method: &str, path: &str, status: i64) -> NewAdminAudit {
    NewAdminAudit {
        actor: actor.into(),
        method: method.into(),
        path: path.into(),
        status,
        duration_ms: 7,
        request_id: format!("req-{actor}-{status}"),
        remote_addr: "127.0.0.1:5000".into(),
        user_agent: "curl/8".into(),
        tenant_id: "tenant-1".into(),
    }
}

pub async fn audit_filter_and_order(store: &dyn Store) {
    let recs = [
        audit("admin", "GET", "/api/v1/admin/audit", 200),
        audit("alice", "POST", "/api/v1/admin/worker-tokens", 200),
        audit("admin", "DELETE", "/api/v1/admin/workers/w1", 404),
        audit("alice", "GET", "/api/v1/admin/audit", 400),
        audit("admin", "GET", "/api/v1/admin/audit", 200),
    ];
    let before = Utc::now();
    for r in &recs {
        store.insert_admin_audit(r).await.expect("insert");
    }
    let after = Utc::now();
    let all = store
        .list_admin_audit(&AuditFilter::default())
        .await
        .expect("list");
    assert_eq!(all.len(), recs.len());
    for (got, want) in all.iter().zip(recs.iter().rev()) {
        assert_eq!(&got.entry, want);
        assert_between(got.created_at, before, after, "created_at");
    }
    assert!(all
        .windows(2)
        .all(|w| w[0].id > w[1].id && w[0].created_at >= w[1].created_at));

    let list = |f: AuditFilter| async move {
        store
            .list_admin_audit(&f)
            .await
            .expect("list")
            .into_iter()
            .map(|r| r.id)
            .collect::<Vec<_>>()
    };
    let id = |i: usize| all[recs.len() - 1 - i].id;
    let f = AuditFilter::default;
    assert_eq!(
        list(AuditFilter {
            actor: "alice".into(),
            ..f()
        })
        .await,
        [id(3), id(1)]
    );
    assert_eq!(
        list(AuditFilter {
            method: "DELETE".into(),
            ..f()
        })
        .await,
        [id(2)]
    );
    let path = "/api/v1/admin/audit".to_string();
    assert_eq!(
        list(AuditFilter {
            path: path.clone(),
            ..f()
        })
        .await,
        [id(4), id(3), id(0)]
    );
    assert_eq!(
        list(AuditFilter {
            status: Some(404),
            ..f()
        })
        .await,
        [id(2)]
    );
    let both = AuditFilter {
        actor: "admin".into(),
        path,
        status: Some(200),
        ..f()
    };
    assert_eq!(list(both).await, [id(4), id(0)]);
    assert_eq!(list(AuditFilter { limit: 2, ..f() }).await, [id(4), id(3)]);
    assert!(list(AuditFilter {
        actor: "nobody".into(),
        ..f()
    })
    .await
    .is_empty());
}

pub async fn audit_prune(store: &dyn Store) {
    assert_eq!(
        store
            .prune_admin_audit(Utc::now())
            .await
            .expect("prune empty"),
        0
    );
    for status in [200, 201] {
        store
            .insert_admin_audit(&audit("old", "GET", "/x", status))
            .await
            .expect("insert");
    }
    tokio::time::sleep(Duration::from_millis(2)).await;
    let cut = Utc::now();
    tokio::time::sleep(Duration::from_millis(2)).await;
    store
        .insert_admin_audit(&audit("new", "GET", "/x", 202))
        .await
        .expect("insert");
    assert_eq!(store.prune_admin_audit(cut).await.expect("prune"), 2);
    let left = store
        .list_admin_audit(&AuditFilter::default())
        .await
        .expect("list");
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].entry.actor, "new");
    assert_eq!(store.prune_admin_audit(cut).await.expect("prune again"), 0);
}
