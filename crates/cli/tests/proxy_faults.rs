//! The gateway in front of real misbehaving servers: recoverable faults never reach the
//! client, a POST is never sent twice once it may have been processed, and what cannot be
//! served gets an honest status with a body, never a reset.

mod proxy_support;

use std::time::Duration;

use holdfast_testkit::{refused_addr, Behavior, Misbehaving};
use proxy_support::{admin_get, metric_sum, Holdfast};

fn config(targets: &[String], route_extra: &str, upstream_extra: &str) -> String {
    let list: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
    format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin = \"127.0.0.1:0\"\n\n[upstreams.pool]\ntargets = [{}]\n{upstream_extra}\n\n[[routes]]\nname = \"main\"\nupstream = \"pool\"\n{route_extra}\n",
        list.join(", ")
    )
}

#[test]
fn five_thousand_keepalive_requests_over_idle_closes_and_refusals_get_no_errors() {
    let a = Misbehaving::start(Behavior::IdleClose(Duration::from_millis(150))).unwrap();
    let b = Misbehaving::start(Behavior::IdleClose(Duration::from_millis(150))).unwrap();
    let refused = format!("http://{}", refused_addr().unwrap());
    // The pool keeps connections far longer than the upstream does, so requests race the close.
    let hf = Holdfast::start(&config(
        &[a.url(), b.url(), refused],
        "",
        "idle_timeout_ms = 60000",
    ));
    let threads: Vec<_> = (0..10)
        .map(|t| {
            let addr = hf.addr;
            std::thread::spawn(move || {
                let mut client = proxy_support::Client::new(addr);
                let mut bad = Vec::new();
                for i in 0..500 {
                    // Every 25th request waits about as long as the upstream's idle close.
                    if i % 25 == 24 {
                        std::thread::sleep(Duration::from_millis(140 + (t * 3 + i % 7) as u64));
                    }
                    let id = format!("{t}-{i}");
                    let answer = if i % 2 == 0 {
                        client.request("GET", "/get", &[("x-request-id", &id)], b"")
                    } else {
                        client.request("POST", "/post", &[("x-request-id", &id)], b"{\"n\":1}")
                    };
                    match answer {
                        Ok(a) if a.status == 200 => {}
                        Ok(a) => bad.push(format!("{id}: status {} {}", a.status, a.text())),
                        Err(e) => bad.push(format!("{id}: client error {e}")),
                    }
                }
                (bad, client.connections)
            })
        })
        .collect();
    let mut failures = Vec::new();
    for t in threads {
        let (bad, connections) = t.join().unwrap();
        assert_eq!(
            connections, 1,
            "the client connection was never closed by holdfast"
        );
        failures.extend(bad);
    }
    assert!(
        failures.is_empty(),
        "{} of 5000 failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    assert!(a.requests() + b.requests() >= 5000);
    let page = admin_get(hf.admin.unwrap(), "/metrics");
    let refused_retries = metric_sum(
        &page,
        "holdfast_retried_exchanges_total",
        "class=\"upstream_refused\"",
    );
    assert!(
        refused_retries >= 1.0,
        "refused target was never tried? {page}"
    );
    eprintln!(
        "idle-race retries: {}, refused retries: {refused_retries}",
        metric_sum(
            &page,
            "holdfast_retried_exchanges_total",
            "class=\"upstream_closed_idle_race\""
        )
    );
}

#[test]
fn a_post_is_never_sent_twice_once_it_may_have_been_processed() {
    let resetter = Misbehaving::start(Behavior::ResetAfterRequest).unwrap();
    let healthy = Misbehaving::start(Behavior::Healthy).unwrap();
    let hf = Holdfast::start(&config(
        &[resetter.url(), healthy.url()],
        "",
        // Half the targets fail on purpose: give the retry budget room for the GETs.
        "outlier = { consecutive_failures = 1000 }\n[retry_budget]\npercent = 100",
    ));
    let mut client = hf.client();
    let mut bad_gateway = 0;
    for i in 0..40 {
        let id = format!("post-{i}");
        let a = client
            .request("POST", "/orders", &[("x-request-id", &id)], b"{}")
            .expect("an answer, never a reset");
        match a.status {
            200 => {}
            502 => {
                bad_gateway += 1;
                assert!(
                    a.text().contains("upstream_reset_before_response"),
                    "{}",
                    a.text()
                );
            }
            other => panic!("unexpected status {other}: {}", a.text()),
        }
    }
    assert!(bad_gateway > 0, "the resetting target was never chosen");
    let mut seen = resetter.request_ids();
    for (id, n) in healthy.request_ids() {
        *seen.entry(id).or_insert(0) += n;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "POSTs sent twice: {twice:?}");
    // The same fault is retried for GET, which is idempotent: every GET succeeds.
    for i in 0..20 {
        let a = client
            .request(
                "GET",
                "/orders",
                &[("x-request-id", &format!("get-{i}"))],
                b"",
            )
            .unwrap();
        if a.status != 200 {
            let records = hf.records_eventually(41 + i);
            panic!(
                "GET {i}: {} {}; last records: {:?}",
                a.status,
                a.text(),
                &records[records.len().saturating_sub(3)..]
            );
        }
    }
    let records = hf.records_eventually(60);
    assert!(records
        .iter()
        .any(|r| r["reset_class"] == "upstream_reset_before_response" && r["method"] == "POST"));
}

#[test]
fn with_no_healthy_target_clients_get_an_error_status_with_a_body() {
    let reset = Misbehaving::start(Behavior::ResetOnAccept).unwrap();
    let garbage = Misbehaving::start(Behavior::Garbage).unwrap();
    let hang = Misbehaving::start(Behavior::Hang).unwrap();
    let refused = format!("http://{}", refused_addr().unwrap());
    let hf = Holdfast::start(&config(
        &[reset.url(), garbage.url(), hang.url(), refused],
        "timeout_ms = 300",
        "",
    ));
    let mut client = hf.client();
    for i in 0..30 {
        let method = if i % 2 == 0 { "GET" } else { "POST" };
        let a = client
            .request(method, "/", &[], b"x")
            .expect("an answer, never a reset");
        assert!([502, 503, 504].contains(&a.status), "status {}", a.status);
        assert!(
            a.text().contains("\"error\""),
            "body says why: {}",
            a.text()
        );
    }
    let classes: Vec<String> = hf
        .records_eventually(30)
        .iter()
        .filter_map(|r| r["reset_class"].as_str().map(String::from))
        .collect();
    assert_eq!(classes.len(), 30, "every failed exchange gets a class");
}

#[test]
fn an_upstream_timeout_is_a_504() {
    let hang = Misbehaving::start(Behavior::Hang).unwrap();
    let hf = Holdfast::start(&config(
        &[hang.url()],
        "timeout_ms = 300\nmax_attempts = 1",
        "",
    ));
    let a = hf.client().get("/").unwrap();
    assert_eq!(a.status, 504);
    assert!(a.text().contains("upstream_timeout"));
}

#[test]
fn idempotent_requests_retry_past_a_503_answer() {
    let unavailable = Misbehaving::start(Behavior::Unavailable).unwrap();
    let healthy = Misbehaving::start(Behavior::Healthy).unwrap();
    let hf = Holdfast::start(&config(
        &[unavailable.url(), healthy.url()],
        "",
        "outlier = { consecutive_failures = 1000 }\n[retry_budget]\npercent = 100",
    ));
    let mut client = hf.client();
    for _ in 0..20 {
        assert_eq!(client.get("/").unwrap().status, 200);
    }
    assert!(unavailable.requests() > 0);
}

#[test]
fn a_failure_mid_response_is_never_a_clean_end() {
    for behavior in [Behavior::ResetMidBody, Behavior::ResetMidChunked] {
        let up = Misbehaving::start(behavior).unwrap();
        let hf = Holdfast::start(&config(&[up.url()], "", ""));
        let result = hf.client().get("/");
        assert!(
            result.is_err(),
            "{behavior:?}: the client must see a truncated body, got {result:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
        let records = hf.records();
        assert!(
            records
                .iter()
                .any(|r| r["reset_class"] == "upstream_reset_mid_response"),
            "{behavior:?}: {records:?}"
        );
    }
}

#[test]
fn pooled_connections_retire_before_the_announced_keep_alive_timeout() {
    // The upstream says `Keep-Alive: timeout=1` and closes idle connections after 1 s.
    let up = Misbehaving::start(Behavior::IdleCloseAnnounced(Duration::from_secs(1))).unwrap();
    let hf = Holdfast::start(&config(&[up.url()], "", "idle_timeout_ms = 60000"));
    let mut client = hf.client();
    for _ in 0..4 {
        assert_eq!(client.get("/").unwrap().status, 200);
        // Long enough to pass the retirement point (0.5 s), short of the upstream's close.
        std::thread::sleep(Duration::from_millis(800));
    }
    let page = admin_get(hf.admin.unwrap(), "/metrics");
    let races = metric_sum(
        &page,
        "holdfast_retried_exchanges_total",
        "upstream_closed_idle_race",
    );
    assert_eq!(
        races, 0.0,
        "no request should race the upstream's close: {page}"
    );
    assert_eq!(
        up.connections(),
        4,
        "each request after an idle pause used a fresh connection"
    );
}

#[test]
fn active_health_checks_take_a_failing_target_out_of_rotation() {
    let unavailable = Misbehaving::start(Behavior::Unavailable).unwrap();
    let healthy = Misbehaving::start(Behavior::Healthy).unwrap();
    let hf = Holdfast::start(&config(
        &[unavailable.url(), healthy.url()],
        "",
        "outlier = { consecutive_failures = 1000 }\nhealth_check = { kind = \"http\", path = \"/health\", interval_ms = 100, unhealthy_threshold = 1 }",
    ));
    // Let a few checks run (bounded wait), then POSTs, which are never retried after a 503,
    // must all reach the healthy target.
    std::thread::sleep(Duration::from_millis(800));
    let mut client = hf.client();
    for _ in 0..20 {
        let a = client.request("POST", "/", &[], b"x").unwrap();
        assert_eq!(a.status, 200, "{}", a.text());
    }
}

#[test]
fn metrics_show_which_targets_are_down_and_why() {
    let unavailable = Misbehaving::start(Behavior::Unavailable).unwrap();
    let healthy = Misbehaving::start(Behavior::Healthy).unwrap();
    let refused = refused_addr().unwrap();
    let hf = Holdfast::start(&config(
        &[unavailable.url(), healthy.url(), format!("http://{refused}")],
        "",
        "outlier = { consecutive_failures = 1, base_ejection_ms = 60000, max_ejection_ms = 60000 }\nhealth_check = { kind = \"http\", path = \"/health\", interval_ms = 100, unhealthy_threshold = 1 }",
    ));
    std::thread::sleep(Duration::from_millis(800));
    let mut client = hf.client();
    for _ in 0..6 {
        let a = client.request("GET", "/", &[], b"").unwrap();
        assert_eq!(a.status, 200, "{}", a.text());
    }
    let page = admin_get(hf.admin.unwrap(), "/metrics");
    let gauge = |name: &str, target: &str| {
        metric_sum(
            &page,
            name,
            &format!("upstream=\"pool\",target=\"{target}\""),
        )
    };
    let down = unavailable.url().trim_start_matches("http://").to_string();
    let up = healthy.url().trim_start_matches("http://").to_string();
    let refused = refused.to_string();
    assert_eq!(
        gauge("holdfast_upstream_target_healthy", &up),
        1.0,
        "{page}"
    );
    assert_eq!(gauge("holdfast_upstream_target_check_passing", &up), 1.0);
    assert_eq!(gauge("holdfast_upstream_target_ejected", &up), 0.0);
    // Failing its health check: out, but not ejected by outlier detection.
    assert_eq!(
        gauge("holdfast_upstream_target_healthy", &down),
        0.0,
        "{page}"
    );
    assert_eq!(gauge("holdfast_upstream_target_check_passing", &down), 0.0);
    // One healthy target of three is under the panic threshold, so GETs go to every
    // target in turn: the refused port is ejected by outlier detection.
    assert_eq!(
        gauge("holdfast_upstream_target_healthy", &refused),
        0.0,
        "{page}"
    );
    assert_eq!(
        gauge("holdfast_upstream_target_ejected", &refused),
        1.0,
        "{page}"
    );
    assert!(gauge("holdfast_upstream_target_ejections", &refused) >= 1.0);
    assert!(page.contains("# TYPE holdfast_upstream_target_healthy gauge"));
}

#[test]
fn garbage_on_a_reused_connection_is_not_the_idle_race_for_a_post() {
    // The upstream answers the first request of a connection, then garbage: it read the
    // second request, so a POST must not go to it again (a GET may).
    let up = Misbehaving::start(Behavior::GarbageOnReuse).unwrap();
    let hf = Holdfast::start(&config(&[up.url()], "", "idle_timeout_ms = 60000"));
    let mut client = hf.client();
    let first = client
        .request("POST", "/", &[("x-request-id", "p1")], b"{}")
        .expect("an answer");
    assert_eq!(first.status, 200);
    let second = client
        .request("POST", "/", &[("x-request-id", "p2")], b"{}")
        .expect("an answer, never a reset");
    assert_eq!(second.status, 502, "{}", second.text());
    assert!(second.text().contains("\"error\""), "{}", second.text());
    let ids = up.request_ids();
    assert_eq!(ids.get("p2"), Some(&1), "the POST went out once: {ids:?}");
    // A GET on the same kind of connection may be repeated on a fresh one.
    let get = client
        .request("GET", "/", &[("x-request-id", "g1")], b"")
        .expect("an answer");
    let get2 = client
        .request("GET", "/", &[("x-request-id", "g2")], b"")
        .expect("an answer");
    assert!(
        get.status == 200 && get2.status == 200,
        "{} {}",
        get.status,
        get2.status
    );
}

#[test]
fn posts_keep_away_from_a_target_that_just_reset() {
    // A POST that reached a resetting upstream cannot go again (it may have been processed),
    // so the first one that meets it fails; the ones after it go to the healthy target.
    let reset = Misbehaving::start(Behavior::ResetOnAccept).unwrap();
    let healthy = Misbehaving::start(Behavior::Healthy).unwrap();
    let hf = Holdfast::start(&config(
        &[reset.url(), healthy.url()],
        "",
        "outlier = { consecutive_failures = 1000 }",
    ));
    let mut client = hf.client();
    let mut failed = 0;
    for i in 0..30 {
        let a = client
            .request(
                "POST",
                "/orders",
                &[("x-request-id", &format!("p{i}"))],
                b"{}",
            )
            .expect("an answer, never a reset");
        if a.status != 200 {
            failed += 1;
        }
    }
    assert!(failed <= 1, "{failed} of 30 POSTs failed");
    // GETs keep away from it too while it is suspect (failed in the last 2 s)...
    let before = reset.connections();
    for _ in 0..10 {
        assert_eq!(client.get("/").unwrap().status, 200);
    }
    assert_eq!(reset.connections(), before, "a suspect target got a GET");
    // ...and try it again once that has passed (and are retried), so the pool notices when
    // it recovers.
    std::thread::sleep(Duration::from_millis(2200));
    for _ in 0..10 {
        assert_eq!(client.get("/").unwrap().status, 200);
    }
    assert!(
        reset.connections() > before,
        "the resetting target was not tried again"
    );
}

#[test]
fn consistent_hashing_pins_requests_with_the_key_and_spreads_those_without() {
    let a = Misbehaving::start(Behavior::Healthy).unwrap();
    let b = Misbehaving::start(Behavior::Healthy).unwrap();
    let hf = Holdfast::start(&config(
        &[a.url(), b.url()],
        "",
        "balance = \"consistent_hash\"\nhash_on = \"header:x-user\"",
    ));
    let mut client = hf.client();
    for _ in 0..10 {
        assert_eq!(
            client
                .request("GET", "/", &[("x-user", "ada")], b"")
                .unwrap()
                .status,
            200
        );
    }
    let pinned = (a.requests(), b.requests());
    assert!(pinned == (10, 0) || pinned == (0, 10), "{pinned:?}");
    for _ in 0..10 {
        assert_eq!(client.get("/").unwrap().status, 200);
    }
    let spread = (a.requests() - pinned.0, b.requests() - pinned.1);
    assert_eq!(
        spread,
        (5, 5),
        "requests without the key take turns: {spread:?}"
    );
}
