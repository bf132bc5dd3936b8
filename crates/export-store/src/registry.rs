//! The export registry: which volumes exist, with their id, generation and options.
//!
//! It lives in `<export root>/.nfs-server-provisioner/registry.json` and is only ever replaced
//! whole (write temp + fsync + rename + fsync dir) under an exclusive `flock`, so concurrent
//! `volume add` commands and a running server never see a half-written file. Volume ids are
//! never reused; each volume also gets a random generation so that even a registry recreated
//! from scratch cannot make an old handle alias a new volume.
//!
//! Changes made at the same moment share one write (group commit): the first caller to find
//! no write in progress applies every change queued so far, in order, writes the file once
//! and hands each caller its own result. Each change still returns only once it is on disk.

use std::any::Any;
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::cred::Squash;

/// Name of the state directory inside the export root.
pub const STATE_DIR: &str = ".nfs-server-provisioner";
const REGISTRY_FILE: &str = "registry.json";
const LOCK_FILE: &str = "lock";
/// The provisioner's identity file in the export root (the name the old provisioner used).
pub const IDENTITY_FILE: &str = "nfs-provisioner.identity";
/// Prefixes of the names deleted volumes' directories are given (`onDelete: archive`).
pub const RESERVED_PREFIXES: [&str; 1] = ["archived-"];

/// Options of one export.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeOptions {
    #[serde(default)]
    pub read_only: bool,
    #[serde(default)]
    pub squash: Squash,
    #[serde(default = "nobody")]
    pub anonuid: u32,
    #[serde(default = "nobody")]
    pub anongid: u32,
    /// The volume's size in bytes (its hard limit); none: unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Address ranges of the clients that may use the volume; empty: every client.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clients: Vec<crate::access::Cidr>,
    /// Calls must come from a reserved source port (below 1024).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub secure: bool,
    /// Like knfsd's `async` export option: namespace changes, SETATTRs, stable WRITEs and
    /// COMMITs are answered without waiting for the disk. A crash of the machine (not of the
    /// server) can lose what the kernel had not yet written back.
    #[serde(rename = "async", default, skip_serializing_if = "std::ops::Not::not")]
    pub asynchronous: bool,
}

impl VolumeOptions {
    /// Whether `peer` may use the volume (see [`crate::access`]).
    pub fn admits(&self, peer: std::net::SocketAddr) -> Result<(), crate::access::Refused> {
        crate::access::admits(&self.clients, self.secure, peer)
    }
}

fn nobody() -> u32 {
    65534
}

impl Default for VolumeOptions {
    fn default() -> Self {
        Self {
            read_only: false,
            squash: Squash::None,
            anonuid: nobody(),
            anongid: nobody(),
            size: None,
            clients: Vec::new(),
            secure: false,
            asynchronous: false,
        }
    }
}

/// One registered volume.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeRecord {
    pub name: String,
    pub id: u32,
    pub generation: u32,
    #[serde(flatten)]
    pub options: VolumeOptions,
}

/// The registry file's content.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryData {
    pub next_id: u32,
    pub volumes: Vec<VolumeRecord>,
}

/// Registry errors.
#[derive(Debug, Error)]
pub enum RegistryError {
    #[error(
        "volume name {0:?} is not valid: use 1-200 characters from [A-Za-z0-9._-], not starting with '.'"
    )]
    InvalidName(String),
    #[error("volume name {name:?} is reserved: {why}; choose another name")]
    ReservedName { name: String, why: &'static str },
    #[error("volume {0:?} already exists")]
    Exists(String),
    #[error("volume {0:?} does not exist")]
    NotFound(String),
    #[error("volume {name:?} cannot shrink from {from} to {to} bytes")]
    Shrink { name: String, from: u64, to: u64 },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is corrupt: {source}")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> RegistryError + '_ {
    move |source| RegistryError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Checks that a volume name is a single safe directory name, and not one of the names the
/// export root keeps for itself: the state directory and every other name starting with '.',
/// the identity file, and the names deleted volumes are archived under.
pub fn validate_name(name: &str) -> Result<(), RegistryError> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if !ok {
        return Err(RegistryError::InvalidName(name.to_owned()));
    }
    let reserved = |why| {
        Err(RegistryError::ReservedName {
            name: name.to_owned(),
            why,
        })
    };
    if name == IDENTITY_FILE {
        return reserved("it is the provisioner's identity file in the export root");
    }
    if RESERVED_PREFIXES.iter().any(|p| name.starts_with(p)) {
        return reserved(
            "names starting with \"archived-\" are given to deleted volumes' directories",
        );
    }
    Ok(())
}

/// Access to the registry of one export root.
pub struct Registry {
    state_dir: PathBuf,
    commits: Mutex<Commits>,
    committed: Condvar,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("state_dir", &self.state_dir)
            .finish_non_exhaustive()
    }
}

type Outcome = Result<Box<dyn Any + Send>, RegistryError>;
type Change = Box<dyn FnOnce(&mut RegistryData) -> Outcome + Send>;

