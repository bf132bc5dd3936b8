//! The export store: the export root, its volumes, and resolving handles to objects.
//!
//! A request's handle is authenticated (see [`crate::handle`]), routed by its volume id to one
//! registered volume, checked against that volume's generation, and opened with
//! `open_by_handle_at` on the volume's file system. Handles are only minted for objects
//! reached from a volume root through that volume, and the tag makes them unforgeable, so a
//! resolved object is inside the volume its handle names.

use std::collections::HashMap;
use std::ffi::CStr;
use std::fs;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use thiserror::Error;
use tracing::{debug, info, warn};

use crate::Attr;
use crate::cred;
use crate::handle::{FileHandle, HandleError, HandleKey};
use crate::projquota::ProjectQuotas;
use crate::quota::{self, Mode, Quota};
use crate::registry::{self, Registry, RegistryError, VolumeOptions, VolumeRecord};
use crate::sys;

/// errno-style code for "not a handle of ours" (the kernel's internal EBADHANDLE).
pub const EBADHANDLE: i32 = 521;
const KEY_FILE: &str = "handle.key";

/// Errors opening or changing the store.
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("export root {path}: {source}")]
    Root {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// A registered volume whose directory is open.
#[derive(Debug)]
pub struct Volume {
    pub record: VolumeRecord,
    pub path: PathBuf,
    root: OwnedFd,
    root_dev: u64,
    root_ino: u64,
    root_handle: Vec<u8>,
    /// Usage and limit, kept across registry reloads of the same volume.
    pub quota: Arc<Quota>,
    /// The kernel project quota enforcing the size, if any (the project id).
    project: Option<u32>,
    /// Whether the file system under the volume keeps `user.` extended attributes (asked
    /// once, by [`crate::ops::xattr_support`]).
    pub(crate) xattrs: std::sync::OnceLock<bool>,
}

impl Volume {
    pub fn id(&self) -> u32 {
        self.record.id
    }

    pub fn name(&self) -> &str {
        &self.record.name
    }

    pub fn options(&self) -> &VolumeOptions {
        &self.record.options
    }

    /// The encoded handle of the volume's root directory.
    pub fn root_handle(&self) -> &[u8] {
        &self.root_handle
    }

    pub fn root_fd(&self) -> BorrowedFd<'_> {
        self.root.as_fd()
    }

    /// The kernel project (id) whose quota enforces the volume's size, if any.
    pub fn project(&self) -> Option<u32> {
        self.project
    }

    /// Whether `st` is this volume's root directory.
    pub fn is_root(&self, st: &libc::stat) -> bool {
        st.st_dev == self.root_dev && st.st_ino == self.root_ino
    }
}

/// A resolved handle: an open descriptor inside `volume` — `O_RDONLY | O_DIRECTORY` for
/// directories (so they can be listed and fsynced), `O_PATH` for everything else.
#[derive(Debug)]
pub struct Object {
    pub volume: Arc<Volume>,
    pub fd: Arc<OwnedFd>,
    pub(crate) entry: Option<Arc<CacheEntry>>,
}

impl Object {
    /// An object not kept in the handle cache.
    pub fn uncached(volume: Arc<Volume>, fd: OwnedFd) -> Self {
        Self {
            volume,
            fd: Arc::new(fd),
            entry: None,
        }
    }

    /// An object of a descriptor held elsewhere (an NFSv4 open keeping a file that was
    /// removed while open), not kept in the handle cache.
    pub fn shared(volume: Arc<Volume>, fd: Arc<OwnedFd>) -> Self {
        Self {
            volume,
            fd,
            entry: None,
        }
    }
}

/// Resolved handles are cached so a busy file costs no `open_by_handle_at` per request, and
/// quick calls (GETATTR, ACCESS, ...) on them run inline. Files this server creates are cached
/// at once. Entries idle for [`CACHE_IDLE`] are closed (an open descriptor keeps the space of a
/// file deleted beside the server allocated), as are entries of an inode removed or replaced
/// through the server, at once.
///
/// At most a quarter of the descriptor limit (`RLIMIT_NOFILE`, which `serve` raises), between
/// [`CACHE_MIN`] and [`CACHE_MAX`] entries: each holds one descriptor, plus one for I/O on a
/// regular file in use, and pins one inode in the kernel.
const CACHE_MIN: usize = 1024;
const CACHE_MAX: usize = 16384;
/// How long an unused cache entry is kept.
pub const CACHE_IDLE: Duration = Duration::from_secs(10);

