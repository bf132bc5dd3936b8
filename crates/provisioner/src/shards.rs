//! Shards: N servers (the StatefulSet's pods with `--shards`), each with its own export root,
//! identity and address, behind one StorageClass.
//!
//! - **Who is there.** Each shard holds its own Lease (`<provisioner>-<pod>`), renewed every
//!   few seconds, whose annotations announce its identity, NFS address, capacity and load. A
//!   shard whose Lease is not renewed within its duration is down.
//! - **Placement.** The live shard with the lowest ordinal is the *placer*: for each new
//!   claim it picks the live shard with the most free capacity (capacity minus the sizes of
//!   the volumes it holds or was given; ties go to the lower ordinal) and records it on the
//!   claim (`nfs-server-provisioner/shard`) with a resourceVersion precondition, so two
//!   placers at once (a shard coming back) cannot both place a claim. The chosen shard then
//!   provisions it as a single server would, and records itself on the PV
//!   (`nfs-server-provisioner/server-pod`). A claim given to a shard that went down before
//!   its PV existed is placed again; a StorageClass `shard` parameter pins a class to one
//!   shard, which its claims then wait for.
//! - **Ownership.** Deletion, expansion and repairs stay with the shard whose identity the
//!   PV carries; the others leave its PVs alone without a word.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::controller::{Context, Error};
use crate::pv::{self, ANN_PROVISIONED_BY, ANN_PROVISIONER_ID, ANN_SERVER_POD};

/// On a claim: the shard that provisions it.
pub const ANN_SHARD: &str = "nfs-server-provisioner/shard";

/// Lease annotations a shard announces itself with.
pub const ANN_LEASE_PROVISIONER: &str = "nfs-server-provisioner/provisioner";
pub const ANN_LEASE_SHARD: &str = "nfs-server-provisioner/shard";
pub const ANN_LEASE_IDENTITY: &str = "nfs-server-provisioner/identity";
pub const ANN_LEASE_ADDRESS: &str = "nfs-server-provisioner/address";
pub const ANN_LEASE_CAPACITY: &str = "nfs-server-provisioner/capacity-bytes";
pub const ANN_LEASE_ALLOCATED: &str = "nfs-server-provisioner/allocated-bytes";
pub const ANN_LEASE_USED: &str = "nfs-server-provisioner/used-bytes";
pub const ANN_LEASE_VOLUMES: &str = "nfs-server-provisioner/volumes";

/// The Lease of shard `shard` of provisioner `provisioner`.
pub fn lease_name(provisioner: &str, shard: &str) -> String {
    crate::leader::lease_name(&format!("{provisioner}-{shard}"))
}

/// The StatefulSet ordinal at the end of a pod name (`nfs-2` -> 2).
pub fn ordinal(name: &str) -> Option<u32> {
    name.rsplit('-').next()?.parse().ok()
}

/// Sort key: ordinal first (`-10` after `-9`), then name.
fn order(name: &str) -> (u32, &str) {
    (ordinal(name).unwrap_or(u32::MAX), name)
}

/// One shard as its Lease announces it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shard {
    pub name: String,
    pub identity: String,
    pub address: String,
    pub capacity: u64,
    pub allocated: u64,
    pub used: u64,
    pub volumes: u64,
    /// The Lease was renewed within its duration.
    pub live: bool,
    /// Seconds since the last renewal.
    pub silent_for: u64,
}

/// The shard a Lease announces, if it is one of `provisioner`'s.
pub fn from_lease(lease: &Lease, provisioner: &str, now: Timestamp) -> Option<Shard> {
    let ann = lease.metadata.annotations.as_ref()?;
    if ann.get(ANN_LEASE_PROVISIONER).map(String::as_str) != Some(provisioner) {
        return None;
    }
    let get = |k: &str| ann.get(k).cloned().unwrap_or_default();
    let num = |k: &str| ann.get(k).and_then(|v| v.parse().ok()).unwrap_or(0u64);
    let spec = lease.spec.as_ref();
    let duration = spec
        .and_then(|s| s.lease_duration_seconds)
        .map_or(15, i64::from);
    let silent = spec
        .and_then(|s| s.renew_time.as_ref())
        .map(|t| now.duration_since(t.0).as_secs())
        .unwrap_or(i64::MAX);
    Some(Shard {
        name: get(ANN_LEASE_SHARD),
        identity: get(ANN_LEASE_IDENTITY),
        address: get(ANN_LEASE_ADDRESS),
        capacity: num(ANN_LEASE_CAPACITY),
        allocated: num(ANN_LEASE_ALLOCATED),
        used: num(ANN_LEASE_USED),
        volumes: num(ANN_LEASE_VOLUMES),
        live: spec.and_then(|s| s.holder_identity.as_ref()).is_some() && silent < duration,
        silent_for: silent.max(0) as u64,
    })
    .filter(|s| !s.name.is_empty())
}

