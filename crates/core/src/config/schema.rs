//! The shape of the `Raw*` types (which keys each table accepts and the type of each value),
//! read from their `Deserialize` impls by a probing deserializer, so it never drifts from the
//! types. [`check`] walks a parsed document against it and reports *every* unknown key (with
//! the closest valid one) and every value of the wrong type, each with its key path and line;
//! serde would stop at the first.

use std::fmt;
use std::ops::Range;

use serde::de::{
    self, DeserializeOwned, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor,
};
use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::ConfigError;

/// What a key accepts.
#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    /// Not known (anything is accepted here; serde has the last word).
    Any,
    Bool,
    /// A whole number from `min` to `max` (the type's bounds). `shown`: the narrower range
    /// that is valid, named in messages instead (validation checks it later).
    Int {
        min: i128,
        max: i128,
        shown: Option<(i128, i128)>,
    },
    Float,
    Str,
    Array(Box<Shape>),
    /// A table with free keys (`[upstreams.NAME]`), each value of this shape.
    Map(Box<Shape>),
    /// A table with these keys only.
    Table(Vec<(&'static str, Shape)>),
    /// One of these (untagged enums).
    OneOf(Vec<Shape>),
}

impl Shape {
    /// The shape `T` deserializes from. Parts the probe cannot follow are [`Shape::Any`].
    pub fn of<T: DeserializeOwned>() -> Shape {
        let mut shape = Shape::Any;
        let _ = T::deserialize(Probe { out: &mut shape });
        shape
    }

    /// The shape at `path` (`"upstreams.*.targets.[]"`: `*` a map value, `[]` an element).
    pub fn at_mut(&mut self, path: &str) -> Option<&mut Shape> {
        let mut shape = self;
        for part in path.split('.') {
            shape = match (shape, part) {
                (Shape::Map(inner), "*") | (Shape::Array(inner), "[]") => inner,
                (Shape::Table(fields), name) => &mut fields.iter_mut().find(|(k, _)| *k == name)?.1,
                _ => return None,
            };
        }
        Some(shape)
    }

    /// "a whole number", "a string", ... for messages.
    fn describe(&self) -> String {
        match self {
            Shape::Any => "a value".into(),
            Shape::Bool => "`true` or `false`".into(),
            Shape::Int {
                shown: Some((min, max)),
                ..
            } => format!("a whole number from {min} to {max}"),
            Shape::Int { min, max, .. } if *max >= i128::from(i64::MAX) => {
                format!("a whole number of {min} or more")
            }
            Shape::Int { min, max, .. } => format!("a whole number from {min} to {max}"),
            Shape::Float => "a number".into(),
            Shape::Str => "a string".into(),
            Shape::Array(inner) => match **inner {
                Shape::Str => "an array of strings".into(),
                Shape::Table(_) => "an array of tables".into(),
                _ => "an array".into(),
            },
            Shape::Table(fields) if fields.len() <= 4 => format!(
                "a table with the keys {}",
                fields
                    .iter()
                    .map(|(k, _)| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Shape::Map(_) | Shape::Table(_) => "a table".into(),
            Shape::OneOf(options) => options
                .iter()
                .map(Shape::describe)
                .collect::<Vec<_>>()
                .join(" or "),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The probe: a deserializer that hands every struct all of its fields, every sequence and map
// one element, and records what was asked for.

#[derive(Debug)]
struct ProbeError(String);

impl fmt::Display for ProbeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ProbeError {}

impl de::Error for ProbeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        ProbeError(msg.to_string())
    }
}

struct Probe<'a> {
    out: &'a mut Shape,
}

macro_rules! probe_int {
    ($($method:ident $visit:ident $t:ty),*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ProbeError> {
            *self.out = Shape::Int { min: <$t>::MIN as i128, max: <$t>::MAX as i128, shown: None };
            visitor.$visit(0)
        }
    )*};
}

impl<'de> de::Deserializer<'de> for Probe<'_> {
    type Error = ProbeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ProbeError> {
        // Untagged enums buffer anything; a string satisfies most of them (and an error here
        // would stop the probe of every later field).
        *self.out = Shape::Any;
        visitor.visit_str("")
    }
    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ProbeError> {
        *self.out = Shape::Bool;
        visitor.visit_bool(false)
    }
    probe_int!(
        deserialize_i8 visit_i8 i8, deserialize_i16 visit_i16 i16, deserialize_i32 visit_i32 i32,
        deserialize_i64 visit_i64 i64, deserialize_u8 visit_u8 u8, deserialize_u16 visit_u16 u16,
        deserialize_u32 visit_u32 u32, deserialize_u64 visit_u64 u64
    );
    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ProbeError> {
        *self.out = Shape::Float;
        visitor.visit_f32(0.0)
    }
    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ProbeError> {
        *self.out = Shape::Float;
        visitor.visit_f64(0.0)
    }
    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ProbeError> {
        *self.out = Shape::Str;
        visitor.visit_char('x')
    }
    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ProbeError> {
        *self.out = Shape::Str;
        visitor.visit_str("")
    }
    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ProbeError> {
        *self.out = Shape::Str;
        visitor.visit_str("")
    }
    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ProbeError> {
        *self.out = Shape::Any;
        visitor.visit_bytes(&[])
    }
    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ProbeError> {
        *self.out = Shape::Any;
        visitor.visit_bytes(&[])
    }
    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ProbeError> {
        visitor.visit_some(self)
    }
    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ProbeError> {
        *self.out = Shape::Any;
        visitor.visit_unit()
    }
    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, ProbeError> {
        self.deserialize_unit(visitor)
    }
    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, ProbeError> {
        visitor.visit_newtype_struct(self)
    }
    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ProbeError> {
        let mut element = Shape::Any;
        let result = visitor.visit_seq(OneElement {
            out: Some(&mut element),
        });
        *self.out = Shape::Array(Box::new(element));
        result
    }
    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, ProbeError> {
        *self.out = Shape::Any;
        let _ = visitor;
        Err(de::Error::custom("tuples are not probed"))
    }
    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, ProbeError> {
        self.deserialize_tuple(len, visitor)
    }
    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ProbeError> {
        let mut value = Shape::Any;
        let result = visitor.visit_map(Fields {
            names: &["*"],
            shapes: std::slice::from_mut(&mut value),
            next: 0,
        });
        *self.out = Shape::Map(Box::new(value));
        result
    }
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ProbeError> {
        let mut shapes = vec![Shape::Any; fields.len()];
        let result = visitor.visit_map(Fields {
            names: fields,
            shapes: &mut shapes,
            next: 0,
        });
        *self.out = Shape::Table(fields.iter().copied().zip(shapes).collect());
        result
    }
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, ProbeError> {
        *self.out = Shape::Any;
        Err(de::Error::custom("enums are not probed"))
    }
    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ProbeError> {
        self.deserialize_str(visitor)
    }
    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ProbeError> {
        self.deserialize_unit(visitor)
    }
}

/// A sequence of one element.
struct OneElement<'a> {
    out: Option<&'a mut Shape>,
}

