//! Kernel project quotas: the file system itself enforces each volume's size.
//!
//! Used where the export root's file system has project quotas turned on (ext4 mounted with
//! `prjquota`, xfs with `pquota`/`prjquota`) and the server may set limits (`CAP_SYS_ADMIN`).
//! Each volume directory gets a project id (its volume id) with the inherit flag, so
//! everything created under it is charged to the volume, whoever writes it and whether or not
//! through this server; the volume's size becomes the project's block hard limit and its usage
//! is read back from the kernel. The server's own accounting ([`crate::quota`]) keeps running
//! in front of it (short writes, `df`); the kernel is the limit nothing can step around.
//!
//! For the kernel to hold the server's own writes to the limit on ext4, the server's worker
//! threads must not carry `CAP_SYS_RESOURCE` (with it, root passes ext4 quota limits; xfs holds
//! root to project limits anyway): [`drop_sys_resource`] takes it out of a thread's
//! effective set.

use std::ffi::{CStr, CString};
use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use tracing::warn;

use crate::sys;

/// `PRJQUOTA` from `<linux/quota.h>` (the libc crate has no constant for it).
const PRJQUOTA: libc::c_int = 2;
/// Quota limits are counted in blocks of this many bytes (`QIF_DQBLKSIZE`).
const QUOTA_BLOCK: u64 = 1024;
/// `FS_XFLAG_PROJINHERIT`: new files and directories take the directory's project id.
const PROJINHERIT: u32 = 0x200;
/// `FS_IOC_FSGETXATTR` / `FS_IOC_FSSETXATTR`: `_IOR/_IOW('X', 31/32, struct fsxattr)`.
const FS_IOC_FSGETXATTR: libc::c_ulong = 0x801c_581f;
const FS_IOC_FSSETXATTR: libc::c_ulong = 0x401c_5820;
/// `CAP_SYS_RESOURCE`: passes quota limits (and file-system reserved space).
const CAP_SYS_RESOURCE: u32 = 24;

/// `struct fsxattr` from `<linux/fs.h>`.
#[repr(C)]
#[derive(Default)]
struct FsXattr {
    xflags: u32,
    extsize: u32,
    nextents: u32,
    projid: u32,
    cowextsize: u32,
    pad: [u8; 8],
}

/// `Q_XGETQSTATV` (`XQM_CMD(8)`): quota state, including whether limits are enforced.
const Q_XGETQSTATV: libc::c_int = 0x5808;
/// `FS_QSTATV_VERSION1`, and `FS_QUOTA_PDQ_ACCT` / `FS_QUOTA_PDQ_ENFD` (project usage
/// counted / limits enforced).
const QSTATV_VERSION1: u8 = 1;
const PDQ_ACCT: u16 = 1 << 4;
const PDQ_ENFD: u16 = 1 << 5;

/// Project quotas of the export root's file system, found on and enforced.
#[derive(Debug)]
pub struct ProjectQuotas {
    /// Any descriptor on the file system names it to `quotactl_fd`.
    root: OwnedFd,
    fs_type: &'static str,
}

/// What [`ProjectQuotas::assign`] did not manage, when it could not do it all.
#[derive(Debug)]
pub struct AssignError {
    pub failed: usize,
    pub first: io::Error,
}

impl std::fmt::Display for AssignError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} object(s) not moved into the project: {}",
            self.failed, self.first
        )
    }
}

