//! Encoding an HTTP/1.1 request head for an upstream.
//!
//! The body is always whole here, so the head carries its exact `Content-Length` (any
//! `Content-Length` or `Transfer-Encoding` the client sent describes the client's framing, not
//! this one). Header names and values come from `http` types, which cannot hold CR or LF, so
//! nothing can be smuggled into the head.

use http::{header, Method};

use super::RequestParts;

/// Whether an empty body is still announced with `Content-Length: 0` (methods that carry a
/// body by convention, as curl and hyper do).
fn announces_empty_body(method: &Method) -> bool {
    matches!(*method, Method::POST | Method::PUT | Method::PATCH)
}

/// Append the request line and headers of `req` (ending with the blank line) to `out`.
pub fn encode_head(out: &mut Vec<u8>, req: &RequestParts<'_>) {
    let target = req
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .filter(|p| !p.is_empty())
        .unwrap_or("/");
    out.reserve(64 + target.len() + req.headers.len() * 32);
    out.extend_from_slice(req.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    // Host first, as clients conventionally send it; HTTP/1.1 requires one (RFC 9112 §3.2),
    // so a request that came without (HTTP/1.0) names the target.
    match req.headers.get(header::HOST) {
        Some(host) => push_header(out, b"host", host.as_bytes()),
        None => push_header(out, b"host", req.authority.as_bytes()),
    }
    let mut had_length = false;
    for (name, value) in req.headers {
        if name == header::HOST || name == header::TRANSFER_ENCODING {
            continue;
        }
        if name == header::CONTENT_LENGTH {
            had_length = true;
            continue;
        }
        push_header(out, name.as_str().as_bytes(), value.as_bytes());
    }
    if !req.body.is_empty() || had_length || announces_empty_body(req.method) {
        let mut digits = itoa::Buffer::new();
        push_header(
            out,
            b"content-length",
            digits.format(req.body.len()).as_bytes(),
        );
    }
    out.extend_from_slice(b"\r\n");
}

fn push_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http::{HeaderMap, HeaderValue, Uri};

    fn encode(method: Method, uri: &str, headers: &[(&str, &str)], body: &[u8]) -> String {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        let uri: Uri = uri.parse().unwrap();
        let body = Bytes::copy_from_slice(body);
        let mut out = Vec::new();
        encode_head(
            &mut out,
            &RequestParts {
                method: &method,
                uri: &uri,
                headers: &map,
                body: &body,
                authority: "10.0.0.1:8080",
            },
        );
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_request_without_host_names_the_target() {
        let head = encode(Method::GET, "/x", &[("accept", "*/*")], b"");
        assert_eq!(
            head,
            "GET /x HTTP/1.1\r\nhost: 10.0.0.1:8080\r\naccept: */*\r\n\r\n"
        );
    }

    #[test]
    fn host_goes_first_and_the_length_is_the_bodys_own() {
        let head = encode(
            Method::POST,
            "/orders?x=1",
            &[
                ("x-a", "1"),
                ("host", "api.example"),
                ("content-length", "99"),
                ("transfer-encoding", "chunked"),
            ],
            b"hello",
        );
        assert_eq!(
            head,
            "POST /orders?x=1 HTTP/1.1\r\nhost: api.example\r\nx-a: 1\r\ncontent-length: 5\r\n\r\n"
        );
    }

    #[test]
    fn a_get_without_a_body_announces_no_length() {
        let head = encode(Method::GET, "/", &[("host", "h")], b"");
        assert_eq!(head, "GET / HTTP/1.1\r\nhost: h\r\n\r\n");
        let post = encode(Method::POST, "/", &[], b"");
        assert!(post.ends_with("content-length: 0\r\n\r\n"), "{post}");
        let delete = encode(Method::DELETE, "/", &[("content-length", "0")], b"");
        assert!(delete.ends_with("content-length: 0\r\n\r\n"), "{delete}");
    }

    #[test]
    fn repeated_headers_each_get_a_line() {
        let head = encode(Method::GET, "/", &[("x-v", "a"), ("x-v", "b")], b"");
        assert!(head.contains("x-v: a\r\nx-v: b\r\n"), "{head}");
    }
}
