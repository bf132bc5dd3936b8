//! The stand-in driven by a real `kube` 5 client over HTTP: CRUD with finalizers, status
//! subresource, conflicts, watches (including 410 re-lists and streaming lists), leases,
//! server-side apply, events, fault injection, malformed requests, and a full
//! `kube::runtime::Controller` loop with the finalizer helper.

use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ObjectReference, PersistentVolume, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    VolumeResourceRequirements,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, Event};
use kube::{Client, Config, ResourceExt};
use kube_standin::{Fault, StandIn, Verb};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const T: Duration = Duration::from_secs(10);

fn client(s: &StandIn) -> Client {
    Client::try_from(Config::new(s.url().parse().expect("url"))).expect("client")
}

fn pvc(name: &str) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some([("app".to_string(), "db".to_string())].into()),
            ..Default::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteMany".into()]),
            storage_class_name: Some("nfs".into()),
            resources: Some(VolumeResourceRequirements {
                requests: Some([("storage".to_string(), Quantity("1Gi".into()))].into()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        status: None,
    }
}

/// A PV the API server accepts: capacity, access modes and one (NFS) volume source.
fn nfs_pv(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "PersistentVolume",
           "metadata": {"name": name},
           "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany"],
                    "nfs": {"server": "10.0.0.1", "path": format!("/export/{name}")}}})
}

fn api_code(e: &kube::Error) -> (u16, String) {
    match e {
        kube::Error::Api(s) => (s.code, s.reason.clone()),
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn pvc_crud_status_and_finalizers() {
    let s = StandIn::start().await;
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client(&s), "ns1");

    let created = pvcs
        .create(&PostParams::default(), &pvc("a"))
        .await
        .expect("create");
    assert!(created.metadata.uid.is_some());
    assert!(created.metadata.creation_timestamp.is_some());
    let rv1 = created.resource_version().expect("rv");

    let got = pvcs.get("a").await.expect("get");
    assert_eq!(got.metadata.uid, created.metadata.uid);
    assert_eq!(got.namespace().as_deref(), Some("ns1"));

    let e = pvcs.get("missing").await.expect_err("404");
    assert_eq!(api_code(&e), (404, "NotFound".into()));
    assert_eq!(pvcs.get_opt("missing").await.expect("get_opt"), None);

    // Merge patch on the main resource; status in it is ignored (status subresource).
    let patched = pvcs
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"x": "y"}},
                                  "status": {"phase": "Bound"}})),
        )
        .await
        .expect("merge patch");
    assert_eq!(
        patched.annotations().get("x").map(String::as_str),
        Some("y")
    );
    assert!(patched.status.is_none());
    assert_ne!(patched.resource_version().as_deref(), Some(rv1.as_str()));

    // The status subresource.
    let st = pvcs
        .patch_status(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Bound"}})),
        )
        .await
        .expect("status patch");
    assert_eq!(st.status.and_then(|s| s.phase).as_deref(), Some("Bound"));

    // Replace with a stale resourceVersion conflicts; with the current one works.
    let mut stale = got.clone();
    stale.metadata.labels = Some([("v".to_string(), "2".to_string())].into());
    let e = pvcs
        .replace("a", &PostParams::default(), &stale)
        .await
        .expect_err("stale");
    assert_eq!(api_code(&e), (409, "Conflict".into()));
    let mut fresh = pvcs.get("a").await.expect("get");
    fresh.metadata.finalizers = Some(vec!["example.com/protect".into()]);
    let replaced = pvcs
        .replace("a", &PostParams::default(), &fresh)
        .await
        .expect("replace");
    assert_eq!(replaced.finalizers(), ["example.com/protect"]);
    assert_eq!(
        replaced.status.and_then(|s| s.phase).as_deref(),
        Some("Bound"),
        "replace keeps the stored status"
    );

    // List, also across namespaces and by label.
    pvcs.create(&PostParams::default(), &pvc("b"))
        .await
        .expect("create b");
    let other: Api<PersistentVolumeClaim> = Api::namespaced(client(&s), "ns2");
    let mut c = pvc("c");
    c.metadata.labels = None;
    other
        .create(&PostParams::default(), &c)
        .await
        .expect("create c");
    let list = pvcs.list(&ListParams::default()).await.expect("list");
    assert_eq!(
        list.items.iter().map(|p| p.name_any()).collect::<Vec<_>>(),
        ["a", "b"]
    );
    assert_eq!(
        list.metadata.resource_version,
        Some(s.resource_version().to_string())
    );
    let all: Api<PersistentVolumeClaim> = Api::all(client(&s));
    assert_eq!(
        all.list(&ListParams::default())
            .await
            .expect("all")
            .items
            .len(),
        3
    );
    let labelled = all
        .list(&ListParams::default().labels("app=db"))
        .await
        .expect("labels");
    assert_eq!(labelled.items.len(), 2);
    let by_name = all
        .list(&ListParams::default().fields("metadata.name=c"))
        .await
        .expect("fields");
    assert_eq!(by_name.items.len(), 1);

    // Delete with a finalizer marks; removing the finalizer (JSON patch) removes.
    let d = pvcs
        .delete("a", &DeleteParams::default())
        .await
        .expect("delete");
    let marked = d.left().expect("object while finalizers remain");
    assert!(marked.metadata.deletion_timestamp.is_some());
    assert!(pvcs.get("a").await.is_ok());
    let e = pvcs
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": ["example.com/protect", "new"]}})),
        )
        .await
        .expect_err("no new finalizers while deleting");
    assert_eq!(api_code(&e).0, 422);
    let e = pvcs
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::<()>::Json(
                serde_json::from_value(json!([
                    {"op": "test", "path": "/metadata/finalizers", "value": ["wrong"]},
                ]))
                .expect("patch"),
            ),
        )
        .await
        .expect_err("failed test op");
    assert_eq!(api_code(&e).0, 422);
    pvcs.patch(
        "a",
        &PatchParams::default(),
        &Patch::<()>::Json(
            serde_json::from_value(json!([
                {"op": "test", "path": "/metadata/finalizers", "value": ["example.com/protect"]},
                {"op": "remove", "path": "/metadata/finalizers"},
            ]))
            .expect("patch"),
        ),
    )
    .await
    .expect("remove finalizer");
    assert_eq!(pvcs.get_opt("a").await.expect("get_opt"), None);

    // Without finalizers: gone at once, answered with a Status.
    let d = pvcs
        .delete("b", &DeleteParams::default())
        .await
        .expect("delete b");
    assert!(d.is_right());
    assert!(s.get("persistentvolumeclaims", Some("ns1"), "b").is_none());
    let e = pvcs
        .delete("b", &DeleteParams::default())
        .await
        .expect_err("gone");
    assert_eq!(api_code(&e).0, 404);
}

