//! Validation of the objects a provisioner writes, as kube-apiserver v1.36 does it, so that a
//! write the real server refuses is refused here too, with the same Status.
//!
//! Checked through the API (create, replace, patch of the main resource; not the tests'
//! direct inserts and modifications, not `/status` writes, whose validation differs):
//! - Events, core `v1` and `events.k8s.io/v1` (`pkg/apis/core/validation/events.go`): the
//!   legacy rules for every write (without `eventTime`: `involvedObject.namespace` matches the
//!   event's namespace, or is empty in `default`; with it: `reportingController` (called
//!   `reportingComponent` in core `v1`) a qualified name, `reportingInstance`, `action` and
//!   `reason` set and at most 128 bytes, the message at most 1024, an empty
//!   `involvedObject.namespace` only in `default` and `kube-system`); on `events.k8s.io/v1`
//!   creates also a DNS-subdomain name, `eventTime`, `type` `Normal` or `Warning`, the
//!   `deprecated*` fields unset, a `series` with `count` >= 2 and `lastObservedTime`; on its
//!   updates a changed `series` is checked again and every other field is immutable. Field
//!   paths are the internal ones the API server reports (`involvedObject`, `message`,
//!   `firstTimestamp`, `count`, `source`, ... also for `regarding`, `note`, `deprecated*`).
//! - PersistentVolumes: `accessModes` (supported values), `capacity` (only and exactly
//!   `storage`), the reclaim policy, a DNS-subdomain class name, exactly one volume source, a
//!   complete `nfs` source, the volume mode; on updates the same plus an immutable volume
//!   source and volume mode.
//! - PersistentVolumeClaim updates: the spec is immutable except a first `volumeName`, and,
//!   for a `Bound` claim, `resources.requests.storage` and `volumeAttributesClassName`.
//! - Leases: JSON types of `spec` (a 400, as the API server's decoder), a DNS-subdomain name on
//!   create, `leaseDurationSeconds` > 0 and `leaseTransitions` >= 0 when set.
//!
//! `eventTime`, `series.lastObservedTime` and the Lease times must be MicroTimes with exactly
//! six fractional digits (the API server's decoder refuses others with a 400).
//!
//! Refusals are 422 `Invalid` Statuses worded like the API server's:
//! `<Kind> "<name>" is invalid: <field>: <Required value|Invalid value: ...|...>`, several
//! errors as `[e1, e2]`, with `details.causes`. Known differences: the diff the API server
//! appends to "is immutable after creation" messages is left out; decode errors in patches
//! are 400s (the API server answers 422 quoting the patched object); the storage-shrink,
//! admission (class `allowVolumeExpansion`) and feature-gated checks are not made.

use crate::error::ApiError;
use crate::resources::ResourceType;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// One field error, as `k8s.io/apimachinery/pkg/util/validation/field.Error`.
#[derive(Clone, Debug, PartialEq)]
struct FieldError {
    field: String,
    kind: ErrKind,
    detail: String,
}

#[derive(Clone, Debug, PartialEq)]
enum ErrKind {
    Required,
    Forbidden,
    /// The bad value as the API server prints it (`"x"`, `5`, `{"Kind":...}`).
    Invalid(String),
    NotSupported(String),
}

impl FieldError {
    fn new(field: &str, kind: ErrKind, detail: impl Into<String>) -> Self {
        FieldError {
            field: field.to_string(),
            kind,
            detail: detail.into(),
        }
    }

    /// The message without the field path (a cause's `message`).
    fn body(&self) -> String {
        let mut s = match &self.kind {
            ErrKind::Required => "Required value".to_string(),
            ErrKind::Forbidden => "Forbidden".to_string(),
            ErrKind::Invalid(v) => format!("Invalid value: {v}"),
            ErrKind::NotSupported(v) => format!("Unsupported value: {v}"),
        };
        if !self.detail.is_empty() {
            s.push_str(": ");
            s.push_str(&self.detail);
        }
        s
    }

    fn reason(&self) -> &'static str {
        match self.kind {
            ErrKind::Required => "FieldValueRequired",
            ErrKind::Forbidden => "FieldValueForbidden",
            ErrKind::Invalid(_) => "FieldValueInvalid",
            ErrKind::NotSupported(_) => "FieldValueNotSupported",
        }
    }
}

fn required(field: &str, detail: &str) -> FieldError {
    FieldError::new(field, ErrKind::Required, detail)
}

fn forbidden(field: &str, detail: &str) -> FieldError {
    FieldError::new(field, ErrKind::Forbidden, detail)
}

fn invalid(field: &str, value: String, detail: impl Into<String>) -> FieldError {
    FieldError::new(field, ErrKind::Invalid(value), detail)
}

fn not_supported(field: &str, value: String, supported: &[&str]) -> FieldError {
    let list: Vec<String> = supported.iter().map(|s| q(s)).collect();
    FieldError::new(
        field,
        ErrKind::NotSupported(value),
        format!("supported values: {}", list.join(", ")),
    )
}

/// A string quoted as Go's `%q` prints it.
fn q(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}

/// The 422 for `errs`, as `apierrors.NewInvalid`: identical messages are given once.
fn invalid_error(
    qkind: &str,
    group: &str,
    kind: &str,
    name: &str,
    errs: &[FieldError],
) -> ApiError {
    let mut msgs: Vec<String> = Vec::new();
    for e in errs {
        let m = format!("{}: {}", e.field, e.body());
        if !msgs.contains(&m) {
            msgs.push(m);
        }
    }
    let agg = match msgs.as_slice() {
        [one] => one.clone(),
        many => format!("[{}]", many.join(", ")),
    };
    let mut err = ApiError::new(422, format!("{qkind} {} is invalid: {agg}", q(name)));
    let mut d = json!({"name": name, "kind": kind});
    if !group.is_empty() {
        d["group"] = json!(group);
    }
    err.details = Some(d);
    let causes = errs
        .iter()
        .map(|e| json!({"reason": e.reason(), "message": e.body(), "field": e.field}))
        .collect();
    err.with_causes(causes)
}

fn decode_error(kind: &str, msg: &str) -> ApiError {
    ApiError::bad_request(format!(
        "{kind} in version \"v1\" cannot be handled as a {kind}: {msg}"
    ))
}

