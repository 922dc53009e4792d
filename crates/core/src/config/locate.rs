//! Maps a key path such as `routes[2].upstream` back to its line in the TOML text.

use std::collections::HashMap;

/// Key path -> 1-based line, built by scanning table headers and `key = value` lines.
pub struct LineIndex {
    lines: HashMap<String, usize>,
}

impl LineIndex {
    /// From the key spans of a parsed document (see [`super::schema::check`]).
    pub fn from_spans(text: &str, spans: &super::schema::Spans) -> LineIndex {
        let mut lines = HashMap::new();
        for (path, key, _) in spans {
            lines
                .entry(path.replace('"', ""))
                .or_insert_with(|| super::schema::line_at(text, key.start));
        }
        LineIndex { lines }
    }

    /// Scan `text` (for text that does not parse).
    pub fn new(text: &str) -> LineIndex {
        let mut lines = HashMap::new();
        let mut counts: HashMap<String, usize> = HashMap::new();
        let mut current = String::new();
        for (index, raw) in text.lines().enumerate() {
            let line = raw.trim();
            let number = index + 1;
            if let Some(name) = line.strip_prefix("[[").and_then(|l| l.split("]]").next()) {
                let name = name.trim().to_string();
                let n = counts.entry(name.clone()).or_insert(0);
                current = format!("{name}[{n}]");
                *n += 1;
                lines.entry(current.clone()).or_insert(number);
            } else if let Some(name) = line.strip_prefix('[').and_then(|l| l.split(']').next()) {
                current = name.trim().replace('"', "");
                lines.entry(current.clone()).or_insert(number);
            } else if let Some((key, _)) = line.split_once('=') {
                let key = key.trim().replace('"', "");
                if key.is_empty() || key.starts_with('#') {
                    continue;
                }
                let path = if current.is_empty() {
                    key
                } else {
                    format!("{current}.{key}")
                };
                lines.entry(path).or_insert(number);
            }
        }
        LineIndex { lines }
    }

    /// The line of `path`, or of its closest known parent.
    pub fn line_of(&self, path: &str) -> Option<usize> {
        let mut path = path.to_string();
        loop {
            if let Some(line) = self.lines.get(&path) {
                return Some(*line);
            }
            let cut = path.rfind(['.', '['])?;
            path.truncate(cut);
        }
    }
}

/// Best guess of the key path written on 1-based `line` of text that may not parse: the key
/// of a `key = value` line (inside its table), a table header's name, or the enclosing table.
pub fn key_on_line(text: &str, line: usize) -> String {
    let mut current = String::new();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for (index, raw) in text.lines().enumerate().take(line) {
        let l = raw.trim();
        let here = index + 1 == line;
        if let Some(name) = l.strip_prefix("[[") {
            let name = name.split("]]").next().unwrap_or(name).trim().to_string();
            let n = counts.entry(name.clone()).or_insert(0);
            current = format!("{name}[{n}]");
            *n += 1;
        } else if let Some(name) = l.strip_prefix('[') {
            let name = name.split(']').next().unwrap_or(name);
            let name = name.split('#').next().unwrap_or(name);
            current = name.trim().replace('"', "");
        } else if here {
            if let Some((key, _)) = l.split_once('=') {
                let key = key.trim().replace('"', "");
                if !key.is_empty() && !key.starts_with('#') {
                    return if current.is_empty() {
                        key
                    } else {
                        format!("{current}.{key}")
                    };
                }
            }
        }
    }
    current
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_array_tables_and_parents() {
        let text = "[server]\nlisten = [\"a\"]\n\n[[routes]]\nupstream = \"x\"\n[[routes]]\npath_prefix = \"/\"\nupstream = \"y\"\n";
        let index = LineIndex::new(text);
        assert_eq!(index.line_of("server.listen"), Some(2));
        assert_eq!(index.line_of("routes[1].upstream"), Some(8));
        assert_eq!(index.line_of("routes[1].methods[0]"), Some(6));
        assert_eq!(index.line_of("routes[0].upstream"), Some(5));
    }
}
