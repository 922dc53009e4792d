//! `${ENV_VAR}` interpolation in the raw TOML text (before parsing, so line numbers stay true).
//!
//! `${NAME}` takes the variable's value; `${NAME:-default}` falls back to `default` when the
//! variable is unset or empty; `$${` writes a literal `${`.

use super::ConfigError;

/// Replace every `${...}` in `text`. Unset variables without a default are errors that name
/// the line.
pub fn interpolate(
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, Vec<ConfigError>> {
    let mut out = String::with_capacity(text.len());
    let mut errors = Vec::new();
    for (index, line) in text.split_inclusive('\n').enumerate() {
        let mut rest = line;
        while let Some(pos) = rest.find('$') {
            out.push_str(&rest[..pos]);
            let after = &rest[pos..];
            if let Some(tail) = after.strip_prefix("$${") {
                out.push_str("${");
                rest = tail;
            } else if let Some(tail) = after.strip_prefix("${") {
                let Some(end) = tail.find('}') else {
                    errors.push(located(
                        index,
                        "`${` without a closing `}`",
                        "close it: `${NAME}`",
                    ));
                    out.push_str(after);
                    rest = "";
                    continue;
                };
                let inner = &tail[..end];
                let (name, default) = match inner.split_once(":-") {
                    Some((n, d)) => (n, Some(d)),
                    None => (inner, None),
                };
                let valid =
                    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if !valid {
                    errors.push(located(
                        index,
                        &format!("`${{{inner}}}` is not a valid variable name"),
                        "use letters, digits and `_` only, e.g. `${HOLDFAST_PORT}`",
                    ));
                } else {
                    match (lookup(name).filter(|v| !v.is_empty()), default) {
                        (Some(value), _) => out.push_str(&value),
                        (None, Some(default)) => out.push_str(default),
                        (None, None) => errors.push(located(
                            index,
                            &format!("environment variable `{name}` is not set"),
                            &format!("set it, or give a default: `${{{name}:-value}}`"),
                        )),
                    }
                }
                rest = &tail[end + 1..];
            } else {
                out.push('$');
                rest = &after[1..];
            }
        }
        out.push_str(rest);
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
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
    fn unset_variable_names_the_line() {
        let errs = interpolate("a = 1\nb = \"${MISSING}\"\n", env).unwrap_err();
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].line, Some(2));
        assert!(errs[0].message.contains("MISSING"));
    }
}
