//! The object store: JSON objects keyed by (resource, namespace, name), one global
//! resourceVersion counter (like etcd's revision), the watch-event history, and the write
//! semantics of the API server (create, update, patch, delete with finalizers).

use crate::error::ApiError;
use crate::fault::{Fault, RequestRecord};
use crate::patch::{json_patch, merge_patch, strategic_merge_patch};
use crate::resources::{ResourceType, default_resources};
use crate::selector::Selectors;
use crate::util::{IdGen, now_rfc3339};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::watch;

/// (resource index, namespace or "" for cluster-scoped, name).
pub(crate) type Key = (usize, String, String);

/// The kind of change a history entry records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EventKind {
    Added,
    Modified,
    Deleted,
}

/// One change, as watchers will see it.
#[derive(Clone, Debug)]
pub(crate) struct HistEvent {
    pub rv: u64,
    pub res: usize,
    pub kind: EventKind,
    /// The object after the change (for deletes: the last state, with the deletion's rv).
    pub object: Value,
    /// The object before the change, if it existed.
    pub prev: Option<Value>,
}

/// Which part of an object a write may change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scope {
    /// The main resource: `.status` is kept as stored (for types with a status subresource).
    Main,
    /// The `/status` subresource: only `.status` changes.
    Status,
    /// A test's direct modification: anything but name, namespace and resourceVersion.
    Direct,
}

/// The patch content types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PatchType {
    Merge,
    Strategic,
    Json,
    Apply,
}

impl PatchType {
    pub(crate) fn from_content_type(ct: &str) -> Option<Self> {
        match ct {
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/strategic-merge-patch+json" => Some(PatchType::Strategic),
            "application/json-patch+json" => Some(PatchType::Json),
            "application/apply-patch+yaml" | "application/apply-patch+json" => {
                Some(PatchType::Apply)
            }
            _ => None,
        }
    }
}

/// Outcome of a delete.
#[derive(Clone, Debug)]
pub(crate) enum Deleted {
    /// The object has finalizers: it now carries a deletionTimestamp and stays.
    Pending(Value),
    /// The object is gone (its last state).
    Gone(Value),
}

/// Everything behind the lock.
pub(crate) struct Store {
    pub(crate) resources: Vec<ResourceType>,
    pub(crate) rv: u64,
    pub(crate) objects: BTreeMap<Key, Value>,
    pub(crate) history: VecDeque<HistEvent>,
    /// Watches from a resourceVersion below this get 410 Expired.
    pub(crate) history_floor: u64,
    pub(crate) history_limit: usize,
    pub(crate) faults: Vec<Fault>,
    pub(crate) log: Vec<RequestRecord>,
    pub(crate) bookmark_interval: Option<Duration>,
    ids: IdGen,
}

/// The string at `metadata.FIELD`.
pub(crate) fn meta_str<'a>(v: &'a Value, field: &str) -> Option<&'a str> {
    v.get("metadata")?.get(field)?.as_str()
}

/// `metadata` as a mutable map, created (and the value made an object) if needed.
fn meta_mut(v: &mut Value) -> &mut Map<String, Value> {
    if !v.is_object() {
        *v = json!({});
    }
    let Value::Object(m) = v else {
        unreachable!("made an object above")
    };
    let md = m.entry("metadata").or_insert_with(|| json!({}));
    if !md.is_object() {
        *md = json!({});
    }
    let Value::Object(md) = md else {
        unreachable!("made an object above")
    };
    md
}