/// Every shard of `provisioner` in `namespace`, in ordinal order.
pub async fn list(
    client: &Client,
    namespace: &str,
    provisioner: &str,
) -> Result<Vec<Shard>, kube::Error> {
    let now = Timestamp::now();
    let mut shards: Vec<Shard> = Api::<Lease>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await?
        .iter()
        .filter_map(|l| from_lease(l, provisioner, now))
        .collect();
    shards.sort_by(|a, b| order(&a.name).cmp(&order(&b.name)));
    Ok(shards)
}

/// Picks the shard for a claim: the live one with the most free bytes (capacity minus
/// `allocated`), ties to the lower ordinal. `None` when no shard is live.
pub fn choose<'a>(shards: &'a [Shard], allocated: &HashMap<String, u64>) -> Option<&'a Shard> {
    shards.iter().filter(|s| s.live).min_by(|a, b| {
        let free = |s: &Shard| {
            s.capacity
                .saturating_sub(allocated.get(&s.name).copied().unwrap_or(0))
        };
        free(b)
            .cmp(&free(a))
            .then_with(|| order(&a.name).cmp(&order(&b.name)))
    })
}

/// The shard a StorageClass's `shard` parameter names: a pod name or an ordinal.
pub fn pinned<'a>(shards: &'a [Shard], wanted: &str) -> Option<&'a Shard> {
    shards.iter().find(|s| {
        s.name == wanted
            || wanted
                .parse::<u32>()
                .is_ok_and(|n| ordinal(&s.name) == Some(n))
    })
}

/// Bytes given to each shard: its PVs (by the identity they carry, else the pod they name),
/// plus claims placed on it that have no PV yet.
pub fn allocations(
    shards: &[Shard],
    volumes: &[Arc<PersistentVolume>],
    claims: &[Arc<PersistentVolumeClaim>],
    provisioner: &str,
) -> HashMap<String, (u64, String)> {
    let by_identity: HashMap<&str, &str> = shards
        .iter()
        .map(|s| (s.identity.as_str(), s.name.as_str()))
        .collect();
    // Keyed by volume name, so a claim and its PV count once.
    let mut given: HashMap<String, (u64, String)> = HashMap::new();
    for v in volumes {
        let ann = v.annotations();
        if ann.get(ANN_PROVISIONED_BY).map(String::as_str) != Some(provisioner)
            || v.metadata.deletion_timestamp.is_some()
        {
            continue;
        }
        let shard = ann
            .get(ANN_PROVISIONER_ID)
            .and_then(|id| by_identity.get(id.as_str()))
            .map(|s| s.to_string())
            .or_else(|| ann.get(ANN_SERVER_POD).cloned());
        if let (Some(shard), Some(bytes)) = (shard, pv::capacity_bytes(v)) {
            given.insert(v.name_any(), (bytes, shard));
        }
    }
    for c in claims {
        if c.metadata.deletion_timestamp.is_some() {
            continue;
        }
        if let (Some(shard), Ok(name), Ok(bytes)) = (
            c.annotations().get(ANN_SHARD),
            pv::volume_name(c),
            pv::claim_bytes(c),
        ) {
            given.entry(name).or_insert((bytes, shard.clone()));
        }
    }
    given
}

/// Sums [`allocations`] per shard.
pub fn per_shard(given: &HashMap<String, (u64, String)>) -> HashMap<String, u64> {
    let mut sum = HashMap::new();
    for (bytes, shard) in given.values() {
        *sum.entry(shard.clone()).or_insert(0) += bytes;
    }
    sum
}

