//! Typed logged values (DESIGN.md §4: "values keep their type").

use serde::{Deserialize, Serialize};

/// The kind of a logged value, stored in the `value_type` column.
///
/// The discriminants are part of the on-disk format (docs/FORMAT.md) and are
/// never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum ValueType {
    /// A 64-bit signed integer.
    Int = 1,
    /// A 64-bit IEEE float; NaN and ±inf included, bit-exact.
    Float = 2,
    /// A boolean.
    Bool = 3,
    /// A UTF-8 string (any bytes a Rust `String` holds, NUL and newlines included).
    Str = 4,
    /// A JSON document (lists and dicts from Python), kept as its text.
    Json = 5,
    /// The `repr()` of a value with no better type, marked so.
    Repr = 6,
}

impl ValueType {
    /// The name used in the `value_type` column: `int`, `float`, `bool`,
    /// `str`, `json` or `repr`.
    pub fn as_str(self) -> &'static str {
        match self {
            ValueType::Int => "int",
            ValueType::Float => "float",
            ValueType::Bool => "bool",
            ValueType::Str => "str",
            ValueType::Json => "json",
            ValueType::Repr => "repr",
        }
    }

    /// Parses the name written by [`ValueType::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "int" => ValueType::Int,
            "float" => ValueType::Float,
            "bool" => ValueType::Bool,
            "str" => ValueType::Str,
            "json" => ValueType::Json,
            "repr" => ValueType::Repr,
            _ => return None,
        })
    }
}

/// One logged value.
///
/// Numbers are never stringified: an `Int` is stored in an Int64 column, a
/// `Float` in a Float64 column (bit-exact, NaN payload aside).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Value {
    /// See [`ValueType::Int`].
    Int(i64),
    /// See [`ValueType::Float`].
    Float(f64),
    /// See [`ValueType::Bool`].
    Bool(bool),
    /// See [`ValueType::Str`].
    Str(String),
    /// See [`ValueType::Json`]; the text must be valid JSON (checked by
    /// [`Value::json`]).
    Json(String),
    /// See [`ValueType::Repr`].
    Repr(String),
}

impl PartialEq for Value {
    /// Exact equality: floats compare by bits, so `NaN == NaN` and
    /// `0.0 != -0.0`. This is the equality round-trip tests need.
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Value::Int(a), Value::Int(b)) => a == b,
            (Value::Float(a), Value::Float(b)) => a.to_bits() == b.to_bits(),
            (Value::Bool(a), Value::Bool(b)) => a == b,
            (Value::Str(a), Value::Str(b))
            | (Value::Json(a), Value::Json(b))
            | (Value::Repr(a), Value::Repr(b)) => a == b,
            _ => false,
        }
    }
}

impl Value {
    /// This value's [`ValueType`].
    pub fn value_type(&self) -> ValueType {
        match self {
            Value::Int(_) => ValueType::Int,
            Value::Float(_) => ValueType::Float,
            Value::Bool(_) => ValueType::Bool,
            Value::Str(_) => ValueType::Str,
            Value::Json(_) => ValueType::Json,
            Value::Repr(_) => ValueType::Repr,
        }
    }

    /// A JSON value; errors with the parser's message when `text` is not JSON.
    pub fn json(text: impl Into<String>) -> Result<Value, String> {
        let text = text.into();
        serde_json::from_str::<serde_json::Value>(&text).map_err(|e| e.to_string())?;
        Ok(Value::Json(text))
    }

    /// The text form shown in tables and echoed by `log` (Python's `str()`
    /// conventions: `True`/`False`, `nan`, `inf`).
    pub fn display(&self) -> String {
        match self {
            Value::Int(i) => i.to_string(),
            Value::Float(f) => format_float(*f),
            Value::Bool(b) => if *b { "True" } else { "False" }.to_string(),
            Value::Str(s) | Value::Json(s) | Value::Repr(s) => s.clone(),
        }
    }
}

/// Formats a float the way Python's `repr(float)` does for common values.
pub fn format_float(f: f64) -> String {
    if f.is_nan() {
        "nan".into()
    } else if f.is_infinite() {
        if f > 0.0 { "inf" } else { "-inf" }.into()
    } else if f == f.trunc() && f.abs() < 1e16 {
        format!("{f:.1}")
    } else {
        format!("{f}")
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}
impl From<i32> for Value {
    fn from(v: i32) -> Self {
        Value::Int(v.into())
    }
}
impl From<usize> for Value {
    fn from(v: usize) -> Self {
        Value::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Float(v)
    }
}
impl From<f32> for Value {
    fn from(v: f32) -> Self {
        Value::Float(v.into())
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Str(v.to_owned())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Str(v)
    }
}
