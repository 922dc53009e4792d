//! `${ENV_VAR}` interpolation in the raw TOML text (before parsing, so line numbers stay true).
//!
//! `${NAME}` takes the variable's value; `${NAME:-default}` falls back to `default` when the
//! variable is unset or empty; `$${` writes a literal `${`. Comments are copied as they are:
//! a `#` outside a string starts one (a `#` inside a basic, literal or multi-line string does
//! not), so `# set ${PORT}` in a comment needs no variable.

use super::ConfigError;

/// Where the scanner is in the TOML text.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Keys, values, whitespace.
    Plain,
    /// From `#` to the end of the line.
    Comment,
    /// `"..."` (ends at an unescaped `"` or at the end of the line).
    Basic,
    /// `'...'` (no escapes; ends at `'` or at the end of the line).
    Literal,
    /// `"""..."""`.
    MultiBasic,
    /// `'''...'''`.
    MultiLiteral,
}

/// Replace every `${...}` in `text` outside comments. Unset variables without a default are
/// errors that name the line.
pub fn interpolate(
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, Vec<ConfigError>> {
    let mut out = String::with_capacity(text.len());
    let mut errors = Vec::new();
    let mut mode = Mode::Plain;
    let mut index = 0; // 0-based line
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        // `${...}` is replaced everywhere but in comments.
        if c == '$' && mode != Mode::Comment {
            if let Some(tail) = rest.strip_prefix("$${") {
                out.push_str("${");
                rest = tail;
                continue;
            }
            if let Some(tail) = rest.strip_prefix("${") {
                let line_end = tail.find('\n').unwrap_or(tail.len());
                let Some(end) = tail[..line_end].find('}') else {
                    errors.push(located(
                        index,
                        "`${` without a closing `}`",
                        "close it: `${NAME}` (or write `$${` for a literal `${`)",
                    ));
                    out.push_str("${");
                    rest = tail;
                    continue;
                };
                substitute(&tail[..end], index, mode, &lookup, &mut out, &mut errors);
                rest = &tail[end + 1..];
                continue;
            }
        }
        let len = c.len_utf8();
        let mut take = len;
        match (mode, c) {
            (_, '\n') => {
                index += 1;
                if matches!(mode, Mode::Comment | Mode::Basic | Mode::Literal) {
                    mode = Mode::Plain;
                }
            }
            (Mode::Plain, '#') => mode = Mode::Comment,
            (Mode::Plain, '"') if rest.starts_with("\"\"\"") => {
                mode = Mode::MultiBasic;
                take = 3;
            }
            (Mode::Plain, '"') => mode = Mode::Basic,
            (Mode::Plain, '\'') if rest.starts_with("'''") => {
                mode = Mode::MultiLiteral;
                take = 3;
            }
            (Mode::Plain, '\'') => mode = Mode::Literal,
            // An escape: the next character (`\"`, `\\`) never ends the string. A line-ending
            // backslash is left to the newline arm so lines keep being counted.
            (Mode::Basic | Mode::MultiBasic, '\\') => {
                if let Some(next) = rest[1..].chars().next().filter(|&n| n != '\n' && n != '$') {
                    take += next.len_utf8();
                }
            }
            (Mode::Basic, '"') | (Mode::Literal, '\'') => mode = Mode::Plain,
            (Mode::MultiBasic, '"') if rest.starts_with("\"\"\"") => {
                // Up to two more quotes may belong to the string (`""""` ends with a quote).
                take = rest.bytes().take_while(|&b| b == b'"').count().min(5);
                mode = Mode::Plain;
            }
            (Mode::MultiLiteral, '\'') if rest.starts_with("'''") => {
                take = rest.bytes().take_while(|&b| b == b'\'').count().min(5);
                mode = Mode::Plain;
            }
            _ => {}
        }
        out.push_str(&rest[..take]);
        rest = &rest[take..];
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// Replace one `${inner}` (found on the 0-based line `index`).
fn substitute(
    inner: &str,
    index: usize,
    mode: Mode,
    lookup: &impl Fn(&str) -> Option<String>,
    out: &mut String,
    errors: &mut Vec<ConfigError>,
) {
    let (name, default) = match inner.split_once(":-") {
        Some((n, d)) => (n, Some(d)),
        None => (inner, None),
    };
    let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        errors.push(located(
            index,
            &format!("`${{{inner}}}` is not a valid variable name"),
            "use letters, digits and `_` only, e.g. `${HOLDFAST_PORT}`",
        ));
        return;
    }
    let value = match (lookup(name).filter(|v| !v.is_empty()), default) {
        (Some(value), _) => value,
        (None, Some(default)) => default.to_string(),
        (None, None) => {
            errors.push(located(
                index,
                &format!("environment variable `{name}` is not set"),
                &format!("set it, or give a default: `${{{name}:-value}}`"),
            ));
            return;
        }
    };
    match insert(&value, mode, out) {
        Ok(()) => {}
        Err(why) => errors.push(located(
            index,
            &format!("the value of `{name}` {why}"),
            "put `${NAME}` inside a \"...\" string, where any value is escaped, or change the value",
        )),
    }
}

/// Insert `value` where the scanner is (`mode`) so that it stays one value: escaped in a basic
/// string, refused where it would end the string or the line (so a value can never add keys or
/// tables, and line numbers stay true).
fn insert(value: &str, mode: Mode, out: &mut String) -> Result<(), &'static str> {
    match mode {
        Mode::Basic | Mode::MultiBasic => {
            for c in value.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '\t' => out.push_str("\\t"),
                    '\r' => out.push_str("\\r"),
                    c if u32::from(c) < 0x20 || c == '\u{7f}' => {
                        out.push_str(&format!("\\u{:04X}", u32::from(c)));
                    }
                    c => out.push(c),
                }
            }
            Ok(())
        }
        Mode::Literal | Mode::MultiLiteral => {
            if value.contains('\'') || value.chars().any(char::is_control) {
                return Err(
                    "holds a quote or a control character, which a '...' string cannot hold",
                );
            }
            out.push_str(value);
            Ok(())
        }
        Mode::Plain => {
            if !value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '+' | ':'))
            {
                return Err(
                    "is not a bare number, boolean or word, so it cannot stand outside a string",
                );
            }
            out.push_str(value);
            Ok(())
        }
        Mode::Comment => {
            out.push_str(value);
            Ok(())
        }
    }
}

