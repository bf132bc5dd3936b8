//! File-system operations on resolved objects, run under the caller's identity.
//!
//! Permission checks are the kernel's: each operation switches the worker thread to the
//! caller's fsuid/fsgid/groups first. Two knfsd-compatible exceptions run as root: a file's
//! owner may read, write and truncate it whatever its mode bits ("owner override", needed for
//! `open(O_CREAT|O_RDWR, 0444)` followed by writes), and COMMIT never fails on permissions.
//! Directory-changing operations make the directory durable before returning, sharing fsyncs
//! with concurrent changes ([`crate::commit`]); a volume exported `async` skips them.
//!
//! The data of a file is changed (WRITE, a SETATTR of the size, ALLOCATE) by the caller's
//! identity even when its descriptor was opened as root, so the kernel clears setuid and
//! setgid bits as for a local writer without `CAP_FSETID`: anyone but root (uid 0 after
//! squashing) clears setuid, and setgid when group-exec is set or the writer is not in the
//! file's group (Linux's `setattr_should_drop_suidgid`).

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::sync::{Arc, OnceLock};

use crate::cred::{self, Identity};
use crate::quota;
use crate::store::{ExportStore, Object};
use crate::sys::{self, cvt};

/// Longest file name accepted.
pub const NAME_MAX: usize = 255;

/// File type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeKind {
    Regular,
    Directory,
    Block,
    Char,
    Symlink,
    Socket,
    Fifo,
}

/// Attributes of an object, in the units NFS needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attr {
    pub kind: NodeKind,
    /// Permission bits including setuid/setgid/sticky.
    pub mode: u32,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub used: u64,
    pub rdev_major: u32,
    pub rdev_minor: u32,
    /// The volume id: each volume is its own file system to clients.
    pub fsid: u64,
    pub fileid: u64,
    pub atime: (i64, u32),
    pub mtime: (i64, u32),
    pub ctime: (i64, u32),
}

impl Attr {
    pub fn from_stat(st: &libc::stat, fsid: u64) -> Self {
        let kind = match st.st_mode & libc::S_IFMT {
            libc::S_IFDIR => NodeKind::Directory,
            libc::S_IFBLK => NodeKind::Block,
            libc::S_IFCHR => NodeKind::Char,
            libc::S_IFLNK => NodeKind::Symlink,
            libc::S_IFSOCK => NodeKind::Socket,
            libc::S_IFIFO => NodeKind::Fifo,
            _ => NodeKind::Regular,
        };
        Self {
            kind,
            mode: st.st_mode & 0o7777,
            nlink: st.st_nlink as u32,
            uid: st.st_uid,
            gid: st.st_gid,
            size: st.st_size as u64,
            used: (st.st_blocks as u64).saturating_mul(512),
            rdev_major: libc::major(st.st_rdev),
            rdev_minor: libc::minor(st.st_rdev),
            fsid,
            fileid: st.st_ino,
            atime: (st.st_atime, st.st_atime_nsec as u32),
            mtime: (st.st_mtime, st.st_mtime_nsec as u32),
            ctime: (st.st_ctime, st.st_ctime_nsec as u32),
        }
    }
}

/// How a time attribute is set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeSet {
    Keep,
    ServerNow,
    Client(i64, u32),
}

/// Attributes a client asks to set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: TimeSet,
    pub mtime: TimeSet,
}

impl Default for SetAttr {
    fn default() -> Self {
        Self {
            mode: None,
            uid: None,
            gid: None,
            size: None,
            atime: TimeSet::Keep,
            mtime: TimeSet::Keep,
        }
    }
}

/// CREATE modes (RFC 1813 section 3.3.8).
#[derive(Clone, Copy, Debug)]
pub enum CreateHow {
    Unchecked(SetAttr),
    Guarded(SetAttr),
    /// The verifier is kept in the file's atime/mtime seconds until the client sets them,
    /// so a retransmitted CREATE finds it and succeeds.
    Exclusive([u8; 8]),
}

/// Special files MKNOD can make.
#[derive(Clone, Copy, Debug)]
pub enum NodeSpec {
    Fifo,
    Socket,
    Char(u32, u32),
    Block(u32, u32),
}

/// Write stability levels (UNSTABLE, DATA_SYNC, FILE_SYNC).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum WriteStability {
    Unstable,
    DataSync,
    FileSync,
}

/// One directory entry; `cookie` resumes the listing after it.
#[derive(Clone, Debug)]
pub struct DirEntry {
    pub name: Vec<u8>,
    pub fileid: u64,
    pub cookie: u64,
}

