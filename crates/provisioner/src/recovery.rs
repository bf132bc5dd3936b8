//! Repairs after the classic disasters, without deleting any claim:
//!
//! - **lost identity**: the identity file is gone but our PVs carry one `Provisioner_Id`:
//!   adopt it (`--recover=auto`) instead of minting a new one that would orphan every PV;
//! - **lost data**: a PV whose directory is missing gets an empty directory and export
//!   (`--on-missing-volume=recreate`, or `recover --recreate-missing`), with Warning Events;
//! - **orphans**: a `pvc-*` directory without a PV can be handed to a claim
//!   (`recover --bind-orphan`) through a PV bound ahead to it;
//! - **new server address**: PVs naming an old address are replaced by identical PVs naming
//!   the current one. PV specs are immutable, so this is delete + create; the PV about to be
//!   created is first written to the export root, so a crash in between is finished at the
//!   next start.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use export_store::ExportStore;
use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use thiserror::Error;
use tracing::{info, warn};

use crate::controller::{Context, Error as ControllerError};
use crate::events::Kind;
use crate::identity;
use crate::params::{self, Params};
use crate::pv::{self, ANN_PROVISIONED_BY, ANN_PROVISIONER_ID, FINALIZER};
use crate::volumes;

/// `--recover`: repair what can be repaired without a person (`auto`), or only report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Recover {
    #[default]
    Auto,
    Off,
}

/// `--on-missing-volume`: what to do with a PV whose directory is gone.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnMissing {
    /// Warning Events only; `recover --recreate-missing` repairs on demand.
    #[default]
    Report,
    /// An empty directory and export, so pods start again (with an empty volume).
    Recreate,
}

#[derive(Debug, Error)]
pub enum RecoveryError {
    #[error(
        "the identity file {file} is missing, and PersistentVolumes of provisioner {provisioner} \
         carry {} identities ({}): refusing to guess. Adopt the right one with \
         `nfs-server-provisioner recover --adopt-identity ID`", ids.len(), ids.join(", ")
    )]
    AmbiguousIdentity {
        file: String,
        provisioner: String,
        ids: Vec<String>,
    },
    #[error(
        "the identity file {file} is missing and PersistentVolumes of provisioner {provisioner} \
         carry identity {id}; --recover=off, so not adopting it. Run \
         `nfs-server-provisioner recover --adopt-identity {id}` to adopt it"
    )]
    IdentityNotAdopted {
        file: String,
        provisioner: String,
        id: String,
    },
    #[error("the export root already has identity {0}; remove {1} first if it is wrong")]
    IdentityExists(String, String),
    #[error("{0:?} is not an identity (expected a UUID like the identity file holds)")]
    BadIdentity(String),
    #[error("directory {0} not found in the export root")]
    NoDirectory(String),
    #[error("{0} is not an orphan: PersistentVolume {0} exists")]
    NotOrphan(String),
    #[error("claim {0} is already bound to volume {1}")]
    ClaimBound(String, String),
    #[error("--claim must be NAMESPACE/NAME, got {0:?}")]
    BadClaim(String),
    #[error("PersistentVolume {0} did not go away within {1:?}")]
    StuckDelete(String, Duration),
    #[error("export root: {0}")]
    Io(#[from] io::Error),
    #[error(transparent)]
    Controller(#[from] ControllerError),
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("export store: {0}")]
    Store(#[from] export_store::StoreError),
}

fn ours<'a>(pvs: &'a [PersistentVolume], provisioner: &str) -> Vec<&'a PersistentVolume> {
    pvs.iter()
        .filter(|pv| {
            pv.annotations().get(ANN_PROVISIONED_BY).map(String::as_str) == Some(provisioner)
        })
        .collect()
}

