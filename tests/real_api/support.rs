//! Helpers of the real-API suite: waiting on the API, reading Events as `kubectl describe`
//! shows them, claims, Helm, libnfs, and the Service's ClusterIP on the loopback interface.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, PersistentVolume, PersistentVolumeClaim};
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

pub const WAIT: Duration = Duration::from_secs(60);

/// Polls `f` until it gives `Some`, failing after `limit` with `what`.
pub async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < limit, "timed out after {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One Event as `kubectl describe` lists it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub type_: String,
    pub reason: String,
    pub message: String,
    pub source: String,
    pub count: i32,
}

/// The Events about `kind`/`name` (`ns` None for cluster-scoped objects), through the core/v1
/// API with the field selector kubectl uses.
pub async fn events(client: &Client, ns: Option<&str>, kind: &str, name: &str) -> Vec<Seen> {
    let api: Api<Event> = match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let lp = ListParams::default().fields(&format!(
        "involvedObject.kind={kind},involvedObject.name={name}"
    ));
    api.list(&lp)
        .await
        .expect("list events")
        .items
        .into_iter()
        .map(|e| Seen {
            type_: e.type_.unwrap_or_default(),
            reason: e.reason.unwrap_or_default(),
            message: e.message.unwrap_or_default(),
            source: e.reporting_component.unwrap_or_default(),
            count: e
                .series
                .map(|s| s.count.unwrap_or(1))
                .or(e.count)
                .unwrap_or(1),
        })
        .collect()
}

/// Waits for an Event with `reason` about the object and returns it.
pub async fn event(
    client: &Client,
    ns: Option<&str>,
    kind: &str,
    name: &str,
    reason: &str,
) -> Seen {
    wait_for(
        &format!("Event {reason} on {kind} {name}"),
        WAIT,
        || async {
            events(client, ns, kind, name)
                .await
                .into_iter()
                .find(|e| e.reason == reason)
        },
    )
    .await
}

/// Creates claim `ns/name` of `class` asking for `size`, ReadWriteMany.
pub async fn claim(
    client: &Client,
    ns: &str,
    name: &str,
    class: &str,
    size: &str,
) -> PersistentVolumeClaim {
    let c: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": class,
                 "resources": {"requests": {"storage": size}}},
    }))
    .unwrap();
    Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &c)
        .await
        .unwrap_or_else(|e| panic!("create claim {name}: {e}"))
}

/// Waits until claim `ns/name` is Bound; returns it and its PV.
pub async fn bound(
    client: &Client,
    ns: &str,
    name: &str,
) -> (PersistentVolumeClaim, PersistentVolume) {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let pvc = wait_for(&format!("claim {ns}/{name} Bound"), WAIT, || async {
        claims
            .get_opt(name)
            .await
            .ok()
            .flatten()
            .filter(|c| c.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound"))
    })
    .await;
    let pv_name = pvc
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.clone())
        .unwrap();
    let pv = Api::<PersistentVolume>::all(client.clone())
        .get(&pv_name)
        .await
        .unwrap();
    (pvc, pv)
}

/// Waits until PV `name` no longer exists.
pub async fn pv_gone(client: &Client, name: &str) {
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    wait_for(&format!("PV {name} deleted"), WAIT, || async {
        matches!(pvs.get_opt(name).await, Ok(None)).then_some(())
    })
    .await
}

/// The NFS server and path of a PV.
pub fn nfs_of(pv: &PersistentVolume) -> (String, String) {
    let nfs = pv
        .spec
        .as_ref()
        .and_then(|s| s.nfs.clone())
        .expect("an NFS PV");
    (nfs.server, nfs.path)
}

/// A helm binary: `$HELM4`, `$HELM3`, else the one scripts/fetch-helm.sh fetches.
pub fn helm() -> PathBuf {
    for v in ["HELM4", "HELM3"] {
        if let Some(p) = std::env::var_os(v) {
            return p.into();
        }
    }
    let out = Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scripts/fetch-helm.sh"
    ))
    .output()
    .expect("scripts/fetch-helm.sh");
    assert!(
        out.status.success(),
        "cannot fetch helm: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .expect("a helm path")
        .into()
}

/// Runs `cmd`, failing with its output.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

/// Writes `content` to `file` in the volume at `server:path` with libnfs (NFSv3), then reads it
/// back with another libnfs process, and returns what was read.
pub fn nfs_write_read(
    server: &str,
    path: &str,
    ports: (u16, u16),
    file: &str,
    content: &str,
) -> String {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let local = tmp.path().join("in");
    std::fs::write(&local, content).unwrap();
    let url = nfs_url(server, path, ports, file);
    run(Command::new("nfs-cp").arg(&local).arg(&url));
    nfs_read(server, path, ports, file)
}

/// [`nfs_write_read`] retried for a few seconds: for a volume that a CLI command has just
/// exported (the server picks up registry changes within a second).
pub async fn nfs_write_read_soon(
    server: &str,
    path: &str,
    ports: (u16, u16),
    file: &str,
    content: &str,
) -> String {
    let url = nfs_url(server, path, ports, "");
    wait_for(
        &format!("{url} mounts"),
        Duration::from_secs(10),
        || async {
            Command::new("nfs-ls")
                .arg(&url)
                .output()
                .ok()
                .filter(|o| o.status.success())
        },
    )
    .await;
    nfs_write_read(server, path, ports, file, content)
}

/// Reads `file` of the volume at `server:path` with libnfs.
pub fn nfs_read(server: &str, path: &str, ports: (u16, u16), file: &str) -> String {
    run(Command::new("nfs-cat").arg(nfs_url(server, path, ports, file)))
}

fn nfs_url(server: &str, path: &str, (nfs, mount): (u16, u16), file: &str) -> String {
    format!("nfs://{server}{path}/{file}?version=3&nfsport={nfs}&mountport={mount}")
}

/// An address added to `lo` for the test's duration (a Service's ClusterIP, so that the
/// address in the PVs reaches the server), removed when dropped.
pub struct LoopbackAddress(pub String);

impl LoopbackAddress {
    pub fn add(ip: &str) -> Self {
        let out = Command::new("ip")
            .args(["addr", "add", &format!("{ip}/32"), "dev", "lo"])
            .output()
            .expect("ip (iproute2) is needed to reach the Service's ClusterIP");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() || err.contains("File exists"),
            "cannot add {ip} to lo (root needed): {err}"
        );
        LoopbackAddress(ip.to_owned())
    }
}

impl Drop for LoopbackAddress {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["addr", "del", &format!("{}/32", self.0), "dev", "lo"])
            .output();
    }
}

/// `kubectl describe KIND NAME` in `ns` as `admin`, when `$KUBEBUILDER_ASSETS` has kubectl
/// (setup-envtest's does); None otherwise.
pub fn describe(kubeconfig: &Path, ns: &str, kind: &str, name: &str) -> Option<String> {
    let kubectl = Path::new(&std::env::var_os("KUBEBUILDER_ASSETS")?).join("kubectl");
    if !kubectl.exists() {
        eprintln!(
            "[real-api] no kubectl in KUBEBUILDER_ASSETS: Events checked through the API only"
        );
        return None;
    }
    Some(run(Command::new(kubectl)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["-n", ns, "describe", kind, name])))
}
