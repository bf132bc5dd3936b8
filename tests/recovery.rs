//! The classic disasters, each staged from scratch against the Kubernetes API stand-in with a
//! real export root and our NFS server driven by an independent client: the export root
//! wiped with PVs present, the identity file lost, a volume directory deleted, orphaned data
//! handed to a new claim, the Service recreated with a new ClusterIP, an ephemeral export root.
//! Every scenario ends with the claims still there (none deleted) and bound to a volume that
//! is writable over NFS. The `recover` and `status` commands run as the real binary.

mod kube_common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use export_store::ExportStore;
use kube_common::*;
use provisioner::controller::Config;
use provisioner::recovery::{OnMissing, Recover, RecoveryError};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_nfs-server-provisioner");

/// Provisions claim `name` and marks it Bound as kube-controller-manager would; returns
/// (claim uid, PV name).
async fn bound_claim(s: &Setup, name: &str) -> (String, String) {
    let uid = add_claim(s, name, json!({}));
    wait_pv(s, &uid).await;
    let pv = format!("pvc-{uid}");
    bind(s, name, &pv);
    (uid, pv)
}

fn bind(s: &Setup, claim: &str, pv: &str) {
    s.api
        .modify("persistentvolumeclaims", Some("apps"), claim, |c| {
            c["spec"]["volumeName"] = json!(pv);
        })
        .unwrap();
    s.api
        .update_status(
            "persistentvolumeclaims",
            Some("apps"),
            claim,
            json!({"phase": "Bound"}),
        )
        .unwrap();
    s.api
        .update_status("persistentvolumes", None, pv, json!({"phase": "Bound"}))
        .unwrap();
}

/// The claim exists with its uid, is Bound, and its volume names it back.
fn assert_bound(s: &Setup, claim: &str, uid: &str, pv: &str) -> Value {
    let c = s
        .api
        .get("persistentvolumeclaims", Some("apps"), claim)
        .unwrap_or_else(|| panic!("claim {claim} was deleted"));
    assert_eq!(c["metadata"]["uid"], uid, "claim {claim} was recreated");
    assert_eq!(c["status"]["phase"], "Bound");
    assert_eq!(c["spec"]["volumeName"], pv);
    let v = s
        .api
        .get("persistentvolumes", None, pv)
        .unwrap_or_else(|| panic!("no PV {pv}"));
    assert_eq!(v["spec"]["claimRef"]["name"], claim);
    v
}

/// Writes and reads back a file over NFS at the PV's path.
async fn assert_writable(running: &nfs_server_provisioner::Running, pv: &Value, file: &str) {
    let path = pv["spec"]["nfs"]["path"].as_str().unwrap();
    let data = format!("written to {path}");
    write_over_nfs(running, path, file.as_bytes(), data.as_bytes()).await;
    assert_eq!(
        read_over_nfs(running, path, file.as_bytes()).await,
        data.as_bytes()
    );
}

fn reasons_for(s: &Setup, kind: &str, name: &str) -> Vec<String> {
    events(s)
        .into_iter()
        .filter(|e| e["involvedObject"]["kind"] == kind && e["involvedObject"]["name"] == name)
        .map(|e| e["reason"].as_str().unwrap_or_default().to_owned())
        .collect()
}

async fn wait_reason(s: &Setup, kind: &str, name: &str, reason: &str) {
    let found = s
        .api
        .wait_for(WAIT, |_| {
            reasons_for(s, kind, name)
                .iter()
                .any(|r| r == reason)
                .then_some(())
        })
        .await;
    assert!(
        found.is_some(),
        "no {reason} on {kind} {name}: {:?}",
        reasons_for(s, kind, name)
    );
}

/// The controller as `serve` starts it: identity settled first (adopted if lost).
async fn start_like_serve(s: &Setup, config: Config) -> tokio::task::JoinHandle<()> {
    let client = client(&s.api).await;
    let identity =
        provisioner::recovery::settle_identity(&client, s.root(), NAME, None, config.recover).await;
    tokio::spawn(provisioner::run(
        client,
        Arc::clone(&s.store),
        config,
        identity,
        None,
    ))
}