fn errno(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

/// Checks a single path component from a client and makes it a C string.
pub fn component(name: &[u8]) -> io::Result<CString> {
    if name.is_empty() {
        return Err(errno(libc::ENOENT));
    }
    if name.len() > NAME_MAX {
        return Err(errno(libc::ENAMETOOLONG));
    }
    if name.contains(&b'/') {
        return Err(errno(libc::EINVAL));
    }
    CString::new(name).map_err(|_| errno(libc::EINVAL))
}

/// A name that creates something: `.` and `..` already exist.
fn new_component(name: &[u8]) -> io::Result<CString> {
    let c = component(name)?;
    if name == b"." || name == b".." {
        return Err(errno(libc::EEXIST));
    }
    Ok(c)
}

fn check_writable(obj: &Object) -> io::Result<()> {
    if obj.volume.options().read_only {
        Err(errno(libc::EROFS))
    } else {
        Ok(())
    }
}

/// Attributes of an object.
pub fn getattr(obj: &Object) -> io::Result<Attr> {
    Ok(Attr::from_stat(
        &sys::fstatat(obj.fd.as_fd(), c"")?,
        obj.volume.id() as u64,
    ))
}

/// LOOKUP: the handle and attributes of `name` in `dir`. `..` of a volume root is the root.
pub fn lookup(
    store: &ExportStore,
    dir: &Object,
    name: &[u8],
    id: &Identity,
) -> io::Result<(Vec<u8>, Attr)> {
    let cname = component(name)?;
    cred::become_identity(id)?;
    let dst = sys::fstatat(dir.fd.as_fd(), c"")?;
    if dst.st_mode & libc::S_IFMT != libc::S_IFDIR {
        return Err(errno(libc::ENOTDIR));
    }
    let target: &CStr = if name == b"." || (name == b".." && dir.volume.is_root(&dst)) {
        // Still require search permission on the directory, as a real lookup would.
        sys::fstatat(dir.fd.as_fd(), c".")?;
        c""
    } else {
        &cname
    };
    let st = sys::fstatat(dir.fd.as_fd(), target)?;
    let handle = store.handle_of(&dir.volume, dir.fd.as_fd(), target)?;
    Ok((handle, Attr::from_stat(&st, dir.volume.id() as u64)))
}

/// ACCESS: which of the requested bits (RFC 1813 ACCESS3_*) the caller would be granted.
pub fn access(obj: &Object, id: &Identity, requested: u32) -> io::Result<(u32, Attr)> {
    Ok(access_given(obj, id, requested, getattr(obj)?))
}

/// [`access`] with the object's current attributes already read (by
/// [`crate::ExportStore::resolve_attr`] in the same call).
pub fn access_given(obj: &Object, id: &Identity, requested: u32, attr: Attr) -> (u32, Attr) {
    const READ: u32 = 1;
    const LOOKUP: u32 = 2;
    const MODIFY: u32 = 4;
    const EXTEND: u32 = 8;
    const DELETE: u32 = 16;
    const EXECUTE: u32 = 32;
    let bits = if id.is_root() {
        7
    } else if attr.uid == id.uid {
        (attr.mode >> 6) & 7
    } else if id.in_group(attr.gid) {
        (attr.mode >> 3) & 7
    } else {
        attr.mode & 7
    };
    let (r, w, x) = (bits & 4 != 0, bits & 2 != 0, bits & 1 != 0);
    // Root may execute only what somebody may execute.
    let x = if id.is_root() && attr.kind != NodeKind::Directory {
        attr.mode & 0o111 != 0
    } else {
        x
    };
    let dir = attr.kind == NodeKind::Directory;
    let mut granted = 0;
    if r {
        granted |= READ;
    }
    if w && !obj.volume.options().read_only {
        granted |= MODIFY | EXTEND;
        if dir {
            granted |= DELETE;
        }
    }
    if x {
        granted |= if dir { LOOKUP } else { EXECUTE };
    }
    (granted & requested, attr)
}

/// READLINK.
pub fn readlink(obj: &Object) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: buf is writable for its length; an empty path reads the link `fd` refers to.
    let n = unsafe {
        libc::readlinkat(
            obj.fd.as_raw_fd(),
            c"".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        let e = io::Error::last_os_error();
        // readlinkat on something that is not a link reports ENOENT.
        return Err(if e.raw_os_error() == Some(libc::ENOENT) {
            errno(libc::EINVAL)
        } else {
            e
        });
    }
    buf.truncate(n as usize);
    Ok(buf)
}

/// A descriptor of a regular file for reading (or writing) on behalf of `id`.
///
/// The kernel checks `id`'s permission on the file (`faccessat2` with the thread switched to
/// `id`); the file's owner passes regardless of mode bits, as with knfsd. The descriptor
/// itself is opened as root once and kept with the cached handle, so a stream of READs or
/// WRITEs costs no open/close per call. The thread runs as `id` again on return, so what the
/// caller does with the descriptor is done as `id` (and clears set-id bits as it should).
fn open_for_io(obj: &Object, id: &Identity, write: bool) -> io::Result<(Arc<OwnedFd>, Attr)> {
    let attr = getattr(obj)?;
    match attr.kind {
        NodeKind::Regular => {}
        NodeKind::Directory => return Err(errno(libc::EISDIR)),
        _ => return Err(errno(libc::EINVAL)),
    }
    cred::become_identity(id)?;
    let mode = if write { libc::W_OK } else { libc::R_OK };
    match sys::access(obj.fd.as_fd(), mode) {
        Err(e) if e.raw_os_error() == Some(libc::EACCES) && attr.uid == id.uid => {}
        other => other?,
    }
    let open = || -> io::Result<(Arc<OwnedFd>, bool)> {
        cred::become_root()?;
        let opened = match sys::reopen(obj.fd.as_fd(), libc::O_RDWR) {
            Ok(fd) => Ok((Arc::new(fd), true)),
            Err(e) if write => Err(e),
            Err(_) => sys::reopen(obj.fd.as_fd(), libc::O_RDONLY).map(|fd| (Arc::new(fd), false)),
        };
        cred::become_identity(id)?;
        opened
    };
    let Some(entry) = &obj.entry else {
        return Ok((open()?.0, attr));
    };
    let mut io = entry.io.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((fd, writable)) = io.as_ref()
        && (*writable || !write)
    {
        return Ok((Arc::clone(fd), attr));
    }
    let (fd, writable) = open()?;
    *io = Some((Arc::clone(&fd), writable));
    Ok((fd, attr))
}

/// READ without copying: an open descriptor of the file and how many bytes at `offset` a reply
/// can carry (from the size now), whether they reach end of file, and the attributes. The
/// caller sends the bytes straight from the page cache (`sendfile`) or reads them itself.
pub fn read_extent(
    obj: &Object,
    id: &Identity,
    offset: u64,
    count: u32,
) -> io::Result<(Arc<OwnedFd>, usize, bool, Attr)> {
    let (fd, attr) = open_for_io(obj, id, false)?;
    let n = attr.size.saturating_sub(offset).min(u64::from(count)) as usize;
    let eof = offset.saturating_add(n as u64) >= attr.size;
    Ok((fd, n, eof, attr))
}

/// WRITE: writes `data` at `offset`, then syncs as `stable` asks. Near the volume's size limit
/// only the bytes that fit are written (a short write; the client sends the rest again and
/// gets `EDQUOT`). Returns the attributes before and after, and how many bytes were written.
pub fn write(
    obj: &Object,
    id: &Identity,
    offset: u64,
    data: &[u8],
    stable: WriteStability,
) -> io::Result<(Attr, Attr, usize)> {
    check_writable(obj)?;
    if offset
        .checked_add(data.len() as u64)
        .is_none_or(|end| end > i64::MAX as u64)
    {
        return Err(errno(libc::EFBIG));
    }
    let _measured = alloc_lock(obj);
    let (fd, before) = open_for_io(obj, id, true)?;
    let quota = &obj.volume.quota;
    // Only a write past the end or into a sparse file can allocate (on the file systems we
    // serve from; a copy-on-write one would be undercounted until the next start).
    let may_allocate = offset + data.len() as u64 > before.size || before.used < before.size;
    let reserved = if may_allocate {
        quota.reserve(data.len() as u64)
    } else {
        0
    };
    if may_allocate && reserved == 0 && !data.is_empty() {
        return Err(errno(libc::EDQUOT));
    }
    let data = if may_allocate {
        &data[..reserved as usize]
    } else {
        data
    };
    let written = pwrite_all(&fd, offset, data);
    let after =
        sys::fstatat(fd.as_fd(), c"").map(|st| Attr::from_stat(&st, obj.volume.id() as u64));
    quota.settle(
        reserved,
        after
            .as_ref()
            .map_or(0, |a| quota::growth(before.used, a.used)),
    );
    written?;
    let after = after?;
    match stable {
        // An `async` volume answers stable writes as unstable ones are handled.
        _ if obj.volume.options().asynchronous => write_behind(&fd, offset, data.len() as u64),
        WriteStability::Unstable => write_behind(&fd, offset, data.len() as u64),
        WriteStability::DataSync => sys::fdatasync(fd.as_fd())?,
        // Concurrent stable writes to one file share fsyncs.
        WriteStability::FileSync => shared_fsync(obj, fd.as_fd())?,
    }
    Ok((before, after, data.len()))
}

fn pwrite_all(fd: &OwnedFd, offset: u64, data: &[u8]) -> io::Result<()> {
    let mut done = 0usize;
    while done < data.len() {
        // SAFETY: the source range is inside data.
        let n = unsafe {
            libc::pwrite(
                fd.as_raw_fd(),
                data[done..].as_ptr().cast(),
                data.len() - done,
                (offset + done as u64) as libc::off_t,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        done += n as usize;
    }
    Ok(())
}

/// Serialises changes to one file's allocation, so that each is measured alone (the
/// before/after difference of a concurrent one would be counted twice), and marks the
/// volume busy meanwhile (no recount lands during it).
fn alloc_lock(obj: &Object) -> (quota::Busy<'_>, Option<std::sync::MutexGuard<'_, ()>>) {
    let busy = obj.volume.quota.begin();
    let lock = obj
        .entry
        .as_ref()
        .map(|e| e.alloc.lock().unwrap_or_else(|p| p.into_inner()));
    (busy, lock)
}

/// Starts a change of `dir`'s names: marks the volume busy and returns the directory's
/// allocation before the change.
fn changing(dir: &Object) -> (quota::Busy<'_>, u64) {
    (dir.volume.quota.begin(), dir_used(dir))
}

/// Refuses a new name (or a size increase) in a volume that is full.
fn check_space(dir: &Object) -> io::Result<()> {
    if dir.volume.quota.is_full() {
        return Err(errno(libc::EDQUOT));
    }
    Ok(())
}

/// Bytes allocated by a directory now (it may grow when names are added).
fn dir_used(dir: &Object) -> u64 {
    sys::fstatat(dir.fd.as_fd(), c"").map_or(0, |st| quota::allocated(&st))
}

/// Unstable data is pushed towards the disk in windows of this size as soon as a write
/// completes one, so a COMMIT finds little left to flush and dirty pages do not pile up
/// until the kernel throttles the writer.
const WRITE_BEHIND: u64 = 4 << 20;

/// Queues (without waiting) the writeback of the window a write has just completed. Small or
/// scattered writes rarely complete a window, so rewrites still coalesce in the page cache.
/// One background thread starts the writeback, off the reply's path; when it lags behind,
/// windows are skipped and the kernel's own writeback or the COMMIT takes them.
fn write_behind(fd: &Arc<OwnedFd>, offset: u64, len: u64) {
    type Window = (Arc<OwnedFd>, u64);
    static FLUSHER: OnceLock<Option<SyncSender<Window>>> = OnceLock::new();
    let end = offset + len;
    if offset / WRITE_BEHIND == end / WRITE_BEHIND || end < WRITE_BEHIND {
        return;
    }
    let window = end / WRITE_BEHIND * WRITE_BEHIND - WRITE_BEHIND;
    let flusher = FLUSHER.get_or_init(|| {
        let (tx, rx) = sync_channel::<Window>(64);
        std::thread::Builder::new()
            .name("write-behind".into())
            .spawn(move || {
                for (fd, window) in rx {
                    // Best effort: the COMMIT that follows reports any error.
                    let _ = sys::start_writeback(fd.as_fd(), window, WRITE_BEHIND);
                }
            })
            .ok()
            .map(|_| tx)
    });
    if let Some(tx) = flusher {
        let _ = tx.try_send((fd.clone(), window));
    }
}

/// COMMIT: data and metadata of the file on stable storage.
pub fn commit(obj: &Object) -> io::Result<Attr> {
    cred::become_root()?;
    sync_object(obj)?;
    getattr(obj)
}

/// Makes a change to directory `dir` durable before the reply: fsyncs it, sharing the fsync
/// with concurrent changes to the same directory (group commit), or nothing on a volume
/// exported `async`.
fn durable_dir(dir: &Object) -> io::Result<()> {
    if dir.volume.options().asynchronous {
        return Ok(());
    }
    shared_fsync(dir, dir.fd.as_fd())
}

/// Fsyncs `fd` (a descriptor of `obj`), sharing the fsync with concurrent changes to the same
/// cached object (see [`crate::commit`]); an uncached object is fsynced alone.
fn shared_fsync(obj: &Object, fd: BorrowedFd<'_>) -> io::Result<()> {
    match &obj.entry {
        Some(entry) => entry.gate.sync(fd),
        None => sys::fsync(fd),
    }
}

/// Fsyncs any object (nothing on an `async` volume): files and directories directly, sharing
/// the fsync with concurrent changes to the same object, special files through their file
/// system.
fn sync_object(obj: &Object) -> io::Result<()> {
    if obj.volume.options().asynchronous {
        return Ok(());
    }
    let attr = getattr(obj)?;
    match attr.kind {
        NodeKind::Regular | NodeKind::Directory => {
            cred::become_root()?;
            // The object's own descriptor may be O_PATH (an uncached new object), which
            // cannot be fsynced.
            let fd = sys::reopen(obj.fd.as_fd(), libc::O_RDONLY | libc::O_NONBLOCK)?;
            shared_fsync(obj, fd.as_fd())
        }
        _ => {
            cred::become_root()?;
            let fd = sys::reopen(obj.volume.root_fd(), libc::O_RDONLY | libc::O_DIRECTORY)?;
            // SAFETY: plain syscall on an open descriptor.
            cvt(unsafe { libc::syncfs(fd.as_raw_fd()) }).map(drop)
        }
    }
}

fn timespec(t: TimeSet) -> libc::timespec {
    match t {
        TimeSet::Keep => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        TimeSet::ServerNow => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_NOW,
        },
        TimeSet::Client(s, ns) => libc::timespec {
            tv_sec: s,
            tv_nsec: i64::from(ns.min(999_999_999)),
        },
    }
}

/// Applies `set` to an object (owner, size, mode, times in that order: a chown and a
/// truncation by anyone but root clear set-id bits, so the mode comes after them, as knfsd
/// changes the size before the other attributes) and makes the change durable.
pub fn setattr(obj: &Object, id: &Identity, set: &SetAttr) -> io::Result<()> {
    check_writable(obj)?;
    let attr = getattr(obj)?;
    cred::become_identity(id)?;
    let path = sys::proc_path(obj.fd.as_fd());
    if set.uid.is_some() || set.gid.is_some() {
        // SAFETY: valid fd and empty path with AT_EMPTY_PATH.
        cvt(unsafe {
            libc::fchownat(
                obj.fd.as_raw_fd(),
                c"".as_ptr(),
                set.uid.unwrap_or(u32::MAX),
                set.gid.unwrap_or(u32::MAX),
                libc::AT_EMPTY_PATH,
            )
        })?;
    }
    if let Some(size) = set.size {
        match attr.kind {
            NodeKind::Regular => {}
            NodeKind::Directory => return Err(errno(libc::EISDIR)),
            _ => return Err(errno(libc::EINVAL)),
        }
        let size = i64::try_from(size).map_err(|_| errno(libc::EFBIG))?;
        let _measured = alloc_lock(obj);
        let (fd, before) = open_for_io(obj, id, true)?;
        if size as u64 > before.size {
            check_space(obj)?;
        }
        // SAFETY: plain syscall on an open descriptor.
        cvt(unsafe { libc::ftruncate(fd.as_raw_fd(), size) })?;
        if let Ok(st) = sys::fstatat(fd.as_fd(), c"") {
            let q = &obj.volume.quota;
            q.charge(quota::growth(before.used, quota::allocated(&st)));
        }
    }
    if let Some(mode) = set.mode
        && attr.kind != NodeKind::Symlink
    {
        // SAFETY: valid C string.
        cvt(unsafe { libc::chmod(path.as_ptr(), (mode & 0o7777) as libc::mode_t) })?;
    }
    if set.atime != TimeSet::Keep || set.mtime != TimeSet::Keep {
        let times = [timespec(set.atime), timespec(set.mtime)];
        // SAFETY: valid C string and two timespecs.
        cvt(unsafe { libc::utimensat(libc::AT_FDCWD, path.as_ptr(), times.as_ptr(), 0) })?;
    }
    sync_object(obj)
}

/// The result of creating something: its handle and attributes.
pub type Created = (Vec<u8>, Attr);

/// Finishes a creating call: charges the new object and the directory's growth since
/// `dir_before`, makes the entry durable, and returns its handle and attributes.
/// `dir_before` is `None` when the object already existed (a retransmitted or unchecked
/// create), which charges nothing.
fn created(
    store: &ExportStore,
    dir: &Object,
    name: &CStr,
    dir_before: Option<u64>,
) -> io::Result<Created> {
    let fd = sys::openat(dir.fd.as_fd(), name, libc::O_PATH | libc::O_NOFOLLOW, 0)?;
    let st = sys::fstatat(fd.as_fd(), c"")?;
    if let Some(before) = dir_before {
        let grown = quota::growth(before, dir_used(dir));
        dir.volume
            .quota
            .charge(grown + quota::growth(0, quota::allocated(&st)));
    }
    durable_dir(dir)?;
    let handle = store.handle_of(&dir.volume, fd.as_fd(), c"")?;
    // What follows a create (GETATTR, SETATTR, WRITE) finds the new file open.
    store.remember(&handle, fd, &st);
    Ok((handle, Attr::from_stat(&st, dir.volume.id() as u64)))
}

/// Refuses, before anything is created, initial attributes the caller could not set
/// afterwards: an owner other than itself, or a group it is not in (unless root).
fn precheck_initial(id: &Identity, set: &SetAttr) -> io::Result<()> {
    let foreign_uid = set.uid.is_some_and(|u| u != id.uid);
    let foreign_gid = set.gid.is_some_and(|g| !id.in_group(g));
    if !id.is_root() && (foreign_uid || foreign_gid) {
        return Err(errno(libc::EPERM));
    }
    Ok(())
}

/// Applies the attributes a creating call carried to the new object `name` in `dir`; if
/// that fails, the new object is removed again so a failed call leaves nothing behind.
fn apply_initial(dir: &Object, name: &CStr, id: &Identity, set: &SetAttr) -> io::Result<()> {
    let rest = SetAttr { mode: None, ..*set };
    if rest == SetAttr::default() {
        return Ok(());
    }
    let applied = sys::openat(dir.fd.as_fd(), name, libc::O_PATH | libc::O_NOFOLLOW, 0)
        .and_then(|fd| setattr(&Object::uncached(dir.volume.clone(), fd), id, &rest));
    if let Err(e) = applied {
        let is_dir = sys::fstatat(dir.fd.as_fd(), name)
            .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR);
        let flags = if is_dir { libc::AT_REMOVEDIR } else { 0 };
        // SAFETY: valid fd and C string.
        unsafe { libc::unlinkat(dir.fd.as_raw_fd(), name.as_ptr(), flags) };
        return Err(e);
    }
    Ok(())
}

/// CREATE of a regular file. `dir` must be opened for reading (it is fsynced). Also says
/// whether this call made the file (false: an UNCHECKED create or an EXCLUSIVE retransmission
/// found it there).
pub fn create(
    store: &ExportStore,
    dir: &Object,
    name: &[u8],
    id: &Identity,
    how: CreateHow,
) -> io::Result<(Created, bool)> {
    check_writable(dir)?;
    let cname = new_component(name)?;
    if let CreateHow::Unchecked(set) | CreateHow::Guarded(set) = &how {
        precheck_initial(id, set)?;
    }
    check_space(dir)?;
    let (_busy, dir_before) = changing(dir);
    let mut new = true;
    cred::become_identity(id)?;
    let mode = |set: &SetAttr| set.mode.unwrap_or(0o644) & 0o7777;
    // A new file is empty: truncating it to 0 would change nothing but clear the set-id bits
    // its mode just gave it.
    let fresh = |set: &SetAttr| SetAttr {
        size: set.size.filter(|n| *n != 0),
        ..*set
    };
    // SAFETY (all mknodat calls): valid fd and C string.
    match how {
        CreateHow::Unchecked(set) => {
            let r = cvt(unsafe {
                libc::mknodat(
                    dir.fd.as_raw_fd(),
                    cname.as_ptr(),
                    libc::S_IFREG | mode(&set),
                    0,
                )
            });
            match r {
                Ok(_) => apply_initial(dir, &cname, id, &fresh(&set))?,
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                    // An existing file is kept; only a requested size applies (RFC 1813).
                    new = false;
                    let st = sys::fstatat(dir.fd.as_fd(), &cname)?;
                    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
                        return Err(e);
                    }
                    if set.size.is_some() {
                        // Not through apply_initial: a failure must not remove a file this
                        // call did not make.
                        let size_only = SetAttr {
                            size: set.size,
                            ..SetAttr::default()
                        };
                        let fd = sys::openat(
                            dir.fd.as_fd(),
                            &cname,
                            libc::O_PATH | libc::O_NOFOLLOW,
                            0,
                        )?;
                        setattr(&Object::uncached(dir.volume.clone(), fd), id, &size_only)?;
                    }
                }
                Err(e) => return Err(e),
            }
        }
        CreateHow::Guarded(set) => {
            cvt(unsafe {
                libc::mknodat(
                    dir.fd.as_raw_fd(),
                    cname.as_ptr(),
                    libc::S_IFREG | mode(&set),
                    0,
                )
            })?;
            apply_initial(dir, &cname, id, &fresh(&set))?;
        }
        CreateHow::Exclusive(verf) => {
            let (a, m) = (
                u32::from_be_bytes([verf[0], verf[1], verf[2], verf[3]]),
                u32::from_be_bytes([verf[4], verf[5], verf[6], verf[7]]),
            );
            let r =
                cvt(unsafe { libc::mknodat(dir.fd.as_raw_fd(), cname.as_ptr(), libc::S_IFREG, 0) });
            match r {
                Ok(_) => {
                    let times = [
                        timespec(TimeSet::Client(i64::from(a), 0)),
                        timespec(TimeSet::Client(i64::from(m), 0)),
                    ];
                    // SAFETY: valid fd, C string and two timespecs.
                    cvt(unsafe {
                        libc::utimensat(
                            dir.fd.as_raw_fd(),
                            cname.as_ptr(),
                            times.as_ptr(),
                            libc::AT_SYMLINK_NOFOLLOW,
                        )
                    })?;
                }
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                    new = false;
                    let st = sys::fstatat(dir.fd.as_fd(), &cname)?;
                    let same = st.st_mode & libc::S_IFMT == libc::S_IFREG
                        && st.st_atime == i64::from(a)
                        && st.st_mtime == i64::from(m);
                    if !same {
                        return Err(e);
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
    created(store, dir, &cname, new.then_some(dir_before)).map(|c| (c, new))
}

/// MKDIR. `dir` must be opened for reading.
pub fn mkdir(
    store: &ExportStore,
    dir: &Object,
    name: &[u8],
    id: &Identity,
    set: &SetAttr,
) -> io::Result<Created> {
    check_writable(dir)?;
    let cname = new_component(name)?;
    precheck_initial(id, set)?;
    check_space(dir)?;
    let (_busy, dir_before) = changing(dir);
    cred::become_identity(id)?;
    let mode = set.mode.unwrap_or(0o755) & 0o7777;
    // SAFETY: valid fd and C string.
    cvt(unsafe { libc::mkdirat(dir.fd.as_raw_fd(), cname.as_ptr(), mode) })?;
    apply_initial(dir, &cname, id, set)?;
    created(store, dir, &cname, Some(dir_before))
}

/// SYMLINK. `dir` must be opened for reading.
pub fn symlink(
    store: &ExportStore,
    dir: &Object,
    name: &[u8],
    id: &Identity,
    target: &[u8],
) -> io::Result<Created> {
    check_writable(dir)?;
    let cname = new_component(name)?;
    if target.len() >= libc::PATH_MAX as usize {
        return Err(errno(libc::ENAMETOOLONG));
    }
    let ctarget = CString::new(target).map_err(|_| errno(libc::EINVAL))?;
    check_space(dir)?;
    let (_busy, dir_before) = changing(dir);
    cred::become_identity(id)?;
    // SAFETY: valid fd and C strings.
    cvt(unsafe { libc::symlinkat(ctarget.as_ptr(), dir.fd.as_raw_fd(), cname.as_ptr()) })?;
    created(store, dir, &cname, Some(dir_before))
}

/// MKNOD of FIFOs and sockets; device nodes only for root (the kernel checks CAP_MKNOD).
pub fn mknod(
    store: &ExportStore,
    dir: &Object,
    name: &[u8],
    id: &Identity,
    spec: NodeSpec,
    set: &SetAttr,
) -> io::Result<Created> {
    check_writable(dir)?;
    let cname = new_component(name)?;
    let (kind, dev) = match spec {
        NodeSpec::Fifo => (libc::S_IFIFO, 0),
        NodeSpec::Socket => (libc::S_IFSOCK, 0),
        NodeSpec::Char(ma, mi) => (libc::S_IFCHR, libc::makedev(ma, mi)),
        NodeSpec::Block(ma, mi) => (libc::S_IFBLK, libc::makedev(ma, mi)),
    };
    if matches!(spec, NodeSpec::Char(..) | NodeSpec::Block(..)) && !id.is_root() {
        return Err(errno(libc::EPERM));
    }
    precheck_initial(id, set)?;
    check_space(dir)?;
    let (_busy, dir_before) = changing(dir);
    cred::become_identity(id)?;
    let mode = set.mode.unwrap_or(0o644) & 0o7777;
    // SAFETY: valid fd and C string.
    cvt(unsafe { libc::mknodat(dir.fd.as_raw_fd(), cname.as_ptr(), kind | mode, dev) })?;
    apply_initial(dir, &cname, id, set)?;
    created(store, dir, &cname, Some(dir_before))
}

/// REMOVE (non-directories) or RMDIR (`dir_only`). `dir` must be opened for reading.
pub fn remove(
    store: &ExportStore,
    dir: &Object,
    name: &[u8],
    id: &Identity,
    dir_only: bool,
) -> io::Result<()> {
    check_writable(dir)?;
    let cname = component(name)?;
    if name == b"." {
        return Err(errno(libc::EINVAL));
    }
    if name == b".." {
        return Err(errno(libc::ENOTEMPTY));
    }
    let _busy = dir.volume.quota.begin();
    cred::become_identity(id)?;
    let victim = sys::fstatat(dir.fd.as_fd(), &cname).ok();
    let flags = if dir_only { libc::AT_REMOVEDIR } else { 0 };
    // SAFETY: valid fd and C string.
    let r = cvt(unsafe { libc::unlinkat(dir.fd.as_raw_fd(), cname.as_ptr(), flags) });
    match r {
        // unlink(2) of a directory says EISDIR; NFS wants the same.
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Err(errno(libc::ENOTEMPTY)),
        Err(e) => Err(e),
        Ok(_) => {
            if let Some(st) = victim {
                store.forget_inode(st.st_ino);
                released(dir, &st);
            }
            durable_dir(dir)
        }
    }
}

/// Credits the space of an object whose name was just removed, if that was its last link
/// (a directory has one for our purpose: hard links to directories do not exist).
fn released(dir: &Object, st: &libc::stat) {
    let is_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
    if is_dir || st.st_nlink <= 1 {
        dir.volume
            .quota
            .charge(quota::growth(quota::allocated(st), 0));
    }
}

/// RENAME within one volume. Both directories must be opened for reading.
pub fn rename(
    store: &ExportStore,
    from: &Object,
    from_name: &[u8],
    to: &Object,
    to_name: &[u8],
    id: &Identity,
) -> io::Result<()> {
    check_writable(from)?;
    if from.volume.id() != to.volume.id() {
        return Err(errno(libc::EXDEV));
    }
    let (f, t) = (component(from_name)?, component(to_name)?);
    for n in [from_name, to_name] {
        if n == b"." || n == b".." {
            return Err(errno(libc::EINVAL));
        }
    }
    let (_busy, to_before) = changing(to);
    cred::become_identity(id)?;
    let replaced = sys::fstatat(to.fd.as_fd(), &t).ok();
    // A new name may grow the directory; replacing a file frees space, so it is always allowed.
    if replaced.is_none() {
        check_space(to)?;
    }
    // SAFETY: valid fds and C strings.
    cvt(unsafe {
        libc::renameat(
            from.fd.as_raw_fd(),
            f.as_ptr(),
            to.fd.as_raw_fd(),
            t.as_ptr(),
        )
    })?;
    if let Some(st) = replaced {
        store.forget_inode(st.st_ino);
        // Renaming a name onto itself (or onto another link of the same file) removes nothing.
        let source = sys::fstatat(to.fd.as_fd(), &t).ok();
        if source.is_none_or(|s| s.st_ino != st.st_ino) {
            released(to, &st);
        }
    }
    to.volume
        .quota
        .charge(quota::growth(to_before, dir_used(to)));
    durable_dir(to)?;
    if from.fd.as_raw_fd() != to.fd.as_raw_fd() {
        durable_dir(from)?;
    }
    Ok(())
}

/// LINK `obj` as `name` in `dir` (same volume). `dir` must be opened for reading.
pub fn link(obj: &Object, dir: &Object, name: &[u8], id: &Identity) -> io::Result<()> {
    check_writable(dir)?;
    if obj.volume.id() != dir.volume.id() {
        return Err(errno(libc::EXDEV));
    }
    let cname = new_component(name)?;
    if getattr(obj)?.kind == NodeKind::Directory {
        return Err(errno(libc::EISDIR));
    }
    check_space(dir)?;
    let (_busy, dir_before) = changing(dir);
    cred::become_identity(id)?;
    let src = sys::proc_path(obj.fd.as_fd());
    // SAFETY: valid C strings and fd.
    cvt(unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            src.as_ptr(),
            dir.fd.as_raw_fd(),
            cname.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    })?;
    dir.volume
        .quota
        .charge(quota::growth(dir_before, dir_used(dir)));
    durable_dir(dir)
}

/// Lists `dir` from `cookie` (0: the start). `take` is offered each entry in order and
/// returns false to stop before it; the result says whether the end was reached.
pub fn readdir(
    dir: &Object,
    id: &Identity,
    cookie: u64,
    mut take: impl FnMut(&OwnedFd, DirEntry) -> io::Result<bool>,
) -> io::Result<bool> {
    cred::become_identity(id)?;
    let fd = sys::reopen(dir.fd.as_fd(), libc::O_RDONLY | libc::O_DIRECTORY)?;
    if cookie != 0 {
        // SAFETY: plain syscall on an open descriptor.
        let r = unsafe { libc::lseek(fd.as_raw_fd(), cookie as libc::off_t, libc::SEEK_SET) };
        if r < 0 {
            return Err(errno(libc::EINVAL));
        }
    }
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = sys::getdents(fd.as_fd(), &mut buf)?;
        if n == 0 {
            return Ok(true);
        }
        let mut pos = 0;
        while pos + 19 <= n {
            let ino = u64::from_ne_bytes(buf[pos..pos + 8].try_into().unwrap_or([0; 8]));
            let off = u64::from_ne_bytes(buf[pos + 8..pos + 16].try_into().unwrap_or([0; 8]));
            let reclen = u16::from_ne_bytes([buf[pos + 16], buf[pos + 17]]) as usize;
            if reclen == 0 || pos + reclen > n {
                break;
            }
            let name_bytes = &buf[pos + 19..pos + reclen];
            let len = name_bytes
                .iter()
                .position(|&b| b == 0)
                .unwrap_or(name_bytes.len());
            let entry = DirEntry {
                name: name_bytes[..len].to_vec(),
                fileid: ino,
                cookie: off,
            };
            if !take(&fd, entry)? {
                return Ok(false);
            }
            pos += reclen;
        }
    }
}

/// READDIRPLUS helper: handle and attributes of an entry listed in `dir` (None for `.`, `..`
/// and entries that vanished meanwhile).
pub fn entry_details(
    store: &ExportStore,
    dir: &Object,
    listing: BorrowedFd<'_>,
    name: &[u8],
) -> Option<Created> {
    if name == b"." || name == b".." {
        return None;
    }
    let cname = CString::new(name).ok()?;
    let st = sys::fstatat(listing, &cname).ok()?;
    let handle = store.handle_of(&dir.volume, listing, &cname).ok()?;
    Some((handle, Attr::from_stat(&st, dir.volume.id() as u64)))
}

/// FSSTAT: total, free and available space and files. With a size limit the volume is its
/// own file system to clients: total = its size, free = what is left of it (or of the disk,
/// if less), so `df` on a client shows the claim.
pub fn fsstat(obj: &Object) -> io::Result<libc::statvfs> {
    // SAFETY: zeroed statvfs is a valid out-parameter; fstatvfs accepts O_PATH descriptors.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    cvt(unsafe { libc::fstatvfs(obj.fd.as_raw_fd(), &mut s) })?;
    let q = &obj.volume.quota;
    if let Some(limit) = q.limit() {
        let unit = (s.f_frsize as u64).max(1);
        let left = q.available() / unit;
        s.f_blocks = (limit / unit) as libc::fsblkcnt_t;
        s.f_bfree = (s.f_bfree as u64).min(left) as libc::fsblkcnt_t;
        s.f_bavail = (s.f_bavail as u64).min(left) as libc::fsblkcnt_t;
    }
    Ok(s)
}

/// Borrow helper for callers that hold an [`Object`].
pub fn fd_of(obj: &Object) -> BorrowedFd<'_> {
    obj.fd.as_fd()
}

