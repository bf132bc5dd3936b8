//! What the fuzz targets share: an export store with one volume holding a few real objects
//! (so fuzzed calls carry handles that authenticate and reach the handlers), an XDR writer,
//! and the fuzzed choices of credential, handle and name.
//!
//! The store lives on tmpfs when there is one (no disk syncs slowing every run), its volume
//! has a size so fuzzed writes and allocations stay small, and its objects are repaired
//! before each run (fuzzed calls remove, rename and chmod them) and the volume is emptied
//! every [`RESET_EVERY`] runs so directories do not grow without bound.

use std::ffi::CString;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

use arbitrary::Arbitrary;
use export_store::{ExportStore, Volume, VolumeOptions};
use oncrpc::{AuthSys, CallContext, Credential};

/// Runs between two resets of the volume.
pub const RESET_EVERY: u64 = 4096;
/// The volume's size: bounds what fuzzed writes and allocations take from tmpfs.
const VOLUME_SIZE: u64 = 64 << 20;

/// The objects created in the volume, by path, with their kind; handles are in this order
/// after the volume root.
pub const OBJECTS: [(&str, Kind); 6] = [
    ("file", Kind::File),
    ("dir", Kind::Dir),
    ("dir/inner", Kind::File),
    ("link", Kind::Symlink),
    ("fifo", Kind::Fifo),
    ("private", Kind::File),
];

#[derive(Clone, Copy, Debug)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Fifo,
}

/// A store with one volume `vol` and the objects of [`OBJECTS`] in it.
pub struct Fixture {
    _dir: tempfile::TempDir,
    pub store: Arc<ExportStore>,
    pub volume: Arc<Volume>,
    runs: std::sync::atomic::AtomicU64,
}

impl Fixture {
    pub fn new() -> Self {
        let shm = Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            tempfile::tempdir_in(shm)
        } else {
            tempfile::tempdir()
        }
        .expect("temp dir");
        let store = ExportStore::open_quiet(dir.path()).expect("store");
        let options = VolumeOptions {
            size: Some(VOLUME_SIZE),
            ..VolumeOptions::default()
        };
        store.add_volume("vol", options).expect("volume");
        let volume = store.volume_by_name("vol").expect("volume registered");
        Self {
            _dir: dir,
            store: Arc::new(store),
            volume,
            runs: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// How many runs have begun.
    pub fn runs(&self) -> u64 {
        self.runs.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Prepares a run: back to root credentials (handlers switch the thread to the
    /// caller's), the volume emptied now and then, the objects recreated and given their
    /// modes back. Returns the handles of the volume root and of [`OBJECTS`].
    pub fn begin(&self) -> Vec<Vec<u8>> {
        export_store::cred::become_root().expect("back to root");
        let runs = self.runs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let root = &self.volume.path;
        if runs % RESET_EVERY == RESET_EVERY - 1 {
            empty(root);
        }
        let _ = std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o777));
        let mut handles = vec![self.volume.root_handle().to_vec()];
        for (path, kind) in OBJECTS {
            let at = root.join(path);
            repair(&at, kind);
            let name = CString::new(path).expect("no NUL");
            if let Ok(h) = self
                .store
                .handle_of(&self.volume, self.volume.root_fd(), &name)
            {
                handles.push(h);
            }
        }
        handles
    }
}

impl Default for Fixture {
    fn default() -> Self {
        Self::new()
    }
}

/// Removes everything inside `dir`.
fn empty(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        // Directories may have been made unreadable or unwritable.
        let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o777));
        if std::fs::remove_dir_all(&p).is_err() {
            let _ = std::fs::remove_file(&p);
        }
    }
}

/// Makes `at` an object of `kind` with its fixture mode and owner again.
fn repair(at: &Path, kind: Kind) {
    let meta = std::fs::symlink_metadata(at).ok();
    let right = meta.as_ref().is_some_and(|m| {
        let t = m.file_type();
        match kind {
            Kind::File => t.is_file(),
            Kind::Dir => t.is_dir(),
            Kind::Symlink => t.is_symlink(),
            Kind::Fifo => {
                use std::os::unix::fs::FileTypeExt;
                t.is_fifo()
            }
        }
    });
    if !right {
        if meta.is_some() {
            let _ = std::fs::set_permissions(at, std::fs::Permissions::from_mode(0o777));
            if std::fs::remove_dir_all(at).is_err() {
                let _ = std::fs::remove_file(at);
            }
        }
        let _ = match kind {
            Kind::File => std::fs::write(at, vec![b'x'; 10_000]),
            Kind::Dir => std::fs::create_dir(at),
            Kind::Symlink => std::os::unix::fs::symlink("file", at),
            Kind::Fifo => {
                let c = CString::new(at.as_os_str().as_encoded_bytes()).expect("no NUL");
                // SAFETY: a valid C string.
                unsafe { libc::mkfifo(c.as_ptr(), 0o666) };
                Ok(())
            }
        };
    }
    if matches!(kind, Kind::Symlink) {
        return;
    }
    // "private" belongs to uid 1000 and only its owner may touch it; the rest is open.
    let private = at.ends_with("private");
    let (mode, uid) = match kind {
        Kind::Dir => (0o777, 0),
        _ if private => (0o600, 1000),
        _ => (0o666, 0),
    };
    if let Ok(m) = std::fs::symlink_metadata(at) {
        if m.mode() & 0o7777 != mode {
            let _ = std::fs::set_permissions(at, std::fs::Permissions::from_mode(mode));
        }
        if m.uid() != uid || m.gid() != uid {
            let _ = std::os::unix::fs::lchown(at, Some(uid), Some(uid));
        }
    }
}