/// A shard's view of the others, and the placements it made that its watches may not show yet.
#[derive(Default)]
pub struct ShardState {
    pub table: std::sync::Mutex<Vec<Shard>>,
    /// Placements made here: volume name -> (bytes, shard, when).
    recent: tokio::sync::Mutex<HashMap<String, (u64, String, Instant)>>,
}

/// How long a placement made here counts before the watched claim must show it.
const RECENT: Duration = Duration::from_secs(60);

/// What placement says about a pending claim.
#[derive(Debug, PartialEq, Eq)]
pub enum Placement {
    /// This shard provisions it.
    Mine,
    /// Another shard does (or the placer decides): look again after this long, in case
    /// that shard goes down.
    Elsewhere(Duration),
}

impl Context {
    fn shard_name(&self) -> Option<&str> {
        self.config.shard.as_deref()
    }

    /// The shards as last seen, with this one live while it holds its Lease.
    pub fn shard_table(&self) -> Vec<Shard> {
        let mut t = self
            .shards
            .table
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(me) = self.shard_name() {
            let leading = *self.leader.borrow();
            match t.iter_mut().find(|s| s.name == me) {
                Some(s) => s.live = leading,
                None if leading => t.push(Shard {
                    name: me.to_owned(),
                    identity: self.identity.clone(),
                    address: String::new(),
                    capacity: 0,
                    allocated: 0,
                    used: 0,
                    volumes: 0,
                    live: true,
                    silent_for: 0,
                }),
                None => {}
            }
            t.sort_by(|a, b| order(&a.name).cmp(&order(&b.name)));
        }
        t
    }

    /// Whether a PV belongs to another shard of this provisioner (by identity or pod).
    pub fn sibling_volume(&self, pv: &PersistentVolume) -> bool {
        let Some(me) = self.shard_name() else {
            return false;
        };
        let ann = pv.annotations();
        let id = ann.get(ANN_PROVISIONER_ID).cloned().unwrap_or_default();
        if id == self.identity {
            return false;
        }
        self.shard_table()
            .iter()
            .any(|s| s.name != me && s.identity == id)
            || ann.get(ANN_SERVER_POD).is_some_and(|p| p != me)
    }
}