/// ALLOCATE / DEALLOCATE (NFSv4.2): reserves space for, or punches a hole in, a range of a
/// regular file (the size does not change when punching).
pub fn allocate(obj: &Object, id: &Identity, offset: u64, len: u64, punch: bool) -> io::Result<()> {
    check_writable(obj)?;
    let off = i64::try_from(offset).map_err(|_| errno(libc::EFBIG))?;
    let ilen = i64::try_from(len).map_err(|_| errno(libc::EFBIG))?;
    let _measured = alloc_lock(obj);
    let (fd, before) = open_for_io(obj, id, true)?;
    let quota = &obj.volume.quota;
    let reserved = if punch { 0 } else { quota.reserve(len) };
    if !punch && reserved < len {
        quota.settle(reserved, 0);
        return Err(errno(libc::EDQUOT));
    }
    let mode = if punch {
        libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE
    } else {
        0
    };
    // SAFETY: plain syscall on an open descriptor.
    let r = cvt(unsafe { libc::fallocate(fd.as_raw_fd(), mode, off, ilen) });
    let after = sys::fstatat(fd.as_fd(), c"");
    let used = after.as_ref().map_or(before.used, quota::allocated);
    quota.settle(reserved, quota::growth(before.used, used));
    r?;
    // Each file system decides whether fallocate clears set-id bits (ext4, xfs and btrfs
    // do, as for a write); where one does not, they are cleared here.
    let after = Attr::from_stat(&after?, obj.volume.id() as u64);
    let kill = set_id_bits_to_clear(&after, id);
    if kill != 0 {
        cred::become_root()?;
        // SAFETY: plain syscall on an open descriptor.
        let r = cvt(unsafe { libc::fchmod(fd.as_raw_fd(), (after.mode & !kill) as libc::mode_t) });
        cred::become_identity(id)?;
        r?;
    }
    Ok(())
}

