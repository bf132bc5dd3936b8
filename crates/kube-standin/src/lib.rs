//! An in-process stand-in of the Kubernetes API server that speaks real HTTP on 127.0.0.1, so
//! a controller built on `kube` can run its whole loop (list, watch, create, patch, delete,
//! leader election) in a test without a cluster.
//!
//! It is schema-agnostic: objects are JSON values stored under (resource, namespace, name),
//! with one global resourceVersion counter like etcd's revision and a history of changes that
//! watches replay. The served resource types are a table ([`ResourceType`]); by default:
//! `persistentvolumeclaims`, `persistentvolumes`, `services`, `events`, `configmaps`, `pods`
//! (core `v1`), `storageclasses` (`storage.k8s.io/v1`), `events` (`events.k8s.io/v1`) and
//! `leases` (`coordination.k8s.io/v1`). More can be added with [`StandIn::register`].
//!
//! Semantics follow the API server where a controller can observe them:
//! - list (also across namespaces) with `labelSelector` / `fieldSelector`, one page, the list's
//!   `metadata.resourceVersion` set;
//! - watch from a resourceVersion (`ADDED`/`MODIFIED`/`DELETED`, `BOOKMARK`s when allowed,
//!   `sendInitialEvents`, `timeoutSeconds`), a 410 `Expired` `ERROR` event when the version is
//!   older than the kept history, selector transitions seen as `ADDED`/`DELETED`;
//! - create (201, 409 `AlreadyExists`, uid, creationTimestamp, `generateName`);
//! - replace (409 `Conflict` on a stale `metadata.resourceVersion`);
//! - patch: merge, strategic (as merge), JSON patch, server-side apply (as merge, creating);
//! - the `status` subresource: main-resource writes keep `.status`, `/status` writes change only
//!   `.status`;
//! - delete: objects with finalizers get `deletionTimestamp` and go once their finalizers are
//!   emptied; no new finalizers while deleting; delete preconditions; `dryRun=All`;
//! - writes that change nothing keep the resourceVersion and emit no event;
//! - the API server's validation of Events (core and `events.k8s.io`), PersistentVolumes,
//!   PersistentVolumeClaim updates and Leases written through the API: a 422 `Invalid` with
//!   its wording and `details.causes` (direct inserts and modifications are not checked);
//! - errors are `Status` objects that `kube` parses into `kube::Error::Api`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use kube_standin::{StandIn, Verb};
//! use serde_json::json;
//!
//! let api = StandIn::start().await;
//! api.insert(json!({
//!     "apiVersion": "v1", "kind": "PersistentVolumeClaim",
//!     "metadata": {"name": "data", "namespace": "default"},
//!     "spec": {"storageClassName": "nfs"},
//! }))?;
//! // A kube client: kube::Client::try_from(kube::Config::new(api.url().parse()?))?
//! api.fail(Verb::Create, "persistentvolumes", 500, 1);
//! // ... run the controller ...
//! let pv = api
//!     .wait_for(std::time::Duration::from_secs(10), |s| {
//!         s.list("persistentvolumes").into_iter().next()
//!     })
//!     .await;
//! # let _ = pv;
//! # Ok(())
//! # }
//! ```

mod error;
mod fault;
mod patch;
mod resources;
mod selector;
mod server;
mod store;
mod util;
mod validate;

pub use error::ApiError;
pub use fault::{Fault, RequestRecord, Verb};
pub use resources::ResourceType;

use resources::resolve;
use selector::Selectors;
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use store::{Deleted, Shared, meta_str};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Aborts the server task (and with it every connection and watch) when the last handle goes.
struct ServerGuard(JoinHandle<()>);

impl Drop for ServerGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A running stand-in API server. Clones share the server; it stops when the last is dropped.
///
/// Resource arguments of the direct-access methods name a served type by `plural`
/// (`"persistentvolumeclaims"`; the bare `"events"` is the core one), by `plural.group`
/// (`"events.events.k8s.io"`, `"leases.coordination.k8s.io"`) or by kind
/// (`"PersistentVolume"`). An unknown name panics (it is a bug in the test).
#[derive(Clone)]
pub struct StandIn {
    shared: Arc<Shared>,
    addr: SocketAddr,
    _server: Arc<ServerGuard>,
}

impl StandIn {
    /// Binds 127.0.0.1 on a free port and serves in a background task.
    ///
    /// # Panics
    /// If no loopback port can be bound; see [`StandIn::try_start`].
    pub async fn start() -> StandIn {
        match Self::try_start().await {
            Ok(s) => s,
            Err(e) => panic!("kube-standin: binding 127.0.0.1:0 failed: {e}"),
        }
    }

