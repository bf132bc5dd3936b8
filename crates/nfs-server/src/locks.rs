//! Byte-range locks shared by every protocol that locks: NFSv4.1 LOCK/LOCKT/LOCKU and NLM v4.
//!
//! One table for both, so a v3 client's fcntl lock and a v4 client's lock on the same file
//! conflict as they would on a local file system. Files are keyed by their persistent handle
//! bytes (one handle per object, the same for v3 and v4). Locks are advisory and kept in
//! memory; after a restart clients reclaim them during the grace period.
//!
//! A conflicting holder may be made to yield: before a request is refused, the table asks
//! its [`Yield`] (the NFSv4 state) whether the holder is a courtesy client, one whose lease
//! ran out and whose state is only kept as a courtesy (RFC 8881 section 8.4.3). Such a
//! holder is expired on the spot and the request tried again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock, Weak};

use tokio::sync::Notify;

/// Who holds a lock. Two owners conflict even when they are the same client.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Owner {
    /// NFSv4: the client id and the opaque lock-owner the client chose.
    V4 { clientid: u64, owner: Vec<u8> },
    /// NLM: the caller's host name, its process id and its opaque owner handle.
    Nlm {
        host: Vec<u8>,
        svid: u32,
        oh: Vec<u8>,
    },
}

impl Owner {
    /// The host part of the owner: v4 locks belong to a client id, NLM locks to a host.
    pub fn is_nlm_host(&self, name: &[u8]) -> bool {
        matches!(self, Owner::Nlm { host, .. } if host == name)
    }
}

/// A lock as held or as found in conflict. `end` is exclusive; `u64::MAX` means "to the end
/// of the file" (offsets beyond 2^64 - 1 do not exist).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lock {
    pub owner: Owner,
    pub start: u64,
    pub end: u64,
    pub write: bool,
}

impl Lock {
    /// A range from an (offset, length) pair where length 0 (NLM) or all-ones (v4) means to
    /// the end of the file.
    pub fn range(offset: u64, length: u64) -> (u64, u64) {
        if length == 0 || length == u64::MAX {
            (offset, u64::MAX)
        } else {
            (offset, offset.saturating_add(length))
        }
    }

    /// The length to report on the wire for this lock (`u64::MAX` for "to the end").
    pub fn length(&self) -> u64 {
        if self.end == u64::MAX {
            u64::MAX
        } else {
            self.end - self.start
        }
    }

    fn overlaps(&self, start: u64, end: u64) -> bool {
        self.start < end && start < self.end
    }
}

/// Lock ranges kept on one file at most: each lock is checked against every range of its
/// file, so a client taking countless small ranges must not make every lock slow.
pub const MAX_RANGES_PER_FILE: usize = 4096;
/// Lock ranges kept at most, all files and owners together (about 100 bytes each).
pub const MAX_RANGES: usize = 262_144;

/// Why a lock was not taken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LockError {
    /// Another owner holds this conflicting lock.
    Conflict(Lock),
    /// The table holds as many ranges as it may (on this file or in all).
    Full,
}

/// Whoever may release a conflicting holder's state instead of refusing a request.
pub trait Yield: Send + Sync {
    /// Releases everything `owner`'s client holds if it may be made to yield (an expired
    /// NFSv4 client kept only as a courtesy); `true` if it did. Called without the table's
    /// lock held.
    fn yield_owner(&self, owner: &Owner) -> bool;
}

/// How many conflicting holders one request may make yield (each is a whole client
/// expired, so this only bounds the work of one request).
const MAX_YIELDS: usize = 8;

/// The lock table.
pub struct LockTable {
    files: Mutex<HashMap<Vec<u8>, Vec<Lock>>>,
    /// Ranges held in all files (changed under the `files` lock).
    ranges: AtomicUsize,
    max_per_file: usize,
    max_ranges: usize,
    released: Notify,
    courtesy: OnceLock<Weak<dyn Yield>>,
}

impl Default for LockTable {
    fn default() -> Self {
        Self::with_limits(MAX_RANGES_PER_FILE, MAX_RANGES)
    }
}

