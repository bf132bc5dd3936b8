//! The chart's RBAC rules against the API calls the binary really makes: the whole
//! provisioner (leader election, provisioning, deleting, events, the Service lookup,
//! re-registering at start, `status`) runs against the Kubernetes API stand-in, and every
//! request it sent must be allowed by the ClusterRole and Role of the plain manifests
//! (deploy/kubernetes, kept equal to the chart by tests/chart.rs); every verb those rules grant
//! must have been used. Runs without helm; the shards' test renders the chart with
//! `replicaCount: 3` and needs it.

mod manifests;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use export_store::ExportStore;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::api::storage::v1::StorageClass;
use kube_standin::StandIn;
use manifests::{Manifests, PLAIN_NAMESPACE};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

/// One API call: verb, API group, resource (with subresource), namespace.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Call {
    verb: String,
    group: String,
    resource: String,
    namespace: Option<String>,
}

/// The RBAC view of a request path: `/api/v1/...` or `/apis/GROUP/VERSION/...`, then
/// `[namespaces/NS/]RESOURCE[/NAME[/SUBRESOURCE]]`.
fn call(verb: &str, path: &str) -> Call {
    let seg: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest) = match seg.as_slice() {
        ["api", _version, rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => panic!("not an API path: {path}"),
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest),
        _ => (None, rest),
    };
    let resource = match rest {
        [res] | [res, _] => res.to_string(),
        [res, _, sub] => format!("{res}/{sub}"),
        _ => panic!("unexpected path {path}"),
    };
    Call {
        verb: verb.to_owned(),
        group: group.to_owned(),
        resource,
        namespace,
    }
}

