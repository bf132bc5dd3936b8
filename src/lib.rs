//! The `nfs-server-provisioner` process: wiring the RPC server, the NFS services and the
//! export store together. The command line lives in `main.rs`; this library part exists so
//! tests can start a whole server in-process.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use export_store::ExportStore;
use nfs_server::grace::Grace;
use nfs_server::locks::LockTable;
use nfs_server::metrics::{NfsMetrics, VolumeLabels};
use nfs_server::nlm::{NLM_PROGRAM, NLM_VERSION};
use nfs_server::nsm::{NSM_PROGRAM, NSM_VERSION};
use oncrpc::portmap::{self, Mapping, Portmapper};
use oncrpc::{RpcMetrics, RpcService, Server};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::{TcpListener, UdpSocket};
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
    /// How often idle volumes are measured again to correct their usage for files changed
    /// beside the server (`None`: only at start).
    pub recount_interval: Option<Duration>,
    /// Port of `/healthz`, `/readyz` and `/metrics`; `None` disables it, `Some(0)` picks a
    /// free port.
    pub http_port: Option<u16>,
    /// Count calls, bytes and connections for `/metrics`.
    pub metrics: bool,
    /// NFSv4 lease and grace period.
    pub v4: nfs_server::V4Config,
    /// NFSv3 locking (NLM and NSM).
    pub locking: LockingConfig,
    /// What one client may hold: connections, time, bytes in flight (`max_record` and
    /// `max_in_flight` are set by the server).
    pub limits: oncrpc::Limits,
    /// Threads running NFS calls (see `nfs_server::executor`).
    pub nfs_threads: usize,
    /// Labels every metric carries (a shard's `shard="<pod>"`).
    pub metric_labels: Vec<(String, String)>,
}

/// Where NLM and NSM listen and how they reach clients. The default suits tests: free ports.
#[derive(Clone, Debug)]
pub struct LockingConfig {
    /// NLM (lock manager) port, TCP and UDP; 0 picks a free one.
    pub nlm_port: u16,
    /// NSM (statd) port, TCP and UDP; 0 picks a free one.
    pub statd_port: u16,
    /// Port of the clients' portmappers, asked for NLM GRANTED callbacks and SM_NOTIFY (111).
    pub callback_portmap_port: u16,
}

impl Default for LockingConfig {
    fn default() -> Self {
        Self {
            nlm_port: 0,
            statd_port: 0,
            callback_portmap_port: 111,
        }
    }
}

/// A started server: where it listens. Dropping it does not stop it; it runs until the
/// runtime ends.
#[derive(Clone)]
pub struct Running {
    pub nfs: SocketAddr,
    pub mount: SocketAddr,
    pub portmap: Option<SocketAddr>,
    pub http: Option<SocketAddr>,
    /// NLM and NSM, each on this port over both TCP and UDP.
    pub nlm: SocketAddr,
    pub statd: SocketAddr,
    /// The byte-range locks of every protocol, and the grace period they share.
    pub locks: Arc<LockTable>,
    pub grace: Arc<Grace>,
    /// The NFSv4.1 state (tests move its lease clock: `v4.clock.advance`).
    #[doc(hidden)]
    pub v4: Arc<nfs_server::nfs4::state::State>,
    pub store: Arc<ExportStore>,
    /// Readiness reported on the HTTP port; the caller decides when the process is ready.
    pub health: Arc<http::Health>,
    /// What `/metrics` shows; the provisioner registers its metrics here too.
    pub registry: Arc<Mutex<Registry>>,
    /// The RPC server of every listener.
    pub rpc: Arc<Server>,
}