/// Checks `obj` (name and namespace already set) before it is stored; `old` is the stored
/// state on updates, `None` on creates.
pub(crate) fn check(rt: &ResourceType, obj: &Value, old: Option<&Value>) -> Result<(), ApiError> {
    let name = meta(obj, "name");
    let (errs, qkind, group) = match (rt.group.as_str(), rt.version.as_str(), rt.plural.as_str()) {
        ("", "v1", "events") => {
            decode_event(obj)?;
            (event(obj, old, &CORE), "Event", "")
        }
        // The API server reports events.k8s.io Events under the core kind.
        ("events.k8s.io", "v1", "events") => {
            decode_event(obj)?;
            (event(obj, old, &EVENTS_V1), "Event", "")
        }
        ("", "v1", "persistentvolumes") => (persistent_volume(obj, old), "PersistentVolume", ""),
        ("", "v1", "persistentvolumeclaims") => match old {
            Some(old) => (claim_update(obj, old), "PersistentVolumeClaim", ""),
            None => return Ok(()),
        },
        ("coordination.k8s.io", "v1", "leases") => {
            decode_lease(obj)?;
            (
                lease(obj, old.is_none()),
                "Lease.coordination.k8s.io",
                "coordination.k8s.io",
            )
        }
        _ => return Ok(()),
    };
    if errs.is_empty() {
        Ok(())
    } else {
        Err(invalid_error(qkind, group, &rt.kind, name, &errs))
    }
}

// ---- helpers over JSON -------------------------------------------------------------------

fn meta<'a>(v: &'a Value, field: &str) -> &'a str {
    v.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// The string at `key` ("" when missing, null or not a string: Go's zero value).
fn str_at<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// The value at `key` unless missing or null (a set pointer in Go).
fn set<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.get(key).filter(|x| !x.is_null())
}

/// Drops Go zero values (null, false, 0, "", empty lists and maps) so JSON values compare
/// like the API server's `Semantic.DeepEqual` of defaulted objects; `None` if all zero.
fn norm(v: &Value) -> Option<Value> {
    match v {
        Value::Null => None,
        Value::Bool(false) => None,
        Value::Number(n) if n.as_f64() == Some(0.0) => None,
        Value::String(s) if s.is_empty() => None,
        Value::Array(a) if a.is_empty() => None,
        Value::Array(a) => Some(Value::Array(
            a.iter().map(|x| norm(x).unwrap_or(Value::Null)).collect(),
        )),
        Value::Object(m) => {
            let m: Map<String, Value> = m
                .iter()
                .filter_map(|(k, x)| norm(x).map(|x| (k.clone(), x)))
                .collect();
            (!m.is_empty()).then_some(Value::Object(m))
        }
        other => Some(other.clone()),
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

// ---- names ---------------------------------------------------------------------------------

const DNS1123_SUBDOMAIN: &str = "a lowercase RFC 1123 subdomain must consist of lower case \
    alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character \
    (e.g. 'example.com', regex used for validation is \
    '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const QUALIFIED_NAME: &str = "must consist of alphanumeric characters, '-', '_' or '.', and \
    must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or \
    '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";

/// `validation.IsDNS1123Subdomain`.
fn dns1123_subdomain(v: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if v.len() > 253 {
        errs.push("must be no more than 253 bytes".to_string());
    }
    let label_ok = |l: &str| {
        let b = l.as_bytes();
        let edge = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
        b.first().is_some_and(edge)
            && b.last().is_some_and(edge)
            && b.iter().all(|c| edge(c) || *c == b'-')
    };
    if !v.split('.').all(label_ok) {
        errs.push(DNS1123_SUBDOMAIN.to_string());
    }
    errs
}

/// `validation.IsQualifiedName`: `[prefix/]name`, the prefix a DNS subdomain.
fn qualified_name(v: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let parts: Vec<&str> = v.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_string());
            } else {
                errs.extend(
                    dns1123_subdomain(prefix)
                        .into_iter()
                        .map(|m| format!("prefix part {m}")),
                );
            }
            *name
        }
        _ => {
            errs.push(format!(
                "a valid label key {QUALIFIED_NAME} with an optional DNS subdomain prefix and \
                 '/' (e.g. 'example.com/MyName')"
            ));
            return errs;
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else if name.len() > 63 {
        errs.push("name part must be no more than 63 bytes".to_string());
    }
    let b = name.as_bytes();
    let ok = b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric)
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'));
    if !ok {
        errs.push(format!("name part {QUALIFIED_NAME}"));
    }
    errs
}

// ---- times ---------------------------------------------------------------------------------

/// One element of the MicroTime layout: (element, digits (0: a literal), min, max, name).
type Step = (&'static str, usize, u32, u32, &'static str);

const MICRO_LAYOUT: &str = "2006-01-02T15:04:05.000000Z07:00";

/// Parses a MicroTime as Go's `time.Parse(RFC3339Micro)` does; the error is worded like Go's.
fn micro_time(v: &str) -> Result<(), String> {
    let fail = |rest: &str, elem: &str| {
        format!(
            "parsing time {} as {}: cannot parse {} as {}",
            q(v),
            q(MICRO_LAYOUT),
            q(rest),
            q(elem)
        )
    };
    let range = |what: &str| format!("parsing time {}: {what} out of range", q(v));
    let mut rest = v;
    // (layout element, digits (0: a literal), valid range, its name)
    let steps: [Step; 11] = [
        ("2006", 4, 0, 9999, "year"),
        ("-", 0, 0, 0, ""),
        ("01", 2, 1, 12, "month"),
        ("-", 0, 0, 0, ""),
        ("02", 2, 1, 31, "day"),
        ("T", 0, 0, 0, ""),
        ("15", 2, 0, 23, "hour"),
        (":", 0, 0, 0, ""),
        ("04", 2, 0, 59, "minute"),
        (":", 0, 0, 0, ""),
        ("05", 2, 0, 59, "second"),
    ];
    for (elem, n, lo, hi, what) in steps {
        if n == 0 {
            match rest.strip_prefix(elem) {
                Some(r) => rest = r,
                None => return Err(fail(rest, elem)),
            }
            continue;
        }
        let d = rest
            .get(..n)
            .filter(|d| d.bytes().all(|c| c.is_ascii_digit()));
        let Some(d) = d else {
            return Err(fail(rest, elem));
        };
        let x: u32 = d.parse().map_err(|_| fail(rest, elem))?;
        if x < lo || x > hi {
            return Err(range(what));
        }
        rest = &rest[n..];
    }
    let frac = rest.as_bytes();
    if frac.len() < 7 || frac[0] != b'.' || !frac[1..7].iter().all(u8::is_ascii_digit) {
        return Err(fail(rest, ".000000"));
    }
    rest = &rest[7..];
    if let Some(r) = rest.strip_prefix('Z') {
        rest = r;
    } else {
        let b = rest.as_bytes();
        let ok = b.len() >= 6
            && matches!(b[0], b'+' | b'-')
            && b[1..3].iter().all(u8::is_ascii_digit)
            && b[3] == b':'
            && b[4..6].iter().all(u8::is_ascii_digit);
        if !ok {
            return Err(fail(rest, "Z07:00"));
        }
        rest = &rest[6..];
    }
    if !rest.is_empty() {
        return Err(format!("parsing time {}: extra text: {}", q(v), q(rest)));
    }
    Ok(())
}

