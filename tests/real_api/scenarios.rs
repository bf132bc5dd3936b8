//! Every scenario users meet, in order, on one control plane: install, the walk-through,
//! StorageClass parameters and `onDelete`, Events, expansion, deletion, each repair of
//! docs/troubleshooting.md, and two replicas with leader election.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Service};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};

use crate::cluster::ControlPlane;
use crate::server::{PodSpec, Server, install_chart};
use crate::support::*;

const NS: &str = "nfs";
const RELEASE: &str = "nfs-server-provisioner";
const APPS: &str = "default";

fn step(what: &str) {
    eprintln!("[real-api] == {what}");
}

/// The volume's record in the export root's registry.
pub(crate) fn registry_entry(root: &Path, volume: &str) -> Option<Value> {
    let text = std::fs::read_to_string(root.join(".nfs-server-provisioner/registry.json")).ok()?;
    let v: Value = serde_json::from_str(&text).ok()?;
    v["volumes"]
        .as_array()?
        .iter()
        .find(|r| r["name"] == volume)
        .cloned()
}

pub async fn run_all(assets: &Path) {
    let t0 = Instant::now();
    step("control plane");
    let cp = ControlPlane::start(assets).await;
    let admin = cp.admin().await;
    // REAL_API_ONLY=shards: only the shards scenario (a quicker loop while working on it).
    if std::env::var("REAL_API_ONLY").as_deref() == Ok("shards") {
        crate::shards::shards(&cp, &admin, &cp.dir.join("pods")).await;
        return;
    }

    step("helm install with the old chart's values");
    install_chart(&helm(), &cp, NS, RELEASE);
    let spec = PodSpec::from_chart(&cp, &admin, NS, RELEASE).await;
    let service = Api::<Service>::namespaced(admin.clone(), NS)
        .get(RELEASE)
        .await
        .expect("the chart's Service");
    let cluster_ip = service
        .spec
        .and_then(|s| s.cluster_ip)
        .expect("a ClusterIP");
    let mut addresses = vec![LoopbackAddress::add(&cluster_ip)];
    let roots = cp.dir.join("pods");
    let mut a = Server::start(&spec, "nfs-server-provisioner-0", &roots.join("a"), &[]);
    a.ready().await;

    let ctx = Ctx {
        admin: admin.clone(),
        cp: &cp,
    };

    walk_through(&ctx, &a, &cluster_ip).await;
    expansion(&ctx, &a).await;
    parameters(&ctx, &a).await;
    let data = recovery(&ctx, &mut a, &cluster_ip).await;
    let new_ip = new_server_address(&ctx, &a, &data).await;
    addresses.push(new_ip);
    leader_election(&ctx, &spec, &mut a, &roots).await;
    crate::shards::shards(&cp, &admin, &roots).await;

    step("kubectl describe shows the Events");
    if let Some(out) = describe(&cp.admin_kubeconfig, APPS, "pvc", "bogus") {
        assert!(
            out.contains("ProvisioningFailed") && out.contains("onDelete"),
            "kubectl describe pvc bogus:\n{out}"
        );
    }

    step("repeats are one Event with a count");
    let e = wait_for(
        "ProvisioningFailed repeated as a series",
        Duration::from_secs(60),
        || async {
            events(&admin, Some(APPS), "PersistentVolumeClaim", "bogus")
                .await
                .into_iter()
                .find(|e| e.reason == "ProvisioningFailed" && e.count >= 2)
        },
    )
    .await;
    assert_eq!(e.type_, "Warning");
    step("no refused writes in the server's log");
    assert_no_refusals(&a);
    eprintln!("[real-api] all scenarios passed in {:?}", t0.elapsed());
}

/// The API server refused nothing the server sent (422 invalid, 409 conflict, 403 forbidden),
/// and every Event was recorded. Its warnings are shown for the record.
pub(crate) fn assert_no_refusals(server: &Server) {
    let warnings = server.warnings();
    eprintln!(
        "[real-api] {}: {} warning(s)\n{}",
        server.name,
        warnings.len(),
        warnings.join("\n")
    );
    for bad in ["code: 422", "code: 409", "code: 403", "cannot record event"] {
        let lines: Vec<&String> = warnings.iter().filter(|l| l.contains(bad)).collect();
        assert!(
            lines.is_empty(),
            "{} logged {bad:?}: {lines:?}",
            server.name
        );
    }
}