#[tokio::test]
async fn duplicate_create_is_409_already_exists() {
    let s = StandIn::start().await;
    let pvs: Api<PersistentVolume> = Api::all(client(&s));
    let pv: PersistentVolume = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": "pvc-1"},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany"],
                 "nfs": {"server": "10.0.0.1", "path": "/x"}},
    }))
    .expect("pv");
    pvs.create(&PostParams::default(), &pv)
        .await
        .expect("create");
    let e = pvs
        .create(&PostParams::default(), &pv)
        .await
        .expect_err("duplicate");
    assert_eq!(api_code(&e), (409, "AlreadyExists".into()));
    assert!(s.get("persistentvolumes", None, "pvc-1").is_some());
}

#[tokio::test]
async fn watcher_sees_added_modified_deleted() {
    let s = StandIn::start().await;
    s.insert(json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                    "metadata": {"name": "pre", "namespace": "d"}}))
        .expect("insert");
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client(&s), "d");
    let mut w = watcher::watcher(pvcs.clone(), watcher::Config::default()).boxed();

    let mut next = async || {
        tokio::time::timeout(T, w.try_next())
            .await
            .expect("event in time")
            .expect("no error")
            .expect("stream open")
    };
    assert!(matches!(next().await, Event::Init));
    assert!(matches!(next().await, Event::InitApply(p) if p.name_any() == "pre"));
    assert!(matches!(next().await, Event::InitDone));

    pvcs.create(&PostParams::default(), &pvc("x"))
        .await
        .expect("create");
    assert!(matches!(next().await, Event::Apply(p) if p.name_any() == "x"));
    s.modify("persistentvolumeclaims", Some("d"), "x", |v| {
        v["metadata"]["annotations"] = json!({"k": "v"});
    })
    .expect("modify");
    assert!(matches!(next().await, Event::Apply(p) if p.annotations().contains_key("k")));
    s.update_status(
        "persistentvolumeclaims",
        Some("d"),
        "x",
        json!({"phase": "Bound"}),
    )
    .expect("status");
    assert!(matches!(next().await,
        Event::Apply(p) if p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound")));
    // Another namespace is not seen.
    let other: Api<PersistentVolumeClaim> = Api::namespaced(client(&s), "elsewhere");
    other
        .create(&PostParams::default(), &pvc("y"))
        .await
        .expect("create y");
    pvcs.delete("x", &DeleteParams::default())
        .await
        .expect("delete");
    assert!(matches!(next().await, Event::Delete(p) if p.name_any() == "x"));

    // The watch requests carried the list's resourceVersion.
    let log = s.request_log();
    assert!(log.iter().any(|r| r.verb == Some(Verb::Watch)
        && r.path == "/api/v1/namespaces/d/persistentvolumeclaims"
        && r.query.contains("watch=true")));
}

#[tokio::test]
async fn single_object_watch_by_field_selector() {
    let s = StandIn::start().await;
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client(&s), "d");
    let mut w = watcher::watcher(
        pvcs.clone(),
        watcher::Config::default().fields("metadata.name=one"),
    )
    .boxed();
    let mut next = async || {
        tokio::time::timeout(T, w.try_next())
            .await
            .expect("event in time")
            .expect("no error")
            .expect("stream open")
    };
    assert!(matches!(next().await, Event::Init));
    assert!(matches!(next().await, Event::InitDone));
    pvcs.create(&PostParams::default(), &pvc("two"))
        .await
        .expect("two");
    pvcs.create(&PostParams::default(), &pvc("one"))
        .await
        .expect("one");
    assert!(matches!(next().await, Event::Apply(p) if p.name_any() == "one"));
}