fn grants(rule: &PolicyRule, c: &Call) -> bool {
    let has = |list: &Option<Vec<String>>, v: &str| {
        list.as_ref()
            .is_some_and(|l| l.iter().any(|x| x == v || x == "*"))
    };
    has(&rule.api_groups, &c.group)
        && has(&rule.resources, &c.resource)
        && rule.verbs.iter().any(|v| v == &c.verb || v == "*")
        && rule.resource_names.as_ref().is_none_or(|n| n.is_empty())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_api_call_is_allowed_by_the_charts_rules_and_every_rule_is_used() {
    let m = Manifests::load(manifests::PLAIN);
    let cluster_role: ClusterRole = m.one("ClusterRole");
    let role: Role = m.one("Role");
    let crb: ClusterRoleBinding = m.one("ClusterRoleBinding");
    let rb: RoleBinding = m.one("RoleBinding");
    let sts: StatefulSet = m.one("StatefulSet");
    let class: StorageClass = m.one("StorageClass");
    let service: serde_json::Value = m.find("Service")[0].clone();

    // The rules are bound to the account the pod runs as, in the pod's namespace.
    let account = sts
        .spec
        .template
        .spec
        .clone()
        .unwrap()
        .service_account_name
        .unwrap();
    for (subjects, role_ref) in [
        (crb.subjects.clone().unwrap(), crb.role_ref.clone()),
        (rb.subjects.clone().unwrap(), rb.role_ref.clone()),
    ] {
        assert_eq!(subjects.len(), 1);
        assert_eq!(subjects[0].kind, "ServiceAccount");
        assert_eq!(subjects[0].name, account);
        assert_eq!(subjects[0].namespace.as_deref(), Some(PLAIN_NAMESPACE));
        assert!(role_ref.name == cluster_role.metadata.name.clone().unwrap());
    }
    assert_eq!(role.metadata.namespace.as_deref(), Some(PLAIN_NAMESPACE));

    // The cluster as the chart leaves it: our StorageClass and Service, an app namespace.
    let api = StandIn::start().await;
    let mut sc = serde_json::to_value(&class).unwrap();
    sc["parameters"] = json!({"onDelete": "delete"});
    api.insert(sc).unwrap();
    let mut svc = service.clone();
    svc["spec"]["clusterIP"] = json!("10.96.0.20");
    api.insert(svc).unwrap();

    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let store = Arc::new(ExportStore::open(dir.path()).unwrap());
    let identity = provisioner::identity::load_or_create(dir.path()).unwrap();
    // A volume from before this start, whose directory is gone: re-registering it reports
    // the loss on its claim (a claim lookup).
    api.insert(json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "old", "namespace": "apps"},
        "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "nfs",
                 "resources": {"requests": {"storage": "1Gi"}}, "volumeName": "pvc-gone"},
        "status": {"phase": "Bound"},
    }))
    .unwrap();
    api.insert(json!({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": "pvc-gone", "annotations": {
            "pv.kubernetes.io/provisioned-by": class.provisioner,
            "Provisioner_Id": identity,
        }},
        "spec": {
            "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany"],
            "persistentVolumeReclaimPolicy": "Retain",
            "claimRef": {"namespace": "apps", "name": "old"},
            "nfs": {"server": "10.96.0.20", "path": "/export/pvc-gone"},
        },
        "status": {"phase": "Bound"},
    }))
    .unwrap();

    // The controller as `serve` starts it in the pod: address from the Service, a Lease.
    let config = provisioner::controller::Config {
        namespace: Some(PLAIN_NAMESPACE.into()),
        service_name: service["metadata"]["name"].as_str().map(str::to_owned),
        retry_base: Duration::from_millis(200),
        address_check: Duration::from_millis(300),
        ..provisioner::controller::Config::new(&class.provisioner)
    };
    let election = provisioner::Election {
        namespace: PLAIN_NAMESPACE.into(),
        holder: "pod-0".into(),
        timing: provisioner::leader::Timing {
            duration: Duration::from_secs(2),
            renew: Duration::from_millis(300),
        },
    };
    let client = kube::Client::try_from(kube::Config::new(api.url().parse().unwrap())).unwrap();
    tokio::spawn(provisioner::run(
        client.clone(),
        Arc::clone(&store),
        config,
        identity.clone(),
        Some(election),
    ));

    // Provision a claim, then release its volume so it is deleted.
    let pvc = api
        .insert(json!({
            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": "data", "namespace": "apps", "annotations": {
                "volume.kubernetes.io/storage-provisioner": class.provisioner,
            }},
            "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "nfs",
                     "resources": {"requests": {"storage": "1Gi"}}},
            "status": {"phase": "Pending"},
        }))
        .unwrap();
    let pv = format!("pvc-{}", pvc["metadata"]["uid"].as_str().unwrap());
    let created = api
        .wait_for(WAIT, |a| a.get("persistentvolumes", None, &pv))
        .await
        .expect("no PV");
    assert_eq!(created["spec"]["nfs"]["server"], "10.96.0.20");
    // Bound (as kube-controller-manager would), then grown: the volume, its PV and the
    // claim's status follow.
    api.modify("persistentvolumeclaims", Some("apps"), "data", |c| {
        c["spec"]["volumeName"] = json!(pv);
        c["status"] = json!({"phase": "Bound", "capacity": {"storage": "1Gi"}});
    })
    .unwrap();
    api.modify("persistentvolumeclaims", Some("apps"), "data", |c| {
        c["spec"]["resources"]["requests"]["storage"] = json!("2Gi");
    })
    .unwrap();
    let grown = api
        .wait_for(WAIT, |a| {
            let c = a.get("persistentvolumeclaims", Some("apps"), "data")?;
            (c["status"]["capacity"]["storage"] == "2Gi").then_some(())
        })
        .await;
    assert!(
        grown.is_some(),
        "claim not expanded: {:?}",
        api.event_reasons()
    );
    assert_eq!(
        api.get("persistentvolumes", None, &pv).unwrap()["spec"]["capacity"]["storage"],
        "2Gi"
    );
    assert_eq!(
        store.volume_by_name(&pv).unwrap().quota.limit(),
        Some(2 << 30)
    );
    api.update_status("persistentvolumes", None, &pv, json!({"phase": "Released"}))
        .unwrap();
    let gone = api
        .wait_for(WAIT, |a| {
            a.get("persistentvolumes", None, &pv)
                .is_none()
                .then_some(())
        })
        .await;
    assert!(gone.is_some(), "PV not deleted: {:?}", api.event_reasons());
    // A claim that keeps failing: its repeated Event is patched (a series), not re-created.
    let mut bad = serde_json::to_value(&class).unwrap();
    bad["metadata"]["name"] = json!("nfs-bad");
    bad["parameters"] = json!({"onDelete": "bogus"});
    api.insert(bad).unwrap();
    api.insert(json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "bad", "namespace": "apps", "annotations": {
            "volume.kubernetes.io/storage-provisioner": class.provisioner,
        }},
        "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "nfs-bad",
                 "resources": {"requests": {"storage": "1Gi"}}},
        "status": {"phase": "Pending"},
    }))
    .unwrap();
    let repeated = api
        .wait_for(WAIT, |a| {
            a.events()
                .into_iter()
                .find(|e| e["reason"] == "ProvisioningFailed" && e["count"].as_i64() >= Some(2))
        })
        .await;
    assert!(repeated.is_some(), "no repeated Event: {:?}", api.events());
    // The Service gets a new ClusterIP: our PVs are re-pointed (delete, wait, create).
    let svc_name = service["metadata"]["name"].as_str().unwrap();
    api.modify("services", Some(PLAIN_NAMESPACE), svc_name, |s| {
        s["spec"]["clusterIP"] = json!("10.96.0.21");
    })
    .unwrap();
    let repointed = api
        .wait_for(WAIT, |a| {
            let pv = a.get("persistentvolumes", None, "pvc-gone")?;
            (pv["spec"]["nfs"]["server"] == "10.96.0.21").then_some(())
        })
        .await;
    assert!(
        repointed.is_some(),
        "not re-pointed: {:?}",
        api.event_reasons()
    );
    // The lease renewed at least once (an update).
    let renewed = api
        .wait_for(WAIT, |a| {
            a.request_log()
                .iter()
                .any(|r| r.method == "PUT" && r.path.contains("/leases/"))
                .then_some(())
        })
        .await;
    assert!(renewed.is_some());
    // `status`, as run in the pod with its service account.
    let rows = provisioner::status(client, &store, &class.provisioner, Some(&identity))
        .await
        .unwrap();
    assert!(!rows.is_empty());

    let log = api.request_log();
    let unnamed: Vec<_> = log.iter().filter(|r| r.verb.is_none()).collect();
    assert!(unnamed.is_empty(), "requests outside the API: {unnamed:?}");
    let calls: BTreeSet<Call> = log
        .iter()
        .map(|r| call(&r.verb.unwrap().to_string(), &r.path))
        .collect();

    let cluster_rules = cluster_role.rules.clone().unwrap();
    let ns_rules = role.rules.clone().unwrap();
    let mut used = BTreeSet::new();
    for c in &calls {
        let in_ns = c.namespace.as_deref() == Some(PLAIN_NAMESPACE);
        let by_cluster = cluster_rules.iter().position(|r| grants(r, c));
        let by_role = ns_rules.iter().position(|r| in_ns && grants(r, c));
        assert!(
            by_cluster.is_some() || by_role.is_some(),
            "{c:?} is not allowed by the chart's RBAC rules"
        );
        if let Some(i) = by_cluster {
            used.insert(("ClusterRole", i, c.verb.clone()));
        }
        if let Some(i) = by_role {
            used.insert(("Role", i, c.verb.clone()));
        }
    }
    for (kind, rules) in [("ClusterRole", &cluster_rules), ("Role", &ns_rules)] {
        for (i, rule) in rules.iter().enumerate() {
            for verb in &rule.verbs {
                assert!(
                    used.contains(&(kind, i, verb.clone())),
                    "{kind} grants {verb} on {:?} but the binary never uses it; calls: {calls:#?}",
                    rule.resources
                );
            }
        }
    }
}

