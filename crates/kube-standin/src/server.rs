//! The HTTP side: accept loop, routing of API paths to store operations, and watch streams
//! (chunked newline-delimited JSON).

use crate::error::{ApiError, success_status};
use crate::fault::{RequestRecord, Verb};
use crate::resources::parse_path;
use crate::selector::Selectors;
use crate::store::{Deleted, EventKind, PatchType, Scope, Shared, meta_str};
use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Largest request body accepted.
const MAX_BODY: usize = 16 << 20;
/// Watch length when the client gives no timeoutSeconds.
const DEFAULT_WATCH_SECONDS: u64 = 1800;
/// Cap on timeoutSeconds (keeps the deadline arithmetic in range).
const MAX_WATCH_SECONDS: u64 = 7 * 86_400;

/// Accepts connections until the task is aborted (which also drops every connection).
pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let shared = shared.clone();
                    conns.spawn(async move {
                        let svc = service_fn(move |req| {
                            let shared = shared.clone();
                            async move { Ok::<_, Infallible>(handle(&shared, req).await) }
                        });
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    });
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

fn respond(code: u16, body: Body) -> Response<Body> {
    let mut resp = Response::new(body);
    *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

fn json_response(code: u16, v: &Value) -> Response<Body> {
    let bytes = serde_json::to_vec(v).unwrap_or_default();
    respond(code, Full::new(Bytes::from(bytes)).boxed_unsync())
}

fn error_response(e: &ApiError) -> Response<Body> {
    json_response(e.code, &e.to_status())
}

async fn handle(shared: &Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let content_type = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.split(';').next())
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty());
    let (body, resp, verb) = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(c) => {
            let body = c.to_bytes();
            let (resp, verb) = route(
                shared,
                &method,
                &path,
                &query,
                content_type.as_deref(),
                &body,
            );
            (body, resp, verb)
        }
        Err(e) => {
            let err = if e.is::<LengthLimitError>() {
                ApiError::new(413, "the request body is too large")
            } else {
                ApiError::bad_request(format!("reading the request body failed: {e}"))
            };
            (Bytes::new(), error_response(&err), None)
        }
    };
    shared.record(RequestRecord {
        method: method.to_string(),
        path,
        query,
        verb,
        content_type,
        body: String::from_utf8_lossy(&body).into_owned(),
        status: resp.status().as_u16(),
    });
    resp
}

fn flag(params: &HashMap<String, String>, key: &str) -> bool {
    params.get(key).is_some_and(|v| v == "true" || v == "1")
}

fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))
}

fn route(
    shared: &Arc<Shared>,
    method: &Method,
    path: &str,
    query: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> (Response<Body>, Option<Verb>) {
    match path {
        "/version" => {
            return (
                json_response(
                    200,
                    &json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-kube-standin",
                            "platform": "linux/amd64"}),
                ),
                None,
            );
        }
        "/healthz" | "/livez" | "/readyz" => {
            return (
                respond(200, Full::new(Bytes::from_static(b"ok")).boxed_unsync()),
                None,
            );
        }
        _ => {}
    }
    let params: HashMap<String, String> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let target = {
        let st = shared.lock();
        parse_path(&st.resources, path)
    };
    let Some(target) = target else {
        return (
            error_response(&ApiError::new(
                404,
                "the server could not find the requested resource",
            )),
            None,
        );
    };
    let verb = match (method, target.name.is_some()) {
        (&Method::GET, false) if flag(&params, "watch") => Verb::Watch,
        (&Method::GET, false) => Verb::List,
        (&Method::GET, true) => Verb::Get,
        (&Method::POST, false) => Verb::Create,
        (&Method::PUT, true) => Verb::Update,
        (&Method::PATCH, true) => Verb::Patch,
        (&Method::DELETE, true) => Verb::Delete,
        (&Method::DELETE, false) => Verb::DeleteCollection,
        _ => {
            return (
                error_response(&ApiError::new(
                    405,
                    "the server does not allow this method on the requested resource",
                )),
                None,
            );
        }
    };
    let fault = {
        let mut st = shared.lock();
        let table = st.resources.clone();
        let hit = st
            .faults
            .iter()
            .position(|f| f.times > 0 && f.matches(&table, verb, &target));
        hit.map(|i| {
            let f = st.faults[i].clone();
            st.faults[i].times -= 1;
            if st.faults[i].times == 0 {
                st.faults.remove(i);
            }
            f
        })
    };
    if let Some(f) = fault.as_ref().filter(|f| !f.after_commit) {
        return (error_response(&f.error(verb)), Some(verb));
    }
    let resp = match serve_verb(shared, verb, &target, &params, content_type, body) {
        Ok(resp) => resp,
        Err(e) => error_response(&e),
    };
    match fault {
        Some(f) => (error_response(&f.error(verb)), Some(verb)),
        None => (resp, Some(verb)),
    }
}

