//! Call records and the hashing secret shared by the store tests that restart or freeze
//! their servers.

use holdfast_core::{CallExtra, CallRecord};
use holdfast_store::now_ms;

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