/// The entries, and the handles of each inode (so a REMOVE forgets its inode without a scan).
#[derive(Default)]
struct HandleCache {
    map: HashMap<Vec<u8>, Arc<CacheEntry>>,
    by_ino: HashMap<u64, Vec<Vec<u8>>>,
}

impl HandleCache {
    fn get(&self, handle: &[u8]) -> Option<&Arc<CacheEntry>> {
        self.map.get(handle)
    }

    fn contains_key(&self, handle: &[u8]) -> bool {
        self.map.contains_key(handle)
    }

    fn len(&self) -> usize {
        self.map.len()
    }

    fn unindex(&mut self, ino: u64, handle: &[u8]) {
        if let Some(list) = self.by_ino.get_mut(&ino) {
            list.retain(|h| h != handle);
            if list.is_empty() {
                self.by_ino.remove(&ino);
            }
        }
    }

    fn insert(&mut self, handle: Vec<u8>, entry: Arc<CacheEntry>) {
        let ino = entry.ino;
        if let Some(old) = self.map.insert(handle.clone(), entry) {
            self.unindex(old.ino, &handle);
        }
        self.by_ino.entry(ino).or_default().push(handle);
    }

    fn remove(&mut self, handle: &[u8]) {
        if let Some(old) = self.map.remove(handle) {
            self.unindex(old.ino, handle);
        }
    }

    fn retain(&mut self, keep: impl FnMut(&Vec<u8>, &mut Arc<CacheEntry>) -> bool) {
        let before = self.map.len();
        self.map.retain(keep);
        if self.map.len() != before {
            self.by_ino.clear();
            for (h, e) in &self.map {
                self.by_ino.entry(e.ino).or_default().push(h.clone());
            }
        }
    }

    fn clear(&mut self) {
        self.map.clear();
        self.by_ino.clear();
    }

    fn forget_inode(&mut self, ino: u64) {
        for h in self.by_ino.remove(&ino).unwrap_or_default() {
            self.map.remove(&h);
        }
    }
}

/// Cache entries this process may hold (see [`CACHE_MAX`]).
fn cache_limit() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given.
    let soft = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        usize::try_from(lim.rlim_cur).unwrap_or(usize::MAX)
    } else {
        0
    };
    (soft / 4).clamp(CACHE_MIN, CACHE_MAX)
}

#[derive(Debug)]
pub(crate) struct CacheEntry {
    generation: u32,
    fd: Arc<OwnedFd>,
    is_dir: bool,
    ino: u64,
    /// For regular files: a descriptor opened as root for reads and writes (and whether it
    /// is writable). Callers check the client's permission before using it.
    pub(crate) io: Mutex<Option<(Arc<OwnedFd>, bool)>>,
    /// Held around changes to the file's allocation, so each one is measured alone.
    pub(crate) alloc: Mutex<()>,
    /// Shares fsyncs among concurrent changes (see [`crate::commit`]).
    pub(crate) gate: crate::commit::Gate,
    last_used: AtomicU64,
}

type VolumeMap = HashMap<u32, Arc<Volume>>;

/// The export root and its registered volumes.
pub struct ExportStore {
    root: PathBuf,
    registry: Registry,
    key: HandleKey,
    volumes: RwLock<Arc<VolumeMap>>,
    registry_stamp: Mutex<Option<(i64, i64, u64, u64)>>,
    cache: Mutex<HandleCache>,
    /// Most entries in `cache` (see [`cache_limit`]).
    cache_max: usize,
    epoch: Instant,
    /// Whether opening a volume measures its usage (see [`ExportStore::open_unmeasured`]).
    measure: bool,
    /// Whether volumes exported and unexported are logged at debug instead of info (see
    /// [`ExportStore::open_quiet`]).
    quiet: bool,
    /// Kernel project quotas, when the export root's file system has them on.
    kernel: Option<ProjectQuotas>,
}

impl ExportStore {
    /// Opens the export root, creating its state directory and handle key on first use, and
    /// loads the registered volumes.
    pub fn open(root: &Path) -> Result<Self, StoreError> {
        Self::open_with(root, true, false)
    }

    /// Opens the store without measuring volumes' usage (every volume counts 0 bytes): for
    /// commands that only change the registry, so they need not walk every volume.
    /// Also quiet, like [`ExportStore::open_quiet`].
    pub fn open_unmeasured(root: &Path) -> Result<Self, StoreError> {
        Self::open_with(root, false, true)
    }