/// The set-id bits that a change of a file's data by `id` clears on Linux
/// (`setattr_should_drop_suidgid`): none for root (`CAP_FSETID`) or for anything but a
/// regular file; else setuid, and setgid when group-exec is set or `id` is not in the
/// file's group.
fn set_id_bits_to_clear(attr: &Attr, id: &Identity) -> u32 {
    if id.is_root() || attr.kind != NodeKind::Regular {
        return 0;
    }
    let mut kill = attr.mode & libc::S_ISUID;
    if attr.mode & libc::S_ISGID != 0 && (attr.mode & libc::S_IXGRP != 0 || !id.in_group(attr.gid))
    {
        kill |= libc::S_ISGID;
    }
    kill
}

/// SEEK (NFSv4.2): the next data (or hole) at or after `offset`; `None` past the last one.
pub fn seek(obj: &Object, id: &Identity, offset: u64, hole: bool) -> io::Result<Option<u64>> {
    let (fd, _) = open_for_io(obj, id, false)?;
    let off = i64::try_from(offset).map_err(|_| errno(libc::ENXIO))?;
    let whence = if hole {
        libc::SEEK_HOLE
    } else {
        libc::SEEK_DATA
    };
    // SAFETY: plain syscall on an open descriptor.
    let r = unsafe { libc::lseek(fd.as_raw_fd(), off, whence) };
    if r < 0 {
        let e = io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::ENXIO) {
            Ok(None)
        } else {
            Err(e)
        };
    }
    Ok(Some(r as u64))
}