/// Changes waiting for the next write, and the results of written ones.
#[derive(Default)]
struct Commits {
    next: u64,
    queued: Vec<(u64, Change)>,
    done: HashMap<u64, Outcome>,
    writing: bool,
}

impl Registry {
    /// Opens (creating the state directory if needed) the registry of `export_root`.
    pub fn open(export_root: &Path) -> Result<Self, RegistryError> {
        let state_dir = export_root.join(STATE_DIR);
        match fs::create_dir(&state_dir) {
            Ok(()) => {
                fs::set_permissions(&state_dir, fs::Permissions::from_mode(0o700))
                    .map_err(io_err(&state_dir))?;
                sync_dir(export_root).map_err(io_err(export_root))?;
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err(&state_dir)(e)),
        }
        Ok(Self {
            state_dir,
            commits: Mutex::default(),
            committed: Condvar::new(),
        })
    }

    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    pub fn path(&self) -> PathBuf {
        self.state_dir.join(REGISTRY_FILE)
    }

    /// Reads the current registry (empty if none was written yet).
    pub fn load(&self) -> Result<RegistryData, RegistryError> {
        let path = self.path();
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|source| RegistryError::Corrupt { path, source }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(RegistryData {
                next_id: 1,
                volumes: Vec::new(),
            }),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    /// Applies `change` to the registry under an exclusive lock and writes it durably,
    /// sharing the write with changes made at the same moment by other threads. A change that
    /// fails leaves the registry as it was; the others are still written.
    pub fn update<T: Send + 'static>(
        &self,
        change: impl FnOnce(&mut RegistryData) -> Result<T, RegistryError> + Send + 'static,
    ) -> Result<T, RegistryError> {
        let boxed: Change =
            Box::new(move |data| change(data).map(|t| Box::new(t) as Box<dyn Any + Send>));
        let mut c = self.commits.lock().unwrap_or_else(|e| e.into_inner());
        let ticket = c.next;
        c.next += 1;
        c.queued.push((ticket, boxed));
        loop {
            if let Some(outcome) = c.done.remove(&ticket) {
                return outcome.map(|any| {
                    *any.downcast::<T>()
                        .expect("a change's result has the type its caller gave")
                });
            }
            if c.writing {
                c = self.committed.wait(c).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            // Nobody is writing: write everything queued, ours included.
            c.writing = true;
            let batch = std::mem::take(&mut c.queued);
            drop(c);
            let outcomes = self.write_batch(batch);
            c = self.commits.lock().unwrap_or_else(|e| e.into_inner());
            c.done.extend(outcomes);
            c.writing = false;
            self.committed.notify_all();
        }
    }

    /// Applies `batch` in order under the file lock and writes the result once.
    fn write_batch(&self, batch: Vec<(u64, Change)>) -> Vec<(u64, Outcome)> {
        let tickets: Vec<u64> = batch.iter().map(|(t, _)| *t).collect();
        let fail_all = |e: RegistryError| {
            let why = e.to_string();
            tickets
                .iter()
                .map(|t| {
                    let err = RegistryError::Io {
                        path: self.path(),
                        source: io::Error::other(why.clone()),
                    };
                    (*t, Err(err))
                })
                .collect::<Vec<_>>()
        };
        let lock_path = self.state_dir.join(LOCK_FILE);
        let lock = match OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
        {
            Ok(l) => l,
            Err(e) => return fail_all(io_err(&lock_path)(e)),
        };
        // SAFETY: plain syscall on an open descriptor; released when `lock` is closed.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return fail_all(io_err(&lock_path)(io::Error::last_os_error()));
        }
        let mut data = match self.load() {
            Ok(d) => d,
            Err(e) => return fail_all(e),
        };
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut changed = false;
        for (ticket, change) in batch {
            let before = data.clone();
            let outcome = change(&mut data);
            match &outcome {
                Ok(_) => changed = true,
                Err(_) => data = before,
            }
            outcomes.push((ticket, outcome));
        }
        if changed {
            // Volume directories created for these changes are made durable first, with
            // one fsync of the export root for the whole batch.
            let root = self.state_dir.parent().unwrap_or(Path::new("."));
            if let Err(e) = sync_dir(root) {
                return fail_all(io_err(root)(e));
            }
            let written = serde_json::to_vec_pretty(&data)
                .map_err(|source| RegistryError::Corrupt {
                    path: self.path(),
                    source,
                })
                .and_then(|bytes| {
                    write_atomically(&self.path(), &bytes, 0o600).map_err(io_err(&self.path()))
                });
            if let Err(e) = written {
                return fail_all(e);
            }
        }
        outcomes
    }

    /// Registers a new volume with a fresh id and random generation.
    pub fn add(&self, name: &str, options: VolumeOptions) -> Result<VolumeRecord, RegistryError> {
        validate_name(name)?;
        let name = name.to_owned();
        self.update(move |data| {
            if data.volumes.iter().any(|v| v.name == name) {
                return Err(RegistryError::Exists(name.clone()));
            }
            let record = VolumeRecord {
                name: name.clone(),
                id: data.next_id.max(1),
                generation: random_u32(),
                options,
            };
            data.next_id = record.id + 1;
            data.volumes.push(record.clone());
            Ok(record)
        })
    }

