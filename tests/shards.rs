//! Shards against the Kubernetes API stand-in: three provisioners (`Config::shard`), each with
//! its own export root, identity and Lease, behind one StorageClass. Claims spread evenly by
//! free capacity, each PV names its shard's address, pod and identity; a class pinned to a
//! shard sends its claims there; a pin that names no shard is a `ProvisioningFailed` Event
//! naming the parameter; a claim placed on a shard that then goes silent is placed again on
//! a live one. (Killing and restarting a real shard is in the real-API suite.)

mod kube_common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use export_store::ExportStore;
use kube_common::*;
use serde_json::json;

const NS: &str = "storage";

async fn start_shard(s: &Setup, i: usize) -> Arc<ExportStore> {
    let dir = s.root().join(format!("shard-{i}"));
    std::fs::create_dir_all(&dir).unwrap();
    let store = Arc::new(ExportStore::open(&dir).unwrap());
    let identity = provisioner::identity::load_or_create(&dir).unwrap();
    let config = provisioner::controller::Config {
        server_address: Some(format!("10.0.0.{}", i + 10)),
        namespace: Some(NS.into()),
        pod_name: Some(format!("nfs-{i}")),
        shard: Some(format!("nfs-{i}")),
        shard_recheck: Duration::from_secs(1),
        ..config()
    };
    let election = provisioner::Election {
        namespace: NS.into(),
        holder: format!("nfs-{i}_x"),
        timing: provisioner::leader::Timing {
            duration: Duration::from_secs(3),
            renew: Duration::from_millis(300),
        },
    };
    tokio::spawn(provisioner::run(
        client(&s.api).await,
        Arc::clone(&store),
        config,
        identity,
        Some(election),
    ));
    store
}

/// StorageClass `name` of our provisioner with parameter `shard: <shard>`.
fn pinned_class(s: &Setup, name: &str, shard: &str) {
    s.api
        .insert(json!({
            "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": name}, "provisioner": NAME,
            "reclaimPolicy": "Delete", "parameters": {"shard": shard},
        }))
        .unwrap();
}

