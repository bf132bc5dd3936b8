//! NFSv3 (RFC 1813), MOUNT v3 and NFSv4.1 (RFC 8881) services over the export store.
//!
//! This crate maps protocol operations onto `export-store`: it decodes arguments with the
//! `nfs3_types` codec, resolves handles, applies the export's squash options to the caller's
//! AUTH_SYS credential, runs the file-system work on its own worker threads ([`executor`];
//! only quick calls on open handles run on the async reactor), and encodes replies including weak cache consistency data. It knows
//! nothing about sockets: `oncrpc` delivers calls to the [`RpcService`]s built here.
//!
//! NFSv3 locking is here too: NLM v4 ([`nlm`]) over the byte-range table shared with NFSv4.1
//! ([`locks`]), and NSM ([`nsm`]) for reboot notifications both ways.

mod convert;
pub mod executor;
pub mod grace;
pub mod locks;
pub mod metrics;
pub mod mount;
pub mod nfs3;
pub mod nfs4;
pub mod nlm;
pub mod nsm;
mod shape;
pub mod statefile;

use std::sync::Arc;
use std::time::Duration;

use export_store::ExportStore;
use oncrpc::RpcService;

/// NFS's RPC program number.
pub const NFS_PROGRAM: u32 = 100_003;
/// MOUNT's RPC program number.
pub const MOUNT_PROGRAM: u32 = 100_005;
/// The path under which every volume appears on the wire: `/export/<volume>`.
pub const EXPORT_PREFIX: &str = "/export";
/// Largest READ/WRITE transfer (FSINFO rtmax/wtmax).
pub const MAX_IO: u32 = 1024 * 1024;

/// Settings of the NFSv4 state.
#[derive(Clone, Debug)]
pub struct V4Config {
    /// Lease of a client's state: how long it lives without renewal.
    pub lease: Duration,
    /// Grace period after a restart during which clients reclaim state.
    pub grace: Duration,
    /// Keep the list of clients in the export root (so they can reclaim after a restart).
    pub record_clients: bool,
}

impl Default for V4Config {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(90),
            grace: Duration::from_secs(90),
            record_clients: true,
        }
    }
}

/// File name of the NFSv4 client records in the export root's state directory.
pub const CLIENT_RECORDS: &str = "nfs4-clients";

/// Everything the NFS services share: the store, the lock table, the grace period, the
/// threads that run calls and the write verifier.
pub struct Shared {
    pub store: Arc<ExportStore>,
    pub locks: Arc<locks::LockTable>,
    pub grace: Arc<grace::Grace>,
    pub v4: Arc<nfs4::state::State>,
    pub executor: Arc<executor::Executor>,
    /// One verifier for v3 and v4 WRITE and COMMIT (see [`write_verifier`]).
    pub write_verifier: [u8; 8],
}

impl Shared {
    /// Loads the NFSv4 client records (starting the grace period if there are any).
    pub fn new(store: Arc<ExportStore>, config: &V4Config) -> Self {
        let locks = Arc::new(locks::LockTable::new());
        let grace = Arc::new(grace::Grace::none());
        let records = config
            .record_clients
            .then(|| store.registry().state_dir().join(CLIENT_RECORDS));
        let v4 = nfs4::state::State::shared(
            nfs4::state::StateConfig {
                lease: config.lease,
                grace: config.grace,
                records,
            },
            Arc::clone(&locks),
            Arc::clone(&grace),
        );
        Self {
            store,
            locks,
            grace,
            v4,
            executor: executor::Executor::new(executor::DEFAULT_THREADS),
            write_verifier: write_verifier(),
        }
    }

    /// Runs NFS calls on `threads` threads instead of [`executor::DEFAULT_THREADS`].
    pub fn with_threads(mut self, threads: usize) -> Self {
        if threads != self.executor.threads() {
            self.executor = executor::Executor::new(threads);
        }
        self
    }
}

/// The NFS (v3 and v4) and MOUNT services for one export store.
pub fn services(store: Arc<ExportStore>) -> Vec<Arc<dyn RpcService>> {
    let shared = Shared::new(store, &V4Config::default());
    services_with_metrics(&shared, None)
}

/// [`services`], counting bytes per volume and stale handles in `metrics`.
pub fn services_with_metrics(
    shared: &Shared,
    metrics: Option<Arc<metrics::NfsMetrics>>,
) -> Vec<Arc<dyn RpcService>> {
    let store = &shared.store;
    if let Some(m) = &metrics {
        m.observe_workers(&shared.executor);
    }
    let v3 = nfs3::Nfs3Service::new(
        Arc::clone(store),
        Arc::clone(&shared.executor),
        shared.write_verifier,
        metrics.clone(),
    );
    let v4 = nfs4::Nfs4Service::new(
        Arc::clone(store),
        Arc::clone(&shared.v4),
        Arc::clone(&shared.executor),
        shared.write_verifier,
        metrics,
    );
    vec![
        Arc::new(v3),
        Arc::new(v4),
        Arc::new(mount::MountService::new(Arc::clone(store))),
    ]
}