    /// Sets a volume's size (its hard limit); a volume never shrinks.
    pub fn resize(&self, name: &str, size: u64) -> Result<VolumeRecord, RegistryError> {
        let name = name.to_owned();
        self.update(move |data| {
            let pos = position(data, &name)?;
            let v = &mut data.volumes[pos];
            if let Some(from) = v.options.size
                && size < from
            {
                return Err(RegistryError::Shrink {
                    name: name.clone(),
                    from,
                    to: size,
                });
            }
            v.options.size = Some(size);
            Ok(v.clone())
        })
    }

    /// Unregisters a volume (its directory is left alone).
    pub fn remove(&self, name: &str) -> Result<VolumeRecord, RegistryError> {
        let name = name.to_owned();
        self.update(move |data| {
            let pos = position(data, &name)?;
            Ok(data.volumes.remove(pos))
        })
    }
}

/// Where volume `name` is in the list.
fn position(data: &RegistryData, name: &str) -> Result<usize, RegistryError> {
    data.volumes
        .iter()
        .position(|v| v.name == name)
        .ok_or_else(|| RegistryError::NotFound(name.to_owned()))
}

fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    // A generation only needs to differ from earlier ones; fall back to the clock.
    if getrandom::fill(&mut b).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() ^ d.as_secs() as u32)
            .unwrap_or(1);
        return t;
    }
    u32::from_ne_bytes(b)
}

/// Fsyncs a directory so that entries created or renamed in it are durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Replaces `path` with `bytes`: temp file, fsync, rename, fsync of the directory.
pub fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension("tmp");
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(mode)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, path)?;
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_changes_share_writes_and_keep_their_own_results() {
        let dir = tempfile::tempdir().unwrap();
        let reg = std::sync::Arc::new(Registry::open(dir.path()).unwrap());
        reg.add("taken", VolumeOptions::default()).unwrap();
        let threads: Vec<_> = (0..32)
            .map(|i| {
                let reg = std::sync::Arc::clone(&reg);
                std::thread::spawn(move || {
                    // Every fourth asks for a name that exists: it alone fails.
                    let name = if i % 4 == 0 {
                        "taken".to_owned()
                    } else {
                        format!("v{i}")
                    };
                    reg.add(&name, VolumeOptions::default())
                })
            })
            .collect();
        let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        let mut ids = Vec::new();
        for (i, r) in results.iter().enumerate() {
            match r {
                Ok(rec) => {
                    assert_ne!(i % 4, 0);
                    assert_eq!(rec.name, format!("v{i}"));
                    ids.push(rec.id);
                }
                Err(RegistryError::Exists(n)) => {
                    assert_eq!((i % 4, n.as_str()), (0, "taken"));
                }
                Err(e) => panic!("{e}"),
            }
        }
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 24, "distinct ids");
        // What the callers were told is what is on disk.
        let on_disk = Registry::open(dir.path()).unwrap().load().unwrap();
        assert_eq!(on_disk.volumes.len(), 25);
        for (i, r) in results.iter().enumerate() {
            if let Ok(rec) = r {
                assert!(on_disk.volumes.contains(rec), "v{i} not written");
            }
        }
    }

    #[test]
    fn ids_are_never_reused_after_remove() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::open(dir.path()).unwrap();
        let a = reg.add("a", VolumeOptions::default()).unwrap();
        reg.remove("a").unwrap();
        let b = reg.add("a", VolumeOptions::default()).unwrap();
        assert_ne!(a.id, b.id);
        assert_eq!(reg.load().unwrap().volumes, vec![b]);
    }

    #[test]
    fn duplicate_and_unsafe_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::open(dir.path()).unwrap();
        reg.add("vol", VolumeOptions::default()).unwrap();
        assert!(matches!(
            reg.add("vol", VolumeOptions::default()),
            Err(RegistryError::Exists(_))
        ));
        for bad in ["", "..", ".hidden", STATE_DIR, "a/b", "a\0b"] {
            assert!(matches!(
                reg.add(bad, VolumeOptions::default()),
                Err(RegistryError::InvalidName(_))
            ));
        }
    }

    #[test]
    fn names_the_export_root_keeps_for_itself_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::open(dir.path()).unwrap();
        for reserved in [IDENTITY_FILE, "archived-pvc-1-1700000000"] {
            let err = reg.add(reserved, VolumeOptions::default()).unwrap_err();
            assert!(
                matches!(err, RegistryError::ReservedName { .. }),
                "{reserved}: {err}"
            );
            let text = err.to_string();
            assert!(
                text.contains(reserved) && text.contains("reserved"),
                "{text}"
            );
        }
        assert!(reg.load().unwrap().volumes.is_empty());
        // Names merely resembling them are fine.
        for ok in ["nfs-provisioner", "identity", "archive", "pvc-archived-1"] {
            reg.add(ok, VolumeOptions::default()).unwrap();
        }
    }
}