/// An XDR writer.
#[derive(Default)]
pub struct Xdr(pub Vec<u8>);

impl Xdr {
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn bool(&mut self, v: bool) -> &mut Self {
        self.u32(u32::from(v))
    }

    pub fn fixed(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(b);
        self
    }

    pub fn opaque(&mut self, b: &[u8]) -> &mut Self {
        self.u32(b.len() as u32);
        self.0.extend_from_slice(b);
        self.0.resize(self.0.len() + (4 - b.len() % 4) % 4, 0);
        self
    }
}

/// Who calls: root, the owner of "private", another user, anonymous, or any AUTH_SYS.
#[derive(Arbitrary, Clone, Debug)]
pub enum Cred {
    Root,
    Owner,
    Other,
    None,
    Sys { uid: u32, gid: u32, gids: Vec<u32> },
}

impl Cred {
    pub fn credential(&self) -> Credential {
        let sys = |uid, gid, gids: &[u32]| {
            Credential::Sys(AuthSys {
                stamp: 1,
                machine_name: b"fuzz".to_vec(),
                uid,
                gid,
                gids: gids.iter().copied().take(16).collect(),
            })
        };
        match self {
            Cred::Root => sys(0, 0, &[]),
            Cred::Owner => sys(1000, 1000, &[]),
            Cred::Other => sys(1001, 1001, &[100]),
            Cred::None => Credential::None,
            Cred::Sys { uid, gid, gids } => sys(*uid, *gid, gids),
        }
    }

    pub fn context(&self, vers: u32, proc_: u32) -> CallContext {
        CallContext {
            xid: 1,
            vers,
            proc_,
            credential: self.credential(),
            // Local and foreign peers, reserved and unreserved ports, so the sender checks
            // (SM_NOTIFY, FREE_ALL, SM_SIMU_CRASH) and access checks take both ways.
            peer: match self {
                Cred::Root => "127.0.0.1:700",
                Cred::Owner => "127.0.0.2:40000",
                Cred::Other => "10.0.0.5:1000",
                Cred::None => "127.0.0.1:40001",
                Cred::Sys { .. } => "[::ffff:10.1.2.3]:50000",
            }
            .parse()
            .expect("address"),
        }
    }
}

/// A file handle: mostly one of the real ones (fixture objects, then handles learned during
/// the run), sometimes a damaged or made-up one.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub struct Fh(pub u8);

impl Fh {
    pub fn pick(self, known: &[Vec<u8>]) -> Vec<u8> {
        let v = usize::from(self.0);
        match v {
            0..240 if !known.is_empty() => known[v % known.len()].clone(),
            // A real handle with one byte changed: forged, or of another volume or version.
            240..248 if !known.is_empty() => {
                let mut h = known[v % known.len()].clone();
                let at = (v * 7) % h.len().max(1);
                if let Some(b) = h.get_mut(at) {
                    *b ^= 0x5a;
                }
                h
            }
            248..252 => Vec::new(),
            _ => vec![v as u8; v % 70],
        }
    }
}

/// A name in a directory: mostly one of the fixture's or a few new ones, so calls meet
/// each other's objects; sometimes anything.
#[derive(Arbitrary, Clone, Debug)]
pub enum Name {
    Known(u8),
    Raw(Vec<u8>),
}

const NAMES: [&[u8]; 14] = [
    b"file", b"dir", b"inner", b"link", b"fifo", b"private", b"new", b"new2", b"sub", b".", b"..",
    b"", b"a/b", b"x\0y",
];

impl Name {
    pub fn bytes(&self) -> Vec<u8> {
        match self {
            Name::Known(i) => match NAMES.get(usize::from(*i)) {
                Some(n) => n.to_vec(),
                None if *i == 255 => vec![b'l'; 300],
                None => NAMES[usize::from(*i) % 9].to_vec(),
            },
            Name::Raw(b) => b.clone(),
        }
    }
}

/// Reads a big-endian word at `at`.
pub fn word(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4)
        .map(|w| u32::from_be_bytes([w[0], w[1], w[2], w[3]]))
}

/// Reads an XDR opaque at `at`: its bytes and the offset after it.
pub fn opaque_at(b: &[u8], at: usize, max: usize) -> Option<(&[u8], usize)> {
    let n = word(b, at)? as usize;
    if n > max {
        return None;
    }
    let bytes = b.get(at + 4..at + 4 + n)?;
    Some((bytes, at + 4 + n.next_multiple_of(4)))
}