fn located(index: usize, message: &str, fix: &str) -> ConfigError {
    let mut e = ConfigError::new("${...}", message, fix);
    e.line = Some(index + 1);
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "PORT" => Some("8080".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn replaces_defaults_and_escapes() {
        let out = interpolate(
            "a = \"${PORT}\"\nb = \"${NOPE:-x}\"\nc = \"$${PORT}\" $5\n",
            env,
        )
        .unwrap();
        assert_eq!(out, "a = \"8080\"\nb = \"x\"\nc = \"${PORT}\" $5\n");
        assert_eq!(interpolate("${EMPTY:-d}", env).unwrap(), "d");
    }

    #[test]
    fn values_stay_one_value_wherever_they_go() {
        let evil = |name: &str| match name {
            "Q" => Some("a\"b\\c\nd".to_string()),
            "INJECT" => Some("1\"]\n[server2]\ny=[\"".to_string()),
            "NUM" => Some("5\nx=1".to_string()),
            _ => None,
        };
        // In a basic string: escaped, so the TOML value is the variable's value exactly.
        let out = interpolate("a = \"${Q}\"\n", evil).unwrap();
        assert_eq!(out, "a = \"a\\\"b\\\\c\\nd\"\n");
        let parsed: toml::Value = toml::from_str(&out).unwrap();
        assert_eq!(parsed["a"].as_str(), Some("a\"b\\c\nd"));
        let out = interpolate("l = [\"${INJECT}\"]\n", evil).unwrap();
        let parsed: toml::Value = toml::from_str(&out).unwrap();
        assert_eq!(parsed.as_table().unwrap().len(), 1, "{out}");
        // Bare, or in a literal string: refused, naming the line.
        for text in ["a = 1\nn = ${NUM}\n", "a = 1\nl = '${Q}'\n"] {
            let errs = interpolate(text, evil).unwrap_err();
            assert_eq!(errs.len(), 1, "{text}");
            assert_eq!(errs[0].line, Some(2), "{text}");
        }
        assert_eq!(interpolate("n = ${PORT}\n", env).unwrap(), "n = 8080\n");
    }

    #[test]
    fn unset_variable_names_the_line() {
        let errs = interpolate("a = 1\nb = \"${MISSING}\"\n", env).unwrap_err();
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].line, Some(2));
        assert!(errs[0].message.contains("MISSING"));
    }

    #[test]
    fn comments_are_not_interpolated() {
        let text = "# Set ${QA_NOT_SET} to your port\nport = \"${PORT}\" # or ${ALSO_NOT_SET}\n  # ${X:-y} $${\n";
        assert_eq!(
            interpolate(text, env).unwrap(),
            "# Set ${QA_NOT_SET} to your port\nport = \"8080\" # or ${ALSO_NOT_SET}\n  # ${X:-y} $${\n"
        );
    }

    #[test]
    fn a_hash_inside_a_string_is_not_a_comment() {
        let text = r#####"a = "#${PORT}"
b = '#${PORT}'
c = "\"#${PORT}\\" # ${NOPE}
d = """
# ${PORT}
"#" ${PORT}"""" # ${NOPE}
e = '''
# ${PORT} ' ''
''' # ${NOPE}
f = 1 # "${NOPE}"
g = ${PORT}
"#####;
        let out = interpolate(text, env).unwrap();
        assert_eq!(
            out,
            r#####"a = "#8080"
b = '#8080'
c = "\"#8080\\" # ${NOPE}
d = """
# 8080
"#" 8080"""" # ${NOPE}
e = '''
# 8080 ' ''
''' # ${NOPE}
f = 1 # "${NOPE}"
g = 8080
"#####
        );
        // The result is still the TOML it was.
        let parsed: toml::Table = toml::from_str(&out).unwrap();
        assert_eq!(parsed["d"].as_str(), Some("# 8080\n\"#\" 8080\""));
        // A basic string ends at the end of its line, so an unterminated one does not hide the
        // comments after it.
        let err = interpolate("a = \"x\nb = 1 # ${NOPE}\nc = \"${NOPE}\"\n", env).unwrap_err();
        assert_eq!(err.len(), 1);
        assert_eq!(err[0].line, Some(3));
    }
}
