//! The controller: one reconcile function for claims (provision) and one for volumes
//! (delete), in the shape of kube-rs controllers, sharing a [`Context`].
//!
//! Provisioning: a Pending claim whose `storage-provisioner` annotation and StorageClass name
//! us gets directory `pvc-<uid>` (mode from `gid`), an export, then PV `pvc-<uid>`. Every
//! step is idempotent, so a retry after a crash anywhere ends with one directory, one export
//! and one PV. Deleting: a Released PV with reclaim policy Delete that we provisioned and
//! that carries our identity is unexported, its directory handled per `onDelete`, then the
//! PV object is deleted and our finalizer removed. A PV with another identity is never
//! touched. Failures back off from 15 s to 15 min per object and never give up.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use export_store::ExportStore;
use futures_util::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Service};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use thiserror::Error;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::events::{Kind, Recorder};
use crate::metrics::ProvisionerMetrics;
use crate::params::{self, OnDelete};
use crate::pv::{self, ANN_ON_DELETE, ANN_PROVISIONED_BY, ANN_PROVISIONER_ID, FINALIZER};
use crate::volumes;

/// Settings of the provisioner.
#[derive(Clone, Debug)]
pub struct Config {
    /// The provisioner name StorageClasses use (`cluster.local/nfs-server-provisioner`).
    pub name: String,
    /// Fixed NFS server address for PVs; otherwise the Service's ClusterIP, else `pod_ip`.
    pub server_address: Option<String>,
    pub namespace: Option<String>,
    pub service_name: Option<String>,
    pub pod_ip: Option<String>,
    /// This replica's pod name (`$POD_NAME`), recorded on its PVs.
    pub pod_name: Option<String>,
    /// First retry delay; doubles per failure up to 60 times this (15 s .. 15 min).
    pub retry_base: Duration,
    /// Most volumes this server holds; a claim beyond it fails with an Event and is retried.
    pub max_exports: Option<usize>,
    /// Repair lost identity and stale server addresses without being asked.
    pub recover: crate::recovery::Recover,
    /// What to do at start with a PV whose directory is missing.
    pub on_missing: crate::recovery::OnMissing,
    /// How often PVs are checked against the current server address (`recover` auto).
    pub address_check: Duration,
    /// Where reconciles are counted (registered by the process, or private).
    pub metrics: Arc<ProvisionerMetrics>,
    /// This server's shard name (its pod name) when it is one of several shards
    /// (`--shards`, see [`crate::shards`]); `None` for a single server.
    pub shard: Option<String>,
    /// How often a pending claim placed elsewhere is looked at again (a lease duration).
    pub shard_recheck: Duration,
    /// Bytes this shard offers for placement (default: its export root's file system size).
    pub shard_capacity: Option<u64>,
}

impl Config {
    /// Defaults for provisioner `name`.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            server_address: None,
            namespace: None,
            service_name: None,
            pod_ip: None,
            pod_name: None,
            retry_base: Duration::from_secs(15),
            max_exports: None,
            recover: crate::recovery::Recover::Auto,
            on_missing: crate::recovery::OnMissing::Report,
            address_check: Duration::from_secs(5),
            metrics: Arc::default(),
            shard: None,
            shard_recheck: Duration::from_secs(15),
            shard_capacity: None,
        }
    }
}

/// Errors of one reconcile; all are retried with backoff.
#[derive(Debug, Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("export store: {0}")]
    Store(#[from] export_store::StoreError),
    #[error("{0}")]
    Params(#[from] params::ParamError),
    #[error("{0}")]
    Claim(#[from] pv::ClaimError),
    #[error("StorageClass {0:?} not found")]
    NoClass(String),
    #[error(
        "no NFS server address: give --server-address, or SERVICE_NAME/POD_NAMESPACE, or POD_IP"
    )]
    NoAddress,
    #[error("this server already holds {0} volumes, the most --max-exports allows")]
    MaxExports(usize),
    #[error("worker failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    #[error("invalid StorageClass parameter \"shard\": {0:?} names no shard (shards: {1})")]
    NoShard(String, String),
}

