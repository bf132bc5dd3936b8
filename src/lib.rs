//! The `nfs-server-provisioner` process: wiring the RPC server, the NFS services and the
//! export store together. The command line lives in `main.rs`; this library part exists so
//! tests can start a whole server in-process.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use export_store::ExportStore;
use nfs_server::metrics::NfsMetrics;
use oncrpc::portmap::{self, Mapping, Portmapper};
use oncrpc::{RpcMetrics, RpcService, Server};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tracing::{info, warn};

pub mod http;

/// Largest RPC record accepted: a 1 MiB WRITE plus its headers.
pub const MAX_RECORD: usize = nfs_server::MAX_IO as usize + 64 * 1024;
/// Calls in flight per connection before reading pauses.
pub const MAX_IN_FLIGHT: usize = 64;

/// What `serve` needs.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    pub export_root: PathBuf,
    pub bind: IpAddr,
    /// Port 0 picks a free port (tests).
    pub nfs_port: u16,
    pub mount_port: u16,
    /// `None` disables the portmapper.
    pub portmap_port: Option<u16>,
    /// How often the registry is checked for volumes added or removed.
    pub reload_interval: Duration,
    /// Port of `/healthz`, `/readyz` and `/metrics`; `None` disables it, `Some(0)` picks a
    /// free port.
    pub http_port: Option<u16>,
    /// Count calls, bytes and connections for `/metrics`.
    pub metrics: bool,
    /// NFSv4 lease and grace period.
    pub v4: nfs_server::V4Config,
}

/// A started server: where it listens. Dropping it does not stop it; it runs until the
/// runtime ends.
#[derive(Clone)]
pub struct Running {
    pub nfs: SocketAddr,
    pub mount: SocketAddr,
    pub portmap: Option<SocketAddr>,
    pub http: Option<SocketAddr>,
    pub store: Arc<ExportStore>,
    /// Readiness reported on the HTTP port; the caller decides when the process is ready.
    pub health: Arc<http::Health>,
    /// What `/metrics` shows; the provisioner registers its metrics here too.
    pub registry: Arc<Mutex<Registry>>,
    /// The byte-range locks of every protocol.
    pub locks: Arc<nfs_server::locks::LockTable>,
    /// The grace period after a restart.
    pub grace: Arc<nfs_server::grace::Grace>,
}

/// Opens the export store, binds every port and starts serving in the background.
pub async fn start(config: ServeConfig) -> anyhow::Result<Running> {
    let root = config.export_root.clone();
    let store = tokio::task::spawn_blocking(move || ExportStore::open(&root))
        .await?
        .with_context(|| format!("cannot open export root {}", config.export_root.display()))?;
    let store = Arc::new(store);
    let bind = |port: u16| async move {
        TcpListener::bind((config.bind, port))
            .await
            .with_context(|| format!("cannot listen on {}:{port}", config.bind))
    };
    let nfs = bind(config.nfs_port).await?;
    let mount = if config.mount_port != 0 && config.mount_port == config.nfs_port {
        None
    } else {
        Some(bind(config.mount_port).await?)
    };
    let portmap = match config.portmap_port {
        Some(p) => Some(bind(p).await?),
        None => None,
    };
    let http = match config.http_port {
        Some(p) => Some(bind(p).await?),
        None => None,
    };
    let nfs_addr = nfs.local_addr()?;
    let mount_addr = mount.as_ref().map_or(Ok(nfs_addr), |l| l.local_addr())?;
    let portmap_addr = portmap.as_ref().map(|l| l.local_addr()).transpose()?;
    let http_addr = http.as_ref().map(|l| l.local_addr()).transpose()?;
    let health = http::Health::new();
    let mut registry = Registry::default();
    let exported = Gauge::<i64>::default();
    registry.register(
        "nfs_volumes_exported",
        "Volumes served now",
        exported.clone(),
    );
    let locks_held = Gauge::<i64>::default();
    registry.register(
        "nfs_locks_held",
        "Byte-range locks held now (NFSv4 and NLM), refreshed every second",
        locks_held.clone(),
    );
    let grace_gauge = Gauge::<i64>::default();
    registry.register(
        "nfs_grace_period",
        "1 while the grace period after a restart lasts (only reclaims are granted)",
        grace_gauge.clone(),
    );
    let (rpc_metrics, nfs_metrics) = if config.metrics {
        (
            Some(Arc::new(RpcMetrics::register(&mut registry))),
            Some(Arc::new(NfsMetrics::register(&mut registry))),
        )
    } else {
        (None, None)
    };
    let registry = Arc::new(Mutex::new(registry));
    if let Some(listener) = http {
        tokio::spawn(http::serve(
            listener,
            Arc::clone(&health),
            Arc::clone(&registry),
        ));
    }

    let shared = nfs_server::Shared::new(Arc::clone(&store), &config.v4);
    let mut services: Vec<Arc<dyn RpcService>> =
        nfs_server::services_with_metrics(&shared, nfs_metrics);
    if let Some(pm) = portmap_addr {
        let tcp = |prog, vers, port: u16| Mapping {
            prog,
            vers,
            prot: portmap::IPPROTO_TCP,
            port: u32::from(port),
        };
        services.push(Arc::new(Portmapper::new(vec![
            tcp(portmap::PROGRAM, 2, pm.port()),
            tcp(nfs_server::NFS_PROGRAM, 3, nfs_addr.port()),
            tcp(nfs_server::NFS_PROGRAM, 4, nfs_addr.port()),
            tcp(nfs_server::MOUNT_PROGRAM, 3, mount_addr.port()),
        ])));
    }
    let mut server = Server::new(services, MAX_RECORD, MAX_IN_FLIGHT);
    if let Some(m) = rpc_metrics {
        server = server.with_metrics(m);
    }
    let server = Arc::new(server);
    for listener in [Some(nfs), mount, portmap].into_iter().flatten() {
        let server = Arc::clone(&server);
        tokio::spawn(async move {
            if let Err(e) = server.serve(listener).await {
                warn!(error = %e, "listener stopped");
            }
        });
    }
    let watched = Arc::clone(&store);
    let (locks, grace) = (Arc::clone(&shared.locks), Arc::clone(&shared.grace));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(config.reload_interval);
        loop {
            tick.tick().await;
            exported.set(watched.volumes().len() as i64);
            locks_held.set(locks.count() as i64);
            grace_gauge.set(i64::from(grace.active()));
            let store = Arc::clone(&watched);
            let reloaded = tokio::task::spawn_blocking(move || {
                store.sweep_cache();
                store.reload()
            });
            match reloaded.await {
                Ok(Err(e)) => warn!(error = %e, "cannot reload the registry"),
                Err(e) => warn!(error = %e, "registry reload failed"),
                Ok(Ok(_)) => {}
            }
        }
    });
    info!(
        nfs = %nfs_addr,
        mount = %mount_addr,
        portmap = ?portmap_addr,
        http = ?http_addr,
        volumes = store.volumes().len(),
        "serving NFSv3 and NFSv4.1"
    );
    Ok(Running {
        nfs: nfs_addr,
        mount: mount_addr,
        portmap: portmap_addr,
        http: http_addr,
        store,
        health,
        registry,
        locks: Arc::clone(&shared.locks),
        grace: Arc::clone(&shared.grace),
    })
}

/// Raises the open-file limit to its hard maximum (each request holds a few descriptors).
pub fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit with a valid struct.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}
