//! The same scenario on a real SQLite file and (under `scripts/test`) a real PostgreSQL:
//! migrations, entities, keys, subscriptions with approval, tenant scoping, the call log,
//! pruning and analytics; plus the Redis GCRA script.

#[path = "support/records.rs"]
mod records;

use holdfast_core::{AiUsage, CallExtra, CallRecord, ResetClass};
use holdfast_store::*;
use records::{consumer, published_service, SECRET};

/// The PostgreSQL tests share one database, and some of them check the store-wide generation
/// counter ("nothing was written"): they take turns so one test's writes cannot show up in
/// another's check.
static PG_TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A store on a new SQLite file `m.db` in `dir`.
async fn sqlite_store(dir: &tempfile::TempDir) -> SqlStore {
    let path = dir.path().join("m.db");
    SqlStore::open_sqlite(path.to_str().expect("utf8"), SECRET)
        .await
        .expect("open")
}

/// The PostgreSQL of `scripts/test-services`, with this test's turn taken (hold the guard for
/// the whole test); `None`, said on stderr, where `HOLDFAST_TEST_PG_URL` is unset.
async fn postgres_store() -> Option<(tokio::sync::MutexGuard<'static, ()>, SqlStore)> {
    let turn = PG_TURN.lock().await;
    let Ok(url) = std::env::var("HOLDFAST_TEST_PG_URL") else {
        eprintln!("skipped: HOLDFAST_TEST_PG_URL is unset (scripts/test sets it via scripts/test-services)");
        return None;
    };
    let store = SqlStore::open_postgres(&url, SECRET).await.expect("open");
    Some((turn, store))
}