// ---- events --------------------------------------------------------------------------------

/// The field names of one Event API version.
struct EventFields {
    events_v1: bool,
    involved: &'static str,
    message: &'static str,
    first: &'static str,
    last: &'static str,
    count: &'static str,
    source: &'static str,
    controller: &'static str,
}

const CORE: EventFields = EventFields {
    events_v1: false,
    involved: "involvedObject",
    message: "message",
    first: "firstTimestamp",
    last: "lastTimestamp",
    count: "count",
    source: "source",
    controller: "reportingComponent",
};

const EVENTS_V1: EventFields = EventFields {
    events_v1: true,
    involved: "regarding",
    message: "note",
    first: "deprecatedFirstTimestamp",
    last: "deprecatedLastTimestamp",
    count: "deprecatedCount",
    source: "deprecatedSource",
    controller: "reportingController",
};

/// The MicroTimes of an Event must parse (else a 400, as from the API server's decoder).
fn decode_event(obj: &Value) -> Result<(), ApiError> {
    let times = [
        obj.get("eventTime"),
        obj.get("series").and_then(|s| s.get("lastObservedTime")),
    ];
    for t in times.into_iter().flatten() {
        if let Some(s) = t.as_str() {
            micro_time(s).map_err(|m| decode_error("Event", &m))?;
        }
    }
    Ok(())
}

/// An ObjectReference as Go prints the struct in an error.
fn go_ref(r: Option<&Value>) -> String {
    let r = r.unwrap_or(&Value::Null);
    let fields = [
        ("Kind", "kind"),
        ("Namespace", "namespace"),
        ("Name", "name"),
        ("UID", "uid"),
        ("APIVersion", "apiVersion"),
        ("ResourceVersion", "resourceVersion"),
        ("FieldPath", "fieldPath"),
    ];
    let parts: Vec<String> = fields
        .iter()
        .map(|(go, js)| format!("{}:{}", q(go), q(str_at(r, js))))
        .collect();
    format!("{{{}}}", parts.join(","))
}

fn go_source(s: Option<&Value>) -> String {
    let s = s.unwrap_or(&Value::Null);
    format!(
        "{{\"Component\":{},\"Host\":{}}}",
        q(str_at(s, "component")),
        q(str_at(s, "host"))
    )
}

fn go_time(t: Option<&Value>) -> String {
    match t {
        Some(Value::String(s)) => q(s),
        Some(v) => v.to_string(),
        None => "null".to_string(),
    }
}

fn event(obj: &Value, old: Option<&Value>, f: &EventFields) -> Vec<FieldError> {
    let mut errs = legacy_event(obj, f);
    if !f.events_v1 {
        return errs;
    }
    match old {
        None => {
            for m in dns1123_subdomain(meta(obj, "name")) {
                errs.push(invalid("metadata.name", q(meta(obj, "name")), m));
            }
            errs.extend(event_series(obj));
            if set(obj, "eventTime").is_none() {
                errs.push(required("eventTime", ""));
            }
            let ty = str_at(obj, "type");
            if ty != "Normal" && ty != "Warning" {
                errs.push(invalid("type", q(""), format!("has invalid value: {ty}")));
            }
            let unset = "needs to be unset";
            if set(obj, f.first).is_some() {
                errs.push(invalid("firstTimestamp", q(""), unset));
            }
            if set(obj, f.last).is_some() {
                errs.push(invalid("lastTimestamp", q(""), unset));
            }
            if set(obj, f.count)
                .and_then(Value::as_i64)
                .is_some_and(|c| c != 0)
            {
                errs.push(invalid("count", q(""), unset));
            }
            if set(obj, f.source).is_some_and(|s| {
                !str_at(s, "component").is_empty() || !str_at(s, "host").is_empty()
            }) {
                errs.push(invalid("source", q(""), unset));
            }
        }
        Some(old) => {
            if set(obj, "series").and_then(norm) != set(old, "series").and_then(norm) {
                errs.extend(event_series(obj));
            }
            let immutable = "field is immutable";
            let refs_differ = |key: &str| {
                let (a, b) = (set(obj, key), set(old, key));
                a.is_some() != b.is_some() || go_ref(a) != go_ref(b)
            };
            let str_field = |errs: &mut Vec<FieldError>, path: &str, key: &str| {
                if str_at(obj, key) != str_at(old, key) {
                    errs.push(invalid(path, q(str_at(obj, key)), immutable));
                }
            };
            let time_field = |errs: &mut Vec<FieldError>, path: &str, key: &str| {
                if set(obj, key) != set(old, key) {
                    errs.push(invalid(path, go_time(set(obj, key)), immutable));
                }
            };
            if refs_differ(f.involved) {
                errs.push(invalid(
                    "involvedObject",
                    go_ref(set(obj, f.involved)),
                    immutable,
                ));
            }
            str_field(&mut errs, "reason", "reason");
            str_field(&mut errs, "message", f.message);
            if go_source(set(obj, f.source)) != go_source(set(old, f.source)) {
                errs.push(invalid("source", go_source(set(obj, f.source)), immutable));
            }
            time_field(&mut errs, "firstTimestamp", f.first);
            time_field(&mut errs, "lastTimestamp", f.last);
            let count = |v: &Value| set(v, f.count).and_then(Value::as_i64).unwrap_or(0);
            if count(obj) != count(old) {
                errs.push(invalid("count", count(obj).to_string(), immutable));
            }
            str_field(&mut errs, "reason", "reason");
            str_field(&mut errs, "type", "type");
            time_field(&mut errs, "eventTime", "eventTime");
            str_field(&mut errs, "action", "action");
            if refs_differ("related") {
                let r = set(obj, "related").map_or("null".to_string(), |r| go_ref(Some(r)));
                errs.push(invalid("related", r, immutable));
            }
            str_field(&mut errs, "reportingController", f.controller);
            str_field(&mut errs, "reportingInstance", "reportingInstance");
        }
    }
    errs
}

