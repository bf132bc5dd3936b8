//! Leader election with a coordination.k8s.io Lease. Only the controller is gated by it: the
//! NFS server keeps serving whether or not this process leads.
//!
//! The holder renews every `renew` interval; a lease not renewed for `duration` may be taken
//! over. Conflicting updates (two candidates at once) are settled by the API server's
//! resourceVersion check: the loser sees 409 and stays a follower.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Client};
use tokio::sync::watch;
use tracing::{info, warn};

/// Lease timing.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub duration: Duration,
    pub renew: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            duration: Duration::from_secs(15),
            renew: Duration::from_secs(5),
        }
    }
}

/// A Lease name from a provisioner name (`cluster.local/nfs` -> `cluster.local-nfs`).
pub fn lease_name(provisioner: &str) -> String {
    provisioner
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect()
}

/// Campaigns forever for `lease` in `namespace` as `holder`, publishing leadership on `tx`.
/// While it holds the Lease, the Lease carries the annotations `announce` holds at each
/// renewal (a shard's address and load, see [`crate::shards`]).
pub async fn campaign(
    client: Client,
    namespace: String,
    lease: String,
    holder: String,
    timing: Timing,
    tx: watch::Sender<bool>,
    announce: Option<watch::Receiver<BTreeMap<String, String>>>,
) {
    let api: Api<Lease> = Api::namespaced(client, &namespace);
    loop {
        let annotations = announce
            .as_ref()
            .map(|a| a.borrow().clone())
            .unwrap_or_default();
        let leading = match try_acquire(&api, &lease, &holder, timing, annotations).await {
            Ok(l) => l,
            Err(e) => {
                warn!(error = %e, "leader election: cannot reach the Lease; pausing provisioning");
                false
            }
        };
        if *tx.borrow() != leading {
            info!(%holder, leading, "leader election");
        }
        // Nobody listening means the process is shutting down.
        if tx.send(leading).is_err() {
            return;
        }
        tokio::time::sleep(timing.renew).await;
    }
}

async fn try_acquire(
    api: &Api<Lease>,
    lease: &str,
    holder: &str,
    timing: Timing,
    annotations: BTreeMap<String, String>,
) -> kube::Result<bool> {
    let now = MicroTime(Timestamp::now());
    let secs = timing.duration.as_secs() as i32;
    let Some(mut current) = api.get_opt(lease).await? else {
        let fresh = Lease {
            metadata: ObjectMeta {
                name: Some(lease.to_owned()),
                annotations: (!annotations.is_empty()).then_some(annotations),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.to_owned()),
                lease_duration_seconds: Some(secs),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        };
        return match api.create(&PostParams::default(), &fresh).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        };
    };
    let spec = current.spec.get_or_insert_with(LeaseSpec::default);
    let mine = spec.holder_identity.as_deref() == Some(holder);
    let expired = spec.renew_time.as_ref().is_none_or(|t| {
        let age = Timestamp::now().duration_since(t.0);
        let limit = i64::from(spec.lease_duration_seconds.unwrap_or(secs));
        age.as_secs() >= limit
    });
    if !mine && !expired {
        return Ok(false);
    }
    if !mine {
        spec.holder_identity = Some(holder.to_owned());
        spec.acquire_time = Some(now.clone());
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    spec.renew_time = Some(now);
    spec.lease_duration_seconds = Some(secs);
    if !annotations.is_empty() {
        current
            .metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .extend(annotations);
    }
    match api.replace(lease, &PostParams::default(), &current).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn lease_names_are_valid_object_names() {
        assert_eq!(
            super::lease_name("cluster.local/nfs-server-provisioner"),
            "cluster.local-nfs-server-provisioner"
        );
    }
}
