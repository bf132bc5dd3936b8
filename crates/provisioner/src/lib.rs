//! The Kubernetes dynamic provisioner: PersistentVolumeClaims of our StorageClass become
//! volumes in the export store and PersistentVolumes that point at our NFS server.
//!
//! It talks to the NFS side only through `export-store` (add/remove a volume), never through
//! NFS, and the NFS data path never waits for it: if the API server is unreachable or the
//! leader lease is lost, provisioning pauses and serving goes on.
//!
//! - [`params`]: StorageClass parameters;
//! - [`pv`]: the PV built for a claim;
//! - [`identity`]: the identity file shared with the old provisioner;
//! - [`volumes`]: directory + export creation and deletion;
//! - [`events`]: Events on claims and volumes;
//! - [`leader`]: Lease-based leader election;
//! - [`shards`]: several servers behind one StorageClass, and which one takes a claim;
//! - [`controller`]: the reconcile loops;
//! - [`recovery`]: repairs after lost identity, lost data, orphans and a new server address.

pub mod controller;
pub mod events;
pub mod expand;
pub mod identity;
pub mod leader;
pub mod metrics;
pub mod params;
pub mod pv;
pub mod quantity;
pub mod recovery;
pub mod shards;
pub mod volumes;

/// The Kubernetes client [`connect`] returns.
pub use kube::Client;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use export_store::ExportStore;
use k8s_openapi::api::core::v1::PersistentVolume;
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use tokio::sync::watch;
use tracing::{error, info};

/// Connects to the API server: the given kubeconfig, else in-cluster or `$KUBECONFIG`.
pub async fn connect(kubeconfig: Option<&Path>) -> Result<Client, kube::Error> {
    let config = match kubeconfig {
        Some(path) => {
            let kc =
                kube::config::Kubeconfig::read_from(path).map_err(kube::Error::InferKubeconfig)?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(kube::Error::InferKubeconfig)?
        }
        None => kube::Config::infer()
            .await
            .map_err(kube::Error::InferConfig)?,
    };
    Client::try_from(config)
}

/// How the controller takes part in leader election.
#[derive(Clone, Debug)]
pub struct Election {
    pub namespace: String,
    pub holder: String,
    pub timing: leader::Timing,
}

/// Runs the provisioner: re-registers existing volumes (retrying until the API answers),
/// then the controllers, gated by leader election when `election` is given. Never returns
/// while the process serves.
pub async fn run(
    client: Client,
    store: Arc<ExportStore>,
    config: controller::Config,
    identity: String,
    election: Option<Election>,
) {
    run_then(client, store, config, identity, election, || {}).await
}

/// [`run`], calling `registered` once every existing volume is exported again (the moment
/// the process becomes ready for clients).
pub async fn run_then(
    client: Client,
    store: Arc<ExportStore>,
    config: controller::Config,
    identity: String,
    election: Option<Election>,
    registered: impl FnOnce(),
) {
    let (tx, rx) = watch::channel(election.is_none());
    // A shard campaigns for its own Lease, which also announces it to the other shards.
    let (announce_tx, announce_rx) = watch::channel(Default::default());
    let mut renew = leader::Timing::default().renew;
    if let Some(e) = election {
        renew = e.timing.renew;
        let (lease, announce) = match &config.shard {
            Some(shard) => (shards::lease_name(&config.name, shard), Some(announce_rx)),
            None => (leader::lease_name(&config.name), None),
        };
        tokio::spawn(leader::campaign(
            client.clone(),
            e.namespace,
            lease,
            e.holder,
            e.timing,
            tx,
            announce,
        ));
    }
    // Without election the channel keeps its initial `true`: this process always leads.
    let ctx = Arc::new(controller::Context::new(
        client, store, config, identity, rx,
    ));
    if ctx.config.shard.is_some() {
        tokio::spawn(shards::keep_in_touch(Arc::clone(&ctx), announce_tx, renew));
    }
    let (metrics, mut leading) = (Arc::clone(&ctx.config.metrics), ctx.leader.clone());
    tokio::spawn(async move {
        loop {
            metrics.leader.set(i64::from(*leading.borrow_and_update()));
            if leading.changed().await.is_err() {
                break;
            }
        }
    });
    let mut delay = Duration::from_secs(1);
    loop {
        match controller::register_existing(&ctx).await {
            Ok(n) => {
                info!(volumes = n, "existing volumes exported");
                registered();
                break;
            }
            Err(e) => {
                error!(error = %e, retry_in = ?delay, "cannot list PersistentVolumes; NFS keeps serving");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(60));
            }
        }
    }
    // A re-pointing interrupted between delete and create is finished whatever --recover says.
    match recovery::finish_replacements(&ctx).await {
        Ok(0) => {}
        Ok(n) => info!(volumes = n, "finished re-pointing PersistentVolumes"),
        Err(e) => error!(error = %e, "cannot finish re-pointing PersistentVolumes"),
    }
    if ctx.config.recover == recovery::Recover::Auto {
        tokio::spawn(watch_address(Arc::clone(&ctx)));
    }
    controller::run(ctx).await;
}