fn serve_verb(
    shared: &Arc<Shared>,
    verb: Verb,
    target: &crate::resources::Target,
    params: &HashMap<String, String>,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Response<Body>, ApiError> {
    let res = target.res;
    let ns = target.namespace.as_deref();
    let name = target.name.as_deref().unwrap_or_default();
    let rt = shared.lock().resources[res].clone();
    let scope = if target.subresource.is_some() {
        Scope::Status
    } else {
        Scope::Main
    };
    let dry_run = match params.get("dryRun").map(String::as_str) {
        None | Some("") => false,
        Some("All") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "unsupported dryRun value {other:?}"
            )));
        }
    };
    if rt.namespaced && ns.is_none() && !matches!(verb, Verb::List | Verb::Watch) {
        return Err(ApiError::new(
            405,
            "the server does not allow this method on the requested resource",
        ));
    }
    let selectors = || {
        Selectors::parse(
            params.get("labelSelector").map(String::as_str),
            params.get("fieldSelector").map(String::as_str),
        )
        .map_err(ApiError::bad_request)
    };
    let json_body = |body: &[u8]| -> Result<Value, ApiError> {
        match content_type {
            None | Some("application/json") => parse_json(body),
            Some(other) => Err(ApiError::new(
                415,
                format!(
                    "the body of the request was in an unknown format - accepted media types include: application/json (got {other})"
                ),
            )),
        }
    };
    match verb {
        Verb::List => {
            let sel = selectors()?;
            if params.get("continue").is_some_and(|c| !c.is_empty()) {
                return Err(ApiError::bad_request("continue key is not valid"));
            }
            let st = shared.lock();
            let items = st.list(res, ns, &sel);
            Ok(json_response(
                200,
                &json!({
                    "kind": format!("{}List", rt.kind),
                    "apiVersion": rt.api_version(),
                    "metadata": {"resourceVersion": st.rv.to_string()},
                    "items": items,
                }),
            ))
        }
        Verb::Watch => start_watch(shared, res, ns, selectors()?, params),
        Verb::Get => {
            let st = shared.lock();
            match st.get(res, ns, name) {
                Some(v) => Ok(json_response(200, v)),
                None => Err(st.not_found(res, name)),
            }
        }
        Verb::Create => {
            let obj = json_body(body)?;
            let v = shared.write(|st| st.create(res, ns, obj, false, dry_run))?;
            Ok(json_response(201, &v))
        }
        Verb::Update => {
            let obj = json_body(body)?;
            let v = shared.write(|st| st.update(res, ns, name, obj, scope, dry_run))?;
            Ok(json_response(200, &v))
        }
        Verb::Patch => {
            let ptype = content_type
                .and_then(PatchType::from_content_type)
                .ok_or_else(|| {
                    ApiError::new(
                        415,
                        format!(
                            "the body of the request was in an unknown format - accepted media \
                             types include: application/json-patch+json, \
                             application/merge-patch+json, application/apply-patch+yaml, \
                             application/strategic-merge-patch+json (got {})",
                            content_type.unwrap_or("none")
                        ),
                    )
                })?;
            if ptype == PatchType::Apply && params.get("fieldManager").is_none_or(String::is_empty)
            {
                return Err(ApiError::new(
                    422,
                    "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is \
                     required for apply patch",
                ));
            }
            let patch = parse_json(body)?;
            let (v, created) =
                shared.write(|st| st.patch(res, ns, name, ptype, &patch, scope, dry_run))?;
            Ok(json_response(if created { 201 } else { 200 }, &v))
        }
        Verb::Delete => {
            let options = if body.iter().all(u8::is_ascii_whitespace) {
                json!({})
            } else {
                parse_json(body)?
            };
            match shared.write(|st| st.delete(res, ns, name, &options, dry_run))? {
                Deleted::Pending(v) => Ok(json_response(200, &v)),
                Deleted::Gone(v) => Ok(json_response(
                    200,
                    &success_status(
                        &rt.group,
                        &rt.plural,
                        name,
                        meta_str(&v, "uid").unwrap_or_default(),
                    ),
                )),
            }
        }
        Verb::DeleteCollection => {
            let sel = selectors()?;
            let options = if body.iter().all(u8::is_ascii_whitespace) {
                json!({})
            } else {
                parse_json(body)?
            };
            let items = shared.write(|st| {
                let names: Vec<String> = st
                    .list(res, ns, &sel)
                    .iter()
                    .filter_map(|v| meta_str(v, "name").map(str::to_string))
                    .collect();
                names
                    .iter()
                    .filter_map(|n| st.delete(res, ns, n, &options, dry_run).ok())
                    .map(|d| match d {
                        Deleted::Pending(v) | Deleted::Gone(v) => v,
                    })
                    .collect::<Vec<_>>()
            });
            let rv = shared.lock().rv;
            Ok(json_response(
                200,
                &json!({
                    "kind": format!("{}List", rt.kind),
                    "apiVersion": rt.api_version(),
                    "metadata": {"resourceVersion": rv.to_string()},
                    "items": items,
                }),
            ))
        }
    }
}