struct Ctx<'a> {
    admin: Client,
    cp: &'a ControlPlane,
}

async fn walk_through(ctx: &Ctx<'_>, a: &Server, cluster_ip: &str) {
    step("walk-through: StorageClass nfs as the chart renders it, claim nfs-claim RWX 1Gi");
    let class = Api::<StorageClass>::all(ctx.admin.clone())
        .get("nfs")
        .await
        .expect("the chart's StorageClass nfs");
    assert_eq!(class.provisioner, "cluster.local/nfs-server-provisioner");
    claim(&ctx.admin, APPS, "nfs-claim", "nfs", "1Gi").await;
    let (pvc, pv) = bound(&ctx.admin, APPS, "nfs-claim").await;
    let (server, path) = nfs_of(&pv);
    assert_eq!(server, cluster_ip, "PVs name the Service's ClusterIP");
    assert_eq!(pv.name_any(), format!("pvc-{}", pvc.uid().unwrap()));
    assert_eq!(path, format!("/export/{}", pv.name_any()));
    assert_eq!(
        pv.spec
            .as_ref()
            .unwrap()
            .mount_options
            .clone()
            .unwrap_or_default(),
        vec!["vers=3", "retrans=2", "timeo=30"],
        "the class's mountOptions"
    );
    let text = nfs_write_read(&server, &path, a.ports(), "hello.txt", "written over NFS\n");
    assert_eq!(text, "written over NFS\n");
    assert_eq!(
        std::fs::read_to_string(a.export_root.join(pv.name_any()).join("hello.txt")).unwrap(),
        "written over NFS\n"
    );
    let e = event(
        &ctx.admin,
        Some(APPS),
        "PersistentVolumeClaim",
        "nfs-claim",
        "ProvisioningSucceeded",
    )
    .await;
    assert_eq!(e.type_, "Normal");
    assert_eq!(e.source, "cluster.local/nfs-server-provisioner");
    assert!(e.message.contains(&pv.name_any()), "{e:?}");
    event(
        &ctx.admin,
        Some(APPS),
        "PersistentVolumeClaim",
        "nfs-claim",
        "Provisioning",
    )
    .await;
}

async fn expansion(ctx: &Ctx<'_>, a: &Server) {
    step("expansion 1Gi -> 2Gi");
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.admin.clone(), APPS);
    claims
        .patch(
            "nfs-claim",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"resources": {"requests": {"storage": "2Gi"}}}})),
        )
        .await
        .expect("grow the claim");
    let pvc = wait_for("claim status capacity 2Gi", WAIT, || async {
        claims.get("nfs-claim").await.ok().filter(|c| {
            c.status
                .as_ref()
                .and_then(|s| s.capacity.as_ref())
                .and_then(|c| c.get("storage"))
                .is_some_and(|q| q.0 == "2Gi")
        })
    })
    .await;
    let pv_name = pvc.spec.unwrap().volume_name.unwrap();
    let pv = Api::<PersistentVolume>::all(ctx.admin.clone())
        .get(&pv_name)
        .await
        .unwrap();
    assert_eq!(provisioner::pv::capacity(&pv).unwrap().0, "2Gi");
    let size = registry_entry(&a.export_root, &pv_name).unwrap()["size"].as_u64();
    assert_eq!(size, Some(2 << 30), "the volume's limit follows the claim");
    event(
        &ctx.admin,
        Some(APPS),
        "PersistentVolumeClaim",
        "nfs-claim",
        "VolumeResizeSuccessful",
    )
    .await;
}

/// A class of our provisioner with `params`, reclaim policy Delete.
async fn class(ctx: &Ctx<'_>, name: &str, params: Value) {
    let c: StorageClass = serde_json::from_value(json!({
        "metadata": {"name": name}, "provisioner": "cluster.local/nfs-server-provisioner",
        "reclaimPolicy": "Delete", "parameters": params, "allowVolumeExpansion": true,
    }))
    .unwrap();
    Api::<StorageClass>::all(ctx.admin.clone())
        .create(&PostParams::default(), &c)
        .await
        .unwrap_or_else(|e| panic!("create class {name}: {e}"));
}

