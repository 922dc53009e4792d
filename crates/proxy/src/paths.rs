//! Request paths as routes see them: dot segments resolved (RFC 3986 §5.2.4), so that
//! `/api/../admin` is routed (and forwarded) as `/admin`, not matched by a `/api/` route and
//! then resolved by the upstream to a path that route never allowed. Percent-encoded dots
//! (`%2e`) count as dots, as most servers decode them before resolving. A path that climbs
//! above the root is refused.

use std::borrow::Cow;

/// `segment` is `.` (or an encoded form of it).
fn is_dot(segment: &str) -> bool {
    segment == "." || segment.eq_ignore_ascii_case("%2e")
}

/// `segment` is `..` (or an encoded form of it).
fn is_dot_dot(segment: &str) -> bool {
    matches!(segment.len(), 2 | 4 | 6) && segment.to_ascii_lowercase().replace("%2e", ".").eq("..")
}

/// The path climbs above the root (`/../x`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AboveRoot;

/// `path` with its dot segments resolved; borrowed when it has none (the common case costs
/// one scan for a dot).
pub fn resolve_dots(path: &str) -> Result<Cow<'_, str>, AboveRoot> {
    if !path.starts_with('/') || !(path.contains('.') || path.contains('%')) {
        return Ok(Cow::Borrowed(path));
    }
    let segments: Vec<&str> = path[1..].split('/').collect();
    if !segments.iter().any(|s| is_dot(s) || is_dot_dot(s)) {
        return Ok(Cow::Borrowed(path));
    }
    let mut kept: Vec<&str> = Vec::with_capacity(segments.len());
    let last = segments.len() - 1;
    let mut trailing_slash = false;
    for (i, segment) in segments.iter().enumerate() {
        if is_dot(segment) {
            trailing_slash = i == last;
        } else if is_dot_dot(segment) {
            if kept.pop().is_none() {
                return Err(AboveRoot);
            }
            trailing_slash = i == last;
        } else {
            kept.push(segment);
            trailing_slash = false;
        }
    }
    let mut out = String::with_capacity(path.len());
    for segment in &kept {
        out.push('/');
        out.push_str(segment);
    }
    if trailing_slash || out.is_empty() {
        out.push('/');
    }
    Ok(Cow::Owned(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments_are_resolved_and_plain_paths_borrowed() {
        let cases = [
            ("/", "/"),
            ("/a/b", "/a/b"),
            ("/a.b/c..d/.e", "/a.b/c..d/.e"),
            ("/api/../admin", "/admin"),
            ("/api/./x", "/api/x"),
            ("/api/x/..", "/api/"),
            ("/api/x/.", "/api/x/"),
            ("/a/b/../../c", "/c"),
            ("/api/%2e%2e/admin", "/admin"),
            ("/api/.%2E/admin", "/admin"),
            ("/api/%2e/x", "/api/x"),
            ("/a//../b", "/a/b"),
            ("/..a/b", "/..a/b"),
            ("/a/..", "/"),
        ];
        for (path, want) in cases {
            assert_eq!(resolve_dots(path).unwrap(), want, "{path}");
        }
        assert!(matches!(resolve_dots("/a/b"), Ok(Cow::Borrowed(_))));
    }

    #[test]
    fn a_path_above_the_root_is_refused() {
        for path in ["/..", "/../etc/passwd", "/a/../../b", "/%2e%2e/x"] {
            assert_eq!(resolve_dots(path), Err(AboveRoot), "{path}");
        }
    }
}
