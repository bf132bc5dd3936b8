//! Group commit: concurrent changes to one object share its fsyncs.
//!
//! Every change that must be durable before its reply (a new name in a directory, a removed
//! one, a SETATTR) asks its object's [`Gate`] for a sync after the change is made. One caller
//! at a time runs the fsync; it covers every change whose caller asked before it started.
//! Callers that ask while it runs wait for it to end and then one of them runs the next one,
//! which covers them all. A burst of N creates in one directory thus costs about two fsyncs,
//! not N, and each caller still returns only once its own change is on disk.

use std::io;
use std::os::fd::BorrowedFd;
use std::sync::{Condvar, Mutex, MutexGuard};

/// The sync state of one object (kept with its cached handle).
#[derive(Debug, Default)]
pub struct Gate {
    state: Mutex<GateState>,
    done: Condvar,
}

#[derive(Debug, Default)]
struct GateState {
    /// Tickets handed out: one per change that asked for a sync.
    asked: u64,
    /// Every ticket up to this one is durable.
    synced: u64,
    /// An fsync is running.
    running: bool,
    /// The last fsync that failed: the highest ticket it covered, and its errno. Those
    /// callers get the error (their change may not be durable); later ones try again.
    failed: Option<(u64, i32)>,
    /// How many fsyncs were run, for tests and metrics.
    fsyncs: u64,
}

impl Gate {
    /// Makes every change made to the object before this call durable, running `fsync` on
    /// `fd` or waiting for a running one and then, if that one started too early, for the
    /// next one.
    pub fn sync(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        self.sync_with(|| crate::sys::fsync(fd))
    }