async fn delete_claim(ctx: &Ctx<'_>, name: &str) {
    Api::<PersistentVolumeClaim>::namespaced(ctx.admin.clone(), APPS)
        .delete(name, &DeleteParams::default())
        .await
        .unwrap_or_else(|e| panic!("delete claim {name}: {e}"));
}

async fn parameters(ctx: &Ctx<'_>, a: &Server) {
    step("StorageClass parameters");
    class(
        ctx,
        "nfs-params",
        json!({"gid": "1234", "squash": "all", "anonUID": "1000", "anonGID": "2000",
               "mountOptions": "nfsvers=4.1"}),
    )
    .await;
    claim(&ctx.admin, APPS, "params", "nfs-params", "10Mi").await;
    let (_, pv) = bound(&ctx.admin, APPS, "params").await;
    let dir = a.export_root.join(pv.name_any());
    let meta = std::fs::metadata(&dir).unwrap();
    assert_eq!(meta.gid(), 1234, "gid");
    assert_eq!(
        meta.permissions().mode() & 0o7777,
        0o2071,
        "gid gives mode 2071"
    );
    let opts = registry_entry(&a.export_root, &pv.name_any()).unwrap();
    assert_eq!(
        opts["squash"].as_str().map(str::to_lowercase).as_deref(),
        Some("all")
    );
    assert_eq!(
        (opts["anonuid"].as_u64(), opts["anongid"].as_u64()),
        (Some(1000), Some(2000))
    );
    // The old provisioner's free-text parameter, as the old provisioner did: an annotation.
    assert_eq!(
        pv.annotations()
            .get("volume.beta.kubernetes.io/mount-options")
            .map(String::as_str),
        Some("nfsvers=4.1")
    );
    class(ctx, "nfs-rootsquash", json!({"rootSquash": "true"})).await;
    claim(&ctx.admin, APPS, "rootsquash", "nfs-rootsquash", "10Mi").await;
    let (_, pv) = bound(&ctx.admin, APPS, "rootsquash").await;
    let opts = registry_entry(&a.export_root, &pv.name_any()).unwrap();
    assert_eq!(
        opts["squash"].as_str().map(str::to_lowercase).as_deref(),
        Some("root")
    );
    let meta = std::fs::metadata(a.export_root.join(pv.name_any())).unwrap();
    assert_eq!(
        meta.permissions().mode() & 0o7777,
        0o2777,
        "gid none gives mode 2777"
    );

    step("a bad parameter: ProvisioningFailed naming it");
    class(ctx, "nfs-bogus", json!({"onDelete": "bogus"})).await;
    claim(&ctx.admin, APPS, "bogus", "nfs-bogus", "10Mi").await;
    let e = event(
        &ctx.admin,
        Some(APPS),
        "PersistentVolumeClaim",
        "bogus",
        "ProvisioningFailed",
    )
    .await;
    assert_eq!(e.type_, "Warning");
    assert!(
        e.message.contains("onDelete") && e.message.contains("bogus"),
        "{e:?}"
    );
    // Kept failing: its retries become one Event with a count (checked at the end).

    step("onDelete: delete, retain, archive");
    for mode in ["delete", "retain", "archive"] {
        let cname = format!("nfs-ondelete-{mode}");
        class(ctx, &cname, json!({"onDelete": mode})).await;
        let claim_name = format!("ondelete-{mode}");
        claim(&ctx.admin, APPS, &claim_name, &cname, "10Mi").await;
        let (_, pv) = bound(&ctx.admin, APPS, &claim_name).await;
        let (server, path) = nfs_of(&pv);
        nfs_write_read(&server, &path, a.ports(), "f", "x");
        delete_claim(ctx, &claim_name).await;
        pv_gone(&ctx.admin, &pv.name_any()).await;
        let dir = a.export_root.join(pv.name_any());
        let archived = std::fs::read_dir(&a.export_root)
            .unwrap()
            .filter_map(|e| e.ok())
            .any(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.starts_with("archived-") && n.contains(&pv.name_any())
            });
        match mode {
            "delete" => assert!(!dir.exists() && !archived, "delete: directory gone"),
            "retain" => assert!(dir.join("f").exists(), "retain: data kept in place"),
            _ => assert!(!dir.exists() && archived, "archive: directory renamed"),
        }
        assert!(
            registry_entry(&a.export_root, &pv.name_any()).is_none(),
            "{mode}: volume unexported"
        );
    }
    delete_claim(ctx, "params").await;
    delete_claim(ctx, "rootsquash").await;
}