/// Decides who provisions pending claim `pvc` of `bytes` (see the module comment). `pin` is
/// the class's `shard` parameter.
pub async fn place(
    pvc: &PersistentVolumeClaim,
    bytes: u64,
    pin: Option<&str>,
    ctx: &Context,
) -> Result<Placement, Error> {
    let Some(me) = ctx.shard_name() else {
        return Ok(Placement::Mine);
    };
    let recheck = ctx.config.shard_recheck;
    let shards = ctx.shard_table();
    let placed = pvc.annotations().get(ANN_SHARD).cloned();
    let volume = pv::volume_name(pvc)?;
    if placed.as_deref() == Some(me) {
        return Ok(Placement::Mine);
    }
    // A volume made here for a claim now placed elsewhere (this shard was down while the
    // claim was moved) was never handed out: nothing names it but this export root.
    if placed.is_some() && ctx.store.volume_by_name(&volume).is_some() {
        let store = Arc::clone(&ctx.store);
        let vol = volume.clone();
        tokio::task::spawn_blocking(move || crate::volumes::abandon(&store, &vol)).await??;
        info!(%volume, shard = ?placed, "claim was placed on another shard; local volume removed");
    }
    let target = match pin {
        Some(wanted) => match pinned(&shards, wanted) {
            Some(s) => Some(s.clone()),
            None => {
                let known: Vec<&str> = shards.iter().map(|s| s.name.as_str()).collect();
                return Err(Error::NoShard(wanted.to_owned(), known.join(", ")));
            }
        },
        None => None,
    };
    if let Some(p) = &placed {
        let owner_live = shards.iter().any(|s| &s.name == p && s.live);
        let pinned_there = target.as_ref().is_some_and(|t| &t.name == p);
        if owner_live || pinned_there {
            return Ok(Placement::Elsewhere(recheck));
        }
    }
    // Only the placer places; the others look again in case it goes down.
    let placer = shards.iter().find(|s| s.live).map(|s| s.name.clone());
    if placer.as_deref() != Some(me) {
        return Ok(Placement::Elsewhere(recheck));
    }
    let mut recent = ctx.shards.recent.lock().await;
    recent.retain(|_, (_, _, at)| at.elapsed() < RECENT);
    let target = match target {
        Some(t) => t,
        None => {
            let (volumes, claims) = match ctx.caches() {
                Some(c) => (c.volumes.state(), c.claims.state()),
                None => (Vec::new(), Vec::new()),
            };
            let mut given = allocations(&shards, &volumes, &claims, &ctx.config.name);
            for (name, (b, s, _)) in recent.iter() {
                given.insert(name.clone(), (*b, s.clone()));
            }
            // This claim's own earlier placement (on a shard now down) does not count.
            given.remove(&volume);
            match choose(&shards, &per_shard(&given)) {
                Some(s) => s.clone(),
                None => return Ok(Placement::Elsewhere(recheck)),
            }
        }
    };
    let patch = serde_json::json!({"metadata": {
        "resourceVersion": pvc.resource_version(),
        "annotations": {ANN_SHARD: target.name},
    }});
    let claims: Api<PersistentVolumeClaim> =
        Api::namespaced(ctx.client.clone(), &pvc.namespace().unwrap_or_default());
    match claims
        .patch(
            &pvc.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => {}
        // Changed meanwhile (placed by another placer, or edited): the watch brings it back.
        Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => {
            return Ok(Placement::Elsewhere(Duration::from_secs(1)));
        }
        Err(e) => return Err(e.into()),
    }
    recent.insert(volume.clone(), (bytes, target.name.clone(), Instant::now()));
    info!(claim = %format!("{}/{}", pvc.namespace().unwrap_or_default(), pvc.name_any()),
          shard = %target.name, moved_from = ?placed, "claim placed");
    if target.name == me {
        Ok(Placement::Mine)
    } else {
        Ok(Placement::Elsewhere(recheck))
    }
}

/// What this shard announces on its Lease, from its export root.
pub fn announcement(
    ctx: &Context,
    address: Option<String>,
) -> std::io::Result<BTreeMap<String, String>> {
    let me = ctx.shard_name().unwrap_or_default();
    let vols = ctx.store.volumes();
    let allocated: u64 = vols.iter().filter_map(|v| v.quota.limit()).sum();
    let used: u64 = vols.iter().map(|v| v.quota.used()).sum();
    let capacity = match ctx.config.shard_capacity {
        Some(c) => c,
        None => export_store::capacity(ctx.store.root())?,
    };
    let mut a = BTreeMap::new();
    for (k, v) in [
        (ANN_LEASE_PROVISIONER, ctx.config.name.clone()),
        (ANN_LEASE_SHARD, me.to_owned()),
        (ANN_LEASE_IDENTITY, ctx.identity.clone()),
        (ANN_LEASE_CAPACITY, capacity.to_string()),
        (ANN_LEASE_ALLOCATED, allocated.to_string()),
        (ANN_LEASE_USED, used.to_string()),
        (ANN_LEASE_VOLUMES, vols.len().to_string()),
    ] {
        a.insert(k.to_owned(), v);
    }
    if let Some(addr) = address {
        a.insert(ANN_LEASE_ADDRESS.to_owned(), addr);
    }
    Ok(a)
}

