//! Postgres-specific checks; the shared contract runs in `tests/postgres_conformance.rs`.
//! Tests needing a server skip (or fail under CI) as `test_db` describes.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDateTime, Utc};

use super::test_db::TestDb;
use super::*;
use crate::conformance::running;
use crate::rows::{ts, TS_FORMAT};
use crate::Store;

async fn db_now(store: &PgStore) -> DateTime<Utc> {
    let text: String = sqlx::query_scalar(concat!("SELECT ", now_ts!()))
        .fetch_one(&store.pool)
        .await
        .unwrap();
    NaiveDateTime::parse_from_str(&text, TS_FORMAT)
        .unwrap()
        .and_utc()
}

#[tokio::test]
async fn refused_connection_is_a_prompt_unreachable_error() {
    let started = Instant::now();
    match PgStore::open("postgres://u:secret-pw@127.0.0.1:1/stacy").await {
        Err(StoreError::Unreachable { target, reason }) => {
            assert_eq!(target, "127.0.0.1:1/stacy");
            assert!(reason.to_lowercase().contains("refused"), "{reason}");
            let shown = StoreError::Unreachable { target, reason }.to_string();
            assert!(!shown.contains("secret-pw"), "password leaked: {shown}");
        }
        Err(e) => panic!("expected Unreachable, got {e:?}"),
        Ok(_) => panic!("connected to port 1"),
    }
    assert!(started.elapsed() < CONNECT_TIMEOUT, "refusal must not wait");
}

/// A server that accepts the TCP connection but never answers must not hang startup.
#[tokio::test]
async fn silent_server_hits_the_connect_timeout() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let started = Instant::now();
    let res = PgStore::open(&format!("postgres://u:p@127.0.0.1:{port}/db")).await;
    let waited = started.elapsed();
    match res {
        Err(StoreError::Unreachable { reason, .. }) => {
            assert!(reason.contains("no answer within"), "{reason}");
        }
        Err(e) => panic!("expected Unreachable, got {e:?}"),
        Ok(_) => panic!("a silent socket cannot be a database"),
    }
    assert!(
        waited >= CONNECT_TIMEOUT && waited < CONNECT_TIMEOUT + Duration::from_secs(5),
        "{waited:?}"
    );
    drop(listener);
}

#[tokio::test]
async fn bad_dsns_are_refused_without_connecting() {
    for dsn in ["", "   ", "mysql://x@y/z", "postgres://h:notaport/db"] {
        match PgStore::open(dsn).await {
            Err(StoreError::Unsupported(_)) => {}
            Err(e) => panic!("{dsn:?}: expected Unsupported, got {e:?}"),
            Ok(_) => panic!("{dsn:?}: opened"),
        }
    }
}

fn secs(n: i64) -> chrono::Duration {
    chrono::Duration::seconds(n)
}

#[test]
fn ttl_interval_rounds_up_to_microseconds_and_caps() {
    let us = |d| ttl_interval(d).microseconds;
    assert_eq!(us(Duration::ZERO), 0);
    assert_eq!(us(Duration::from_nanos(1)), 1);
    assert_eq!(us(Duration::from_nanos(1_001)), 2);
    assert_eq!(us(Duration::from_millis(60_500)), 60_500_000);
    assert_eq!(us(Duration::MAX), MAX_TTL_MICROS);
}

#[test]
fn describe_never_shows_the_password() {
    let o: PgConnectOptions = "postgres://bob:hunter2@db.example:6543/stacy"
        .parse()
        .unwrap();
    assert_eq!(describe(&o), "db.example:6543/stacy");
}

mod needs_pg {
    use super::*;

    #[tokio::test]
    async fn wrong_password_is_unreachable_with_the_reason() {
        let db = TestDb::create().await;
        let options = db.options().password("definitely-wrong");
        match PgStore::open_with(options).await {
            Err(StoreError::Unreachable { target, reason }) => {
                assert!(target.ends_with(db.name()), "{target}");
                assert!(
                    reason.contains("password authentication failed"),
                    "{reason}"
                );
            }
            Err(e) => panic!("expected Unreachable, got {e:?}"),
            Ok(_) => panic!("logged in with a wrong password"),
        }
    }