/// The attributes of `name` in `dir` as the caller sees them, without minting a handle (a
/// cheaper LOOKUP for callers that only need the type or existence).
pub fn stat_entry(dir: &Object, name: &[u8], id: &Identity) -> io::Result<Attr> {
    let cname = component(name)?;
    cred::become_identity(id)?;
    let st = sys::fstatat(dir.fd.as_fd(), &cname)?;
    Ok(Attr::from_stat(&st, dir.volume.id() as u64))
}

// ---------------------------------------------------------------------------------------
// Extended attributes in the `user.` namespace (NFSv4.2 xattrs, RFC 8276).
//
// Clients name them without the prefix; here they are `user.NAME`. Only regular files and
// directories have them (as on Linux, whose answers for other types are kept: reading finds
// nothing, writing is not permitted). The kernel checks the caller's permission: reading
// needs read access, changing needs write access, listing needs none.

/// Largest value of an extended attribute (Linux's `XATTR_SIZE_MAX`).
pub const XATTR_SIZE_MAX: usize = 64 * 1024;
/// Largest list of names `listxattr` returns (Linux's `XATTR_LIST_MAX`).
const XATTR_LIST_MAX: usize = 64 * 1024;
const USER_PREFIX: &[u8] = b"user.";
/// Longest name a client may use: Linux's 255 bytes (`XATTR_NAME_MAX`) count the prefix.
pub const XATTR_NAME_MAX: usize = 255 - USER_PREFIX.len();

