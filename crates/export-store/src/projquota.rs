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
//! For the kernel to hold the server's own writes to the limit, the threads acting for clients
//! must not carry `CAP_SYS_RESOURCE` (which lets root pass quota limits):
//! [`drop_sys_resource`] takes it out of a thread's effective set.

use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

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
/// `CAP_SYS_ADMIN`: needed to set quota limits.
const CAP_SYS_ADMIN: u32 = 21;

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

/// `struct if_dqinfo` from `<linux/quota.h>`.
#[repr(C)]
#[derive(Default)]
struct DqInfo {
    bgrace: u64,
    igrace: u64,
    flags: u32,
    valid: u32,
}

/// Project quotas of the export root's file system, found on.
#[derive(Debug)]
pub struct ProjectQuotas {
    /// Any descriptor on the file system names it to `quotactl_fd`.
    root: OwnedFd,
    fs_type: &'static str,
}

impl ProjectQuotas {
    /// Whether the file system holding `root` enforces project quotas: `Ok(None)` when it does
    /// not (or the kernel is older than `quotactl_fd`, 5.14), with the reason for the log.
    pub fn detect(root: &Path) -> io::Result<Result<Self, String>> {
        let dir = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY)
            .open(root)?;
        let root = OwnedFd::from(dir);
        let fs_type = fs_type(root.as_fd())?;
        let mut info = DqInfo::default();
        let r = quotactl(
            root.as_fd(),
            libc::Q_GETINFO,
            0,
            (&mut info as *mut DqInfo).cast(),
        );
        Ok(match r {
            Ok(()) if !has_cap(CAP_SYS_ADMIN)? => {
                Err("no CAP_SYS_ADMIN to set quota limits".to_owned())
            }
            Ok(()) => Ok(Self { root, fs_type }),
            Err(e) => Err(match e.raw_os_error() {
                Some(libc::ESRCH) => format!("project quotas are off on this {fs_type}"),
                Some(libc::ENOSYS) => "the kernel has no quotactl_fd (Linux 5.14+)".to_owned(),
                Some(libc::EPERM) => "no CAP_SYS_ADMIN to manage quotas".to_owned(),
                _ => format!("no project quotas on this {fs_type} ({e})"),
            }),
        })
    }

    /// The file system's name for status and logs (`ext4`, `xfs`, ...).
    pub fn fs_type(&self) -> &'static str {
        self.fs_type
    }

    /// Puts the volume directory `dir` (open) into project `id` with the inherit flag. On first
    /// use the files already in it are moved into the project too, so they count.
    pub fn assign(&self, dir: BorrowedFd<'_>, path: &Path, id: u32) -> io::Result<()> {
        let attr = get_xattr(dir)?;
        if attr.projid == id && attr.xflags & PROJINHERIT != 0 {
            return Ok(());
        }
        set_project(dir, id, true)?;
        let dev = fs::metadata(path)?.dev();
        // Files from before (a volume made before this mode, or restored from a backup):
        // every directory and regular file joins the project. Symbolic links and special files
        // cannot be opened to set it; they hold no data blocks that matter.
        let mut stack = vec![path.to_owned()];
        while let Some(d) = stack.pop() {
            for entry in fs::read_dir(&d)? {
                let entry = entry?;
                let Ok(ft) = entry.file_type() else { continue };
                if !(ft.is_dir() || ft.is_file()) || ft.is_fifo() {
                    continue;
                }
                if entry.metadata()?.dev() != dev {
                    continue;
                }
                let f = fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
                    .open(entry.path())?;
                set_project(f.as_fd(), id, ft.is_dir())?;
                if ft.is_dir() {
                    stack.push(entry.path());
                }
            }
        }
        Ok(())
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
fn fs_type(fd: BorrowedFd<'_>) -> io::Result<&'static str> {
    // SAFETY: fstatfs fills the zeroed buffer it is given.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstatfs(fd.as_raw_fd(), &mut st) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(match st.f_type {
        libc::EXT4_SUPER_MAGIC => "ext4",
        libc::XFS_SUPER_MAGIC => "xfs",
        libc::BTRFS_SUPER_MAGIC => "btrfs",
        libc::TMPFS_MAGIC => "tmpfs",
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

/// Whether the calling thread has capability `cap` in its effective set.
fn has_cap(cap: u32) -> io::Result<bool> {
    let (_, data) = capget()?;
    Ok(data[(cap / 32) as usize].effective & (1 << (cap % 32)) != 0)
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