/// Data the recovery scenarios leave for the next ones.
struct Recovered {
    claims: Vec<String>,
}

async fn recovery(ctx: &Ctx<'_>, a: &mut Server, _cluster_ip: &str) -> Recovered {
    let (_, pv) = bound(&ctx.admin, APPS, "nfs-claim").await;
    let volume = pv.name_any();
    let identity = a.identity();

    step("troubleshooting: only the identity file was lost");
    a.kill();
    std::fs::remove_file(a.export_root.join("nfs-provisioner.identity")).unwrap();
    a.restart();
    a.ready().await;
    event(
        &ctx.admin,
        None,
        "PersistentVolume",
        &volume,
        "IdentityRecovered",
    )
    .await;
    assert_eq!(
        a.identity(),
        identity,
        "the identity is adopted from the PVs"
    );
    let (server, path) = nfs_of(&pv);
    assert_eq!(
        nfs_read(&server, &path, a.ports(), "hello.txt"),
        "written over NFS\n"
    );

    step("troubleshooting: a volume's directory was deleted");
    a.kill();
    std::fs::remove_dir_all(a.export_root.join(&volume)).unwrap();
    a.restart();
    a.ready().await;
    event(
        &ctx.admin,
        Some(APPS),
        "PersistentVolumeClaim",
        "nfs-claim",
        "VolumeDataMissing",
    )
    .await;
    event(
        &ctx.admin,
        None,
        "PersistentVolume",
        &volume,
        "VolumeDataMissing",
    )
    .await;
    let (ok, out) = a.cli(&["status", "--kubeconfig", &a.kubeconfig()]);
    assert!(out.contains("missing"), "status tells ({ok}):\n{out}");
    let (ok, out) = a.cli(&[
        "recover",
        "--recreate-missing",
        "--kubeconfig",
        &a.kubeconfig(),
    ]);
    assert!(ok, "recover --recreate-missing:\n{out}");
    assert!(a.export_root.join(&volume).is_dir());
    event(
        &ctx.admin,
        Some(APPS),
        "PersistentVolumeClaim",
        "nfs-claim",
        "VolumeRecreated",
    )
    .await;
    event(
        &ctx.admin,
        None,
        "PersistentVolume",
        &volume,
        "VolumeRecreated",
    )
    .await;
    // Served again without a restart, empty.
    nfs_write_read_soon(&server, &path, a.ports(), "hello.txt", "written over NFS\n").await;

    step("troubleshooting: the export root was wiped");
    a.kill();
    for e in std::fs::read_dir(&a.export_root).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            std::fs::remove_dir_all(&p).unwrap();
        } else {
            std::fs::remove_file(&p).unwrap();
        }
    }
    a.restart();
    a.ready().await;
    // One Event per start of the server (the first from the lost directory above).
    wait_for("a second VolumeDataMissing on the claim", WAIT, || async {
        let seen = events(&ctx.admin, Some(APPS), "PersistentVolumeClaim", "nfs-claim").await;
        (seen
            .iter()
            .filter(|e| e.reason == "VolumeDataMissing")
            .count()
            >= 2)
            .then_some(())
    })
    .await;
    if let Some(out) = describe(&ctx.cp.admin_kubeconfig, APPS, "pvc", "nfs-claim") {
        assert!(
            out.contains("VolumeDataMissing"),
            "kubectl describe pvc nfs-claim:\n{out}"
        );
    }
    assert_eq!(a.identity(), identity);
    let (ok, out) = a.cli(&[
        "recover",
        "--recreate-missing",
        "--kubeconfig",
        &a.kubeconfig(),
    ]);
    assert!(ok, "recover --recreate-missing:\n{out}");
    nfs_write_read_soon(&server, &path, a.ports(), "hello.txt", "written over NFS\n").await;

    step("troubleshooting: orphaned data bound to a new claim");
    class(ctx, "nfs-retain", json!({"onDelete": "retain"})).await;
    claim(&ctx.admin, APPS, "keep", "nfs-retain", "10Mi").await;
    let (_, kept) = bound(&ctx.admin, APPS, "keep").await;
    let (ks, kp) = nfs_of(&kept);
    nfs_write_read(&ks, &kp, a.ports(), "precious", "old data\n");
    delete_claim(ctx, "keep").await;
    pv_gone(&ctx.admin, &kept.name_any()).await;
    let (_, out) = a.cli(&["status", "--kubeconfig", &a.kubeconfig()]);
    assert!(out.contains("orphan"), "status lists the orphan:\n{out}");
    let (ok, out) = a.cli(&[
        "recover",
        "--bind-orphan",
        &kept.name_any(),
        "--claim",
        &format!("{APPS}/restored"),
        "--storage-class",
        "nfs-retain",
        "--size",
        "10Mi",
        "--kubeconfig",
        &a.kubeconfig(),
    ]);
    assert!(ok, "recover --bind-orphan:\n{out}");
    claim(&ctx.admin, APPS, "restored", "nfs-retain", "10Mi").await;
    let (_, restored) = bound(&ctx.admin, APPS, "restored").await;
    assert_eq!(
        restored.name_any(),
        kept.name_any(),
        "bound to the orphan's PV"
    );
    event(
        &ctx.admin,
        None,
        "PersistentVolume",
        &restored.name_any(),
        "OrphanBound",
    )
    .await;
    let (rs, rp) = nfs_of(&restored);
    nfs_write_read_soon(&rs, &rp, a.ports(), "new", "new\n").await;
    assert_eq!(nfs_read(&rs, &rp, a.ports(), "precious"), "old data\n");
    Recovered {
        claims: vec!["nfs-claim".into(), "restored".into()],
    }
}

