//! Patch application: JSON merge patch (RFC 7386), a strategic-merge-patch approximation, and
//! JSON patch (RFC 6902).

use serde_json::{Map, Value};

/// Applies an RFC 7386 merge patch to `target` in place.
pub(crate) fn merge_patch(target: &mut Value, patch: &Value) {
    merge(target, patch, false);
}

/// Strategic merge patch treated as a merge patch, with `$`-prefixed directive keys ignored
/// (so lists are replaced, not merged by key).
pub(crate) fn strategic_merge_patch(target: &mut Value, patch: &Value) {
    merge(target, patch, true);
}

fn merge(target: &mut Value, patch: &Value, skip_directives: bool) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(t) = target {
        for (k, v) in p {
            if skip_directives && k.starts_with('$') {
                continue;
            }
            if v.is_null() {
                t.remove(k);
            } else {
                merge(
                    t.entry(k.clone()).or_insert(Value::Null),
                    v,
                    skip_directives,
                );
            }
        }
    }
}

/// Splits a JSON pointer (RFC 6901) into unescaped tokens.
fn pointer_tokens(ptr: &str) -> Result<Vec<String>, String> {
    if ptr.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = ptr.strip_prefix('/') else {
        return Err(format!("invalid JSON pointer {ptr:?}"));
    };
    Ok(rest
        .split('/')
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect())
}

fn array_index(tok: &str, len: usize, allow_end: bool) -> Result<usize, String> {
    if allow_end && tok == "-" {
        return Ok(len);
    }
    let valid = !tok.is_empty()
        && tok.bytes().all(|b| b.is_ascii_digit())
        && (tok == "0" || !tok.starts_with('0'));
    let idx: usize = if valid {
        tok.parse()
            .map_err(|_| format!("invalid array index {tok:?}"))?
    } else {
        return Err(format!("invalid array index {tok:?}"));
    };
    let max = if allow_end {
        len
    } else {
        len.saturating_sub(1)
    };
    if idx > max || (!allow_end && len == 0) {
        return Err(format!("array index {idx} out of bounds"));
    }
    Ok(idx)
}

fn get_mut<'a>(doc: &'a mut Value, tokens: &[String]) -> Result<&'a mut Value, String> {
    let mut cur = doc;
    for tok in tokens {
        cur = match cur {
            Value::Object(m) => m
                .get_mut(tok)
                .ok_or_else(|| format!("path element {tok:?} not found"))?,
            Value::Array(a) => {
                let i = array_index(tok, a.len(), false)?;
                &mut a[i]
            }
            _ => return Err(format!("cannot descend into a scalar at {tok:?}")),
        };
    }
    Ok(cur)
}

fn add(doc: &mut Value, tokens: &[String], value: Value) -> Result<(), String> {
    let Some((last, parent)) = tokens.split_last() else {
        *doc = value;
        return Ok(());
    };
    match get_mut(doc, parent)? {
        Value::Object(m) => {
            m.insert(last.clone(), value);
            Ok(())
        }
        Value::Array(a) => {
            let i = array_index(last, a.len(), true)?;
            a.insert(i, value);
            Ok(())
        }
        _ => Err("add target's parent is not a container".to_string()),
    }
}

fn remove(doc: &mut Value, tokens: &[String]) -> Result<Value, String> {
    let Some((last, parent)) = tokens.split_last() else {
        return Err("cannot remove the root".to_string());
    };
    match get_mut(doc, parent)? {
        Value::Object(m) => m
            .remove(last)
            .ok_or_else(|| format!("path element {last:?} not found")),
        Value::Array(a) => {
            let i = array_index(last, a.len(), false)?;
            Ok(a.remove(i))
        }
        _ => Err("remove target's parent is not a container".to_string()),
    }
}