impl Running {
    /// Stops serving gracefully: listeners close, connections stop reading, calls already
    /// read are answered, for at most `grace`. Returns the connections still open then.
    pub async fn shutdown(&self, grace: Duration) -> usize {
        self.health.stopping();
        self.rpc.shutdown(grace).await
    }
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
    let (nlm_tcp, nlm_udp) = bind_tcp_and_udp(config.bind, config.locking.nlm_port).await?;
    let (statd_tcp, statd_udp) = bind_tcp_and_udp(config.bind, config.locking.statd_port).await?;
    let nlm_addr = nlm_tcp.local_addr()?;
    let statd_addr = statd_tcp.local_addr()?;
    let nfs_addr = nfs.local_addr()?;
    let mount_addr = mount.as_ref().map_or(Ok(nfs_addr), |l| l.local_addr())?;
    let portmap_addr = portmap.as_ref().map(|l| l.local_addr()).transpose()?;
    let http_addr = http.as_ref().map(|l| l.local_addr()).transpose()?;
    let health = http::Health::new();
    let mut registry = Registry::with_labels(
        config
            .metric_labels
            .iter()
            .map(|(k, v)| (k.clone().into(), v.clone().into())),
    );
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
    let volume_used = Family::<VolumeLabels, Gauge>::default();
    registry.register(
        "nfs_volume_used_bytes",
        "Bytes allocated on disk by each volume's files, refreshed every second",
        volume_used.clone(),
    );
    let volume_size = Family::<VolumeLabels, Gauge>::default();
    registry.register(
        "nfs_volume_size_bytes",
        "Each volume's size limit (writes past it get DQUOT); volumes without one are not listed",
        volume_size.clone(),
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

    let shared =
        nfs_server::Shared::new(Arc::clone(&store), &config.v4).with_threads(config.nfs_threads);
    let mut services: Vec<Arc<dyn RpcService>> =
        nfs_server::services_with_metrics(&shared, nfs_metrics);
    let (locks, grace) = (Arc::clone(&shared.locks), Arc::clone(&shared.grace));
    let lock_config = nfs_server::nlm::NlmConfig {
        callback_portmap_port: config.locking.callback_portmap_port,
        our_name: nfs_server::nsm::local_host_name(),
        bind: config.bind,
    };
    let (s, l, g) = (Arc::clone(&store), Arc::clone(&locks), Arc::clone(&grace));
    let grace_length = config.v4.grace;
    let lock_services = tokio::task::spawn_blocking(move || {
        nfs_server::lock_services(s, l, g, grace_length, lock_config)
    })
    .await?
    .context("cannot start the lock manager (NLM/NSM state in the export root)")?;
    services.extend(lock_services);
    if let Some(pm) = portmap_addr {
        let tcp = |prog, vers, port: u16| Mapping {
            prog,
            vers,
            prot: portmap::IPPROTO_TCP,
            port: u32::from(port),
        };
        let udp = |prog, vers, port: u16| Mapping {
            prot: portmap::IPPROTO_UDP,
            ..tcp(prog, vers, port)
        };
        services.push(Arc::new(Portmapper::new(vec![
            tcp(portmap::PROGRAM, 2, pm.port()),
            tcp(nfs_server::NFS_PROGRAM, 3, nfs_addr.port()),
            tcp(nfs_server::NFS_PROGRAM, 4, nfs_addr.port()),
            tcp(nfs_server::MOUNT_PROGRAM, 3, mount_addr.port()),
            tcp(NLM_PROGRAM, NLM_VERSION, nlm_addr.port()),
            udp(NLM_PROGRAM, NLM_VERSION, nlm_addr.port()),
            tcp(NSM_PROGRAM, NSM_VERSION, statd_addr.port()),
            udp(NSM_PROGRAM, NSM_VERSION, statd_addr.port()),
        ])));
    }
    let mut server = Server::new(services, MAX_RECORD, MAX_IN_FLIGHT).with_limits(oncrpc::Limits {
        max_record: MAX_RECORD,
        max_in_flight: MAX_IN_FLIGHT,
        ..config.limits.clone()
    });
    if let Some(m) = rpc_metrics {
        server = server.with_metrics(m);
    }
    let server = Arc::new(server);
    server.spawn_udp("nlm-udp", nlm_udp)?;
    server.spawn_udp("statd-udp", statd_udp)?;
    server.spawn_tcp("nfs", nfs)?;
    if let Some(l) = mount {
        server.spawn_tcp("mount", l)?;
    }
    if let Some(l) = portmap {
        server.spawn_tcp("portmap", l)?;
    }
    server.spawn_tcp("nlm", nlm_tcp)?;
    server.spawn_tcp("statd", statd_tcp)?;
    health.watch(Arc::clone(&server));
    if let Some(every) = config.recount_interval {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await; // the first tick is now: volumes were just measured
            loop {
                tick.tick().await;
                let store = Arc::clone(&store);
                if let Err(e) = tokio::task::spawn_blocking(move || store.recount()).await {
                    warn!(error = %e, "volume recount failed");
                }
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
            volume_used.clear();
            volume_size.clear();
            for v in watched.volumes() {
                let labels = VolumeLabels {
                    volume: v.name().to_owned(),
                };
                let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
                volume_used
                    .get_or_create(&labels)
                    .set(gauge(v.quota.used()));
                if let Some(limit) = v.quota.limit() {
                    volume_size.get_or_create(&labels).set(gauge(limit));
                }
            }
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
        nlm = %nlm_addr,
        statd = %statd_addr,
        volumes = store.volumes().len(),
        volume_sizes = %store.quota_mode(),
        "serving NFSv3, NFSv4.1 and NFSv4.2"
    );
    Ok(Running {
        nfs: nfs_addr,
        mount: mount_addr,
        portmap: portmap_addr,
        http: http_addr,
        nlm: nlm_addr,
        statd: statd_addr,
        store,
        health,
        registry,
        locks: Arc::clone(&shared.locks),
        grace: Arc::clone(&shared.grace),
        v4: Arc::clone(&shared.v4),
        rpc: server,
    })
}

/// A TCP listener and a UDP socket on the same port (`port` 0: a free one for both).
async fn bind_tcp_and_udp(bind: IpAddr, port: u16) -> anyhow::Result<(TcpListener, UdpSocket)> {
    let mut tries = 0;
    loop {
        let tcp = TcpListener::bind((bind, port))
            .await
            .with_context(|| format!("cannot listen on {bind}:{port}"))?;
        let chosen = tcp.local_addr()?.port();
        match UdpSocket::bind((bind, chosen)).await {
            Ok(udp) => return Ok((tcp, udp)),
            // A free TCP port may be taken for UDP: pick another.
            Err(_) if port == 0 && tries < 20 => tries += 1,
            Err(e) => {
                return Err(e).with_context(|| format!("cannot listen on UDP {bind}:{chosen}"));
            }
        }
    }
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
