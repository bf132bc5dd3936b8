//! MOUNT v3 (RFC 1813 appendix I): maps `/export/<volume>` to the volume's root handle and
//! keeps the (advisory) list of who mounted what.
//!
//! The list holds one entry per client address and export, under the export's normal path
//! (`/export//vol/./` is `/export/vol`), and at most [`MAX_MOUNTS`] entries (the oldest go
//! first), so DUMP replies stay small whatever clients send.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use export_store::ExportStore;
use export_store::access::Refused;
use nfs3_types::mount::{
    dirpath, export_node, exports, fhandle3, mountbody, mountres3, mountres3_ok, mountstat3,
};
use nfs3_types::xdr_codec::{List, Opaque, Pack, Unpack};
use oncrpc::{CallArgs, CallContext, Reply, ReplySender, RpcService};
use tracing::info;

use crate::{EXPORT_PREFIX, MOUNT_PROGRAM};

const MNTPATHLEN: usize = 1024;
const AUTH_UNIX: u32 = 1;
/// Entries kept in the mount list.
pub const MAX_MOUNTS: usize = 4096;

/// Who mounted what: one entry per client address and normal path, the oldest first.
#[derive(Debug)]
struct MountList {
    entries: VecDeque<(IpAddr, String)>,
    cap: usize,
}

impl MountList {
    fn new(cap: usize) -> Self {
        Self {
            entries: VecDeque::new(),
            cap,
        }
    }

    /// Records a mount; when the list is full, the oldest entry makes room.
    fn add(&mut self, peer: IpAddr, normal: String) {
        if self.entries.iter().any(|(p, d)| *p == peer && *d == normal) {
            return;
        }
        if self.entries.len() >= self.cap {
            self.entries.pop_front();
        }
        self.entries.push_back((peer, normal));
    }

    fn remove(&mut self, peer: IpAddr, normal: &str) {
        self.entries.retain(|(p, d)| !(*p == peer && d == normal));
    }

    fn remove_all(&mut self, peer: IpAddr) {
        self.entries.retain(|(p, _)| *p != peer);
    }
}

/// The MOUNT program.
pub struct MountService {
    store: Arc<ExportStore>,
    mounts: Mutex<MountList>,
}

impl MountService {
    pub fn new(store: Arc<ExportStore>) -> Self {
        Self {
            store,
            mounts: Mutex::new(MountList::new(MAX_MOUNTS)),
        }
    }

    /// The normal form of an absolute MOUNT path: empty and `.` components dropped (so
    /// repeated and trailing slashes too). `None` for a path that is not UTF-8, not absolute,
    /// or has a `..` component.
    pub fn normal_path(path: &[u8]) -> Option<String> {
        let path = std::str::from_utf8(path).ok()?;
        if !path.starts_with('/') {
            return None;
        }
        let mut normal = String::with_capacity(path.len());
        for component in path.split('/') {
            match component {
                "" | "." => {}
                ".." => return None,
                c => {
                    normal.push('/');
                    normal.push_str(c);
                }
            }
        }
        if normal.is_empty() {
            normal.push('/');
        }
        Some(normal)
    }

    /// The volume a normal MOUNT path names: `/export/<volume>`.
    fn volume_name(normal: &str) -> Option<&str> {
        let name = normal.strip_prefix(EXPORT_PREFIX)?.strip_prefix('/')?;
        (!name.is_empty() && !name.contains('/')).then_some(name)
    }

