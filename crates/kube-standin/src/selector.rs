//! Label and field selectors as used in `labelSelector` / `fieldSelector` query parameters.
//!
//! Labels: `k=v`, `k==v`, `k!=v`, `k`, `!k`, `k in (a,b)`, `k notin (a,b)`, comma-separated.
//! Fields: `path=v`, `path==v`, `path!=v` for any dotted path (`metadata.name`,
//! `spec.storageClassName`, `involvedObject.uid`, ...); a missing field compares as `""`.

use serde_json::Value;

#[derive(Clone, Debug, PartialEq)]
enum LabelReq {
    Eq(String, String),
    Ne(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

#[derive(Clone, Debug, PartialEq)]
struct FieldReq {
    path: Vec<String>,
    value: String,
    negate: bool,
}

/// A parsed pair of label and field selectors; the empty selector matches everything.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Selectors {
    labels: Vec<LabelReq>,
    fields: Vec<FieldReq>,
}

/// Splits on commas that are not inside parentheses.
fn split_terms(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out.into_iter()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect()
}

fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
}

fn parse_label_term(term: &str) -> Result<LabelReq, String> {
    let bad = || format!("unable to parse requirement: {term:?}");
    if let Some(open) = term.find('(') {
        let close = term.rfind(')').ok_or_else(bad)?;
        if close < open || !term[close + 1..].trim().is_empty() {
            return Err(bad());
        }
        let head: Vec<&str> = term[..open].split_whitespace().collect();
        let values: Vec<String> = term[open + 1..close]
            .split(',')
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .collect();
        return match head.as_slice() {
            [k, "in"] if valid_key(k) => Ok(LabelReq::In(k.to_string(), values)),
            [k, "notin"] if valid_key(k) => Ok(LabelReq::NotIn(k.to_string(), values)),
            _ => Err(bad()),
        };
    }
    if let Some(k) = term.strip_prefix('!') {
        let k = k.trim();
        return if valid_key(k) {
            Ok(LabelReq::NotExists(k.to_string()))
        } else {
            Err(bad())
        };
    }
    let (k, v, ne) = if let Some((k, v)) = term.split_once("!=") {
        (k, v, true)
    } else if let Some((k, v)) = term.split_once("==") {
        (k, v, false)
    } else if let Some((k, v)) = term.split_once('=') {
        (k, v, false)
    } else {
        let k = term.trim();
        return if valid_key(k) {
            Ok(LabelReq::Exists(k.to_string()))
        } else {
            Err(bad())
        };
    };
    let (k, v) = (k.trim(), v.trim());
    if !valid_key(k) || v.contains(['=', '!', '(', ')', ' ']) {
        return Err(bad());
    }
    Ok(if ne {
        LabelReq::Ne(k.to_string(), v.to_string())
    } else {
        LabelReq::Eq(k.to_string(), v.to_string())
    })
}

fn parse_field_term(term: &str) -> Result<FieldReq, String> {
    let (path, value, negate) = if let Some((p, v)) = term.split_once("!=") {
        (p, v, true)
    } else if let Some((p, v)) = term.split_once("==") {
        (p, v, false)
    } else if let Some((p, v)) = term.split_once('=') {
        (p, v, false)
    } else {
        return Err(format!("invalid field selector: {term:?}"));
    };
    let path = path.trim();
    if path.is_empty() || path.split('.').any(str::is_empty) {
        return Err(format!("invalid field selector: {term:?}"));
    }
    Ok(FieldReq {
        path: path.split('.').map(str::to_string).collect(),
        value: value.trim().to_string(),
        negate,
    })
}

impl Selectors {
    /// Parses the two query parameters (either may be absent).
    pub(crate) fn parse(labels: Option<&str>, fields: Option<&str>) -> Result<Self, String> {
        let labels = match labels {
            Some(s) => split_terms(s)
                .into_iter()
                .map(parse_label_term)
                .collect::<Result<_, _>>()?,
            None => Vec::new(),
        };
        let fields = match fields {
            Some(s) => s
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(parse_field_term)
                .collect::<Result<_, _>>()?,
            None => Vec::new(),
        };
        Ok(Selectors { labels, fields })
    }

    /// Whether `obj` satisfies every requirement.
    pub(crate) fn matches(&self, obj: &Value) -> bool {
        let labels = obj.pointer("/metadata/labels");
        let label = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        let labels_ok = self.labels.iter().all(|req| match req {
            LabelReq::Eq(k, v) => label(k) == Some(v.as_str()),
            LabelReq::Ne(k, v) => label(k) != Some(v.as_str()),
            LabelReq::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            LabelReq::NotIn(k, vs) => !label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            LabelReq::Exists(k) => label(k).is_some(),
            LabelReq::NotExists(k) => label(k).is_none(),
        });
        labels_ok
            && self.fields.iter().all(|req| {
                let mut cur = Some(obj);
                for seg in &req.path {
                    cur = cur.and_then(|c| c.get(seg));
                }
                let actual = match cur {
                    None | Some(Value::Null) => String::new(),
                    Some(Value::String(s)) => s.clone(),
                    Some(other) => other.to_string(),
                };
                (actual == req.value) != req.negate
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_selectors() {
        let o = json!({"metadata": {"name": "a", "labels": {"app": "x", "tier": "db"}}});
        let m = |l: &str| Selectors::parse(Some(l), None).expect("parse").matches(&o);
        assert!(m("app=x"));
        assert!(m("app==x,tier"));
        assert!(!m("app!=x"));
        assert!(m("tier in (db, web)"));
        assert!(!m("tier notin (db,web)"));
        assert!(m("!missing"));
        assert!(!m("missing"));
        assert!(m(""));
        assert!(Selectors::parse(Some("a in (b"), None).is_err());
        assert!(Selectors::parse(Some("a=b=c"), None).is_err());
    }

    #[test]
    fn field_selectors() {
        let o = json!({"metadata": {"name": "a", "namespace": "n"}, "status": {"phase": "Bound"}});
        let m = |f: &str| Selectors::parse(None, Some(f)).expect("parse").matches(&o);
        assert!(m("metadata.name=a"));
        assert!(m("metadata.name=a,metadata.namespace==n"));
        assert!(!m("metadata.name!=a"));
        assert!(m("status.phase=Bound"));
        assert!(m("spec.volumeName="));
        assert!(Selectors::parse(None, Some("metadata.name")).is_err());
        assert!(Selectors::parse(None, Some("a..b=c")).is_err());
    }
}