/// The PVs whose identity replica `pod` may adopt: ours, and held by this replica's export
/// root. PVs recording another pod belong to another replica (whose export root is not
/// ours to speak for); PVs recording none come from before that annotation (the old
/// provisioner, one replica) and count for the first replica (`-0`) or when the pod name is
/// unknown (out of cluster).
pub fn identity_candidates<'a>(
    pvs: &'a [PersistentVolume],
    provisioner: &str,
    pod: Option<&str>,
) -> Vec<&'a PersistentVolume> {
    ours(pvs, provisioner)
        .into_iter()
        .filter(|pv| match (pv.annotations().get(pv::ANN_SERVER_POD), pod) {
            (Some(theirs), Some(me)) => theirs == me,
            (Some(_), None) => true,
            (None, Some(me)) => me.ends_with("-0"),
            (None, None) => true,
        })
        .collect()
}

/// The identity to run as. An existing file wins. Without one: no PV of ours → a new
/// identity; PVs of ours carrying one identity and `Recover::Auto` → that identity, written
/// back (the returned PVs are the ones it was read from, for Events); anything else is an
/// error naming the command that settles it.
pub async fn resolve_identity(
    client: &Client,
    root: &Path,
    provisioner: &str,
    pod: Option<&str>,
    recover: Recover,
) -> Result<(String, Vec<PersistentVolume>), RecoveryError> {
    if let Some(id) = identity::read(root)? {
        return Ok((id, Vec::new()));
    }
    let all = all_volumes(client).await?;
    let mine = identity_candidates(&all, provisioner, pod);
    let ids: BTreeSet<String> = mine
        .iter()
        .filter_map(|pv| pv.annotations().get(ANN_PROVISIONER_ID).cloned())
        .collect();
    let file = root.join(identity::IDENTITY_FILE).display().to_string();
    match (ids.len(), recover) {
        (0, _) => Ok((identity::load_or_create(root)?, Vec::new())),
        (1, Recover::Auto) => {
            let id = ids.into_iter().next().unwrap_or_default();
            adopt_identity(root, &id)?;
            warn!(identity = %id, volumes = mine.len(), "identity file was missing: adopted the identity our PersistentVolumes carry");
            Ok((id, mine.into_iter().cloned().collect()))
        }
        (1, Recover::Off) => Err(RecoveryError::IdentityNotAdopted {
            file,
            provisioner: provisioner.to_owned(),
            id: ids.into_iter().next().unwrap_or_default(),
        }),
        _ => Err(RecoveryError::AmbiguousIdentity {
            file,
            provisioner: provisioner.to_owned(),
            ids: ids.into_iter().collect(),
        }),
    }
}

/// [`resolve_identity`] until it succeeds (every 10 s: the API may be down, or an operator
/// has to run `recover --adopt-identity`), with an `IdentityRecovered` Warning on each PV an
/// identity was adopted from.
pub async fn settle_identity(
    client: &Client,
    root: &Path,
    provisioner: &str,
    pod: Option<&str>,
    recover: Recover,
) -> String {
    loop {
        match resolve_identity(client, root, provisioner, pod, recover).await {
            Ok((id, adopted_from)) => {
                let recorder = crate::events::Recorder::new(client.clone(), provisioner);
                for pv in &adopted_from {
                    let msg = format!(
                        "the export root had lost its identity file; this server adopted identity \
                         {id} from its PersistentVolumes instead of minting a new one"
                    );
                    recorder
                        .record(pv, Kind::Warning, "IdentityRecovered", &msg)
                        .await;
                }
                return id;
            }
            Err(e) => {
                tracing::error!(error = %e, "not provisioning yet; checking again in 10 s");
                tokio::time::sleep(Duration::from_secs(10)).await;
            }
        }
    }
}