/// What every reconcile needs.
pub struct Context {
    pub client: Client,
    pub store: Arc<ExportStore>,
    pub config: Config,
    pub identity: String,
    pub recorder: Recorder,
    /// True while this process holds the leader lease (always true without election).
    pub leader: watch::Receiver<bool>,
    failures: Mutex<HashMap<String, u32>>,
    warned_foreign: Mutex<HashSet<String>>,
    /// Volumes created for a claim whose PV does not exist yet: if the claim disappears
    /// before the PV is created, the janitor removes them (they were never handed out).
    provisional: Mutex<HashMap<String, (String, String)>>,
    /// The watched claims, PVs and StorageClasses while this process leads (see [`run`]).
    caches: Mutex<Option<Caches>>,
    /// The server address and when it was read (the Service is read at most every
    /// `address_check`, not once per claim).
    address: Mutex<Option<(Instant, String, bool)>>,
    /// PV creates in flight at once. The API client speaks HTTP/1.1, one request per
    /// connection: a burst of claims would otherwise open (and TLS-handshake) a connection
    /// per claim; a few connections carry the burst as fast (the API server is the limit).
    pv_writes: tokio::sync::Semaphore,
    /// The other shards and this shard's recent placements (shard mode only).
    pub shards: crate::shards::ShardState,
}

/// PV creates in flight at once (see [`Context`]).
const PV_WRITES: usize = 4;

/// Local copies of what the controllers watch, so a reconcile reads them without a request.
/// A miss (not synced yet, or just created) falls back to the API where it matters.
#[derive(Clone)]
pub struct Caches {
    pub claims: Store<PersistentVolumeClaim>,
    pub volumes: Store<PersistentVolume>,
    pub classes: Store<StorageClass>,
}

/// The cached object `name` (in `ns`), if the cache has synced and holds it.
fn cached<K>(store: &Store<K>, ns: Option<&str>, name: &str) -> Option<Arc<K>>
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    let key = match ns {
        Some(ns) => ObjectRef::new(name).within(ns),
        None => ObjectRef::new(name),
    };
    store.get(&key)
}

/// Whether a cache has seen its first complete list.
fn synced<K>(store: &Store<K>) -> bool
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    store
        .wait_until_ready()
        .now_or_never()
        .is_some_and(|r| r.is_ok())
}

impl Context {
    pub fn new(
        client: Client,
        store: Arc<ExportStore>,
        config: Config,
        identity: String,
        leader: watch::Receiver<bool>,
    ) -> Self {
        let recorder = Recorder::new(client.clone(), &config.name);
        Self {
            client,
            store,
            config,
            identity,
            recorder,
            leader,
            failures: Mutex::new(HashMap::new()),
            warned_foreign: Mutex::new(HashSet::new()),
            provisional: Mutex::new(HashMap::new()),
            caches: Mutex::new(None),
            address: Mutex::new(None),
            pv_writes: tokio::sync::Semaphore::new(PV_WRITES),
            shards: Default::default(),
        }
    }

