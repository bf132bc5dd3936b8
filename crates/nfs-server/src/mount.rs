//! MOUNT v3 (RFC 1813 appendix I): maps `/export/<volume>` to the volume's root handle and
//! keeps the (advisory) list of who mounted what.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use export_store::ExportStore;
use nfs3_types::mount::{
    dirpath, export_node, exports, fhandle3, mountbody, mountres3, mountres3_ok, mountstat3,
};
use nfs3_types::xdr_codec::{List, Opaque, Pack, Unpack};
use oncrpc::{CallArgs, CallContext, Reply, ReplySender, RpcService};
use tracing::info;

use crate::{EXPORT_PREFIX, MOUNT_PROGRAM};

const MNTPATHLEN: usize = 1024;
const AUTH_UNIX: u32 = 1;

/// The MOUNT program.
pub struct MountService {
    store: Arc<ExportStore>,
    mounts: Arc<Mutex<Vec<(IpAddr, String)>>>,
}

impl MountService {
    pub fn new(store: Arc<ExportStore>) -> Self {
        Self {
            store,
            mounts: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// The volume a MOUNT path names: `/export/<volume>` (trailing slashes ignored).
    pub fn volume_name(path: &[u8]) -> Option<&str> {
        let path = std::str::from_utf8(path).ok()?.trim_end_matches('/');
        let name = path.strip_prefix(EXPORT_PREFIX)?.strip_prefix('/')?;
        (!name.is_empty() && !name.contains('/')).then_some(name)
    }

    fn answer(&self, ctx: &CallContext, args: &[u8]) -> Reply {
        let peer = ctx.peer.ip();
        let mut mounts = self.mounts.lock().unwrap_or_else(|e| e.into_inner());
        match ctx.proc_ {
            0 => Reply::Success(Vec::new()),
            1 => {
                let Some(path) = decode_path(args) else {
                    return Reply::GarbageArgs;
                };
                if path.len() > MNTPATHLEN {
                    return encode(&mountres3::Err(mountstat3::MNT3ERR_NAMETOOLONG));
                }
                let volume = Self::volume_name(&path).and_then(|n| self.store.volume_by_name(n));
                let Some(volume) = volume else {
                    return encode(&mountres3::Err(mountstat3::MNT3ERR_NOENT));
                };
                let shown = String::from_utf8_lossy(&path).into_owned();
                info!(%peer, path = %shown, "mount");
                if !mounts.iter().any(|(p, d)| *p == peer && *d == shown) {
                    mounts.push((peer, shown));
                }
                encode(&mountres3::Ok(mountres3_ok {
                    fhandle: fhandle3(Opaque::borrowed(volume.root_handle())),
                    auth_flavors: vec![AUTH_UNIX],
                }))
            }
            2 => {
                let hosts: Vec<(String, String)> = mounts
                    .iter()
                    .map(|(p, d)| (p.to_string(), d.clone()))
                    .collect();
                let list = List(
                    hosts
                        .iter()
                        .map(|(h, d)| mountbody {
                            ml_hostname: nfs3_types::mount::name(Opaque::borrowed(h.as_bytes())),
                            ml_directory: dirpath(Opaque::borrowed(d.as_bytes())),
                        })
                        .collect(),
                );
                encode(&list)
            }
            3 => {
                let Some(path) = decode_path(args) else {
                    return Reply::GarbageArgs;
                };
                let shown = String::from_utf8_lossy(&path).into_owned();
                mounts.retain(|(p, d)| !(*p == peer && *d == shown));
                Reply::Success(Vec::new())
            }
            4 => {
                mounts.retain(|(p, _)| *p != peer);
                Reply::Success(Vec::new())
            }
            5 => {
                let paths: Vec<String> = self
                    .store
                    .volumes()
                    .iter()
                    .map(|v| format!("{EXPORT_PREFIX}/{}", v.name()))
                    .collect();
                let list: exports = List(
                    paths
                        .iter()
                        .map(|p| export_node {
                            ex_dir: dirpath(Opaque::borrowed(p.as_bytes())),
                            ex_groups: List(Vec::new()),
                        })
                        .collect(),
                );
                encode(&list)
            }
            _ => Reply::ProcUnavail,
        }
    }
}

fn decode_path(args: &[u8]) -> Option<Vec<u8>> {
    let mut r = args;
    // Bound the length before the codec allocates it.
    let len = u32::from_be_bytes(args.get(..4)?.try_into().ok()?) as usize;
    if len > args.len() {
        return None;
    }
    dirpath::unpack(&mut r).ok().map(|(d, _)| d.0.to_vec())
}

fn encode<T: Pack>(value: &T) -> Reply {
    let mut out = Vec::with_capacity(value.packed_size());
    match value.pack(&mut out) {
        Ok(_) => Reply::Success(out),
        Err(_) => Reply::SystemErr,
    }
}

impl RpcService for MountService {
    fn program(&self) -> u32 {
        MOUNT_PROGRAM
    }

    fn versions(&self) -> (u32, u32) {
        (3, 3)
    }

    fn call(&self, ctx: CallContext, args: CallArgs, reply: ReplySender) {
        reply.send(self.answer(&ctx, args.bytes()));
    }

    fn call_names(&self, _vers: u32, proc_: u32) -> oncrpc::CallNames {
        oncrpc::CallNames {
            program: "mount",
            version: "3",
            procedure: crate::metrics::mount3_procedure(proc_),
        }
    }

    fn status_reader(&self) -> fn(u32, &[u8]) -> &'static str {
        crate::metrics::mount3_status
    }
}

#[cfg(test)]
mod tests {
    use super::MountService;

    #[test]
    fn mount_paths_name_exactly_one_volume() {
        assert_eq!(MountService::volume_name(b"/export/vol"), Some("vol"));
        assert_eq!(MountService::volume_name(b"/export/vol/"), Some("vol"));
        assert_eq!(MountService::volume_name(b"/export"), None);
        assert_eq!(MountService::volume_name(b"/export/a/b"), None);
        assert_eq!(MountService::volume_name(b"/exportx/vol"), None);
        assert_eq!(MountService::volume_name(b"/srv/vol"), None);
    }
}
