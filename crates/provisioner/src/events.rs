//! Kubernetes Events on claims and volumes, written through kube-rs's events.k8s.io/v1
//! recorder: what `kubectl describe pvc` and `kubectl describe pv` show under "Events".
//!
//! Each Event carries the reporting controller (the provisioner name), the reporting instance
//! (the pod, `$POD_NAME`, else the host name), an action and a reason; a repeat of the same
//! action and reason about the same object within a few minutes becomes a series (one Event
//! whose count grows) instead of a new object. Cluster-scoped objects (PVs) get their Events
//! in namespace `default`, as the API server requires.

use std::sync::{Arc, OnceLock};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder as KubeRecorder, Reporter};
use kube::{Client, Resource, ResourceExt};
use tokio::sync::mpsc;
use tracing::warn;

/// The longest `note` the API server accepts (bytes).
const NOTE_LIMIT: usize = 1024;

/// Normal or Warning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Normal,
    Warning,
}

/// Events waiting to be published in the background, at most this many.
const QUEUE: usize = 1024;

type Queued = (Event, ObjectReference);

/// Records Events as controller `component`.
#[derive(Clone)]
pub struct Recorder {
    inner: KubeRecorder,
    /// One background publisher, started by the first detached Event.
    queue: Arc<OnceLock<mpsc::Sender<Queued>>>,
}

impl Recorder {
    pub fn new(client: Client, component: &str) -> Self {
        let instance = std::env::var("POD_NAME").ok().filter(|s| !s.is_empty());
        let reporter = match instance {
            Some(instance) => Reporter {
                controller: component.to_owned(),
                instance: Some(instance),
            },
            // The host name, as a pod's is its name.
            None => Reporter::from(component),
        };
        Self {
            inner: KubeRecorder::new(client, reporter),
            queue: Arc::default(),
        }
    }

    /// [`Self::record`] in the background: for Events on the hot path, which need not delay
    /// the work they describe. They are published one at a time, in order, by one task, so a
    /// burst of claims does not add a burst of Event requests to the API server's load while
    /// their PVs are being created. If the queue is full the Event is dropped (and logged).
    pub fn record_detached<K>(&self, obj: &K, kind: Kind, reason: &str, message: &str)
    where
        K: Resource<DynamicType = ()>,
    {
        let queue = self.queue.get_or_init(|| {
            let (tx, mut rx) = mpsc::channel::<Queued>(QUEUE);
            let inner = self.inner.clone();
            tokio::spawn(async move {
                while let Some((event, reference)) = rx.recv().await {
                    if let Err(e) = inner.publish(&event, &reference).await {
                        warn!(reason = %event.reason, object = ?reference.name, error = %e, "cannot record event");
                    }
                }
            });
            tx
        });
        if queue
            .try_send((event(kind, reason, message), reference(obj)))
            .is_err()
        {
            warn!(reason, object = %obj.name_any(), "event queue full: event dropped");
        }
    }

    /// Records an Event about `obj`; failures are logged, never fatal.
    pub async fn record<K>(&self, obj: &K, kind: Kind, reason: &str, message: &str)
    where
        K: Resource<DynamicType = ()>,
    {
        let event = event(kind, reason, message);
        if let Err(e) = self.inner.publish(&event, &reference(obj)).await {
            warn!(reason, object = %obj.name_any(), error = %e, "cannot record event");
        }
    }
}

fn event(kind: Kind, reason: &str, message: &str) -> Event {
    Event {
        type_: match kind {
            Kind::Normal => EventType::Normal,
            Kind::Warning => EventType::Warning,
        },
        reason: reason.to_owned(),
        note: Some(truncate(message, NOTE_LIMIT)),
        action: action_of(reason).to_owned(),
        secondary: None,
    }
}

/// The object reference an Event is about. The resourceVersion is left out: with it, each
/// change of the object would make a repeat look like a different object to aggregation.
fn reference<K: Resource<DynamicType = ()>>(obj: &K) -> ObjectReference {
    ObjectReference {
        api_version: Some(K::api_version(&()).into_owned()),
        kind: Some(K::kind(&()).into_owned()),
        name: Some(obj.name_any()),
        namespace: obj.namespace(),
        uid: obj.uid(),
        ..ObjectReference::default()
    }
}

/// The action (what the provisioner was doing) behind each reason it reports.
pub fn action_of(reason: &str) -> &'static str {
    match reason {
        "Provisioning" | "ProvisioningSucceeded" | "ProvisioningFailed" => "Provision",
        "VolumeFailedDelete" | "VolumeDeleted" => "Delete",
        r if r.starts_with("VolumeResize") || r.starts_with("ExternalExpanding") => "Resize",
        "IdentityRecovered"
        | "VolumeDataMissing"
        | "VolumeRecreated"
        | "OrphanBound"
        | "ServerAddressChanged" => "Recover",
        _ => "Reconcile",
    }
}

/// `s` cut to at most `limit` bytes on a character boundary, marked when cut.
fn truncate(s: &str, limit: usize) -> String {
    if s.len() <= limit {
        return s.to_owned();
    }
    let mut end = limit - '…'.len_utf8();
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_fit_the_api_limit_on_a_char_boundary() {
        assert_eq!(truncate("short", NOTE_LIMIT), "short");
        let long = "é".repeat(800); // 1,600 bytes
        let cut = truncate(&long, NOTE_LIMIT);
        assert!(cut.len() <= NOTE_LIMIT, "{}", cut.len());
        assert!(cut.ends_with('…'));
    }

    #[test]
    fn every_reason_has_an_action() {
        assert_eq!(action_of("ProvisioningFailed"), "Provision");
        assert_eq!(action_of("VolumeFailedDelete"), "Delete");
        assert_eq!(action_of("VolumeResizeSuccessful"), "Resize");
        assert_eq!(action_of("ServerAddressChanged"), "Recover");
        assert_eq!(action_of("SomethingNew"), "Reconcile");
    }
}