/// `legacyValidateEvent`: every Event write, in every API version.
fn legacy_event(obj: &Value, f: &EventFields) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let ns = meta(obj, "namespace");
    let involved_ns = obj.get(f.involved).map_or("", |r| str_at(r, "namespace"));
    let mismatch = || {
        invalid(
            "involvedObject.namespace",
            q(involved_ns),
            "does not match event.namespace",
        )
    };
    if set(obj, "eventTime").is_none() {
        if involved_ns.is_empty() {
            if !ns.is_empty() && ns != "default" {
                errs.push(mismatch());
            }
        } else if ns != involved_ns {
            errs.push(mismatch());
        }
        return errs;
    }
    if involved_ns.is_empty() && ns != "default" && ns != "kube-system" {
        errs.push(mismatch());
    }
    let controller = str_at(obj, f.controller);
    if controller.is_empty() {
        errs.push(required(f.controller, ""));
    }
    for m in qualified_name(controller) {
        errs.push(invalid(f.controller, q(controller), m));
    }
    for (path, key, limit) in [
        ("reportingInstance", "reportingInstance", 128),
        ("action", "action", 128),
        ("reason", "reason", 128),
    ] {
        let v = str_at(obj, key);
        if v.is_empty() {
            errs.push(required(path, ""));
        }
        if v.len() > limit {
            errs.push(invalid(
                path,
                q(""),
                format!("can have at most {limit} characters"),
            ));
        }
    }
    if str_at(obj, f.message).len() > 1024 {
        errs.push(invalid(
            "message",
            q(""),
            "can have at most 1024 characters",
        ));
    }
    errs
}

/// `validateV1EventSeries`.
fn event_series(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if let Some(s) = set(obj, "series") {
        if set(s, "count").and_then(Value::as_i64).unwrap_or(0) < 2 {
            errs.push(invalid("series.count", q(""), "should be at least 2"));
        }
        if set(s, "lastObservedTime").is_none() {
            errs.push(required("series.lastObservedTime", ""));
        }
    }
    errs
}

// ---- persistent volumes and claims ---------------------------------------------------------

const ACCESS_MODES: [&str; 4] = [
    "ReadOnlyMany",
    "ReadWriteMany",
    "ReadWriteOnce",
    "ReadWriteOncePod",
];

/// The volume sources of a PV spec, in the order the API server checks them.
const PV_SOURCES: [&str; 22] = [
    "hostPath",
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "glusterfs",
    "flocker",
    "nfs",
    "rbd",
    "quobyte",
    "cephfs",
    "iscsi",
    "cinder",
    "fc",
    "flexVolume",
    "azureFile",
    "vsphereVolume",
    "photonPersistentDisk",
    "portworxVolume",
    "azureDisk",
    "scaleIO",
    "local",
    "storageos",
    "csi",
];

fn spec(obj: &Value) -> &Value {
    static EMPTY: Value = Value::Null;
    obj.get("spec").unwrap_or(&EMPTY)
}

/// `volumeMode`, defaulted as the API server does.
fn volume_mode(spec: &Value) -> &str {
    match str_at(spec, "volumeMode") {
        "" => "Filesystem",
        m => m,
    }
}

/// `ValidatePersistentVolume` (and `...Update` when `old` is given).
fn persistent_volume(obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let sp = spec(obj);
    let modes = set(sp, "accessModes")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    if modes.is_empty() {
        errs.push(required("spec.accessModes", ""));
    }
    for m in modes {
        let m = m.as_str().unwrap_or("");
        if !ACCESS_MODES.contains(&m) {
            errs.push(not_supported("spec.accessModes", q(m), &ACCESS_MODES));
        }
    }
    let capacity = set(sp, "capacity").and_then(Value::as_object);
    if capacity.is_none_or(Map::is_empty) {
        errs.push(required("spec.capacity", ""));
    }
    if capacity.is_none_or(|c| !c.contains_key("storage") || c.len() > 1) {
        let shown = capacity.map_or("null".to_string(), |c| {
            json!(c.iter().collect::<BTreeMap<_, _>>()).to_string()
        });
        errs.push(not_supported("spec.capacity", shown, &["storage"]));
    }
    let policy = str_at(sp, "persistentVolumeReclaimPolicy");
    let policies = ["Delete", "Recycle", "Retain"];
    if !policy.is_empty() && !policies.contains(&policy) {
        errs.push(not_supported(
            "spec.persistentVolumeReclaimPolicy",
            q(policy),
            &policies,
        ));
    }
    let class = str_at(sp, "storageClassName");
    if !class.is_empty() {
        for m in dns1123_subdomain(class) {
            errs.push(invalid("spec.storageClassName", q(class), m));
        }
    }
    let mut sources = 0;
    for key in PV_SOURCES {
        let Some(src) = set(sp, key) else { continue };
        let path = format!("spec.{key}");
        if sources > 0 {
            errs.push(forbidden(&path, "may not specify more than 1 volume type"));
            continue;
        }
        sources += 1;
        if key == "nfs" {
            if str_at(src, "server").is_empty() {
                errs.push(required("spec.nfs.server", ""));
            }
            let p = str_at(src, "path");
            if p.is_empty() {
                errs.push(required("spec.nfs.path", ""));
            }
            if !p.starts_with('/') {
                errs.push(invalid("spec.nfs.path", q(p), "must be an absolute path"));
            }
        }
    }
    if sources == 0 {
        errs.push(required("spec", "must specify a volume type"));
    }
    let modes = ["Block", "Filesystem"];
    if let Some(m) = set(sp, "volumeMode") {
        let m = m.as_str().unwrap_or("");
        if !modes.contains(&m) {
            errs.push(not_supported("spec.volumeMode", q(m), &modes));
        }
    }
    if let Some(old) = old {
        let osp = spec(old);
        if PV_SOURCES
            .iter()
            .any(|k| set(sp, k).and_then(norm) != set(osp, k).and_then(norm))
        {
            errs.push(forbidden(
                "spec.persistentvolumesource",
                "spec.persistentvolumesource is immutable after creation",
            ));
        }
        if volume_mode(sp) != volume_mode(osp) {
            errs.push(invalid(
                "volumeMode",
                q(volume_mode(sp)),
                "field is immutable",
            ));
        }
    }
    errs
}

