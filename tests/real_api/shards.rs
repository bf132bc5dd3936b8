//! Shards on the real control plane: the chart installed with `replicaCount: 3`, its three
//! pods run as three `serve` processes on 127.0.0.2, 127.0.0.3 and 127.0.0.4 (each its own
//! export root, identity and Lease). 300 claims spread by free capacity, every volume written
//! and read back at the address its PV names; one shard killed (the placer): only its claims
//! stop answering, new claims go to the live shards; restarted, its claims answer again;
//! deletion and expansion are done by the owning shard only.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Service};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use crate::cluster::ControlPlane;
use crate::server::{PodSpec, Server, http_get_at, install_chart_with};
use crate::support::*;

const NS: &str = "shards";
const RELEASE: &str = "shards";
const FULLNAME: &str = "shards-nfs-server-provisioner";
const CLASS: &str = "nfs-shards";
const APPS: &str = "shard-apps";
const CLAIMS: usize = 300;

fn step(what: &str) {
    eprintln!("[real-api] == shards: {what}");
}

/// The shard (pod) a PV names.
fn shard_of(pv: &PersistentVolume) -> String {
    pv.annotations()
        .get("nfs-server-provisioner/server-pod")
        .cloned()
        .unwrap_or_default()
}

/// Our PVs of this release, by claim name.
async fn volumes_by_claim(admin: &Client) -> BTreeMap<String, PersistentVolume> {
    Api::<PersistentVolume>::all(admin.clone())
        .list(&ListParams::default())
        .await
        .expect("list PVs")
        .items
        .into_iter()
        .filter(|pv| {
            pv.spec
                .as_ref()
                .and_then(|s| s.storage_class_name.as_deref())
                == Some(CLASS)
        })
        .filter_map(|pv| {
            let claim = pv.spec.as_ref()?.claim_ref.as_ref()?.name.clone()?;
            Some((claim, pv))
        })
        .collect()
}