impl ProjectQuotas {
    /// Whether the file system holding `root` enforces project quota limits and this process
    /// may set them; `Ok(Err(reason))` when not, with the reason for the log.
    pub fn detect(root: &Path) -> io::Result<Result<Self, String>> {
        let dir = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY)
            .open(root)?;
        let root = OwnedFd::from(dir);
        let fs_type = fs_type(root.as_fd())?;
        // `struct fs_quota_statv` is 168 bytes: version at 0, flags (u16) at 2.
        let mut statv = [0u64; 24];
        statv[0] = u64::from(QSTATV_VERSION1).to_le();
        // SAFETY: the buffer is larger than `struct fs_quota_statv` and starts with version 1.
        let state = quotactl(root.as_fd(), Q_XGETQSTATV, 0, statv.as_mut_ptr().cast());
        if let Err(e) = state {
            return Ok(Err(match e.raw_os_error() {
                Some(libc::ESRCH) => format!("project quotas are off on this {fs_type}"),
                Some(libc::ENOSYS) => {
                    format!("no quota support on this {fs_type} (or no quotactl_fd: Linux 5.14+)")
                }
                _ => format!("cannot read the quota state of this {fs_type}: {e}"),
            }));
        }
        let flags = u16::from_ne_bytes([statv[0].to_ne_bytes()[2], statv[0].to_ne_bytes()[3]]);
        if flags & (PDQ_ACCT | PDQ_ENFD) == 0 {
            return Ok(Err(format!("project quotas are off on this {fs_type}")));
        }
        if flags & PDQ_ENFD == 0 {
            return Ok(Err(format!(
                "project quotas are counted but not enforced on this {fs_type} (mount option \
                 prjquota/pquota)"
            )));
        }
        // Reading a project's quota needs the privilege that setting one does
        // (CAP_SYS_ADMIN in the initial user namespace).
        let mut dq = zeroed_dqblk();
        if let Err(e) = quotactl(
            root.as_fd(),
            libc::Q_GETQUOTA,
            0,
            (&mut dq as *mut libc::dqblk).cast(),
        ) {
            return Ok(Err(format!(
                "cannot manage project quotas ({e}): needs CAP_SYS_ADMIN"
            )));
        }
        Ok(Ok(Self { root, fs_type }))
    }

    /// The file system's name for status and logs (`ext4`, `xfs`, ...).
    pub fn fs_type(&self) -> &'static str {
        self.fs_type
    }

    /// Puts the volume directory `dir` into project `id` with the inherit flag, and on first
    /// use (no record in `done`, a file in the state directory) everything already in it, so
    /// it counts. Files are moved by setting their project id; symbolic links and special
    /// files cannot be opened for that, so they are recreated in place (same target or
    /// device, owner, mode and times; a new inode) — left outside they could not be renamed
    /// or linked within the volume (`EXDEV`). The walk goes by descriptor and never follows
    /// a link. Refuses a project id some other user of the file system already has.
    pub fn assign(&self, dir: BorrowedFd<'_>, id: u32, done: &Path) -> Result<(), AssignError> {
        let one = |first: io::Error| AssignError { failed: 1, first };
        let attr = get_xattr(dir).map_err(one)?;
        let marked = attr.projid == id && attr.xflags & PROJINHERIT != 0;
        if marked && done.exists() {
            return Ok(());
        }
        if attr.projid != id {
            let (used, limit) = self.usage(id).map_err(one)?;
            if used > 0 || limit > 0 {
                return Err(one(io::Error::other(format!(
                    "project id {id} is already in use on this file system"
                ))));
            }
        }
        set_project(dir, id, true).map_err(one)?;
        let dev = sys::fstatat(dir, c"").map_err(one)?.st_dev;
        let mut failed = 0;
        let mut first = None;
        let mut note = |e: io::Error| {
            failed += 1;
            first.get_or_insert(e);
        };
        let mut stack = vec![sys::reopen(dir, libc::O_RDONLY | libc::O_DIRECTORY).map_err(one)?];
        while let Some(d) = stack.pop() {
            let names = match list(d.as_fd()) {
                Ok(n) => n,
                Err(e) => {
                    note(e);
                    continue;
                }
            };
            for name in names {
                match move_entry(d.as_fd(), &name, id, dev) {
                    Ok(Some(sub)) => stack.push(sub),
                    Ok(None) => {}
                    // Removed while we walk: nothing to move.
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                    Err(e) => note(e),
                }
            }
        }
        if let Some(first) = first {
            return Err(AssignError { failed, first });
        }
        fs::write(done, format!("{id}\n")).map_err(one)
    }

    /// Sets project `id`'s hard limit (`None`: no limit). Rounded up to whole KiB.
    pub fn set_limit(&self, id: u32, limit: Option<u64>) -> io::Result<()> {
        let mut dq: libc::dqblk = zeroed_dqblk();
        dq.dqb_bhardlimit = limit.map_or(0, |l| l.div_ceil(QUOTA_BLOCK).max(1));
        dq.dqb_bsoftlimit = 0;
        dq.dqb_valid = libc::QIF_BLIMITS;
        quotactl(
            self.root.as_fd(),
            libc::Q_SETQUOTA,
            id,
            (&mut dq as *mut libc::dqblk).cast(),
        )
    }

    /// Bytes the kernel charges to project `id`, and its hard limit in bytes (0: none).
    pub fn usage(&self, id: u32) -> io::Result<(u64, u64)> {
        let mut dq: libc::dqblk = zeroed_dqblk();
        quotactl(
            self.root.as_fd(),
            libc::Q_GETQUOTA,
            id,
            (&mut dq as *mut libc::dqblk).cast(),
        )?;
        Ok((
            dq.dqb_curspace,
            dq.dqb_bhardlimit.saturating_mul(QUOTA_BLOCK),
        ))
    }
}