fn finalizers(v: &Value) -> Vec<String> {
    v.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|f| f.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn set_or_remove(obj: &mut Value, field: &str, value: Option<Value>) {
    if let Value::Object(m) = obj {
        match value {
            Some(v) => {
                m.insert(field.to_string(), v);
            }
            None => {
                m.remove(field);
            }
        }
    }
}

impl Store {
    pub(crate) fn new() -> Self {
        Store {
            resources: default_resources(),
            rv: 1,
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            history_floor: 1,
            history_limit: 10_000,
            faults: Vec::new(),
            log: Vec::new(),
            bookmark_interval: Some(Duration::from_secs(1)),
            ids: IdGen::new(),
        }
    }

    pub(crate) fn key(&self, res: usize, ns: Option<&str>, name: &str) -> Key {
        let ns = if self.resources[res].namespaced {
            ns.unwrap_or("")
        } else {
            ""
        };
        (res, ns.to_string(), name.to_string())
    }

    pub(crate) fn get(&self, res: usize, ns: Option<&str>, name: &str) -> Option<&Value> {
        self.objects.get(&self.key(res, ns, name))
    }

    /// Objects of `res`, in key order, in `ns` (all namespaces if `None`) matching `sel`.
    pub(crate) fn list(&self, res: usize, ns: Option<&str>, sel: &Selectors) -> Vec<Value> {
        let lo = (res, String::new(), String::new());
        let hi = (res + 1, String::new(), String::new());
        self.objects
            .range(lo..hi)
            .filter(|((_, n, _), v)| ns.is_none_or(|ns| ns == n) && sel.matches(v))
            .map(|(_, v)| v.clone())
            .collect()
    }

    fn err_with(&self, code: u16, res: usize, name: &str, message: String) -> ApiError {
        let rt = &self.resources[res];
        ApiError::new(code, message).with_details(&rt.group, &rt.plural, name)
    }

    pub(crate) fn not_found(&self, res: usize, name: &str) -> ApiError {
        let id = self.resources[res].id();
        self.err_with(404, res, name, format!("{id} \"{name}\" not found"))
    }

    fn conflict(&self, res: usize, name: &str) -> ApiError {
        let id = self.resources[res].id();
        self.err_with(
            409,
            res,
            name,
            format!(
                "Operation cannot be fulfilled on {id} \"{name}\": the object has been modified; \
                 please apply your changes to the latest version and try again"
            ),
        )
    }

    fn invalid(&self, res: usize, name: &str, message: &str) -> ApiError {
        let kind = &self.resources[res].kind;
        self.err_with(
            422,
            res,
            name,
            format!("{kind} \"{name}\" is invalid: {message}"),
        )
    }

    fn emit(&mut self, res: usize, kind: EventKind, object: Value, prev: Option<Value>) {
        self.history.push_back(HistEvent {
            rv: self.rv,
            res,
            kind,
            object,
            prev,
        });
        while self.history.len() > self.history_limit {
            if let Some(ev) = self.history.pop_front() {
                self.history_floor = ev.rv;
            }
        }
    }

    /// Forgets the watch history and moves to a new resourceVersion (with no event), so every
    /// watch, open or resuming, from an earlier version gets 410 Expired; a fresh list works.
    pub(crate) fn compact(&mut self) {
        self.rv += 1;
        self.history.clear();
        self.history_floor = self.rv;
    }

    /// Checks/sets apiVersion and kind, and makes sure `metadata` is an object.
    fn check_type_meta(&self, res: usize, obj: &mut Value) -> Result<(), ApiError> {
        let rt = &self.resources[res];
        let Value::Object(m) = obj else {
            return Err(ApiError::bad_request(
                "the request body is not a JSON object",
            ));
        };
        let api_version = rt.api_version();
        if let Some(av) = m.get("apiVersion").filter(|v| v.as_str() != Some(""))
            && av.as_str() != Some(api_version.as_str())
        {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({av}) does not match the expected API version \
                 ({api_version})"
            )));
        }
        if let Some(k) = m.get("kind").filter(|v| v.as_str() != Some(""))
            && k.as_str() != Some(rt.kind.as_str())
        {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                rt.kind
            )));
        }
        m.insert("apiVersion".into(), json!(api_version));
        m.insert("kind".into(), json!(rt.kind));
        match m.get("metadata") {
            None | Some(Value::Null) => {
                m.insert("metadata".into(), json!({}));
            }
            Some(Value::Object(_)) => {}
            Some(_) => return Err(ApiError::bad_request("metadata is not an object")),
        }
        Ok(())
    }

    /// Creates an object. `direct` (tests' insert) keeps a given uid and creationTimestamp.
    pub(crate) fn create(
        &mut self,
        res: usize,
        url_ns: Option<&str>,
        mut obj: Value,
        direct: bool,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let rt = self.resources[res].clone();
        self.check_type_meta(res, &mut obj)?;
        let body_ns = meta_str(&obj, "namespace")
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        let ns = if rt.namespaced {
            Some(match (url_ns, body_ns) {
                (Some(u), Some(b)) if u != b => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent \
                         on the request",
                    ));
                }
                (Some(u), _) => u.to_string(),
                (None, Some(b)) => b,
                (None, None) => "default".to_string(),
            })
        } else {
            None
        };
        let mut name = meta_str(&obj, "name").unwrap_or("").to_string();
        if name.is_empty() {
            let prefix = meta_str(&obj, "generateName").unwrap_or("").to_string();
            if prefix.is_empty() {
                return Err(self.invalid(
                    res,
                    "",
                    "metadata.name: Required value: name or generateName is required",
                ));
            }
            for _ in 0..100 {
                name = format!("{prefix}{}", self.ids.suffix());
                if self.get(res, ns.as_deref(), &name).is_none() {
                    break;
                }
            }
        }
        if name.contains('/') || name.contains('%') || name == "." || name == ".." {
            return Err(self.invalid(
                res,
                &name,
                "metadata.name: Invalid value: may not contain '/' or '%' or be '.' or '..'",
            ));
        }
        if name.len() > 253 {
            return Err(self.invalid(
                res,
                &name,
                "metadata.name: Invalid value: must be no more than 253 characters",
            ));
        }
        let key = self.key(res, ns.as_deref(), &name);
        if self.objects.contains_key(&key) {
            return Err(self
                .err_with(
                    409,
                    res,
                    &name,
                    format!("{} \"{name}\" already exists", rt.id()),
                )
                .with_reason("AlreadyExists"));
        }
        let uid = self.ids.uid();
        let m = meta_mut(&mut obj);
        m.insert("name".into(), json!(name));
        match &ns {
            Some(ns) => m.insert("namespace".into(), json!(ns)),
            None => m.remove("namespace"),
        };
        if !direct || !m.get("uid").is_some_and(Value::is_string) {
            m.insert("uid".into(), json!(uid));
        }
        if !direct || !m.get("creationTimestamp").is_some_and(Value::is_string) {
            m.insert("creationTimestamp".into(), json!(now_rfc3339()));
        }
        if !direct {
            m.remove("deletionTimestamp");
            m.remove("deletionGracePeriodSeconds");
        }
        m.remove("resourceVersion");
        if !direct {
            crate::validate::check(&rt, &obj, None)?;
        }
        if dry_run {
            return Ok(obj);
        }
        self.rv += 1;
        meta_mut(&mut obj).insert("resourceVersion".into(), json!(self.rv.to_string()));
        self.objects.insert(key, obj.clone());
        self.emit(res, EventKind::Added, obj.clone(), None);
        Ok(obj)
    }

    /// Replaces an object (PUT).
    pub(crate) fn update(
        &mut self,
        res: usize,
        ns: Option<&str>,
        name: &str,
        body: Value,
        scope: Scope,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let current = self
            .get(res, ns, name)
            .cloned()
            .ok_or_else(|| self.not_found(res, name))?;
        self.write(res, current, body, scope, true, dry_run)
    }

    /// Patches an object; apply patches create it when missing. Returns (object, created).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn patch(
        &mut self,
        res: usize,
        ns: Option<&str>,
        name: &str,
        ptype: PatchType,
        patch: &Value,
        scope: Scope,
        dry_run: bool,
    ) -> Result<(Value, bool), ApiError> {
        if ptype != PatchType::Json && !patch.is_object() {
            return Err(ApiError::bad_request("the patch is not a JSON object"));
        }
        let Some(current) = self.get(res, ns, name).cloned() else {
            if ptype == PatchType::Apply && scope == Scope::Main {
                let mut obj = json!({});
                merge_patch(&mut obj, patch);
                if meta_str(&obj, "name").is_some_and(|n| n != name) {
                    return Err(ApiError::bad_request(format!(
                        "the name of the object ({}) does not match the name on the URL ({name})",
                        meta_str(&obj, "name").unwrap_or_default()
                    )));
                }
                meta_mut(&mut obj).insert("name".into(), json!(name));
                return self.create(res, ns, obj, false, dry_run).map(|v| (v, true));
            }
            return Err(self.not_found(res, name));
        };
        let mut cand = current.clone();
        match ptype {
            PatchType::Merge | PatchType::Apply => merge_patch(&mut cand, patch),
            PatchType::Strategic => strategic_merge_patch(&mut cand, patch),
            PatchType::Json => json_patch(&mut cand, patch).map_err(|e| {
                self.err_with(422, res, name, format!("the JSON patch failed: {e}"))
            })?,
        }
        self.write(res, current, cand, scope, true, dry_run)
            .map(|v| (v, false))
    }

    /// A test's direct modification of a stored object.
    pub(crate) fn modify(
        &mut self,
        res: usize,
        ns: Option<&str>,
        name: &str,
        f: impl FnOnce(&mut Value),
    ) -> Result<Value, ApiError> {
        let current = self
            .get(res, ns, name)
            .cloned()
            .ok_or_else(|| self.not_found(res, name))?;
        let mut cand = current.clone();
        f(&mut cand);
        self.write(res, current, cand, Scope::Direct, false, false)
    }

    /// Stores `cand` as the new state of `current`, with the API server's rules: identity and
    /// server-owned metadata kept, resourceVersion precondition, status subresource split, no
    /// new finalizers while deleting, no-op writes not bumping the resourceVersion, and removal
    /// once a deleting object has no finalizers left.
    fn write(
        &mut self,
        res: usize,
        current: Value,
        mut cand: Value,
        scope: Scope,
        check_rv: bool,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let rt = self.resources[res].clone();
        let name = meta_str(&current, "name").unwrap_or_default().to_string();
        let ns = meta_str(&current, "namespace").map(str::to_string);
        self.check_type_meta(res, &mut cand)?;
        if let Some(n) = meta_str(&cand, "name").filter(|n| *n != name) {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
        if rt.namespaced
            && meta_str(&cand, "namespace")
                .is_some_and(|n| !n.is_empty() && Some(n) != ns.as_deref())
        {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the \
                 request",
            ));
        }
        let current_rv = meta_str(&current, "resourceVersion")
            .unwrap_or_default()
            .to_string();
        if check_rv
            && meta_str(&cand, "resourceVersion")
                .is_some_and(|rv| !rv.is_empty() && rv != current_rv)
        {
            return Err(self.conflict(res, &name));
        }
        if rt.status_subresource {
            match scope {
                Scope::Status => {
                    let status = cand.get("status").cloned();
                    cand = current.clone();
                    set_or_remove(&mut cand, "status", status);
                }
                Scope::Main => set_or_remove(&mut cand, "status", current.get("status").cloned()),
                Scope::Direct => {}
            }
        }
        let m = meta_mut(&mut cand);
        m.insert("name".into(), json!(name));
        match &ns {
            Some(ns) => m.insert("namespace".into(), json!(ns)),
            None => m.remove("namespace"),
        };
        if scope != Scope::Direct {
            for f in [
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
            ] {
                match current.get("metadata").and_then(|cm| cm.get(f)) {
                    Some(v) => m.insert(f.into(), v.clone()),
                    None => m.remove(f),
                };
            }
        }
        m.insert("resourceVersion".into(), json!(current_rv));
        let deleting = meta_str(&cand, "deletionTimestamp").is_some();
        if scope != Scope::Direct && deleting {
            let old = finalizers(&current);
            if finalizers(&cand).iter().any(|f| !old.contains(f)) {
                return Err(self.invalid(
                    res,
                    &name,
                    "metadata.finalizers: Forbidden: no new finalizers can be added if the object \
                     is being deleted",
                ));
            }
        }
        // Validation as the API server's for the main resource; `/status` writes are checked
        // differently there (not modelled) and tests' direct writes not at all.
        if scope == Scope::Main {
            crate::validate::check(&rt, &cand, Some(&current))?;
        }
        if cand == current || dry_run {
            return Ok(cand);
        }
        self.rv += 1;
        meta_mut(&mut cand).insert("resourceVersion".into(), json!(self.rv.to_string()));
        let key = self.key(res, ns.as_deref(), &name);
        if deleting && finalizers(&cand).is_empty() {
            self.objects.remove(&key);
            self.emit(res, EventKind::Deleted, cand.clone(), Some(current));
        } else {
            self.objects.insert(key, cand.clone());
            self.emit(res, EventKind::Modified, cand.clone(), Some(current));
        }
        Ok(cand)
    }

    /// Deletes an object: objects with finalizers get a deletionTimestamp and stay.
    /// `options` is the request's DeleteOptions (preconditions are honoured).
    pub(crate) fn delete(
        &mut self,
        res: usize,
        ns: Option<&str>,
        name: &str,
        options: &Value,
        dry_run: bool,
    ) -> Result<Deleted, ApiError> {
        let key = self.key(res, ns, name);
        let current = self
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| self.not_found(res, name))?;
        if let Some(pre) = options.get("preconditions") {
            for (field, label) in [("uid", "UID"), ("resourceVersion", "ResourceVersion")] {
                if let Some(want) = pre.get(field).and_then(Value::as_str) {
                    let actual = meta_str(&current, field).unwrap_or_default();
                    if want != actual {
                        return Err(self.err_with(
                            409,
                            res,
                            name,
                            format!(
                                "Precondition failed: {label} in precondition: {want}, {label} in \
                                 object meta: {actual}"
                            ),
                        ));
                    }
                }
            }
        }
        if !finalizers(&current).is_empty() {
            if meta_str(&current, "deletionTimestamp").is_some() {
                return Ok(Deleted::Pending(current));
            }
            let mut cand = current.clone();
            let m = meta_mut(&mut cand);
            m.insert("deletionTimestamp".into(), json!(now_rfc3339()));
            m.insert("deletionGracePeriodSeconds".into(), json!(0));
            if dry_run {
                return Ok(Deleted::Pending(cand));
            }
            self.rv += 1;
            meta_mut(&mut cand).insert("resourceVersion".into(), json!(self.rv.to_string()));
            self.objects.insert(key, cand.clone());
            self.emit(res, EventKind::Modified, cand.clone(), Some(current));
            return Ok(Deleted::Pending(cand));
        }
        if dry_run {
            return Ok(Deleted::Gone(current));
        }
        self.rv += 1;
        let mut obj = current.clone();
        meta_mut(&mut obj).insert("resourceVersion".into(), json!(self.rv.to_string()));
        self.objects.remove(&key);
        self.emit(res, EventKind::Deleted, obj.clone(), Some(current));
        Ok(Deleted::Gone(obj))
    }
}

