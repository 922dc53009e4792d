//! Parsing an upstream's HTTP/1.x response head and deciding how its body is framed
//! (RFC 9112 §6.3) and whether the connection may serve another exchange.

use std::mem::MaybeUninit;

use bytes::{Buf, BytesMut};
use http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode, Version};

use super::ExchangeError;

/// The most headers a response head may carry.
const MAX_HEADERS: usize = 100;

/// How the response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (a `HEAD` request, `204`, `304`, `101`).
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Everything until the upstream closes the connection.
    UntilClose,
}

/// A parsed response head.
#[derive(Debug)]
pub struct ResponseHead {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    /// A reason phrase other than the status code's usual one.
    pub reason: Option<bytes::Bytes>,
    pub framing: Framing,
    /// The connection may carry another exchange once this body has been read.
    pub reusable: bool,
}

/// Parse one response head from the front of `buf`, consuming it. `Ok(None)`: more bytes are
/// needed. Informational heads (1xx other than `101`) are consumed and skipped.
pub fn parse_head(
    buf: &mut BytesMut,
    head_request: bool,
) -> Result<Option<ResponseHead>, ExchangeError> {
    loop {
        let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut parsed = httparse::Response::new(&mut []);
        let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut parsed,
            buf,
            &mut slots,
        ) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => {
                return Err(ExchangeError::Parse(format!(
                    "the response has more than {MAX_HEADERS} headers"
                )))
            }
            Err(e) => return Err(ExchangeError::Parse(e.to_string())),
        };
        let code = parsed.code.unwrap_or(0);
        let status = StatusCode::from_u16(code)
            .map_err(|_| ExchangeError::Parse(format!("status code {code} is out of range")))?;
        if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
            buf.advance(len);
            continue;
        }
        let version = match parsed.version {
            Some(0) => Version::HTTP_10,
            _ => Version::HTTP_11,
        };
        let reason = parsed
            .reason
            .filter(|r| Some(*r) != status.canonical_reason() && !r.is_empty())
            .map(|r| bytes::Bytes::copy_from_slice(r.as_bytes()));
        // Where each header lies in the head, so names and values can be made from the head's
        // own bytes once it is split off the buffer.
        let base = buf.as_ptr() as usize;
        let count = parsed.headers.len();
        // (A vector of `count`: a zeroed array of `MAX_HEADERS` spans cost more than the
        // allocation, 3.2 KB of memset per response.)
        let mut spans = Vec::with_capacity(count);
        for h in parsed.headers.iter() {
            let name = h.name.as_ptr() as usize - base;
            let value = h.value.as_ptr() as usize - base;
            spans.push((name, name + h.name.len(), value, value + h.value.len()));
        }
        let head = buf.split_to(len).freeze();
        // Room for what the gateway adds on the way to the client (`Via`, a guard's
        // `RateLimit-*`): no regrowth of the map per response.
        let mut headers = HeaderMap::with_capacity(count + 6);
        for &(ns, ne, vs, ve) in &spans {
            let name = HeaderName::from_bytes(&head[ns..ne]).map_err(|_| {
                ExchangeError::Parse(format!(
                    "invalid header name `{}`",
                    String::from_utf8_lossy(&head[ns..ne])
                ))
            })?;
            let value = HeaderValue::from_maybe_shared(head.slice(vs..ve))
                .map_err(|_| ExchangeError::Parse(format!("invalid value for header `{name}`")))?;
            headers.append(name, value);
        }
        let (framing, clean_framing) = framing(&headers, status, head_request)?;
        let reusable = clean_framing
            && framing != Framing::UntilClose
            && status != StatusCode::SWITCHING_PROTOCOLS
            && keeps_alive(&headers, version);
        return Ok(Some(ResponseHead {
            status,
            version,
            headers,
            reason,
            framing,
            reusable,
        }));
    }
}

/// The body framing, and whether it was unambiguous (a response with both
/// `Transfer-Encoding` and `Content-Length` is read by the former, and its connection is not
/// reused: RFC 9112 §6.3).
fn framing(
    headers: &HeaderMap,
    status: StatusCode,
    head_request: bool,
) -> Result<(Framing, bool), ExchangeError> {
    if head_request
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
        || status == StatusCode::SWITCHING_PROTOCOLS
    {
        return Ok((Framing::Empty, true));
    }
    let has_length = headers.contains_key(header::CONTENT_LENGTH);
    if headers.contains_key(header::TRANSFER_ENCODING) {
        let last = headers
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .flat_map(|v| v.as_bytes().split(|b| *b == b','))
            .map(|c| c.trim_ascii())
            .rfind(|c| !c.is_empty());
        let framing = match last {
            Some(c) if c.eq_ignore_ascii_case(b"chunked") => Framing::Chunked,
            // Not chunked last: the body runs to the close (the gateway refuses such answers).
            _ => Framing::UntilClose,
        };
        return Ok((framing, !has_length));
    }
    if !has_length {
        return Ok((Framing::UntilClose, true));
    }
    let mut length: Option<u64> = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        for part in value.as_bytes().split(|b| *b == b',') {
            let part = part.trim_ascii();
            let n = std::str::from_utf8(part)
                .ok()
                .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|p| p.parse::<u64>().ok())
                .ok_or_else(|| ExchangeError::Parse("invalid content-length".into()))?;
            if length.is_some_and(|l| l != n) {
                return Err(ExchangeError::Parse(
                    "conflicting content-length values".into(),
                ));
            }
            length = Some(n);
        }
    }
    match length {
        Some(0) => Ok((Framing::Empty, true)),
        Some(n) => Ok((Framing::Length(n), true)),
        None => Err(ExchangeError::Parse("invalid content-length".into())),
    }
}