/// Shards: three provisioners as the chart's pods run them with `replicaCount: 3` (each its
/// own export root, identity, Lease and Service, shard 0 on the release's Service) place and
/// provision claims; every request is allowed by the ClusterRole and Role the chart renders for
/// three shards, and the two verbs only shards get (leases list, persistentvolumeclaims patch)
/// are used. Needs helm (`scripts/fetch-helm.sh`) to render the chart with three shards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shard_api_calls_are_allowed_by_the_shard_rules_and_their_extra_verbs_are_used() {
    let Some(helm) = manifests::helm(4).or_else(|| manifests::helm(3)) else {
        return;
    };
    let values = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(values.path(), "replicaCount: 3\n").unwrap();
    let m = Manifests::parse(&manifests::template(
        &helm,
        manifests::PLAIN_RELEASE,
        PLAIN_NAMESPACE,
        &[values.path().to_str().unwrap()],
    ));
    let cluster_rules = m.one::<ClusterRole>("ClusterRole").rules.unwrap();
    let ns_rules = m.one::<Role>("Role").rules.unwrap();
    let sts: StatefulSet = m.one("StatefulSet");
    let fullname = sts.metadata.name.clone().unwrap();
    let class: StorageClass = m.one("StorageClass");

    let api = StandIn::start().await;
    let mut sc = serde_json::to_value(&class).unwrap();
    sc["parameters"] = json!({"onDelete": "delete"});
    api.insert(sc).unwrap();
    // The release's Service and each shard's, with their ClusterIPs.
    let services = m.find("Service");
    assert_eq!(services.len(), 4);
    for (i, svc) in services.into_iter().enumerate() {
        let mut svc = svc.clone();
        svc["spec"]["clusterIP"] = json!(format!("10.96.0.{}", 30 + i));
        api.insert(svc).unwrap();
    }

    let client = kube::Client::try_from(kube::Config::new(api.url().parse().unwrap())).unwrap();
    let dirs = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    for i in 0..3 {
        let pod = format!("{fullname}-{i}");
        let dir = dirs.path().join(&pod);
        std::fs::create_dir_all(&dir).unwrap();
        let store = Arc::new(ExportStore::open(&dir).unwrap());
        let identity = provisioner::identity::load_or_create(&dir).unwrap();
        // As `serve --shards` configures itself in the pod (SERVICE_NAME, POD_NAME).
        let config = provisioner::controller::Config {
            namespace: Some(PLAIN_NAMESPACE.into()),
            service_name: Some(if i == 0 {
                fullname.clone()
            } else {
                pod.clone()
            }),
            pod_name: Some(pod.clone()),
            shard: Some(pod.clone()),
            shard_recheck: Duration::from_millis(500),
            retry_base: Duration::from_millis(200),
            ..provisioner::controller::Config::new(&class.provisioner)
        };
        let election = provisioner::Election {
            namespace: PLAIN_NAMESPACE.into(),
            holder: format!("{pod}_x"),
            timing: provisioner::leader::Timing {
                duration: Duration::from_secs(3),
                renew: Duration::from_millis(300),
            },
        };
        tokio::spawn(provisioner::run(
            client.clone(),
            store,
            config,
            identity,
            Some(election),
        ));
    }
    // Claims, placed on the shards and provisioned.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut pvs = Vec::new();
    for n in 0..3 {
        let pvc = api
            .insert(json!({
                "apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": {"name": format!("data-{n}"), "namespace": "apps", "annotations": {
                    "volume.kubernetes.io/storage-provisioner": class.provisioner,
                }},
                "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "nfs",
                         "resources": {"requests": {"storage": "1Gi"}}},
                "status": {"phase": "Pending"},
            }))
            .unwrap();
        pvs.push(format!("pvc-{}", pvc["metadata"]["uid"].as_str().unwrap()));
    }
    for pv in &pvs {
        let created = api
            .wait_for(WAIT, |a| a.get("persistentvolumes", None, pv))
            .await
            .unwrap_or_else(|| panic!("no PV {pv}: {:?}", api.event_reasons()));
        let shard = created["metadata"]["annotations"]["nfs-server-provisioner/server-pod"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(shard.starts_with(&format!("{fullname}-")), "{created}");
    }

    let calls: BTreeSet<Call> = api
        .request_log()
        .iter()
        .filter_map(|r| r.verb.map(|v| call(&v.to_string(), &r.path)))
        .collect();
    for c in &calls {
        let in_ns = c.namespace.as_deref() == Some(PLAIN_NAMESPACE);
        assert!(
            cluster_rules.iter().any(|r| grants(r, c))
                || ns_rules.iter().any(|r| in_ns && grants(r, c)),
            "{c:?} is not allowed by the chart's RBAC rules for shards"
        );
    }
    for (verb, group, resource) in [
        ("list", "coordination.k8s.io", "leases"),
        ("patch", "", "persistentvolumeclaims"),
    ] {
        assert!(
            calls
                .iter()
                .any(|c| c.verb == verb && c.group == group && c.resource == resource),
            "shards never {verb} {resource}: {calls:#?}"
        );
    }
}
