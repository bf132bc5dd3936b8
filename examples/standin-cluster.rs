//! A stand-in Kubernetes API server holding one claim, for the kernel guest's `expand` check
//! (tests/kernel/run.sh starts it next to the server, which provisions through it).
//!
//!     standin-cluster KUBECONFIG_OUT CUE_DIR
//!
//! Writes a kubeconfig naming the stand-in, creates StorageClass `nfs` (expansion allowed) and
//! a 16Mi claim `kt/grow`, binds it to the PV the server creates (the part of Kubernetes' PV
//! controller the server does not do), and writes the volume's NFS path to
//! `CUE_DIR/.kt-expand-path`. When `CUE_DIR/.kt-expand-grow` appears it raises the claim's
//! request to 48Mi, as `kubectl edit` would, and once the server reported the claim's new
//! capacity and its Event writes `CUE_DIR/.kt-expand-grown` (with the Events seen). Runs until killed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kube_standin::StandIn;
use serde_json::{Value, json};

const PROVISIONER: &str = "cluster.local/nfs-server-provisioner";
const WAIT: Duration = Duration::from_secs(600);

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [kubeconfig, cues] = args.as_slice() else {
        return Err("usage: standin-cluster KUBECONFIG_OUT CUE_DIR".into());
    };
    let api = StandIn::start().await;
    api.insert(json!({
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": "nfs"},
        "provisioner": PROVISIONER,
        "reclaimPolicy": "Delete",
        "allowVolumeExpansion": true,
        "mountOptions": ["vers=4.1"],
    }))?;
    let claim = api.insert(json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": "grow", "namespace": "kt",
            "annotations": {"volume.kubernetes.io/storage-provisioner": PROVISIONER},
        },
        "spec": {
            "accessModes": ["ReadWriteMany"],
            "resources": {"requests": {"storage": "16Mi"}},
            "storageClassName": "nfs",
        },
        "status": {"phase": "Pending"},
    }))?;
    // Whole or not at all: the server starts as soon as the file exists.
    let config = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: standin\n  cluster:\n    server: {}\n\
         contexts:\n- name: standin\n  context:\n    cluster: standin\n    user: standin\n\
         current-context: standin\nusers:\n- name: standin\n  user: {{}}\n",
        api.url()
    );
    let (dir, name) = (
        kubeconfig.parent().unwrap_or(Path::new(".")),
        kubeconfig
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or("bad kubeconfig path")?,
    );
    write_cue(dir, name, &config)?;
    let pv_name = format!(
        "pvc-{}",
        claim["metadata"]["uid"].as_str().unwrap_or_default()
    );
    let pv = api
        .wait_for(WAIT, |a| a.get("persistentvolumes", None, &pv_name))
        .await
        .ok_or("the server created no PV for claim kt/grow")?;
    api.modify("persistentvolumeclaims", Some("kt"), "grow", |c| {
        c["spec"]["volumeName"] = json!(pv_name);
        c["status"] = json!({"phase": "Bound", "capacity": {"storage": "16Mi"}});
    })?;
    let path = pv["spec"]["nfs"]["path"].as_str().unwrap_or_default();
    write_cue(cues, ".kt-expand-path", path)?;

    wait_file(&cues.join(".kt-expand-grow")).await;
    api.modify("persistentvolumeclaims", Some("kt"), "grow", |c| {
        c["spec"]["resources"]["requests"]["storage"] = json!("48Mi");
    })?;
    let grown = api
        .wait_for(WAIT, |a| {
            let c = a.get("persistentvolumeclaims", Some("kt"), "grow")?;
            let event = a
                .event_reasons()
                .iter()
                .any(|r| r == "VolumeResizeSuccessful");
            (c["status"]["capacity"]["storage"] == "48Mi" && event).then_some(())
        })
        .await;
    let pv_capacity = api
        .get("persistentvolumes", None, &pv_name)
        .map(|pv| pv["spec"]["capacity"]["storage"].clone())
        .unwrap_or(Value::Null);
    write_cue(
        cues,
        ".kt-expand-grown",
        &format!(
            "claim_status_48Mi={} pv_capacity={pv_capacity} events={}\n",
            grown.is_some(),
            api.event_reasons().join(",")
        ),
    )?;
    std::future::pending::<()>().await;
    Ok(())
}

/// Writes a cue file whole (temporary name, then rename), so a reader never sees half of it.
fn write_cue(dir: &Path, name: &str, text: &str) -> std::io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    std::fs::write(&tmp, text)?;
    std::fs::rename(tmp, dir.join(name))
}

async fn wait_file(path: &Path) {
    while !path.exists() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