/// The Service is recreated with a new ClusterIP: PVs follow, claims end Bound to them.
async fn new_server_address(ctx: &Ctx<'_>, a: &Server, data: &Recovered) -> LoopbackAddress {
    step("troubleshooting: the Service was recreated (new ClusterIP)");
    // How long each claim is seen `Lost` (polled every 20 ms) while its PV is replaced.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let lost_watch = {
        let (client, stop) = (ctx.admin.clone(), std::sync::Arc::clone(&stop));
        tokio::spawn(async move {
            let claims: Api<PersistentVolumeClaim> = Api::namespaced(client, APPS);
            let mut lost = std::collections::BTreeMap::<String, Duration>::new();
            let mut last = Instant::now();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let now = Instant::now();
                if let Ok(list) = claims.list(&Default::default()).await {
                    for c in list {
                        if c.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Lost") {
                            *lost.entry(c.name_any()).or_default() += now - last;
                        }
                    }
                }
                last = now;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            lost
        })
    };
    let services: Api<Service> = Api::namespaced(ctx.admin.clone(), NS);
    let mut svc = services.get(RELEASE).await.unwrap();
    let old_ip = svc
        .spec
        .as_ref()
        .and_then(|s| s.cluster_ip.clone())
        .unwrap();
    services
        .delete(RELEASE, &DeleteParams::default())
        .await
        .unwrap();
    wait_for("Service deleted", WAIT, || async {
        matches!(services.get_opt(RELEASE).await, Ok(None)).then_some(())
    })
    .await;
    svc.metadata = kube::api::ObjectMeta {
        name: svc.metadata.name.clone(),
        labels: svc.metadata.labels.clone(),
        annotations: svc.metadata.annotations.clone(),
        ..Default::default()
    };
    if let Some(s) = svc.spec.as_mut() {
        s.cluster_ip = None;
        s.cluster_ips = None;
    }
    svc.status = None;
    let svc = services.create(&PostParams::default(), &svc).await.unwrap();
    let new_ip = svc.spec.and_then(|s| s.cluster_ip).unwrap();
    assert_ne!(new_ip, old_ip);
    let lo = LoopbackAddress::add(&new_ip);
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.admin.clone(), APPS);
    let pvs: Api<PersistentVolume> = Api::all(ctx.admin.clone());
    let start = Instant::now();
    for name in &data.claims {
        let pvc = claims.get(name).await.unwrap();
        let pv_name = pvc.spec.unwrap().volume_name.unwrap();
        wait_for(
            &format!("{pv_name} names {new_ip}"),
            Duration::from_secs(90),
            || async {
                pvs.get_opt(&pv_name)
                    .await
                    .ok()
                    .flatten()
                    .filter(|pv| nfs_of(pv).0 == new_ip)
            },
        )
        .await;
        let (pvc, pv) = bound(&ctx.admin, APPS, name).await;
        assert_eq!(pvc.spec.unwrap().volume_name.unwrap(), pv.name_any());
        event(
            &ctx.admin,
            None,
            "PersistentVolume",
            &pv.name_any(),
            "ServerAddressChanged",
        )
        .await;
        let (s, p) = nfs_of(&pv);
        nfs_read(
            &s,
            &p,
            a.ports(),
            if name == "restored" {
                "precious"
            } else {
                "hello.txt"
            },
        );
    }
    eprintln!(
        "[real-api] PVs re-pointed and claims Bound {:?} after the new Service",
        start.elapsed()
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let lost = lost_watch.await.unwrap();
    eprintln!("[real-api] time each claim was seen Lost: {lost:?}");
    // Without the server's nudge a Lost claim waits for the controller-manager's 15 s resync.
    for (claim, d) in &lost {
        assert!(
            *d < Duration::from_secs(10),
            "claim {claim} stayed Lost {d:?}"
        );
    }
    lo
}