/// How SETXATTR treats an existing (or missing) attribute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XattrSet {
    /// Create or replace.
    Either,
    /// Only create: `EEXIST` if it exists.
    Create,
    /// Only replace: `ENODATA` if it does not exist.
    Replace,
}

/// `user.NAME` as a C string: `EINVAL` for an empty name or one with a NUL,
/// `ENAMETOOLONG` past [`XATTR_NAME_MAX`].
fn user_xattr(name: &[u8]) -> io::Result<CString> {
    if name.is_empty() {
        return Err(errno(libc::EINVAL));
    }
    if name.len() > XATTR_NAME_MAX {
        return Err(errno(libc::ENAMETOOLONG));
    }
    CString::new([USER_PREFIX, name].concat()).map_err(|_| errno(libc::EINVAL))
}

fn has_xattrs(kind: NodeKind) -> bool {
    matches!(kind, NodeKind::Regular | NodeKind::Directory)
}

fn cvt_size(ret: isize) -> io::Result<usize> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

/// Whether the volume's file system keeps `user.` attributes (asked once per volume).
pub fn xattr_support(obj: &Object) -> bool {
    *obj.volume.xattrs.get_or_init(|| {
        if cred::become_root().is_err() {
            return true;
        }
        let path = sys::proc_path(obj.volume.root_fd());
        // SAFETY: valid C strings; a null buffer of size 0 only asks for the size.
        let r = unsafe {
            libc::getxattr(
                path.as_ptr(),
                c"user.nfs-server-provisioner.probe".as_ptr(),
                std::ptr::null_mut(),
                0,
            )
        };
        r >= 0 || io::Error::last_os_error().raw_os_error() != Some(libc::EOPNOTSUPP)
    })
}