    /// The caches of the current leadership term.
    pub fn caches(&self) -> Option<Caches> {
        self.caches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// PV `name`: from the cache when it has synced, else from the API.
    pub async fn volume(&self, name: &str) -> Result<Option<PersistentVolume>, kube::Error> {
        if let Some(c) = self.caches()
            && synced(&c.volumes)
        {
            return Ok(cached(&c.volumes, None, name).map(|v| (*v).clone()));
        }
        Api::<PersistentVolume>::all(self.client.clone())
            .get_opt(name)
            .await
    }

    async fn class(&self, name: &str) -> Result<Option<StorageClass>, kube::Error> {
        if let Some(c) = self.caches()
            && let Some(class) = cached(&c.classes, None, name)
        {
            return Ok(Some((*class).clone()));
        }
        Api::<StorageClass>::all(self.client.clone())
            .get_opt(name)
            .await
    }

    fn is_leader(&self) -> bool {
        *self.leader.borrow()
    }

    /// The next retry delay for `key`: 15 s doubling to 15 min, never giving up.
    fn backoff(&self, key: &str) -> Duration {
        let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let n = f.entry(key.to_owned()).or_insert(0);
        let base = self.config.retry_base;
        let delay = (base * (1u32 << (*n).min(6))).min(base * 60);
        *n += 1;
        delay
    }

    fn succeeded(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }

    /// The NFS server address new PVs get.
    pub async fn server_address(&self) -> Result<String, Error> {
        Ok(self.address_and_source().await?.0)
    }

    /// The address and whether it is the one to keep PVs on: false when it is the pod IP
    /// standing in for a configured Service that is missing (being recreated, say).
    pub async fn address_and_source(&self) -> Result<(String, bool), Error> {
        if let Some(a) = &self.config.server_address {
            return Ok((a.clone(), true));
        }
        if let Some((at, addr, kept)) = self
            .address
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            && at.elapsed() < self.config.address_check
        {
            return Ok((addr, kept));
        }
        self.fresh_address().await
    }

    /// [`Self::address_and_source`] read from the Service now (and cached).
    pub async fn fresh_address(&self) -> Result<(String, bool), Error> {
        let found = self.read_address().await?;
        *self.address.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((Instant::now(), found.0.clone(), found.1));
        Ok(found)
    }

    async fn read_address(&self) -> Result<(String, bool), Error> {
        if let Some(a) = &self.config.server_address {
            return Ok((a.clone(), true));
        }
        if let (Some(ns), Some(svc)) = (&self.config.namespace, &self.config.service_name) {
            let api: Api<Service> = Api::namespaced(self.client.clone(), ns);
            if let Some(ip) = api
                .get_opt(svc)
                .await?
                .and_then(|s| s.spec)
                .and_then(|s| s.cluster_ip)
                .filter(|ip| !ip.is_empty() && ip != "None")
            {
                return Ok((ip, true));
            }
        }
        let ip = self.config.pod_ip.clone().ok_or(Error::NoAddress)?;
        Ok((ip, self.config.service_name.is_none()))
    }
}

fn claim_names_us(pvc: &PersistentVolumeClaim, name: &str) -> bool {
    let ann = pvc.annotations();
    [
        pv::ANN_STORAGE_PROVISIONER,
        pv::ANN_STORAGE_PROVISIONER_BETA,
    ]
    .iter()
    .any(|k| ann.get(*k).map(String::as_str) == Some(name))
}

/// What a claim needs, decided from the claim alone (no API, no disk).
#[derive(Debug, PartialEq, Eq)]
pub enum ClaimPlan<'a> {
    /// Bound to `volume`: bring that volume to the claim's request if it is ours.
    Expand(&'a str),
    /// Pending and naming us: provision it with its StorageClass.
    Provision { class: &'a str },
    /// Not ours, being deleted, or already handled.
    Ignore,
}

pub fn plan_claim<'a>(pvc: &'a PersistentVolumeClaim, provisioner: &str) -> ClaimPlan<'a> {
    let Some(spec) = pvc.spec.as_ref() else {
        return ClaimPlan::Ignore;
    };
    let bound_to = spec.volume_name.as_deref().filter(|v| !v.is_empty());
    let phase = pvc.status.as_ref().and_then(|s| s.phase.as_deref());
    let deleting = pvc.metadata.deletion_timestamp.is_some();
    match (bound_to, phase) {
        (Some(volume), Some("Bound")) if !deleting => ClaimPlan::Expand(volume),
        (None, None | Some("Pending")) if !deleting && claim_names_us(pvc, provisioner) => {
            match spec.storage_class_name.as_deref() {
                Some(class) if !class.is_empty() => ClaimPlan::Provision { class },
                _ => ClaimPlan::Ignore,
            }
        }
        _ => ClaimPlan::Ignore,
    }
}

/// A `ProvisioningFailed` Warning on the claim.
async fn provisioning_failed(ctx: &Context, pvc: &PersistentVolumeClaim, message: &str) {
    ctx.recorder
        .record(pvc, Kind::Warning, "ProvisioningFailed", message)
        .await;
}

