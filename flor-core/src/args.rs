//! `--kwargs k=v …` parsing and casting to the default's type (DESIGN.md §5,
//! FlorDB 4.0.1 `flor.arg`).

use crate::{Error, Result, Value};
use std::collections::BTreeMap;

/// The `--kwargs` given on a command line, and the arguments that remain.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Kwargs {
    /// `key -> raw text`, in the order given (later duplicates win).
    pub values: BTreeMap<String, String>,
    /// The command line without `--kwargs` and its items (what the script sees).
    pub rest: Vec<String>,
}

impl Kwargs {
    /// Splits `argv` (program name included) into `--kwargs` items and the rest.
    ///
    /// Every token after `--kwargs` up to the next token starting with `--`
    /// is an item `key=value`; `--kwargs` may appear more than once.
    ///
    /// # Errors
    /// [`Error::BadKwarg`] for an item without `=` or with an empty key.
    pub fn parse<I, S>(argv: I) -> Result<Kwargs>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut out = Kwargs::default();
        let mut in_kwargs = false;
        for tok in argv.into_iter().map(Into::into) {
            if tok == "--kwargs" {
                in_kwargs = true;
                continue;
            }
            if in_kwargs && !tok.starts_with("--") {
                match tok.split_once('=') {
                    Some((k, v)) if !k.is_empty() => {
                        out.values.insert(k.to_owned(), v.to_owned());
                    }
                    _ => return Err(Error::BadKwarg(tok)),
                }
                continue;
            }
            in_kwargs = false;
            out.rest.push(tok);
        }
        Ok(out)
    }
}

/// Casts the command-line text of argument `name` to the type of `default`.
///
/// bool accepts `true/false/1/0/yes/no` in any case; int and float parse as
/// Rust does (`1e-3` is a float); a JSON-list default takes `a,b,c` (each item
/// cast to the type of the default's first item, strings otherwise) or a JSON
/// list; strings and reprs take the text as is.
///
/// # Errors
/// [`Error::BadArg`] naming the argument when the text does not parse.
pub fn cast(name: &str, text: &str, default: &Value) -> Result<Value> {
    let bad = |expected: &'static str| Error::BadArg {
        name: name.to_owned(),
        value: text.to_owned(),
        expected,
    };
    Ok(match default {
        Value::Bool(_) => match text.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "y" | "t" => Value::Bool(true),
            "false" | "0" | "no" | "n" | "f" => Value::Bool(false),
            _ => return Err(bad("bool")),
        },
        Value::Int(_) => Value::Int(text.trim().parse().map_err(|_| bad("int"))?),
        Value::Float(_) => Value::Float(text.trim().parse().map_err(|_| bad("float"))?),
        Value::Str(_) | Value::Repr(_) => Value::Str(text.to_owned()),
        Value::Json(d) => cast_list(text, d).ok_or_else(|| bad("list"))?,
    })
}

fn cast_list(text: &str, default_json: &str) -> Option<Value> {
    let t = text.trim();
    if t.starts_with('[') {
        return Value::json(t).ok();
    }
    let proto: Option<serde_json::Value> = serde_json::from_str::<serde_json::Value>(default_json)
        .ok()
        .and_then(|v| v.as_array().and_then(|a| a.first().cloned()));
    let items: Vec<serde_json::Value> = if t.is_empty() {
        Vec::new()
    } else {
        t.split(',')
            .map(|s| {
                let s = s.trim();
                match &proto {
                    Some(serde_json::Value::Number(n)) if n.is_i64() => {
                        s.parse::<i64>().ok().map(serde_json::Value::from)
                    }
                    Some(serde_json::Value::Number(_)) => s
                        .parse::<f64>()
                        .ok()
                        .and_then(serde_json::Number::from_f64)
                        .map(serde_json::Value::Number),
                    Some(serde_json::Value::Bool(_)) => match s.to_ascii_lowercase().as_str() {
                        "true" | "1" => Some(serde_json::Value::Bool(true)),
                        "false" | "0" => Some(serde_json::Value::Bool(false)),
                        _ => None,
                    },
                    _ => Some(serde_json::Value::String(s.to_owned())),
                }
            })
            .collect::<Option<_>>()?
    };
    Some(Value::Json(serde_json::Value::Array(items).to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kwargs_are_split_from_the_rest() {
        let k = Kwargs::parse(["train.py", "--kwargs", "lr=0.1", "tags=a,b", "--other", "x"]).unwrap();
        assert_eq!(k.rest, vec!["train.py", "--other", "x"]);
        assert_eq!(k.values["lr"], "0.1");
        assert_eq!(k.values["tags"], "a,b");
        assert_eq!(Kwargs::parse(["p", "--kwargs", "novalue"]), Err(Error::BadKwarg("novalue".into())));
    }

    #[test]
    fn casts_follow_the_default() {
        assert_eq!(cast("use_bn", "False", &Value::Bool(true)).unwrap(), Value::Bool(false));
        assert_eq!(cast("epochs", "3", &Value::Int(1)).unwrap(), Value::Int(3));
        assert_eq!(cast("lr", "1e-3", &Value::Float(0.1)).unwrap(), Value::Float(1e-3));
        assert_eq!(cast("name", "x=y", &Value::Str("a".into())).unwrap(), Value::Str("x=y".into()));
        assert_eq!(cast("tags", "a,b", &Value::Json("[\"z\"]".into())).unwrap(), Value::Json("[\"a\",\"b\"]".into()));
        assert_eq!(cast("sizes", "1,2", &Value::Json("[8]".into())).unwrap(), Value::Json("[1,2]".into()));
        let err = cast("epochs", "three", &Value::Int(1)).unwrap_err();
        assert_eq!(err.to_string(), "argument `epochs`: \"three\" is not a valid int (the type of its default)");
    }
}
