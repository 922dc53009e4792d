//! A service whose every version is retired answers 410 on an unpinned route too (not the
//! 404 of "nothing published yet"); a key revoked or updated by its whole key (what a user
//! holding a leaked key has) is handled by its prefix, the secret never echoed.

mod common;

use common::*;

async fn set_state(node: &Node, version: &str, state: &str) {
    set_version_state(node, "pay", version, state).await;
}

#[tokio::test]
async fn every_version_retired_is_gone_not_missing() {
    let (_dir, node, key) = acme_pay_node(
        r#"{"name":"pay","versions":[{"version":"v1","state":"published"},{"version":"v2","state":"deprecated"}]}"#,
    )
    .await;
    subscribe(&node, "c1", "pay").await;
    // The highest callable version, deprecated or not, takes unpinned calls.
    let (s, _, body, extra) = node.call("acme/pay", Some(&key)).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(extra.service_version.as_deref(), Some("v2"));
    set_state(&node, "v2", "retired").await;
    let (s, _, _, extra) = node.call("acme/pay", Some(&key)).await;
    assert_eq!((s, extra.service_version.as_deref()), (200, Some("v1")));
    set_state(&node, "v1", "retired").await;
    let (s, _, body, _) = node.call("acme/pay", Some(&key)).await;
    assert_eq!(
        s, 410,
        "every version retired: gone, like a pinned retired version: {body}"
    );
    assert!(
        body.contains("every version of service `pay` is retired"),
        "{body}"
    );
    assert_eq!(node.call("acme/pay@v1", Some(&key)).await.0, 410);
    // A draft beside the retired ones: not published yet, 404 as before.
    set_state(&node, "v3", "draft").await;
    let (s, _, body, _) = node.call("acme/pay", Some(&key)).await;
    assert_eq!(s, 404, "{body}");
    assert!(body.contains("has no published version"), "{body}");
    set_state(&node, "v3", "published").await;
    assert_eq!(node.call("acme/pay", Some(&key)).await.0, 200);
}

