//! Call records, entities and the hashing secret shared by the store tests.

#![allow(dead_code)]

use holdfast_core::{CallExtra, CallRecord};
use holdfast_store::{now_ms, Consumer, Lifecycle, Limits, Service, ServiceVersion};

pub const SECRET: &[u8] = b"test-secret-0123456789";

/// A call of tenant `t1`, `i` ms ago, to path `/{i}`.
pub fn call(i: i64) -> CallRecord {
    CallRecord {
        ts_ms: now_ms() - i,
        route: "r".into(),
        method: "GET".into(),
        path: format!("/{i}"),
        status: 200,
        total_ms: 1.0,
        extra: CallExtra {
            tenant: Some("t1".into()),
            ..CallExtra::default()
        },
        ..CallRecord::default()
    }
}

/// Service `name` of `tenant`: no approval, default limits, one published version `v1`.
pub fn published_service(name: &str, tenant: &str) -> Service {
    Service {
        name: name.into(),
        tenant: tenant.into(),
        require_approval: false,
        limits: Limits::default(),
        versions: vec![ServiceVersion {
            version: "v1".into(),
            state: Lifecycle::Published,
            since_ms: None,
            sunset_ms: None,
        }],
        created_ms: 0,
    }
}

/// Consumer `name` of `tenant` with default limits.
pub fn consumer(tenant: &str, name: &str) -> Consumer {
    Consumer {
        tenant: tenant.into(),
        name: name.into(),
        limits: Limits::default(),
        created_ms: 0,
    }
}
