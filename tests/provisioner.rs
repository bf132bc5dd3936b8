//! The provisioner's whole controller loop against the in-process Kubernetes API stand-in
//! (real HTTP: list, watch, get, create, patch, delete, finalizers), with a real export store
//! on disk, and end to end through our NFS server with an independent NFS client.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;

use kube_standin::Verb;
use provisioner::controller::Config;
use serde_json::json;

mod kube_common;

use kube_common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_becomes_directory_export_and_pv_like_the_old_provisioner() {
    let s = setup(json!({})).await;
    start_controller(&s, config(), None).await;
    let uid = add_claim(&s, "data", json!({}));
    let pv = wait_pv(&s, &uid).await;
    let name = format!("pvc-{uid}");

    let ann = &pv["metadata"]["annotations"];
    assert_eq!(ann["pv.kubernetes.io/provisioned-by"], NAME);
    assert_eq!(ann["kubernetes.io/createdby"], "nfs-dynamic-provisioner");
    let identity = std::fs::read_to_string(s.root().join("nfs-provisioner.identity")).unwrap();
    assert_eq!(ann["Provisioner_Id"], identity.as_str());
    assert_eq!(
        pv["metadata"]["finalizers"],
        json!(["external-provisioner.volume.kubernetes.io/finalizer"])
    );
    let spec = &pv["spec"];
    assert_eq!(
        spec["nfs"],
        json!({"server": "10.0.0.1", "path": format!("/export/{name}"), "readOnly": false})
    );
    assert_eq!(spec["capacity"]["storage"], "1Gi");
    assert_eq!(spec["accessModes"], json!(["ReadWriteMany"]));
    assert_eq!(spec["persistentVolumeReclaimPolicy"], "Delete");
    assert_eq!(spec["storageClassName"], "nfs");
    assert_eq!(spec["mountOptions"], json!(["vers=3"]));
    assert_eq!(spec["claimRef"]["uid"], uid.as_str());
    assert_eq!(spec["claimRef"]["name"], "data");

    let dir = s.root().join(&name);
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
    assert_eq!(mode & 0o7777, 0o2777, "gid none: mode 2777");
    assert_eq!(registered(&s), vec![name.clone()]);
    wait_event(&s, "ProvisioningSucceeded").await;
    let reasons = s.api.event_reasons();
    assert!(reasons.contains(&"Provisioning".to_owned()), "{reasons:?}");
    let ev = events(&s)
        .into_iter()
        .find(|e| e["reason"] == "ProvisioningSucceeded")
        .unwrap();
    assert_eq!(ev["involvedObject"]["kind"], "PersistentVolumeClaim");
    assert_eq!(ev["involvedObject"]["uid"], uid.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_address_comes_from_the_service_cluster_ip() {
    let s = setup(json!({"gid": "1234"})).await;
    s.api
        .insert(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "nfs-provisioner", "namespace": "storage"},
            "spec": {"clusterIP": "10.96.7.7", "ports": [{"port": 2049}, {"port": 9100, "name": "metrics"}]},
        }))
        .unwrap();
    let cfg = Config {
        server_address: None,
        namespace: Some("storage".into()),
        service_name: Some("nfs-provisioner".into()),
        pod_ip: Some("10.244.0.9".into()),
        ..config()
    };
    start_controller(&s, cfg, None).await;
    let uid = add_claim(&s, "data", json!({}));
    let pv = wait_pv(&s, &uid).await;
    assert_eq!(pv["spec"]["nfs"]["server"], "10.96.7.7");
    let dir = s.root().join(format!("pvc-{uid}"));
    let meta = std::fs::metadata(&dir).unwrap();
    assert_eq!(
        meta.permissions().mode() & 0o7777,
        0o2071,
        "gid N: mode 2071"
    );
    assert_eq!(std::os::unix::fs::MetadataExt::gid(&meta), 1234);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_pv_create_is_retried_and_ends_with_one_directory_export_and_pv() {
    let s = setup(json!({})).await;
    s.api.fail(Verb::Create, "persistentvolumes", 500, 2);
    start_controller(&s, config(), None).await;
    let uid = add_claim(&s, "data", json!({}));
    wait_pv(&s, &uid).await;
    assert_eq!(s.api.list("persistentvolumes").len(), 1);
    assert_eq!(registered(&s), vec![format!("pvc-{uid}")]);
    let dirs: Vec<_> = std::fs::read_dir(s.root())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("pvc-"))
        .collect();
    assert_eq!(dirs.len(), 1);
    wait_event(&s, "ProvisioningFailed").await;
    wait_event(&s, "ProvisioningSucceeded").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_that_dies_between_mkdir_and_pv_is_finished_by_the_next() {
    let s = setup(json!({})).await;
    s.api.fail(Verb::Create, "persistentvolumes", 500, 1000);
    let first = start_controller(&s, config(), None).await;
    let uid = add_claim(&s, "data", json!({}));
    let name = format!("pvc-{uid}");
    let root = s.root().to_owned();
    let made = s
        .api
        .wait_for(WAIT, |_| root.join(&name).exists().then_some(()))
        .await;
    assert!(made.is_some());
    // The process dies after the directory and export, before any PV.
    first.abort();
    let _ = first.await;
    s.api.clear_faults();
    // A fresh controller (new context, same export root) completes the claim.
    start_controller(&s, config(), None).await;
    wait_pv(&s, &uid).await;
    assert_eq!(s.api.list("persistentvolumes").len(), 1);
    assert_eq!(registered(&s), vec![name]);
}