    /// [`Gate::sync`] with the sync itself given (tests count and slow it down).
    pub fn sync_with(&self, fsync: impl Fn() -> io::Result<()>) -> io::Result<()> {
        let mut s = self.lock();
        s.asked += 1;
        let mine = s.asked;
        loop {
            if s.synced >= mine {
                return Ok(());
            }
            if let Some((upto, errno)) = s.failed
                && upto >= mine
            {
                return Err(io::Error::from_raw_os_error(errno));
            }
            if !s.running {
                s.running = true;
                let target = s.asked;
                drop(s);
                let result = fsync();
                s = self.lock();
                s.running = false;
                s.fsyncs += 1;
                match &result {
                    Ok(()) => s.synced = s.synced.max(target),
                    Err(e) => s.failed = Some((target, e.raw_os_error().unwrap_or(libc::EIO))),
                }
                self.done.notify_all();
                return result;
            }
            s = self.done.wait(s).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// How many fsyncs this gate has run.
    pub fn fsyncs(&self) -> u64 {
        self.lock().fsyncs
    }

    /// How many changes have asked for a sync.
    pub fn asked(&self) -> u64 {
        self.lock().asked
    }

    fn lock(&self) -> MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use super::*;

    #[test]
    fn one_caller_alone_gets_one_fsync_each_time() {
        let gate = Gate::default();
        let runs = AtomicU64::new(0);
        for _ in 0..3 {
            gate.sync_with(|| {
                runs.fetch_add(1, Ordering::SeqCst);
                Ok(())
            })
            .unwrap();
        }
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        assert_eq!(gate.fsyncs(), 3);
    }

    #[test]
    fn concurrent_callers_share_fsyncs_and_none_returns_before_one_that_started_after_its_change() {
        let gate = Arc::new(Gate::default());
        // Each fsync records which changes existed when it started; each caller, on return,
        // checks that an fsync that started after its change has ended.
        let changes = Arc::new(AtomicU64::new(0));
        let durable = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..32)
            .map(|_| {
                let (gate, changes, durable) = (
                    Arc::clone(&gate),
                    Arc::clone(&changes),
                    Arc::clone(&durable),
                );
                std::thread::spawn(move || {
                    for _ in 0..20 {
                        let mine = changes.fetch_add(1, Ordering::SeqCst) + 1;
                        gate.sync_with(|| {
                            let covered = changes.load(Ordering::SeqCst);
                            std::thread::sleep(Duration::from_millis(2));
                            durable.fetch_max(covered, Ordering::SeqCst);
                            Ok(())
                        })
                        .unwrap();
                        // Changes are numbered in order, so "durable >= mine" means an fsync
                        // that started after this change was made has finished.
                        assert!(durable.load(Ordering::SeqCst) >= mine);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let fsyncs = gate.fsyncs();
        assert!(
            fsyncs < 640 / 4,
            "640 changes by 32 threads took {fsyncs} fsyncs: they were not shared"
        );
    }

    #[test]
    fn a_failed_fsync_fails_every_change_it_covered_and_the_next_one_is_tried_again() {
        let gate = Arc::new(Gate::default());
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let g = Arc::clone(&gate);
        // A first fsync that succeeds but is held until both others have asked.
        let first = std::thread::spawn(move || {
            g.sync_with(|| {
                wait.recv().unwrap();
                Ok(())
            })
        });
        while !gate.lock().running {
            std::thread::yield_now();
        }
        // Two changes made while it runs: the fsync that covers them fails (whichever of
        // them runs it, and the other either waits for it or fails its own).
        let failing: Vec<_> = (0..2)
            .map(|_| {
                let g = Arc::clone(&gate);
                std::thread::spawn(move || {
                    g.sync_with(|| Err(io::Error::from_raw_os_error(libc::ENOSPC)))
                })
            })
            .collect();
        while gate.lock().asked < 3 {
            std::thread::yield_now();
        }
        release.send(()).unwrap();
        assert!(first.join().unwrap().is_ok());
        for t in failing {
            let e = t.join().unwrap().unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
        }
        // A later change tries again rather than inheriting the failure.
        assert!(gate.sync_with(|| Ok(())).is_ok());
        assert!((3..=4).contains(&gate.fsyncs()), "{}", gate.fsyncs());
    }

    /// A store with one volume, `async` or not, and its root directory resolved (cached).
    fn volume(asynchronous: bool) -> (tempfile::TempDir, Arc<crate::ExportStore>, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::ExportStore::open_quiet(dir.path()).unwrap();
        let options = crate::VolumeOptions {
            asynchronous,
            ..crate::VolumeOptions::default()
        };
        store.add_volume("vol", options).unwrap();
        let root = store.volume_by_name("vol").unwrap().root_handle().to_vec();
        (dir, Arc::new(store), root)
    }

    fn create(store: &crate::ExportStore, root: &[u8], name: &str) -> io::Result<()> {
        let dir = store.resolve(root, libc::O_RDONLY | libc::O_DIRECTORY)?;
        let how = crate::CreateHow::Guarded(crate::SetAttr::default());
        crate::ops::create(store, &dir, name.as_bytes(), &crate::Identity::root(), how).map(drop)
    }

    fn gate_of(store: &crate::ExportStore, root: &[u8]) -> Arc<crate::store::CacheEntry> {
        let dir = store
            .resolve(root, libc::O_RDONLY | libc::O_DIRECTORY)
            .unwrap();
        Arc::clone(dir.entry.as_ref().unwrap())
    }

    #[test]
    fn creates_waiting_behind_a_running_fsync_are_all_covered_by_the_next_one() {
        let (dir, store, root) = volume(false);
        let entry = gate_of(&store, &root);
        // Hold the directory's gate with a slow fsync while 12 creates queue behind it.
        let (release, held) = std::sync::mpsc::channel::<()>();
        let e = Arc::clone(&entry);
        let blocker = std::thread::spawn(move || {
            e.gate.sync_with(|| {
                held.recv().unwrap();
                Ok(())
            })
        });
        while !entry.gate.lock().running {
            std::thread::yield_now();
        }
        let creators: Vec<_> = (0..12)
            .map(|i| {
                let (store, root) = (Arc::clone(&store), root.clone());
                std::thread::spawn(move || create(&store, &root, &format!("f{i}")))
            })
            .collect();
        // Every create has made its file and asked for a sync.
        while entry.gate.asked() < 13 {
            std::thread::yield_now();
        }
        release.send(()).unwrap();
        blocker.join().unwrap().unwrap();
        for c in creators {
            c.join().unwrap().unwrap();
        }
        // The blocker's fsync, then one for all twelve.
        assert_eq!(entry.gate.fsyncs(), 2);
        for i in 0..12 {
            assert!(dir.path().join("vol").join(format!("f{i}")).is_file());
        }
    }

    #[test]
    fn an_async_volume_answers_changes_without_fsync_and_a_normal_one_with() {
        for asynchronous in [false, true] {
            let (_dir, store, root) = volume(asynchronous);
            let entry = gate_of(&store, &root);
            for i in 0..3 {
                create(&store, &root, &format!("f{i}")).unwrap();
            }
            let expected = if asynchronous { 0 } else { 3 };
            assert_eq!(entry.gate.fsyncs(), expected, "async: {asynchronous}");
        }
    }
}