#[tokio::test]
async fn watch_resumes_and_relists_after_410() {
    let s = StandIn::start().await;
    s.set_bookmark_interval(Some(Duration::from_millis(100)));
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client(&s), "d");
    let mut w = watcher::watcher(pvcs.clone(), watcher::Config::default()).boxed();
    let mut next = async || {
        tokio::time::timeout(T, w.next())
            .await
            .expect("event in time")
            .expect("stream open")
    };
    assert!(matches!(next().await, Ok(Event::Init)));
    assert!(matches!(next().await, Ok(Event::InitDone)));

    // A closed watch is resumed from the last resourceVersion without a re-list.
    s.end_watches();
    tokio::time::sleep(Duration::from_millis(200)).await;
    pvcs.create(&PostParams::default(), &pvc("a"))
        .await
        .expect("create");
    assert!(matches!(next().await, Ok(Event::Apply(p)) if p.name_any() == "a"));

    // After compaction the open watch gets 410 Expired and the watcher re-lists.
    s.compact_history();
    match next().await {
        Err(watcher::Error::WatchError(status)) => assert_eq!(status.code, 410),
        other => panic!("expected a 410 watch error, got {other:?}"),
    }
    assert!(matches!(next().await, Ok(Event::Init)));
    assert!(matches!(next().await, Ok(Event::InitApply(p)) if p.name_any() == "a"));
    assert!(matches!(next().await, Ok(Event::InitDone)));
    let lists = s
        .request_log()
        .iter()
        .filter(|r| r.verb == Some(Verb::List))
        .count();
    assert_eq!(lists, 2);
}

#[tokio::test]
async fn streaming_list_watch() {
    let s = StandIn::start().await;
    s.insert(
        json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                    "metadata": {"name": "nfs"}, "provisioner": "example.com/nfs"}),
    )
    .expect("insert");
    let scs: Api<StorageClass> = Api::all(client(&s));
    let mut w = watcher::watcher(scs.clone(), watcher::Config::default().streaming_lists()).boxed();
    let mut next = async || {
        tokio::time::timeout(T, w.try_next())
            .await
            .expect("event in time")
            .expect("no error")
            .expect("stream open")
    };
    assert!(matches!(next().await, Event::Init));
    assert!(matches!(next().await, Event::InitApply(sc) if sc.provisioner == "example.com/nfs"));
    assert!(matches!(next().await, Event::InitDone));
    scs.delete("nfs", &DeleteParams::default())
        .await
        .expect("delete");
    assert!(matches!(next().await, Event::Delete(sc) if sc.name_any() == "nfs"));
}

#[tokio::test]
async fn lease_get_create_replace_conflict() {
    let s = StandIn::start().await;
    let leases: Api<Lease> = Api::namespaced(client(&s), "kube-system");
    let e = leases.get("leader").await.expect_err("none yet");
    assert_eq!(api_code(&e).0, 404);

    let lease: Lease = serde_json::from_value(json!({
        "metadata": {"name": "leader"},
        "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15},
    }))
    .expect("lease");
    let created = leases
        .create(&PostParams::default(), &lease)
        .await
        .expect("create");
    let e = leases
        .create(&PostParams::default(), &lease)
        .await
        .expect_err("exists");
    assert_eq!(api_code(&e), (409, "AlreadyExists".into()));

    // Two contenders read the same version; the first replace wins, the second conflicts.
    let mut mine = created.clone();
    let mut theirs = created.clone();
    mine.spec.as_mut().expect("spec").holder_identity = Some("b".into());
    theirs.spec.as_mut().expect("spec").holder_identity = Some("c".into());
    let won = leases
        .replace("leader", &PostParams::default(), &mine)
        .await
        .expect("replace");
    assert_eq!(
        won.spec.and_then(|s| s.holder_identity).as_deref(),
        Some("b")
    );
    let e = leases
        .replace("leader", &PostParams::default(), &theirs)
        .await
        .expect_err("conflict");
    assert_eq!(api_code(&e), (409, "Conflict".into()));
    let stored = s
        .get("leases", Some("kube-system"), "leader")
        .expect("stored");
    assert_eq!(stored["spec"]["holderIdentity"], json!("b"));
    assert_eq!(stored["apiVersion"], json!("coordination.k8s.io/v1"));
}

