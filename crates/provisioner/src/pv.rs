//! Building the PersistentVolume for a claim, exactly as the old provisioner's library did
//! (name `pvc-<uid>`, `pv.kubernetes.io/provisioned-by`, `Provisioner_Id`, claimRef with the
//! claim's uid, capacity, access modes, reclaim policy, mount options, class name), plus our
//! own annotation recording the class's `onDelete` so deletion works after the class is gone.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    NFSVolumeSource, ObjectReference, PersistentVolume, PersistentVolumeClaim, PersistentVolumeSpec,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use thiserror::Error;

use crate::params::Params;

pub const ANN_PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
pub const ANN_PROVISIONER_ID: &str = "Provisioner_Id";
pub const ANN_CREATED_BY: &str = "kubernetes.io/createdby";
pub const CREATED_BY: &str = "nfs-dynamic-provisioner";
pub const ANN_MOUNT_OPTIONS: &str = "volume.beta.kubernetes.io/mount-options";
/// Our record of the class's `onDelete` at provisioning time.
pub const ANN_ON_DELETE: &str = "nfs-server-provisioner/on-delete";
/// The pod (`$POD_NAME`, a StatefulSet replica) whose export root holds the volume: a replica
/// that lost its identity adopts only the identity of its own PVs.
pub const ANN_SERVER_POD: &str = "nfs-server-provisioner/server-pod";
/// The claim annotations naming the provisioner that should act.
pub const ANN_STORAGE_PROVISIONER: &str = "volume.kubernetes.io/storage-provisioner";
pub const ANN_STORAGE_PROVISIONER_BETA: &str = "volume.beta.kubernetes.io/storage-provisioner";
/// Keeps a PV object until its data has been handled.
pub const FINALIZER: &str = "external-provisioner.volume.kubernetes.io/finalizer";
/// Where volumes appear on the wire.
pub const EXPORT_PREFIX: &str = "/export";

/// Why a claim cannot get a volume (each becomes a `ProvisioningFailed` Event).
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ClaimError {
    #[error("claim Selector is not supported")]
    Selector,
    #[error("volumeMode Block is not supported: this provisioner only provides file systems")]
    Block,
    #[error("claim has no uid")]
    NoUid,
    #[error("claim requests no storage size")]
    NoSize,
    #[error("claim's storage request: {0}")]
    BadSize(#[from] crate::quantity::BadQuantity),
}

/// The claim's storage request in bytes: the volume's size limit.
pub fn claim_bytes(pvc: &PersistentVolumeClaim) -> Result<u64, ClaimError> {
    let q = claim_request(pvc).ok_or(ClaimError::NoSize)?;
    Ok(crate::quantity::bytes(&q.0)?)
}

/// The claim's storage request (`spec.resources.requests.storage`).
pub fn claim_request(pvc: &PersistentVolumeClaim) -> Option<&Quantity> {
    pvc.spec
        .as_ref()?
        .resources
        .as_ref()?
        .requests
        .as_ref()?
        .get("storage")
}

/// A PV's capacity (`spec.capacity.storage`).
pub fn capacity(pv: &PersistentVolume) -> Option<&Quantity> {
    pv.spec.as_ref()?.capacity.as_ref()?.get("storage")
}

/// A PV's capacity in bytes, if it states one that parses.
pub fn capacity_bytes(pv: &PersistentVolume) -> Option<u64> {
    crate::quantity::bytes(&capacity(pv)?.0).ok()
}

/// The volume (directory and PV) name for a claim: `pvc-<uid>`.
pub fn volume_name(pvc: &PersistentVolumeClaim) -> Result<String, ClaimError> {
    pvc.metadata
        .uid
        .as_deref()
        .map(|uid| format!("pvc-{uid}"))
        .ok_or(ClaimError::NoUid)
}

/// Checks what the old provisioner refused outright.
pub fn check_claim(pvc: &PersistentVolumeClaim) -> Result<(), ClaimError> {
    let spec = pvc.spec.as_ref();
    if spec.and_then(|s| s.selector.as_ref()).is_some() {
        return Err(ClaimError::Selector);
    }
    if spec.and_then(|s| s.volume_mode.as_deref()) == Some("Block") {
        return Err(ClaimError::Block);
    }
    Ok(())
}

/// Whether a claim asks only for read-only access (then its export is read-only).
pub fn read_only_claim(pvc: &PersistentVolumeClaim) -> bool {
    let modes = pvc
        .spec
        .as_ref()
        .and_then(|s| s.access_modes.clone())
        .unwrap_or_default();
    !modes.is_empty() && modes.iter().all(|m| m == "ReadOnlyMany")
}

/// Everything a PV is made from.
pub struct PvInput<'a> {
    pub pvc: &'a PersistentVolumeClaim,
    pub class: &'a StorageClass,
    pub params: &'a Params,
    pub provisioner: &'a str,
    pub identity: &'a str,
    pub server: &'a str,
    /// This replica's pod name, when known.
    pub pod: Option<&'a str>,
}