async fn release_and_wait_gone(s: &Setup, uid: &str) {
    let name = format!("pvc-{uid}");
    s.api
        .update_status(
            "persistentvolumes",
            None,
            &name,
            json!({"phase": "Released"}),
        )
        .unwrap();
    let gone = s
        .api
        .wait_for(WAIT, |a| {
            a.get("persistentvolumes", None, &name)
                .is_none()
                .then_some(())
        })
        .await;
    assert!(
        gone.is_some(),
        "PV {name} not deleted; events {:?}",
        s.api.event_reasons()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn released_volumes_are_unexported_then_deleted_archived_or_retained() {
    for (on_delete, expect) in [
        ("delete", "gone"),
        ("archive", "archived"),
        ("retain", "kept"),
    ] {
        let s = setup(json!({"onDelete": on_delete})).await;
        start_controller(&s, config(), None).await;
        let uid = add_claim(&s, "data", json!({}));
        wait_pv(&s, &uid).await;
        let name = format!("pvc-{uid}");
        std::fs::write(s.root().join(&name).join("file"), b"data").unwrap();
        release_and_wait_gone(&s, &uid).await;
        assert!(registered(&s).is_empty(), "{on_delete}: still exported");
        let dir_exists = s.root().join(&name).exists();
        let archived = std::fs::read_dir(s.root())
            .unwrap()
            .filter_map(|e| e.ok())
            .any(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("archived-{name}-"))
            });
        match expect {
            "gone" => assert!(!dir_exists && !archived, "delete"),
            "archived" => assert!(!dir_exists && archived, "archive"),
            _ => assert!(dir_exists && !archived, "retain"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volume_with_another_identity_is_never_touched() {
    let s = setup(json!({})).await;
    std::fs::create_dir(s.root().join("pvc-foreign")).unwrap();
    std::fs::write(s.root().join("pvc-foreign/keep"), b"precious").unwrap();
    s.api
        .insert(json!({
            "apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {
                "name": "pvc-foreign",
                "annotations": {
                    "pv.kubernetes.io/provisioned-by": NAME,
                    "Provisioner_Id": "someone-else",
                },
                "finalizers": ["external-provisioner.volume.kubernetes.io/finalizer"],
            },
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteMany"],
                "persistentVolumeReclaimPolicy": "Delete",
                "nfs": {"server": "10.0.0.1", "path": "/export/pvc-foreign"},
            },
            "status": {"phase": "Released"},
        }))
        .unwrap();
    start_controller(&s, config(), None).await;
    wait_event(&s, "VolumeFailedDelete").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        s.api
            .get("persistentvolumes", None, "pvc-foreign")
            .is_some()
    );
    assert_eq!(
        std::fs::read(s.root().join("pvc-foreign/keep")).unwrap(),
        b"precious"
    );
    let deletes = s
        .api
        .request_log()
        .iter()
        .filter(|r| r.to_string().starts_with("DELETE"))
        .count();
    assert_eq!(deletes, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_parameter_is_a_provisioning_failed_event_naming_it() {
    let s = setup(json!({"onDelete": "shred"})).await;
    start_controller(&s, config(), None).await;
    let uid = add_claim(&s, "data", json!({}));
    wait_event(&s, "ProvisioningFailed").await;
    let ev = events(&s)
        .into_iter()
        .find(|e| e["reason"] == "ProvisioningFailed")
        .unwrap();
    let msg = ev["message"].as_str().unwrap();
    assert!(msg.contains("onDelete") && msg.contains("shred"), "{msg}");
    assert!(
        s.api
            .get("persistentvolumes", None, &format!("pvc-{uid}"))
            .is_none()
    );
    assert!(registered(&s).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_and_selector_claims_are_rejected() {
    let s = setup(json!({})).await;
    start_controller(&s, config(), None).await;
    let block = add_claim(&s, "raw", json!({"volumeMode": "Block"}));
    let sel = add_claim(
        &s,
        "picky",
        json!({"selector": {"matchLabels": {"a": "b"}}}),
    );
    let both = s
        .api
        .wait_for(WAIT, |a| {
            let msgs: Vec<String> = a
                .events()
                .iter()
                .filter(|e| e["reason"] == "ProvisioningFailed")
                .filter_map(|e| e["message"].as_str().map(str::to_owned))
                .collect();
            (msgs.iter().any(|m| m.contains("Block"))
                && msgs.iter().any(|m| m.contains("Selector")))
            .then_some(())
        })
        .await;
    assert!(both.is_some(), "{:?}", events(&s));
    for uid in [block, sel] {
        assert!(
            s.api
                .get("persistentvolumes", None, &format!("pvc-{uid}"))
                .is_none()
        );
    }
    assert!(registered(&s).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_deleted_mid_provisioning_leaves_nothing_behind() {
    let s = setup(json!({})).await;
    // PV creation keeps failing, so the volume exists but its PV never does.
    s.api.fail(Verb::Create, "persistentvolumes", 500, 1000);
    start_controller(&s, config(), None).await;
    let uid = add_claim(&s, "data", json!({}));
    let name = format!("pvc-{uid}");
    let root = s.root().to_owned();
    let created = s
        .api
        .wait_for(WAIT, |_| root.join(&name).exists().then_some(()))
        .await;
    assert!(created.is_some());
    s.api
        .delete("persistentvolumeclaims", Some("apps"), "data")
        .unwrap();
    for _ in 0..100 {
        if !s.root().join(&name).exists() && registered(&s).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!s.root().join(&name).exists(), "directory left behind");
    assert!(registered(&s).is_empty(), "export left behind");
    assert!(s.api.list("persistentvolumes").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_controllers_only_the_leader_provisions() {
    let s = setup(json!({})).await;
    let timing = provisioner::leader::Timing {
        duration: Duration::from_secs(3),
        renew: Duration::from_millis(300),
    };
    for holder in ["a", "b"] {
        let election = provisioner::Election {
            namespace: "storage".into(),
            holder: holder.into(),
            timing,
        };
        start_controller(&s, config(), Some(election)).await;
    }
    let uids: Vec<String> = (0..3)
        .map(|i| add_claim(&s, &format!("c{i}"), json!({})))
        .collect();
    for uid in &uids {
        wait_pv(&s, uid).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let lease = s
        .api
        .get("leases", Some("storage"), "test.local-nfs")
        .unwrap();
    let holder = lease["spec"]["holderIdentity"].as_str().unwrap();
    assert!(holder == "a" || holder == "b");
    let provisioning = s
        .api
        .event_reasons()
        .iter()
        .filter(|r| *r == "Provisioning")
        .count();
    assert_eq!(provisioning, 3, "only one controller acts on each claim");
    let pv_creates = s
        .api
        .request_log()
        .iter()
        .filter(|r| r.to_string().starts_with("POST /api/v1/persistentvolumes"))
        .count();
    assert_eq!(pv_creates, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_provisioners_export_root_is_adopted_and_served() {
    let s = setup(json!({})).await;
    // What the old provisioner left: its identity, a volume directory with data, the PV.
    std::fs::write(
        s.root().join("nfs-provisioner.identity"),
        "6f1f2a3b-0000-4000-8000-00000000abcd",
    )
    .unwrap();
    std::fs::create_dir(s.root().join("pvc-old")).unwrap();
    std::fs::write(s.root().join("pvc-old/hello.txt"), b"from the old days").unwrap();
    s.api
        .insert(json!({
            "apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": "pvc-old", "annotations": {
                "pv.kubernetes.io/provisioned-by": NAME,
                "Provisioner_Id": "6f1f2a3b-0000-4000-8000-00000000abcd",
                "EXPORT_block": "\nEXPORT\n{\n\tExport_Id = 1;\n}\n",
                "Export_Id": "1",
            }},
            "spec": {
                "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany"],
                "persistentVolumeReclaimPolicy": "Delete",
                "nfs": {"server": "10.0.0.1", "path": "/export/pvc-old"},
            },
            "status": {"phase": "Bound"},
        }))
        .unwrap();
    start_controller(&s, config(), None).await;
    let store = Arc::clone(&s.store);
    let adopted = s
        .api
        .wait_for(WAIT, |_| store.volume_by_name("pvc-old").map(|_| ()))
        .await;
    assert!(adopted.is_some(), "old volume not exported");
    assert_eq!(
        std::fs::read_to_string(s.root().join("nfs-provisioner.identity")).unwrap(),
        "6f1f2a3b-0000-4000-8000-00000000abcd"
    );

    // Served over NFS at its old path.
    let running = serve_nfs(&s).await;
    let data = read_over_nfs(&running, "/export/pvc-old", b"hello.txt").await;
    assert_eq!(data, b"from the old days");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provisioned_volume_is_writable_over_nfs_at_its_pv_path() {
    let s = setup(json!({})).await;
    let running = serve_nfs(&s).await;
    start_controller(&s, config(), None).await;
    let uid = add_claim(&s, "data", json!({}));
    let pv = wait_pv(&s, &uid).await;
    let path = pv["spec"]["nfs"]["path"].as_str().unwrap().to_owned();
    // The running server picks the new volume up from the registry.
    tokio::time::sleep(Duration::from_millis(300)).await;
    write_over_nfs(&running, &path, b"written.txt", b"hello from a pod").await;
    let dir = s.root().join(format!("pvc-{uid}"));
    assert_eq!(
        std::fs::read(dir.join("written.txt")).unwrap(),
        b"hello from a pod"
    );

    // And with the libnfs C client, when it is installed (scripts/test.sh installs it).
    if std::process::Command::new("nfs-cp")
        .arg("--help")
        .output()
        .is_ok()
    {
        let src = s.root().join("libnfs-source");
        std::fs::write(&src, b"written by libnfs").unwrap();
        let url = format!(
            "nfs://127.0.0.1{path}/libnfs.txt?version=3&nfsport={}&mountport={}",
            running.nfs.port(),
            running.mount.port()
        );
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new("nfs-cp")
                .arg(&src)
                .arg(&url)
                .output()
        })
        .await
        .unwrap()
        .unwrap();
        assert!(
            out.status.success(),
            "nfs-cp: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            std::fs::read(dir.join("libnfs.txt")).unwrap(),
            b"written by libnfs"
        );
    } else {
        eprintln!("nfs-cp not installed: libnfs part skipped");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volume_whose_directory_is_missing_is_reported_on_pv_and_claim() {
    let s = setup(json!({})).await;
    let identity = provisioner::identity::load_or_create(s.root()).unwrap();
    let claim = s.api.insert(claim("lost", json!({}))).unwrap();
    let uid = claim["metadata"]["uid"].as_str().unwrap().to_owned();
    let name = format!("pvc-{uid}");
    s.api
        .insert(json!({
            "apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": name, "annotations": {
                "pv.kubernetes.io/provisioned-by": NAME, "Provisioner_Id": identity,
            }},
            "spec": {
                "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany"],
                "persistentVolumeReclaimPolicy": "Delete",
                "claimRef": {"namespace": "apps", "name": "lost", "uid": uid},
                "nfs": {"server": "10.0.0.1", "path": format!("/export/{name}")},
            },
            "status": {"phase": "Bound"},
        }))
        .unwrap();
    s.api
        .modify("persistentvolumeclaims", Some("apps"), "lost", |c| {
            c["spec"]["volumeName"] = json!(name);
        })
        .unwrap();
    start_controller(&s, config(), None).await;
    let both = s
        .api
        .wait_for(WAIT, |a| {
            let kinds: Vec<String> = a
                .events()
                .iter()
                .filter(|e| e["reason"] == "VolumeDataMissing")
                .filter_map(|e| e["involvedObject"]["kind"].as_str().map(str::to_owned))
                .collect();
            (kinds.iter().any(|k| k == "PersistentVolume")
                && kinds.iter().any(|k| k == "PersistentVolumeClaim"))
            .then_some(())
        })
        .await;
    assert!(both.is_some(), "{:?}", events(&s));
    assert!(
        s.api.get("persistentvolumes", None, &name).is_some(),
        "nothing is deleted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_lists_our_volumes_with_their_state() {
    let s = setup(json!({})).await;
    start_controller(&s, config(), None).await;
    let uid = add_claim(&s, "data", json!({}));
    wait_pv(&s, &uid).await;
    let identity = provisioner::identity::read(s.root()).unwrap();
    let rows = provisioner::status(client(&s.api).await, &s.store, NAME, identity.as_deref())
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(row.claim, "apps/data");
    assert_eq!(row.volume, format!("pvc-{uid}"));
    assert_eq!(row.size, "1Gi");
    assert!(
        row.exported && row.directory && row.identity_match,
        "{row:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_turns_true_only_once_existing_volumes_are_exported_again() {
    let s = setup(json!({})).await;
    let identity = provisioner::identity::load_or_create(s.root()).unwrap();
    // A volume we provisioned before, missing from the registry (as after adopting an old
    // export root): it is served only once the controller has listed the PVs.
    std::fs::create_dir(s.root().join("pvc-before")).unwrap();
    s.api
        .insert(json!({
            "apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": "pvc-before", "annotations": {
                "pv.kubernetes.io/provisioned-by": NAME,
                "Provisioner_Id": identity,
            }},
            "spec": {
                "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany"],
                "persistentVolumeReclaimPolicy": "Delete",
                "nfs": {"server": "10.0.0.1", "path": "/export/pvc-before"},
            },
            "status": {"phase": "Bound"},
        }))
        .unwrap();
    // The API server refuses the first two lists: the controller retries (1 s, then 2 s).
    s.api.fail(Verb::List, "persistentvolumes", 500, 2);
    let running = nfs_server_provisioner::start(nfs_server_provisioner::ServeConfig {
        export_root: s.root().to_owned(),
        bind: "127.0.0.1".parse().unwrap(),
        nfs_port: 0,
        mount_port: 0,
        portmap_port: None,
        reload_interval: Duration::from_millis(100),
        recount_interval: None,
        http_port: Some(0),
        metrics: true,
        v4: nfs_server::V4Config::default(),
        locking: Default::default(),
        limits: Default::default(),
        nfs_threads: nfs_server::executor::DEFAULT_THREADS,
        metric_labels: Vec::new(),
    })
    .await
    .unwrap();
    let http = running.http.unwrap();
    assert_eq!(http_status(http, "/healthz").await, 200);
    assert_eq!(http_status(http, "/readyz").await, 503);
    assert_eq!(http_status(http, "/nothing").await, 404);

    let health = Arc::clone(&running.health);
    tokio::spawn(provisioner::run_then(
        client(&s.api).await,
        Arc::clone(&s.store),
        config(),
        identity,
        None,
        move || health.set_ready(),
    ));
    assert_eq!(http_status(http, "/readyz").await, 503);
    let deadline = tokio::time::Instant::now() + WAIT;
    while http_status(http, "/readyz").await != 200 {
        assert!(tokio::time::Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Ready means served: the volume is exported at that moment, not later.
    assert!(s.store.volume_by_name("pvc-before").is_some());
    let failed_lists = s
        .api
        .request_log()
        .iter()
        .filter(|r| r.verb == Some(Verb::List) && r.status == 500)
        .count();
    assert_eq!(failed_lists, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_exports_refuses_claims_beyond_the_limit_until_a_volume_goes() {
    let s = setup(json!({})).await;
    start_controller(
        &s,
        Config {
            max_exports: Some(1),
            ..config()
        },
        None,
    )
    .await;
    let first = add_claim(&s, "first", json!({}));
    wait_pv(&s, &first).await;
    let second = add_claim(&s, "second", json!({}));
    wait_event(&s, "ProvisioningFailed").await;
    let msg = events(&s)
        .into_iter()
        .find(|e| e["reason"] == "ProvisioningFailed")
        .unwrap()["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(msg.contains("--max-exports"), "{msg}");
    assert_eq!(registered(&s), vec![format!("pvc-{first}")]);

    // Once the first volume is released and deleted, the second claim gets its volume.
    release_and_wait_gone(&s, &first).await;
    wait_pv(&s, &second).await;
    assert_eq!(registered(&s), vec![format!("pvc-{second}")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_reconciles_provisioning_deleting_and_leadership() {
    let s = setup(json!({})).await;
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Arc::new(provisioner::metrics::ProvisionerMetrics::register(
        &mut registry,
    ));
    start_controller(
        &s,
        Config {
            metrics: Arc::clone(&metrics),
            ..config()
        },
        None,
    )
    .await;
    let uid = add_claim(&s, "data", json!({}));
    wait_pv(&s, &uid).await;
    release_and_wait_gone(&s, &uid).await;
    // The reconcile that removed the finalizer returns just after the PV is gone.
    let mut text = String::new();
    for _ in 0..100 {
        text.clear();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        if text.contains("provisioner_reconciles_total{controller=\"volume\",result=\"ok\"}") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let value = |series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
    };
    assert_eq!(value("provisioner_provision_duration_seconds_count"), 1.0);
    assert_eq!(value("provisioner_delete_duration_seconds_count"), 1.0);
    assert!(value("provisioner_reconciles_total{controller=\"claim\",result=\"ok\"}") >= 1.0);
    assert!(value("provisioner_reconciles_total{controller=\"volume\",result=\"ok\"}") >= 1.0);
    assert_eq!(value("provisioner_leader"), 1.0);
    assert_eq!(value("provisioner_missing_volumes"), 0.0);
}

/// Binds a provisioned claim as kube-controller-manager would, with its capacity.
fn bind(s: &Setup, claim: &str, pv: &str, size: &str) {
    s.api
        .modify("persistentvolumeclaims", Some("apps"), claim, |c| {
            c["spec"]["volumeName"] = json!(pv);
            c["status"] = json!({"phase": "Bound", "capacity": {"storage": size}});
        })
        .unwrap();
}

fn request(s: &Setup, claim: &str, size: &str) {
    s.api
        .modify("persistentvolumeclaims", Some("apps"), claim, |c| {
            c["spec"]["resources"]["requests"]["storage"] = json!(size);
        })
        .unwrap();
}

/// Writes 256 KiB chunks to `f` from `offset` until the server refuses; returns the new
/// offset and the refusal.
async fn fill(
    conn: &mut nfs3_client::Nfs3Connection<nfs3_client::tokio::TokioIo<tokio::net::TcpStream>>,
    f: &nfs3_types::nfs3::nfs_fh3,
    mut offset: u64,
) -> (u64, nfs3_types::nfs3::nfsstat3) {
    use nfs3_types::nfs3::*;
    let chunk = vec![6u8; 256 << 10];
    loop {
        let r = conn
            .write(&WRITE3args {
                file: f.clone(),
                offset,
                count: chunk.len() as u32,
                stable: stable_how::FILE_SYNC,
                data: nfs3_types::xdr_codec::Opaque::borrowed(&chunk),
            })
            .await
            .unwrap();
        match r {
            Nfs3Result::Ok(ok) => offset += u64::from(ok.count),
            Nfs3Result::Err((st, _)) => return (offset, st),
        }
        assert!(offset < 64 << 20, "no limit enforced");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_that_grows_gets_the_space_without_remounting_and_never_shrinks() {
    use nfs3_types::nfs3::*;
    let s = setup(json!({})).await;
    s.api
        .modify("storageclasses", None, "nfs", |c| {
            c["allowVolumeExpansion"] = json!(true);
        })
        .unwrap();
    let running = serve_nfs(&s).await;
    start_controller(&s, config(), None).await;
    let uid = add_claim(
        &s,
        "data",
        json!({"resources": {"requests": {"storage": "1Mi"}}}),
    );
    let pv = wait_pv(&s, &uid).await;
    let name = format!("pvc-{uid}");
    bind(&s, "data", &name, "1Mi");
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A client fills the 1 MiB volume.
    let path = pv["spec"]["nfs"]["path"].as_str().unwrap().to_owned();
    let mut conn = connect(&running, &path).await;
    let root = conn.root_nfs_fh3();
    let created = conn
        .create(&CREATE3args {
            where_: diropargs3 {
                dir: root.clone(),
                name: filename3(nfs3_types::xdr_codec::Opaque::borrowed(b"grow")),
            },
            how: createhow3::UNCHECKED(sattr3::default()),
        })
        .await
        .unwrap()
        .unwrap();
    let Nfs3Option::Some(f) = created.obj else {
        panic!("no handle")
    };
    let (full_at, st) = fill(&mut conn, &f, 0).await;
    assert_eq!(st, nfsstat3::NFS3ERR_DQUOT);
    assert!(full_at <= 1 << 20);

    // The claim grows to 3 MiB: PV, claim status, Event; the same connection writes on.
    request(&s, "data", "3Mi");
    let grown = s
        .api
        .wait_for(WAIT, |a| {
            let c = a.get("persistentvolumeclaims", Some("apps"), "data")?;
            (c["status"]["capacity"]["storage"] == "3Mi").then_some(())
        })
        .await;
    assert!(grown.is_some(), "not expanded: {:?}", s.api.event_reasons());
    assert_eq!(
        s.api.get("persistentvolumes", None, &name).unwrap()["spec"]["capacity"]["storage"],
        "3Mi"
    );
    wait_event(&s, "VolumeResizeSuccessful").await;
    tokio::time::sleep(Duration::from_millis(300)).await; // the server reloads the registry
    let (more_at, st) = fill(&mut conn, &f, full_at).await;
    assert_eq!(st, nfsstat3::NFS3ERR_DQUOT);
    assert!(
        (2 << 20..=3 << 20).contains(&more_at),
        "wrote up to {more_at} after growing to 3 MiB"
    );
    let fs = conn
        .fsstat(&FSSTAT3args { fsroot: root })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(fs.tbytes, 3 << 20, "df shows the new size");

    // Shrinking is refused with an Event; the size stays.
    request(&s, "data", "2Mi");
    wait_event(&s, "VolumeResizeFailed").await;
    assert_eq!(
        s.store.volume_by_name(&name).unwrap().quota.limit(),
        Some(3 << 20)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn growing_needs_a_class_that_allows_expansion() {
    let s = setup(json!({})).await;
    start_controller(&s, config(), None).await;
    let uid = add_claim(&s, "data", json!({}));
    wait_pv(&s, &uid).await;
    let name = format!("pvc-{uid}");
    bind(&s, "data", &name, "1Gi");
    request(&s, "data", "2Gi");
    wait_event(&s, "VolumeResizeFailed").await;
    let ev = events(&s)
        .into_iter()
        .find(|e| e["reason"] == "VolumeResizeFailed")
        .unwrap();
    assert!(
        ev["message"]
            .as_str()
            .unwrap()
            .contains("allowVolumeExpansion"),
        "{ev}"
    );
    assert_eq!(
        s.store.volume_by_name(&name).unwrap().quota.limit(),
        Some(1 << 30)
    );
    assert_eq!(
        s.api.get("persistentvolumes", None, &name).unwrap()["spec"]["capacity"]["storage"],
        "1Gi"
    );
}