    /// Like [`StandIn::start`], returning the bind error.
    pub async fn try_start() -> std::io::Result<StandIn> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new());
        let task = tokio::spawn(server::serve(listener, shared.clone()));
        Ok(StandIn {
            shared,
            addr,
            _server: Arc::new(ServerGuard(task)),
        })
    }

    /// `http://127.0.0.1:PORT`, for `kube::Config::new(url.parse()?)`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn res(&self, resource: &str) -> usize {
        let st = self.shared.lock();
        match resolve(&st.resources, resource) {
            Some(r) => r,
            None => panic!("kube-standin: unknown resource {resource:?}"),
        }
    }

    /// Serves one more resource type (replacing one with the same group, version and plural).
    pub fn register(&self, rt: ResourceType) {
        let mut st = self.shared.lock();
        match st
            .resources
            .iter()
            .position(|r| r.group == rt.group && r.version == rt.version && r.plural == rt.plural)
        {
            Some(i) => st.resources[i] = rt,
            None => st.resources.push(rt),
        }
    }

    /// Stores an object as if created through the API (an `ADDED` event), its type found from
    /// `apiVersion` and `kind`. Keeps a given uid and creationTimestamp (and status), assigns
    /// them if missing, sets resourceVersion; a namespaced object without a namespace goes to
    /// `default`. Returns the stored object.
    pub fn insert(&self, obj: Value) -> Result<Value, ApiError> {
        let av = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
        let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
        let res = {
            let st = self.shared.lock();
            st.resources
                .iter()
                .position(|r| r.api_version() == av && r.kind == kind)
        };
        let Some(res) = res else {
            return Err(ApiError::bad_request(format!(
                "no served resource has apiVersion {av:?} and kind {kind:?}"
            )));
        };
        self.shared
            .write(|st| st.create(res, None, obj, true, false))
    }

    /// The stored object, if any (`namespace` is ignored for cluster-scoped types).
    pub fn get(&self, resource: &str, namespace: Option<&str>, name: &str) -> Option<Value> {
        let res = self.res(resource);
        self.shared.lock().get(res, namespace, name).cloned()
    }

    /// Every stored object of a type, across namespaces, ordered by namespace and name.
    pub fn list(&self, resource: &str) -> Vec<Value> {
        let res = self.res(resource);
        self.shared.lock().list(res, None, &Selectors::default())
    }

    /// The stored objects of a type in one namespace, ordered by name.
    pub fn list_namespaced(&self, resource: &str, namespace: &str) -> Vec<Value> {
        let res = self.res(resource);
        self.shared
            .lock()
            .list(res, Some(namespace), &Selectors::default())
    }

    /// Deletes as a client's DELETE would: an object with finalizers gets a deletionTimestamp
    /// and is returned (`Some`), otherwise it is removed (`None`).
    pub fn delete(
        &self,
        resource: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<Value>, ApiError> {
        let res = self.res(resource);
        let d = self
            .shared
            .write(|st| st.delete(res, namespace, name, &serde_json::json!({}), false))?;
        Ok(match d {
            Deleted::Pending(v) => Some(v),
            Deleted::Gone(_) => None,
        })
    }

    /// Changes a stored object through a closure (status, spec, metadata: anything but name,
    /// namespace and resourceVersion). If it changed, the resourceVersion is bumped and a
    /// `MODIFIED` event emitted, or `DELETED` when it carries a deletionTimestamp and no
    /// finalizers are left. Returns the new state.
    pub fn modify(
        &self,
        resource: &str,
        namespace: Option<&str>,
        name: &str,
        f: impl FnOnce(&mut Value),
    ) -> Result<Value, ApiError> {
        let res = self.res(resource);
        self.shared.write(|st| st.modify(res, namespace, name, f))
    }

    /// Sets `.status` of a stored object (as a controller's status update would).
    pub fn update_status(
        &self,
        resource: &str,
        namespace: Option<&str>,
        name: &str,
        status: Value,
    ) -> Result<Value, ApiError> {
        self.modify(resource, namespace, name, |v| {
            if let Value::Object(m) = v {
                m.insert("status".to_string(), status);
            }
        })
    }

    /// The current (latest) resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.lock().rv
    }

    /// Every stored Event as the core/v1 API shows it, oldest first: the API server keeps one
    /// store for both groups, so an events.k8s.io/v1 Event is listed here with its fields
    /// under their core names (`regarding` as `involvedObject`, `note` as `message`,
    /// `reportingController` as `reportingComponent`, the series count as `count`).
    pub fn events(&self) -> Vec<Value> {
        let mut events: Vec<Value> = self.list("events");
        for mut e in self.list("events.events.k8s.io") {
            if let Value::Object(m) = &mut e {
                for (from, to) in [
                    ("regarding", "involvedObject"),
                    ("note", "message"),
                    ("reportingController", "reportingComponent"),
                    ("related", "related"),
                ] {
                    if let Some(v) = m.remove(from) {
                        m.insert(to.into(), v);
                    }
                }
                let count = m
                    .get("series")
                    .and_then(|s| s.get("count"))
                    .cloned()
                    .unwrap_or(serde_json::json!(1));
                m.insert("count".into(), count);
                m.insert("apiVersion".into(), serde_json::json!("v1"));
            }
            events.push(e);
        }
        events.sort_by_key(|e| {
            meta_str(e, "resourceVersion")
                .and_then(|rv| rv.parse::<u64>().ok())
                .unwrap_or(0)
        });
        events
    }

    /// The `reason` of every stored Event (core and events.k8s.io), oldest first.
    pub fn event_reasons(&self) -> Vec<String> {
        let mut events: Vec<Value> = self.list("events");
        events.extend(self.list("events.events.k8s.io"));
        events.sort_by_key(|e| {
            meta_str(e, "resourceVersion")
                .and_then(|rv| rv.parse::<u64>().ok())
                .unwrap_or(0)
        });
        events
            .iter()
            .filter_map(|e| e.get("reason").and_then(Value::as_str).map(str::to_string))
            .collect()
    }

    /// Every HTTP request answered so far, in order of completion (a watch is logged when it
    /// starts streaming).
    pub fn request_log(&self) -> Vec<RequestRecord> {
        self.shared.lock().log.clone()
    }

    /// Forgets the request log.
    pub fn clear_request_log(&self) {
        self.shared.lock().log.clear();
    }

    /// Makes the next `times` requests of `verb` on `resource` fail with HTTP `status`
    /// (see [`Fault`] for name/namespace filters and failing after the write).
    pub fn fail(&self, verb: Verb, resource: &str, status: u16, times: usize) {
        self.inject(Fault::new(verb, resource).status(status).times(times));
    }

    /// Adds a fault rule; rules are checked in the order added.
    ///
    /// # Panics
    /// If the rule names an unknown resource.
    pub fn inject(&self, fault: Fault) {
        if let Some(r) = &fault.resource {
            self.res(r.split('/').next().unwrap_or(r));
        }
        self.shared.lock().faults.push(fault);
    }

    /// Removes every fault rule.
    pub fn clear_faults(&self) {
        self.shared.lock().faults.clear();
    }

    /// Forgets the watch history (as an etcd compaction) and moves the resourceVersion on by
    /// one without an event: every watch from an earlier resourceVersion, open or resuming,
    /// gets a 410 `Expired` ERROR event and ends, so clients must re-list.
    pub fn compact_history(&self) {
        self.shared.write(|st| st.compact());
    }

    /// How many changes the watch history keeps (default 10 000).
    pub fn set_history_limit(&self, limit: usize) {
        let mut st = self.shared.lock();
        st.history_limit = limit;
        while st.history.len() > limit {
            if let Some(ev) = st.history.pop_front() {
                st.history_floor = ev.rv;
            }
        }
    }

    /// How often a watch that allows bookmarks gets a `BOOKMARK` (when its resourceVersion
    /// moved); `None` sends none. Default 1 s. Applies to watches started afterwards.
    pub fn set_bookmark_interval(&self, interval: Option<Duration>) {
        self.shared.lock().bookmark_interval = interval;
    }

    /// Ends every open watch stream (as an API server restart would); clients re-watch.
    pub fn end_watches(&self) {
        self.shared.stop_tx.send_modify(|v| *v += 1);
    }

    /// Evaluates `f` now and after every change or request until it returns `Some`, or until
    /// `timeout` passes (then `f`'s last answer, `None`).
    pub async fn wait_for<T>(
        &self,
        timeout: Duration,
        mut f: impl FnMut(&StandIn) -> Option<T>,
    ) -> Option<T> {
        let mut rx = self.shared.activity_tx.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            rx.borrow_and_update();
            if let Some(t) = f(self) {
                return Some(t);
            }
            tokio::select! {
                changed = rx.changed() => {
                    if changed.is_err() {
                        return f(self);
                    }
                }
                _ = tokio::time::sleep_until(deadline) => return f(self),
            }
        }
    }
}
