//! Test controls: fault injection rules and the log of received requests.

use crate::error::ApiError;
use crate::resources::{ResourceType, Target, resolve};
use std::fmt;

/// The Kubernetes verb an HTTP request maps to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verb {
    /// GET of one object (or its `/status`).
    Get,
    /// GET of a collection.
    List,
    /// GET of a collection with `watch=true`.
    Watch,
    /// POST to a collection.
    Create,
    /// PUT of one object (or its `/status`).
    Update,
    /// PATCH of one object (or its `/status`).
    Patch,
    /// DELETE of one object.
    Delete,
    /// DELETE of a collection.
    DeleteCollection,
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Watch => "watch",
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::Patch => "patch",
            Verb::Delete => "delete",
            Verb::DeleteCollection => "deletecollection",
        })
    }
}

/// A rule that makes matching requests fail with an HTTP status (answered as a `Status`).
///
/// Note that kube's client retries 429, 503 and 504 by itself (`Config::default_retry`), so a
/// single such fault is invisible to the caller; use 500 (or several times) to surface one.
///
/// ```
/// use kube_standin::{Fault, Verb};
/// // The next create of a PV fails with 500; the one after that succeeds.
/// let f = Fault::new(Verb::Create, "persistentvolumes").status(500);
/// // The next PVC status patch is applied, but the client is told 503 (a lost response).
/// let g = Fault::new(Verb::Patch, "persistentvolumeclaims/status").status(503).after_commit();
/// # let _ = (f, g);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    /// Verb to match; `None` matches every verb.
    pub verb: Option<Verb>,
    /// Resource to match (`plural`, `plural.group` or kind, with `/status` to match only the
    /// status subresource; without it only the main resource matches); `None` matches all.
    pub resource: Option<String>,
    /// Object name to match, if any.
    pub name: Option<String>,
    /// Namespace to match, if any.
    pub namespace: Option<String>,
    /// HTTP status to answer with (default 500).
    pub status: u16,
    /// How many matching requests fail before the rule is used up (default 1).
    pub times: usize,
    /// Perform the request first and then answer with the error (default false).
    pub after_commit: bool,
}

impl Fault {
    /// One failure (500) of `verb` on `resource`.
    pub fn new(verb: Verb, resource: &str) -> Self {
        Fault {
            verb: Some(verb),
            resource: Some(resource.to_string()),
            name: None,
            namespace: None,
            status: 500,
            times: 1,
            after_commit: false,
        }
    }

    /// One failure (500) of any API request.
    pub fn any() -> Self {
        Fault {
            verb: None,
            resource: None,
            name: None,
            namespace: None,
            status: 500,
            times: 1,
            after_commit: false,
        }
    }

    /// Sets the HTTP status.
    pub fn status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    /// Sets how many matching requests fail.
    pub fn times(mut self, times: usize) -> Self {
        self.times = times;
        self
    }

    /// Fails every matching request until [`StandIn::clear_faults`](crate::StandIn::clear_faults).
    pub fn always(self) -> Self {
        self.times(usize::MAX)
    }

    /// Matches only the object with this name.
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.to_string());
        self
    }

    /// Matches only this namespace.
    pub fn namespace(mut self, namespace: &str) -> Self {
        self.namespace = Some(namespace.to_string());
        self
    }

    /// Applies the request, then answers with the error.
    pub fn after_commit(mut self) -> Self {
        self.after_commit = true;
        self
    }

    pub(crate) fn matches(&self, table: &[ResourceType], verb: Verb, target: &Target) -> bool {
        if self.verb.is_some_and(|v| v != verb) {
            return false;
        }
        if let Some(r) = &self.resource {
            let (base, sub) = match r.split_once('/') {
                Some((b, s)) => (b, Some(s)),
                None => (r.as_str(), None),
            };
            if resolve(table, base) != Some(target.res) || sub != target.subresource.as_deref() {
                return false;
            }
        }
        self.name
            .as_deref()
            .is_none_or(|n| target.name.as_deref() == Some(n))
            && self
                .namespace
                .as_deref()
                .is_none_or(|n| target.namespace.as_deref() == Some(n))
    }

    pub(crate) fn error(&self, verb: Verb) -> ApiError {
        ApiError::new(
            self.status,
            format!(
                "injected fault: {verb} {}",
                self.resource.as_deref().unwrap_or("*")
            ),
        )
    }
}

/// One HTTP request the stand-in answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestRecord {
    /// HTTP method (`GET`, `POST`, ...).
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// Raw query string (empty if none).
    pub query: String,
    /// The verb, when the path named a served resource.
    pub verb: Option<Verb>,
    /// Media type of the body (`application/merge-patch+json`, ...), without parameters.
    pub content_type: Option<String>,
    /// Request body (lossy UTF-8).
    pub body: String,
    /// HTTP status of the answer (200 for a watch that started streaming).
    pub status: u16,
}

impl fmt::Display for RequestRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.method, self.path)?;
        if !self.query.is_empty() {
            write!(f, "?{}", self.query)?;
        }
        Ok(())
    }
}
