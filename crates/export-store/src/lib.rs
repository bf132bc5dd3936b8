//! The volumes on disk, with no knowledge of any wire protocol.
//!
//! This crate owns:
//! - [`registry`]: the persistent list of volumes (id, generation, options) kept in the export
//!   root's state directory and changed atomically while the server runs;
//! - [`handle`]: persistent file handles built from the kernel's own handles, tagged with the
//!   volume id and generation and authenticated with a per-export-root key;
//! - [`access`]: which clients may use a volume (address ranges, reserved ports);
//! - [`cred`]: per-thread file-system credentials (fsuid/fsgid/groups) and squashing;
//! - [`store`]: resolving handles to open objects inside exactly one volume;
//! - [`ops`]: the file-system operations, run under the caller's credentials and made durable
//!   before they return;
//! - [`quota`]: each volume's usage and hard limit (its size);
//! - [`projquota`]: kernel project quotas, which enforce those sizes where the file system
//!   has them on.
//!
//! Every function here blocks: callers run them on worker threads, never on an async reactor.

pub mod access;
pub mod commit;
pub mod cred;
pub mod durability;
pub mod handle;
pub mod ops;
pub mod projquota;
pub mod quota;
pub mod registry;
pub mod store;
mod sys;

pub use cred::{Identity, Squash};
pub use handle::HandleError;
pub use ops::{Attr, CreateHow, DirEntry, NodeKind, NodeSpec, SetAttr, TimeSet, WriteStability};
pub use quota::Quota;
pub use registry::{Registry, RegistryError, VolumeOptions, VolumeRecord};
pub use store::{ExportStore, Object, StoreError, Volume};

/// The size in bytes of the file system holding `path` (what a shard offers for placement).
pub fn capacity(path: &std::path::Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: statvfs is plain data; `c` is a valid C string and `s` is written by the call.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    #[allow(clippy::useless_conversion)] // c_ulong is u32 on 32-bit targets
    Ok(u64::from(s.f_blocks).saturating_mul(u64::from(s.f_frsize)))
}
