//! Two management nodes sharing a real PostgreSQL and Redis (from `scripts/test-services`):
//! a rate limit holds across both, a key revoked on node 1 is refused by node 2 within 2 s,
//! and the call logs of both nodes appear in one analytics query.

mod common;

use std::time::{Duration, Instant};

use common::*;
use holdfast_core::config::management::StoreUrl;

#[tokio::test]
async fn two_nodes_share_limits_revocations_and_the_call_log() {
    let (Ok(pg), Ok(redis)) = (
        std::env::var("HOLDFAST_TEST_PG_URL"),
        std::env::var("HOLDFAST_TEST_REDIS_URL"),
    ) else {
        eprintln!("skipped: HOLDFAST_TEST_PG_URL / HOLDFAST_TEST_REDIS_URL unset (scripts/test sets them via scripts/test-services)");
        return;
    };
    let id = std::process::id();
    let (ta, tb) = (format!("mn-a-{id}"), format!("mn-b-{id}"));
    let mut cfg = config(StoreUrl::Postgres(pg), &ta, &tb);
    cfg.redis = Some(redis);
    // Polling at its slowest (every 1.5 s, and only every 15 s while listening): a revocation
    // seen within 2 s came through LISTEN/NOTIFY.
    cfg.cache_refresh_ms = 1500;
    let n1 = Node::start_as(cfg.clone(), &format!("n1-{id}")).await;
    let n2 = Node::start_as(cfg, &format!("n2-{id}")).await;
    assert!(
        n2.mgmt.cache_status().listening,
        "node 2 listens for changes"
    );
    let svc = format!("pay-{id}");
    let (s, v) = n1
        .api(
            "POST",
            "/admin/tenants",
            SUPER,
            Some(&format!(r#"{{"name":"{ta}"}}"#)),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let key = provision(
        &n1,
        ADMIN_A,
        &ta,
        &svc,
        &format!(r#"{{"name":"{svc}","limits":{{"rpm":10}}}}"#),
    )
    .await;
    let (s, v) = n1
        .api(
            "POST",
            &format!("/admin/tenants/{ta}/subscriptions"),
            ADMIN_A,
            Some(&format!(r#"{{"consumer":"c1","service":"{svc}"}}"#)),
        )
        .await;
    assert_eq!(s, 201, "{v}");

    // Rate limit: 10 per minute in total. The first accepted call on node 2 counts too.
    wait_until_accepted(&n2, &svc, &key).await;
    let mut allowed = 1;
    let mut remaining = Vec::new();
    for i in 0..30 {
        let node = if i % 2 == 0 { &n1 } else { &n2 };
        let (s, h, body, _) = node.call(&svc, Some(&key)).await;
        match s {
            200 => {
                allowed += 1;
                // The Redis GCRA answers the headers of passed requests too.
                assert_eq!(h["ratelimit-limit"], "10", "{h:?}");
                assert_eq!(h["ratelimit-policy"], "10;w=60", "{h:?}");
                let reset: u64 = h["ratelimit-reset"]
                    .to_str()
                    .expect("ascii")
                    .parse()
                    .expect("n");
                assert!((1..=60).contains(&reset), "reset {reset}");
                remaining.push(
                    h["ratelimit-remaining"]
                        .to_str()
                        .expect("ascii")
                        .parse::<u64>()
                        .expect("number"),
                );
            }
            429 => assert!(h.contains_key("retry-after"), "{body}"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(
        allowed, 10,
        "10 requests per minute across both nodes, not 10 per node"
    );
    assert_eq!(
        remaining,
        (0..9).rev().collect::<Vec<u64>>(),
        "remaining counts down across both nodes"
    );

    // Revocation through node 1 reaches node 2 within 2 s.
    let (s, v) = n1
        .api(
            "POST",
            &format!("/admin/tenants/{ta}/keys/{}/revoke", &key[..11]),
            ADMIN_A,
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let revoked_at = Instant::now();
    loop {
        let (s, _, body, _) = n2.call(&svc, Some(&key)).await;
        if s == 401 {
            assert!(body.contains("revoked"), "{body}");
            break;
        }
        assert!(
            revoked_at.elapsed() < Duration::from_secs(2),
            "node 2 still accepts the revoked key"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    eprintln!(
        "revocation visible on node 2 after {:?}",
        revoked_at.elapsed()
    );
    let status = n2.mgmt.cache_status();
    assert!(status.notified_reloads >= 1, "{status:?}");
    assert_eq!(status.polled_reloads, 0, "{status:?}");

    // Call logs of both nodes in one analytics query.
    let rec = record(&ta, &svc);
    push(&n1, &rec, 40);
    push(&n2, &rec, 25);
    n1.mgmt.shutdown().await;
    n2.mgmt.shutdown().await;
    let (s, v) = n2
        .api(
            "GET",
            &format!("/admin/tenants/{ta}/stats?since=1h"),
            ADMIN_A,
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["calls"], 65, "{v}");
    assert_eq!(v["calls_by_node"][format!("n1-{id}")], 40, "{v}");
    assert_eq!(v["calls_by_node"][format!("n2-{id}")], 25, "{v}");
}

/// The listener of node 2 is killed: changes still reach it within 2 s by polling, and it
/// listens again afterwards.
#[tokio::test]
async fn revocation_still_reaches_a_node_whose_listener_dropped() {
    let Ok(pg) = std::env::var("HOLDFAST_TEST_PG_URL") else {
        eprintln!(
            "skipped: HOLDFAST_TEST_PG_URL unset (scripts/test sets it via scripts/test-services)"
        );
        return;
    };
    let id = std::process::id();
    let (ta, tb) = (format!("ls-a-{id}"), format!("ls-b-{id}"));
    let cfg = config(StoreUrl::Postgres(pg.clone()), &ta, &tb);
    let n1 = Node::start_as(cfg.clone(), &format!("ls1-{id}")).await;
    let n2 = Node::start_as(cfg, &format!("ls2-{id}")).await;
    assert!(n2.mgmt.cache_status().listening);
    let (s, v) = n1
        .api(
            "POST",
            "/admin/tenants",
            SUPER,
            Some(&format!(r#"{{"name":"{ta}"}}"#)),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let svc = format!("ls-{id}");
    let key = provision(&n1, ADMIN_A, &ta, &svc, &format!(r#"{{"name":"{svc}"}}"#)).await;
    let (s, v) = n1
        .api(
            "POST",
            &format!("/admin/tenants/{ta}/subscriptions"),
            ADMIN_A,
            Some(&format!(r#"{{"consumer":"c1","service":"{svc}"}}"#)),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    wait_until_accepted(&n2, &svc, &key).await;

    // Kill node 2's LISTEN connection from the server side.
    let admin = holdfast_store::SqlStore::open_postgres(&pg, b"unused-secret-0123456789")
        .await
        .expect("open");
    let killed = admin
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            vec![format!("holdfast-listen-ls2-{id}").into()],
        )
        .await
        .expect("terminate");
    assert_eq!(killed.len(), 1, "exactly node 2's listener was found");
    let deadline = Instant::now() + Duration::from_secs(2);
    while n2.mgmt.cache_status().listening {
        assert!(
            Instant::now() < deadline,
            "node 2 never noticed its listener dropped"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let (s, v) = n1
        .api(
            "POST",
            &format!("/admin/tenants/{ta}/keys/{}/revoke", &key[..11]),
            ADMIN_A,
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let revoked_at = Instant::now();
    while n2.call(&svc, Some(&key)).await.0 != 401 {
        assert!(
            revoked_at.elapsed() < Duration::from_secs(2),
            "node 2 still accepts the revoked key without its listener"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "revocation visible on node 2 (listener down) after {:?}",
        revoked_at.elapsed()
    );

    // The listener comes back, and announces changes again.
    let deadline = Instant::now() + Duration::from_secs(6);
    while !n2.mgmt.cache_status().listening {
        assert!(Instant::now() < deadline, "node 2 never listened again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = n2.mgmt.cache_status();
    assert!(status.listener_restarts >= 1, "{status:?}");
    let before = status.notified_reloads;
    let (s, v) = n1
        .api(
            "POST",
            &format!("/admin/tenants/{ta}/consumers"),
            ADMIN_A,
            Some(r#"{"name":"c2"}"#),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let deadline = Instant::now() + Duration::from_secs(2);
    while n2.mgmt.cache_status().notified_reloads == before {
        assert!(
            Instant::now() < deadline,
            "no notification after the listener came back"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