/// With `--recover=auto`: keeps our PVs naming the server's current address (a recreated
/// Service has a new ClusterIP), checking at start and every `address_check`.
async fn watch_address(ctx: Arc<controller::Context>) {
    loop {
        if *ctx.leader.borrow() {
            let repaired = match ctx.fresh_address().await {
                Ok((addr, true)) => recovery::repoint(&ctx, &addr).await,
                // Our Service is missing right now: wait for it rather than re-point every
                // PV at the pod's own address.
                Ok((_, false)) => Ok(0),
                Err(e) => Err(e.into()),
            };
            match repaired {
                Ok(0) => {}
                Ok(n) => info!(
                    volumes = n,
                    "PersistentVolumes re-pointed at the current server address"
                ),
                Err(e) => {
                    error!(error = %e, "cannot check the server address of our PersistentVolumes")
                }
            }
        }
        tokio::time::sleep(ctx.config.address_check).await;
    }
}

/// One line of `status`.
#[derive(Debug, Clone)]
pub struct StatusRow {
    pub claim: String,
    pub volume: String,
    pub phase: String,
    pub size: String,
    /// Bytes the volume's files use and its enforced limit, when it is exported.
    pub used: Option<u64>,
    pub limit: Option<u64>,
    pub exported: bool,
    pub directory: bool,
    pub identity_match: bool,
}

/// Our volumes as Kubernetes and the export store see them.
pub async fn status(
    client: Client,
    store: &ExportStore,
    provisioner: &str,
    identity: Option<&str>,
) -> Result<Vec<StatusRow>, kube::Error> {
    let pvs: Api<PersistentVolume> = Api::all(client);
    let mut rows = Vec::new();
    for pv in pvs.list(&ListParams::default()).await? {
        if pv
            .annotations()
            .get(pv::ANN_PROVISIONED_BY)
            .map(String::as_str)
            != Some(provisioner)
        {
            continue;
        }
        let name = pv.name_any();
        let spec = pv.spec.clone().unwrap_or_default();
        let claim = spec
            .claim_ref
            .as_ref()
            .map(|c| {
                format!(
                    "{}/{}",
                    c.namespace.clone().unwrap_or_default(),
                    c.name.clone().unwrap_or_default()
                )
            })
            .unwrap_or_else(|| "-".into());
        rows.push(StatusRow {
            claim,
            volume: name.clone(),
            phase: pv
                .status
                .as_ref()
                .and_then(|s| s.phase.clone())
                .unwrap_or_default(),
            size: pv::capacity(&pv).map(|q| q.0.clone()).unwrap_or_default(),
            used: store.volume_by_name(&name).map(|v| v.quota.used()),
            limit: store.volume_by_name(&name).and_then(|v| v.quota.limit()),
            exported: store.volume_by_name(&name).is_some(),
            directory: volumes::present(store, &name),
            identity_match: identity.is_some()
                && pv
                    .annotations()
                    .get(pv::ANN_PROVISIONER_ID)
                    .map(String::as_str)
                    == identity,
        });
    }
    Ok(rows)
}
