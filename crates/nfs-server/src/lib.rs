//! NFSv3 (RFC 1813) and MOUNT v3 services over the export store.
//!
//! This crate maps protocol operations onto `export-store`: it decodes arguments with the
//! `nfs3_types` codec, resolves handles, applies the export's squash options to the caller's
//! AUTH_SYS credential, runs the file-system work on blocking worker threads (never on the
//! async reactor), and encodes replies including weak cache consistency data. It knows
//! nothing about sockets: `oncrpc` delivers calls to the [`RpcService`]s built here.
//!
//! NFSv3 locking is here too: NLM v4 ([`nlm`]) over the byte-range table shared with NFSv4.1
//! ([`locks`]), and NSM ([`nsm`]) for reboot notifications both ways.

mod convert;
pub mod grace;
pub mod locks;
pub mod metrics;
pub mod mount;
pub mod nfs3;
pub mod nlm;
pub mod nsm;
mod shape;

use std::sync::Arc;

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

/// The NFS and MOUNT services for one export store.
pub fn services(store: Arc<ExportStore>) -> Vec<Arc<dyn RpcService>> {
    services_with_metrics(store, None)
}

/// [`services`], counting bytes per volume and stale handles in `metrics`.
pub fn services_with_metrics(
    store: Arc<ExportStore>,
    metrics: Option<Arc<metrics::NfsMetrics>>,
) -> Vec<Arc<dyn RpcService>> {
    vec![
        Arc::new(nfs3::Nfs3Service::new(Arc::clone(&store)).with_metrics(metrics)),
        Arc::new(mount::MountService::new(store)),
    ]
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
    config: nlm::NlmConfig,
) -> std::io::Result<[Arc<dyn RpcService>; 2]> {
    let nsm = Arc::new(nsm::Nsm::open(store.registry().state_dir())?);
    let previous = nsm.hosts();
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