impl LockTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// A table holding at most `per_file` ranges on a file and `total` in all.
    pub fn with_limits(per_file: usize, total: usize) -> Self {
        Self {
            files: Mutex::new(HashMap::new()),
            ranges: AtomicUsize::new(0),
            max_per_file: per_file,
            max_ranges: total,
            released: Notify::new(),
            courtesy: OnceLock::new(),
        }
    }

    /// Sets who is asked to make a conflicting holder yield (once; later calls are ignored).
    pub fn set_yield(&self, y: Weak<dyn Yield>) {
        let _ = self.courtesy.set(y);
    }

    /// Whether the holder of `conflict` was made to yield (its locks are gone).
    fn yielded(&self, conflict: &Lock) -> bool {
        self.courtesy
            .get()
            .and_then(Weak::upgrade)
            .is_some_and(|y| y.yield_owner(&conflict.owner))
    }

    /// Records that a file went from `before` to `after` ranges.
    fn counted(&self, before: usize, after: usize) {
        if after >= before {
            self.ranges.fetch_add(after - before, Ordering::Relaxed);
        } else {
            self.ranges.fetch_sub(before - after, Ordering::Relaxed);
        }
    }

    /// Notified (all waiters) whenever locks are released or downgraded, so blocked lock
    /// requests can retry. Create the `notified()` future and `enable()` it *before* trying
    /// the lock, or a release between the try and the wait is missed.
    pub fn released(&self) -> &Notify {
        &self.released
    }

    fn files(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, Vec<Lock>>> {
        self.files.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The first lock of another owner that conflicts with `want`, if any. A conflicting
    /// holder that yields (see [`Yield`]) is expired rather than reported, so the answer
    /// stays true when the lock is then asked for.
    pub fn test(&self, file: &[u8], want: &Lock) -> Option<Lock> {
        for _ in 0..MAX_YIELDS {
            let found = {
                let files = self.files();
                conflict(files.get(file).map(Vec::as_slice).unwrap_or(&[]), want).cloned()
            };
            match found {
                Some(c) if self.yielded(&c) => continue,
                other => return other,
            }
        }
        let files = self.files();
        conflict(files.get(file).map(Vec::as_slice).unwrap_or(&[]), want).cloned()
    }

    /// Takes `want` unless another owner holds a conflicting lock (returned), or the table is
    /// full. The owner's own locks in the range are replaced (a write lock over its read lock
    /// upgrades it; POSIX semantics: ranges merge and split as needed). A conflicting holder
    /// that yields (see [`Yield`]) is expired and the lock tried again.
    pub fn lock(&self, file: &[u8], want: Lock) -> Result<(), LockError> {
        for _ in 0..MAX_YIELDS {
            match self.try_lock(file, &want) {
                Err(LockError::Conflict(c)) if self.yielded(&c) => continue,
                other => return other,
            }
        }
        self.try_lock(file, &want)
    }

    fn try_lock(&self, file: &[u8], want: &Lock) -> Result<(), LockError> {
        let mut files = self.files();
        let before = files.get(file).map_or(0, Vec::len);
        if let Some(c) = files.get(file).and_then(|held| conflict(held, want)) {
            return Err(LockError::Conflict(c.clone()));
        }
        // A lock may add at most two ranges (splitting one of the owner's own): refuse it
        // when that could pass a cap.
        if before + 2 > self.max_per_file
            || self.ranges.load(Ordering::Relaxed) + 2 > self.max_ranges
        {
            return Err(LockError::Full);
        }
        let held = files.entry(file.to_vec()).or_default();
        let downgrade = !want.write;
        carve(held, &want.owner, want.start, want.end);
        held.push(want.clone());
        coalesce(held);
        let after = held.len();
        self.counted(before, after);
        drop(files);
        if downgrade {
            self.released.notify_waiters();
        }
        Ok(())
    }

    /// Releases `owner`'s locks in [start, end).
    pub fn unlock(&self, file: &[u8], owner: &Owner, start: u64, end: u64) {
        let mut files = self.files();
        if let Some(held) = files.get_mut(file) {
            let before = held.len();
            carve(held, owner, start, end);
            self.counted(before, held.len());
            if held.is_empty() {
                files.remove(file);
            }
        }
        drop(files);
        self.released.notify_waiters();
    }

    /// Whether `owner` holds any lock on `file`.
    pub fn holds(&self, file: &[u8], owner: &Owner) -> bool {
        self.files()
            .get(file)
            .is_some_and(|held| held.iter().any(|l| &l.owner == owner))
    }

    /// Releases every lock whose owner matches `which` (a client that went away, an NLM host
    /// that rebooted, a lock-owner freed). Returns how many were released.
    pub fn release_all(&self, which: impl Fn(&Owner) -> bool) -> usize {
        let mut files = self.files();
        let mut released = 0;
        files.retain(|_, held| {
            let before = held.len();
            held.retain(|l| !which(&l.owner));
            released += before - held.len();
            !held.is_empty()
        });
        self.ranges.fetch_sub(released, Ordering::Relaxed);
        drop(files);
        if released > 0 {
            self.released.notify_waiters();
        }
        released
    }

    /// How many locks are held.
    pub fn count(&self) -> usize {
        self.files().values().map(Vec::len).sum()
    }

    /// Every lock held, per file (for tests and `status`).
    pub fn snapshot(&self) -> Vec<(Vec<u8>, Lock)> {
        self.files()
            .iter()
            .flat_map(|(f, held)| held.iter().map(|l| (f.clone(), l.clone())))
            .collect()
    }
}

fn conflict<'a>(held: &'a [Lock], want: &Lock) -> Option<&'a Lock> {
    held.iter().find(|l| {
        l.owner != want.owner && (l.write || want.write) && l.overlaps(want.start, want.end)
    })
}