/// GETXATTR: the value of `user.NAME` (`ENODATA` if there is none).
pub fn getxattr(obj: &Object, id: &Identity, name: &[u8]) -> io::Result<Vec<u8>> {
    let cname = user_xattr(name)?;
    if !has_xattrs(getattr(obj)?.kind) {
        return Err(errno(libc::ENODATA));
    }
    cred::become_identity(id)?;
    let path = sys::proc_path(obj.fd.as_fd());
    let mut value = vec![0u8; XATTR_SIZE_MAX];
    // SAFETY: valid C strings; the buffer is writable for its length.
    let n = cvt_size(unsafe {
        libc::getxattr(
            path.as_ptr(),
            cname.as_ptr(),
            value.as_mut_ptr().cast(),
            value.len(),
        )
    })?;
    value.truncate(n);
    Ok(value)
}

/// LISTXATTRS: the names of the object's `user.` attributes, without the prefix, in the
/// file system's order.
pub fn listxattr(obj: &Object, id: &Identity) -> io::Result<Vec<Vec<u8>>> {
    if !has_xattrs(getattr(obj)?.kind) {
        return Ok(Vec::new());
    }
    cred::become_identity(id)?;
    let path = sys::proc_path(obj.fd.as_fd());
    let mut list = vec![0u8; XATTR_LIST_MAX];
    // SAFETY: valid C string; the buffer is writable for its length.
    let n =
        cvt_size(unsafe { libc::listxattr(path.as_ptr(), list.as_mut_ptr().cast(), list.len()) })?;
    Ok(list[..n]
        .split(|b| *b == 0)
        .filter_map(|name| name.strip_prefix(USER_PREFIX))
        .filter(|name| !name.is_empty())
        .map(<[u8]>::to_vec)
        .collect())
}

