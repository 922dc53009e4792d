//! How long a provider asks us to wait: `retry-after-ms`, `Retry-After` (delay-seconds or
//! an HTTP-date, RFC 9110 §10.2.3), or Google's `google.rpc.RetryInfo` in a Gemini error
//! body (`error.details[].retryDelay`, a protobuf Duration such as `"30s"` or `"1.5s"`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// The wait a provider's error answer asks for: headers first, then the body.
pub fn from_response(headers: &http::HeaderMap, body: &[u8]) -> Option<Duration> {
    from_headers(headers, SystemTime::now()).or_else(|| from_body(body))
}

/// `retry-after-ms` (some OpenAI-compatible servers), else `Retry-After` in seconds or as an
/// HTTP-date (a date in the past means no wait).
pub fn from_headers(headers: &http::HeaderMap, now: SystemTime) -> Option<Duration> {
    if let Some(ms) = headers
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|ms| ms.is_finite())
    {
        return Some(Duration::from_millis(ms.max(0.0) as u64));
    }
    let value = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = value.parse::<f64>() {
        if secs.is_finite() {
            return Some(Duration::from_millis((secs.max(0.0) * 1000.0) as u64));
        }
        return None;
    }
    let at = parse_http_date(value)?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Gemini (Google APIs) put the delay in the error body:
/// `{"error": {"details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo",
/// "retryDelay": "30s"}]}}`.
pub fn from_body(body: &[u8]) -> Option<Duration> {
    if body.is_empty() {
        return None;
    }
    let v: Value = serde_json::from_slice(body).ok()?;
    // Some Google front ends wrap the error in a one-element array.
    let error = match &v {
        Value::Array(a) => &a.first()?["error"],
        other => &other["error"],
    };
    error["details"]
        .as_array()?
        .iter()
        .filter(|d| {
            d["@type"]
                .as_str()
                .is_some_and(|t| t.ends_with("google.rpc.RetryInfo"))
        })
        .find_map(|d| proto_duration(&d["retryDelay"]))
}

/// A protobuf `Duration` in JSON: `"30s"`, `"1.500s"`; also the object form
/// `{"seconds": 30, "nanos": 0}` that some clients produce.
fn proto_duration(v: &Value) -> Option<Duration> {
    match v {
        Value::String(s) => {
            let secs: f64 = s.trim().strip_suffix('s')?.parse().ok()?;
            (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(1e9)))
        }
        Value::Object(_) => {
            let secs = v["seconds"]
                .as_u64()
                .or_else(|| v["seconds"].as_str()?.parse().ok())?;
            let nanos = v["nanos"].as_u64().unwrap_or(0).min(999_999_999) as u32;
            Some(Duration::new(secs, nanos))
        }
        _ => None,
    }
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];

/// An HTTP-date in any of its three forms (RFC 9110 §5.6.7): IMF-fixdate
/// (`Sun, 06 Nov 1994 08:49:37 GMT`), the obsolete RFC 850 form
/// (`Sunday, 06-Nov-94 08:49:37 GMT`) and asctime (`Sun Nov  6 08:49:37 1994`).
pub fn parse_http_date(s: &str) -> Option<SystemTime> {
    let s = s.trim();
    let words: Vec<&str> = s.split_whitespace().collect();
    let (day, month, year, time) = match words.as_slice() {
        // IMF-fixdate: wkday, DD Mon YYYY HH:MM:SS GMT
        [wd, d, m, y, t, "GMT"] if wd.ends_with(',') => (
            d.parse::<u32>().ok()?,
            month(m)?,
            y.parse::<i64>().ok()?,
            *t,
        ),
        // RFC 850: weekday, DD-Mon-YY HH:MM:SS GMT
        [wd, dmy, t, "GMT"] if wd.ends_with(',') => {
            let mut p = dmy.split('-');
            let d = p.next()?.parse::<u32>().ok()?;
            let m = month(p.next()?)?;
            let y = p.next()?.parse::<i64>().ok()?;
            // Two-digit years: the RFC says to read them as within 50 years of now.
            let y = if y < 100 {
                if y < 70 {
                    2000 + y
                } else {
                    1900 + y
                }
            } else {
                y
            };
            (d, m, y, *t)
        }
        // asctime: wkday Mon D HH:MM:SS YYYY
        [_, m, d, t, y] => (
            d.parse::<u32>().ok()?,
            month(m)?,
            y.parse::<i64>().ok()?,
            *t,
        ),
        _ => return None,
    };
    let mut hms = time.split(':');
    let h: u64 = hms.next()?.parse().ok()?;
    let mi: u64 = hms.next()?.parse().ok()?;
    let se: u64 = hms.next()?.parse().ok()?;
    if hms.next().is_some() || h > 23 || mi > 59 || se > 60 || !(1..=31).contains(&day) {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let secs = days.checked_mul(86_400)? + (h * 3600 + mi * 60 + se) as i64;
    let secs = u64::try_from(secs).ok()?;
    UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

fn month(m: &str) -> Option<u32> {
    let m = m.to_ascii_lowercase();
    MONTHS.iter().position(|x| *x == m).map(|i| i as u32 + 1)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                http::HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn http_dates_in_all_three_forms() {
        let want = UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"), Some(want));
        assert_eq!(
            parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"),
            Some(want)
        );
        assert_eq!(parse_http_date("Sun Nov  6 08:49:37 1994"), Some(want));
        assert_eq!(parse_http_date("tomorrow"), None);
        assert_eq!(parse_http_date("Sun, 06 Foo 1994 08:49:37 GMT"), None);
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 25:49:37 GMT"), None);
    }

    #[test]
    fn retry_after_seconds_date_and_ms() {
        let now = UNIX_EPOCH + Duration::from_secs(784_111_747);
        let h = headers(&[("retry-after", "Sun, 06 Nov 1994 08:49:37 GMT")]);
        assert_eq!(from_headers(&h, now), Some(Duration::from_secs(30)));
        // A date in the past: no wait.
        let later = now + Duration::from_secs(100);
        assert_eq!(from_headers(&h, later), Some(Duration::ZERO));
        let h = headers(&[("retry-after", "7")]);
        assert_eq!(from_headers(&h, now), Some(Duration::from_secs(7)));
        let h = headers(&[("retry-after", "7"), ("retry-after-ms", "250")]);
        assert_eq!(from_headers(&h, now), Some(Duration::from_millis(250)));
        let h = headers(&[("retry-after", "soon")]);
        assert_eq!(from_headers(&h, now), None);
        assert_eq!(from_headers(&headers(&[]), now), None);
    }

    #[test]
    fn gemini_retry_info_in_the_body() {
        let body = br#"{"error": {"code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED",
            "details": [{"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": []},
                        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "30s"}]}}"#;
        assert_eq!(from_body(body), Some(Duration::from_secs(30)));
        let body = br#"[{"error": {"details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1.5s"}]}}]"#;
        assert_eq!(from_body(body), Some(Duration::from_millis(1500)));
        assert_eq!(from_body(br#"{"error": {"message": "x"}}"#), None);
        assert_eq!(from_body(b"not json"), None);
        assert_eq!(from_body(b""), None);
    }
}