/// Writes `id` as the export root's identity; refuses to replace a different one.
pub fn adopt_identity(root: &Path, id: &str) -> Result<(), RecoveryError> {
    let well_formed = id.len() <= 64
        && !id.is_empty()
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if !well_formed {
        return Err(RecoveryError::BadIdentity(id.to_owned()));
    }
    match identity::read(root)? {
        Some(existing) if existing == id => Ok(()),
        Some(existing) => Err(RecoveryError::IdentityExists(
            existing,
            root.join(identity::IDENTITY_FILE).display().to_string(),
        )),
        None => {
            export_store::registry::write_atomically(
                &root.join(identity::IDENTITY_FILE),
                id.as_bytes(),
                0o600,
            )?;
            Ok(())
        }
    }
}

/// The class parameters a volume was provisioned with (defaults when the class is gone).
async fn class_of(ctx: &Context, pv: &PersistentVolume) -> (Option<StorageClass>, Params) {
    let Some(name) = pv.spec.as_ref().and_then(|s| s.storage_class_name.clone()) else {
        return (None, Params::default());
    };
    match Api::<StorageClass>::all(ctx.client.clone())
        .get_opt(&name)
        .await
    {
        Ok(Some(class)) => {
            let params =
                params::parse(&class.parameters.clone().unwrap_or_default()).unwrap_or_default();
            (Some(class), params)
        }
        _ => (None, Params::default()),
    }
}

/// Gives the PV an empty directory and a fresh export (new generation: handles of the lost
/// directory are stale), then says on the PV and its claim that the data was lost.
pub async fn recreate_missing(ctx: &Context, pv: &PersistentVolume) -> Result<(), RecoveryError> {
    let name = pv.name_any();
    let (_, params) = class_of(ctx, pv).await;
    let read_only = pv
        .spec
        .as_ref()
        .and_then(|s| s.access_modes.as_ref())
        .is_some_and(|m| m.len() == 1 && m[0] == "ReadOnlyMany");
    let size = pv::capacity_bytes(pv);
    let store = Arc::clone(&ctx.store);
    let vol = name.clone();
    tokio::task::spawn_blocking(move || {
        // A registered volume whose directory vanished still holds the old inode open.
        match store.remove_volume(&vol) {
            Ok(_)
            | Err(export_store::StoreError::Registry(
                export_store::registry::RegistryError::NotFound(_),
            )) => {}
            Err(e) => return Err(e),
        }
        volumes::provision(&store, &vol, &params, read_only, size)
    })
    .await
    .map_err(ControllerError::from)??;
    let msg = format!(
        "the data directory of volume {name} was missing from the export root; an empty one was \
         created so pods can mount it again: the data it held is lost"
    );
    warn!(volume = %name, "{msg}");
    record_on_pv_and_claim(ctx, pv, "VolumeRecreated", &msg).await;
    Ok(())
}

/// A Warning on the PV and on its claim (if it still exists).
pub async fn record_on_pv_and_claim(ctx: &Context, pv: &PersistentVolume, reason: &str, msg: &str) {
    ctx.recorder.record(pv, Kind::Warning, reason, msg).await;
    if let Some(claim_ref) = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref())
        && let (Some(ns), Some(claim)) = (&claim_ref.namespace, &claim_ref.name)
    {
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), ns);
        if let Ok(Some(pvc)) = claims.get_opt(claim).await {
            ctx.recorder.record(&pvc, Kind::Warning, reason, msg).await;
        }
    }
}

/// Every PersistentVolume in the cluster.
async fn all_volumes(client: &Client) -> Result<Vec<PersistentVolume>, kube::Error> {
    Ok(Api::<PersistentVolume>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items)
}

/// Our PVs (provisioner name and identity) that are not being deleted.
async fn live_volumes(ctx: &Context) -> Result<Vec<PersistentVolume>, kube::Error> {
    Ok(all_volumes(&ctx.client)
        .await?
        .into_iter()
        .filter(|pv| is_ours(pv, ctx) && pv.metadata.deletion_timestamp.is_none())
        .collect())
}

/// Our PVs whose directory is missing.
pub async fn missing_volumes(ctx: &Context) -> Result<Vec<PersistentVolume>, RecoveryError> {
    Ok(live_volumes(ctx)
        .await?
        .into_iter()
        .filter(|pv| !volumes::present(&ctx.store, &pv.name_any()))
        .collect())
}