/// A kubeconfig for the stand-in, for running the binary against it.
fn kubeconfig(s: &Setup) -> std::path::PathBuf {
    let path = s.root().join(".kubeconfig-test");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: standin\n  cluster:\n    server: {}\n\
             users:\n- name: test\n  user: {{}}\ncontexts:\n- name: test\n  context:\n    cluster: standin\n    user: test\n\
             current-context: test\n",
            s.api.url()
        ),
    )
    .unwrap();
    path
}

/// Runs the binary (`recover ...`, `status`) against the stand-in; returns stdout.
async fn run_bin(s: &Setup, args: &[&str]) -> String {
    let kc = kubeconfig(s);
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .arg("--kubeconfig")
        .arg(&kc)
        .env("EXPORT_ROOT", s.root())
        .env("PROVISIONER", NAME)
        .env("POD_IP", "10.0.0.1")
        .env_remove("POD_NAMESPACE")
        .env_remove("SERVICE_NAME");
    // A thread of its own: blocking-pool threads may carry an NFS client's fsuid, which
    // exec would be checked against.
    let child = std::thread::spawn(move || cmd.output().unwrap());
    while !child.is_finished() {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let out = child.join().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{args:?} failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_export_root_adopts_the_identity_and_recreates_the_volumes() {
    let mut s = setup(json!({})).await;
    let first = start_controller(&s, config(), None).await;
    let (uid, pv) = bound_claim(&s, "data").await;
    let identity = provisioner::identity::read(s.root()).unwrap().unwrap();
    first.abort();

    // The pod comes back on an empty export root (the old chart's emptyDir, rescheduled).
    let fresh = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    s.store = Arc::new(ExportStore::open(fresh.path()).unwrap());
    s._dir = fresh;
    start_like_serve(
        &s,
        Config {
            on_missing: OnMissing::Recreate,
            ..config()
        },
    )
    .await;
    // Not a new random identity: the one every PV carries.
    assert_eq!(
        provisioner::identity::read(s.root()).unwrap().as_deref(),
        Some(identity.as_str())
    );
    wait_reason(&s, "PersistentVolume", &pv, "IdentityRecovered").await;
    wait_reason(&s, "PersistentVolume", &pv, "VolumeRecreated").await;
    wait_reason(&s, "PersistentVolumeClaim", "data", "VolumeRecreated").await;
    let msg = events(&s)
        .into_iter()
        .find(|e| e["reason"] == "VolumeRecreated")
        .unwrap()["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(msg.contains("data it held is lost"), "{msg}");
    let mode = std::fs::metadata(s.root().join(&pv))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o2777);

    let volume = assert_bound(&s, "data", &uid, &pv);
    let running = serve_nfs(&s).await;
    assert_writable(&running, &volume, "after-wipe.txt").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_export_root_is_reported_then_recreated_on_demand() {
    let mut s = setup(json!({})).await;
    let first = start_controller(&s, config(), None).await;
    let (uid, pv) = bound_claim(&s, "data").await;
    first.abort();
    let fresh = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    s.store = Arc::new(ExportStore::open(fresh.path()).unwrap());
    s._dir = fresh;
    start_like_serve(&s, config()).await;
    wait_reason(&s, "PersistentVolume", &pv, "VolumeDataMissing").await;
    wait_reason(&s, "PersistentVolumeClaim", "data", "VolumeDataMissing").await;
    assert!(
        !s.root().join(&pv).exists(),
        "report mode must not recreate"
    );

    let status = run_bin(&s, &["status"]).await;
    // The fix is a whole command: the program as run, with the flags `status` was given.
    let fix = format!(
        "{BIN} recover --recreate-missing --export-root {} --kubeconfig {} --provisioner {NAME}",
        s.root().display(),
        kubeconfig(&s).display()
    );
    assert!(
        status.contains("directory is missing") && status.contains(&format!("fix: {fix}")),
        "{status}"
    );
    let out = run_bin(&s, &["recover", "--recreate-missing"]).await;
    assert!(out.contains("1 volume(s) recreated"), "{out}");
    wait_reason(&s, "PersistentVolumeClaim", "data", "VolumeRecreated").await;

    let volume = assert_bound(&s, "data", &uid, &pv);
    let running = serve_nfs(&s).await;
    assert_writable(&running, &volume, "recreated.txt").await;
    assert!(run_bin(&s, &["status"]).await.contains("no problems found"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_identity_file_is_adopted_and_the_volumes_keep_their_data() {
    let s = setup(json!({})).await;
    let first = start_controller(&s, config(), None).await;
    let (uid, pv) = bound_claim(&s, "data").await;
    let identity = provisioner::identity::read(s.root()).unwrap().unwrap();
    std::fs::write(s.root().join(&pv).join("kept.txt"), b"still here").unwrap();
    first.abort();

    std::fs::remove_file(s.root().join("nfs-provisioner.identity")).unwrap();
    let status = run_bin(&s, &["status"]).await;
    assert!(
        status.contains(&format!("recover --adopt-identity {identity}")),
        "{status}"
    );
    start_like_serve(&s, config()).await;
    assert_eq!(
        provisioner::identity::read(s.root()).unwrap().as_deref(),
        Some(identity.as_str())
    );
    wait_reason(&s, "PersistentVolume", &pv, "IdentityRecovered").await;

    let volume = assert_bound(&s, "data", &uid, &pv);
    let running = serve_nfs(&s).await;
    let path = volume["spec"]["nfs"]["path"].as_str().unwrap();
    assert_eq!(
        read_over_nfs(&running, path, b"kept.txt").await,
        b"still here"
    );
    assert_writable(&running, &volume, "after.txt").await;
    // The adopted identity still deletes what it owns.
    assert!(
        reasons_for(&s, "PersistentVolume", &pv)
            .iter()
            .all(|r| r != "VolumeFailedDelete")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_is_never_guessed_and_the_refusal_names_the_command() {
    let s = setup(json!({})).await;
    for (name, id) in [
        ("pvc-a", "11111111-0000-4000-8000-000000000001"),
        ("pvc-b", "22222222-0000-4000-8000-000000000002"),
    ] {
        s.api
            .insert(json!({
                "apiVersion": "v1", "kind": "PersistentVolume",
                "metadata": {"name": name, "annotations": {
                    "pv.kubernetes.io/provisioned-by": NAME, "Provisioner_Id": id}},
                "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany"],
                         "nfs": {"server": "10.0.0.1", "path": format!("/export/{name}")}},
            }))
            .unwrap();
    }
    let c = client(&s.api).await;
    let two =
        provisioner::recovery::resolve_identity(&c, s.root(), NAME, None, Recover::Auto).await;
    let msg = match two {
        Err(e @ RecoveryError::AmbiguousIdentity { .. }) => e.to_string(),
        other => panic!("guessed: {other:?}"),
    };
    assert!(msg.contains("recover --adopt-identity ID"), "{msg}");
    assert!(provisioner::identity::read(s.root()).unwrap().is_none());

    s.api.delete("persistentvolumes", None, "pvc-b").unwrap();
    let off = provisioner::recovery::resolve_identity(&c, s.root(), NAME, None, Recover::Off).await;
    let msg = off.unwrap_err().to_string();
    assert!(
        msg.contains("recover --adopt-identity 11111111-0000-4000-8000-000000000001"),
        "{msg}"
    );
    // The operator runs the command; the next attempt uses it.
    run_bin(
        &s,
        &[
            "recover",
            "--adopt-identity",
            "11111111-0000-4000-8000-000000000001",
        ],
    )
    .await;
    let (id, _) = provisioner::recovery::resolve_identity(&c, s.root(), NAME, None, Recover::Off)
        .await
        .unwrap();
    assert_eq!(id, "11111111-0000-4000-8000-000000000001");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_directory_is_recreated_by_recover_while_serving() {
    let s = setup(json!({"onDelete": "retain"})).await;
    start_like_serve(&s, config()).await;
    let (uid, pv) = bound_claim(&s, "data").await;
    let running = serve_nfs(&s).await;
    std::fs::remove_dir_all(s.root().join(&pv)).unwrap();

    let out = run_bin(&s, &["recover", "--recreate-missing"]).await;
    assert!(out.contains(&format!("recreated {pv}")), "{out}");
    wait_reason(&s, "PersistentVolume", &pv, "VolumeRecreated").await;
    wait_reason(&s, "PersistentVolumeClaim", "data", "VolumeRecreated").await;
    // Mode as the class's (default) gid parameter makes it: 2777.
    let meta = std::fs::metadata(s.root().join(&pv)).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o2777);

    let volume = assert_bound(&s, "data", &uid, &pv);
    // The running server picks up the new export (registry reload) without a restart.
    let recreated = s.store.registry().load().unwrap().volumes;
    let id = recreated.iter().find(|v| v.name == pv).unwrap().id;
    let deadline = tokio::time::Instant::now() + WAIT;
    while running
        .store
        .volume_by_name(&pv)
        .is_none_or(|v| v.record.id != id)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "new export not served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_writable(&running, &volume, "fresh.txt").await;
    assert!(s.root().join(&pv).join("fresh.txt").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orphaned_directory_is_bound_to_a_new_claim_and_its_files_read_back() {
    let s = setup(json!({})).await;
    start_like_serve(&s, config()).await;
    // Data left in the export root by a claim and PV that are long gone.
    std::fs::create_dir(s.root().join("pvc-0ld")).unwrap();
    std::fs::write(s.root().join("pvc-0ld/report.csv"), b"a,b\n1,2\n").unwrap();

    let status = run_bin(&s, &["status"]).await;
    assert!(
        status.contains("directory pvc-0ld has no PersistentVolume")
            && status.contains("recover --bind-orphan pvc-0ld --claim NAMESPACE/NAME"),
        "{status}"
    );
    run_bin(
        &s,
        &[
            "recover",
            "--bind-orphan",
            "pvc-0ld",
            "--claim",
            "apps/restored",
            "--size",
            "2Gi",
        ],
    )
    .await;
    let pv = s.api.get("persistentvolumes", None, "pvc-0ld").unwrap();
    assert_eq!(pv["spec"]["claimRef"]["namespace"], "apps");
    assert_eq!(pv["spec"]["claimRef"]["name"], "restored");
    assert_eq!(pv["spec"]["storageClassName"], "nfs");
    assert_eq!(pv["spec"]["capacity"]["storage"], "2Gi");
    assert_eq!(pv["spec"]["nfs"]["path"], "/export/pvc-0ld");
    assert_eq!(
        pv["metadata"]["annotations"]["pv.kubernetes.io/provisioned-by"],
        NAME
    );

    // The user creates the claim; the binder matches it to the PV bound ahead to it.
    let c = s
        .api
        .insert(json!({
            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": "restored", "namespace": "apps"},
            "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "nfs",
                     "resources": {"requests": {"storage": "1Gi"}}},
        }))
        .unwrap();
    bind(&s, "restored", "pvc-0ld");
    let volume = assert_bound(
        &s,
        "restored",
        c["metadata"]["uid"].as_str().unwrap(),
        "pvc-0ld",
    );
    let running = serve_nfs(&s).await;
    assert_eq!(
        read_over_nfs(&running, "/export/pvc-0ld", b"report.csv").await,
        b"a,b\n1,2\n"
    );
    assert_writable(&running, &volume, "new.txt").await;
    // No second volume was provisioned for the claim.
    assert_eq!(s.api.list("persistentvolumes").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recreated_service_re_points_the_pvs_without_touching_the_claims() {
    let s = setup(json!({})).await;
    let service = |ip: &str| {
        json!({"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": "nfs-server", "namespace": "storage"},
               "spec": {"clusterIP": ip, "ports": [{"name": "nfs", "port": 2049}]}})
    };
    s.api.insert(service("10.96.0.10")).unwrap();
    let config = Config {
        server_address: None,
        namespace: Some("storage".into()),
        service_name: Some("nfs-server".into()),
        pod_ip: Some("10.244.0.5".into()),
        address_check: Duration::from_millis(200),
        ..config()
    };
    start_like_serve(&s, config).await;
    let (uid, pv) = bound_claim(&s, "data").await;
    let before = s.api.get("persistentvolumes", None, &pv).unwrap();
    assert_eq!(before["spec"]["nfs"]["server"], "10.96.0.10");
    std::fs::write(s.root().join(&pv).join("kept.txt"), b"kept").unwrap();

    // The Service is deleted and created again: a new ClusterIP.
    s.api
        .delete("services", Some("storage"), "nfs-server")
        .unwrap();
    // While it is missing, the PVs are not moved to the pod's own address.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        s.api.get("persistentvolumes", None, &pv).unwrap()["spec"]["nfs"]["server"],
        "10.96.0.10"
    );
    s.api.insert(service("10.96.0.77")).unwrap();
    let after = s
        .api
        .wait_for(WAIT, |a| {
            a.get("persistentvolumes", None, &pv)
                .filter(|v| v["spec"]["nfs"]["server"] == "10.96.0.77")
        })
        .await
        .expect("PV not re-pointed");
    // Same volume: name, claim (with its uid), path, capacity, class, annotations.
    assert_ne!(after["metadata"]["uid"], before["metadata"]["uid"]);
    for field in [
        "/spec/claimRef/uid",
        "/spec/claimRef/name",
        "/spec/nfs/path",
        "/spec/capacity",
        "/spec/storageClassName",
        "/spec/persistentVolumeReclaimPolicy",
        "/spec/mountOptions",
        "/metadata/annotations/Provisioner_Id",
    ] {
        assert_eq!(after.pointer(field), before.pointer(field), "{field}");
    }
    assert_eq!(
        after["metadata"]["finalizers"],
        json!(["external-provisioner.volume.kubernetes.io/finalizer"])
    );
    wait_reason(&s, "PersistentVolume", &pv, "ServerAddressChanged").await;
    // The data directory was not touched by the PV's deletion.
    assert!(s.root().join(&pv).join("kept.txt").exists());
    bind(&s, "data", &pv);
    let volume = assert_bound(&s, "data", &uid, &pv);
    let running = serve_nfs(&s).await;
    assert_writable(&running, &volume, "after-move.txt").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_server_address_repoints_on_demand_and_finishes_an_interrupted_replacement() {
    let s = setup(json!({})).await;
    let first = start_controller(&s, config(), None).await;
    let (uid, pv) = bound_claim(&s, "data").await;
    first.abort();
    let out = run_bin(&s, &["recover", "--server-address", "192.0.2.44"]).await;
    assert!(
        out.contains("1 PersistentVolume(s) now name server 192.0.2.44"),
        "{out}"
    );
    let moved = s.api.get("persistentvolumes", None, &pv).unwrap();
    assert_eq!(moved["spec"]["nfs"]["server"], "192.0.2.44");
    assert_eq!(moved["spec"]["claimRef"]["uid"], uid);

    // A replacement interrupted after the delete: the PV is gone, its intent is on disk.
    let pending = s.root().join(".nfs-server-provisioner/replacing");
    std::fs::create_dir_all(&pending).unwrap();
    let mut intent = moved.clone();
    intent["metadata"] = json!({"name": pv, "annotations": moved["metadata"]["annotations"]});
    intent.as_object_mut().unwrap().remove("status");
    std::fs::write(pending.join(format!("{pv}.json")), intent.to_string()).unwrap();
    s.api.delete("persistentvolumes", None, &pv).unwrap();
    s.api
        .modify("persistentvolumes", None, &pv, |v| {
            v["metadata"]["finalizers"] = json!(null);
        })
        .ok();
    assert!(s.api.get("persistentvolumes", None, &pv).is_none());
    start_like_serve(
        &s,
        Config {
            recover: Recover::Off,
            ..config()
        },
    )
    .await;
    let back = s
        .api
        .wait_for(WAIT, |a| a.get("persistentvolumes", None, &pv))
        .await
        .expect("interrupted replacement not finished");
    assert_eq!(back["spec"]["claimRef"]["uid"], uid);
    // The intent is removed once the PV exists again.
    let done = s
        .api
        .wait_for(WAIT, |_| {
            std::fs::read_dir(&pending)
                .unwrap()
                .next()
                .is_none()
                .then_some(())
        })
        .await;
    assert!(done.is_some(), "intent left behind");
    bind(&s, "data", &pv);
    let volume = assert_bound(&s, "data", &uid, &pv);
    let running = serve_nfs(&s).await;
    assert_writable(&running, &volume, "x.txt").await;
}

/// Runs `serve` on `root` with free ports; returns (success, stderr).
fn serve_once(root: &Path, extra: &[&str], wrap: Option<&str>) -> (bool, String) {
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let args = format!(
        "serve --export-root={} --bind=127.0.0.1 --nfs-port={} --mount-port={} --portmap-port=0 \
         --http-port=0 --nlm-port=0 --statd-port=0 --no-controller {}",
        root.display(),
        free(),
        free(),
        extra.join(" ")
    );
    // `timeout` ends a server that started; one that refuses exits at once.
    let script = match wrap {
        Some(w) => format!("{w} && exec timeout 2 {BIN} {args}"),
        None => format!("exec timeout 2 {BIN} {args}"),
    };
    let mut cmd = match wrap {
        Some(_) => {
            let mut c = Command::new("unshare");
            c.args(["--mount", "--propagation", "private", "sh", "-c", &script]);
            c
        }
        None => {
            let mut c = Command::new("sh");
            c.args(["-c", &script]);
            c
        }
    };
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    // 124: timeout stopped a server that was running.
    (out.status.code() == Some(124), stderr)
}

#[test]
fn an_ephemeral_export_root_is_refused_unless_allowed() {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: serve needs root");
        return;
    }
    // tmpfs.
    let shm = tempfile::tempdir_in("/dev/shm").unwrap();
    let (served, err) = serve_once(shm.path(), &[], None);
    assert!(!served, "served from tmpfs");
    assert!(
        err.contains("tmpfs") && err.contains("--allow-ephemeral-export-root"),
        "{err}"
    );
    let (served, err) = serve_once(shm.path(), &["--allow-ephemeral-export-root"], None);
    assert!(served && err.contains("EPHEMERAL EXPORT ROOT"), "{err}");

    // A Kubernetes emptyDir: on a real disk, but bind-mounted from kubelet's emptyDir path.
    let base = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let src = base
        .path()
        .join("pods/6c1/volumes/kubernetes.io~empty-dir/data");
    let dst = base.path().join("export");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::create_dir_all(&dst).unwrap();
    let bind = format!("mount --bind {} {}", src.display(), dst.display());
    let (served, err) = serve_once(&dst, &[], Some(&bind));
    assert!(!served, "served from an emptyDir");
    assert!(
        err.contains("emptyDir") && err.contains("persistence.enabled=true"),
        "{err}"
    );
    // The same directory without the emptyDir mount is fine.
    let (served, err) = serve_once(&dst, &[], None);
    assert!(served, "{err}");
}
