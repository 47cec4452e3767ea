//! Functions the seed's Athena and BigQuery queries use, so they run here
//! unchanged: `json_extract_scalar(json, '$.a.b[0]')` (the scalar at a
//! JSONPath as text, NULL for an object, array or nothing) and
//! `json_extract(json, path)` (the JSON text there). The JSONPath subset is
//! what those queries use: `$`, `.name`, `["name"]` and `[index]`.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray as _, StringBuilder};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{DataFusionError, Result};
use datafusion::logical_expr::{ColumnarValue, ScalarUDF, Volatility, create_udf};
use serde_json::Value;

/// One step of a path.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
}

/// Parses `$.a.b[0]["c d"]`.
fn parse_path(p: &str) -> Option<Vec<Step>> {
    let mut rest = p.trim().strip_prefix('$')?;
    let mut steps = Vec::new();
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            if end == 0 {
                return None;
            }
            steps.push(Step::Key(r[..end].to_owned()));
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']')?;
            let inside = r[..end].trim();
            let quoted = inside
                .strip_prefix('"')
                .and_then(|s| s.strip_suffix('"'))
                .or_else(|| inside.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')));
            steps.push(match quoted {
                Some(k) => Step::Key(k.to_owned()),
                None => Step::Index(inside.parse().ok()?),
            });
            rest = &r[end + 1..];
        } else {
            return None;
        }
    }
    Some(steps)
}

fn at<'a>(mut v: &'a Value, steps: &[Step]) -> Option<&'a Value> {
    for s in steps {
        v = match s {
            Step::Key(k) => v.as_object()?.get(k)?,
            Step::Index(i) => v.as_array()?.get(*i)?,
        };
    }
    Some(v)
}

fn extract(args: &[ColumnarValue], scalar: bool) -> Result<ColumnarValue> {
    let rows = args
        .iter()
        .find_map(|a| match a {
            ColumnarValue::Array(x) => Some(x.len()),
            ColumnarValue::Scalar(_) => None,
        })
        .unwrap_or(1);
    let json: ArrayRef = args[0].clone().into_array(rows)?;
    let path: ArrayRef = args[1].clone().into_array(rows)?;
    let (json, path) = (json.as_string::<i32>(), path.as_string::<i32>());
    let mut out = StringBuilder::new();
    let mut parsed: Option<(String, Vec<Step>)> = None;
    for i in 0..rows {
        if json.is_null(i) || path.is_null(i) {
            out.append_null();
            continue;
        }
        let p = path.value(i);
        if parsed.as_ref().is_none_or(|(text, _)| text != p) {
            let steps = parse_path(p).ok_or_else(|| {
                DataFusionError::Execution(format!(
                    "{p:?} is not a JSONPath this function reads ($, .name, [\"name\"], [index])"
                ))
            })?;
            parsed = Some((p.to_owned(), steps));
        }
        let steps = parsed.as_ref().map_or(&[][..], |(_, s)| s.as_slice());
        let Ok(v) = serde_json::from_str::<Value>(json.value(i)) else {
            out.append_null();
            continue;
        };
        match (at(&v, steps), scalar) {
            (Some(Value::String(s)), true) => out.append_value(s),
            (Some(Value::Number(n)), true) => out.append_value(n.to_string()),
            (Some(Value::Bool(b)), true) => out.append_value(b.to_string()),
            (Some(Value::Null) | Some(Value::Object(_)) | Some(Value::Array(_)) | None, true) => {
                out.append_null();
            }
            (Some(v), false) => out.append_value(crate::jcs::to_string(v)),
            (None, false) => out.append_null(),
        }
    }
    let array: ArrayRef = Arc::new(out.finish());
    Ok(
        if args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_))) {
            ColumnarValue::Scalar(datafusion::common::ScalarValue::try_from_array(&array, 0)?)
        } else {
            ColumnarValue::Array(array)
        },
    )
}

/// `json_extract_scalar` and `json_extract`.
pub(crate) fn all() -> Vec<ScalarUDF> {
    let make = |name: &str, scalar: bool| {
        create_udf(
            name,
            vec![DataType::Utf8, DataType::Utf8],
            DataType::Utf8,
            Volatility::Immutable,
            Arc::new(move |args: &[ColumnarValue]| extract(args, scalar)),
        )
    };
    vec![
        make("json_extract_scalar", true),
        make("json_extract", false),
    ]
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn paths_parse_as_athena_writes_them() {
        assert_eq!(
            parse_path("$.a[0][\"b c\"].d").unwrap(),
            vec![
                Step::Key("a".into()),
                Step::Index(0),
                Step::Key("b c".into()),
                Step::Key("d".into())
            ]
        );
        assert_eq!(parse_path("$").unwrap(), vec![]);
        for bad in ["a.b", "$..a", "$[x]", "$.a["] {
            assert!(parse_path(bad).is_none(), "{bad}");
        }
        let v: Value = serde_json::json!({"a": [{"b": 1}], "s": "x"});
        assert_eq!(
            at(&v, &parse_path("$.a[0].b").unwrap()),
            Some(&serde_json::json!(1))
        );
        assert_eq!(at(&v, &parse_path("$.s.t").unwrap()), None);
    }
}