fn is_ours(pv: &PersistentVolume, ctx: &Context) -> bool {
    pv.annotations().get(ANN_PROVISIONED_BY) == Some(&ctx.config.name)
        && pv.annotations().get(ANN_PROVISIONER_ID) == Some(&ctx.identity)
}

/// Volume directories (`pvc-*`) in the export root with no PV of that name.
pub fn orphans(root: &Path, pvs: &[PersistentVolume]) -> io::Result<Vec<String>> {
    let names: BTreeSet<String> = pvs.iter().map(|pv| pv.name_any()).collect();
    let mut out = Vec::new();
    for entry in std::fs::read_dir(root)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("pvc-") && entry.file_type()?.is_dir() && !names.contains(&name) {
            out.push(name);
        }
    }
    out.sort();
    Ok(out)
}

/// What `recover --bind-orphan` needs besides the context.
#[derive(Clone, Debug)]
pub struct Orphan {
    pub directory: String,
    pub claim_namespace: String,
    pub claim_name: String,
    /// Class of the PV when the claim does not exist yet.
    pub storage_class: String,
    /// Capacity when the claim does not exist yet.
    pub size: String,
}

/// Parses `NAMESPACE/NAME`.
pub fn parse_claim(s: &str) -> Result<(String, String), RecoveryError> {
    match s.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((ns.to_owned(), name.to_owned()))
        }
        _ => Err(RecoveryError::BadClaim(s.to_owned())),
    }
}

/// Hands an orphaned directory to a claim: exports it and creates a PV named after it,
/// bound ahead to the claim (which may be Pending, or created afterwards with the same
/// name, class and a request no larger than the PV).
pub async fn bind_orphan(
    ctx: &Context,
    orphan: &Orphan,
) -> Result<PersistentVolume, RecoveryError> {
    let dir = &orphan.directory;
    export_store::registry::validate_name(dir)
        .map_err(|_| RecoveryError::NoDirectory(dir.clone()))?;
    if !volumes::present(&ctx.store, dir) {
        return Err(RecoveryError::NoDirectory(dir.clone()));
    }
    let pvs: Api<PersistentVolume> = Api::all(ctx.client.clone());
    if pvs.get_opt(dir).await?.is_some() {
        return Err(RecoveryError::NotOrphan(dir.clone()));
    }
    let claims: Api<PersistentVolumeClaim> =
        Api::namespaced(ctx.client.clone(), &orphan.claim_namespace);
    let claim = claims.get_opt(&orphan.claim_name).await?;
    let label = format!("{}/{}", orphan.claim_namespace, orphan.claim_name);
    let spec = claim
        .as_ref()
        .and_then(|c| c.spec.clone())
        .unwrap_or_default();
    if let Some(bound) = spec
        .volume_name
        .as_ref()
        .filter(|v| !v.is_empty() && *v != dir)
    {
        return Err(RecoveryError::ClaimBound(label, bound.clone()));
    }
    let class_name = spec
        .storage_class_name
        .clone()
        .unwrap_or_else(|| orphan.storage_class.clone());
    let class = Api::<StorageClass>::all(ctx.client.clone())
        .get_opt(&class_name)
        .await?
        .unwrap_or_else(|| StorageClass {
            metadata: kube::api::ObjectMeta {
                name: Some(class_name.clone()),
                ..Default::default()
            },
            provisioner: ctx.config.name.clone(),
            ..Default::default()
        });
    let params = params::parse(&class.parameters.clone().unwrap_or_default()).unwrap_or_default();
    let size = claim
        .as_ref()
        .and_then(pv::claim_request)
        .cloned()
        .unwrap_or_else(|| Quantity(orphan.size.clone()));
    let access_modes = spec
        .access_modes
        .clone()
        .unwrap_or_else(|| vec!["ReadWriteMany".to_owned()]);
    let server = ctx.server_address().await?;
    let store = Arc::clone(&ctx.store);
    let (vol, p) = (dir.clone(), params.clone());
    let limit = crate::quantity::bytes(&size.0).ok();
    tokio::task::spawn_blocking(move || match store.volume_by_name(&vol) {
        Some(_) => Ok(()),
        None => store
            .add_volume(&vol, volume_options(&p, limit))
            .map(|_| ()),
    })
    .await
    .map_err(ControllerError::from)??;
    let placeholder = PersistentVolumeClaim::default();
    let volume = pv::build_prebound(
        &pv::PvInput {
            pvc: claim.as_ref().unwrap_or(&placeholder),
            class: &class,
            params: &params,
            provisioner: &ctx.config.name,
            identity: &ctx.identity,
            server: &server,
            pod: ctx.config.pod_name.as_deref(),
        },
        dir,
        size,
        access_modes,
        ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("PersistentVolumeClaim".into()),
            namespace: Some(orphan.claim_namespace.clone()),
            name: Some(orphan.claim_name.clone()),
            uid: claim.as_ref().and_then(|c| c.metadata.uid.clone()),
            ..Default::default()
        },
    );
    let created = pvs.create(&PostParams::default(), &volume).await?;
    info!(volume = %dir, claim = %label, "orphaned directory bound to a claim");
    ctx.recorder
        .record(
            &created,
            Kind::Normal,
            "OrphanBound",
            &format!("directory {dir} of the export root was handed to claim {label}"),
        )
        .await;
    Ok(created)
}