/// Reconciles one claim: provisions it if it is ours and unbound.
pub async fn reconcile_claim(
    pvc: Arc<PersistentVolumeClaim>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    // The controllers run only while leading; a reconcile already running when the Lease
    // was lost ends here.
    if !ctx.is_leader() {
        return Ok(Action::await_change());
    }
    let class_name = match plan_claim(&pvc, &ctx.config.name) {
        ClaimPlan::Ignore => return Ok(Action::await_change()),
        ClaimPlan::Expand(volume) => return crate::expand::reconcile(&pvc, volume, &ctx).await,
        ClaimPlan::Provision { class } => class.to_owned(),
    };
    let class = ctx
        .class(&class_name)
        .await?
        .ok_or_else(|| Error::NoClass(class_name.clone()))?;
    if class.provisioner != ctx.config.name {
        return Ok(Action::await_change());
    }
    let name = pv::volume_name(&pvc)?;
    // A PV the cache does not show yet is harmless: provisioning is idempotent and its
    // create then answers AlreadyExists.
    if ctx.volume(&name).await?.is_some() {
        ctx.succeeded(&name);
        return Ok(Action::await_change());
    }
    if let Err(e) = pv::check_claim(&pvc) {
        // As the old provisioner: reported, not retried until the claim changes.
        provisioning_failed(&ctx, &pvc, &e.to_string()).await;
        return Ok(Action::await_change());
    }
    let params = match params::parse(&class.parameters.clone().unwrap_or_default()) {
        Ok(p) => p,
        Err(e) => {
            provisioning_failed(&ctx, &pvc, &e.to_string()).await;
            return Err(e.into());
        }
    };
    if ctx.config.shard.is_some() {
        let bytes = pv::claim_bytes(&pvc)?;
        match crate::shards::place(&pvc, bytes, params.shard.as_deref(), &ctx).await {
            Ok(crate::shards::Placement::Mine) => {}
            Ok(crate::shards::Placement::Elsewhere(again)) => return Ok(Action::requeue(again)),
            Err(e) => {
                provisioning_failed(&ctx, &pvc, &e.to_string()).await;
                return Err(e);
            }
        }
    }
    let claim = format!("{}/{}", pvc.namespace().unwrap_or_default(), pvc.name_any());
    // Normal Events are published beside the work, not before it.
    ctx.recorder.record_detached(
        pvc.as_ref(),
        Kind::Normal,
        "Provisioning",
        &format!("External provisioner is provisioning volume for claim \"{claim}\""),
    );
    let started = std::time::Instant::now();
    let mut steps = Steps::default();
    let result = provision(&pvc, &class, &params, &name, &ctx, &mut steps).await;
    match &result {
        Ok(true) => {
            let total = started.elapsed();
            ctx.config
                .metrics
                .provision_seconds
                .observe(total.as_secs_f64());
            ctx.succeeded(&name);
            info!(
                %claim,
                volume = %name,
                disk_ms = ms(steps.disk),
                pv_ms = ms(steps.pv),
                total_ms = ms(total),
                "provisioned"
            );
            ctx.recorder.record_detached(
                pvc.as_ref(),
                Kind::Normal,
                "ProvisioningSucceeded",
                &format!("Successfully provisioned volume {name}"),
            );
        }
        Ok(false) => info!(%claim, "claim went away while provisioning; cleaned up"),
        Err(e) => {
            provisioning_failed(
                &ctx,
                &pvc,
                &format!("failed to provision volume with StorageClass \"{class_name}\": {e}"),
            )
            .await
        }
    }
    result.map(|_| Action::await_change())
}

/// How long provisioning's two slow steps took, for the "provisioned" log line.
#[derive(Default)]
struct Steps {
    /// Directory and registry (blocking, with fsyncs).
    disk: std::time::Duration,
    /// The PV create request.
    pv: std::time::Duration,
}

fn ms(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 10_000.0).round() / 10.0
}

