//! Shared by the provisioner and recovery tests: a Kubernetes API stand-in with StorageClass
//! `nfs`, an export store on disk, the controller, claims, and our NFS server driven by an
//! independent client.

#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use export_store::ExportStore;
use kube_standin::StandIn;
use provisioner::controller::Config;
use serde_json::{Value, json};

pub const NAME: &str = "test.local/nfs";
pub const WAIT: Duration = Duration::from_secs(20);

pub struct Setup {
    pub api: StandIn,
    pub store: Arc<ExportStore>,
    pub _dir: tempfile::TempDir,
}

impl Setup {
    pub fn root(&self) -> &Path {
        self.store.root()
    }
}

pub fn config() -> Config {
    Config {
        server_address: Some("10.0.0.1".into()),
        retry_base: Duration::from_millis(200),
        ..Config::new(NAME)
    }
}

pub async fn client(api: &StandIn) -> kube::Client {
    kube::Client::try_from(kube::Config::new(api.url().parse().unwrap())).unwrap()
}

/// A stand-in API, an export store, and a StorageClass `nfs` with `parameters`.
pub async fn setup(parameters: Value) -> Setup {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let store = Arc::new(ExportStore::open(dir.path()).unwrap());
    let api = StandIn::start().await;
    api.insert(json!({
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": "nfs"},
        "provisioner": NAME,
        "reclaimPolicy": "Delete",
        "mountOptions": ["vers=3"],
        "parameters": parameters,
    }))
    .unwrap();
    Setup {
        api,
        store,
        _dir: dir,
    }
}

pub async fn start_controller(
    s: &Setup,
    config: Config,
    election: Option<provisioner::Election>,
) -> tokio::task::JoinHandle<()> {
    let identity = provisioner::identity::load_or_create(s.root()).unwrap();
    let client = client(&s.api).await;
    tokio::spawn(provisioner::run(
        client,
        Arc::clone(&s.store),
        config,
        identity,
        election,
    ))
}

pub fn claim(name: &str, extra_spec: Value) -> Value {
    let mut spec = json!({
        "accessModes": ["ReadWriteMany"],
        "resources": {"requests": {"storage": "1Gi"}},
        "storageClassName": "nfs",
    });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra_spec.as_object()) {
        for (k, v) in extra {
            spec.insert(k.clone(), v.clone());
        }
    }
    json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": name, "namespace": "apps",
            "annotations": {"volume.kubernetes.io/storage-provisioner": NAME},
        },
        "spec": spec,
        "status": {"phase": "Pending"},
    })
}

/// Creates a claim and returns its uid.
pub fn add_claim(s: &Setup, name: &str, extra_spec: Value) -> String {
    let c = s.api.insert(claim(name, extra_spec)).unwrap();
    c["metadata"]["uid"].as_str().unwrap().to_owned()
}

pub async fn wait_pv(s: &Setup, uid: &str) -> Value {
    let name = format!("pvc-{uid}");
    s.api
        .wait_for(WAIT, |a| a.get("persistentvolumes", None, &name))
        .await
        .unwrap_or_else(|| panic!("no PV {name}; events: {:?}", s.api.event_reasons()))
}

pub async fn wait_event(s: &Setup, reason: &str) {
    let found = s
        .api
        .wait_for(WAIT, |a| {
            a.event_reasons().iter().any(|r| r == reason).then_some(())
        })
        .await;
    assert!(
        found.is_some(),
        "no {reason} event; got {:?}",
        s.api.event_reasons()
    );
}

pub fn events(s: &Setup) -> Vec<Value> {
    s.api.events()
}

pub fn registered(s: &Setup) -> Vec<String> {
    s.store
        .registry()
        .load()
        .unwrap()
        .volumes
        .into_iter()
        .map(|v| v.name)
        .collect()
}

/// Our NFS server on free loopback ports over the setup's export root.
pub async fn serve_nfs(s: &Setup) -> nfs_server_provisioner::Running {
    nfs_server_provisioner::start(nfs_server_provisioner::ServeConfig {
        export_root: s.root().to_owned(),
        bind: "127.0.0.1".parse().unwrap(),
        nfs_port: 0,
        mount_port: 0,
        portmap_port: None,
        reload_interval: Duration::from_millis(100),
        recount_interval: None,
        http_port: None,
        metrics: true,
        v4: nfs_server::V4Config::default(),
        locking: Default::default(),
        limits: Default::default(),
        nfs_threads: nfs_server::executor::DEFAULT_THREADS,
        metric_labels: Vec::new(),
    })
    .await
    .unwrap()
}

pub async fn connect(
    running: &nfs_server_provisioner::Running,
    export: &str,
) -> nfs3_client::Nfs3Connection<nfs3_client::tokio::TokioIo<tokio::net::TcpStream>> {
    nfs3_client::Nfs3ConnectionBuilder::new(nfs3_client::tokio::TokioConnector, "127.0.0.1", export)
        .mount_port(running.mount.port())
        .nfs3_port(running.nfs.port())
        .mount()
        .await
        .unwrap()
}

pub async fn read_over_nfs(
    running: &nfs_server_provisioner::Running,
    export: &str,
    name: &[u8],
) -> Vec<u8> {
    use nfs3_types::nfs3::*;
    let mut conn = connect(running, export).await;
    let root = conn.root_nfs_fh3();
    let found = conn
        .lookup(&LOOKUP3args {
            what: diropargs3 {
                dir: root,
                name: filename3(nfs3_types::xdr_codec::Opaque::borrowed(name)),
            },
        })
        .await
        .unwrap()
        .unwrap();
    let read = conn
        .read(&READ3args {
            file: found.object,
            offset: 0,
            count: 4096,
        })
        .await
        .unwrap()
        .unwrap();
    read.data.to_vec()
}

pub async fn write_over_nfs(
    running: &nfs_server_provisioner::Running,
    export: &str,
    name: &[u8],
    data: &[u8],
) {
    use nfs3_types::nfs3::*;
    let mut conn = connect(running, export).await;
    let root = conn.root_nfs_fh3();
    let created = conn
        .create(&CREATE3args {
            where_: diropargs3 {
                dir: root,
                name: filename3(nfs3_types::xdr_codec::Opaque::borrowed(name)),
            },
            how: createhow3::UNCHECKED(sattr3::default()),
        })
        .await
        .unwrap()
        .unwrap();
    let fh = match created.obj {
        Nfs3Option::Some(fh) => fh,
        Nfs3Option::None => panic!("CREATE returned no handle"),
    };
    let written = conn
        .write(&WRITE3args {
            file: fh,
            offset: 0,
            count: data.len() as u32,
            stable: stable_how::FILE_SYNC,
            data: nfs3_types::xdr_codec::Opaque::borrowed(data),
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(written.count as usize, data.len());
}

/// The status code of `GET path` on the HTTP port (a plain HTTP/1.1 exchange).
pub async fn http_status(addr: std::net::SocketAddr, path: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut reply = String::new();
    conn.read_to_string(&mut reply).await.unwrap();
    let status = reply.split(' ').nth(1).unwrap_or_default();
    status
        .parse()
        .unwrap_or_else(|_| panic!("bad reply {reply:?}"))
}
