//! Whether an export root can keep volumes: its data must outlive the pod (not tmpfs, not the
//! container's own overlay root filesystem, not a Kubernetes emptyDir) and its filesystem
//! must give file handles that stay valid across restarts. Checked once at start; the old
//! provisioner lost every volume to an emptyDir `/export`, silently.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::io::AsFd;
use std::path::{Path, PathBuf};

use crate::sys;

const TMPFS_MAGIC: i64 = 0x0102_1994;
const RAMFS_MAGIC: i64 = 0x8584_58f6;
const OVERLAYFS_MAGIC: i64 = 0x794c_7630;

/// What the check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Fit for volumes.
    Persistent,
    /// Its content does not outlive the pod or the machine; the reason says which storage.
    Ephemeral(String),
    /// The filesystem gives no file handles, or none that survive a restart.
    NoPersistentHandles(String),
}

/// One line of `/proc/self/mountinfo` that matters here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Path inside its filesystem that is mounted (a bind mount's source).
    pub root: String,
    pub mount_point: PathBuf,
    pub fs_type: String,
    pub source: String,
}

/// Parses `/proc/self/mountinfo` text (proc(5)); lines it cannot read are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let f: Vec<&str> = left.split(' ').collect();
            let r: Vec<&str> = right.split(' ').collect();
            Some(Mount {
                root: unescape(f.get(3)?),
                mount_point: PathBuf::from(unescape(f.get(4)?)),
                fs_type: (*r.first()?).to_owned(),
                source: unescape(r.get(1).unwrap_or(&"")),
            })
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mount that holds `path` (canonical): the last-mounted one with the longest prefix.
pub fn mount_of<'a>(mounts: &'a [Mount], path: &Path) -> Option<&'a Mount> {
    mounts
        .iter()
        .enumerate()
        .filter(|(_, m)| path.starts_with(&m.mount_point))
        .max_by_key(|(i, m)| (m.mount_point.as_os_str().len(), *i))
        .map(|(_, m)| m)
}

/// Judges storage from its mount and filesystem magic, without touching the disk.
pub fn judge(mount: Option<&Mount>, fs_magic: i64) -> Verdict {
    if let Some(m) = mount
        && m.root.contains("kubernetes.io~empty-dir")
    {
        return Verdict::Ephemeral(format!(
            "it is a Kubernetes emptyDir ({}), deleted with the pod",
            m.root
        ));
    }
    match fs_magic {
        TMPFS_MAGIC | RAMFS_MAGIC => Verdict::Ephemeral(
            "it is on tmpfs (memory): gone when the pod or machine restarts".into(),
        ),
        OVERLAYFS_MAGIC => Verdict::Ephemeral(
            "it is on an overlay filesystem, as a container's own root filesystem is: \
             gone when the container is recreated"
                .into(),
        ),
        _ => Verdict::Persistent,
    }
}

/// Checks `root`: persistence of its storage, then that its filesystem hands out file
/// handles (`name_to_handle_at`), which every NFS handle we give is built from.
pub fn check(root: &Path) -> io::Result<Verdict> {
    let root = root.canonicalize()?;
    let c = CString::new(root.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: statfs with a valid path and a zeroed out-struct.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    sys::cvt(unsafe { libc::statfs(c.as_ptr(), &mut st) })?;
    #[allow(clippy::unnecessary_cast)] // f_type's width differs between architectures.
    let magic = st.f_type as i64;
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")
        .map(|t| parse_mountinfo(&t))
        .unwrap_or_default();
    let verdict = judge(mount_of(&mounts, &root), magic);
    if verdict != Verdict::Persistent {
        return Ok(verdict);
    }
    let dir = std::fs::File::open(&root)?;
    match sys::name_to_handle(dir.as_fd(), c"") {
        Ok(_) => Ok(Verdict::Persistent),
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => Ok(Verdict::NoPersistentHandles(
            format!("its filesystem gives no file handles ({e}); use ext4, xfs or btrfs"),
        )),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KUBELET: &str = "\
22 1 0:21 / / rw,relatime - overlay overlay rw,lowerdir=/l,upperdir=/u,workdir=/w
23 22 0:22 / /proc rw - proc proc rw
30 22 8:1 /var/lib/kubelet/pods/6c1/volumes/kubernetes.io~empty-dir/data /export rw,relatime - ext4 /dev/sda1 rw
31 22 8:1 /var/lib/kubelet/pods/6c1/volumes/kubernetes.io~csi/pvc-9/mount /data rw - ext4 /dev/sdb rw
32 22 0:40 / /scratch\\040space rw - tmpfs tmpfs rw
";

    #[test]
    fn an_empty_dir_is_found_from_the_mount_source_not_the_filesystem() {
        let mounts = parse_mountinfo(KUBELET);
        assert_eq!(mounts.len(), 5);
        let m = mount_of(&mounts, Path::new("/export/pvc-1")).unwrap();
        assert_eq!(m.mount_point, Path::new("/export"));
        assert!(matches!(judge(Some(m), 0xef53), Verdict::Ephemeral(r) if r.contains("emptyDir")));
        let pvc = mount_of(&mounts, Path::new("/data")).unwrap();
        assert_eq!(judge(Some(pvc), 0xef53), Verdict::Persistent);
    }

    #[test]
    fn tmpfs_and_the_containers_overlay_root_are_ephemeral() {
        let mounts = parse_mountinfo(KUBELET);
        let root = mount_of(&mounts, Path::new("/srv/export")).unwrap();
        assert_eq!(root.fs_type, "overlay");
        assert!(matches!(
            judge(Some(root), OVERLAYFS_MAGIC),
            Verdict::Ephemeral(_)
        ));
        let scratch = mount_of(&mounts, Path::new("/scratch space/x")).unwrap();
        assert_eq!(scratch.fs_type, "tmpfs");
        assert!(
            matches!(judge(Some(scratch), TMPFS_MAGIC), Verdict::Ephemeral(r) if r.contains("tmpfs"))
        );
    }

    #[test]
    fn a_real_directory_on_this_machine_is_judged() {
        // The temporary directory holds the store tests' volumes, so it gives handles.
        let dir = tempfile::tempdir().unwrap();
        assert!(!matches!(
            check(dir.path()).unwrap(),
            Verdict::NoPersistentHandles(_)
        ));
        // /dev/shm is tmpfs wherever it exists as such.
        let shm_is_tmpfs = std::fs::read_to_string("/proc/self/mountinfo").is_ok_and(|t| {
            parse_mountinfo(&t)
                .iter()
                .any(|m| m.mount_point == Path::new("/dev/shm") && m.fs_type == "tmpfs")
        });
        if shm_is_tmpfs {
            let shm = tempfile::tempdir_in("/dev/shm").unwrap();
            assert!(
                matches!(check(shm.path()).unwrap(), Verdict::Ephemeral(r) if r.contains("tmpfs"))
            );
        }
    }
}
