//! Online expansion: a bound claim of ours whose storage request grows gets the new size as
//! its volume's limit at once (the export store's limit, which NFS clients see in `df` without
//! remounting), then the PV's `spec.capacity` and the claim's `status.capacity`, and an Event.
//! Shrinking is refused with an Event. Every step is idempotent, so a retry after a crash
//! between two of them finishes the job.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::info;

use crate::controller::{Context, Error};
use crate::events::Kind;
use crate::pv::{self, ANN_PROVISIONED_BY};

/// Event reasons, the ones Kubernetes' own resizer uses.
pub const RESIZED: &str = "VolumeResizeSuccessful";
pub const RESIZE_FAILED: &str = "VolumeResizeFailed";

/// The claim's capacity as its status states it.
fn status_capacity(pvc: &PersistentVolumeClaim) -> Option<String> {
    pvc.status
        .as_ref()?
        .capacity
        .as_ref()?
        .get("storage")
        .map(|q| q.0.clone())
}

/// Brings a bound claim's volume to the claim's requested size (see the module comment).
pub async fn reconcile(
    pvc: &PersistentVolumeClaim,
    volume: &str,
    ctx: &Context,
) -> Result<Action, Error> {
    // From the watched PVs: a claim bound to someone else's PV costs no request. A PV the
    // watch has not delivered yet (just created) is read from the API: nothing would bring
    // this claim back once the watch catches up.
    let pv = match ctx.volume(volume).await? {
        Some(pv) => pv,
        None => match Api::<PersistentVolume>::all(ctx.client.clone())
            .get_opt(volume)
            .await?
        {
            Some(pv) => pv,
            None => return Ok(Action::await_change()),
        },
    };
    // Only the server (shard) whose identity the PV carries resizes it.
    if pv.annotations().get(ANN_PROVISIONED_BY) != Some(&ctx.config.name)
        || pv.annotations().get(pv::ANN_PROVISIONER_ID) != Some(&ctx.identity)
        || pv
            .spec
            .as_ref()
            .and_then(|s| s.claim_ref.as_ref())
            .and_then(|c| c.uid.as_deref())
            .is_some_and(|uid| Some(uid) != pvc.meta().uid.as_deref())
    {
        return Ok(Action::await_change());
    }
    let Some(vol) = ctx.store.volume_by_name(volume) else {
        return Ok(Action::await_change());
    };
    let Ok(wanted) = pv::claim_bytes(pvc) else {
        return Ok(Action::await_change());
    };
    let Some(current) = pv::capacity_bytes(&pv) else {
        return Ok(Action::await_change());
    };
    let request = pv::claim_request(pvc).cloned().unwrap_or_default();
    if wanted < current {
        ctx.recorder
            .record(
                pvc,
                Kind::Warning,
                RESIZE_FAILED,
                &format!(
                    "volume {volume} cannot shrink from {current} to {wanted} bytes; the request \
                     stays above the volume's size"
                ),
            )
            .await;
        return Ok(Action::await_change());
    }
    let grown = wanted > current;
    if grown {
        let class_name = pvc
            .spec
            .as_ref()
            .and_then(|s| s.storage_class_name.clone())
            .unwrap_or_default();
        let allowed = Api::<StorageClass>::all(ctx.client.clone())
            .get_opt(&class_name)
            .await?
            .and_then(|c| c.allow_volume_expansion)
            .unwrap_or(false);
        if !allowed {
            ctx.recorder
                .record(
                    pvc,
                    Kind::Warning,
                    RESIZE_FAILED,
                    &format!(
                        "StorageClass \"{class_name}\" does not allow volume expansion \
                         (allowVolumeExpansion: true; Helm: storageClass.allowVolumeExpansion)"
                    ),
                )
                .await;
            return Ok(Action::await_change());
        }
    }
    // A volume from before sizes were enforced (or adopted from the old provisioner) gets
    // its claim's size as a limit only if its files fit: cutting off a running application
    // at upgrade time would be worse than leaving one oversized volume, which is reported.
    if vol.quota.limit().is_none() && !grown && vol.quota.used() > wanted {
        ctx.recorder
            .record(
                pvc,
                Kind::Warning,
                RESIZE_FAILED,
                &format!(
                    "volume {volume} already uses {} bytes, more than the claim's {wanted}: its \
                     size is not enforced until the claim grows or files are removed",
                    vol.quota.used()
                ),
            )
            .await;
        return Ok(Action::await_change());
    }
    // The limit first: from here on clients may use the new space, even if the API calls
    // below fail and are retried.
    if vol.quota.limit().is_none_or(|l| l < wanted) {
        let store = Arc::clone(&ctx.store);
        let name = volume.to_owned();
        tokio::task::spawn_blocking(move || store.resize_volume(&name, wanted)).await??;
    }
    if grown {
        let patch = json!({"spec": {"capacity": {"storage": request.0}}});
        Api::<PersistentVolume>::all(ctx.client.clone())
            .patch(volume, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }
    let pv_size = if grown {
        request.0.clone()
    } else {
        pv::capacity(&pv).map(|q| q.0.clone()).unwrap_or_default()
    };
    let claim_size = status_capacity(pvc);
    let claim_behind = claim_size
        .as_deref()
        .and_then(|s| crate::quantity::bytes(s).ok())
        .is_none_or(|b| b < wanted);
    if claim_behind {
        let claims: Api<PersistentVolumeClaim> =
            Api::namespaced(ctx.client.clone(), &pvc.namespace().unwrap_or_default());
        let patch = json!({"status": {"capacity": {"storage": pv_size}}});
        claims
            .patch_status(
                &pvc.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
        info!(volume, size = %pv_size, "volume expanded");
        ctx.recorder
            .record(
                pvc,
                Kind::Normal,
                RESIZED,
                &format!(
                    "volume {volume} resized to {pv_size} ({wanted} bytes) without remounting"
                ),
            )
            .await;
    }
    Ok(Action::await_change())
}