#[tokio::test]
async fn a_whole_key_in_the_path_is_taken_as_its_prefix() {
    let (_dir, node, key) = acme_pay_node(r#"{"name":"pay"}"#).await;
    let prefix = &key[..11];
    let (s, v) = node
        .api(
            "PATCH",
            &format!("/admin/tenants/acme/keys/{key}"),
            ADMIN_A,
            Some(r#"{"expires_in_s":3600}"#),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["prefix"], prefix, "{v}");
    assert!(v["expires_ms"].is_i64(), "{v}");
    let (s, v) = node
        .api(
            "POST",
            &format!("/admin/tenants/acme/keys/{key}/revoke"),
            ADMIN_A,
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["prefix"], prefix, "{v}");
    assert!(v["revoked_ms"].is_i64(), "{v}");
    assert_eq!(node.call("acme/pay", Some(&key)).await.0, 401);
    // A whole key of no key: 404 naming its prefix only, the secret part never echoed.
    let other = format!("hf_00000000_{}", &key[12..]);
    let (s, v) = node
        .api(
            "POST",
            &format!("/admin/tenants/acme/keys/{other}/revoke"),
            ADMIN_A,
            None,
        )
        .await;
    assert_eq!(s, 404, "{v}");
    let text = v.to_string();
    assert!(
        text.contains("hf_00000000") && !text.contains(&key[12..]),
        "{text}"
    );
}

#[tokio::test]
async fn a_deprecated_version_s_calls_say_since_when() {
    let (_dir, node, key) = acme_pay_node(
        r#"{"name":"pay","versions":[{"version":"v1","state":"published"},{"version":"v2","state":"published"}]}"#,
    )
    .await;
    subscribe(&node, "c1", "pay").await;
    let (s, headers, body, _) = node.call("acme/pay@v1", Some(&key)).await;
    assert_eq!(s, 200, "{body}");
    assert!(headers.get("deprecation").is_none(), "{headers:?}");
    let before = holdfast_store::now_ms() / 1000;
    set_state(&node, "v1", "deprecated").await;
    let after = holdfast_store::now_ms() / 1000;
    // Still served, with RFC 9745's `Deprecation: @SECONDS` of the change.
    let (s, headers, body, _) = node.call("acme/pay@v1", Some(&key)).await;
    assert_eq!(s, 200, "{body}");
    let value = headers
        .get("deprecation")
        .and_then(|v| v.to_str().ok())
        .expect("a Deprecation header")
        .to_string();
    let secs: i64 = value
        .strip_prefix('@')
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("not @SECONDS: {value}"));
    assert!(
        (before..=after).contains(&secs),
        "{value} not in {before}..={after}"
    );
    // Setting the same state again keeps the date; the published version has no header.
    set_state(&node, "v1", "deprecated").await;
    let (_, again, _, _) = node.call("acme/pay@v1", Some(&key)).await;
    assert_eq!(again.get("deprecation"), headers.get("deprecation"));
    let (s, headers, _, _) = node.call("acme/pay@v2", Some(&key)).await;
    assert_eq!(s, 200);
    assert!(headers.get("deprecation").is_none(), "{headers:?}");
    // The admin API shows when each version entered its state.
    let (s, v) = node
        .api("GET", "/admin/tenants/acme/services/pay", ADMIN_A, None)
        .await;
    assert_eq!(s, 200, "{v}");
    let v1 = &v["versions"][0];
    assert_eq!(v1["version"], "v1", "{v}");
    assert_eq!(
        v1["since_ms"].as_i64().map(|ms| ms / 1000),
        Some(secs),
        "{v}"
    );
}

#[tokio::test]
async fn a_version_with_a_planned_end_says_when_in_sunset() {
    let (_dir, node, key) = acme_pay_node(
        r#"{"name":"pay","versions":[{"version":"v1","state":"published","sunset_ms":1782777600000},{"version":"v2","state":"published"}]}"#,
    )
    .await;
    subscribe(&node, "c1", "pay").await;
    // Set at creation: RFC 8594's `Sunset: HTTP-date`, on a version still published.
    let (s, headers, body, _) = node.call("acme/pay@v1", Some(&key)).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(
        headers.get("sunset").and_then(|v| v.to_str().ok()),
        Some("Tue, 30 Jun 2026 00:00:00 GMT"),
        "{headers:?}"
    );
    assert!(headers.get("deprecation").is_none(), "{headers:?}");
    let (_, headers, _, _) = node.call("acme/pay@v2", Some(&key)).await;
    assert!(headers.get("sunset").is_none(), "{headers:?}");
    // Deprecated with a new end: both headers; the admin API shows it.
    let put = |body: &'static str| {
        let node = &node;
        async move {
            node.api(
                "PUT",
                "/admin/tenants/acme/services/pay/versions/v2",
                ADMIN_A,
                Some(body),
            )
            .await
        }
    };
    let (s, v) = put(r#"{"state":"deprecated","sunset_ms":1798761600000}"#).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["versions"][1]["sunset_ms"], 1_798_761_600_000_i64, "{v}");
    let (_, headers, _, _) = node.call("acme/pay@v2", Some(&key)).await;
    assert_eq!(
        headers.get("sunset").and_then(|v| v.to_str().ok()),
        Some("Fri, 01 Jan 2027 00:00:00 GMT"),
        "{headers:?}"
    );
    assert!(headers.get("deprecation").is_some(), "{headers:?}");
    // A PUT replaces it: without `sunset_ms` the planned end is gone.
    let (s, v) = put(r#"{"state":"deprecated"}"#).await;
    assert_eq!(
        (s, &v["versions"][1]["sunset_ms"]),
        (200, &serde_json::Value::Null),
        "{v}"
    );
    let (_, headers, _, _) = node.call("acme/pay@v2", Some(&key)).await;
    assert!(headers.get("sunset").is_none(), "{headers:?}");
    // Out of range: 400 naming the field, nothing changed.
    let (s, v) = put(r#"{"state":"retired","sunset_ms":-5}"#).await;
    assert_eq!((s, v["field"].as_str()), (400, Some("sunset_ms")), "{v}");
    let (s, v) = node
        .api(
            "POST",
            "/admin/tenants/acme/services",
            ADMIN_A,
            Some(r#"{"name":"late","versions":[{"version":"v1","state":"published","sunset_ms":253402300800000}]}"#),
        )
        .await;
    assert_eq!(
        (s, v["field"].as_str()),
        (400, Some("versions[0].sunset_ms")),
        "{v}"
    );
    assert_eq!(node.call("acme/pay@v2", Some(&key)).await.0, 200);
}
