//! The server's own state files (the NFSv4 client records, NSM's state number and host
//! list): written by one thread of their own, which never takes a client's identity (the
//! state directory is root's, 0700), and never under a lock of the protocol state.
//!
//! Callers hand over a file's whole new content; when several contents of one file wait, only
//! the newest is written. Each submission gets a sequence number, and a caller that must not
//! answer before its change is on disk waits for that number ([`StateFiles::wait`]) after
//! releasing its own locks.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};

use tracing::warn;

/// The writer of state files.
pub struct StateFiles {
    pending: Mutex<Pending>,
    work: Condvar,
    done: Condvar,
}

#[derive(Default)]
struct Pending {
    /// The newest content of each file waiting to be written, and its sequence number.
    files: BTreeMap<PathBuf, (u64, Vec<u8>)>,
    /// The last sequence number handed out.
    submitted: u64,
    /// Every submission up to this one is written (or failed and was logged).
    written: u64,
    /// Whether the writer thread runs.
    started: bool,
}

impl StateFiles {
    /// The process's writer (its thread starts on first use).
    pub fn global() -> &'static StateFiles {
        static WRITER: OnceLock<StateFiles> = OnceLock::new();
        WRITER.get_or_init(|| StateFiles {
            pending: Mutex::new(Pending::default()),
            work: Condvar::new(),
            done: Condvar::new(),
        })
    }

    /// Queues `content` as the new content of `path` (mode 0600, replaced atomically and
    /// fsynced); returns the number to [`StateFiles::wait`] for. Does no I/O.
    pub fn submit(&'static self, path: PathBuf, content: Vec<u8>) -> u64 {
        let mut p = self.lock();
        if !p.started {
            let spawned = std::thread::Builder::new()
                .name("state-writer".into())
                .spawn(move || self.run());
            match spawned {
                Ok(_) => p.started = true,
                Err(e) => {
                    // Without a thread the caller writes it itself.
                    drop(p);
                    warn!(error = %e, "cannot start the state-file writer; writing in place");
                    write(&path, &content);
                    return 0;
                }
            }
        }
        p.submitted += 1;
        let seq = p.submitted;
        p.files.insert(path, (seq, content));
        drop(p);
        self.work.notify_one();
        seq
    }

    /// Waits until submission `seq` (and every one before it) is written.
    pub fn wait(&self, seq: u64) {
        let mut p = self.lock();
        while p.written < seq {
            p = self.done.wait(p).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// [`StateFiles::submit`] and [`StateFiles::wait`].
    pub fn write(&'static self, path: PathBuf, content: Vec<u8>) {
        let seq = self.submit(path, content);
        self.wait(seq);
    }

    /// The last submission's number.
    pub fn submitted(&self) -> u64 {
        self.lock().submitted
    }

    fn run(&self) {
        // A new thread starts with its creator's file-system identity, which may be a
        // client's.
        if let Err(e) = export_store::cred::become_root() {
            warn!(error = %e, "the state-file writer cannot run as root");
        }
        loop {
            let (files, upto) = {
                let mut p = self.lock();
                while p.files.is_empty() {
                    p = self.work.wait(p).unwrap_or_else(|e| e.into_inner());
                }
                (std::mem::take(&mut p.files), p.submitted)
            };
            for (path, (_, content)) in files {
                write(&path, &content);
            }
            self.lock().written = upto;
            self.done.notify_all();
        }
    }

    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn write(path: &std::path::Path, content: &[u8]) {
    if let Err(e) = export_store::registry::write_atomically(path, content, 0o600) {
        warn!(error = %e, path = %path.display(), "cannot write a state file");
    }
}

/// Runs `f` on a new thread switched to uid 1000, as a worker thread that last served a
/// user's call (the state directory, 0700 root's, refuses that thread).
#[cfg(test)]
pub(crate) fn on_a_user_thread(f: impl FnOnce() + Send) {
    std::thread::scope(|scope| {
        scope.spawn(|| {
            export_store::cred::become_identity(&export_store::Identity {
                uid: 1000,
                gid: 1000,
                groups: vec![1000],
            })
            .unwrap();
            f();
        });
    });
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn the_newest_content_is_written_whatever_identity_the_caller_carries() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let path = dir.path().join("records");
        let writer = StateFiles::global();
        on_a_user_thread(|| {
            for i in 0..50 {
                writer.submit(path.clone(), format!("{i}\n").into_bytes());
            }
            writer.write(path.clone(), b"last\n".to_vec());
        });
        assert_eq!(std::fs::read(&path).unwrap(), b"last\n");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