/// Directory, export, PV. Returns false when the claim vanished meanwhile (then nothing is
/// left behind).
async fn provision(
    pvc: &PersistentVolumeClaim,
    class: &StorageClass,
    params: &params::Params,
    name: &str,
    ctx: &Context,
    steps: &mut Steps,
) -> Result<bool, Error> {
    if let Some(max) = ctx.config.max_exports {
        let held = ctx.store.volumes();
        if held.len() >= max && !held.iter().any(|v| v.name() == name) {
            return Err(Error::MaxExports(max));
        }
    }
    let size = pv::claim_bytes(pvc)?;
    let store = Arc::clone(&ctx.store);
    let (vol, p, ro) = (name.to_owned(), params.clone(), pv::read_only_claim(pvc));
    let ns = pvc.namespace().unwrap_or_default();
    ctx.provisional
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(name.to_owned(), (ns.clone(), pvc.name_any()));
    let t = std::time::Instant::now();
    tokio::task::spawn_blocking(move || volumes::provision(&store, &vol, &p, ro, Some(size)))
        .await??;
    steps.disk = t.elapsed();
    let server = ctx.server_address().await?;
    // The claim may have been deleted while its directory was made: the watched copy says
    // so without a request (a deletion the watch has not delivered yet leaves a PV that
    // the binder releases and we then delete).
    let current = match ctx.caches().filter(|c| synced(&c.claims)) {
        Some(c) => cached(&c.claims, Some(&ns), &pvc.name_any()).map(|c| (*c).clone()),
        None => {
            Api::<PersistentVolumeClaim>::namespaced(ctx.client.clone(), &ns)
                .get_opt(&pvc.name_any())
                .await?
        }
    };
    // A shard keeps a claim unless the watched copy shows it placed elsewhere (a copy
    // without the annotation may predate this shard's own placement).
    let placed_elsewhere = |c: &PersistentVolumeClaim| {
        ctx.config.shard.as_ref().is_some_and(|me| {
            c.annotations()
                .get(crate::shards::ANN_SHARD)
                .is_some_and(|s| s != me)
        })
    };
    let still_there = current.is_some_and(|c| {
        c.uid() == pvc.uid() && c.metadata.deletion_timestamp.is_none() && !placed_elsewhere(&c)
    });
    if !still_there {
        let store = Arc::clone(&ctx.store);
        let vol = name.to_owned();
        tokio::task::spawn_blocking(move || volumes::abandon(&store, &vol)).await??;
        return Ok(false);
    }
    let volume = pv::build(&pv::PvInput {
        pvc,
        class,
        params,
        provisioner: &ctx.config.name,
        identity: &ctx.identity,
        server: &server,
        pod: ctx.config.pod_name.as_deref(),
    })?;
    let pvs: Api<PersistentVolume> = Api::all(ctx.client.clone());
    let t = std::time::Instant::now();
    let permit = ctx.pv_writes.acquire().await;
    let created = pvs.create(&PostParams::default(), &volume).await;
    drop(permit);
    match created {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {
            // Another shard's PV for the same claim (it was placed again while this shard
            // was away): the volume made here was never handed out.
            let existing = pvs.get_opt(name).await?;
            let theirs = existing
                .is_some_and(|v| v.annotations().get(ANN_PROVISIONER_ID) != Some(&ctx.identity));
            if ctx.config.shard.is_some() && theirs {
                let store = Arc::clone(&ctx.store);
                let vol = name.to_owned();
                tokio::task::spawn_blocking(move || volumes::abandon(&store, &vol)).await??;
                ctx.provisional
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(name);
                return Ok(false);
            }
        }
        Err(e) => return Err(e.into()),
    }
    steps.pv = t.elapsed();
    ctx.provisional
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(name);
    Ok(true)
}

/// Removes provisional volumes whose claim is gone and that never got a PV.
pub async fn sweep_provisional(ctx: &Context) -> Result<(), Error> {
    let pending: Vec<(String, (String, String))> = ctx
        .provisional
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let pvs: Api<PersistentVolume> = Api::all(ctx.client.clone());
    for (name, (ns, claim)) in pending {
        let uid = name.strip_prefix("pvc-").unwrap_or_default();
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
        let claim_alive = claims
            .get_opt(&claim)
            .await?
            .is_some_and(|c| c.uid().as_deref() == Some(uid));
        if claim_alive || pvs.get_opt(&name).await?.is_some() {
            continue;
        }
        let store = Arc::clone(&ctx.store);
        let vol = name.clone();
        tokio::task::spawn_blocking(move || volumes::abandon(&store, &vol)).await??;
        ctx.provisional
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&name);
        info!(volume = %name, claim = %format!("{ns}/{claim}"), "claim deleted during provisioning; volume removed");
    }
    Ok(())
}