fn volume_options(p: &Params, size: Option<u64>) -> export_store::VolumeOptions {
    export_store::VolumeOptions {
        read_only: false,
        squash: p.squash,
        anonuid: p.anonuid.unwrap_or(65534),
        anongid: p.anongid.unwrap_or(65534),
        size,
        clients: p.clients.clone(),
        secure: p.secure,
        asynchronous: p.asynchronous,
    }
}

/// Where replacements in progress are kept (one JSON PV per file).
fn pending_dir(root: &Path) -> PathBuf {
    root.join(".nfs-server-provisioner/replacing")
}

/// Our PVs naming another server than `address`.
pub async fn stale_addresses(
    ctx: &Context,
    address: &str,
) -> Result<Vec<PersistentVolume>, RecoveryError> {
    Ok(live_volumes(ctx)
        .await?
        .into_iter()
        .filter(|pv| {
            pv.spec
                .as_ref()
                .and_then(|s| s.nfs.as_ref())
                .is_some_and(|n| n.server != address)
        })
        .collect())
}

/// Replaces each of our PVs naming another server by one naming `address`: same name,
/// claimRef, capacity, class, options and annotations. Returns how many were replaced.
pub async fn repoint(ctx: &Context, address: &str) -> Result<usize, RecoveryError> {
    finish_replacements(ctx).await?;
    let stale = stale_addresses(ctx, address).await?;
    let mut rebinding = Vec::new();
    for pv in &stale {
        rebinding.extend(replace(ctx, pv, address).await?);
    }
    // Until each claim is Bound again (a `recover` command must not exit before).
    for task in rebinding {
        let _ = task.await;
    }
    Ok(stale.len())
}