/// HTTP/1.1 keeps the connection unless `Connection: close`; HTTP/1.0 only with
/// `Connection: keep-alive`.
fn keeps_alive(headers: &HeaderMap, version: Version) -> bool {
    let mut close = false;
    let mut keep_alive = false;
    for value in headers.get_all(header::CONNECTION) {
        for token in value.as_bytes().split(|b| *b == b',') {
            let token = token.trim_ascii();
            close |= token.eq_ignore_ascii_case(b"close");
            keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
        }
    }
    !close && (version == Version::HTTP_11 || keep_alive)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str, head_request: bool) -> Result<Option<ResponseHead>, ExchangeError> {
        let mut buf = BytesMut::from(raw.as_bytes());
        parse_head(&mut buf, head_request)
    }

    fn head(raw: &str) -> ResponseHead {
        parse(raw, false).unwrap().unwrap()
    }

    #[test]
    fn a_plain_answer_is_length_framed_and_reusable() {
        let mut buf =
            BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: b\r\n\r\nok"[..]);
        let h = parse_head(&mut buf, false).unwrap().unwrap();
        assert_eq!(h.status, StatusCode::OK);
        assert_eq!(h.framing, Framing::Length(2));
        assert!(h.reusable);
        assert_eq!(h.headers["x-a"], "b");
        assert!(h.reason.is_none());
        assert_eq!(&buf[..], b"ok", "the body stays in the buffer");
    }

    #[test]
    fn partial_heads_ask_for_more() {
        assert!(parse("HTTP/1.1 200 OK\r\nContent-Le", false)
            .unwrap()
            .is_none());
    }

    #[test]
    fn informational_heads_are_skipped() {
        let h = head("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(h.status, StatusCode::CREATED);
        assert_eq!(h.framing, Framing::Empty);
        assert!(!h.headers.contains_key("link"));
    }

    #[test]
    fn framing_follows_rfc_9112() {
        assert_eq!(
            head("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n").framing,
            Framing::Chunked
        );
        let both =
            head("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n");
        assert_eq!(both.framing, Framing::Chunked);
        assert!(!both.reusable, "TE with CL: the connection is not reused");
        let close = head("HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!(close.framing, Framing::UntilClose);
        assert!(!close.reusable);
        assert_eq!(
            head("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n").framing,
            Framing::UntilClose
        );
        assert_eq!(
            head("HTTP/1.1 204 No Content\r\n\r\n").framing,
            Framing::Empty
        );
        assert_eq!(
            head("HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n").framing,
            Framing::Empty
        );
        let to_head = parse("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", true)
            .unwrap()
            .unwrap();
        assert_eq!(to_head.framing, Framing::Empty);
        assert_eq!(
            head("HTTP/1.1 200 OK\r\nContent-Length: 7, 7\r\n\r\n").framing,
            Framing::Length(7)
        );
    }

    #[test]
    fn bad_lengths_are_refused() {
        for raw in [
            "HTTP/1.1 200 OK\r\nContent-Length: 7, 8\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 7\r\nContent-Length: 8\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: +7\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 0x10\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n",
        ] {
            assert!(
                matches!(parse(raw, false), Err(ExchangeError::Parse(_))),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn keep_alive_rules() {
        assert!(
            !head("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n").reusable
        );
        assert!(!head("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n").reusable);
        assert!(
            head("HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n").reusable
        );
    }

    #[test]
    fn garbage_is_a_parse_error() {
        assert!(matches!(
            parse("\x00\x01garbage, not HTTP\r\n\r\n", false),
            Err(ExchangeError::Parse(_))
        ));
        assert!(matches!(
            parse("HTTP/1.1 200 OK\r\nBad Header: x\r\n\r\n", false),
            Err(ExchangeError::Parse(_))
        ));
    }

    #[test]
    fn an_unusual_reason_phrase_is_kept() {
        assert_eq!(
            head("HTTP/1.1 200 Fine Thanks\r\nContent-Length: 0\r\n\r\n")
                .reason
                .as_deref(),
            Some(&b"Fine Thanks"[..])
        );
    }
}