/// Backoff for claims and volumes.
pub fn error_policy<K: kube::Resource>(obj: Arc<K>, err: &Error, ctx: Arc<Context>) -> Action {
    let key = obj.meta().uid.clone().unwrap_or_default();
    let delay = ctx.backoff(&key);
    warn!(object = %obj.meta().name.clone().unwrap_or_default(), error = %err, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

fn ours(pv: &PersistentVolume, name: &str) -> bool {
    pv.annotations().get(ANN_PROVISIONED_BY).map(String::as_str) == Some(name)
}

/// Reconciles one PV: deletes the volume of a Released PV we own.
pub async fn reconcile_volume(
    pv: Arc<PersistentVolume>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    if !ctx.is_leader() {
        return Ok(Action::await_change());
    }
    if !ours(&pv, &ctx.config.name) {
        return Ok(Action::await_change());
    }
    let name = pv.name_any();
    // Another shard's PV for a claim this shard also made a volume for (it was placed
    // again while this shard was away): the local one was never handed out.
    if ctx.sibling_volume(&pv) && ctx.store.volume_by_name(&name).is_some() {
        let store = Arc::clone(&ctx.store);
        let vol = name.clone();
        tokio::task::spawn_blocking(move || volumes::abandon(&store, &vol)).await??;
        info!(volume = %name, "another shard holds this volume; the local copy was removed");
    }
    let phase = pv
        .status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default();
    let reclaim = pv
        .spec
        .as_ref()
        .and_then(|s| s.persistent_volume_reclaim_policy.clone())
        .unwrap_or_default();
    let has_finalizer = pv.finalizers().iter().any(|f| f == FINALIZER);
    let pvs: Api<PersistentVolume> = Api::all(ctx.client.clone());
    let mut latest: Option<PersistentVolume> = None;
    if phase == "Released" && reclaim == "Delete" {
        let started = std::time::Instant::now();
        let id = pv
            .annotations()
            .get(ANN_PROVISIONER_ID)
            .cloned()
            .unwrap_or_default();
        if id != ctx.identity && ctx.sibling_volume(&pv) {
            return Ok(Action::await_change());
        }
        if id != ctx.identity {
            let first = ctx
                .warned_foreign
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(name.clone());
            if first {
                ctx.config.metrics.foreign_volumes.inc();
                warn!(volume = %name, their_identity = %id, "not deleting a volume of another provisioner instance");
                ctx.recorder
                    .record(
                        pv.as_ref(),
                        Kind::Warning,
                        "VolumeFailedDelete",
                        &format!(
                            "not deleting: this volume was provisioned by identity {id:?}, this provisioner is {:?}",
                            ctx.identity
                        ),
                    )
                    .await;
            }
            return Ok(Action::await_change());
        }
        let on_delete = pv
            .annotations()
            .get(ANN_ON_DELETE)
            .and_then(|s| OnDelete::parse(s))
            .unwrap_or_default();
        let store = Arc::clone(&ctx.store);
        let vol = name.clone();
        let discarded =
            tokio::task::spawn_blocking(move || volumes::discard(&store, &vol, on_delete)).await?;
        if let Err(e) = discarded {
            ctx.recorder
                .record(
                    pv.as_ref(),
                    Kind::Warning,
                    "VolumeFailedDelete",
                    &e.to_string(),
                )
                .await;
            return Err(e.into());
        }
        if pv.metadata.deletion_timestamp.is_none() {
            match pvs.delete(&name, &DeleteParams::default()).await {
                // Held by finalizers: the object as it is now, so the finalizer patch below
                // carries its current resourceVersion.
                Ok(res) => latest = res.left(),
                Err(kube::Error::Api(e)) if e.code == 404 => return Ok(Action::await_change()),
                Err(e) => return Err(e.into()),
            }
            // Counted once, by the reconcile that issued the delete.
            ctx.config
                .metrics
                .delete_seconds
                .observe(started.elapsed().as_secs_f64());
        }
        info!(volume = %name, on_delete = on_delete.as_str(), "deleted");
    } else if pv.metadata.deletion_timestamp.is_none() {
        return Ok(Action::await_change());
    }
    // The PV is being deleted and its data was handled (or is kept): let it go.
    if has_finalizer {
        remove_finalizer(&pvs, latest.as_ref().unwrap_or(&pv)).await?;
    }
    ctx.succeeded(&pv.uid().unwrap_or_default());
    Ok(Action::await_change())
}

/// Removes our finalizer. The resourceVersion precondition keeps us from dropping a
/// finalizer someone added meanwhile; kube-controller-manager's pv-protection controller
/// edits the same list at the same moment, so a conflict is retried at once on the latest
/// object instead of waiting for the reconcile backoff.
async fn remove_finalizer(pvs: &Api<PersistentVolume>, pv: &PersistentVolume) -> Result<(), Error> {
    let name = pv.name_any();
    let mut current = pv.clone();
    for attempt in 0.. {
        if !current.finalizers().iter().any(|f| f == FINALIZER) {
            return Ok(());
        }
        let rest: Vec<&String> = current
            .finalizers()
            .iter()
            .filter(|f| *f != FINALIZER)
            .collect();
        let patch = serde_json::json!({ "metadata": { "finalizers": rest, "resourceVersion": current.resource_version() } });
        match pvs
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
            Err(kube::Error::Api(e)) if e.code == 409 && attempt < 5 => {
                match pvs.get_opt(&name).await? {
                    Some(latest) => current = latest,
                    None => return Ok(()),
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Before serving: every PV of ours is exported again (adopting directories written by the
/// old provisioner); a PV whose directory is missing gets a `VolumeDataMissing` Warning on
/// the PV and its claim.
pub async fn register_existing(ctx: &Context) -> Result<usize, Error> {
    let pvs: Api<PersistentVolume> = Api::all(ctx.client.clone());
    let mut served = 0;
    let mut missing = 0;
    for pv in pvs.list(&ListParams::default()).await? {
        if !ours(&pv, &ctx.config.name)
            || pv.annotations().get(ANN_PROVISIONER_ID) != Some(&ctx.identity)
        {
            continue;
        }
        let name = pv.name_any();
        let store = Arc::clone(&ctx.store);
        let vol = name.clone();
        let present = tokio::task::spawn_blocking(move || {
            if volumes::present(&store, &vol) {
                volumes::adopt(&store, &vol).map(|_| true)
            } else {
                Ok(false)
            }
        })
        .await??;
        if present {
            served += 1;
            continue;
        }
        missing += 1;
        if ctx.config.on_missing == crate::recovery::OnMissing::Recreate {
            match crate::recovery::recreate_missing(ctx, &pv).await {
                Ok(()) => served += 1,
                Err(e) => warn!(volume = %name, error = %e, "cannot recreate a missing volume"),
            }
            continue;
        }
        let msg = format!(
            "the data directory of volume {name} is missing from the export root {}; the data is \
             lost. `nfs-server-provisioner recover --recreate-missing` gives it an empty directory",
            ctx.store.root().display()
        );
        warn!(volume = %name, "{msg}");
        ctx.recorder
            .record(&pv, Kind::Warning, "VolumeDataMissing", &msg)
            .await;
        if let Some(claim_ref) = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref())
            && let (Some(ns), Some(claim)) = (&claim_ref.namespace, &claim_ref.name)
        {
            let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), ns);
            if let Some(pvc) = claims.get_opt(claim).await? {
                ctx.recorder
                    .record(&pvc, Kind::Warning, "VolumeDataMissing", &msg)
                    .await;
            }
        }
    }
    ctx.config.metrics.missing_volumes.set(missing);
    Ok(served)
}

/// Runs one reconcile, counting it in flight and by result.
async fn counted(
    controller: &'static str,
    reconcile: impl std::future::Future<Output = Result<Action, Error>>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let m = &ctx.config.metrics;
    m.in_flight.inc();
    let result = reconcile.await;
    m.in_flight.dec();
    m.reconciled(controller, result.is_ok());
    result
}

/// Runs the controllers whenever this process leads: each leadership term starts them with
/// fresh watches and caches, and losing the Lease stops them (a follower sends no requests
/// but the Lease's). The janitor runs beside them.
pub async fn run(ctx: Arc<Context>) {
    let terms = async {
        let mut leader = ctx.leader.clone();
        loop {
            loop {
                if *leader.borrow_and_update() {
                    break;
                }
                if leader.changed().await.is_err() {
                    return;
                }
            }
            info!("leading: controllers started");
            term(&ctx).await;
            if ctx.is_leader() {
                // The watches ended on their own (they retry forever, so this is rare).
                tokio::time::sleep(Duration::from_secs(1)).await;
            } else {
                info!("no longer leading: controllers stopped");
            }
        }
    };
    let janitor = async {
        loop {
            tokio::time::sleep(ctx.config.retry_base).await;
            if ctx.is_leader()
                && let Err(e) = sweep_provisional(&ctx).await
            {
                warn!(error = %e, "cannot check provisional volumes");
            }
        }
    };
    tokio::join!(terms, janitor);
}

/// Resolves when this process stops leading.
async fn lease_lost(mut leader: watch::Receiver<bool>) {
    loop {
        if !*leader.borrow_and_update() {
            return;
        }
        if leader.changed().await.is_err() {
            return;
        }
    }
}

/// One leadership term: both controllers and the StorageClass cache, until the Lease is lost.
async fn term(ctx: &Arc<Context>) {
    let claims: Api<PersistentVolumeClaim> = Api::all(ctx.client.clone());
    let pvs: Api<PersistentVolume> = Api::all(ctx.client.clone());
    let classes: Api<StorageClass> = Api::all(ctx.client.clone());
    let claim_controller = Controller::new(claims, watcher::Config::default())
        .graceful_shutdown_on(lease_lost(ctx.leader.clone()));
    let volume_controller = Controller::new(pvs, watcher::Config::default())
        .graceful_shutdown_on(lease_lost(ctx.leader.clone()));
    let (class_store, class_writer) = reflector::store();
    *ctx.caches.lock().unwrap_or_else(|e| e.into_inner()) = Some(Caches {
        claims: claim_controller.store(),
        volumes: volume_controller.store(),
        classes: class_store,
    });
    let class_cache = reflector::reflector(
        class_writer,
        watcher(classes, watcher::Config::default()).default_backoff(),
    )
    .take_until(lease_lost(ctx.leader.clone()))
    .for_each(|_| async {});
    let claim_loop = claim_controller
        .run(
            |pvc, ctx| counted("claim", reconcile_claim(pvc, Arc::clone(&ctx)), ctx),
            error_policy,
            Arc::clone(ctx),
        )
        .for_each(|_| async {});
    let volume_loop = volume_controller
        .run(
            |pv, ctx| counted("volume", reconcile_volume(pv, Arc::clone(&ctx)), ctx),
            error_policy,
            Arc::clone(ctx),
        )
        .for_each(|_| async {});
    tokio::join!(claim_loop, volume_loop, class_cache);
    *ctx.caches.lock().unwrap_or_else(|e| e.into_inner()) = None;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(v: serde_json::Value) -> PersistentVolumeClaim {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn claims_are_planned_from_their_own_fields() {
        let ours = serde_json::json!({"volume.kubernetes.io/storage-provisioner": "p"});
        let pending = claim(serde_json::json!({
            "metadata": {"name": "c", "annotations": ours},
            "spec": {"storageClassName": "nfs"}, "status": {"phase": "Pending"},
        }));
        assert_eq!(
            plan_claim(&pending, "p"),
            ClaimPlan::Provision { class: "nfs" }
        );
        // Another provisioner's, or no class: nothing to do.
        assert_eq!(plan_claim(&pending, "q"), ClaimPlan::Ignore);
        let no_class = claim(serde_json::json!({
            "metadata": {"name": "c", "annotations": ours}, "spec": {},
        }));
        assert_eq!(plan_claim(&no_class, "p"), ClaimPlan::Ignore);
        let bound = claim(serde_json::json!({
            "metadata": {"name": "c"},
            "spec": {"storageClassName": "nfs", "volumeName": "pvc-1"},
            "status": {"phase": "Bound"},
        }));
        assert_eq!(plan_claim(&bound, "p"), ClaimPlan::Expand("pvc-1"));
        // Bound ahead by the binder but not yet Bound, Lost, or being deleted: leave it.
        for (phase, deleting) in [("Pending", false), ("Lost", false), ("Bound", true)] {
            let mut c = claim(serde_json::json!({
                "metadata": {"name": "c", "annotations": ours},
                "spec": {"storageClassName": "nfs", "volumeName": "pvc-1"},
                "status": {"phase": phase},
            }));
            if deleting {
                c.metadata.deletion_timestamp =
                    Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                        k8s_openapi::jiff::Timestamp::now(),
                    ));
            }
            assert_eq!(plan_claim(&c, "p"), ClaimPlan::Ignore, "{phase} {deleting}");
        }
    }
}