/// Replaces one PV; returns the task that brings its claim back to `Bound`.
async fn replace(
    ctx: &Context,
    old: &PersistentVolume,
    address: &str,
) -> Result<Option<tokio::task::JoinHandle<()>>, RecoveryError> {
    let name = old.name_any();
    let from = old
        .spec
        .as_ref()
        .and_then(|s| s.nfs.as_ref())
        .map(|n| n.server.clone())
        .unwrap_or_default();
    let mut fresh = old.clone();
    fresh.metadata = kube::api::ObjectMeta {
        name: Some(name.clone()),
        labels: old.metadata.labels.clone(),
        annotations: old.metadata.annotations.clone(),
        finalizers: Some(vec![FINALIZER.to_owned()]),
        ..Default::default()
    };
    fresh.status = None;
    if let Some(spec) = fresh.spec.as_mut() {
        if let Some(nfs) = spec.nfs.as_mut() {
            nfs.server = address.to_owned();
        }
        if let Some(c) = spec.claim_ref.as_mut() {
            c.resource_version = None;
        }
    }
    // The intent first: if we stop between delete and create, the next start creates it.
    let dir = pending_dir(ctx.store.root());
    std::fs::create_dir_all(&dir)?;
    let body = serde_json::to_vec(&fresh).map_err(io::Error::other)?;
    export_store::registry::write_atomically(&dir.join(format!("{name}.json")), &body, 0o600)?;

    let pvs: Api<PersistentVolume> = Api::all(ctx.client.clone());
    match pvs.delete(&name, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => return Err(e.into()),
    }
    // Bound PVs are held by kube-controller-manager's pv-protection finalizer and ours; the
    // claim is not going away, only the object naming the old address.
    let clear = serde_json::json!({"metadata": {"finalizers": null}});
    match pvs
        .patch(&name, &PatchParams::default(), &Patch::Merge(&clear))
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => return Err(e.into()),
    }
    let wait = Duration::from_secs(30);
    let deadline = tokio::time::Instant::now() + wait;
    while pvs.get_opt(&name).await?.is_some() {
        if tokio::time::Instant::now() > deadline {
            return Err(RecoveryError::StuckDelete(name, wait));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    finish_replacements(ctx).await?;
    let rebinding = old
        .spec
        .as_ref()
        .and_then(|s| s.claim_ref.clone())
        .map(|claim| tokio::spawn(rebind_claim(ctx.client.clone(), name.clone(), claim)));
    let msg = format!(
        "server address changed from {from} to {address}: PersistentVolume recreated with the new address; pods using it must remount (restart them)"
    );
    info!(volume = %name, %from, to = %address, "PersistentVolume re-pointed");
    if let Some(created) = pvs.get_opt(&name).await? {
        ctx.recorder
            .record(&created, Kind::Warning, "ServerAddressChanged", &msg)
            .await;
    }
    Ok(rebinding)
}

/// While its PV was being replaced, kube-controller-manager saw the claim's volume missing and
/// marked the claim `Lost`; it would mark it `Bound` again only at its next periodic resync of
/// claims (15 s by default). The PV is back, bound to the same claim uid, so the claim is set
/// `Bound` now, as the binder itself does for a claim whose volume reappears. Only a claim
/// that is still this PV's (same uid and volumeName) and `Lost` is touched, with a
/// resourceVersion precondition; the binder may well get there first. The claim is watched
/// until it has stayed `Bound` for two seconds (the binder may mark it `Lost` late), at most
/// for the binder's resync period.
async fn rebind_claim(client: Client, volume: String, claim: ObjectReference) {
    let volume = volume.as_str();
    let (Some(ns), Some(name)) = (claim.namespace.as_deref(), claim.name.as_deref()) else {
        return;
    };
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client, ns);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let mut bound_since = None;
    while tokio::time::Instant::now() < deadline {
        let Ok(Some(pvc)) = claims.get_opt(name).await else {
            return;
        };
        if claim.uid.is_some() && pvc.metadata.uid != claim.uid
            || pvc.spec.as_ref().and_then(|s| s.volume_name.as_deref()) != Some(volume)
        {
            return;
        }
        match pvc.status.as_ref().and_then(|s| s.phase.as_deref()) {
            Some("Bound") => {
                let since = *bound_since.get_or_insert_with(tokio::time::Instant::now);
                if since.elapsed() >= Duration::from_secs(2) {
                    return;
                }
            }
            Some("Lost") => {
                bound_since = None;
                let patch = serde_json::json!({
                    "metadata": {"resourceVersion": pvc.metadata.resource_version},
                    "status": {"phase": "Bound"},
                });
                match claims
                    .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => info!(claim = %format!("{ns}/{name}"), %volume, "claim Bound again"),
                    // Changed meanwhile (the binder): look again.
                    Err(kube::Error::Api(e)) if e.code == 409 => {}
                    Err(e) => {
                        warn!(claim = %format!("{ns}/{name}"), error = %e, "cannot mark claim Bound; the controller-manager will at its next resync");
                        return;
                    }
                }
            }
            // Not marked Lost yet: the binder may still do so (it saw the delete).
            _ => bound_since = None,
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Creates every PV a replacement left pending (after a crash between delete and create).
pub async fn finish_replacements(ctx: &Context) -> Result<usize, RecoveryError> {
    let dir = pending_dir(ctx.store.root());
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e.into()),
    };
    let pvs: Api<PersistentVolume> = Api::all(ctx.client.clone());
    let mut done = 0;
    for entry in entries {
        let path = entry?.path();
        let Ok(pv) = serde_json::from_slice::<PersistentVolume>(&std::fs::read(&path)?) else {
            warn!(file = %path.display(), "unreadable pending PersistentVolume; leaving it");
            continue;
        };
        match pvs.get_opt(&pv.name_any()).await? {
            // The old object is still being deleted: not yet.
            Some(existing) if existing.metadata.deletion_timestamp.is_some() => continue,
            Some(_) => {}
            None => match pvs.create(&PostParams::default(), &pv).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 409 => continue,
                Err(e) => return Err(e.into()),
            },
        }
        std::fs::remove_file(&path)?;
        done += 1;
    }
    Ok(done)
}