#[tokio::test]
async fn server_side_apply_creates_then_merges() {
    let s = StandIn::start().await;
    let pvs: Api<PersistentVolume> = Api::all(client(&s));
    let pp = PatchParams::apply("standin-test");
    let mut body = nfs_pv("pv-a");
    body["metadata"]["labels"] = json!({"a": "1"});
    let pv = pvs
        .patch("pv-a", &pp, &Patch::Apply(&body))
        .await
        .expect("apply create");
    assert!(pv.metadata.uid.is_some());
    let pv = pvs
        .patch(
            "pv-a",
            &pp,
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "PersistentVolume",
                                 "metadata": {"name": "pv-a", "labels": {"b": "2"}}})),
        )
        .await
        .expect("apply again");
    assert_eq!(pv.labels().len(), 2);
    let e = pvs
        .patch(
            "pv-a",
            &PatchParams::default(),
            &Patch::Apply(json!({"metadata": {}})),
        )
        .await
        .expect_err("fieldManager required");
    assert_eq!(api_code(&e).0, 422);
}

#[tokio::test]
async fn events_recorder_publishes_events_k8s_io() {
    let s = StandIn::start().await;
    let pvc = s
        .insert(json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                       "metadata": {"name": "data", "namespace": "apps"}}))
        .expect("insert");
    let recorder = kube::runtime::events::Recorder::new(
        client(&s),
        kube::runtime::events::Reporter {
            controller: "nfs-provisioner".into(),
            instance: Some("pod-1".into()),
        },
    );
    let reference = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("PersistentVolumeClaim".into()),
        name: Some("data".into()),
        namespace: Some("apps".into()),
        uid: pvc["metadata"]["uid"].as_str().map(str::to_string),
        ..Default::default()
    };
    let ev = kube::runtime::events::Event {
        type_: kube::runtime::events::EventType::Normal,
        reason: "Provisioning".into(),
        note: Some("External provisioner is provisioning volume".into()),
        action: "Provision".into(),
        secondary: None,
    };
    recorder.publish(&ev, &reference).await.expect("publish");
    recorder
        .publish(&ev, &reference)
        .await
        .expect("publish series");
    let events = s.list_namespaced("events.events.k8s.io", "apps");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["regarding"]["name"], json!("data"));
    assert_eq!(events[0]["series"]["count"], json!(2));
    assert_eq!(s.event_reasons(), ["Provisioning"]);

    // Core events with generateName.
    let core: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client(&s), "apps");
    let e: k8s_openapi::api::core::v1::Event = serde_json::from_value(json!({
        "metadata": {"generateName": "data."},
        "involvedObject": {"kind": "PersistentVolumeClaim", "name": "data", "namespace": "apps"},
        "reason": "ProvisioningSucceeded",
    }))
    .expect("event");
    let made = core
        .create(&PostParams::default(), &e)
        .await
        .expect("create");
    assert!(made.name_any().starts_with("data."));
    assert_eq!(s.event_reasons(), ["Provisioning", "ProvisioningSucceeded"]);
}