    /// Opens the store like [`ExportStore::open`], but logs each volume exported or
    /// unexported (and the quota mode) at debug level only: for commands that print the
    /// volumes themselves (`volume list`, `status`, `recover`), where a log line per volume
    /// is noise. `serve` uses [`ExportStore::open`].
    pub fn open_quiet(root: &Path) -> Result<Self, StoreError> {
        Self::open_with(root, true, true)
    }

    fn open_with(root: &Path, measure: bool, quiet: bool) -> Result<Self, StoreError> {
        let root = fs::canonicalize(root).map_err(|source| StoreError::Root {
            path: root.to_owned(),
            source,
        })?;
        if !root.is_dir() {
            return Err(StoreError::Root {
                path: root,
                source: io::Error::from_raw_os_error(libc::ENOTDIR),
            });
        }
        // Modes sent by clients are applied exactly, never reduced by the process umask.
        // SAFETY: umask cannot fail.
        unsafe { libc::umask(0) };
        let registry = Registry::open(&root)?;
        let key = load_or_create_key(registry.state_dir())?;
        // Registry-only commands leave quotas to the server, which applies them as it reloads.
        let kernel = if measure {
            match ProjectQuotas::detect(&root) {
                Ok(Ok(k)) => {
                    cred::bind_to_kernel_quotas();
                    Some(k)
                }
                Ok(Err(reason)) => {
                    if quiet {
                        debug!(%reason, "no kernel project quotas: the server's accounting enforces sizes");
                    } else {
                        info!(%reason, "no kernel project quotas: the server's accounting enforces sizes");
                    }
                    None
                }
                Err(e) => {
                    if quiet {
                        debug!(error = %e, "no kernel project quotas: the server's accounting enforces sizes");
                    } else {
                        info!(error = %e, "no kernel project quotas: the server's accounting enforces sizes");
                    }
                    None
                }
            }
        } else {
            None
        };
        let store = Self {
            root,
            registry,
            key,
            volumes: RwLock::new(Arc::new(HashMap::new())),
            registry_stamp: Mutex::new(None),
            cache: Mutex::new(HandleCache::default()),
            cache_max: cache_limit(),
            epoch: Instant::now(),
            measure,
            quiet,
            kernel,
        };
        store.reload()?;
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// How volume sizes are enforced.
    pub fn quota_mode(&self) -> Mode {
        match &self.kernel {
            Some(k) => Mode::Kernel(k.fs_type()),
            None => Mode::Accounting,
        }
    }

    /// Takes every volume's usage again (from the kernel's project quota, else by a walk) and
    /// corrects its count if no operation ran on the volume meanwhile: files changed beside
    /// the server (an administrator copying into the export root) are counted without a
    /// restart. Returns how many counts moved.
    pub fn recount(&self) -> usize {
        // Worker threads may be running as a client's identity; the walk needs root's view.
        if let Err(e) = cred::become_root() {
            warn!(error = %e, "cannot recount volume usage");
            return 0;
        }
        let mut corrected = 0;
        for v in self.snapshot().values() {
            let before = v.quota.used();
            let mark = v.quota.mark();
            let measured = match (&self.kernel, v.project) {
                (Some(k), Some(id)) => k.usage(id).map(|(used, _)| used),
                _ => quota::measure(&v.path).map(|(used, _)| used),
            };
            match measured {
                Ok(measured) if measured != before && v.quota.recount(measured, mark) => {
                    info!(volume = %v.name(), from = before, to = measured, "volume usage recounted");
                    corrected += 1;
                }
                Ok(_) => {}
                Err(e) => debug!(volume = %v.name(), error = %e, "cannot recount volume usage"),
            }
        }
        corrected
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Re-reads the registry if it changed since the last load; returns whether it did.
    pub fn reload(&self) -> Result<bool, StoreError> {
        // Worker threads may be running as a client's identity; the registry is root's.
        cred::become_root().map_err(|source| StoreError::Io {
            path: self.root.clone(),
            source,
        })?;
        let path = self.registry.path();
        let stamp = fs::metadata(&path)
            .ok()
            .map(|m| (m.mtime(), m.mtime_nsec(), m.ino(), m.size()));
        let mut last = self
            .registry_stamp
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if last.is_some() && *last == stamp {
            return Ok(false);
        }
        let data = self.registry.load()?;
        *last = stamp;
        let current = self.snapshot();
        let mut next = VolumeMap::new();
        for record in data.volumes {
            if let Some(v) = current.get(&record.id)
                && v.record == record
            {
                next.insert(record.id, Arc::clone(v));
                continue;
            }
            let quota = current.get(&record.id).map(|v| Arc::clone(&v.quota));
            match self.open_volume(record.clone(), quota) {
                Ok(v) => {
                    if self.quiet {
                        debug!(volume = %record.name, id = record.id, "volume exported");
                    } else {
                        info!(volume = %record.name, id = record.id, "volume exported");
                    }
                    next.insert(record.id, Arc::new(v));
                }
                Err(e) => warn!(
                    volume = %record.name,
                    path = %self.root.join(&record.name).display(),
                    error = %e,
                    "volume not exported"
                ),
            }
        }
        for (id, v) in current.iter() {
            if !next.contains_key(id) {
                if self.quiet {
                    debug!(volume = %v.name(), id, "volume unexported");
                } else {
                    info!(volume = %v.name(), id, "volume unexported");
                }
                if let (Some(k), Some(project)) = (&self.kernel, v.project) {
                    let _ = k.set_limit(project, None);
                }
            }
        }
        *self.volumes.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(next);
        Ok(true)
    }

    /// Opens a volume's directory; its usage is measured unless a previous load of the same
    /// volume already counts it.
    fn open_volume(&self, record: VolumeRecord, quota: Option<Arc<Quota>>) -> io::Result<Volume> {
        let path = self.root.join(&record.name);
        let root = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
            .open(&path)?;
        let root = OwnedFd::from(root);
        let st = sys::fstatat(root.as_fd(), c"")?;
        let (kernel_type, kernel_bytes) = sys::name_to_handle(root.as_fd(), c"")?;
        let root_handle = FileHandle {
            volume_id: record.id,
            generation: record.generation,
            kernel_type,
            kernel_bytes,
        }
        .encode(&self.key)
        .map_err(|_| {
            io::Error::other(
                "the file system's handles are too large for NFSv3 (more than 41 bytes)",
            )
        })?;
        let project = self.kernel.as_ref().and_then(|k| {
            let done = self.registry.state_dir().join("projects");
            let applied = fs::create_dir_all(&done)
                .map_err(|e| e.to_string())
                .and_then(|()| {
                    k.assign(root.as_fd(), record.id, &done.join(record.id.to_string()))
                        .map_err(|e| e.to_string())
                })
                .and_then(|()| {
                    k.set_limit(record.id, record.options.size)
                        .map_err(|e| e.to_string())
                });
            match applied {
                Ok(()) => Some(record.id),
                Err(e) => {
                    warn!(
                        volume = %record.name, error = %e,
                        "kernel project quota not applied: the server's count alone enforces the size"
                    );
                    None
                }
            }
        });
        let quota = match quota {
            Some(q) => {
                q.set_limit(record.options.size);
                q
            }
            None if !self.measure => Arc::new(Quota::new(record.options.size, 0)),
            None => {
                let started = Instant::now();
                // The kernel already keeps the project's count: no walk needed.
                let charged = match (&self.kernel, project) {
                    (Some(k), Some(id)) => k.usage(id).ok().map(|(used, _)| (used, 0)),
                    _ => None,
                };
                let (used, inodes) = match charged {
                    Some(c) => c,
                    None => quota::measure(&path)?,
                };
                debug!(
                    volume = %record.name, used, inodes,
                    from_kernel = charged.is_some(),
                    ms = started.elapsed().as_millis() as u64,
                    "volume usage taken"
                );
                Arc::new(Quota::new(record.options.size, used))
            }
        };
        Ok(Volume {
            record,
            path,
            root,
            root_dev: st.st_dev,
            root_ino: st.st_ino,
            root_handle,
            quota,
            project,
            xattrs: std::sync::OnceLock::new(),
        })
    }

    fn snapshot(&self) -> Arc<VolumeMap> {
        Arc::clone(&self.volumes.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Every exported volume, sorted by name.
    pub fn volumes(&self) -> Vec<Arc<Volume>> {
        let mut v: Vec<_> = self.snapshot().values().cloned().collect();
        v.sort_by(|a, b| a.name().cmp(b.name()));
        v
    }

    pub fn volume_by_name(&self, name: &str) -> Option<Arc<Volume>> {
        self.snapshot().values().find(|v| v.name() == name).cloned()
    }

    /// [`Self::volume_by_name`], re-reading the registry first when the name is unknown and
    /// the registry changed since it was last read: a volume added a moment ago (`volume add`
    /// while `serve` runs) can be mounted at once, not only after the next periodic reload.
    /// An unknown name costs one `stat` of the registry.
    pub fn volume_by_name_fresh(&self, name: &str) -> Option<Arc<Volume>> {
        self.volume_by_name(name).or_else(|| match self.reload() {
            Ok(true) => self.volume_by_name(name),
            Ok(false) => None,
            Err(e) => {
                warn!(error = %e, "cannot reload the registry");
                None
            }
        })
    }

    /// Registers a volume and creates its directory (mode 0777, like the provisioner's
    /// volumes) if it does not exist; a running server picks it up from the registry.
    pub fn add_volume(
        &self,
        name: &str,
        options: VolumeOptions,
    ) -> Result<VolumeRecord, StoreError> {
        registry::validate_name(name)?;
        let path = self.root.join(name);
        let io_err = |source| StoreError::Io {
            path: path.clone(),
            source,
        };
        // Blocking-pool threads may still carry the last NFS client's credentials.
        cred::become_root().map_err(io_err)?;
        match fs::create_dir(&path) {
            // Made durable by the registry write below, which fsyncs the export root.
            Ok(()) => {
                fs::set_permissions(&path, fs::Permissions::from_mode(0o777)).map_err(io_err)?;
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => {}
            Err(e) => return Err(io_err(e)),
        }
        let record = self.registry.add(name, options)?;
        self.reload()?;
        Ok(record)
    }

    /// Sets a volume's size (its hard limit) while it is served; volumes never shrink.
    pub fn resize_volume(&self, name: &str, size: u64) -> Result<VolumeRecord, StoreError> {
        cred::become_root().map_err(|source| StoreError::Io {
            path: self.root.clone(),
            source,
        })?;
        let record = self.registry.resize(name, size)?;
        self.reload()?;
        Ok(record)
    }

    /// Unregisters a volume; its handles become stale at once. The data is left in place.
    pub fn remove_volume(&self, name: &str) -> Result<VolumeRecord, StoreError> {
        cred::become_root().map_err(|source| StoreError::Io {
            path: self.root.clone(),
            source,
        })?;
        let record = self.registry.remove(name)?;
        self.reload()?;
        Ok(record)
    }

    /// The volume a handle of ours names, without opening anything (`None`: not ours, or
    /// stale). For checking who may use it before the call runs.
    pub fn volume_of(&self, handle: &[u8]) -> Option<Arc<Volume>> {
        let fh = FileHandle::decode(handle, &self.key).ok()?;
        self.snapshot()
            .get(&fh.volume_id)
            .filter(|v| v.record.generation == fh.generation)
            .cloned()
    }

    /// Resolves a client's handle to an object inside the volume it names. With
    /// `O_DIRECTORY` in `flags` the object must be a directory.
    /// Errors: `EBADHANDLE` for handles that are not ours, `ESTALE` for ones that no longer
    /// name anything, `ENOTDIR` when a directory was required.
    pub fn resolve(&self, handle: &[u8], flags: libc::c_int) -> io::Result<Object> {
        self.resolve_stat(handle, flags).map(|(obj, _)| obj)
    }

    /// [`ExportStore::resolve`], with the object's attributes as read while resolving it:
    /// a call that answers with them (GETATTR, ACCESS, LOOKUP's directory) needs no second
    /// `fstat`. Taken in this call, so as fresh as one taken a moment later.
    pub fn resolve_attr(&self, handle: &[u8], flags: libc::c_int) -> io::Result<(Object, Attr)> {
        let (obj, st) = self.resolve_stat(handle, flags)?;
        let attr = Attr::from_stat(&st, obj.volume.id() as u64);
        Ok((obj, attr))
    }

    fn resolve_stat(&self, handle: &[u8], flags: libc::c_int) -> io::Result<(Object, libc::stat)> {
        let fh = FileHandle::decode(handle, &self.key).map_err(|e| match e {
            HandleError::Bad => io::Error::from_raw_os_error(EBADHANDLE),
            HandleError::Stale => io::Error::from_raw_os_error(libc::ESTALE),
        })?;
        let stale = || io::Error::from_raw_os_error(libc::ESTALE);
        let volume = self
            .snapshot()
            .get(&fh.volume_id)
            .cloned()
            .ok_or_else(stale)?;
        if volume.record.generation != fh.generation {
            return Err(stale());
        }
        let want_dir = flags & libc::O_DIRECTORY != 0;
        let cached = self.cache_lock().get(handle).cloned();
        let (entry, st) = match cached {
            Some(entry) if entry.generation == fh.generation => {
                // A removed file's descriptor still works; NFS says such handles are stale.
                let st = sys::fstatat(entry.fd.as_fd(), c"")?;
                if st.st_nlink == 0 {
                    self.cache_lock().remove(handle);
                    return Err(stale());
                }
                (entry, st)
            }
            _ => self.open_entry(&volume, &fh, handle)?,
        };
        if want_dir && !entry.is_dir {
            return Err(io::Error::from_raw_os_error(libc::ENOTDIR));
        }
        entry.last_used.store(self.now_ms(), Ordering::Relaxed);
        let obj = Object {
            volume,
            fd: Arc::clone(&entry.fd),
            entry: Some(entry),
        };
        Ok((obj, st))
    }

    fn open_entry(
        &self,
        volume: &Volume,
        fh: &FileHandle,
        handle: &[u8],
    ) -> io::Result<(Arc<CacheEntry>, libc::stat)> {
        cred::become_root()?;
        let open = |flags| {
            sys::open_by_handle(volume.root_fd(), fh.kernel_type, &fh.kernel_bytes, flags)
                .map_err(|e| match e.raw_os_error() {
                    Some(libc::EPERM) | Some(libc::EACCES) => e,
                    _ => {
                        tracing::debug!(error = %e, volume = volume.name(), "handle no longer resolves");
                        io::Error::from_raw_os_error(libc::ESTALE)
                    }
                })
        };
        let mut fd = open(libc::O_PATH)?;
        let st = sys::fstatat(fd.as_fd(), c"")?;
        // A removed inode still open somewhere stays in memory, and the kernel resolves its
        // handle; NFS says it is stale, as for a cached one.
        if st.st_nlink == 0 {
            return Err(io::Error::from_raw_os_error(libc::ESTALE));
        }
        let is_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
        if is_dir {
            fd = open(libc::O_RDONLY | libc::O_DIRECTORY)?;
        }
        let entry = self.new_entry(fh.generation, fd, is_dir, st.st_ino);
        self.cache_insert(handle.to_vec(), Arc::clone(&entry));
        Ok((entry, st))
    }

    /// A cache entry for `fd`, just used.
    fn new_entry(&self, generation: u32, fd: OwnedFd, is_dir: bool, ino: u64) -> Arc<CacheEntry> {
        Arc::new(CacheEntry {
            generation,
            fd: Arc::new(fd),
            is_dir,
            ino,
            io: Mutex::new(None),
            alloc: Mutex::new(()),
            gate: crate::commit::Gate::default(),
            last_used: AtomicU64::new(self.now_ms()),
        })
    }

    fn cache_insert(&self, handle: Vec<u8>, entry: Arc<CacheEntry>) {
        let mut cache = self.cache_lock();
        if cache.len() >= self.cache_max {
            let now = self.now_ms();
            cache.retain(|_, e| now.saturating_sub(e.last_used.load(Ordering::Relaxed)) < 100);
            if cache.len() >= self.cache_max {
                cache.clear();
            }
        }
        cache.insert(handle, entry);
    }

    /// Caches `fd`, a descriptor (`O_PATH`) of the non-directory `st` that this server just
    /// made, under its new `handle`: the calls that follow a create (GETATTR, SETATTR, WRITE)
    /// find it without `open_by_handle_at`.
    pub fn remember(&self, handle: &[u8], fd: OwnedFd, st: &libc::stat) {
        if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            return;
        }
        let Ok(fh) = FileHandle::decode(handle, &self.key) else {
            return;
        };
        let entry = self.new_entry(fh.generation, fd, false, st.st_ino);
        self.cache_insert(handle.to_vec(), entry);
    }

    /// Whether `handle` resolves without opening anything (its descriptor is cached).
    pub fn is_cached(&self, handle: &[u8]) -> bool {
        self.cache_lock().contains_key(handle)
    }

    fn cache_lock(&self) -> std::sync::MutexGuard<'_, HandleCache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Closes cached descriptors unused for [`CACHE_IDLE`]; the server calls this periodically.
    pub fn sweep_cache(&self) {
        let now = self.now_ms();
        let idle = CACHE_IDLE.as_millis() as u64;
        self.cache_lock()
            .retain(|_, e| now.saturating_sub(e.last_used.load(Ordering::Relaxed)) < idle);
    }

    /// Drops cached descriptors of inode `ino`, which was just unlinked or replaced, so its
    /// space is freed when the last name goes.
    pub fn forget_inode(&self, ino: u64) {
        self.cache_lock().forget_inode(ino);
    }

    /// Mints the handle of `name` inside directory `dir` of `volume` (`name` empty: `dir`).
    pub fn handle_of(
        &self,
        volume: &Volume,
        dir: BorrowedFd<'_>,
        name: &CStr,
    ) -> io::Result<Vec<u8>> {
        let (kernel_type, kernel_bytes) = sys::name_to_handle(dir, name)?;
        FileHandle {
            volume_id: volume.record.id,
            generation: volume.record.generation,
            kernel_type,
            kernel_bytes,
        }
        .encode(&self.key)
        .map_err(|_| io::Error::from_raw_os_error(libc::EOVERFLOW))
    }
}

fn load_or_create_key(state_dir: &Path) -> Result<HandleKey, StoreError> {
    let path = state_dir.join(KEY_FILE);
    let io_err = |source| StoreError::Io {
        path: path.clone(),
        source,
    };
    match fs::read(&path) {
        Ok(bytes) if bytes.len() == 16 => {
            let mut k = [0u8; 16];
            k.copy_from_slice(&bytes);
            return Ok(HandleKey(k));
        }
        Ok(_) => {
            return Err(io_err(io::Error::new(
                io::ErrorKind::InvalidData,
                "handle key must be 16 bytes; restore it from backup (without it every client handle is stale)",
            )));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(e)),
    }
    let mut k = [0u8; 16];
    getrandom::fill(&mut k).map_err(|e| io_err(io::Error::other(e.to_string())))?;
    registry::write_atomically(&path, &k, 0o600).map_err(io_err)?;
    // Another process may have won the race: whatever is on disk now is the key.
    let bytes = fs::read(&path).map_err(io_err)?;
    k.copy_from_slice(
        bytes
            .get(..16)
            .ok_or_else(|| io_err(io::Error::from_raw_os_error(libc::EIO)))?,
    );
    Ok(HandleKey(k))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    /// Log lines written while `f` runs, at info level and above, on this thread only.
    fn info_logs(f: impl FnOnce()) -> String {
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl Write for Buf {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let out = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_writer(move || out.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let bytes = buf.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn commands_that_list_volumes_do_not_log_each_one_as_exported() {
        let dir = tempfile::tempdir().unwrap();
        let store = ExportStore::open(dir.path()).unwrap();
        for name in ["a", "b"] {
            store.add_volume(name, VolumeOptions::default()).unwrap();
        }
        let quiet = info_logs(|| {
            ExportStore::open_quiet(dir.path()).unwrap();
            ExportStore::open_unmeasured(dir.path()).unwrap();
        });
        assert!(!quiet.contains("volume exported"), "{quiet}");
        let serving = info_logs(|| {
            ExportStore::open(dir.path()).unwrap();
        });
        assert_eq!(serving.matches("volume exported").count(), 2, "{serving}");
    }

    #[test]
    fn reserved_names_are_refused_before_a_directory_is_made() {
        let dir = tempfile::tempdir().unwrap();
        let store = ExportStore::open_unmeasured(dir.path()).unwrap();
        for name in [
            registry::IDENTITY_FILE,
            registry::STATE_DIR,
            "archived-pvc-1-2",
        ] {
            let err = store
                .add_volume(name, VolumeOptions::default())
                .unwrap_err();
            assert!(err.to_string().contains(name), "{err}");
        }
        assert!(!dir.path().join(registry::IDENTITY_FILE).exists());
        assert!(!dir.path().join("archived-pvc-1-2").exists());
    }

    #[test]
    fn a_file_in_the_way_of_a_volume_is_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = ExportStore::open_unmeasured(dir.path()).unwrap();
        fs::write(store.root().join("vol"), b"").unwrap();
        let err = store
            .add_volume("vol", VolumeOptions::default())
            .unwrap_err();
        let path = store.root().join("vol").display().to_string();
        assert!(err.to_string().contains(&path), "{err}");
    }
}