/// Whether libnfs can list the volume (a dead server refuses the connection at once).
fn answers(pv: &PersistentVolume, ports: (u16, u16)) -> bool {
    let (server, path) = nfs_of(pv);
    let url = format!(
        "nfs://{server}{path}/?version=3&nfsport={}&mountport={}",
        ports.0, ports.1
    );
    Command::new("timeout")
        .args(["20", "nfs-ls", &url])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Writes `file`, naming the claim, into each volume and reads it back, four at a time.
fn write_read_all(volumes: &[(String, PersistentVolume, (u16, u16))], file: &str) {
    std::thread::scope(|s| {
        for chunk in volumes.chunks(volumes.len().div_ceil(4).max(1)) {
            s.spawn(move || {
                for (claim, pv, ports) in chunk {
                    let (server, path) = nfs_of(pv);
                    let content = format!("{claim} on {server}");
                    let got = nfs_write_read(&server, &path, *ports, file, &content);
                    assert_eq!(got, content, "volume of {claim}");
                }
            });
        }
    });
}

/// Reads back what [`write_read_all`] wrote.
fn read_all(volumes: &[(String, PersistentVolume, (u16, u16))]) {
    for (claim, pv, ports) in volumes {
        let (server, path) = nfs_of(pv);
        assert_eq!(
            nfs_read(&server, &path, *ports, "owner.txt"),
            format!("{claim} on {server}"),
            "volume of {claim}"
        );
    }
}

async fn make_claims(admin: &Client, names: &[String], size: &str) {
    futures::stream::iter(names)
        .for_each_concurrent(16, |n| async move {
            claim(admin, APPS, n, CLASS, size).await;
        })
        .await;
}

async fn all_bound(admin: &Client, names: &[String], limit: Duration) {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(admin.clone(), APPS);
    wait_for(&format!("{} claims Bound", names.len()), limit, || async {
        let list = claims.list(&ListParams::default()).await.ok()?;
        let bound: std::collections::HashSet<String> = list
            .items
            .iter()
            .filter(|c| c.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound"))
            .map(|c| c.name_any())
            .collect();
        names.iter().all(|n| bound.contains(n)).then_some(())
    })
    .await;
}

pub async fn shards(cp: &ControlPlane, admin: &Client, roots: &Path) {
    let t0 = Instant::now();
    step("helm install with replicaCount 3");
    install_chart_with(
        &helm(),
        cp,
        NS,
        RELEASE,
        &["replicaCount=3", &format!("storageClass.name={CLASS}")],
    );
    let spec = PodSpec::from_chart(cp, admin, NS, FULLNAME).await;
    assert!(
        spec.env.iter().any(|(k, v)| k == "SHARDS" && v == "true"),
        "the chart runs its pods as shards: {:?}",
        spec.env
    );
    let services = Api::<Service>::namespaced(admin.clone(), NS);
    for i in 0..3 {
        let svc = services
            .get(&format!("{FULLNAME}-{i}"))
            .await
            .expect("a Service per shard");
        let spec = svc.spec.unwrap();
        assert!(spec.cluster_ip.is_some_and(|ip| ip != "None"));
        assert_eq!(
            spec.selector.unwrap()["statefulset.kubernetes.io/pod-name"],
            format!("{FULLNAME}-{i}")
        );
    }
    let addr = |i: usize| format!("127.0.0.{}", i + 2);
    let mut servers: Vec<Server> = (0..3)
        .map(|i| {
            Server::start(
                &spec,
                &format!("{FULLNAME}-{i}"),
                &roots.join(format!("shard-{i}")),
                &[
                    &format!("--bind={}", addr(i)),
                    &format!("--server-address={}", addr(i)),
                ],
            )
        })
        .collect();
    for s in &mut servers {
        s.ready().await;
    }
    let ports: HashMap<String, (u16, u16)> = servers
        .iter()
        .map(|s| (s.name.clone(), s.ports()))
        .collect();
    let identity: HashMap<String, String> = servers
        .iter()
        .map(|s| (s.name.clone(), s.identity()))
        .collect();
    // Every shard sees the three Leases before claims arrive.
    wait_for("every shard sees three live shards", WAIT, || async {
        let mut all = true;
        for s in &servers {
            let m = http_get_at(&s.host, s.http_port, "/metrics")
                .await
                .map(|r| r.1);
            all &= m.is_some_and(|m| {
                m.lines()
                    .any(|l| l.starts_with("provisioner_shards_live{") && l.ends_with(" 3"))
            });
        }
        all.then_some(())
    })
    .await;

    step(&format!("{CLAIMS} claims of 16Mi"));
    Api::<k8s_openapi::api::core::v1::Namespace>::all(admin.clone())
        .create(
            &Default::default(),
            &serde_json::from_value(json!({"metadata": {"name": APPS}})).unwrap(),
        )
        .await
        .expect("namespace");
    let names: Vec<String> = (0..CLAIMS).map(|i| format!("c{i:03}")).collect();
    let started = Instant::now();
    make_claims(admin, &names, "16Mi").await;
    all_bound(admin, &names, Duration::from_secs(300)).await;
    eprintln!(
        "[real-api] {CLAIMS} claims bound across 3 shards in {:?}",
        started.elapsed()
    );
    let pvs = volumes_by_claim(admin).await;
    let mut per: BTreeMap<String, usize> = BTreeMap::new();
    for (claim, pv) in &pvs {
        let shard = shard_of(pv);
        let i: usize = shard.rsplit('-').next().unwrap().parse().unwrap();
        let (server, path) = nfs_of(pv);
        assert_eq!(server, addr(i), "{claim}: the PV names its shard's address");
        assert_eq!(path, format!("/export/{}", pv.name_any()));
        assert_eq!(
            pv.annotations().get("Provisioner_Id"),
            identity.get(&shard),
            "{claim}: the PV carries its shard's identity"
        );
        *per.entry(shard).or_default() += 1;
    }
    eprintln!("[real-api] claims per shard: {per:?}");
    assert_eq!(per.values().sum::<usize>(), CLAIMS);
    let mean = CLAIMS as f64 / 3.0;
    assert_eq!(per.len(), 3, "every shard took claims: {per:?}");
    for (shard, n) in &per {
        assert!(
            (*n as f64) <= mean * 1.10,
            "{shard} took {n} claims, more than 10 % above the mean {mean}: {per:?}"
        );
    }
    for (i, s) in servers.iter().enumerate() {
        let on_disk = std::fs::read_dir(&s.export_root)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("pvc-"))
            .count();
        assert_eq!(
            on_disk, per[&s.name],
            "shard {i}'s export root holds exactly its volumes"
        );
    }

    step("every volume written and read back over NFS at its shard's address");
    let t = Instant::now();
    let all: Vec<(String, PersistentVolume, (u16, u16))> = pvs
        .iter()
        .map(|(c, pv)| (c.clone(), pv.clone(), ports[&shard_of(pv)]))
        .collect();
    write_read_all(&all, "owner.txt");
    eprintln!(
        "[real-api] {} volumes written and read in {:?}",
        all.len(),
        t.elapsed()
    );

    step("shard 0 (the placer) killed: only its claims stop answering");
    let dead = servers[0].name.clone();
    servers[0].kill();
    let killed = Instant::now();
    let (theirs, others): (Vec<_>, Vec<_>) =
        all.iter().partition(|(_, pv, _)| shard_of(pv) == dead);
    for (claim, pv, p) in theirs.iter().take(3) {
        assert!(!answers(pv, *p), "{claim} on the dead shard still answers");
    }
    // The live shards' volumes all keep working.
    let others: Vec<_> = others.into_iter().cloned().collect();
    read_all(&others);
    write_read_all(&others[..20], "while-0-down.txt");

    step("new claims while shard 0 is down go to the live shards");
    let late: Vec<String> = (0..6).map(|i| format!("late{i}")).collect();
    make_claims(admin, &late, "16Mi").await;
    all_bound(admin, &late, Duration::from_secs(120)).await;
    eprintln!(
        "[real-api] claims provisioned {:?} after the placer died",
        killed.elapsed()
    );
    let pvs = volumes_by_claim(admin).await;
    let mut late_per: BTreeMap<String, usize> = BTreeMap::new();
    for n in &late {
        let pv = &pvs[n];
        let shard = shard_of(pv);
        assert_ne!(shard, dead, "{n} placed on the dead shard");
        *late_per.entry(shard).or_default() += 1;
        let (server, path) = nfs_of(pv);
        let got = nfs_write_read(&server, &path, ports[&shard_of(pv)], "f", n);
        assert_eq!(&got, n);
    }
    assert_eq!(
        late_per.len(),
        2,
        "both live shards took new claims: {late_per:?}"
    );

    step("shard 0 restarted: its claims answer again, with their data");
    servers[0].restart();
    servers[0].ready().await;
    let theirs: Vec<_> = theirs.into_iter().cloned().collect();
    read_all(&theirs);
    write_read_all(&theirs[..10], "after-restart.txt");

    step("expansion by the owner");
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(admin.clone(), APPS);
    let mut grown = Vec::new();
    for shard in &servers {
        let (claim, pv, _) = all
            .iter()
            .find(|(_, pv, _)| shard_of(pv) == shard.name)
            .unwrap();
        claims
            .patch(
                claim,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"resources": {"requests": {"storage": "32Mi"}}}})),
            )
            .await
            .expect("grow the claim");
        grown.push((claim.clone(), pv.name_any(), shard));
    }
    for (claim, volume, shard) in &grown {
        let pv = wait_for(&format!("{volume} grows to 32Mi"), WAIT, || async {
            Api::<PersistentVolume>::all(admin.clone())
                .get(volume)
                .await
                .ok()
                .filter(|pv| {
                    pv.spec.as_ref().and_then(|s| s.capacity.as_ref()).unwrap()["storage"].0
                        == "32Mi"
                })
        })
        .await;
        let size = super::scenarios::registry_entry(&shard.export_root, &pv.name_any())
            .map(|r| r["size"].as_u64());
        assert_eq!(
            size,
            Some(Some(32 << 20)),
            "{claim}: the owner's registry holds the new limit"
        );
    }

    step("deletion by the owner");
    let mut gone = Vec::new();
    for shard in &servers {
        for (claim, pv, _) in all
            .iter()
            .filter(|(_, pv, _)| shard_of(pv) == shard.name)
            .skip(1)
            .take(3)
        {
            claims
                .delete(claim, &DeleteParams::default())
                .await
                .expect("delete claim");
            gone.push((pv.name_any(), shard.export_root.clone()));
        }
    }
    for (volume, root) in &gone {
        pv_gone(admin, volume).await;
        assert!(
            !root.join(volume).exists(),
            "{volume}: its shard deleted the directory"
        );
    }
    for s in &servers {
        let foreign: Vec<String> = s
            .warnings()
            .into_iter()
            .filter(|l| l.contains("another provisioner instance"))
            .collect();
        assert!(
            foreign.is_empty(),
            "{} warned about its siblings' volumes: {foreign:?}",
            s.name
        );
    }

    step("status lists every shard");
    let (ok, out) = servers[1].cli(&["status", "--kubeconfig", &servers[1].kubeconfig()]);
    assert!(ok, "status failed:\n{out}");
    for s in &servers {
        assert!(
            out.lines()
                .any(|l| l.starts_with(&s.name) && l.contains(" live ")),
            "status shows {} live:\n{out}",
            s.name
        );
    }
    assert!(
        !out.contains("not this server's"),
        "status calls the siblings' volumes a problem:\n{out}"
    );
    for s in &servers {
        super::scenarios::assert_no_refusals(s);
    }
    eprintln!("[real-api] shards passed in {:?}", t0.elapsed());
}
