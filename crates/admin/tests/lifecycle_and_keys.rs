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
