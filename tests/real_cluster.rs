//! Opt-in run against a real cluster: set `KUBECONFIG` (and optionally
//! `NFS_TEST_NAMESPACE`, default `default`). The provisioner runs out of cluster with a
//! temporary export root and a test-only provisioner name; it provisions a claim, the
//! cluster's PV controller binds it, the claim is deleted and the Released volume is
//! cleaned up. Without `KUBECONFIG` the test says it is skipped and passes.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provision_and_delete_on_a_real_cluster() {
    let Ok(path) = std::env::var("KUBECONFIG") else {
        eprintln!("skipped: KUBECONFIG is not set (this test needs a real cluster)");
        return;
    };
    let ns = std::env::var("NFS_TEST_NAMESPACE").unwrap_or_else(|_| "default".into());
    let client = provisioner::connect(Some(std::path::Path::new(&path)))
        .await
        .expect("cannot connect with KUBECONFIG");
    let suffix = &provisioner::identity::new_uuid().unwrap()[..8];
    let name = format!("test.nfs-server-provisioner/{suffix}");
    let class_name = format!("nfs-test-{suffix}");
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let store = Arc::new(export_store::ExportStore::open(dir.path()).unwrap());

    let classes: Api<StorageClass> = Api::all(client.clone());
    let class: StorageClass = serde_json::from_value(json!({
        "metadata": {"name": class_name}, "provisioner": name, "reclaimPolicy": "Delete",
    }))
    .unwrap();
    classes
        .create(&PostParams::default(), &class)
        .await
        .unwrap();

    let config = provisioner::controller::Config {
        server_address: Some("192.0.2.1".into()),
        ..provisioner::controller::Config::new(&name)
    };
    let identity = provisioner::identity::load_or_create(dir.path()).unwrap();
    tokio::spawn(provisioner::run(
        client.clone(),
        store.clone(),
        config,
        identity,
        None,
    ));

    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
    let claim: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": format!("nfs-test-{suffix}")},
        "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": class_name,
                 "resources": {"requests": {"storage": "1Mi"}}},
    }))
    .unwrap();
    let claim = claims.create(&PostParams::default(), &claim).await.unwrap();
    let pv_name = format!("pvc-{}", claim.metadata.uid.clone().unwrap());
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let mut bound = false;
    for _ in 0..120 {
        if let Some(c) = claims.get_opt(&format!("nfs-test-{suffix}")).await.unwrap()
            && c.status.and_then(|s| s.phase).as_deref() == Some("Bound")
        {
            bound = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let result_bound = bound && pvs.get_opt(&pv_name).await.unwrap().is_some();
    claims
        .delete(&format!("nfs-test-{suffix}"), &DeleteParams::default())
        .await
        .unwrap();
    let mut gone = false;
    for _ in 0..120 {
        if pvs.get_opt(&pv_name).await.unwrap().is_none() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    classes
        .delete(&class_name, &DeleteParams::default())
        .await
        .unwrap();
    assert!(result_bound, "claim was not bound to {pv_name}");
    assert!(gone, "PV {pv_name} was not deleted after the claim was");
    assert!(!dir.path().join(&pv_name).exists(), "directory left behind");
}