/// The spec part of `ValidatePersistentVolumeClaimUpdate`.
fn claim_update(obj: &Value, old: &Value) -> Vec<FieldError> {
    let mut new_spec = spec(obj).clone();
    let mut old_spec = spec(old).clone();
    for s in [&mut new_spec, &mut old_spec] {
        if !s.is_object() {
            *s = json!({});
        }
        if str_at(s, "volumeMode").is_empty() {
            s["volumeMode"] = json!("Filesystem");
        }
    }
    // volumeName can be set once.
    if str_at(&old_spec, "volumeName").is_empty() {
        old_spec["volumeName"] = new_spec.get("volumeName").cloned().unwrap_or(Value::Null);
    }
    let bound = obj.pointer("/status/phase").and_then(Value::as_str) == Some("Bound");
    if bound {
        let storage = new_spec.pointer("/resources/requests/storage").cloned();
        if let Some(st) = storage {
            if !old_spec.get("resources").is_some_and(Value::is_object) {
                old_spec["resources"] = json!({});
            }
            if !old_spec["resources"]
                .get("requests")
                .is_some_and(Value::is_object)
            {
                old_spec["resources"]["requests"] = json!({});
            }
            old_spec["resources"]["requests"]["storage"] = st;
        }
        old_spec["volumeAttributesClassName"] = new_spec
            .get("volumeAttributesClassName")
            .cloned()
            .unwrap_or(Value::Null);
    }
    if norm(&new_spec) != norm(&old_spec) {
        return vec![forbidden(
            "spec",
            "spec is immutable after creation except resources.requests and \
             volumeAttributesClassName for bound claims",
        )];
    }
    Vec::new()
}

// ---- leases --------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq)]
enum GoType {
    Str,
    Int32,
    MicroTime,
}

const LEASE_SPEC: [(&str, GoType); 7] = [
    ("holderIdentity", GoType::Str),
    ("leaseDurationSeconds", GoType::Int32),
    ("acquireTime", GoType::MicroTime),
    ("renewTime", GoType::MicroTime),
    ("leaseTransitions", GoType::Int32),
    ("strategy", GoType::Str),
    ("preferredHolder", GoType::Str),
];

/// What the API server's JSON decoder refuses in a Lease (a 400).
fn decode_lease(obj: &Value) -> Result<(), ApiError> {
    let err = |m: String| decode_error("Lease", &m);
    let Some(sp) = set(obj, "spec") else {
        return Ok(());
    };
    if !sp.is_object() {
        return Err(err(format!(
            "json: cannot unmarshal {} into Go struct field Lease.spec of type v1.LeaseSpec",
            json_type(sp)
        )));
    }
    for (key, ty) in LEASE_SPEC {
        let Some(v) = set(sp, key) else { continue };
        let into = |what: String, go: &str| {
            err(format!(
                "json: cannot unmarshal {what} into Go struct field LeaseSpec.spec.{key} of type \
                 {go}"
            ))
        };
        match (ty, v) {
            (GoType::Int32, Value::Number(n)) => {
                if n.as_i64().and_then(|i| i32::try_from(i).ok()).is_none() {
                    return Err(into(format!("number {n}"), "int32"));
                }
            }
            (GoType::Int32, other) => return Err(into(json_type(other).into(), "int32")),
            (GoType::Str, Value::String(_)) => {}
            (GoType::MicroTime, Value::String(s)) => micro_time(s).map_err(err)?,
            (_, other) => return Err(into(json_type(other).into(), "string")),
        }
    }
    Ok(())
}