    fn answer(&self, ctx: &CallContext, args: &[u8]) -> Reply {
        let peer = ctx.peer.ip().to_canonical();
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
                let normal = Self::normal_path(&path);
                let volume = normal
                    .as_deref()
                    .and_then(Self::volume_name)
                    .and_then(|n| self.store.volume_by_name_fresh(n));
                let (Some(volume), Some(normal)) = (volume, normal) else {
                    return encode(&mountres3::Err(mountstat3::MNT3ERR_NOENT));
                };
                if let Err(refused) = volume.options().admits(ctx.peer) {
                    crate::access_refused(&volume, ctx.peer, refused);
                    return encode(&mountres3::Err(match refused {
                        Refused::Client => mountstat3::MNT3ERR_ACCES,
                        Refused::InsecurePort => mountstat3::MNT3ERR_PERM,
                    }));
                }
                info!(%peer, path = %normal, "mount");
                mounts.add(peer, normal);
                encode(&mountres3::Ok(mountres3_ok {
                    fhandle: fhandle3(Opaque::borrowed(volume.root_handle())),
                    auth_flavors: vec![AUTH_UNIX],
                }))
            }
            2 => {
                let hosts: Vec<(String, String)> = mounts
                    .entries
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
                // Only normal paths are listed: another one was never mounted.
                if let Some(normal) = Self::normal_path(&path) {
                    mounts.remove(peer, &normal);
                }
                Reply::Success(Vec::new())
            }
            4 => {
                mounts.remove_all(peer);
                Reply::Success(Vec::new())
            }
            5 => {
                let paths: Vec<String> = self
                    .store
                    .volumes()
                    .iter()
                    // Only what this address may mount (a `secure` volume is listed to a
                    // caller on any port: showmount runs unprivileged).
                    .filter(|v| v.options().admits(ctx.peer) != Err(Refused::Client))
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
    use std::net::{IpAddr, Ipv4Addr};

    use super::{MAX_MOUNTS, MountList, MountService};

    #[test]
    fn the_mount_list_keeps_one_entry_per_client_and_path_and_drops_the_oldest() {
        let ip = |n: u32| IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n));
        let mut list = MountList::new(MAX_MOUNTS);
        for _ in 0..3 {
            list.add(ip(1), "/export/a".into());
        }
        list.add(ip(1), "/export/b".into());
        list.add(ip(2), "/export/a".into());
        assert_eq!(list.entries.len(), 3);
        for n in 3..=MAX_MOUNTS as u32 + 1 {
            list.add(ip(n), "/export/a".into());
        }
        assert_eq!(list.entries.len(), MAX_MOUNTS);
        // The first two entries (client 1) went; client 2's is now the oldest.
        assert_eq!(list.entries.front(), Some(&(ip(2), "/export/a".into())));
        list.remove(ip(2), "/export/a");
        list.remove_all(ip(3));
        assert_eq!(list.entries.len(), MAX_MOUNTS - 2);
        assert!(list.entries.iter().all(|(p, _)| *p != ip(2) && *p != ip(3)));
    }

    fn volume(path: &[u8]) -> Option<String> {
        let normal = MountService::normal_path(path)?;
        MountService::volume_name(&normal).map(str::to_owned)
    }

    #[test]
    fn mount_paths_name_exactly_one_volume() {
        assert_eq!(volume(b"/export/vol").as_deref(), Some("vol"));
        assert_eq!(volume(b"/export/vol/").as_deref(), Some("vol"));
        assert_eq!(volume(b"//export/./vol//.").as_deref(), Some("vol"));
        assert_eq!(volume(b"/export"), None);
        assert_eq!(volume(b"/export/a/b"), None);
        assert_eq!(volume(b"/exportx/vol"), None);
        assert_eq!(volume(b"/srv/vol"), None);
        assert_eq!(volume(b"/export/../export/vol"), None);
        assert_eq!(volume(b"export/vol"), None);
    }

    #[test]
    fn paths_are_normalised_component_by_component() {
        let n = |p: &[u8]| MountService::normal_path(p);
        assert_eq!(n(b"/export/vol///").as_deref(), Some("/export/vol"));
        assert_eq!(n(b"/./").as_deref(), Some("/"));
        assert_eq!(n(b"/a/.b/c.").as_deref(), Some("/a/.b/c."));
        assert_eq!(n(b""), None);
        assert_eq!(n(b"/a/../b"), None);
        assert_eq!(n(&[b'/', 0xff]), None);
    }
}
