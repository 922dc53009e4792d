//! The gateway's own answers: short JSON bodies that say why.

use bytes::Bytes;
use http::{header, Response, StatusCode};
use http_body_util::{BodyExt, Full};

use crate::plugin::Body;

/// A body from bytes.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// An empty body.
pub fn empty() -> Body {
    full(Bytes::new())
}

/// `{"error": CODE, "message": MESSAGE}` with `status`.
pub fn error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    let body = serde_json::json!({ "error": code, "message": message }).to_string();
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    resp
}

/// `503` with `Retry-After` for overload.
pub fn overloaded(message: &str, retry_after_secs: u64) -> Response<Body> {
    let mut resp = error(StatusCode::SERVICE_UNAVAILABLE, "overloaded", message);
    resp.headers_mut().insert(
        header::RETRY_AFTER,
        header::HeaderValue::from(retry_after_secs),
    );
    resp
}

/// The raw bytes of a `503` for connections beyond `max_connections` (written before hyper
/// ever sees the socket).
pub fn raw_overloaded() -> Vec<u8> {
    let body = r#"{"error":"overloaded","message":"too many client connections; retry shortly"}"#;
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}