/// Removes `owner`'s coverage of [start, end), splitting locks that straddle it.
fn carve(held: &mut Vec<Lock>, owner: &Owner, start: u64, end: u64) {
    let mut kept = Vec::with_capacity(held.len() + 1);
    for l in held.drain(..) {
        if &l.owner != owner || !l.overlaps(start, end) {
            kept.push(l);
            continue;
        }
        if l.start < start {
            kept.push(Lock {
                end: start,
                ..l.clone()
            });
        }
        if l.end > end {
            kept.push(Lock { start: end, ..l });
        }
    }
    *held = kept;
}

/// Merges adjacent or overlapping locks of one owner and mode. Sorted by start, the ranges of
/// one owner and mode already merged are disjoint, so only the last of them can meet the next
/// range: one pass, not a search through everything kept so far per range.
fn coalesce(held: &mut Vec<Lock>) {
    use std::hash::{BuildHasher, RandomState};
    held.sort_by_key(|l| (l.start, l.end));
    let hasher = RandomState::new();
    let mut out: Vec<Lock> = Vec::with_capacity(held.len());
    // (hash of owner, mode) -> index in `out` of that owner's last range in that mode.
    let mut last: HashMap<(u64, bool), usize> = HashMap::new();
    for l in held.drain(..) {
        let key = (hasher.hash_one(&l.owner), l.write);
        if let Some(&i) = last.get(&key)
            && out[i].owner == l.owner
            && out[i].end >= l.start
        {
            out[i].end = out[i].end.max(l.end);
            continue;
        }
        last.insert(key, out.len());
        out.push(l);
    }
    *held = out;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(n: u8) -> Owner {
        Owner::V4 {
            clientid: 1,
            owner: vec![n],
        }
    }

    fn lock(owner: Owner, start: u64, end: u64, write: bool) -> Lock {
        Lock {
            owner,
            start,
            end,
            write,
        }
    }

    #[test]
    fn readers_share_writers_exclude() {
        let t = LockTable::new();
        t.lock(b"f", lock(v4(1), 0, 10, false)).unwrap();
        t.lock(b"f", lock(v4(2), 5, 15, false)).unwrap();
        let Err(LockError::Conflict(c)) = t.lock(b"f", lock(v4(3), 9, 10, true)) else {
            panic!("no conflict");
        };
        assert!(c.owner == v4(1) || c.owner == v4(2));
        t.lock(b"f", lock(v4(3), 15, u64::MAX, true)).unwrap();
        assert!(t.test(b"g", &lock(v4(9), 0, u64::MAX, true)).is_none());
    }

    #[test]
    fn unlock_splits_and_upgrade_replaces() {
        let t = LockTable::new();
        t.lock(b"f", lock(v4(1), 0, 100, true)).unwrap();
        t.unlock(b"f", &v4(1), 40, 60);
        assert!(t.test(b"f", &lock(v4(2), 40, 60, true)).is_none());
        assert!(t.test(b"f", &lock(v4(2), 39, 40, false)).is_some());
        assert!(t.test(b"f", &lock(v4(2), 60, 61, false)).is_some());
        // Downgrade part of the range to a read lock: others may now read it.
        t.lock(b"f", lock(v4(1), 0, 40, false)).unwrap();
        assert!(t.test(b"f", &lock(v4(2), 0, 40, false)).is_none());
        assert!(t.test(b"f", &lock(v4(2), 0, 40, true)).is_some());
        assert_eq!(t.release_all(|o| o == &v4(1)), 2);
        assert!(t.snapshot().is_empty());
    }

    #[test]
    fn nlm_and_v4_owners_conflict() {
        let t = LockTable::new();
        let nlm = Owner::Nlm {
            host: b"guest".to_vec(),
            svid: 7,
            oh: b"oh".to_vec(),
        };
        let (s, e) = Lock::range(0, 0);
        t.lock(b"f", lock(nlm.clone(), s, e, true)).unwrap();
        let c = t.lock(b"f", lock(v4(1), 1 << 40, u64::MAX, false));
        assert!(matches!(c, Err(LockError::Conflict(l)) if l.owner == nlm));
        assert_eq!(t.release_all(|o| o.is_nlm_host(b"guest")), 1);
        t.lock(b"f", lock(v4(1), 1 << 40, u64::MAX, false)).unwrap();
    }

    #[test]
    fn ranges_are_capped_per_file_and_in_all_and_freed_by_unlock() {
        // A lock is refused when it could pass a cap (it may add two ranges).
        let t = LockTable::with_limits(10, 16);
        // Disjoint ranges of one owner do not merge: each is one range.
        for i in 0..9 {
            t.lock(b"f", lock(v4(1), i * 10, i * 10 + 1, true)).unwrap();
        }
        assert_eq!(
            t.lock(b"f", lock(v4(1), 100, 101, true)),
            Err(LockError::Full),
            "a tenth range on one file"
        );
        for i in 0..6 {
            t.lock(b"g", lock(v4(2), i * 10, i * 10 + 1, true)).unwrap();
        }
        assert_eq!(
            t.lock(b"h", lock(v4(3), 0, 1, true)),
            Err(LockError::Full),
            "a sixteenth in all"
        );
        assert!(
            t.snapshot().iter().all(|(f, _)| f != b"h"),
            "no empty entry kept"
        );
        // Freed ranges make room again, whichever way they are freed.
        t.unlock(b"f", &v4(1), 0, u64::MAX);
        t.lock(b"h", lock(v4(3), 0, 1, true)).unwrap();
        assert_eq!(t.release_all(|o| o == &v4(2)), 6);
        assert_eq!(t.count(), 1);
        for i in 0..9 {
            t.lock(b"f", lock(v4(1), i * 10, i * 10 + 1, true)).unwrap();
        }
    }

    #[test]
    fn ranges_saturate() {
        assert_eq!(Lock::range(5, u64::MAX), (5, u64::MAX));
        assert_eq!(Lock::range(u64::MAX - 1, 10), (u64::MAX - 1, u64::MAX));
        assert_eq!(lock(v4(1), 5, u64::MAX, true).length(), u64::MAX);
    }
}