fn line(v: &Value) -> Bytes {
    let mut b = serde_json::to_vec(v).unwrap_or_default();
    b.push(b'\n');
    Bytes::from(b)
}

fn event_line(ty: &str, obj: &Value) -> Bytes {
    line(&json!({"type": ty, "object": obj}))
}

fn bookmark_line(kind: &str, api_version: &str, rv: u64, initial_end: bool) -> Bytes {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    line(&json!({
        "type": "BOOKMARK",
        "object": {"kind": kind, "apiVersion": api_version, "metadata": meta},
    }))
}

fn expired_line(rv: u64, floor: u64) -> Bytes {
    let e = ApiError::new(410, format!("too old resource version: {rv} ({floor})"));
    event_line("ERROR", &e.to_status())
}

/// Which objects a watch sees.
struct WatchFilter {
    res: usize,
    namespace: Option<String>,
    selectors: Selectors,
}

impl WatchFilter {
    fn matches(&self, v: &Value) -> bool {
        self.namespace
            .as_deref()
            .is_none_or(|ns| meta_str(v, "namespace") == Some(ns))
            && self.selectors.matches(v)
    }
}

/// State of one watch stream, advanced by `next_chunk`.
struct WatchState {
    shared: Arc<Shared>,
    filter: WatchFilter,
    kind: String,
    api_version: String,
    /// Every history entry up to here has been looked at.
    last_rv: u64,
    pending: VecDeque<Bytes>,
    done: bool,
    deadline: Instant,
    rv_rx: watch::Receiver<u64>,
    stop_rx: watch::Receiver<u64>,
    bookmark_interval: Option<Duration>,
    next_bookmark: Instant,
    last_bookmark: u64,
}

impl WatchState {
    /// Queues the history entries after `last_rv` that this watch sees.
    fn drain(&mut self) {
        let st = self.shared.lock();
        if self.last_rv < st.history_floor {
            self.pending
                .push_back(expired_line(self.last_rv, st.history_floor));
            self.done = true;
            return;
        }
        let start = st.history.partition_point(|e| e.rv <= self.last_rv);
        for ev in st.history.range(start..) {
            if ev.res != self.filter.res {
                continue;
            }
            let now = self.filter.matches(&ev.object);
            let before = ev.prev.as_ref().is_some_and(|p| self.filter.matches(p));
            let ty = match ev.kind {
                EventKind::Added => now.then_some("ADDED"),
                EventKind::Modified => match (before, now) {
                    (true, true) => Some("MODIFIED"),
                    (false, true) => Some("ADDED"),
                    (true, false) => Some("DELETED"),
                    (false, false) => None,
                },
                EventKind::Deleted => (now || before).then_some("DELETED"),
            };
            if let Some(ty) = ty {
                self.pending.push_back(event_line(ty, &ev.object));
            }
        }
        self.last_rv = self.last_rv.max(st.rv);
    }

