//! Per-volume space accounting and hard limits (a volume's size is its claim's request).
//!
//! Every change to a volume's files goes through this server, so the server keeps the count
//! itself: bytes allocated on disk (`st_blocks`, so sparse files count what they really use
//! and a hard-linked file counts once), measured by walking the volume when it is opened
//! (start-up, or when it is added) and then moved by each operation by the difference it made.
//! This works on any file system and needs no privileges. A write that would pass the limit is
//! cut short at the limit; once nothing is left, writes and new names get `EDQUOT`.
//!
//! Files changed beside the server (an administrator copying into the export root) are counted
//! by a periodic recount ([`Quota::recount`]): a new walk, or where the file system has project
//! quotas on ([`crate::projquota`], which then enforces the same limit behind this count), the
//! kernel's own figure. A recount only lands on a volume nothing changed while it was taken.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// No limit set.
const UNLIMITED: u64 = u64::MAX;

/// How a server enforces volume sizes (reported at start and by `status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The server's own count, on any file system.
    Accounting,
    /// Kernel project quotas on this file system type, behind the server's count.
    Kernel(&'static str),
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mode::Accounting => f.write_str("accounting"),
            Mode::Kernel(fs) => write!(f, "kernel project quotas ({fs})"),
        }
    }
}

/// One volume's usage and limit, shared by every handle of the volume.
#[derive(Debug)]
pub struct Quota {
    limit: AtomicU64,
    used: AtomicU64,
    /// Operations in progress that may change the volume's allocation ([`Quota::begin`]).
    busy: AtomicU64,
    /// Bumped when such an operation begins and ends, so a recount can tell that none ran
    /// while it measured.
    changes: AtomicU64,
}

/// An operation in progress on a volume's allocation; ends when dropped.
#[must_use]
pub struct Busy<'a>(&'a Quota);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.changes.fetch_add(1, Ordering::SeqCst);
        self.0.busy.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Quota {
    pub fn new(limit: Option<u64>, used: u64) -> Self {
        Self {
            limit: AtomicU64::new(limit.unwrap_or(UNLIMITED)),
            used: AtomicU64::new(used),
            busy: AtomicU64::new(0),
            changes: AtomicU64::new(0),
        }
    }

    /// The hard limit in bytes, if any.
    pub fn limit(&self) -> Option<u64> {
        Some(self.limit.load(Ordering::Relaxed)).filter(|&l| l != UNLIMITED)
    }

    pub fn set_limit(&self, limit: Option<u64>) {
        self.limit
            .store(limit.unwrap_or(UNLIMITED), Ordering::Relaxed);
    }

    /// Bytes allocated by the volume's files (including reservations of writes in progress).
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Bytes left before the limit (`u64::MAX` without one).
    pub fn available(&self) -> u64 {
        match self.limit() {
            Some(l) => l.saturating_sub(self.used()),
            None => u64::MAX,
        }
    }

    /// Whether nothing more may be allocated.
    pub fn is_full(&self) -> bool {
        self.limit().is_some_and(|l| self.used() >= l)
    }

    /// Reserves up to `want` bytes for an allocation about to happen and returns how many
    /// were granted: all of them without a limit, fewer near it, 0 when the volume is full.
    /// Concurrent writers reserve from the same counter, so together they cannot pass the
    /// limit by more than the block rounding of their writes.
    pub fn reserve(&self, want: u64) -> u64 {
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            let grant = match self.limit() {
                Some(l) => want.min(l.saturating_sub(used)),
                None => want,
            };
            if grant == 0 {
                return 0;
            }
            match self.used.compare_exchange_weak(
                used,
                used.saturating_add(grant),
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return grant,
                Err(now) => used = now,
            }
        }
    }

    /// Settles a reservation: `reserved` bytes are given back and the allocation's real
    /// change, `delta`, is charged instead.
    pub fn settle(&self, reserved: u64, delta: i64) {
        let _ = self
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                Some(apply(u.saturating_sub(reserved), delta))
            });
    }

    /// Marks the start of an operation that may change the volume's allocation (its
    /// reservations and charges happen while the returned guard lives), so that no recount
    /// lands while the disk and the count disagree.
    pub fn begin(&self) -> Busy<'_> {
        self.busy.fetch_add(1, Ordering::SeqCst);
        self.changes.fetch_add(1, Ordering::SeqCst);
        Busy(self)
    }

    /// A mark to take before measuring the volume, for [`Quota::recount`].
    pub fn mark(&self) -> u64 {
        self.changes.load(Ordering::SeqCst)
    }

    /// Sets the count to `measured` (a walk, or the kernel's figure, taken after
    /// [`Quota::mark`] returned `mark`) if no operation ran since and none is running;
    /// returns whether it did.
    pub fn recount(&self, measured: u64, mark: u64) -> bool {
        // A changed `used` makes the exchange retry and check again: an operation that
        // began meanwhile is seen.
        self.used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |_| {
                let idle = self.busy.load(Ordering::SeqCst) == 0
                    && self.changes.load(Ordering::SeqCst) == mark;
                idle.then_some(measured)
            })
            .is_ok()
    }

    /// Charges (or, negative, credits) a change in allocated bytes.
    pub fn charge(&self, delta: i64) {
        self.settle(0, delta);
    }
}