/// Shard Leases the stand-in holds, by shard name.
fn leases(s: &Setup) -> BTreeMap<String, serde_json::Value> {
    s.api
        .list_namespaced("leases", NS)
        .into_iter()
        .filter_map(|l| {
            let shard = l["metadata"]["annotations"]["nfs-server-provisioner/shard"]
                .as_str()?
                .to_owned();
            Some((shard, l))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_spread_over_shards_by_free_capacity_and_pins_hold() {
    let s = setup(json!({})).await;
    let stores: Vec<_> = futures::future::join_all((0..3).map(|i| start_shard(&s, i))).await;
    // Every shard announced itself (address, identity, capacity) before claims arrive.
    s.api
        .wait_for(WAIT, |_| {
            let l = leases(&s);
            (l.len() == 3
                && l.values().all(|l| {
                    l["metadata"]["annotations"]["nfs-server-provisioner/capacity-bytes"]
                        .as_str()
                        .is_some_and(|c| c.parse::<u64>().unwrap_or(0) > 0)
                }))
            .then_some(())
        })
        .await
        .expect("three shard Leases with their capacity");
    // Long enough for every shard to have listed the others.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let uids: Vec<String> = (0..30)
        .map(|i| add_claim(&s, &format!("c{i}"), json!({})))
        .collect();
    let mut per: BTreeMap<String, usize> = BTreeMap::new();
    for uid in &uids {
        let pv = wait_pv(&s, uid).await;
        let pod = pv["metadata"]["annotations"]["nfs-server-provisioner/server-pod"]
            .as_str()
            .unwrap()
            .to_owned();
        let i: usize = pod.trim_start_matches("nfs-").parse().unwrap();
        assert_eq!(pv["spec"]["nfs"]["server"], format!("10.0.0.{}", i + 10));
        let id = provisioner::identity::read(stores[i].root())
            .unwrap()
            .unwrap();
        assert_eq!(pv["metadata"]["annotations"]["Provisioner_Id"], id);
        assert!(stores[i].volume_by_name(&format!("pvc-{uid}")).is_some());
        // The claim records the shard it was placed on.
        let claim = s
            .api
            .list_namespaced("persistentvolumeclaims", "apps")
            .into_iter()
            .find(|c| c["metadata"]["uid"] == uid.as_str())
            .unwrap();
        assert_eq!(
            claim["metadata"]["annotations"]["nfs-server-provisioner/shard"],
            pod
        );
        *per.entry(pod).or_default() += 1;
    }
    assert_eq!(
        per.values().copied().collect::<Vec<_>>(),
        [10, 10, 10],
        "equal claims on equal shards go round: {per:?}"
    );
    // No shard made a volume for a claim another shard took.
    let total: usize = stores.iter().map(|st| st.volumes().len()).sum();
    assert_eq!(total, 30);

    // A class pinned to shard 2 (by ordinal).
    pinned_class(&s, "pinned", "2");
    for i in 0..3 {
        let uid = add_claim(&s, &format!("p{i}"), json!({"storageClassName": "pinned"}));
        let pv = wait_pv(&s, &uid).await;
        assert_eq!(
            pv["metadata"]["annotations"]["nfs-server-provisioner/server-pod"],
            "nfs-2"
        );
    }
    // A pin that names no shard: an Event naming the parameter, no volume anywhere.
    pinned_class(&s, "nowhere", "nfs-9");
    let uid = add_claim(&s, "lost", json!({"storageClassName": "nowhere"}));
    let note = s
        .api
        .wait_for(WAIT, |a| {
            a.events().into_iter().find(|e| {
                e["reason"] == "ProvisioningFailed"
                    && e["message"]
                        .as_str()
                        .is_some_and(|n| n.contains("\"shard\""))
            })
        })
        .await
        .unwrap_or_else(|| panic!("no ProvisioningFailed naming shard: {:?}", s.api.events()));
    let text = note["message"].as_str().unwrap();
    assert!(text.contains("nfs-9") && text.contains("nfs-0"), "{text}");
    assert!(
        s.api
            .get("persistentvolumes", None, &format!("pvc-{uid}"))
            .is_none()
    );
    for st in &stores {
        assert!(st.volume_by_name(&format!("pvc-{uid}")).is_none());
    }
}

/// A claim placed on a shard that goes down before making its PV is placed again on a live
/// shard: here a shard that announces itself (with the most free capacity, so the placer picks
/// it) and then stops renewing its Lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_placed_on_a_shard_that_went_down_is_placed_again() {
    let s = setup(json!({})).await;
    let stores: Vec<_> = futures::future::join_all((0..2).map(|i| start_shard(&s, i))).await;
    s.api
        .wait_for(WAIT, |_| (leases(&s).len() == 2).then_some(()))
        .await
        .expect("two shard Leases");
    let renewed = |at: k8s_openapi::jiff::Timestamp| {
        json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "ghost", "namespace": NS, "annotations": {
                "nfs-server-provisioner/provisioner": NAME,
                "nfs-server-provisioner/shard": "nfs-7",
                "nfs-server-provisioner/identity": "ghost-id",
                "nfs-server-provisioner/capacity-bytes": (u64::MAX / 2).to_string(),
            }},
            "spec": {"holderIdentity": "nfs-7_x", "leaseDurationSeconds": 3,
                     "renewTime": at.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()},
        })
    };
    s.api
        .insert(renewed(k8s_openapi::jiff::Timestamp::now()))
        .unwrap();
    // Every shard has seen the ghost live (they list the Leases every 300 ms).
    tokio::time::sleep(Duration::from_millis(900)).await;
    let uid = add_claim(&s, "orphan", json!({}));
    let placed = s
        .api
        .wait_for(WAIT, |a| {
            a.get("persistentvolumeclaims", Some("apps"), "orphan")
                .and_then(|c| {
                    c["metadata"]["annotations"]["nfs-server-provisioner/shard"]
                        .as_str()
                        .map(str::to_owned)
                })
        })
        .await
        .expect("the claim is placed");
    assert_eq!(placed, "nfs-7", "the emptiest shard is chosen");
    // The ghost never renews: after its Lease duration the claim goes to a live shard.
    let pv = wait_pv(&s, &uid).await;
    let pod = pv["metadata"]["annotations"]["nfs-server-provisioner/server-pod"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(pod == "nfs-0" || pod == "nfs-1", "{pod}");
    let claim = s
        .api
        .get("persistentvolumeclaims", Some("apps"), "orphan")
        .unwrap();
    assert_eq!(
        claim["metadata"]["annotations"]["nfs-server-provisioner/shard"],
        pod
    );
    let held: usize = stores.iter().map(|st| st.volumes().len()).sum();
    assert_eq!(held, 1, "one volume, on the shard that took the claim");
}