/// The state shared by the server task, watch streams and the test handle.
pub(crate) struct Shared {
    store: Mutex<Store>,
    /// Carries the latest resourceVersion; watch streams wake on it.
    pub(crate) rv_tx: watch::Sender<u64>,
    /// Bumped to end every open watch stream.
    pub(crate) stop_tx: watch::Sender<u64>,
    /// Bumped on every write and every request (for `wait_for`).
    pub(crate) activity_tx: watch::Sender<u64>,
}

impl Shared {
    pub(crate) fn new() -> Self {
        let store = Store::new();
        let rv = store.rv;
        Shared {
            store: Mutex::new(store),
            rv_tx: watch::Sender::new(rv),
            stop_tx: watch::Sender::new(0),
            activity_tx: watch::Sender::new(0),
        }
    }

    /// Locks the store (a panic in a test's closure does not poison it for the server).
    pub(crate) fn lock(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs a write and wakes watchers if the resourceVersion moved.
    pub(crate) fn write<R>(&self, f: impl FnOnce(&mut Store) -> R) -> R {
        let mut st = self.lock();
        let before = st.rv;
        let r = f(&mut st);
        let after = st.rv;
        drop(st);
        if after != before {
            self.rv_tx.send_replace(after);
            self.activity_tx.send_modify(|v| *v += 1);
        }
        r
    }

    pub(crate) fn record(&self, rec: RequestRecord) {
        self.lock().log.push(rec);
        self.activity_tx.send_modify(|v| *v += 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pvc(name: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
               "metadata": {"name": name, "namespace": "ns"},
               "spec": {"storageClassName": "nfs"}})
    }

    #[test]
    fn create_update_delete_with_finalizers() {
        let mut st = Store::new();
        let res = 0;
        let a = st
            .create(res, Some("ns"), pvc("a"), false, false)
            .expect("create");
        assert_eq!(meta_str(&a, "resourceVersion"), Some("2"));
        assert!(meta_str(&a, "uid").is_some());
        let e = st
            .create(res, Some("ns"), pvc("a"), false, false)
            .expect_err("dup");
        assert_eq!((e.code, e.reason.as_str()), (409, "AlreadyExists"));

        // Stale resourceVersion conflicts; no-op does not bump.
        let mut stale = a.clone();
        stale["metadata"]["resourceVersion"] = json!("1");
        assert_eq!(
            st.update(res, Some("ns"), "a", stale, Scope::Main, false)
                .expect_err("stale")
                .code,
            409
        );
        let same = st
            .update(res, Some("ns"), "a", a.clone(), Scope::Main, false)
            .expect("noop");
        assert_eq!(meta_str(&same, "resourceVersion"), Some("2"));

        // Main-resource writes keep status; status writes change only status.
        let mut with_status = a.clone();
        with_status["status"] = json!({"phase": "Bound"});
        with_status["metadata"]["labels"] = json!({"x": "1"});
        let v = st
            .update(
                res,
                Some("ns"),
                "a",
                with_status.clone(),
                Scope::Main,
                false,
            )
            .expect("update");
        assert!(v.get("status").is_none());
        assert_eq!(v["metadata"]["labels"]["x"], json!("1"));
        let (v, _) = st
            .patch(
                res,
                Some("ns"),
                "a",
                PatchType::Merge,
                &json!({"status": {"phase": "Bound"}, "spec": {"y": 2}}),
                Scope::Status,
                false,
            )
            .expect("status patch");
        assert_eq!(v["status"]["phase"], json!("Bound"));
        assert!(v["spec"].get("y").is_none());

        st.patch(
            res,
            Some("ns"),
            "a",
            PatchType::Merge,
            &json!({"metadata": {"finalizers": ["f"]}}),
            Scope::Main,
            false,
        )
        .expect("finalizer");
        let Deleted::Pending(p) = st
            .delete(res, Some("ns"), "a", &json!({}), false)
            .expect("delete")
        else {
            panic!("expected pending")
        };
        assert!(meta_str(&p, "deletionTimestamp").is_some());
        let e = st
            .patch(
                res,
                Some("ns"),
                "a",
                PatchType::Merge,
                &json!({"metadata": {"finalizers": ["f", "g"]}}),
                Scope::Main,
                false,
            )
            .expect_err("no new finalizers");
        assert_eq!(e.code, 422);
        st.patch(
            res,
            Some("ns"),
            "a",
            PatchType::Json,
            &json!([{"op": "remove", "path": "/metadata/finalizers"}]),
            Scope::Main,
            false,
        )
        .expect("remove finalizer");
        assert!(st.get(res, Some("ns"), "a").is_none());
        let kinds: Vec<_> = st.history.iter().map(|e| e.kind).collect();
        assert_eq!(
            kinds,
            [
                EventKind::Added,
                EventKind::Modified,
                EventKind::Modified,
                EventKind::Modified,
                EventKind::Modified,
                EventKind::Deleted
            ]
        );
    }

    #[test]
    fn history_limit_raises_floor() {
        let mut st = Store::new();
        st.history_limit = 2;
        for n in ["a", "b", "c", "d"] {
            st.create(0, Some("ns"), pvc(n), false, false)
                .expect("create");
        }
        assert_eq!(st.history.len(), 2);
        assert_eq!(st.history_floor, 3);
        st.compact();
        assert_eq!(st.history_floor, st.rv);
    }

    #[test]
    fn generate_name_and_apply_create() {
        let mut st = Store::new();
        let ev = crate::resources::resolve(&st.resources, "events").expect("events");
        let e = st
            .create(
                ev,
                Some("d"),
                json!({"metadata": {"generateName": "pvc-a."}, "reason": "X",
                       "involvedObject": {"namespace": "d"}}),
                false,
                false,
            )
            .expect("create");
        assert!(meta_str(&e, "name").is_some_and(|n| n.starts_with("pvc-a.") && n.len() == 11));
        let (o, created) = st
            .patch(
                0,
                Some("ns"),
                "z",
                PatchType::Apply,
                &pvc("z"),
                Scope::Main,
                false,
            )
            .expect("apply");
        assert!(created);
        assert_eq!(meta_str(&o, "namespace"), Some("ns"));
    }
}