impl<'de> SeqAccess<'de> for OneElement<'_> {
    type Error = ProbeError;
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, ProbeError> {
        match self.out.take() {
            Some(out) => seed.deserialize(Probe { out }).map(Some),
            None => Ok(None),
        }
    }
}

/// A map with the keys `names`, recording each value's shape.
struct Fields<'a> {
    names: &'static [&'static str],
    shapes: &'a mut [Shape],
    next: usize,
}

impl<'de> MapAccess<'de> for Fields<'_> {
    type Error = ProbeError;
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, ProbeError> {
        match self.names.get(self.next) {
            Some(name) => seed.deserialize((*name).into_deserializer()).map(Some),
            None => Ok(None),
        }
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, ProbeError> {
        let out = &mut self.shapes[self.next];
        self.next += 1;
        seed.deserialize(Probe { out })
    }
}

// ---------------------------------------------------------------------------------------------
// The walk.

/// Where each key path is in the text: `(path, span of its key, span of its value)`.
pub type Spans = Vec<(String, Range<usize>, Range<usize>)>;

/// Check `doc` against `shape`; every problem becomes an error (line filled in from `text`).
/// Also returns where every key path is, for errors found later.
pub fn check(text: &str, doc: &Spanned<DeTable<'_>>, shape: &Shape) -> (Vec<ConfigError>, Spans) {
    let mut walk = Walk {
        text,
        errors: Vec::new(),
        spans: Vec::new(),
    };
    walk.table("", doc.get_ref(), shape);
    (walk.errors, walk.spans)
}

struct Walk<'t> {
    text: &'t str,
    errors: Vec<ConfigError>,
    spans: Spans,
}

/// `a.b` (or `a."b c"` for keys that are not bare).
fn join(path: &str, key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let key = if bare {
        key.to_string()
    } else {
        format!("{key:?}")
    };
    if path.is_empty() {
        key
    } else {
        format!("{path}.{key}")
    }
}