/// The names in directory `dir` (without `.` and `..`).
fn list(dir: BorrowedFd<'_>) -> io::Result<Vec<CString>> {
    let path = sys::proc_path(dir);
    let mut names = Vec::new();
    for entry in fs::read_dir(std::ffi::OsStr::from_bytes(path.as_bytes()))? {
        let name = entry?.file_name();
        names.push(
            CString::new(name.into_vec())
                .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?,
        );
    }
    Ok(names)
}

/// Moves `name` in `dir` into project `id`; returns a directory to walk next.
fn move_entry(dir: BorrowedFd<'_>, name: &CStr, id: u32, dev: u64) -> io::Result<Option<OwnedFd>> {
    let st = sys::fstatat(dir, name)?;
    if st.st_dev != dev {
        return Ok(None);
    }
    let kind = st.st_mode & libc::S_IFMT;
    if kind == libc::S_IFDIR || kind == libc::S_IFREG {
        let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY;
        let dir_flag = if kind == libc::S_IFDIR {
            libc::O_DIRECTORY
        } else {
            0
        };
        let fd = sys::openat(dir, name, flags | dir_flag, 0)?;
        // Swapped for something else between the stat and the open: leave it.
        let now = sys::fstatat(fd.as_fd(), c"")?;
        if now.st_ino != st.st_ino || now.st_mode & libc::S_IFMT != kind {
            return Ok(None);
        }
        set_project(fd.as_fd(), id, kind == libc::S_IFDIR)?;
        return Ok((kind == libc::S_IFDIR).then_some(fd));
    }
    if st.st_nlink > 1 {
        // Recreating would split the hard link: left outside the project.
        warn!(name = ?name, "a hard-linked special file stays outside the volume's project");
        return Ok(None);
    }
    recreate(dir, name, &st)?;
    Ok(None)
}

/// Recreates a symbolic link or special file in place (the new inode inherits the
/// directory's project), keeping target or device, owner, mode and times.
fn recreate(dir: BorrowedFd<'_>, name: &CStr, st: &libc::stat) -> io::Result<()> {
    let tmp = CString::new(format!(".nsp-project-{}", st.st_ino))
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let d = dir.as_raw_fd();
    // SAFETY: plain syscalls on a valid descriptor and C strings.
    unsafe {
        if st.st_mode & libc::S_IFMT == libc::S_IFLNK {
            let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
            let n = libc::readlinkat(d, name.as_ptr(), buf.as_mut_ptr().cast(), buf.len());
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            buf.truncate(n as usize);
            let target =
                CString::new(buf).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
            sys::cvt(libc::symlinkat(target.as_ptr(), d, tmp.as_ptr()))?;
        } else {
            sys::cvt(libc::mknodat(d, tmp.as_ptr(), st.st_mode, st.st_rdev))?;
            sys::cvt(libc::fchmodat(d, tmp.as_ptr(), st.st_mode & 0o7777, 0))?;
        }
        let done = (|| {
            sys::cvt(libc::fchownat(
                d,
                tmp.as_ptr(),
                st.st_uid,
                st.st_gid,
                libc::AT_SYMLINK_NOFOLLOW,
            ))?;
            let times = [
                libc::timespec {
                    tv_sec: st.st_atime,
                    tv_nsec: st.st_atime_nsec,
                },
                libc::timespec {
                    tv_sec: st.st_mtime,
                    tv_nsec: st.st_mtime_nsec,
                },
            ];
            sys::cvt(libc::utimensat(
                d,
                tmp.as_ptr(),
                times.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            ))?;
            sys::cvt(libc::renameat(d, tmp.as_ptr(), d, name.as_ptr()))
        })();
        if done.is_err() {
            libc::unlinkat(d, tmp.as_ptr(), 0);
        }
        done.map(|_| ())
    }
}