#[tokio::test]
async fn fault_injection_and_request_log() {
    let s = StandIn::start().await;
    let pvs: Api<PersistentVolume> = Api::all(client(&s));
    let pv: PersistentVolume = serde_json::from_value(nfs_pv("pv-1")).expect("pv");

    // kube's client retries 429/503/504 by itself: the caller never sees this one.
    s.fail(Verb::Create, "persistentvolumes", 503, 1);
    pvs.create(&PostParams::default(), &pv)
        .await
        .expect("retried by the client");
    let statuses: Vec<u16> = s
        .request_log()
        .iter()
        .filter(|r| r.method == "POST")
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, [503, 201]);

    // A 500 reaches the caller.
    let pv2: PersistentVolume = serde_json::from_value(nfs_pv("pv-2")).expect("pv");
    s.fail(Verb::Create, "persistentvolumes", 500, 1);
    let e = pvs
        .create(&PostParams::default(), &pv2)
        .await
        .expect_err("injected");
    assert_eq!(api_code(&e), (500, "InternalError".into()));
    assert!(s.get("persistentvolumes", None, "pv-2").is_none());

    // A lost response: the write happens, the client sees an error.
    s.inject(
        Fault::new(Verb::Delete, "PersistentVolume")
            .name("pv-1")
            .after_commit(),
    );
    let e = pvs
        .delete("pv-1", &DeleteParams::default())
        .await
        .expect_err("injected");
    assert_eq!(api_code(&e).0, 500);
    assert!(s.get("persistentvolumes", None, "pv-1").is_none());

    // Status-subresource faults do not hit the main resource.
    s.insert(json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                    "metadata": {"name": "c", "namespace": "n"}}))
        .expect("insert");
    s.fail(Verb::Patch, "persistentvolumeclaims/status", 409, 2);
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client(&s), "n");
    pvcs.patch(
        "c",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}})),
    )
    .await
    .expect("main resource unaffected");
    for _ in 0..2 {
        let e = pvcs
            .patch_status(
                "c",
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"phase": "Lost"}})),
            )
            .await
            .expect_err("injected");
        assert_eq!(api_code(&e).0, 409);
    }
    pvcs.patch_status(
        "c",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Lost"}})),
    )
    .await
    .expect("used up");

    let log: Vec<String> = s.request_log().iter().map(ToString::to_string).collect();
    assert!(
        log.contains(&"POST /api/v1/persistentvolumes".to_string()),
        "{log:?}"
    );
    assert!(log.contains(&"DELETE /api/v1/persistentvolumes/pv-1".to_string()));
    let patches = s
        .request_log()
        .into_iter()
        .filter(|r| r.path.ends_with("/status"))
        .collect::<Vec<_>>();
    assert_eq!(patches.len(), 3);
    assert_eq!(
        patches[0].content_type.as_deref(),
        Some("application/merge-patch+json")
    );
    s.clear_request_log();
    assert!(s.request_log().is_empty());
}

/// Sends one raw HTTP/1.1 request and returns (status, body as JSON).
async fn raw(s: &StandIn, method: &str, path: &str, ct: &str, body: &str) -> (u16, Value) {
    let mut conn = tokio::net::TcpStream::connect(s.addr())
        .await
        .expect("connect");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {ct}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(req.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    conn.read_to_end(&mut out).await.expect("read");
    let text = String::from_utf8_lossy(&out);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

#[tokio::test]
async fn malformed_requests_get_status_errors() {
    let s = StandIn::start().await;
    let pvcs = "/api/v1/namespaces/n/persistentvolumeclaims";
    let (code, status) = raw(&s, "POST", pvcs, "application/json", "{not json").await;
    assert_eq!(code, 400);
    assert_eq!(status["kind"], json!("Status"));
    assert_eq!(status["reason"], json!("BadRequest"));
    assert_eq!(
        raw(&s, "POST", pvcs, "application/json", "[1]").await.0,
        400
    );
    assert_eq!(
        raw(&s, "POST", pvcs, "application/json", r#"{"metadata":{}}"#)
            .await
            .0,
        422
    );
    assert_eq!(
        raw(
            &s,
            "POST",
            pvcs,
            "application/json",
            r#"{"kind":"Pod","metadata":{"name":"a"}}"#
        )
        .await
        .0,
        400
    );
    assert_eq!(
        raw(&s, "POST", pvcs, "application/yaml", "metadata: {}")
            .await
            .0,
        415
    );
    let (code, status) = raw(&s, "GET", "/api/v1/nothings", "application/json", "").await;
    assert_eq!((code, status["reason"].clone()), (404, json!("NotFound")));
    assert_eq!(raw(&s, "GET", "/", "application/json", "").await.0, 404);
    assert_eq!(raw(&s, "PUT", pvcs, "application/json", "{}").await.0, 405);
    assert_eq!(
        raw(
            &s,
            "GET",
            &format!("{pvcs}?labelSelector=a%20in%20(b"),
            "",
            ""
        )
        .await
        .0,
        400
    );
    assert_eq!(
        raw(
            &s,
            "GET",
            &format!("{pvcs}?watch=true&resourceVersion=abc"),
            "",
            ""
        )
        .await
        .0,
        400
    );
    s.insert(json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                    "metadata": {"name": "a", "namespace": "n"}}))
        .expect("insert");
    let one = format!("{pvcs}/a");
    assert_eq!(raw(&s, "PATCH", &one, "text/plain", "{}").await.0, 415);
    assert_eq!(
        raw(&s, "PATCH", &one, "application/merge-patch+json", "nope")
            .await
            .0,
        400
    );
    assert_eq!(
        raw(
            &s,
            "PATCH",
            &one,
            "application/json-patch+json",
            r#"[{"op":"x"}]"#
        )
        .await
        .0,
        422
    );
    assert_eq!(
        raw(
            &s,
            "PUT",
            &one,
            "application/json",
            r#"{"metadata":{"name":"b"}}"#
        )
        .await
        .0,
        400
    );
    assert_eq!(
        raw(&s, "DELETE", &one, "application/json", "{").await.0,
        400
    );
    let (code, _) = raw(&s, "GET", "/version", "", "").await;
    assert_eq!(code, 200);
    // Still serving after all that.
    let (code, obj) = raw(&s, "GET", &one, "", "").await;
    assert_eq!((code, obj["metadata"]["name"].clone()), (200, json!("a")));
}

#[tokio::test]
async fn watch_ends_at_timeout_seconds() {
    let s = StandIn::start().await;
    let start = std::time::Instant::now();
    let (code, _) = raw(
        &s,
        "GET",
        "/api/v1/persistentvolumes?watch=1&timeoutSeconds=1",
        "",
        "",
    )
    .await;
    assert_eq!(code, 200);
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

#[derive(Debug)]
struct ReconcileError;

impl std::fmt::Display for ReconcileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("reconcile failed")
    }
}