    #[tokio::test]
    async fn open_by_driver_name_and_reopen_keeps_data() {
        let db = TestDb::create().await;
        for driver in ["postgres", "postgresql"] {
            let store = crate::open(driver, &db.dsn()).await.unwrap();
            store.ping().await.unwrap();
        }
        let store = crate::open("postgres", &db.dsn()).await.unwrap();
        store.insert_sandbox(&running("sb-1")).await.unwrap();
        drop(store);
        let again = db.open().await;
        assert_eq!(
            again.get_sandbox(&"sb-1".into()).await.unwrap().owner_id,
            "alice"
        );
    }

    /// Control planes starting together on an empty database: sqlx's advisory lock lets exactly
    /// one apply each migration and the others find it applied.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_opens_migrate_once() {
        let db = TestDb::create().await;
        let mut opens = tokio::task::JoinSet::new();
        for _ in 0..4 {
            let options = db.options();
            opens.spawn(async move { PgStore::open_with(options).await });
        }
        let mut stores = Vec::new();
        while let Some(done) = opens.join_next().await {
            stores.push(done.unwrap().unwrap());
        }
        let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations")
            .fetch_one(&stores[0].pool)
            .await
            .unwrap();
        assert_eq!(applied, MIGRATOR.iter().count() as i64);
        for s in &stores {
            s.close().await;
        }
    }

    #[tokio::test]
    async fn refuses_a_newer_schema_and_changes_nothing() {
        let db = TestDb::create().await;
        let store = db.open().await;
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, \
               execution_time) VALUES (9999, 'from the future', TRUE, '\\x00', 0)",
        )
        .execute(&store.pool)
        .await
        .unwrap();
        store.close().await;
        match PgStore::open_with(db.options()).await {
            Err(StoreError::SchemaTooNew { found, supported }) => {
                assert_eq!((found, supported), (9999, latest_version()));
            }
            Err(e) => panic!("expected SchemaTooNew, got {e:?}"),
            Ok(_) => panic!("expected SchemaTooNew, got a store"),
        }
    }

    #[tokio::test]
    async fn undecodable_rows_are_corrupt() {
        let db = TestDb::create().await;
        let store = db.open().await;
        for (id, column, value) in [
            ("sb-state", "state", "idle"),
            ("sb-time", "created_at", "yesterday"),
            ("sb-meta", "metadata", "{not json"),
        ] {
            store.insert_sandbox(&running(id)).await.unwrap();
            let sql = format!("UPDATE sandboxes SET {column} = $1 WHERE id = $2");
            sqlx::query(&sql)
                .bind(value)
                .bind(id)
                .execute(&store.pool)
                .await
                .unwrap();
            match store.get_sandbox(&id.into()).await {
                Err(StoreError::Corrupt { what }) => assert_eq!(what, column),
                other => panic!("{column}: expected Corrupt, got {other:?}"),
            }
        }
        store.insert_sandbox(&running("sb-log")).await.unwrap();
        sqlx::query(
            "INSERT INTO exec_logs (sandbox_id, command, exit_code, stdout, stderr, duration_ms, \
               created_at) VALUES ('sb-log', 'x', 0, '\\xff', '', 1, '2026-01-01T00:00:00.000000000Z')",
        )
        .execute(&store.pool)
        .await
        .unwrap();
        assert!(matches!(
            store.list_exec_logs(&"sb-log".into(), 5).await,
            Err(StoreError::Corrupt { what: "stdout" })
        ));
    }

    /// Postgres TEXT rejects U+0000; exec output is BYTEA so binary-ish output still round-trips.
    #[tokio::test]
    async fn exec_output_with_nul_round_trips() {
        let db = TestDb::create().await;
        let store = db.open().await;
        store.insert_sandbox(&running("sb-1")).await.unwrap();
        let log = ExecLog {
            sandbox_id: "sb-1".into(),
            command: "printf 'a\\0b'".into(),
            exit_code: 0,
            stdout: "a\0b ✓".into(),
            stderr: "\0".into(),
            duration_ms: 3,
            created_at: Utc::now(),
        };
        store.insert_exec_log(&log).await.unwrap();
        assert_eq!(
            store.list_exec_logs(&"sb-1".into(), 1).await.unwrap(),
            [log]
        );
    }

    /// The hot sandbox queries must be able to use the partial indexes (with sequential scans
    /// priced out, the planner picks them only when the query implies the index predicate).
    #[tokio::test]
    async fn sandbox_queries_use_partial_indexes() {
        let db = TestDb::create().await;
        let store = db.open().await;
        let mut conn = store.pool.acquire().await.unwrap();
        sqlx::query("SET enable_seqscan = off")
            .execute(&mut *conn)
            .await
            .unwrap();
        let partial = [
            "sandboxes_live_by_created",
            "sandboxes_active_by_owner",
            "sandboxes_active_by_expiry",
        ];
        for (sql, arg) in [
            (sandboxes::COUNT_ACTIVE, Some("alice")),
            (
                sandboxes::LIST_EXPIRED,
                Some("2026-01-01T00:00:00.000000000Z"),
            ),
            (sandboxes::LIST, None),
        ] {
            let explain = format!("EXPLAIN {sql}");
            let mut q = sqlx::query(&explain);
            if let Some(arg) = arg {
                q = q.bind(arg);
            }
            let plan: Vec<String> = q
                .fetch_all(&mut *conn)
                .await
                .unwrap()
                .iter()
                .map(|r| r.get::<String, _>(0))
                .collect();
            let plan = plan.join("\n");
            assert!(!plan.contains("Seq Scan"), "{sql}\n{plan}");
            assert!(partial.iter().any(|i| plan.contains(i)), "{sql}\n{plan}");
        }
    }

    /// Lease times come from the database clock: microsecond precision, inside the database's
    /// own before/after readings, and one `now()` per statement.
    #[tokio::test]
    async fn leases_use_the_database_clock() {
        let db = TestDb::create().await;
        let store = db.open().await;
        for n in 0..5 {
            let before = db_now(&store).await;
            let lease = store
                .acquire_lease(&format!("r-{n}"), "sandbox", "h", Duration::from_secs(30))
                .await
                .unwrap();
            let renewed = store
                .renew_lease(&lease.resource_id, "h", Duration::from_secs(60))
                .await
                .unwrap();
            let after = db_now(&store).await;
            for t in [lease.updated_at, renewed.updated_at] {
                assert!(before <= t && t <= after, "{before} <= {t} <= {after}");
                assert_eq!(t.timestamp_subsec_nanos() % 1_000, 0, "{t}");
            }
            assert_eq!(lease.created_at, lease.updated_at);
            assert_eq!(renewed.expires_at, renewed.updated_at + secs(60));
        }
    }

    #[tokio::test]
    async fn lease_ttl_rounds_up_and_saturates() {
        let db = TestDb::create().await;
        let store = db.open().await;
        let tiny = store
            .acquire_lease("r-tiny", "sandbox", "h", Duration::from_nanos(1))
            .await
            .unwrap();
        assert_eq!(
            tiny.expires_at,
            tiny.updated_at + chrono::Duration::microseconds(1)
        );
        let forever = store
            .acquire_lease("r-max", "sandbox", "h", Duration::MAX)
            .await
            .unwrap();
        assert_eq!(ts(&forever.expires_at), "9999-12-31T23:59:59.999999000Z");
        let renewed = store
            .renew_lease("r-max", "h", Duration::from_secs(u64::MAX))
            .await
            .unwrap();
        assert_eq!(renewed.expires_at, forever.expires_at);
        assert_eq!(renewed.generation, 2);
    }
}