async fn scenario(store: SqlStore, tag: &str) {
    assert_eq!(schema_version(&store).await.expect("version"), 5);
    let t_a = format!("a{tag}");
    let t_b = format!("b{tag}");
    store.create_tenant(&t_a).await.expect("tenant a");
    store.create_tenant(&t_b).await.expect("tenant b");
    assert!(matches!(
        store.create_tenant(&t_a).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.create_tenant(&"x".repeat(65)).await,
        Err(StoreError::Invalid { field, .. }) if field == "name"
    ));
    let gen0 = store.generation().await.expect("generation");
    let svc = store
        .create_service(&Service {
            name: format!("pay{tag}"),
            tenant: t_a.clone(),
            require_approval: true,
            limits: Limits {
                rpm: Some(10),
                ..Limits::default()
            },
            versions: vec![ServiceVersion {
                version: "v1".into(),
                state: Lifecycle::Published,
                since_ms: None,
                sunset_ms: None,
            }],
            created_ms: 0,
        })
        .await
        .expect("service");
    assert_eq!(svc.versions.len(), 1);
    assert!(
        store.generation().await.expect("gen") > gen0,
        "changes bump the generation"
    );
    let svc = store
        .set_version_state(&t_a, &svc.name, "v2", Lifecycle::Draft, None)
        .await
        .expect("v2");
    assert_eq!(svc.versions.len(), 2);
    // Tenant B cannot see tenant A's service.
    assert!(matches!(
        store.get_service(&t_b, &svc.name).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(store
        .list_services(Some(&t_b))
        .await
        .expect("list")
        .is_empty());

    store
        .create_consumer(&Consumer {
            tenant: t_a.clone(),
            name: "c1".into(),
            limits: Limits::default(),
            created_ms: 0,
        })
        .await
        .expect("consumer");
    let bad = Limits {
        rps: Some(0),
        ..Limits::default()
    };
    assert!(matches!(
        store.create_consumer(&Consumer { tenant: t_a.clone(), name: "c2".into(), limits: bad, created_ms: 0 }).await,
        Err(StoreError::Invalid { field, .. }) if field == "limits.rps"
    ));
    let issued = store
        .issue_key(&t_a, "c1", &Limits::default(), None)
        .await
        .expect("key");
    assert_eq!(key_prefix(&issued.key), Some(issued.info.prefix.as_str()));
    assert_eq!(issued.info.hash, hash_key(SECRET, &issued.key));
    assert!(
        store
            .issue_key(&t_b, "c1", &Limits::default(), None)
            .await
            .is_err(),
        "no consumer c1 in b"
    );

    let sub = store
        .subscribe(&t_a, "c1", &svc.name)
        .await
        .expect("subscribe");
    assert_eq!(sub.state, SubscriptionState::Pending);
    assert!(
        store.decide_subscription(&t_b, sub.id, true).await.is_err(),
        "b cannot approve a's"
    );
    let sub = store
        .decide_subscription(&t_a, sub.id, true)
        .await
        .expect("approve");
    assert_eq!(sub.state, SubscriptionState::Active);

    assert!(
        store.revoke_key(&t_b, &issued.info.prefix).await.is_err(),
        "b cannot revoke a's key"
    );
    let revoked = store
        .revoke_key(&t_a, &issued.info.prefix)
        .await
        .expect("revoke");
    assert!(!revoked.usable_at(now_ms()));

    let snap = store.snapshot().await.expect("snapshot");
    assert!(snap
        .keys
        .iter()
        .any(|k| k.prefix == issued.info.prefix && k.revoked_ms.is_some()));
    assert!(snap
        .subscriptions
        .iter()
        .any(|s| s.id == sub.id && s.state == SubscriptionState::Active));

    // Call log: 1200 calls in batches (more than one INSERT statement), then analytics.
    let now = now_ms();
    let calls: Vec<CallRecord> = (0..1200)
        .map(|i| CallRecord {
            ts_ms: now - 1000 + (i % 100),
            route: "r1".into(),
            method: "GET".into(),
            path: "/x".into(),
            status: if i % 10 == 0 { 502 } else { 200 },
            reset_class: (i % 10 == 0).then_some(ResetClass::UpstreamRefused),
            total_ms: (i % 100 + 1) as f64,
            upstream_ms: Some(0.5),
            extra: CallExtra {
                tenant: Some(t_a.clone()),
                service: Some(svc.name.clone()),
                consumer: Some("c1".into()),
                ai: (i % 2 == 0).then(|| AiUsage {
                    model_requested: "smart".into(),
                    input_tokens: 3,
                    output_tokens: 4,
                    cost_usd: 0.01,
                    ..AiUsage::default()
                }),
                ..CallExtra::default()
            },
            ..CallRecord::default()
        })
        .collect();
    store.insert_calls("node-1", &calls).await.expect("insert");
    store
        .insert_calls("node-2", &calls[..10])
        .await
        .expect("insert");
    assert_eq!(store.count_calls(Some(&t_a)).await.expect("count"), 1210);
    assert_eq!(store.count_calls(Some(&t_b)).await.expect("count"), 0);
    let q = StatsQuery {
        since_ms: now - 3_600_000,
        tenant: Some(t_a.clone()),
        bucket_ms: 60_000,
        top: 5,
    };
    let a = analyse(&q, &store.fetch_calls(&q).await.expect("fetch"));
    assert_eq!(a.calls, 1210);
    assert_eq!(a.errors, 121);
    assert_eq!(a.resets_by_class.get("upstream_refused"), Some(&121));
    assert_eq!(a.calls_by_node.get("node-2"), Some(&10));
    assert_eq!(a.usage.len(), 1);
    assert_eq!(a.usage[0].tokens, 605 * 7);
    assert!(a.p99_ms >= 99.0 && a.p50_ms <= 51.0, "{a:?}");
    let pruned = store.prune_calls(now + 1).await.expect("prune");
    assert!(pruned >= 1210);
}

/// Update and delete on either dialect: validation before any write, atomic multi-row
/// writes, natural version order, dependents deleted with their owner, decided subscriptions
/// refused, and every change bumping the generation (and, on PostgreSQL, announced).
async fn crud_scenario(store: SqlStore, tag: &str) {
    let t = format!("crud{tag}");
    let svc_name = format!("svc{tag}");
    let mut listener = store.listen("holdfast-test-crud").await.expect("listen");
    store.create_tenant(&t).await.expect("tenant");
    let version = |v: &str| ServiceVersion {
        version: v.into(),
        state: Lifecycle::Published,
        since_ms: None,
        sunset_ms: None,
    };
    let mut svc = Service {
        name: svc_name.clone(),
        tenant: t.clone(),
        require_approval: true,
        limits: Limits::default(),
        versions: vec![version("v1"), version("v2"), version("v1")],
        created_ms: 0,
    };
    let gen = store.generation().await.expect("gen");
    assert!(matches!(
        store.create_service(&svc).await,
        Err(StoreError::Invalid { field, .. }) if field == "versions[2].version"
    ));
    assert!(matches!(
        store.get_service(&t, &svc_name).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(store.generation().await.expect("gen"), gen);
    svc.versions = ["v10", "v9", "v1.10", "v1.2"].map(version).to_vec();
    let created = store.create_service(&svc).await.expect("service");
    let order: Vec<&str> = created
        .versions
        .iter()
        .map(|v| v.version.as_str())
        .collect();
    assert_eq!(order, ["v1.2", "v1.10", "v9", "v10"]);
    assert!(store.generation().await.expect("gen") > gen);
    if let Some(l) = listener.as_mut() {
        tokio::time::timeout(std::time::Duration::from_secs(5), l.changed())
            .await
            .expect("notified of the create");
    }
    // A second service with the same name conflicts; nothing of it is written.
    assert!(matches!(
        store.create_service(&svc).await,
        Err(StoreError::Conflict(_))
    ));

    let limits = Limits {
        rpm: Some(5),
        ..Limits::default()
    };
    let updated = store
        .update_service(&t, &svc_name, Some(false), Some(&limits))
        .await
        .expect("update service");
    assert!(!updated.require_approval);
    assert_eq!(updated.limits, limits);
    assert!(matches!(
        store.update_service(&t, "nope", None, None).await,
        Err(StoreError::NotFound(_))
    ));

    let c = Consumer {
        tenant: t.clone(),
        name: "c1".into(),
        limits: Limits::default(),
        created_ms: 0,
    };
    store.create_consumer(&c).await.expect("consumer");
    let c2 = store
        .update_consumer(&t, "c1", &limits)
        .await
        .expect("update consumer");
    assert_eq!(c2.limits, limits);
    assert_eq!(
        store.get_consumer(&t, "c1").await.expect("get").limits,
        limits
    );
    let key = store
        .issue_key(&t, "c1", &Limits::default(), None)
        .await
        .expect("key");
    let k = store
        .update_key(
            &t,
            &key.info.prefix,
            Some(&limits),
            Some(Some(now_ms() + 60_000)),
        )
        .await
        .expect("update key");
    assert_eq!(k.limits, limits);
    assert!(k.expires_ms.is_some());
    let k = store
        .update_key(&t, &key.info.prefix, None, Some(None))
        .await
        .expect("clear expiry");
    assert_eq!((k.limits, k.expires_ms), (limits.clone(), None));

    let sub = store.subscribe(&t, "c1", &svc_name).await.expect("sub");
    assert_eq!(sub.state, SubscriptionState::Active);
    assert!(matches!(
        store.decide_subscription(&t, sub.id, false).await,
        Err(StoreError::Conflict(m)) if m.contains("already active")
    ));
    store
        .delete_subscription(&t, sub.id)
        .await
        .expect("delete sub");
    assert!(matches!(
        store.delete_subscription(&t, sub.id).await,
        Err(StoreError::NotFound(_))
    ));
    store.subscribe(&t, "c1", &svc_name).await.expect("again");

    assert!(matches!(
        store.delete_tenant(&t, false).await,
        Err(StoreError::Conflict(m)) if m.contains("force")
    ));
    store
        .delete_consumer(&t, "c1")
        .await
        .expect("delete consumer");
    assert!(store.list_keys(Some(&t)).await.expect("keys").is_empty());
    assert!(store
        .list_subscriptions(Some(&t))
        .await
        .expect("subs")
        .is_empty());
    store.create_consumer(&c).await.expect("consumer again");
    store.subscribe(&t, "c1", &svc_name).await.expect("sub 3");
    store
        .delete_service(&t, &svc_name)
        .await
        .expect("delete svc");
    assert!(store
        .list_subscriptions(Some(&t))
        .await
        .expect("subs")
        .is_empty());
    // The name is free again, versions included.
    svc.versions = vec![version("v1")];
    store.create_service(&svc).await.expect("recreate");
    store.delete_tenant(&t, true).await.expect("force");
    assert!(matches!(
        store.get_tenant(&t).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(store
        .list_services(Some(&t))
        .await
        .expect("svcs")
        .is_empty());
    assert!(store
        .list_consumers(Some(&t))
        .await
        .expect("cons")
        .is_empty());
}

#[tokio::test]
async fn sqlite_crud_scenario() {
    let dir = tempfile::tempdir().expect("tempdir");
    crud_scenario(sqlite_store(&dir).await, "").await;
}

#[tokio::test]
async fn postgres_crud_scenario() {
    let Some((_turn, store)) = postgres_store().await else {
        return;
    };
    crud_scenario(store, &format!("{}", std::process::id())).await;
}

#[tokio::test]
async fn sqlite_file_scenario() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("m.db");
    let store = SqlStore::open_sqlite(path.to_str().expect("utf8"), SECRET)
        .await
        .expect("open");
    scenario(store, "").await;
    // Reopening runs no migration twice and keeps the data.
    let again = SqlStore::open_sqlite(path.to_str().expect("utf8"), SECRET)
        .await
        .expect("reopen");
    assert_eq!(again.list_tenants().await.expect("tenants").len(), 2);
}

#[tokio::test]
async fn postgres_scenario() {
    let _turn = PG_TURN.lock().await;
    let Ok(url) = std::env::var("HOLDFAST_TEST_PG_URL") else {
        eprintln!("skipped: HOLDFAST_TEST_PG_URL is unset (scripts/test sets it via scripts/test-services)");
        return;
    };
    let tag = format!("{}", std::process::id());
    let (s1, s2) = tokio::join!(
        SqlStore::open_postgres(&url, SECRET),
        SqlStore::open_postgres(&url, SECRET)
    );
    s1.expect("open 1");
    s2.expect("open 2 (concurrent migration)");
    let store = SqlStore::open_postgres(&url, SECRET).await.expect("open");
    scenario(store, &tag).await;
}

/// TLS to PostgreSQL (scripts/test-services turns on `ssl` with a throwaway CA): verified
/// against `sslrootcert`, refused without it, and `LISTEN` works over it too.
#[tokio::test]
async fn postgres_over_tls_verifies_the_server() {
    let _turn = PG_TURN.lock().await;
    let (Ok(url), Ok(ca)) = (
        std::env::var("HOLDFAST_TEST_PG_URL"),
        std::env::var("HOLDFAST_TEST_PG_CA"),
    ) else {
        eprintln!("skipped: HOLDFAST_TEST_PG_URL / HOLDFAST_TEST_PG_CA unset (scripts/test sets them via scripts/test-services)");
        return;
    };
    let tls_url = format!("{url}?sslmode=verify-full&sslrootcert={ca}");
    let store = SqlStore::open_postgres(&tls_url, SECRET)
        .await
        .expect("open over TLS");
    let rows = store
        .query(
            "SELECT ssl::TEXT FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            vec![],
        )
        .await
        .expect("pg_stat_ssl");
    let ssl = rows.first().map(|r| format!("{:?}", r));
    assert!(
        ssl.as_deref().is_some_and(|r| r.contains("true")),
        "the session is not encrypted: {ssl:?}"
    );
    assert!(store
        .listen("holdfast-tls-test")
        .await
        .expect("listen")
        .is_some());
    // The public roots do not know the test CA: the connection is refused, not downgraded.
    let err = SqlStore::open_postgres(&format!("{url}?sslmode=require"), SECRET)
        .await
        .err()
        .expect("an unknown CA must be refused");
    let text = err.to_string();
    assert!(
        text.contains("TLS") || text.contains("certificate"),
        "unexpected error: {text}"
    );

    // `cert` authentication: the role `holdfast_cert` logs in with its client certificate only.
    let (Ok(cert), Ok(key)) = (
        std::env::var("HOLDFAST_TEST_PG_CLIENT_CERT"),
        std::env::var("HOLDFAST_TEST_PG_CLIENT_KEY"),
    ) else {
        eprintln!("skipped the client-certificate part: HOLDFAST_TEST_PG_CLIENT_CERT unset");
        return;
    };
    let cert_url = tls_url.replace("postgres://holdfast@", "postgres://holdfast_cert@");
    let store = SqlStore::open_postgres(&format!("{cert_url}&sslcert={cert}&sslkey={key}"), SECRET)
        .await
        .expect("open with a client certificate");
    let rows = store
        .query("SELECT current_user::TEXT", vec![])
        .await
        .expect("current_user");
    assert!(format!("{rows:?}").contains("holdfast_cert"), "{rows:?}");
    let err = SqlStore::open_postgres(&cert_url, SECRET)
        .await
        .err()
        .expect("no client certificate must be refused");
    assert!(err.to_string().contains("certificate"), "{err}");
}

#[tokio::test]
async fn redis_gcra_is_exact_across_connections() {
    let Ok(url) = std::env::var("HOLDFAST_TEST_REDIS_URL") else {
        eprintln!("skipped: HOLDFAST_TEST_REDIS_URL is unset (scripts/test sets it via scripts/test-services)");
        return;
    };
    let ns = format!("t{}", std::process::id());
    let a = RedisCounters::connect(&url, &ns).await.expect("a");
    let b = RedisCounters::connect(&url, &ns).await.expect("b");
    let mut allowed = 0;
    let mut last = None;
    let mut remaining = Vec::new();
    for i in 0..20 {
        let c = if i % 2 == 0 { &a } else { &b };
        let d = c.gcra("k", 7, 60_000).await.expect("gcra");
        if d.allowed {
            allowed += 1;
            remaining.push(d.remaining);
            // The bucket refills one request per 60/7 s: full again after `used` of those.
            let used = 7 - d.remaining;
            assert!(
                d.reset_ms <= used * (60_000 / 7 + 1) && d.reset_ms + 1_000 >= used * (60_000 / 7),
                "reset {} ms after {used} used",
                d.reset_ms
            );
        } else {
            last = Some(d);
        }
    }
    assert_eq!(allowed, 7, "7 per minute in total over two connections");
    assert_eq!(
        remaining,
        vec![6, 5, 4, 3, 2, 1, 0],
        "remaining counts down across nodes"
    );
    let refused = last.expect("some refused");
    assert!(refused.retry_after_ms > 0 && refused.retry_after_ms <= 60_000 / 7 + 1);
    assert_eq!(a.add_tokens("t", 0, 60_000, 5).await.expect("add"), 5);
    assert_eq!(b.add_tokens("t", 0, 60_000, 6).await.expect("add"), 11);
    assert_eq!(a.tokens("t", 0).await.expect("get"), 11);
}

/// A key issued and a subscription made while their consumer is being deleted: afterwards
/// no key or subscription names a consumer that does not exist (it would come back with a new
/// consumer of the same name).
async fn delete_races_leave_no_orphans(store: SqlStore, tag: &str) {
    let t = format!("race{tag}");
    let svc = format!("racesvc{tag}");
    store.create_tenant(&t).await.expect("tenant");
    store
        .create_service(&published_service(&svc, &t))
        .await
        .expect("service");
    for _ in 0..150 {
        store
            .create_consumer(&consumer(&t, "rk"))
            .await
            .expect("consumer");
        let (a, b, c) = (store.clone(), store.clone(), store.clone());
        let (tk, ts, td) = (t.clone(), t.clone(), t.clone());
        let s2 = svc.clone();
        let issue = tokio::spawn(async move {
            let _ = a.issue_key(&tk, "rk", &Limits::default(), None).await;
        });
        let subscribe = tokio::spawn(async move {
            let _ = b.subscribe(&ts, "rk", &s2).await;
        });
        let delete = tokio::spawn(async move { c.delete_consumer(&td, "rk").await });
        issue.await.unwrap();
        subscribe.await.unwrap();
        delete.await.unwrap().expect("delete");
        let keys = store.list_keys(Some(&t)).await.expect("keys");
        assert!(keys.is_empty(), "a deleted consumer kept a key: {keys:?}");
        let subs = store.list_subscriptions(Some(&t)).await.expect("subs");
        assert!(
            subs.is_empty(),
            "a deleted consumer kept a subscription: {subs:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_delete_races_leave_no_orphans() {
    let dir = tempfile::tempdir().expect("tempdir");
    delete_races_leave_no_orphans(sqlite_store(&dir).await, "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_delete_races_leave_no_orphans() {
    let Some((_turn, store)) = postgres_store().await else {
        return;
    };
    delete_races_leave_no_orphans(store, &format!("{}", std::process::id())).await;
}

/// A subscription made and a version added while their service is being deleted: afterwards
/// no subscription or version names a service that does not exist (a new service of the same
/// name, of any tenant, would inherit them: an active subscription it never approved).
async fn service_delete_races_leave_no_orphans(store: SqlStore, tag: &str) {
    let t = format!("srace{tag}");
    let svc = format!("sracesvc{tag}");
    store.create_tenant(&t).await.expect("tenant");
    store
        .create_consumer(&consumer(&t, "sc"))
        .await
        .expect("consumer");
    for _ in 0..400 {
        store
            .create_service(&published_service(&svc, &t))
            .await
            .expect("service");
        let (a, b, c) = (store.clone(), store.clone(), store.clone());
        let (ta, tb, tc) = (t.clone(), t.clone(), t.clone());
        let (sa, sb, sc) = (svc.clone(), svc.clone(), svc.clone());
        let subscribe = tokio::spawn(async move {
            let _ = a.subscribe(&ta, "sc", &sa).await;
        });
        let version = tokio::spawn(async move {
            let _ = b
                .set_version_state(&tb, &sb, "v2", Lifecycle::Published, None)
                .await;
        });
        let delete = tokio::spawn(async move { c.delete_service(&tc, &sc).await });
        subscribe.await.unwrap();
        version.await.unwrap();
        delete.await.unwrap().expect("delete");
        let subs = store.list_subscriptions(Some(&t)).await.expect("subs");
        assert!(
            subs.is_empty(),
            "a deleted service kept a subscription: {subs:?}"
        );
        let versions = store
            .query(
                "SELECT version FROM service_versions WHERE service = $1",
                vec![svc.as_str().into()],
            )
            .await
            .expect("versions");
        assert!(
            versions.is_empty(),
            "a deleted service kept {} version(s)",
            versions.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_service_delete_races_leave_no_orphans() {
    let dir = tempfile::tempdir().expect("tempdir");
    service_delete_races_leave_no_orphans(sqlite_store(&dir).await, "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_service_delete_races_leave_no_orphans() {
    let Some((_turn, store)) = postgres_store().await else {
        return;
    };
    service_delete_races_leave_no_orphans(store, &format!("{}", std::process::id())).await;
}