/// `ValidateLease` / `ValidateLeaseUpdate` (without the feature-gated fields).
fn lease(obj: &Value, create: bool) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if create {
        let name = meta(obj, "name");
        for m in dns1123_subdomain(name) {
            errs.push(invalid("metadata.name", q(name), m));
        }
    }
    let sp = spec(obj);
    if let Some(d) = set(sp, "leaseDurationSeconds").and_then(Value::as_i64)
        && d <= 0
    {
        errs.push(invalid(
            "spec.leaseDurationSeconds",
            d.to_string(),
            "must be greater than 0",
        ));
    }
    if let Some(t) = set(sp, "leaseTransitions").and_then(Value::as_i64)
        && t < 0
    {
        errs.push(invalid(
            "spec.leaseTransitions",
            t.to_string(),
            "must be greater than or equal to 0",
        ));
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{default_resources, resolve};

    fn rt(name: &str) -> ResourceType {
        let t = default_resources();
        let i = resolve(&t, name).expect("served");
        t[i].clone()
    }

    /// The 422's message and the fields of its causes.
    fn refused(res: &str, obj: &Value, old: Option<&Value>) -> (String, Vec<String>) {
        let e = check(&rt(res), obj, old).expect_err("refused");
        assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"), "{e}");
        let d = e.details.expect("details");
        let fields = d["causes"]
            .as_array()
            .expect("causes")
            .iter()
            .map(|c| c["field"].as_str().unwrap_or("").to_string())
            .collect();
        (e.message, fields)
    }

    fn core_event(ns: &str) -> Value {
        json!({"metadata": {"name": "e", "namespace": ns},
               "involvedObject": {"kind": "PersistentVolumeClaim", "name": "c", "namespace": ns},
               "reason": "Provisioning", "message": "m", "type": "Normal"})
    }

    fn v1_event() -> Value {
        json!({"metadata": {"name": "data.17f3", "namespace": "apps"},
               "eventTime": "2024-01-01T00:00:00.000000Z",
               "regarding": {"kind": "PersistentVolumeClaim", "name": "data", "namespace": "apps"},
               "reason": "Provisioning", "note": "hello", "action": "Provision",
               "reportingController": "cluster.local/nfs-server-provisioner",
               "reportingInstance": "pod-1", "type": "Normal"})
    }

    #[test]
    fn core_event_with_event_time_needs_reporting_fields() {
        let mut e = core_event("d");
        assert_eq!(check(&rt("events"), &e, None), Ok(()));
        e["eventTime"] = json!("2024-01-01T00:00:00.000000Z");
        let (msg, fields) = refused("events", &e, None);
        assert!(
            msg.starts_with(
                "Event \"e\" is invalid: [reportingComponent: Required value, reportingComponent: \
                 Invalid value: \"\": name part must be non-empty, reportingComponent: Invalid \
                 value: \"\": name part must consist of alphanumeric characters"
            ),
            "{msg}"
        );
        assert!(
            msg.ends_with("reportingInstance: Required value, action: Required value]"),
            "{msg}"
        );
        assert_eq!(
            fields,
            [
                "reportingComponent",
                "reportingComponent",
                "reportingComponent",
                "reportingInstance",
                "action"
            ]
        );
        e["reportingComponent"] = json!("cluster.local/nfs-server-provisioner");
        e["reportingInstance"] = json!("pod-1");
        e["action"] = json!("Provision");
        assert_eq!(check(&rt("events"), &e, None), Ok(()));
        // Lengths, and a prefix that is no DNS subdomain.
        e["reportingComponent"] = json!("-bad/x");
        e["action"] = json!("a".repeat(129));
        e["message"] = json!("n".repeat(1025));
        let (msg, fields) = refused("events", &e, None);
        assert!(msg.contains("reportingComponent: Invalid value: \"-bad/x\": prefix part a lowercase RFC 1123 subdomain"), "{msg}");
        assert!(
            msg.contains("action: Invalid value: \"\": can have at most 128 characters"),
            "{msg}"
        );
        assert!(
            msg.contains("message: Invalid value: \"\": can have at most 1024 characters"),
            "{msg}"
        );
        assert_eq!(fields, ["reportingComponent", "action", "message"]);
    }

    #[test]
    fn core_event_namespace_must_match() {
        let mut e = core_event("d");
        e["involvedObject"]["namespace"] = json!("x");
        let (msg, fields) = refused("events", &e, None);
        assert_eq!(
            msg,
            "Event \"e\" is invalid: involvedObject.namespace: Invalid value: \"x\": does not \
             match event.namespace"
        );
        assert_eq!(fields, ["involvedObject.namespace"]);
        e["involvedObject"]["namespace"] = json!("");
        refused("events", &e, None);
        let mut e = core_event("default");
        e["involvedObject"]["namespace"] = json!("");
        assert_eq!(check(&rt("events"), &e, None), Ok(()));
        // With eventTime: empty only in default and kube-system.
        let mut e = v1_event();
        e["regarding"]["namespace"] = json!("");
        let (_, fields) = refused("events.events.k8s.io", &e, None);
        assert_eq!(fields, ["involvedObject.namespace"]);
        e["metadata"]["namespace"] = json!("kube-system");
        assert_eq!(check(&rt("events.events.k8s.io"), &e, None), Ok(()));
    }

    #[test]
    fn events_v1_create_rules() {
        let ev = rt("events.events.k8s.io");
        assert_eq!(check(&ev, &v1_event(), None), Ok(()));
        let mut e = v1_event();
        e["type"] = json!("Bogus");
        e["deprecatedFirstTimestamp"] = json!("2024-01-01T00:00:00Z");
        e["deprecatedLastTimestamp"] = json!("2024-01-01T00:00:00Z");
        e["deprecatedCount"] = json!(3);
        e["deprecatedSource"] = json!({"component": "x"});
        e["series"] = json!({"count": 1});
        let (msg, fields) = refused("events.events.k8s.io", &e, None);
        assert_eq!(
            msg,
            "Event \"data.17f3\" is invalid: [series.count: Invalid value: \"\": should be at \
             least 2, series.lastObservedTime: Required value, type: Invalid value: \"\": has \
             invalid value: Bogus, firstTimestamp: Invalid value: \"\": needs to be unset, \
             lastTimestamp: Invalid value: \"\": needs to be unset, count: Invalid value: \"\": \
             needs to be unset, source: Invalid value: \"\": needs to be unset]"
        );
        assert_eq!(fields.len(), 7);
        // No eventTime: legacy rules pass (namespaces match), strict ones do not.
        let mut e = v1_event();
        e.as_object_mut().expect("object").remove("eventTime");
        let (msg, _) = refused("events.events.k8s.io", &e, None);
        assert_eq!(
            msg,
            "Event \"data.17f3\" is invalid: eventTime: Required value"
        );
        let mut e = v1_event();
        e["reportingController"] = json!("");
        e["metadata"]["name"] = json!("Bad_Name");
        let (_, fields) = refused("events.events.k8s.io", &e, None);
        assert_eq!(
            fields,
            [
                "reportingController",
                "reportingController",
                "reportingController",
                "metadata.name"
            ]
        );
        let e = check(&ev, &v1_event(), None).map(|_| ());
        assert_eq!(e, Ok(()));
    }

    #[test]
    fn events_v1_update_series_and_immutable_fields() {
        let ev = rt("events.events.k8s.io");
        let old = v1_event();
        let mut new = old.clone();
        new["series"] = json!({"count": 2, "lastObservedTime": "2024-01-01T00:01:00.000000Z"});
        assert_eq!(check(&ev, &new, Some(&old)), Ok(()));
        new["series"]["count"] = json!(1);
        let (msg, _) = refused("events.events.k8s.io", &new, Some(&old));
        assert_eq!(
            msg,
            "Event \"data.17f3\" is invalid: series.count: Invalid value: \"\": should be at \
             least 2"
        );
        let mut new = old.clone();
        new["note"] = json!("changed");
        new["reason"] = json!("R2");
        new["regarding"]["name"] = json!("q");
        new["deprecatedCount"] = json!(5);
        new["metadata"]["labels"] = json!({"a": "b"});
        let (msg, fields) = refused("events.events.k8s.io", &new, Some(&old));
        assert_eq!(
            msg,
            "Event \"data.17f3\" is invalid: [involvedObject: Invalid value: \
             {\"Kind\":\"PersistentVolumeClaim\",\"Namespace\":\"apps\",\"Name\":\"q\",\"UID\":\"\",\
             \"APIVersion\":\"\",\"ResourceVersion\":\"\",\"FieldPath\":\"\"}: field is immutable, \
             reason: Invalid value: \"R2\": field is immutable, message: Invalid value: \
             \"changed\": field is immutable, count: Invalid value: 5: field is immutable]"
        );
        assert_eq!(
            fields,
            ["involvedObject", "reason", "message", "count", "reason"]
        );
        // Core v1 updates: legacy rules only.
        let old = core_event("d");
        let mut new = old.clone();
        new["message"] = json!("other");
        new["count"] = json!(2);
        assert_eq!(check(&rt("events"), &new, Some(&old)), Ok(()));
    }

    #[test]
    fn micro_times_must_have_six_digits() {
        let mut e = v1_event();
        e["eventTime"] = json!("2024-01-01T00:00:00Z");
        let err = check(&rt("events.events.k8s.io"), &e, None).expect_err("400");
        assert_eq!(err.code, 400);
        assert_eq!(
            err.message,
            "Event in version \"v1\" cannot be handled as a Event: parsing time \
             \"2024-01-01T00:00:00Z\" as \"2006-01-02T15:04:05.000000Z07:00\": cannot parse \"Z\" \
             as \".000000\""
        );
        assert_eq!(
            micro_time("2024-01-01T00:00:00.123456789Z"),
            Err("parsing time \"2024-01-01T00:00:00.123456789Z\" as \
                 \"2006-01-02T15:04:05.000000Z07:00\": cannot parse \"789Z\" as \"Z07:00\""
                .into())
        );
        assert_eq!(
            micro_time("2024-13-01T00:00:00.000000Z"),
            Err("parsing time \"2024-13-01T00:00:00.000000Z\": month out of range".into())
        );
        assert_eq!(
            micro_time("x"),
            Err(
                "parsing time \"x\" as \"2006-01-02T15:04:05.000000Z07:00\": cannot parse \"x\" \
                 as \"2006\""
                    .into()
            )
        );
        assert_eq!(micro_time("2024-01-01T00:00:00.123456+02:00"), Ok(()));
    }

    fn pv() -> Value {
        json!({"metadata": {"name": "pvc-1"},
               "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany"],
                        "persistentVolumeReclaimPolicy": "Delete", "storageClassName": "nfs",
                        "volumeMode": "Filesystem", "mountOptions": ["vers=4.1"],
                        "claimRef": {"namespace": "apps", "name": "data"},
                        "nfs": {"server": "10.0.0.1", "path": "/export/pvc-1",
                                "readOnly": false}}})
    }

    #[test]
    fn persistent_volume_create() {
        let pvs = rt("persistentvolumes");
        assert_eq!(check(&pvs, &pv(), None), Ok(()));
        let (msg, fields) = refused(
            "persistentvolumes",
            &json!({"metadata": {"name": "pv1"}, "spec": {}}),
            None,
        );
        assert_eq!(
            msg,
            "PersistentVolume \"pv1\" is invalid: [spec.accessModes: Required value, \
             spec.capacity: Required value, spec.capacity: Unsupported value: null: supported \
             values: \"storage\", spec: Required value: must specify a volume type]"
        );
        assert_eq!(
            fields,
            ["spec.accessModes", "spec.capacity", "spec.capacity", "spec"]
        );
        let mut p = pv();
        p["spec"]["hostPath"] = json!({"path": "/y"});
        p["spec"]["csi"] = json!({"driver": "d", "volumeHandle": "h"});
        let (msg, fields) = refused("persistentvolumes", &p, None);
        assert_eq!(
            msg,
            "PersistentVolume \"pvc-1\" is invalid: [spec.nfs: Forbidden: may not specify more \
             than 1 volume type, spec.csi: Forbidden: may not specify more than 1 volume type]"
        );
        assert_eq!(fields, ["spec.nfs", "spec.csi"]);
        let mut p = pv();
        p["spec"]["capacity"]["foo"] = json!("1");
        p["spec"]["accessModes"] = json!(["Bogus"]);
        p["spec"]["nfs"] = json!({"server": "", "path": ""});
        p["spec"]["persistentVolumeReclaimPolicy"] = json!("Keep");
        p["spec"]["volumeMode"] = json!("Raw");
        let (msg, _) = refused("persistentvolumes", &p, None);
        assert_eq!(
            msg,
            "PersistentVolume \"pvc-1\" is invalid: [spec.accessModes: Unsupported value: \
             \"Bogus\": supported values: \"ReadOnlyMany\", \"ReadWriteMany\", \"ReadWriteOnce\", \
             \"ReadWriteOncePod\", spec.capacity: Unsupported value: {\"foo\":\"1\",\"storage\":\
             \"1Gi\"}: supported values: \"storage\", spec.persistentVolumeReclaimPolicy: \
             Unsupported value: \"Keep\": supported values: \"Delete\", \"Recycle\", \"Retain\", \
             spec.nfs.server: Required value, spec.nfs.path: Required value, spec.nfs.path: \
             Invalid value: \"\": must be an absolute path, spec.volumeMode: Unsupported value: \
             \"Raw\": supported values: \"Block\", \"Filesystem\"]"
        );
    }

    #[test]
    fn persistent_volume_source_is_immutable() {
        let pvs = rt("persistentvolumes");
        let old = pv();
        let mut new = old.clone();
        new["spec"]["claimRef"] = json!({"namespace": "apps", "name": "other", "uid": "u"});
        new["spec"]["capacity"]["storage"] = json!("2Gi");
        new["spec"]["persistentVolumeReclaimPolicy"] = json!("Retain");
        new["metadata"]["finalizers"] = json!([]);
        // An explicit zero value is no change.
        new["spec"]["nfs"]
            .as_object_mut()
            .expect("nfs")
            .remove("readOnly");
        assert_eq!(check(&pvs, &new, Some(&old)), Ok(()));
        new["spec"]["nfs"]["server"] = json!("10.0.0.2");
        new["spec"]["volumeMode"] = json!("Block");
        let (msg, fields) = refused("persistentvolumes", &new, Some(&old));
        assert_eq!(
            msg,
            "PersistentVolume \"pvc-1\" is invalid: [spec.persistentvolumesource: Forbidden: \
             spec.persistentvolumesource is immutable after creation, volumeMode: Invalid value: \
             \"Block\": field is immutable]"
        );
        assert_eq!(fields, ["spec.persistentvolumesource", "volumeMode"]);
    }

    fn claim(phase: &str) -> Value {
        json!({"metadata": {"name": "c1", "namespace": "d"},
               "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "nfs",
                        "resources": {"requests": {"storage": "1Gi"}}},
               "status": {"phase": phase}})
    }

    #[test]
    fn claim_spec_is_immutable() {
        let pvcs = rt("persistentvolumeclaims");
        let immutable = "PersistentVolumeClaim \"c1\" is invalid: spec: Forbidden: spec is \
                         immutable after creation except resources.requests and \
                         volumeAttributesClassName for bound claims";
        assert_eq!(check(&pvcs, &claim("Pending"), None), Ok(()));
        let old = claim("Pending");
        let mut new = old.clone();
        new["spec"]["volumeName"] = json!("pv-x");
        new["metadata"]["annotations"] = json!({"a": "b"});
        new["spec"]["volumeMode"] = json!("Filesystem");
        assert_eq!(check(&pvcs, &new, Some(&old)), Ok(()));
        let old = new.clone();
        new["spec"]["volumeName"] = json!("pv-y");
        let (msg, fields) = refused("persistentvolumeclaims", &new, Some(&old));
        assert_eq!(
            (msg.as_str(), fields),
            (immutable, vec!["spec".to_string()])
        );
        // Requests change only on bound claims, and only storage.
        let mut grown = old.clone();
        grown["spec"]["resources"]["requests"]["storage"] = json!("2Gi");
        refused("persistentvolumeclaims", &grown, Some(&old));
        let mut old = old.clone();
        old["status"]["phase"] = json!("Bound");
        let mut grown = old.clone();
        grown["spec"]["resources"]["requests"]["storage"] = json!("2Gi");
        assert_eq!(check(&pvcs, &grown, Some(&old)), Ok(()));
        grown["spec"]["resources"]["requests"]["cpu"] = json!("1");
        refused("persistentvolumeclaims", &grown, Some(&old));
        let mut other = old.clone();
        other["spec"]["storageClassName"] = json!("other");
        let (msg, _) = refused("persistentvolumeclaims", &other, Some(&old));
        assert_eq!(msg, immutable);
    }

    #[test]
    fn lease_rules() {
        let leases = rt("leases");
        let good = json!({"metadata": {"name": "l", "namespace": "d"},
                          "spec": {"holderIdentity": "me", "leaseDurationSeconds": 15,
                                   "leaseTransitions": 0,
                                   "renewTime": "2024-01-01T00:00:00.000000Z"}});
        assert_eq!(check(&leases, &good, None), Ok(()));
        let mut bad = good.clone();
        bad["spec"]["leaseDurationSeconds"] = json!(0);
        bad["spec"]["leaseTransitions"] = json!(-1);
        let e = check(&leases, &bad, None).expect_err("refused");
        assert_eq!(
            e.message,
            "Lease.coordination.k8s.io \"l\" is invalid: [spec.leaseDurationSeconds: Invalid \
             value: 0: must be greater than 0, spec.leaseTransitions: Invalid value: -1: must be \
             greater than or equal to 0]"
        );
        let d = e.details.expect("details");
        assert_eq!(
            (d["group"].clone(), d["kind"].clone()),
            (json!("coordination.k8s.io"), json!("Lease"))
        );
        // Updates too.
        let (msg, _) = refused("leases", &bad, Some(&good));
        assert!(
            msg.contains("spec.leaseDurationSeconds: Invalid value: 0"),
            "{msg}"
        );
        let mut bad = good.clone();
        bad["metadata"]["name"] = json!("L_5");
        let (_, fields) = refused("leases", &bad, None);
        assert_eq!(fields, ["metadata.name"]);
        // Wrong JSON types are the decoder's 400s.
        for (field, value, msg) in [
            (
                "holderIdentity",
                json!(5),
                "json: cannot unmarshal number into Go struct field LeaseSpec.spec.holderIdentity of type string",
            ),
            (
                "leaseDurationSeconds",
                json!("15"),
                "json: cannot unmarshal string into Go struct field LeaseSpec.spec.leaseDurationSeconds of type int32",
            ),
            (
                "leaseDurationSeconds",
                json!(1.5),
                "json: cannot unmarshal number 1.5 into Go struct field LeaseSpec.spec.leaseDurationSeconds of type int32",
            ),
            (
                "leaseTransitions",
                json!(true),
                "json: cannot unmarshal bool into Go struct field LeaseSpec.spec.leaseTransitions of type int32",
            ),
            (
                "renewTime",
                json!(5),
                "json: cannot unmarshal number into Go struct field LeaseSpec.spec.renewTime of type string",
            ),
        ] {
            let mut bad = good.clone();
            bad["spec"][field] = value;
            let e = check(&leases, &bad, None).expect_err("400");
            assert_eq!(
                (e.code, e.message),
                (
                    400,
                    format!("Lease in version \"v1\" cannot be handled as a Lease: {msg}")
                )
            );
        }
        let mut nulls = good.clone();
        nulls["spec"] = json!({"holderIdentity": null, "leaseDurationSeconds": null});
        assert_eq!(check(&leases, &nulls, None), Ok(()));
    }

    #[test]
    fn names() {
        assert!(qualified_name("cluster.local/nfs-server-provisioner").is_empty());
        assert!(qualified_name("nfs-provisioner").is_empty());
        assert_eq!(
            qualified_name(&format!("/{}", "a".repeat(64))),
            [
                "prefix part must be non-empty",
                "name part must be no more than 63 bytes"
            ]
        );
        assert!(qualified_name("a/b/c")[0].starts_with("a valid label key must consist"));
        assert!(dns1123_subdomain("pvc-1.17f3").is_empty());
        assert_eq!(dns1123_subdomain("a..b").len(), 1);
        assert_eq!(dns1123_subdomain("").len(), 1);
    }
}
