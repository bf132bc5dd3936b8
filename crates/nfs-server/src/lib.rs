//! NFSv3 (RFC 1813) and MOUNT v3 services over the export store.
//!
//! This crate maps protocol operations onto `export-store`: it decodes arguments with the
//! `nfs3_types` codec, resolves handles, applies the export's squash options to the caller's
//! AUTH_SYS credential, runs the file-system work on blocking worker threads (never on the
//! async reactor), and encodes replies including weak cache consistency data. It knows
//! nothing about sockets: `oncrpc` delivers calls to the [`RpcService`]s built here.

mod convert;
pub mod grace;
pub mod locks;
pub mod metrics;
pub mod mount;
pub mod nfs3;
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