/// Keeps this shard's announcement current and its view of the others fresh, every `every`.
pub async fn keep_in_touch(
    ctx: Arc<Context>,
    announce: watch::Sender<BTreeMap<String, String>>,
    every: Duration,
) {
    let Some(ns) = ctx.config.namespace.clone() else {
        return;
    };
    loop {
        let address = ctx.server_address().await.ok();
        let c = Arc::clone(&ctx);
        match tokio::task::spawn_blocking(move || announcement(&c, address)).await {
            Ok(Ok(a)) => {
                announce.send_replace(a);
            }
            Ok(Err(e)) => warn!(error = %e, "cannot measure the export root for the shard Lease"),
            Err(e) => warn!(error = %e, "cannot measure the export root for the shard Lease"),
        }
        match list(&ctx.client, &ns, &ctx.config.name).await {
            Ok(t) => {
                let live = t.iter().filter(|s| s.live).count();
                ctx.config.metrics.shards_live.set(live as i64);
                ctx.config.metrics.shards.set(t.len() as i64);
                *ctx.shards.table.lock().unwrap_or_else(|e| e.into_inner()) = t;
            }
            Err(e) => warn!(error = %e, "cannot list the shard Leases"),
        }
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(name: &str, capacity: u64, live: bool) -> Shard {
        Shard {
            name: name.into(),
            identity: format!("id-{name}"),
            address: String::new(),
            capacity,
            allocated: 0,
            used: 0,
            volumes: 0,
            live,
            silent_for: 0,
        }
    }

    #[test]
    fn ordinals_order_shards_numerically() {
        assert_eq!(ordinal("nfs-server-provisioner-12"), Some(12));
        assert_eq!(ordinal("nfs"), None);
        let mut names = vec!["n-10", "n-2", "n-0"];
        names.sort_by(|a, b| order(a).cmp(&order(b)));
        assert_eq!(names, ["n-0", "n-2", "n-10"]);
    }

    #[test]
    fn the_most_free_live_shard_is_chosen_ties_to_the_lowest_ordinal() {
        let shards = [
            shard("n-0", 100, true),
            shard("n-1", 100, true),
            shard("n-2", 300, false),
        ];
        let mut alloc = HashMap::new();
        assert_eq!(choose(&shards, &alloc).unwrap().name, "n-0");
        alloc.insert("n-0".to_string(), 10);
        assert_eq!(choose(&shards, &alloc).unwrap().name, "n-1");
        // A down shard is never chosen, however empty.
        alloc.insert("n-1".to_string(), 90);
        assert_eq!(choose(&shards, &alloc).unwrap().name, "n-0");
        assert!(choose(&[shard("n-0", 1, false)], &alloc).is_none());
    }

    #[test]
    fn equal_claims_spread_evenly_by_greedy_placement() {
        let shards = [
            shard("n-0", 1 << 40, true),
            shard("n-1", 1 << 40, true),
            shard("n-2", 1 << 40, true),
        ];
        let mut alloc: HashMap<String, u64> = HashMap::new();
        for _ in 0..300 {
            let s = choose(&shards, &alloc).unwrap().name.clone();
            *alloc.entry(s).or_default() += 1 << 30;
        }
        assert!(alloc.values().all(|b| *b == 100 << 30), "{alloc:?}");
    }

    #[test]
    fn a_pin_names_a_shard_by_pod_name_or_ordinal() {
        let shards = [shard("n-0", 1, true), shard("n-1", 1, false)];
        assert_eq!(pinned(&shards, "1").unwrap().name, "n-1");
        assert_eq!(pinned(&shards, "n-0").unwrap().name, "n-0");
        assert!(pinned(&shards, "7").is_none());
    }

    #[test]
    fn leases_announce_shards_and_expire() {
        let now = Timestamp::now();
        let lease: Lease = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "l", "annotations": {
                ANN_LEASE_PROVISIONER: "p", ANN_LEASE_SHARD: "n-1",
                ANN_LEASE_IDENTITY: "id", ANN_LEASE_CAPACITY: "1000",
            }},
            "spec": {"holderIdentity": "n-1_ab", "leaseDurationSeconds": 15,
                     "renewTime": now.checked_sub(jiff_secs(3)).unwrap().to_string()},
        }))
        .unwrap();
        let s = from_lease(&lease, "p", now).unwrap();
        assert_eq!((s.name.as_str(), s.capacity, s.live), ("n-1", 1000, true));
        assert!(from_lease(&lease, "other", now).is_none());
        let later = now.checked_add(jiff_secs(20)).unwrap();
        assert!(!from_lease(&lease, "p", later).unwrap().live);
    }

    fn jiff_secs(n: i64) -> k8s_openapi::jiff::SignedDuration {
        k8s_openapi::jiff::SignedDuration::from_secs(n)
    }
}