/// The PV for a claim.
pub fn build(input: &PvInput<'_>) -> Result<PersistentVolume, ClaimError> {
    let pvc = input.pvc;
    let name = volume_name(pvc)?;
    let spec = pvc.spec.clone().unwrap_or_default();
    let size = claim_request(pvc).cloned().ok_or(ClaimError::NoSize)?;
    let claim_ref = ObjectReference {
        api_version: Some("v1".to_owned()),
        kind: Some("PersistentVolumeClaim".to_owned()),
        namespace: pvc.metadata.namespace.clone(),
        name: pvc.metadata.name.clone(),
        uid: pvc.metadata.uid.clone(),
        resource_version: pvc.metadata.resource_version.clone(),
        ..ObjectReference::default()
    };
    Ok(assemble(input, &name, size, spec.access_modes, claim_ref))
}

/// The PV for volume directory `name`, bound ahead to `claim_ref`: how an orphaned directory
/// is handed to a claim that may not exist yet.
pub fn build_prebound(
    input: &PvInput<'_>,
    name: &str,
    size: Quantity,
    access_modes: Vec<String>,
    claim_ref: ObjectReference,
) -> PersistentVolume {
    assemble(input, name, size, Some(access_modes), claim_ref)
}

fn assemble(
    input: &PvInput<'_>,
    name: &str,
    size: Quantity,
    access_modes: Option<Vec<String>>,
    claim_ref: ObjectReference,
) -> PersistentVolume {
    let mut annotations = BTreeMap::from([
        (ANN_PROVISIONED_BY.to_owned(), input.provisioner.to_owned()),
        (ANN_PROVISIONER_ID.to_owned(), input.identity.to_owned()),
        (ANN_CREATED_BY.to_owned(), CREATED_BY.to_owned()),
        (
            ANN_ON_DELETE.to_owned(),
            input.params.on_delete.as_str().to_owned(),
        ),
    ]);
    if let Some(pod) = input.pod {
        annotations.insert(ANN_SERVER_POD.to_owned(), pod.to_owned());
    }
    let class_mount_options = input.class.mount_options.clone().filter(|m| !m.is_empty());
    if class_mount_options.is_none()
        && let Some(m) = &input.params.mount_options
    {
        annotations.insert(ANN_MOUNT_OPTIONS.to_owned(), m.clone());
    }
    PersistentVolume {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            annotations: Some(annotations),
            finalizers: Some(vec![FINALIZER.to_owned()]),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeSpec {
            capacity: Some(BTreeMap::from([("storage".to_owned(), size)])),
            access_modes,
            persistent_volume_reclaim_policy: Some(
                input
                    .class
                    .reclaim_policy
                    .clone()
                    .unwrap_or_else(|| "Delete".to_owned()),
            ),
            storage_class_name: input.class.metadata.name.clone(),
            mount_options: class_mount_options,
            volume_mode: Some("Filesystem".to_owned()),
            claim_ref: Some(claim_ref),
            nfs: Some(NFSVolumeSource {
                server: input.server.to_owned(),
                path: format!("{EXPORT_PREFIX}/{name}"),
                read_only: Some(false),
            }),
            ..PersistentVolumeSpec::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{PersistentVolumeClaimSpec, VolumeResourceRequirements};

    use super::*;

    fn claim() -> PersistentVolumeClaim {
        PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some("data".into()),
                namespace: Some("apps".into()),
                uid: Some("1234-abcd".into()),
                ..ObjectMeta::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                access_modes: Some(vec!["ReadWriteMany".into()]),
                resources: Some(VolumeResourceRequirements {
                    requests: Some(BTreeMap::from([("storage".into(), Quantity("1Gi".into()))])),
                    ..VolumeResourceRequirements::default()
                }),
                storage_class_name: Some("nfs".into()),
                ..PersistentVolumeClaimSpec::default()
            }),
            status: None,
        }
    }

    fn class(mount_options: Option<Vec<String>>) -> StorageClass {
        StorageClass {
            metadata: ObjectMeta {
                name: Some("nfs".into()),
                ..ObjectMeta::default()
            },
            provisioner: "cluster.local/nfs".into(),
            reclaim_policy: Some("Retain".into()),
            mount_options,
            ..StorageClass::default()
        }
    }

    #[test]
    fn pv_matches_the_old_provisioner_contract() {
        let params = Params {
            mount_options: Some("vers=3".into()),
            ..Params::default()
        };
        let (pvc, class) = (
            claim(),
            class(Some(vec!["vers=3".into(), "retrans=2".into()])),
        );
        let pv = build(&PvInput {
            pvc: &pvc,
            class: &class,
            params: &params,
            provisioner: "cluster.local/nfs",
            identity: "id-1",
            server: "10.96.0.10",
            pod: Some("nfs-0"),
        })
        .unwrap();
        assert_eq!(pv.metadata.name.as_deref(), Some("pvc-1234-abcd"));
        let ann = pv.metadata.annotations.as_ref().unwrap();
        assert_eq!(ann[ANN_PROVISIONED_BY], "cluster.local/nfs");
        assert_eq!(ann[ANN_PROVISIONER_ID], "id-1");
        assert_eq!(ann[ANN_SERVER_POD], "nfs-0");
        assert_eq!(ann[ANN_CREATED_BY], "nfs-dynamic-provisioner");
        assert!(
            !ann.contains_key(ANN_MOUNT_OPTIONS),
            "class mountOptions win"
        );
        assert_eq!(
            pv.metadata.finalizers.as_deref(),
            Some(&[FINALIZER.to_owned()][..])
        );
        let spec = pv.spec.unwrap();
        assert_eq!(spec.capacity.unwrap()["storage"].0, "1Gi");
        assert_eq!(spec.access_modes.unwrap(), vec!["ReadWriteMany"]);
        assert_eq!(
            spec.persistent_volume_reclaim_policy.as_deref(),
            Some("Retain")
        );
        assert_eq!(spec.storage_class_name.as_deref(), Some("nfs"));
        assert_eq!(spec.mount_options.unwrap(), vec!["vers=3", "retrans=2"]);
        let claim_ref = spec.claim_ref.unwrap();
        assert_eq!(claim_ref.uid.as_deref(), Some("1234-abcd"));
        assert_eq!(claim_ref.namespace.as_deref(), Some("apps"));
        let nfs = spec.nfs.unwrap();
        assert_eq!(
            (nfs.server.as_str(), nfs.path.as_str()),
            ("10.96.0.10", "/export/pvc-1234-abcd")
        );
    }

    #[test]
    fn deprecated_mount_options_parameter_becomes_an_annotation() {
        let params = Params {
            mount_options: Some("vers=3,hard".into()),
            ..Params::default()
        };
        let (pvc, class) = (claim(), class(None));
        let pv = build(&PvInput {
            pvc: &pvc,
            class: &class,
            params: &params,
            provisioner: "p",
            identity: "i",
            server: "s",
            pod: None,
        })
        .unwrap();
        assert_eq!(
            pv.metadata.annotations.unwrap()[ANN_MOUNT_OPTIONS],
            "vers=3,hard"
        );
        assert_eq!(
            pv.spec.unwrap().persistent_volume_reclaim_policy.as_deref(),
            Some("Retain")
        );
    }

    #[test]
    fn selector_and_block_claims_are_refused() {
        let mut pvc = claim();
        assert_eq!(check_claim(&pvc), Ok(()));
        pvc.spec.as_mut().unwrap().volume_mode = Some("Block".into());
        assert_eq!(check_claim(&pvc), Err(ClaimError::Block));
        pvc.spec.as_mut().unwrap().volume_mode = None;
        pvc.spec.as_mut().unwrap().selector = Some(Default::default());
        assert_eq!(check_claim(&pvc), Err(ClaimError::Selector));
    }

    #[test]
    fn read_only_many_only_claims_are_read_only() {
        let mut pvc = claim();
        assert!(!read_only_claim(&pvc));
        pvc.spec.as_mut().unwrap().access_modes = Some(vec!["ReadOnlyMany".into()]);
        assert!(read_only_claim(&pvc));
    }
}