impl std::error::Error for ReconcileError {}

/// A whole `kube::runtime::Controller` loop with the finalizer helper against the stand-in.
#[tokio::test]
async fn controller_loop_with_finalizer() {
    use kube::runtime::controller::{Action, Controller};
    use kube::runtime::finalizer::{Event as Fin, finalizer};

    let s = StandIn::start().await;
    let c = client(&s);
    let pvcs: Api<PersistentVolumeClaim> = Api::all(c.clone());

    async fn reconcile(
        pvc: Arc<PersistentVolumeClaim>,
        api: Arc<Client>,
    ) -> Result<Action, kube::runtime::finalizer::Error<ReconcileError>> {
        let ns = pvc.namespace().unwrap_or_default();
        let pvcs: Api<PersistentVolumeClaim> = Api::namespaced((*api).clone(), &ns);
        let pvs: Api<PersistentVolume> = Api::all((*api).clone());
        finalizer(&pvcs, "example.com/cleanup", pvc, |ev| async move {
            match ev {
                Fin::Apply(pvc) => {
                    let name = format!("pvc-{}", pvc.uid().unwrap_or_default());
                    let pv: PersistentVolume =
                        serde_json::from_value(nfs_pv(&name)).map_err(|_| ReconcileError)?;
                    match pvs.create(&PostParams::default(), &pv).await {
                        Ok(_) => {}
                        Err(kube::Error::Api(s)) if s.code == 409 => {}
                        Err(_) => return Err(ReconcileError),
                    }
                    Ok(Action::await_change())
                }
                Fin::Cleanup(pvc) => {
                    let name = format!("pvc-{}", pvc.uid().unwrap_or_default());
                    match pvs.delete(&name, &DeleteParams::default()).await {
                        Ok(_) => {}
                        Err(kube::Error::Api(s)) if s.code == 404 => {}
                        Err(_) => return Err(ReconcileError),
                    }
                    Ok(Action::await_change())
                }
            }
        })
        .await
    }

    let ctl = tokio::spawn(
        Controller::new(pvcs, watcher::Config::default())
            .run(
                reconcile,
                |_, _, _| Action::requeue(Duration::from_millis(100)),
                Arc::new(c.clone()),
            )
            .for_each(|_| async {}),
    );

    // The first PV create fails once: the controller must retry.
    s.fail(Verb::Create, "persistentvolumes", 500, 1);
    let created = s
        .insert(json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                       "metadata": {"name": "data", "namespace": "apps"}}))
        .expect("insert");
    let pv_name = format!("pvc-{}", created["metadata"]["uid"].as_str().expect("uid"));
    let pv = s
        .wait_for(T, |s| s.get("persistentvolumes", None, &pv_name))
        .await;
    if pv.is_none() {
        for r in s.request_log() {
            eprintln!("{r} -> {} {}", r.status, r.body);
        }
    }
    assert!(pv.is_some(), "controller created the PV");
    let with_finalizer = s
        .get("persistentvolumeclaims", Some("apps"), "data")
        .expect("pvc");
    assert_eq!(
        with_finalizer["metadata"]["finalizers"],
        json!(["example.com/cleanup"])
    );

    // A user deletes the PVC: the controller cleans up and releases it.
    s.delete("persistentvolumeclaims", Some("apps"), "data")
        .expect("delete");
    let gone = s
        .wait_for(T, |s| {
            (s.get("persistentvolumeclaims", Some("apps"), "data")
                .is_none()
                && s.get("persistentvolumes", None, &pv_name).is_none())
            .then_some(())
        })
        .await;
    assert!(gone.is_some(), "PVC and PV gone");
    ctl.abort();
}