fn zeroed_dqblk() -> libc::dqblk {
    libc::dqblk {
        dqb_bhardlimit: 0,
        dqb_bsoftlimit: 0,
        dqb_curspace: 0,
        dqb_ihardlimit: 0,
        dqb_isoftlimit: 0,
        dqb_curinodes: 0,
        dqb_btime: 0,
        dqb_itime: 0,
        dqb_valid: 0,
    }
}

fn quotactl(
    fs: BorrowedFd<'_>,
    cmd: libc::c_int,
    id: u32,
    addr: *mut libc::c_void,
) -> io::Result<()> {
    // SAFETY: `addr` points at the structure `cmd` reads or fills, alive for the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_quotactl_fd,
            fs.as_raw_fd(),
            libc::QCMD(cmd, PRJQUOTA),
            id,
            addr,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn get_xattr(fd: BorrowedFd<'_>) -> io::Result<FsXattr> {
    let mut attr = FsXattr::default();
    // SAFETY: FS_IOC_FSGETXATTR fills a `struct fsxattr`, which `attr` is.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), FS_IOC_FSGETXATTR, &mut attr as *mut FsXattr) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(attr)
}

fn set_project(fd: BorrowedFd<'_>, id: u32, inherit: bool) -> io::Result<()> {
    let mut attr = get_xattr(fd)?;
    attr.projid = id;
    if inherit {
        attr.xflags |= PROJINHERIT;
    }
    // SAFETY: FS_IOC_FSSETXATTR reads a `struct fsxattr`, which `attr` is.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), FS_IOC_FSSETXATTR, &attr as *const FsXattr) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The file system type of `fd`, by its magic number.
#[allow(clippy::unnecessary_cast)] // the width of f_type and the constants differs between libcs
fn fs_type(fd: BorrowedFd<'_>) -> io::Result<&'static str> {
    // SAFETY: fstatfs fills the zeroed buffer it is given.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstatfs(fd.as_raw_fd(), &mut st) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let magic = st.f_type as i64;
    Ok(match magic {
        m if m == libc::EXT4_SUPER_MAGIC as i64 => "ext4",
        m if m == libc::XFS_SUPER_MAGIC as i64 => "xfs",
        m if m == libc::BTRFS_SUPER_MAGIC as i64 => "btrfs",
        m if m == libc::TMPFS_MAGIC as i64 => "tmpfs",
        _ => "file system",
    })
}

/// `struct __user_cap_header_struct` and `__user_cap_data_struct` (version 3: two of them).
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}
#[repr(C)]
#[derive(Default, Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}
const CAP_VERSION_3: u32 = 0x2008_0522;

/// Takes `CAP_SYS_RESOURCE` out of the calling thread's effective set (capabilities are per
/// thread on Linux), so the kernel's quota limits bind what the thread writes. It stays
/// permitted; nothing here raises it again.
pub fn drop_sys_resource() -> io::Result<()> {
    let (mut header, mut data) = capget()?;
    data[(CAP_SYS_RESOURCE / 32) as usize].effective &= !(1 << (CAP_SYS_RESOURCE % 32));
    // SAFETY: capset reads a version-3 header and two data structs.
    let r = unsafe {
        libc::syscall(
            libc::SYS_capset,
            &mut header as *mut CapHeader,
            data.as_ptr(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn capget() -> io::Result<(CapHeader, [CapData; 2])> {
    let mut header = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget fills a version-3 header's two data structs.
    let r = unsafe {
        libc::syscall(
            libc::SYS_capget,
            &mut header as *mut CapHeader,
            data.as_mut_ptr(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((header, data))
}