/// SETXATTR: sets `user.NAME` to `value` as `how` says, and makes it durable. The bytes the
/// file system allocates for it count against the volume's size: the value's length must
/// still fit (else `EDQUOT`), and the object's allocation after the change is what is
/// charged. Returns the attributes before and after.
pub fn setxattr(
    obj: &Object,
    id: &Identity,
    name: &[u8],
    value: &[u8],
    how: XattrSet,
) -> io::Result<(Attr, Attr)> {
    check_writable(obj)?;
    let cname = user_xattr(name)?;
    if value.len() > XATTR_SIZE_MAX {
        return Err(errno(libc::E2BIG));
    }
    let _measured = alloc_lock(obj);
    let before = getattr(obj)?;
    if !has_xattrs(before.kind) {
        return Err(errno(libc::EPERM));
    }
    let quota = &obj.volume.quota;
    let want = (name.len() + value.len()) as u64;
    let reserved = quota.reserve(want);
    if reserved < want {
        quota.settle(reserved, 0);
        return Err(errno(libc::EDQUOT));
    }
    let flags = match how {
        XattrSet::Either => 0,
        XattrSet::Create => libc::XATTR_CREATE,
        XattrSet::Replace => libc::XATTR_REPLACE,
    };
    let set = cred::become_identity(id).and_then(|()| {
        let path = sys::proc_path(obj.fd.as_fd());
        // SAFETY: valid C strings; the value is readable for its length.
        cvt(unsafe {
            libc::setxattr(
                path.as_ptr(),
                cname.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                flags,
            )
        })
    });
    let after = getattr(obj);
    quota.settle(
        reserved,
        after
            .as_ref()
            .map_or(0, |a| quota::growth(before.used, a.used)),
    );
    set?;
    sync_object(obj)?;
    Ok((before, after?))
}

/// REMOVEXATTR: removes `user.NAME` (`ENODATA` if there is none) and makes it durable; the
/// allocation it frees is credited to the volume. Returns the attributes before and after.
pub fn removexattr(obj: &Object, id: &Identity, name: &[u8]) -> io::Result<(Attr, Attr)> {
    check_writable(obj)?;
    let cname = user_xattr(name)?;
    let _measured = alloc_lock(obj);
    let before = getattr(obj)?;
    if !has_xattrs(before.kind) {
        return Err(errno(libc::EPERM));
    }
    cred::become_identity(id)?;
    let path = sys::proc_path(obj.fd.as_fd());
    // SAFETY: valid C strings.
    cvt(unsafe { libc::removexattr(path.as_ptr(), cname.as_ptr()) })?;
    let after = getattr(obj)?;
    obj.volume
        .quota
        .charge(quota::growth(before.used, after.used));
    sync_object(obj)?;
    Ok((before, after))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_id_bits_cleared_by_a_data_change_follow_linux() {
        let attr = |kind: u32, mode: u32| {
            // SAFETY: a zeroed stat is a valid value of the plain C struct.
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            st.st_mode = kind | mode;
            st.st_gid = 50;
            Attr::from_stat(&st, 1)
        };
        let file = |mode| attr(libc::S_IFREG, mode);
        let user = Identity {
            uid: 1000,
            gid: 1000,
            groups: vec![],
        };
        let member = Identity {
            groups: vec![50],
            ..user.clone()
        };
        assert_eq!(set_id_bits_to_clear(&file(0o6755), &user), 0o6000);
        assert_eq!(set_id_bits_to_clear(&file(0o4644), &member), 0o4000);
        // Setgid without group-exec stays for a member of the file's group only.
        assert_eq!(set_id_bits_to_clear(&file(0o2644), &member), 0);
        assert_eq!(set_id_bits_to_clear(&file(0o2644), &user), 0o2000);
        assert_eq!(set_id_bits_to_clear(&file(0o6755), &Identity::root()), 0);
        let dir = attr(libc::S_IFDIR, 0o6755);
        assert_eq!(set_id_bits_to_clear(&dir, &user), 0);
    }
}

#[cfg(test)]
#[path = "ops_tests.rs"]
mod ops_tests;