#[tokio::test]
async fn huge_watch_timeout_does_not_break_the_server() {
    let s = StandIn::start().await;
    let mut conn = tokio::net::TcpStream::connect(s.addr())
        .await
        .expect("connect");
    conn.write_all(
        b"GET /api/v1/persistentvolumes?watch=true&timeoutSeconds=18446744073709551615 \
          HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await
    .expect("write");
    let mut head = vec![0u8; 12];
    tokio::time::timeout(T, conn.read_exact(&mut head))
        .await
        .expect("answered in time")
        .expect("read");
    assert_eq!(&head, b"HTTP/1.1 200");
    let pvs: Api<PersistentVolume> = Api::all(client(&s));
    assert!(pvs.list(&ListParams::default()).await.is_ok());
}

/// The fields named by a 422 Status's `details.causes`.
fn cause_fields(status: &Value) -> Vec<String> {
    status["details"]["causes"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|c| c["field"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Writes the real API server refuses are refused with its 422 `Invalid` Status; direct
/// inserts are not checked.
#[tokio::test]
async fn invalid_events_are_refused_like_the_api_server() {
    let s = StandIn::start().await;
    let core = "/api/v1/namespaces/apps/events";
    // A core Event with eventTime needs the reporting fields.
    let (code, st) = raw(
        &s,
        "POST",
        core,
        "application/json",
        r#"{"metadata":{"name":"e1"},"eventTime":"2024-01-01T00:00:00.000000Z",
            "involvedObject":{"kind":"PersistentVolumeClaim","name":"data","namespace":"apps"},
            "reason":"Provisioning","reportingComponent":"nfs-provisioner"}"#,
    )
    .await;
    assert_eq!((code, st["reason"].clone()), (422, json!("Invalid")));
    assert_eq!(
        st["message"],
        json!(
            "Event \"e1\" is invalid: [reportingInstance: Required value, action: Required value]"
        )
    );
    assert_eq!(cause_fields(&st), ["reportingInstance", "action"]);
    assert_eq!(st["details"]["kind"], json!("Event"));
    assert!(s.get("events", Some("apps"), "e1").is_none());
    let (code, _) = raw(
        &s,
        "POST",
        core,
        "application/json",
        r#"{"metadata":{"name":"e1"},"eventTime":"2024-01-01T00:00:00.000000Z",
            "involvedObject":{"kind":"PersistentVolumeClaim","name":"data","namespace":"apps"},
            "reason":"Provisioning","reportingComponent":"nfs-provisioner",
            "reportingInstance":"pod-1","action":"Provision"}"#,
    )
    .await;
    assert_eq!(code, 201);
    // Without eventTime the involved object's namespace must match.
    let (code, st) = raw(
        &s,
        "POST",
        core,
        "application/json",
        r#"{"metadata":{"name":"e2"},"reason":"R","involvedObject":{"name":"x"}}"#,
    )
    .await;
    assert_eq!(code, 422);
    assert_eq!(cause_fields(&st), ["involvedObject.namespace"]);

    // events.k8s.io/v1: strict create rules, then series and immutable fields on patches.
    let v1 = "/apis/events.k8s.io/v1/namespaces/apps/events";
    let good = json!({"metadata": {"name": "data.1"},
        "eventTime": "2024-01-01T00:00:00.000000Z",
        "regarding": {"kind": "PersistentVolumeClaim", "name": "data", "namespace": "apps"},
        "reason": "Provisioning", "note": "n", "action": "Provision", "type": "Normal",
        "reportingController": "cluster.local/nfs", "reportingInstance": "pod-1"});
    let mut bad = good.clone();
    bad["type"] = json!("Info");
    bad["deprecatedCount"] = json!(1);
    let (code, st) = raw(&s, "POST", v1, "application/json", &bad.to_string()).await;
    assert_eq!(code, 422);
    assert_eq!(cause_fields(&st), ["type", "count"]);
    let (code, _) = raw(&s, "POST", v1, "application/json", &good.to_string()).await;
    assert_eq!(code, 201);
    let merge = "application/merge-patch+json";
    let one = format!("{v1}/data.1");
    let (code, st) = raw(&s, "PATCH", &one, merge, r#"{"series":{"count":1}}"#).await;
    assert_eq!(code, 422);
    assert_eq!(
        cause_fields(&st),
        ["series.count", "series.lastObservedTime"]
    );
    let (code, st) = raw(&s, "PATCH", &one, merge, r#"{"note":"other"}"#).await;
    assert_eq!(code, 422);
    assert_eq!(
        st["message"],
        json!("Event \"data.1\" is invalid: message: Invalid value: \"other\": field is immutable")
    );
    let series = r#"{"series":{"count":2,"lastObservedTime":"2024-01-01T00:01:00.000000Z"}}"#;
    assert_eq!(raw(&s, "PATCH", &one, merge, series).await.0, 200);

    // A direct insert is the test's business.
    s.insert(json!({"apiVersion": "v1", "kind": "Event",
                    "metadata": {"name": "raw", "namespace": "apps"}, "reason": "X"}))
        .expect("insert");
}

#[tokio::test]
async fn invalid_volumes_claims_and_leases_are_refused() {
    let s = StandIn::start().await;
    let c = client(&s);
    let pvs: Api<PersistentVolume> = Api::all(c.clone());
    let bare: PersistentVolume =
        serde_json::from_value(json!({"metadata": {"name": "pv-0"}})).expect("pv");
    let e = pvs
        .create(&PostParams::default(), &bare)
        .await
        .expect_err("no spec");
    assert_eq!(api_code(&e), (422, "Invalid".into()));
    let kube::Error::Api(status) = &e else {
        unreachable!()
    };
    assert_eq!(
        status.message,
        "PersistentVolume \"pv-0\" is invalid: [spec.accessModes: Required value, \
         spec.capacity: Required value, spec.capacity: Unsupported value: null: supported \
         values: \"storage\", spec: Required value: must specify a volume type]"
    );
    pvs.create(
        &PostParams::default(),
        &serde_json::from_value(nfs_pv("pv-1")).expect("pv"),
    )
    .await
    .expect("valid PV");
    let merge = |v: Value| Patch::Merge(v);
    let e = pvs
        .patch(
            "pv-1",
            &PatchParams::default(),
            &merge(json!({"spec": {"nfs": {"server": "10.0.0.2"}}})),
        )
        .await
        .expect_err("source is immutable");
    let kube::Error::Api(status) = &e else {
        panic!("{e}")
    };
    assert_eq!(
        (status.code, status.message.as_str()),
        (
            422,
            "PersistentVolume \"pv-1\" is invalid: spec.persistentvolumesource: Forbidden: \
             spec.persistentvolumesource is immutable after creation"
        )
    );
    pvs.patch(
        "pv-1",
        &PatchParams::default(),
        &merge(
            json!({"spec": {"claimRef": {"namespace": "apps", "name": "data"},
                                "capacity": {"storage": "2Gi"}}}),
        ),
    )
    .await
    .expect("claimRef and capacity may change");

    // Claims: the spec is immutable but for a first volumeName.
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(c.clone(), "apps");
    pvcs.create(&PostParams::default(), &pvc("data"))
        .await
        .expect("create");
    pvcs.patch(
        "data",
        &PatchParams::default(),
        &merge(json!({"spec": {"volumeName": "pv-1"}})),
    )
    .await
    .expect("bind");
    let e = pvcs
        .patch(
            "data",
            &PatchParams::default(),
            &merge(json!({"spec": {"storageClassName": "other"}})),
        )
        .await
        .expect_err("immutable");
    let kube::Error::Api(status) = &e else {
        panic!("{e}")
    };
    assert_eq!(
        (status.code, status.message.as_str()),
        (
            422,
            "PersistentVolumeClaim \"data\" is invalid: spec: Forbidden: spec is immutable \
             after creation except resources.requests and volumeAttributesClassName for bound \
             claims"
        )
    );
    // Status writes are not checked against the spec rules.
    pvcs.patch_status(
        "data",
        &PatchParams::default(),
        &merge(json!({"status": {"phase": "Bound"}})),
    )
    .await
    .expect("status");

    // Leases.
    let leases: Api<Lease> = Api::namespaced(c, "kube-system");
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {"name": "leader"},
        "spec": {"holderIdentity": "a", "leaseDurationSeconds": 0},
    }))
    .expect("lease");
    let e = leases
        .create(&PostParams::default(), &lease)
        .await
        .expect_err("zero duration");
    let kube::Error::Api(status) = &e else {
        panic!("{e}")
    };
    assert_eq!(
        (status.code, status.message.as_str()),
        (
            422,
            "Lease.coordination.k8s.io \"leader\" is invalid: spec.leaseDurationSeconds: \
             Invalid value: 0: must be greater than 0"
        )
    );
    let (code, st) = raw(
        &s,
        "POST",
        "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases",
        "application/json",
        r#"{"metadata":{"name":"leader"},"spec":{"holderIdentity":5}}"#,
    )
    .await;
    assert_eq!((code, st["reason"].clone()), (400, json!("BadRequest")));
}