async fn leader_election(ctx: &Ctx<'_>, spec: &PodSpec, a: &mut Server, roots: &Path) {
    step("two replicas with leader election: kill the leader, the other provisions");
    let mut b = Server::start(spec, "nfs-server-provisioner-1", &roots.join("b"), &[]);
    b.ready().await;
    // A is the leader (it held the Lease first): B provisions nothing while A lives.
    claim(&ctx.admin, APPS, "by-leader", "nfs", "10Mi").await;
    let (_, pv) = bound(&ctx.admin, APPS, "by-leader").await;
    let id_a = a.identity();
    assert_eq!(
        pv.annotations().get("Provisioner_Id").map(|s| s.trim()),
        Some(id_a.as_str()),
        "provisioned by the leader"
    );
    a.kill();
    let killed = Instant::now();
    claim(&ctx.admin, APPS, "after-failover", "nfs", "10Mi").await;
    let (_, pv) = bound(&ctx.admin, APPS, "after-failover").await;
    eprintln!(
        "[real-api] the other replica provisioned {:?} after the leader died",
        killed.elapsed()
    );
    let id_b = b.identity();
    assert_eq!(
        pv.annotations().get("Provisioner_Id").map(|s| s.trim()),
        Some(id_b.as_str())
    );
    // A second replica with its own (empty) export root is a new server, not A with its
    // identity lost: it must neither adopt A's identity nor report A's volumes missing.
    assert_ne!(id_a, id_b, "replica b adopted replica a's identity");
    assert_eq!(
        pv.annotations()
            .get("nfs-server-provisioner/server-pod")
            .map(String::as_str),
        Some("nfs-server-provisioner-1")
    );
    assert!(
        !b.log_text().contains("is missing from the export root"),
        "replica b reported replica a's volumes:\n{}",
        b.log_tail(20)
    );
    let (s, p) = nfs_of(&pv);
    nfs_write_read(&s, &p, b.ports(), "f", "served by b\n");
    a.restart();
    a.ready().await;
    // A serves its volumes again at once, though B leads now.
    let (_, pv) = bound(&ctx.admin, APPS, "nfs-claim").await;
    let (s, p) = nfs_of(&pv);
    nfs_read(&s, &p, a.ports(), "hello.txt");

    step("delete: PV and directory gone");
    let name = pv.name_any();
    delete_claim(ctx, "nfs-claim").await;
    // A no longer leads; a PV of A's identity is deleted only by A.
    b.kill();
    pv_gone(&ctx.admin, &name).await;
    assert!(!a.export_root.join(&name).exists(), "directory gone");
    assert_no_refusals(&b);

    step("a volume of another identity is never deleted: VolumeFailedDelete");
    // B's volume, released while A leads: A leaves it alone and says why.
    let (_, theirs) = bound(&ctx.admin, APPS, "after-failover").await;
    delete_claim(ctx, "after-failover").await;
    let e = event(
        &ctx.admin,
        None,
        "PersistentVolume",
        &theirs.name_any(),
        "VolumeFailedDelete",
    )
    .await;
    assert!(e.message.contains("identity"), "{e:?}");
    assert!(
        Api::<PersistentVolume>::all(ctx.admin.clone())
            .get_opt(&theirs.name_any())
            .await
            .unwrap()
            .is_some(),
        "another identity's PV was deleted"
    );
    assert!(b.export_root.join(theirs.name_any()).join("f").exists());
    let _ = ctx.cp;
}