/// Logs (at a limited rate) a call refused because its caller may not use `vol`.
pub(crate) fn access_refused(
    vol: &export_store::Volume,
    peer: std::net::SocketAddr,
    refused: export_store::access::Refused,
) {
    if let Some(suppressed) = oncrpc::throttle::allow("volume_access_refused") {
        let why = match refused {
            export_store::access::Refused::Client => "address not in the volume's clients",
            export_store::access::Refused::InsecurePort => {
                "the volume is secure and the source port is not reserved"
            }
        };
        tracing::warn!(volume = vol.name(), %peer, why, suppressed, "call refused");
    }
}

/// READ replies at least this large send their data with `sendfile` (no copy through our
/// memory); smaller ones are cheaper to copy into the reply.
pub(crate) const SENDFILE_MIN: usize = 64 * 1024;

/// A READ reply (v3 or v4): `results` end with the data's length; then `n` bytes of the file
/// at `offset` and their padding follow, from the page cache when the reply is large.
pub(crate) fn read_reply(
    results: Vec<u8>,
    fd: std::sync::Arc<std::os::fd::OwnedFd>,
    offset: u64,
    n: usize,
) -> oncrpc::Reply {
    let file = oncrpc::FileSlice {
        fd,
        offset,
        len: n as u32,
    };
    if n >= SENDFILE_MIN {
        return oncrpc::Reply::SuccessFile(results, file);
    }
    let mut body = results;
    file.read_into(&mut body);
    oncrpc::Reply::Success(body)
}

/// The cookie verifier of a directory listing (v3 READDIR(PLUS) and v4 READDIR). Cookies are
/// the file system's own directory offsets, which stay valid while the volume exists; the
/// verifier ties them to this volume incarnation.
pub(crate) fn cookie_verifier(volume: &export_store::Volume) -> [u8; 8] {
    let mut v = [0u8; 8];
    v[..4].copy_from_slice(&volume.record.generation.to_be_bytes());
    v[4..].copy_from_slice(&volume.id().to_be_bytes());
    v
}

/// Whether a listing may go on from `cookie` with verifier `verf`: the start, a client that
/// sends no verifier, or this volume incarnation's.
pub(crate) fn cookie_valid(volume: &export_store::Volume, cookie: u64, verf: [u8; 8]) -> bool {
    cookie == 0 || verf == [0; 8] || verf == cookie_verifier(volume)
}

/// A write verifier: random per start and never derived from handles, so after a restart
/// clients see a new one and resend their unstable writes.
pub fn write_verifier() -> [u8; 8] {
    let mut v = [0u8; 8];
    if getrandom::fill(&mut v).is_err() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        v = now.to_be_bytes();
    }
    v
}

/// The NLM and NSM services, sharing `locks` and `grace` with the other protocols.
///
/// Raises the NSM state number kept in the store's state directory and, in the background,
/// sends SM_NOTIFY to every host that held NLM locks before this start, so they reclaim them
/// during `grace`; hosts that did not reclaim are dropped from the list when it ends.
/// Blocking (file I/O); call it inside the tokio runtime (e.g. from `spawn_blocking`).
pub fn lock_services(
    store: Arc<ExportStore>,
    locks: Arc<locks::LockTable>,
    grace: Arc<grace::Grace>,
    grace_length: Duration,
    config: nlm::NlmConfig,
) -> std::io::Result<[Arc<dyn RpcService>; 2]> {
    let nsm = Arc::new(nsm::Nsm::open(store.registry().state_dir())?);
    let previous = nsm.hosts();
    if !previous.is_empty() {
        // NLM has no "done reclaiming": hosts that held locks get the whole period.
        grace.start_full(grace_length);
    }
    let state = nlm::NlmState::new(
        store,
        locks,
        Arc::clone(&grace),
        Arc::clone(&nsm),
        config.clone(),
    );
    tracing::info!(
        state = nsm.state(),
        hosts = previous.len(),
        "NSM: notifying the hosts that held locks before this start"
    );
    nsm::notify_hosts(
        previous,
        config.our_name,
        nsm.state(),
        config.callback_portmap_port,
    );
    let pruned = Arc::clone(&state);
    tokio::spawn(async move {
        if let Some(left) = grace.remaining() {
            tokio::time::sleep(left).await;
        }
        let _ = tokio::task::spawn_blocking(move || pruned.forget_idle_hosts()).await;
    });
    Ok([
        Arc::new(nlm::NlmService::new(Arc::clone(&state))),
        Arc::new(nsm::NsmService::new(nsm, state)),
    ])
}