/// One problem `status` reports, with the command that fixes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub what: String,
    pub fix: String,
}

/// Everything wrong that this module knows how to fix (or explain). PVs carrying one of
/// `siblings` (the other shards' identities) are theirs, not a problem.
pub async fn problems(
    client: &Client,
    store: &ExportStore,
    provisioner: &str,
    identity: Option<&str>,
    address: Option<&str>,
    siblings: &[String],
) -> Result<Vec<Problem>, RecoveryError> {
    let all = all_volumes(client).await?;
    let mine = ours(&all, provisioner);
    let mut out = Vec::new();
    let ids: BTreeMap<String, usize> = mine.iter().fold(BTreeMap::new(), |mut m, pv| {
        if let Some(id) = pv.annotations().get(ANN_PROVISIONER_ID) {
            *m.entry(id.clone()).or_default() += 1;
        }
        m
    });
    match identity {
        None if !ids.is_empty() => out.push(Problem {
            what: format!(
                "the identity file is missing; PersistentVolumes carry identities {:?}",
                ids.keys().collect::<Vec<_>>()
            ),
            fix: format!(
                "nfs-server-provisioner recover --adopt-identity {}",
                ids.keys().next().map(String::as_str).unwrap_or("ID")
            ),
        }),
        Some(id) => {
            for (other, n) in ids
                .iter()
                .filter(|(k, _)| k.as_str() != id && !siblings.contains(k))
            {
                out.push(Problem {
                    what: format!(
                        "{n} PersistentVolume(s) carry identity {other}, not this server's {id}: never touched"
                    ),
                    fix: format!(
                        "none if they belong to another server; if this export root lost its identity, \
                         remove its identity file and run: nfs-server-provisioner recover --adopt-identity {other}"
                    ),
                });
            }
        }
        None => {}
    }
    for pv in &mine {
        let name = pv.name_any();
        let is_mine = identity.is_some()
            && pv.annotations().get(ANN_PROVISIONER_ID).map(String::as_str) == identity;
        if !is_mine || pv.metadata.deletion_timestamp.is_some() {
            continue;
        }
        if !volumes::present(store, &name) {
            out.push(Problem {
                what: format!("volume {name}: its directory is missing (the data is lost)"),
                fix: "nfs-server-provisioner recover --recreate-missing".into(),
            });
        }
        let server = pv
            .spec
            .as_ref()
            .and_then(|s| s.nfs.as_ref())
            .map(|n| n.server.as_str());
        if let (Some(addr), Some(server)) = (address, server)
            && addr != server
        {
            out.push(Problem {
                what: format!("volume {name} names server {server}, but this server is {addr}"),
                fix: format!("nfs-server-provisioner recover --server-address {addr}"),
            });
        }
    }
    for dir in orphans(store.root(), &all)? {
        out.push(Problem {
            what: format!("directory {dir} has no PersistentVolume (orphaned data)"),
            fix: format!(
                "nfs-server-provisioner recover --bind-orphan {dir} --claim NAMESPACE/NAME"
            ),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pv_of(name: &str, provisioner: &str, pod: Option<&str>) -> PersistentVolume {
        let mut ann = BTreeMap::from([
            (ANN_PROVISIONED_BY.to_owned(), provisioner.to_owned()),
            (ANN_PROVISIONER_ID.to_owned(), format!("id-{name}")),
        ]);
        if let Some(p) = pod {
            ann.insert(pv::ANN_SERVER_POD.to_owned(), p.to_owned());
        }
        PersistentVolume {
            metadata: kube::api::ObjectMeta {
                name: Some(name.to_owned()),
                annotations: Some(ann),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn a_replica_adopts_only_the_identity_of_its_own_volumes() {
        let pvs = [
            pv_of("a", "p", Some("nfs-0")),
            pv_of("b", "p", Some("nfs-1")),
            pv_of("old", "p", None),
            pv_of("other", "q", Some("nfs-1")),
        ];
        let names = |pod: Option<&str>| -> Vec<String> {
            identity_candidates(&pvs, "p", pod)
                .into_iter()
                .map(|p| p.name_any())
                .collect()
        };
        assert_eq!(names(Some("nfs-0")), ["a", "old"]);
        assert_eq!(names(Some("nfs-1")), ["b"]);
        // A new replica whose volumes do not exist yet adopts nothing: a new identity.
        assert!(names(Some("nfs-2")).is_empty());
        assert_eq!(names(None), ["a", "b", "old"]);
    }

    #[test]
    fn claims_are_namespace_slash_name() {
        assert_eq!(
            parse_claim("apps/data").unwrap(),
            ("apps".into(), "data".into())
        );
        for bad in ["data", "/data", "apps/", "a/b/c"] {
            assert!(parse_claim(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_identity_is_adopted_once_and_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let id = "6f1f2a3b-0000-4000-8000-00000000abcd";
        adopt_identity(dir.path(), id).unwrap();
        adopt_identity(dir.path(), id).unwrap();
        assert_eq!(identity::read(dir.path()).unwrap().as_deref(), Some(id));
        assert!(matches!(
            adopt_identity(dir.path(), "0c4a3b52-1111-4222-8333-444455556666"),
            Err(RecoveryError::IdentityExists(..))
        ));
        assert!(matches!(
            adopt_identity(tempfile::tempdir().unwrap().path(), "../../etc"),
            Err(RecoveryError::BadIdentity(_))
        ));
    }

    #[test]
    fn orphans_are_pvc_directories_without_a_pv() {
        let dir = tempfile::tempdir().unwrap();
        for d in ["pvc-a", "pvc-b", "archived-pvc-c-1", "v4recov"] {
            std::fs::create_dir(dir.path().join(d)).unwrap();
        }
        std::fs::write(dir.path().join("pvc-file"), b"").unwrap();
        let pv = PersistentVolume {
            metadata: kube::api::ObjectMeta {
                name: Some("pvc-a".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        assert_eq!(
            orphans(dir.path(), &[pv]).unwrap(),
            vec!["pvc-b".to_owned()]
        );
    }
}