/// 1-based line of byte `offset`.
pub fn line_at(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

impl Walk<'_> {
    fn error(&mut self, key: &str, at: usize, message: String, fix: String) {
        let mut e = ConfigError::new(key, message, fix);
        e.line = Some(line_at(self.text, at));
        self.errors.push(e);
    }

    fn table(&mut self, path: &str, table: &DeTable<'_>, shape: &Shape) {
        for (key, value) in table {
            let name: &str = key.get_ref();
            let child = join(path, name);
            self.spans.push((child.clone(), key.span(), value.span()));
            let inner = match shape {
                Shape::Map(inner) => Some(&**inner),
                Shape::Table(fields) => fields.iter().find(|(k, _)| *k == name).map(|(_, s)| s),
                _ => Some(&Shape::Any),
            };
            match inner {
                Some(inner) => self.value(&child, key.span().start, value, inner),
                None => {
                    let Shape::Table(fields) = shape else {
                        continue;
                    };
                    let valid: Vec<&str> = fields.iter().map(|(k, _)| *k).collect();
                    self.unknown(path, &child, name, key.span().start, &valid);
                }
            }
        }
    }

    fn unknown(&mut self, parent: &str, path: &str, name: &str, at: usize, valid: &[&str]) {
        let place = if parent.is_empty() {
            "at the top level".to_string()
        } else {
            format!("in `{parent}`")
        };
        let list = valid
            .iter()
            .map(|k| format!("`{k}`"))
            .collect::<Vec<_>>()
            .join(", ");
        let fix = match closest(name, valid) {
            Some(best) => format!("did you mean `{best}`? Rename it (valid keys: {list})"),
            None => format!("remove it, or use one of the valid keys: {list}"),
        };
        self.error(path, at, format!("unknown key `{name}` {place}"), fix);
    }

    /// Check one value. `at` is where its key starts (the line errors point at).
    fn value(&mut self, path: &str, at: usize, value: &Spanned<DeValue<'_>>, shape: &Shape) {
        if self.fits(value.get_ref(), shape) {
            match (value.get_ref(), shape) {
                (DeValue::Table(t), Shape::Table(_) | Shape::Map(_)) => self.table(path, t, shape),
                (DeValue::Array(items), Shape::Array(inner)) => {
                    for (i, item) in items.iter().enumerate() {
                        let child = format!("{path}[{i}]");
                        self.spans.push((child.clone(), item.span(), item.span()));
                        // Elements of an array of tables start on their own `[[...]]` line.
                        self.value(&child, item.span().start, item, inner);
                    }
                }
                (DeValue::Table(t), Shape::OneOf(options)) => {
                    if let Some(table) = options.iter().find(|s| matches!(s, Shape::Table(_))) {
                        self.table(path, t, table);
                    }
                }
                _ => {}
            }
            return;
        }
        if let (DeValue::Integer(_), Shape::Int { .. }) = (value.get_ref(), shape) {
            self.error(
                path,
                at,
                format!("{} is out of range", found(value.get_ref())),
                format!("use {}", shape.describe()),
            );
            return;
        }
        let message = format!(
            "expected {}, found {}",
            shape.describe(),
            found(value.get_ref())
        );
        let fix = fix_for(path, value.get_ref(), shape);
        self.error(path, at, message, fix);
    }

    fn fits(&self, value: &DeValue<'_>, shape: &Shape) -> bool {
        match (value, shape) {
            (_, Shape::Any) => true,
            (DeValue::Boolean(_), Shape::Bool) => true,
            (DeValue::Integer(i), Shape::Int { min, max, .. }) => {
                integer(i).is_some_and(|n| (*min..=*max).contains(&n))
            }
            (DeValue::Integer(_) | DeValue::Float(_), Shape::Float) => true,
            (DeValue::String(_), Shape::Str) => true,
            (DeValue::Array(_), Shape::Array(_)) => true,
            (DeValue::Table(_), Shape::Table(_) | Shape::Map(_)) => true,
            (v, Shape::OneOf(options)) => options.iter().any(|s| {
                // A table fits a table option even with bad keys inside (reported by the walk).
                matches!((v, s), (DeValue::Table(_), Shape::Table(_))) || self.fits(v, s)
            }),
            _ => false,
        }
    }
}

fn integer(i: &toml::de::DeInteger<'_>) -> Option<i128> {
    let digits = i.as_str().replace('_', "");
    let digits = digits.strip_prefix('+').unwrap_or(&digits);
    let (negative, digits) = match digits.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, digits),
    };
    let digits = match i.radix() {
        16 => digits.trim_start_matches("0x"),
        8 => digits.trim_start_matches("0o"),
        2 => digits.trim_start_matches("0b"),
        _ => digits,
    };
    let n = i128::from_str_radix(digits, i.radix()).ok()?;
    Some(if negative { -n } else { n })
}