    async fn next_chunk(mut self) -> Option<(Bytes, Self)> {
        loop {
            if let Some(b) = self.pending.pop_front() {
                return Some((b, self));
            }
            if self.done {
                return None;
            }
            self.rv_rx.borrow_and_update();
            self.drain();
            if !self.pending.is_empty() || self.done {
                continue;
            }
            let bookmark_at = self.next_bookmark;
            tokio::select! {
                changed = self.rv_rx.changed() => {
                    if changed.is_err() {
                        self.done = true;
                    }
                }
                _ = self.stop_rx.changed() => self.done = true,
                _ = tokio::time::sleep_until(self.deadline) => self.done = true,
                _ = tokio::time::sleep_until(bookmark_at), if self.bookmark_interval.is_some() => {
                    self.next_bookmark =
                        Instant::now() + self.bookmark_interval.unwrap_or(Duration::from_secs(1));
                    if self.last_rv > self.last_bookmark {
                        self.last_bookmark = self.last_rv;
                        self.pending.push_back(bookmark_line(
                            &self.kind,
                            &self.api_version,
                            self.last_rv,
                            false,
                        ));
                    }
                }
            }
        }
    }
}

fn start_watch(
    shared: &Arc<Shared>,
    res: usize,
    ns: Option<&str>,
    selectors: Selectors,
    params: &HashMap<String, String>,
) -> Result<Response<Body>, ApiError> {
    let timeout = match params.get("timeoutSeconds") {
        Some(t) => t
            .parse::<u64>()
            .map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds {t:?}")))?,
        None => 0,
    };
    let timeout = if timeout == 0 {
        DEFAULT_WATCH_SECONDS
    } else {
        timeout.min(MAX_WATCH_SECONDS)
    };
    let bookmarks = flag(params, "allowWatchBookmarks");
    let send_initial = flag(params, "sendInitialEvents");
    let rv_param = params
        .get("resourceVersion")
        .map(String::as_str)
        .unwrap_or("");
    let filter = WatchFilter {
        res,
        namespace: ns.map(str::to_string),
        selectors,
    };
    let st = shared.lock();
    let rt = st.resources[res].clone();
    let mut pending = VecDeque::new();
    let mut done = false;
    let last_rv = if send_initial || rv_param.is_empty() || rv_param == "0" {
        for obj in st.list(res, ns, &filter.selectors) {
            pending.push_back(event_line("ADDED", &obj));
        }
        if send_initial {
            pending.push_back(bookmark_line(&rt.kind, &rt.api_version(), st.rv, true));
        }
        st.rv
    } else {
        let rv: u64 = rv_param
            .parse()
            .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv_param:?}")))?;
        if rv < st.history_floor {
            pending.push_back(expired_line(rv, st.history_floor));
            done = true;
        }
        rv
    };
    let bookmark_interval = if bookmarks {
        st.bookmark_interval
    } else {
        None
    };
    drop(st);
    let now = Instant::now();
    let state = WatchState {
        shared: shared.clone(),
        filter,
        kind: rt.kind.clone(),
        api_version: rt.api_version(),
        last_rv,
        pending,
        done,
        deadline: now + Duration::from_secs(timeout),
        rv_rx: shared.rv_tx.subscribe(),
        stop_rx: shared.stop_tx.subscribe(),
        bookmark_interval,
        next_bookmark: now + bookmark_interval.unwrap_or(Duration::ZERO),
        last_bookmark: last_rv,
    };
    let stream = futures_util::stream::unfold(state, WatchState::next_chunk)
        .map(|b| Ok::<_, Infallible>(Frame::data(b)));
    Ok(respond(200, StreamBody::new(stream).boxed_unsync()))
}