/// Applies an RFC 6902 JSON patch (add, remove, replace, move, copy, test). On error the
/// target may be partly modified; callers apply to a copy.
pub(crate) fn json_patch(target: &mut Value, ops: &Value) -> Result<(), String> {
    let Value::Array(ops) = ops else {
        return Err("a JSON patch must be an array of operations".to_string());
    };
    for op in ops {
        let name = op
            .get("op")
            .and_then(Value::as_str)
            .ok_or("operation without \"op\"")?;
        let path = op
            .get("path")
            .and_then(Value::as_str)
            .ok_or("operation without \"path\"")?;
        let path = pointer_tokens(path)?;
        let value = || {
            op.get("value")
                .cloned()
                .ok_or_else(|| format!("{name} operation without \"value\""))
        };
        let from = || -> Result<Vec<String>, String> {
            pointer_tokens(
                op.get("from")
                    .and_then(Value::as_str)
                    .ok_or_else(|| format!("{name} operation without \"from\""))?,
            )
        };
        match name {
            "add" => add(target, &path, value()?)?,
            "remove" => {
                remove(target, &path)?;
            }
            "replace" => *get_mut(target, &path)? = value()?,
            "move" => {
                let v = remove(target, &from()?)?;
                add(target, &path, v)?;
            }
            "copy" => {
                let v = get_mut(target, &from()?)?.clone();
                add(target, &path, v)?;
            }
            "test" => {
                let expected = value()?;
                // As the API server's json-patch: a missing member tests equal to null.
                let missing = match path.split_last() {
                    Some((last, parent)) => match get_mut(target, parent)? {
                        Value::Object(m) => !m.contains_key(last),
                        _ => false,
                    },
                    None => false,
                };
                if missing && expected.is_null() {
                    continue;
                }
                let actual = get_mut(target, &path)?;
                if *actual != expected {
                    return Err(format!(
                        "test operation failed: {} is {actual}, not {expected}",
                        op["path"]
                    ));
                }
            }
            other => return Err(format!("unknown JSON patch operation {other:?}")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_rfc7386() {
        let mut t = json!({"a": "b", "c": {"d": "e", "f": "g"}, "l": [1, 2]});
        merge_patch(
            &mut t,
            &json!({"a": "z", "c": {"f": null}, "l": [3], "n": {"x": 1}}),
        );
        assert_eq!(
            t,
            json!({"a": "z", "c": {"d": "e"}, "l": [3], "n": {"x": 1}})
        );
        let mut t = json!({"a": 1});
        strategic_merge_patch(&mut t, &json!({"$patch": "x", "b": 2}));
        assert_eq!(t, json!({"a": 1, "b": 2}));
    }

    #[test]
    fn json_patch_rfc6902() {
        let mut t = json!({"metadata": {"finalizers": ["a", "b"]}, "x": {"y": 1}});
        json_patch(
            &mut t,
            &json!([
                {"op": "test", "path": "/metadata/finalizers", "value": ["a", "b"]},
                {"op": "remove", "path": "/metadata/finalizers/0"},
                {"op": "add", "path": "/metadata/finalizers/-", "value": "c"},
                {"op": "replace", "path": "/x/y", "value": 2},
                {"op": "copy", "from": "/x", "path": "/z"},
                {"op": "move", "from": "/z/y", "path": "/w~1v"},
            ]),
        )
        .expect("patch applies");
        assert_eq!(
            t,
            json!({"metadata": {"finalizers": ["b", "c"]}, "x": {"y": 2}, "z": {}, "w/v": 2})
        );
        let mut t = json!({"metadata": {}});
        json_patch(
            &mut t,
            &json!([{"op": "test", "path": "/metadata/finalizers", "value": null},
                    {"op": "add", "path": "/metadata/finalizers", "value": ["f"]}]),
        )
        .expect("missing tests equal to null");
        assert_eq!(t, json!({"metadata": {"finalizers": ["f"]}}));
        let mut t = json!({"a": [1]});
        assert!(
            json_patch(
                &mut t,
                &json!([{"op": "test", "path": "/b/c", "value": null}])
            )
            .is_err()
        );
        assert!(json_patch(&mut t, &json!([{"op": "test", "path": "/a", "value": [2]}])).is_err());
        assert!(json_patch(&mut t, &json!([{"op": "remove", "path": "/a/5"}])).is_err());
        assert!(
            json_patch(
                &mut t,
                &json!([{"op": "replace", "path": "/b", "value": 1}])
            )
            .is_err()
        );
        assert!(json_patch(&mut t, &json!([{"op": "nope", "path": "/a"}])).is_err());
        assert!(json_patch(&mut t, &json!({"op": "add"})).is_err());
    }
}