/// "the string \"abc\"", "the number 5", ...
fn found(value: &DeValue<'_>) -> String {
    match value {
        DeValue::String(s) => format!("the string {:?}", s.as_ref()),
        DeValue::Integer(i) => format!("the number {}", i.as_str()),
        DeValue::Float(f) => format!("the number {}", f.as_str()),
        DeValue::Boolean(b) => format!("`{b}`"),
        DeValue::Datetime(d) => format!("the date {d}"),
        DeValue::Array(_) => "an array".into(),
        DeValue::Table(_) => "a table".into(),
    }
}

/// A concrete fix for a value of the wrong type at `path`.
fn fix_for(path: &str, value: &DeValue<'_>, shape: &Shape) -> String {
    let key = path.rsplit('.').next().unwrap_or(path);
    let key = key.split('[').next().unwrap_or(key);
    let element = path.ends_with(']');
    // "e.g. `key = 5`" (or the bare value for an array element).
    let eg = |v: &str| {
        if element {
            format!("e.g. `{v}`")
        } else {
            format!("e.g. `{key} = {v}`")
        }
    };
    match (shape, value) {
        (Shape::Int { .. } | Shape::Float, DeValue::String(s))
            if s.trim().parse::<f64>().is_ok() =>
        {
            format!("remove the quotes: `{key} = {}`", s.trim())
        }
        (Shape::Int { .. }, _) if key.ends_with("_ms") => format!(
            "write the duration in milliseconds as a bare whole number, without quotes or units, {}",
            eg("5000")
        ),
        (Shape::Int { .. }, _) => format!("write a bare whole number without quotes, {}", eg("10")),
        (Shape::Float, _) => format!("write a bare number without quotes, {}", eg("1.5")),
        (Shape::Bool, DeValue::String(s)) if s.as_ref() == "true" || s.as_ref() == "false" => {
            format!("remove the quotes: `{key} = {s}`")
        }
        (Shape::Bool, _) => format!("write `true` or `false` without quotes, {}", eg("true")),
        (Shape::Str, DeValue::Integer(i)) => {
            format!("put it in quotes, {}", eg(&format!("\"{}\"", i.as_str())))
        }
        (Shape::Str, DeValue::Float(f)) => {
            format!("put it in quotes, {}", eg(&format!("\"{}\"", f.as_str())))
        }
        (Shape::Str, DeValue::Boolean(b)) => format!("put it in quotes, {}", eg(&format!("\"{b}\""))),
        (Shape::Str, _) => format!("write a quoted string, {}", eg("\"...\"")),
        (Shape::Array(inner), DeValue::String(s)) if **inner == Shape::Str => {
            format!("put it in an array: `{key} = [{:?}]`", s.as_ref())
        }
        (Shape::Array(inner), _) if matches!(**inner, Shape::Table(_)) => {
            format!("write each entry as its own `[[{path}]]` table")
        }
        (Shape::Array(_), _) => format!("write an array in brackets, {}", eg("[...]")),
        (Shape::Table(fields), _) => format!(
            "write a table: a `[{path}]` section with one `key = value` per line, or `{key} = {{ {} = ... }}`",
            fields.first().map_or("key", |(k, _)| *k)
        ),
        (Shape::Map(_), _) => format!("write a table: one `[{path}.NAME]` section per entry"),
        (Shape::OneOf(_), _) => format!("write {}", shape.describe()),
        (Shape::Any, _) => "see docs/CONFIG.md".into(),
    }
}

/// The valid key closest to `name` (a typo: edit distance small for its length).
pub fn closest<'a>(name: &str, valid: &[&'a str]) -> Option<&'a str> {
    let lower = name.to_ascii_lowercase();
    valid
        .iter()
        .map(|k| (distance(&lower, k), *k))
        .filter(|(d, k)| *d <= 1 + k.len().max(lower.len()) / 4)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Optimal string alignment distance (a swap of two neighbours counts once).
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    d[0] = (0..=b.len()).collect();
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

/// The key path whose value contains `span` most tightly (for errors serde reports by span).
pub fn path_at(spans: &Spans, span: &Range<usize>) -> Option<(String, usize)> {
    spans
        .iter()
        .filter(|(_, key, value)| {
            let start = key.start.min(value.start);
            let end = key.end.max(value.end);
            start <= span.start && span.start < end.max(start + 1)
        })
        .min_by_key(|(path, key, value)| {
            let size = key.end.max(value.end) - key.start.min(value.start);
            // On a tie (an array-of-tables element and its array), the deeper path.
            (size, std::cmp::Reverse(path.len()))
        })
        .map(|(path, key, _)| (path.clone(), key.start))
}
