//! What the NFS layer counts beyond the RPC layer's per-call figures: bytes read and written
//! per volume and file handles refused as stale. Also names NFSv3 and MOUNT procedures and
//! statuses for the RPC layer's `nfs_requests_total`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VolumeLabels {
    pub volume: String,
}

#[derive(Debug, Default)]
pub struct NfsMetrics {
    read_bytes: Family<VolumeLabels, Counter>,
    written_bytes: Family<VolumeLabels, Counter>,
    stale: Counter,
    workers: Gauge,
    workers_busy: Gauge,
    workers_queued: Gauge,
}

impl NfsMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "nfs_volume_read_bytes",
            "Bytes returned by READ, per volume",
            m.read_bytes.clone(),
        );
        registry.register(
            "nfs_volume_written_bytes",
            "Bytes accepted by WRITE, per volume",
            m.written_bytes.clone(),
        );
        registry.register(
            "nfs_stale_handles",
            "File handles refused as stale or invalid (removed volume or file, forged handle)",
            m.stale.clone(),
        );
        registry.register(
            "nfs_worker_threads",
            "Threads running NFS calls that may wait for the disk (--nfs-threads)",
            m.workers.clone(),
        );
        registry.register(
            "nfs_worker_threads_busy",
            "Worker threads running a call now",
            m.workers_busy.clone(),
        );
        registry.register(
            "nfs_worker_queued_calls",
            "Calls waiting for a free worker thread",
            m.workers_queued.clone(),
        );
        m
    }

    /// Reports `executor`'s threads, and from now on how many are busy and how many calls
    /// wait for one.
    pub fn observe_workers(&self, executor: &crate::executor::Executor) {
        self.workers.set(executor.threads() as i64);
        executor.observe(self.workers_busy.clone(), self.workers_queued.clone());
    }

    pub(crate) fn read(&self, volume: &str, n: u64) {
        self.read_bytes
            .get_or_create(&VolumeLabels {
                volume: volume.to_owned(),
            })
            .inc_by(n);
    }

    pub(crate) fn written(&self, volume: &str, n: u64) {
        self.written_bytes
            .get_or_create(&VolumeLabels {
                volume: volume.to_owned(),
            })
            .inc_by(n);
    }

    pub(crate) fn stale(&self) {
        self.stale.inc();
    }
}

const NFS3_PROCEDURES: [&str; 22] = [
    "NULL",
    "GETATTR",
    "SETATTR",
    "LOOKUP",
    "ACCESS",
    "READLINK",
    "READ",
    "WRITE",
    "CREATE",
    "MKDIR",
    "SYMLINK",
    "MKNOD",
    "REMOVE",
    "RMDIR",
    "RENAME",
    "LINK",
    "READDIR",
    "READDIRPLUS",
    "FSSTAT",
    "FSINFO",
    "PATHCONF",
    "COMMIT",
];

const MOUNT3_PROCEDURES: [&str; 6] = ["NULL", "MNT", "DUMP", "UMNT", "UMNTALL", "EXPORT"];

pub fn nfs3_procedure(proc_: u32) -> &'static str {
    NFS3_PROCEDURES
        .get(proc_ as usize)
        .copied()
        .unwrap_or("unknown")
}

pub fn mount3_procedure(proc_: u32) -> &'static str {
    MOUNT3_PROCEDURES
        .get(proc_ as usize)
        .copied()
        .unwrap_or("unknown")
}

fn first_word(body: &[u8]) -> Option<u32> {
    body.get(..4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// The `nfsstat3` a reply body starts with (every procedure but NULL).
pub fn nfs3_status(proc_: u32, body: &[u8]) -> &'static str {
    if proc_ == 0 {
        return "NFS3_OK";
    }
    match first_word(body) {
        Some(0) => "NFS3_OK",
        Some(1) => "NFS3ERR_PERM",
        Some(2) => "NFS3ERR_NOENT",
        Some(5) => "NFS3ERR_IO",
        Some(6) => "NFS3ERR_NXIO",
        Some(13) => "NFS3ERR_ACCES",
        Some(17) => "NFS3ERR_EXIST",
        Some(18) => "NFS3ERR_XDEV",
        Some(19) => "NFS3ERR_NODEV",
        Some(20) => "NFS3ERR_NOTDIR",
        Some(21) => "NFS3ERR_ISDIR",
        Some(22) => "NFS3ERR_INVAL",
        Some(27) => "NFS3ERR_FBIG",
        Some(28) => "NFS3ERR_NOSPC",
        Some(30) => "NFS3ERR_ROFS",
        Some(31) => "NFS3ERR_MLINK",
        Some(63) => "NFS3ERR_NAMETOOLONG",
        Some(66) => "NFS3ERR_NOTEMPTY",
        Some(69) => "NFS3ERR_DQUOT",
        Some(70) => "NFS3ERR_STALE",
        Some(71) => "NFS3ERR_REMOTE",
        Some(10001) => "NFS3ERR_BADHANDLE",
        Some(10002) => "NFS3ERR_NOT_SYNC",
        Some(10003) => "NFS3ERR_BAD_COOKIE",
        Some(10004) => "NFS3ERR_NOTSUPP",
        Some(10005) => "NFS3ERR_TOOSMALL",
        Some(10006) => "NFS3ERR_SERVERFAULT",
        Some(10007) => "NFS3ERR_BADTYPE",
        Some(10008) => "NFS3ERR_JUKEBOX",
        _ => "unknown",
    }
}

/// MNT answers a `mountstat3`; the other MOUNT procedures have no status.
pub fn mount3_status(proc_: u32, body: &[u8]) -> &'static str {
    if proc_ != 1 {
        return "MNT3_OK";
    }
    match first_word(body) {
        Some(0) => "MNT3_OK",
        Some(1) => "MNT3ERR_PERM",
        Some(2) => "MNT3ERR_NOENT",
        Some(5) => "MNT3ERR_IO",
        Some(13) => "MNT3ERR_ACCES",
        Some(20) => "MNT3ERR_NOTDIR",
        Some(22) => "MNT3ERR_INVAL",
        Some(63) => "MNT3ERR_NAMETOOLONG",
        Some(10004) => "MNT3ERR_NOTSUPP",
        Some(10006) => "MNT3ERR_SERVERFAULT",
        _ => "unknown",
    }
}