fn apply(used: u64, delta: i64) -> u64 {
    if delta >= 0 {
        used.saturating_add(delta as u64)
    } else {
        used.saturating_sub(delta.unsigned_abs())
    }
}

/// Bytes allocated on disk for a `stat` result.
pub fn allocated(st: &libc::stat) -> u64 {
    (st.st_blocks as u64).saturating_mul(512)
}

/// The difference in allocation between two `stat`s of one object.
pub fn growth(before: u64, after: u64) -> i64 {
    (after as i128 - before as i128).clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

/// Usage of a volume directory: bytes allocated by everything under it (the directory
/// itself included), each inode once, without following symbolic links or leaving the file
/// system. Also returns the number of inodes.
pub fn measure(dir: &Path) -> io::Result<(u64, u64)> {
    let top = fs::symlink_metadata(dir)?;
    let dev = top.dev();
    let mut seen_links = HashSet::new();
    let mut bytes = top.blocks() * 512;
    let mut inodes = 1u64;
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let entries = match fs::read_dir(&d) {
            Ok(e) => e,
            // A directory removed while we walk: nothing to count.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let Ok(md) = entry.metadata() else { continue };
            if md.dev() != dev {
                continue;
            }
            if md.nlink() > 1 && !md.is_dir() && !seen_links.insert(md.ino()) {
                continue;
            }
            bytes += md.blocks() * 512;
            inodes += 1;
            if md.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    Ok((bytes, inodes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_stop_at_the_limit() {
        let q = Quota::new(Some(10_000), 4_000);
        assert_eq!(q.reserve(5_000), 5_000);
        assert_eq!(q.reserve(5_000), 1_000, "cut short at the limit");
        assert_eq!(q.reserve(1), 0);
        assert!(q.is_full());
        // The first write allocated only 4096 of its 5000.
        q.settle(5_000, 4_096);
        assert_eq!(q.used(), 4_000 + 1_000 + 4_096);
        q.charge(-4_096);
        assert_eq!(q.available(), 10_000 - 5_000);
        q.settle(1_000, 0);
        let mark = q.mark();
        drop(q.begin());
        assert!(
            !q.recount(1, mark),
            "an operation since the mark: no recount"
        );
        let mark = q.mark();
        assert!(q.recount(7_000, mark));
        assert_eq!(q.used(), 7_000);
        let busy = q.begin();
        assert!(
            !q.recount(1, q.mark()),
            "an operation in progress: no recount"
        );
        drop(busy);
        assert!(q.recount(8_000, q.mark()));
        assert_eq!(q.used(), 8_000);
        q.set_limit(None);
        assert_eq!(q.reserve(1 << 40), 1 << 40);
        assert_eq!(q.limit(), None);
    }

    #[test]
    fn measure_counts_blocks_once_per_inode_and_skips_holes() {
        let d = tempfile::tempdir().unwrap();
        let empty = measure(d.path()).unwrap();
        fs::write(d.path().join("a"), vec![1u8; 100_000]).unwrap();
        fs::hard_link(d.path().join("a"), d.path().join("b")).unwrap();
        let sparse = fs::File::create(d.path().join("sparse")).unwrap();
        sparse.set_len(1 << 30).unwrap();
        fs::create_dir(d.path().join("sub")).unwrap();
        std::os::unix::fs::symlink("/", d.path().join("sub/root")).unwrap();
        let (bytes, inodes) = measure(d.path()).unwrap();
        let a = fs::metadata(d.path().join("a")).unwrap().blocks() * 512;
        let sub = fs::metadata(d.path().join("sub")).unwrap().blocks() * 512;
        let link = fs::symlink_metadata(d.path().join("sub/root"))
            .unwrap()
            .blocks()
            * 512;
        assert!(a >= 100_000);
        assert_eq!(bytes, empty.0 + a + sub + link, "hard link once, hole free");
        assert_eq!(inodes, 5);
    }
}
