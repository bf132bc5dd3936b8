//! Tests of the file-system operations on a real volume in a temporary directory.
//!
//! Each test has its own export root (`tempfile::tempdir()`, on disk: the store refuses
//! tmpfs) with one volume. Outcomes are checked on disk with `std::fs` as root, not only
//! through the operations' own results. Operations run as a non-root caller leave the test's
//! thread with that identity; the fixture's helpers and its `Drop` switch back to root.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use super::*;
use crate::registry::VolumeOptions;

/// `ops::create` without its "made it" flag (tested on its own below).
fn create(
    store: &ExportStore,
    dir: &Object,
    name: &[u8],
    id: &Identity,
    how: CreateHow,
) -> io::Result<Created> {
    super::create(store, dir, name, id, how).map(|(c, _)| c)
}
use crate::store::Volume;

/// A non-root caller.
const UID: u32 = 1000;
/// Another non-root caller.
const OTHER: u32 = 2000;

/// ACCESS3 bits (RFC 1813).
const A_READ: u32 = 1;
const A_LOOKUP: u32 = 2;
const A_MODIFY: u32 = 4;
const A_EXTEND: u32 = 8;
const A_DELETE: u32 = 16;
const A_EXECUTE: u32 = 32;
const A_ALL: u32 = 63;

fn user(uid: u32) -> Identity {
    Identity {
        uid,
        gid: uid,
        groups: vec![],
    }
}

fn root() -> Identity {
    Identity::root()
}

fn mode(m: u32) -> SetAttr {
    SetAttr {
        mode: Some(m),
        ..SetAttr::default()
    }
}

fn size(n: u64) -> SetAttr {
    SetAttr {
        size: Some(n),
        ..SetAttr::default()
    }
}

/// The errno of a call that must fail.
fn code<T: std::fmt::Debug>(r: io::Result<T>) -> i32 {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e
            .raw_os_error()
            .unwrap_or_else(|| panic!("no errno in {e}")),
    }
}

/// `len` bytes at `offset` of an open descriptor (as read_extent's caller would send them).
fn pread(fd: &OwnedFd, offset: u64, len: usize) -> Vec<u8> {
    let file = fs::File::from(fd.try_clone().unwrap());
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, offset).unwrap();
    buf
}

/// An export root in a temporary directory with the volume "vol".
struct Fx {
    store: ExportStore,
    vol: Arc<Volume>,
    _tmp: tempfile::TempDir,
}

impl Drop for Fx {
    fn drop(&mut self) {
        // Runs before the temporary directory is removed, which needs root.
        let _ = cred::become_root();
    }
}

impl Fx {
    fn new() -> Self {
        Self::with(VolumeOptions::default())
    }

    fn with(options: VolumeOptions) -> Self {
        cred::become_root().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let store = ExportStore::open(tmp.path()).unwrap();
        store.add_volume("vol", options).unwrap();
        let vol = store.volume_by_name("vol").unwrap();
        Self {
            store,
            vol,
            _tmp: tmp,
        }
    }

    /// `rel` inside the volume on disk. Switches the thread back to root, so that what
    /// follows (checks with std::fs) sees everything.
    fn path(&self, rel: &str) -> PathBuf {
        cred::become_root().unwrap();
        self.vol.path.join(rel)
    }

    fn root(&self) -> Object {
        self.store
            .resolve(self.vol.root_handle(), libc::O_DIRECTORY)
            .unwrap()
    }

    /// The object at `rel`, reached by LOOKUPs as root (directories opened for reading).
    fn obj(&self, rel: &str) -> Object {
        let mut cur = self.root();
        for name in rel.split('/') {
            let (handle, attr) = lookup(&self.store, &cur, name.as_bytes(), &root()).unwrap();
            cur = self.open(&handle, attr.kind);
        }
        cur
    }

    fn open(&self, handle: &[u8], kind: NodeKind) -> Object {
        let flags = if kind == NodeKind::Directory {
            libc::O_DIRECTORY
        } else {
            libc::O_PATH
        };
        self.store.resolve(handle, flags).unwrap()
    }

    fn meta(&self, rel: &str) -> fs::Metadata {
        fs::symlink_metadata(self.path(rel)).unwrap()
    }

    fn perm(&self, rel: &str) -> u32 {
        self.meta(rel).mode() & 0o7777
    }

    fn exists(&self, rel: &str) -> bool {
        fs::symlink_metadata(self.path(rel)).is_ok()
    }

    fn read(&self, rel: &str) -> Vec<u8> {
        fs::read(self.path(rel)).unwrap()
    }

    /// A regular file made beside the server, as root.
    fn file(&self, rel: &str, content: &[u8], perm: u32, uid: u32, gid: u32) {
        let p = self.path(rel);
        fs::write(&p, content).unwrap();
        std::os::unix::fs::chown(&p, Some(uid), Some(gid)).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(perm)).unwrap();
    }

    /// A directory made beside the server, as root.
    fn dir(&self, rel: &str, perm: u32, uid: u32, gid: u32) {
        let p = self.path(rel);
        fs::create_dir(&p).unwrap();
        std::os::unix::fs::chown(&p, Some(uid), Some(gid)).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(perm)).unwrap();
    }

    /// CREATE GUARDED of an empty file by `id` in the volume root; returns the open object.
    fn create_file(&self, name: &str, id: &Identity) -> Object {
        let (handle, attr) = create(
            &self.store,
            &self.root(),
            name.as_bytes(),
            id,
            CreateHow::Guarded(SetAttr::default()),
        )
        .unwrap();
        self.open(&handle, attr.kind)
    }
}

// ---------------------------------------------------------------------------------------
// CREATE

#[test]
fn guarded_create_applies_the_mode_and_refuses_an_existing_name() {
    let fx = Fx::new();
    let (handle, attr) = create(
        &fx.store,
        &fx.root(),
        b"f",
        &root(),
        CreateHow::Guarded(mode(0o640)),
    )
    .unwrap();
    let md = fx.meta("f");
    assert!(md.is_file());
    assert_eq!(md.len(), 0);
    assert_eq!(fx.perm("f"), 0o640, "mode applied exactly (no umask)");
    assert_eq!(
        (attr.kind, attr.mode, attr.fileid, attr.size),
        (NodeKind::Regular, 0o640, md.ino(), 0)
    );
    assert_eq!(attr.fsid, u64::from(fx.vol.id()));
    assert_eq!(
        getattr(&fx.open(&handle, attr.kind)).unwrap().fileid,
        md.ino()
    );

    fs::write(fx.path("f"), b"kept").unwrap();
    let again = create(
        &fx.store,
        &fx.root(),
        b"f",
        &root(),
        CreateHow::Guarded(mode(0o600)),
    );
    assert_eq!(code(again), libc::EEXIST);
    assert_eq!(fx.read("f"), b"kept");
    assert_eq!(fx.perm("f"), 0o640);
}

#[test]
fn a_created_file_is_cached_at_once_and_forgotten_when_removed() {
    let fx = Fx::new();
    let (file, attr) = create(
        &fx.store,
        &fx.root(),
        b"f",
        &user(UID),
        CreateHow::Guarded(mode(0o600)),
    )
    .unwrap();
    assert!(
        fx.store.is_cached(&file),
        "a new file is open for what follows"
    );
    // The cached descriptor is the new file's.
    let obj = fx.store.resolve(&file, 0).unwrap();
    assert_eq!(getattr(&obj).unwrap().fileid, attr.fileid);
    drop(obj);
    // A directory is not (opening it for reading may need rights its creator lacks).
    let (dir, _) = mkdir(&fx.store, &fx.root(), b"d", &root(), &mode(0o700)).unwrap();
    assert!(!fx.store.is_cached(&dir));
    remove(&fx.store, &fx.root(), b"f", &root(), false).unwrap();
    assert!(!fx.store.is_cached(&file), "a removed inode is forgotten");
    assert_eq!(code(fx.store.resolve(&file, 0)), libc::ESTALE);
}

#[test]
fn unchecked_create_of_an_existing_file_keeps_its_content_and_applies_only_the_size() {
    let fx = Fx::new();
    fx.file("f", b"hello world", 0o600, 0, 0);
    let ino = fx.meta("f").ino();
    let set = SetAttr {
        mode: Some(0o777),
        size: Some(5),
        ..SetAttr::default()
    };
    let (_, attr) = create(
        &fx.store,
        &fx.root(),
        b"f",
        &root(),
        CreateHow::Unchecked(set),
    )
    .unwrap();
    assert_eq!(fx.read("f"), b"hello", "only the size applies");
    assert_eq!(fx.perm("f"), 0o600, "the mode of an existing file is kept");
    assert_eq!(fx.meta("f").ino(), ino, "the same file, not a new one");
    assert_eq!((attr.size, attr.fileid, attr.mode), (5, ino, 0o600));

    // Without a size the file is left exactly as it is.
    create(
        &fx.store,
        &fx.root(),
        b"f",
        &root(),
        CreateHow::Unchecked(mode(0o644)),
    )
    .unwrap();
    assert_eq!(fx.read("f"), b"hello");
    assert_eq!(fx.perm("f"), 0o600);

    // A new name is created with the mode.
    create(
        &fx.store,
        &fx.root(),
        b"g",
        &root(),
        CreateHow::Unchecked(mode(0o604)),
    )
    .unwrap();
    assert_eq!(fx.perm("g"), 0o604);
}

#[test]
fn unchecked_create_over_a_directory_is_eexist() {
    let fx = Fx::new();
    fx.dir("d", 0o755, 0, 0);
    fx.file("d/inside", b"x", 0o644, 0, 0);
    let r = create(
        &fx.store,
        &fx.root(),
        b"d",
        &root(),
        CreateHow::Unchecked(size(0)),
    );
    assert_eq!(code(r), libc::EEXIST);
    assert!(fx.meta("d").is_dir());
    assert_eq!(fx.read("d/inside"), b"x");
}

#[test]
fn unchecked_create_that_cannot_apply_its_size_keeps_the_existing_file() {
    let fx = Fx::new();
    // A size that cannot be set (EFBIG), by root.
    fx.file("f", b"precious", 0o644, 0, 0);
    let r = create(
        &fx.store,
        &fx.root(),
        b"f",
        &root(),
        CreateHow::Unchecked(size(u64::MAX)),
    );
    assert_eq!(code(r), libc::EFBIG);
    assert!(
        fx.exists("f"),
        "an existing file must survive a failed CREATE"
    );
    assert_eq!(fx.read("f"), b"precious");
}

#[test]
fn unchecked_create_truncating_a_file_the_caller_may_not_write_keeps_it() {
    let fx = Fx::new();
    // What a Linux NFSv4 client sends (OPEN, UNCHECKED4 with size 0) for `echo > g` when it
    // has no cached entry for g, here by a user who may write the directory (the volume root
    // is 0777) but not the file: the truncation is refused, and the file must stay.
    fx.file("g", b"precious", 0o644, 0, 0);
    let r = create(
        &fx.store,
        &fx.root(),
        b"g",
        &user(UID),
        CreateHow::Unchecked(size(0)),
    );
    assert_eq!(code(r), libc::EACCES);
    assert!(
        fx.exists("g"),
        "an existing file must survive a failed CREATE"
    );
    assert_eq!(fx.read("g"), b"precious");
}

#[test]
fn exclusive_create_keeps_the_verifier_and_accepts_only_its_retransmission() {
    let fx = Fx::new();
    let verf = [0x12, 0x34, 0x56, 0x78, 0x0a, 0xbc, 0xde, 0xf0];
    let (handle, attr) = create(
        &fx.store,
        &fx.root(),
        b"x",
        &user(UID),
        CreateHow::Exclusive(verf),
    )
    .unwrap();
    let md = fx.meta("x");
    assert_eq!((md.atime(), md.mtime()), (0x1234_5678, 0x0abc_def0));
    assert_eq!((md.uid(), md.gid(), md.len()), (UID, UID, 0));
    assert_eq!(attr.fileid, md.ino());

    // A retransmission finds the same file.
    let (handle2, attr2) = create(
        &fx.store,
        &fx.root(),
        b"x",
        &user(UID),
        CreateHow::Exclusive(verf),
    )
    .unwrap();
    assert_eq!(handle2, handle);
    assert_eq!(attr2.fileid, md.ino());

    // Another client's create with another verifier does not.
    let mut other = verf;
    other[7] ^= 1;
    let r = create(
        &fx.store,
        &fx.root(),
        b"x",
        &user(UID),
        CreateHow::Exclusive(other),
    );
    assert_eq!(code(r), libc::EEXIST);
    assert_eq!(fx.meta("x").mtime(), 0x0abc_def0, "verifier left in place");

    // Nor does any exclusive create over a file made otherwise.
    fx.file("plain", b"", 0o644, 0, 0);
    let r = create(
        &fx.store,
        &fx.root(),
        b"plain",
        &root(),
        CreateHow::Exclusive(verf),
    );
    assert_eq!(code(r), libc::EEXIST);
}

#[test]
fn root_may_create_with_an_owner_and_a_size() {
    let fx = Fx::new();
    let set = SetAttr {
        mode: Some(0o600),
        uid: Some(UID),
        gid: Some(OTHER),
        size: Some(100),
        ..SetAttr::default()
    };
    let (_, attr) = create(
        &fx.store,
        &fx.root(),
        b"f",
        &root(),
        CreateHow::Guarded(set),
    )
    .unwrap();
    let md = fx.meta("f");
    assert_eq!((md.uid(), md.gid(), md.len()), (UID, OTHER, 100));
    assert_eq!(fx.perm("f"), 0o600);
    assert_eq!((attr.uid, attr.gid, attr.size), (UID, OTHER, 100));
}

#[test]
fn root_may_make_a_directory_with_an_owner_and_times() {
    // The initial attributes are applied through an uncached object of the new directory,
    // which is then made durable on its own (no cached gate to share).
    let fx = Fx::new();
    let set = SetAttr {
        mode: Some(0o750),
        uid: Some(UID),
        gid: Some(OTHER),
        mtime: TimeSet::Client(1_000_000, 0),
        ..SetAttr::default()
    };
    let (_, attr) = mkdir(&fx.store, &fx.root(), b"d", &root(), &set).unwrap();
    let md = fx.meta("d");
    assert!(md.is_dir());
    assert_eq!((md.uid(), md.gid(), md.mtime()), (UID, OTHER, 1_000_000));
    assert_eq!(fx.perm("d"), 0o750);
    assert_eq!((attr.uid, attr.gid), (UID, OTHER));
}

#[test]
fn a_user_cannot_create_with_a_foreign_owner_and_leaves_nothing_behind() {
    let fx = Fx::new();
    let dir = fx.root();
    let id = Identity {
        uid: UID,
        gid: UID,
        groups: vec![50],
    };
    let foreign = [
        SetAttr {
            uid: Some(0),
            ..SetAttr::default()
        },
        SetAttr {
            gid: Some(0),
            ..SetAttr::default()
        },
    ];
    for set in foreign {
        for how in [CreateHow::Guarded(set), CreateHow::Unchecked(set)] {
            assert_eq!(code(create(&fx.store, &dir, b"f", &id, how)), libc::EPERM);
        }
        assert_eq!(code(mkdir(&fx.store, &dir, b"d", &id, &set)), libc::EPERM);
        let r = mknod(&fx.store, &dir, b"p", &id, NodeSpec::Fifo, &set);
        assert_eq!(code(r), libc::EPERM);
    }
    for name in ["f", "d", "p"] {
        assert!(!fx.exists(name), "{name} left behind");
    }

    // Its own uid and a group it is in are allowed.
    let own = SetAttr {
        uid: Some(UID),
        gid: Some(50),
        ..SetAttr::default()
    };
    create(&fx.store, &dir, b"f", &id, CreateHow::Guarded(own)).unwrap();
    let md = fx.meta("f");
    assert_eq!((md.uid(), md.gid()), (UID, 50));
}

// ---------------------------------------------------------------------------------------
// Credentials

#[test]
fn a_user_creates_only_where_the_directory_lets_it_and_owns_what_it_creates() {
    let fx = Fx::new();
    fx.dir("locked", 0o755, 0, 0);
    fx.dir("mine", 0o755, UID, UID);
    let id = user(UID);

    let locked = fx.obj("locked");
    let r = create(
        &fx.store,
        &locked,
        b"f",
        &id,
        CreateHow::Guarded(SetAttr::default()),
    );
    assert_eq!(code(r), libc::EACCES);
    assert_eq!(
        code(mkdir(&fx.store, &locked, b"d", &id, &SetAttr::default())),
        libc::EACCES
    );
    assert_eq!(
        code(symlink(&fx.store, &locked, b"l", &id, b"t")),
        libc::EACCES
    );
    assert_eq!(fs::read_dir(fx.path("locked")).unwrap().count(), 0);

    let mine = fx.obj("mine");
    let (_, attr) = create(
        &fx.store,
        &mine,
        b"f",
        &id,
        CreateHow::Guarded(SetAttr::default()),
    )
    .unwrap();
    mkdir(&fx.store, &mine, b"d", &id, &SetAttr::default()).unwrap();
    let (f, d) = (fx.meta("mine/f"), fx.meta("mine/d"));
    assert_eq!((f.uid(), f.gid()), (UID, UID));
    assert_eq!((d.uid(), d.gid()), (UID, UID));
    assert_eq!((attr.uid, attr.gid), (UID, UID));
    assert_eq!(fx.perm("mine/f"), 0o644, "default mode of CREATE");
    assert_eq!(fx.perm("mine/d"), 0o755, "default mode of MKDIR");

    // Removing from the root-owned directory is refused as well.
    fx.file("locked/g", b"x", 0o666, UID, UID);
    let r = remove(&fx.store, &fx.obj("locked"), b"g", &id, false);
    assert_eq!(code(r), libc::EACCES);
    assert!(fx.exists("locked/g"));
}

#[test]
fn reads_and_writes_follow_the_mode_with_an_owner_override() {
    let fx = Fx::new();
    fx.file("private", b"secret", 0o600, 0, 0);
    fx.file("public", b"hello", 0o644, 0, 0);
    fx.file("ro-own", b"", 0o444, UID, UID);
    let id = user(UID);

    let private = fx.obj("private");
    assert_eq!(code(read_extent(&private, &id, 0, 10)), libc::EACCES);
    let r = write(&private, &id, 0, b"x", WriteStability::FileSync);
    assert_eq!(code(r), libc::EACCES);
    assert_eq!(fx.read("private"), b"secret");

    let public = fx.obj("public");
    let (fd, n, eof, _) = read_extent(&public, &id, 0, 10).unwrap();
    assert_eq!((n, eof), (5, true));
    assert_eq!(pread(&fd, 0, n), b"hello");
    let r = write(&public, &id, 0, b"x", WriteStability::FileSync);
    assert_eq!(code(r), libc::EACCES);
    assert_eq!(fx.read("public"), b"hello");

    // The owner writes its read-only file (open(O_CREAT|O_RDWR, 0444) then write).
    let own = fx.obj("ro-own");
    write(&own, &id, 0, b"mine", WriteStability::FileSync).unwrap();
    assert_eq!(fx.read("ro-own"), b"mine");
    assert_eq!(fx.perm("ro-own"), 0o444);
    // ...but another user may not.
    let r = write(&own, &user(OTHER), 0, b"no", WriteStability::FileSync);
    assert_eq!(code(r), libc::EACCES);
    assert_eq!(fx.read("ro-own"), b"mine");
}

#[test]
fn lookup_needs_search_permission() {
    let fx = Fx::new();
    fx.dir("priv", 0o700, 0, 0);
    fx.file("priv/f", b"", 0o644, 0, 0);
    let dir = fx.obj("priv");
    for name in [&b"f"[..], b".", b".."] {
        let r = lookup(&fx.store, &dir, name, &user(UID));
        assert_eq!(code(r), libc::EACCES, "{:?}", String::from_utf8_lossy(name));
    }
    let r = stat_entry(&dir, b"f", &user(UID));
    assert_eq!(code(r), libc::EACCES);
    assert!(lookup(&fx.store, &dir, b"f", &root()).is_ok());
}

// ---------------------------------------------------------------------------------------
// LOOKUP

#[test]
fn lookup_finds_names_and_dot_dot_of_the_volume_root_stays_in_the_volume() {
    let fx = Fx::new();
    fx.dir("sub", 0o755, 0, 0);
    fx.file("sub/f", b"abc", 0o644, 0, 0);
    let root_ino = fx.meta("").ino();
    let sub_ino = fx.meta("sub").ino();

    let (handle, attr) = lookup(&fx.store, &fx.root(), b"..", &root()).unwrap();
    assert_eq!(
        handle,
        fx.vol.root_handle(),
        "the root's parent is the root"
    );
    assert_eq!(attr.fileid, root_ino);
    let (_, attr) = lookup(&fx.store, &fx.root(), b".", &root()).unwrap();
    assert_eq!(attr.fileid, root_ino);

    let sub = fx.obj("sub");
    let (_, attr) = lookup(&fx.store, &sub, b"..", &root()).unwrap();
    assert_eq!(attr.fileid, root_ino);
    let (_, attr) = lookup(&fx.store, &sub, b".", &root()).unwrap();
    assert_eq!(attr.fileid, sub_ino);
    let (handle, attr) = lookup(&fx.store, &sub, b"f", &user(UID)).unwrap();
    assert_eq!((attr.kind, attr.size), (NodeKind::Regular, 3));
    assert_eq!(attr.fileid, fx.meta("sub/f").ino());
    assert_eq!(getattr(&fx.open(&handle, attr.kind)).unwrap(), attr);
    assert_eq!(stat_entry(&sub, b"f", &root()).unwrap().fileid, attr.fileid);

    assert_eq!(
        code(lookup(&fx.store, &sub, b"missing", &root())),
        libc::ENOENT
    );
    let file = fx.obj("sub/f");
    assert_eq!(code(lookup(&fx.store, &file, b"x", &root())), libc::ENOTDIR);
}

// ---------------------------------------------------------------------------------------
// WRITE, READ, COMMIT

#[test]
fn write_and_read_extent_round_trip_at_offsets() {
    let fx = Fx::new();
    let f = fx.create_file("data", &root());
    let id = root();

    let (before, after, n) = write(&f, &id, 0, b"hello", WriteStability::Unstable).unwrap();
    assert_eq!((before.size, after.size, n), (0, 5, 5));
    let (before, after, n) = write(&f, &id, 10, b"world", WriteStability::DataSync).unwrap();
    assert_eq!((before.size, after.size, n), (5, 15, 5));
    let (before, after, n) = write(&f, &id, 2, b"LL", WriteStability::FileSync).unwrap();
    assert_eq!((before.size, after.size, n), (15, 15, 2));
    assert_eq!(fx.read("data"), b"heLLo\0\0\0\0\0world");
    assert!(after.mtime >= before.mtime);

    let (fd, n, eof, attr) = read_extent(&f, &id, 8, 100).unwrap();
    assert_eq!((n, eof, attr.size), (7, true, 15));
    assert_eq!(pread(&fd, 8, n), b"\0\0world");
    let (fd, n, eof, _) = read_extent(&f, &id, 1, 4).unwrap();
    assert_eq!((n, eof), (4, false));
    assert_eq!(pread(&fd, 1, n), b"eLLo");
    let (_, n, eof, _) = read_extent(&f, &id, 11, 4).unwrap();
    assert_eq!((n, eof), (4, true), "a read reaching the end is at eof");
    for offset in [15, 16, 1 << 40, u64::MAX] {
        let (_, n, eof, _) = read_extent(&f, &id, offset, 10).unwrap();
        assert_eq!((n, eof), (0, true), "offset {offset}");
    }

    let attr = commit(&f).unwrap();
    assert_eq!(attr.size, 15);
    assert_eq!(getattr(&f).unwrap().size, 15);
    // An empty write changes nothing.
    let (_, after, n) = write(&f, &id, 3, b"", WriteStability::FileSync).unwrap();
    assert_eq!((after.size, n), (15, 0));
}

#[test]
fn reads_and_writes_of_what_is_not_a_regular_file_are_refused() {
    let fx = Fx::new();
    fx.dir("d", 0o777, 0, 0);
    std::os::unix::fs::symlink("target", fx.path("l")).unwrap();
    let d = fx.obj("d");
    let l = fx.obj("l");
    assert_eq!(code(read_extent(&d, &root(), 0, 1)), libc::EISDIR);
    let r = write(&d, &root(), 0, b"x", WriteStability::FileSync);
    assert_eq!(code(r), libc::EISDIR);
    assert_eq!(code(read_extent(&l, &root(), 0, 1)), libc::EINVAL);
    let r = write(&l, &root(), 0, b"x", WriteStability::FileSync);
    assert_eq!(code(r), libc::EINVAL);
    assert!(!fx.exists("target"), "the link was not followed");
    // COMMIT of a directory just syncs it.
    assert_eq!(commit(&d).unwrap().kind, NodeKind::Directory);
}

#[test]
fn a_write_past_the_largest_offset_is_efbig() {
    let fx = Fx::new();
    let f = fx.create_file("f", &root());
    let used = fx.vol.quota.used();
    let max = i64::MAX as u64;
    for (offset, len) in [(max, 1), (max - 1, 2), (u64::MAX, 1), (u64::MAX - 1, 4)] {
        let data = vec![1u8; len];
        let r = write(&f, &root(), offset, &data, WriteStability::FileSync);
        assert_eq!(code(r), libc::EFBIG, "offset {offset} length {len}");
    }
    assert_eq!(fx.meta("f").len(), 0);
    assert_eq!(fx.vol.quota.used(), used, "nothing reserved is left behind");
    let r = setattr(&f, &root(), &size(max + 1));
    assert_eq!(code(r), libc::EFBIG);
    assert_eq!(fx.meta("f").len(), 0);
}

#[test]
fn a_read_only_volume_refuses_every_change() {
    let fx = Fx::with(VolumeOptions {
        read_only: true,
        ..VolumeOptions::default()
    });
    fx.file("f", b"data", 0o666, 0, 0);
    fx.dir("d", 0o777, 0, 0);
    let (dir, f) = (fx.root(), fx.obj("f"));
    let id = root();
    let erofs = |r: io::Result<()>| assert_eq!(code(r), libc::EROFS);
    erofs(write(&f, &id, 0, b"x", WriteStability::FileSync).map(drop));
    erofs(setattr(&f, &id, &size(0)));
    erofs(setattr(&f, &id, &mode(0o600)));
    erofs(
        create(
            &fx.store,
            &dir,
            b"n",
            &id,
            CreateHow::Unchecked(SetAttr::default()),
        )
        .map(drop),
    );
    erofs(create(&fx.store, &dir, b"n", &id, CreateHow::Exclusive([1; 8])).map(drop));
    erofs(mkdir(&fx.store, &dir, b"n", &id, &SetAttr::default()).map(drop));
    erofs(symlink(&fx.store, &dir, b"n", &id, b"f").map(drop));
    erofs(
        mknod(
            &fx.store,
            &dir,
            b"n",
            &id,
            NodeSpec::Fifo,
            &SetAttr::default(),
        )
        .map(drop),
    );
    erofs(link(&f, &dir, b"n", &id));
    erofs(remove(&fx.store, &dir, b"f", &id, false));
    erofs(remove(&fx.store, &dir, b"d", &id, true));
    erofs(rename(&fx.store, &dir, b"f", &dir, b"n", &id));
    erofs(allocate(&f, &id, 0, 4096, false));
    erofs(setxattr(&f, &id, b"a", b"b", XattrSet::Either).map(drop));
    erofs(removexattr(&f, &id, b"a").map(drop));

    assert_eq!(fx.read("f"), b"data");
    assert_eq!(fx.perm("f"), 0o666);
    assert!(fx.meta("d").is_dir());
    assert!(!fx.exists("n"));
    // Reading still works, and ACCESS grants no change.
    let (fd, n, _, _) = read_extent(&f, &id, 0, 10).unwrap();
    assert_eq!(pread(&fd, 0, n), b"data");
    assert_eq!(access(&f, &user(UID), A_ALL).unwrap().0, A_READ);
    assert_eq!(access(&dir, &root(), A_ALL).unwrap().0, A_READ | A_LOOKUP);
}

// ---------------------------------------------------------------------------------------
// SETATTR

#[test]
fn setattr_truncates_and_extends() {
    let fx = Fx::new();
    fx.file("f", b"0123456789", 0o644, 0, 0);
    let f = fx.obj("f");
    setattr(&f, &root(), &size(3)).unwrap();
    assert_eq!(fx.read("f"), b"012");
    setattr(&f, &root(), &size(10_000)).unwrap();
    let data = fx.read("f");
    assert_eq!(data.len(), 10_000);
    assert_eq!(&data[..3], b"012");
    assert!(
        data[3..].iter().all(|b| *b == 0),
        "extension reads as zeros"
    );
    assert_eq!(getattr(&f).unwrap().size, 10_000);

    // Not for directories; not for a caller who may not write.
    fx.dir("d", 0o755, 0, 0);
    assert_eq!(code(setattr(&fx.obj("d"), &root(), &size(0))), libc::EISDIR);
    let r = setattr(&f, &user(UID), &size(0));
    assert_eq!(code(r), libc::EACCES);
    assert_eq!(fx.meta("f").len(), 10_000);
}

#[test]
fn setattr_sets_mode_and_times() {
    let fx = Fx::new();
    fx.file("f", b"x", 0o644, UID, UID);
    let f = fx.obj("f");
    let id = user(UID);
    setattr(&f, &id, &mode(0o4750)).unwrap();
    assert_eq!(fx.perm("f"), 0o4750);

    let times = SetAttr {
        atime: TimeSet::Client(1_000_000_000, 123_456_789),
        mtime: TimeSet::Client(1_100_000_000, 5),
        ..SetAttr::default()
    };
    setattr(&f, &id, &times).unwrap();
    let md = fx.meta("f");
    assert_eq!((md.atime(), md.atime_nsec()), (1_000_000_000, 123_456_789));
    assert_eq!((md.mtime(), md.mtime_nsec()), (1_100_000_000, 5));
    let attr = getattr(&f).unwrap();
    assert_eq!(attr.mtime, (1_100_000_000, 5));

    // Only the mtime changes to now; the atime is kept.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let touch = SetAttr {
        mtime: TimeSet::ServerNow,
        ..SetAttr::default()
    };
    setattr(&f, &id, &touch).unwrap();
    let md = fx.meta("f");
    assert!((md.mtime() - now).abs() < 60, "mtime {}", md.mtime());
    assert_eq!(md.atime(), 1_000_000_000);
    assert_eq!(fx.perm("f"), 0o4750, "a mode set alone is kept");
}

#[test]
fn setattr_by_a_user_who_does_not_own_the_file() {
    let fx = Fx::new();
    fx.file("f", b"x", 0o666, 0, 0);
    let f = fx.obj("f");
    let id = user(UID);
    assert_eq!(code(setattr(&f, &id, &mode(0o777))), libc::EPERM);
    let chown = SetAttr {
        uid: Some(UID),
        ..SetAttr::default()
    };
    assert_eq!(code(setattr(&f, &id, &chown)), libc::EPERM);
    let client_time = SetAttr {
        mtime: TimeSet::Client(5, 0),
        ..SetAttr::default()
    };
    assert_eq!(code(setattr(&f, &id, &client_time)), libc::EPERM);
    let md = fx.meta("f");
    assert_eq!((md.mode() & 0o7777, md.uid()), (0o666, 0));
    assert_ne!(md.mtime(), 5);
    // A writer may set the times to now and change the size.
    let touch = SetAttr {
        atime: TimeSet::ServerNow,
        mtime: TimeSet::ServerNow,
        size: Some(0),
        ..SetAttr::default()
    };
    setattr(&f, &id, &touch).unwrap();
    assert_eq!(fx.meta("f").len(), 0);
}

#[test]
fn a_change_of_data_by_a_non_root_owner_clears_set_id_bits() {
    let fx = Fx::new();
    let id = user(UID);
    fx.file("w", b"abc", 0o4755, UID, UID);
    write(&fx.obj("w"), &id, 1, b"x", WriteStability::FileSync).unwrap();
    assert_eq!(fx.read("w"), b"axc");
    assert_eq!(fx.perm("w"), 0o755, "setuid cleared by the write");

    fx.file("t", b"abc", 0o6755, UID, UID);
    setattr(&fx.obj("t"), &id, &size(1)).unwrap();
    assert_eq!(fx.read("t"), b"a");
    assert_eq!(
        fx.perm("t"),
        0o755,
        "setuid and setgid (group-exec) cleared"
    );

    fx.file("a", b"", 0o4755, UID, UID);
    allocate(&fx.obj("a"), &id, 0, 8192, false).unwrap();
    assert_eq!(fx.perm("a"), 0o755, "setuid cleared by ALLOCATE");

    // Root keeps them.
    fx.file("r", b"abc", 0o4755, UID, UID);
    write(&fx.obj("r"), &root(), 0, b"z", WriteStability::FileSync).unwrap();
    assert_eq!(fx.perm("r"), 0o4755);
}

// ---------------------------------------------------------------------------------------
// Names

#[test]
fn bad_names_are_refused_by_every_operation() {
    let fx = Fx::new();
    fx.file("f", b"x", 0o644, 0, 0);
    let (store, dir, f) = (&fx.store, fx.root(), fx.obj("f"));
    let id = root();
    let long = vec![b'a'; NAME_MAX + 1];
    let cases: [(&[u8], i32); 5] = [
        (&long, libc::ENAMETOOLONG),
        (b"a/b", libc::EINVAL),
        (b"/", libc::EINVAL),
        (b"a\0b", libc::EINVAL),
        (b"", libc::ENOENT),
    ];
    for (name, want) in cases {
        let shown = String::from_utf8_lossy(name);
        let none = SetAttr::default();
        let results = [
            create(store, &dir, name, &id, CreateHow::Guarded(none)).map(drop),
            create(store, &dir, name, &id, CreateHow::Exclusive([0; 8])).map(drop),
            mkdir(store, &dir, name, &id, &none).map(drop),
            symlink(store, &dir, name, &id, b"f").map(drop),
            mknod(store, &dir, name, &id, NodeSpec::Fifo, &none).map(drop),
            link(&f, &dir, name, &id),
            lookup(store, &dir, name, &id).map(drop),
            remove(store, &dir, name, &id, false),
            remove(store, &dir, name, &id, true),
            rename(store, &dir, b"f", &dir, name, &id),
            rename(store, &dir, name, &dir, b"g", &id),
        ];
        for (i, r) in results.into_iter().enumerate() {
            assert_eq!(code(r), want, "call {i} with {shown:?}");
        }
    }
    let names: Vec<_> = fs::read_dir(fx.path(""))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["f"], "nothing was made");
    assert_eq!(fx.read("f"), b"x");

    // NAME_MAX itself is fine.
    let longest = vec![b'b'; NAME_MAX];
    create(
        store,
        &dir,
        &longest,
        &id,
        CreateHow::Guarded(SetAttr::default()),
    )
    .unwrap();
    assert!(fx.meta(std::str::from_utf8(&longest).unwrap()).is_file());
}

#[test]
fn dot_and_dot_dot_are_refused_as_new_names_and_by_remove_and_rename() {
    let fx = Fx::new();
    fx.dir("sub", 0o755, 0, 0);
    fx.file("sub/f", b"x", 0o644, 0, 0);
    let (store, dir, f) = (&fx.store, fx.obj("sub"), fx.obj("sub/f"));
    let id = root();
    let none = SetAttr::default();
    for name in [&b"."[..], b".."] {
        let shown = String::from_utf8_lossy(name);
        let made = [
            create(store, &dir, name, &id, CreateHow::Unchecked(none)).map(drop),
            create(store, &dir, name, &id, CreateHow::Exclusive([0; 8])).map(drop),
            mkdir(store, &dir, name, &id, &none).map(drop),
            symlink(store, &dir, name, &id, b"f").map(drop),
            mknod(store, &dir, name, &id, NodeSpec::Fifo, &none).map(drop),
            link(&f, &dir, name, &id),
        ];
        for (i, r) in made.into_iter().enumerate() {
            assert_eq!(code(r), libc::EEXIST, "call {i} with {shown:?}");
        }
        assert_eq!(
            code(rename(store, &dir, b"f", &dir, name, &id)),
            libc::EINVAL
        );
        assert_eq!(
            code(rename(store, &dir, name, &dir, b"g", &id)),
            libc::EINVAL
        );
    }
    for dir_only in [false, true] {
        assert_eq!(code(remove(store, &dir, b".", &id, dir_only)), libc::EINVAL);
        assert_eq!(
            code(remove(store, &dir, b"..", &id, dir_only)),
            libc::ENOTEMPTY
        );
    }
    assert!(fx.meta("sub").is_dir());
    assert_eq!(fx.read("sub/f"), b"x");
    assert_eq!(fs::read_dir(fx.path("sub")).unwrap().count(), 1);
    assert_eq!(fs::read_dir(fx.path("")).unwrap().count(), 1);
}

// ---------------------------------------------------------------------------------------
// MKDIR, REMOVE, RENAME, LINK, SYMLINK, READLINK, MKNOD

#[test]
fn mkdir_applies_its_mode_and_rmdir_refuses_a_non_empty_directory() {
    let fx = Fx::new();
    let root_dir = fx.root();
    let (handle, attr) = mkdir(&fx.store, &root_dir, b"d", &root(), &mode(0o1750)).unwrap();
    assert!(fx.meta("d").is_dir());
    assert_eq!(fx.perm("d"), 0o1750);
    assert_eq!((attr.kind, attr.mode), (NodeKind::Directory, 0o1750));
    let d = fx.open(&handle, attr.kind);
    create(
        &fx.store,
        &d,
        b"f",
        &root(),
        CreateHow::Guarded(SetAttr::default()),
    )
    .unwrap();
    assert!(fx.meta("d/f").is_file());
    assert_eq!(
        code(mkdir(
            &fx.store,
            &root_dir,
            b"d",
            &root(),
            &SetAttr::default()
        )),
        libc::EEXIST
    );

    let r = remove(&fx.store, &root_dir, b"d", &root(), true);
    assert_eq!(code(r), libc::ENOTEMPTY);
    assert!(fx.meta("d/f").is_file());
    // REMOVE of a directory and RMDIR of a file are refused.
    let r = remove(&fx.store, &root_dir, b"d", &root(), false);
    assert_eq!(code(r), libc::EISDIR);
    let r = remove(&fx.store, &d, b"f", &root(), true);
    assert_eq!(code(r), libc::ENOTDIR);
    let r = remove(&fx.store, &d, b"missing", &root(), false);
    assert_eq!(code(r), libc::ENOENT);

    remove(&fx.store, &d, b"f", &root(), false).unwrap();
    remove(&fx.store, &root_dir, b"d", &root(), true).unwrap();
    assert!(!fx.exists("d"));
}

#[test]
fn a_removed_file_is_gone_and_its_handle_is_stale() {
    let fx = Fx::new();
    fx.file("f", b"x", 0o644, 0, 0);
    let (handle, _) = lookup(&fx.store, &fx.root(), b"f", &root()).unwrap();
    let f = fx.store.resolve(&handle, libc::O_PATH).unwrap();
    remove(&fx.store, &fx.root(), b"f", &user(UID), false).unwrap();
    assert!(!fx.exists("f"));
    assert_eq!(code(fx.store.resolve(&handle, libc::O_PATH)), libc::ESTALE);
    drop(f);
    assert_eq!(code(fx.store.resolve(&handle, libc::O_PATH)), libc::ESTALE);
}

#[test]
fn rename_onto_an_existing_file_replaces_it() {
    let fx = Fx::new();
    fx.dir("a", 0o755, 0, 0);
    fx.dir("b", 0o755, 0, 0);
    fx.file("a/src", b"new", 0o644, 0, 0);
    fx.file("b/dst", b"old", 0o644, 0, 0);
    let src_ino = fx.meta("a/src").ino();
    let (a, b) = (fx.obj("a"), fx.obj("b"));
    rename(&fx.store, &a, b"src", &b, b"dst", &root()).unwrap();
    assert!(!fx.exists("a/src"));
    assert_eq!(fx.read("b/dst"), b"new");
    assert_eq!(fx.meta("b/dst").ino(), src_ino);

    // Within one directory, and onto itself (which changes nothing).
    rename(&fx.store, &b, b"dst", &b, b"moved", &root()).unwrap();
    rename(&fx.store, &b, b"moved", &b, b"moved", &root()).unwrap();
    assert!(!fx.exists("b/dst"));
    assert_eq!(fx.read("b/moved"), b"new");

    // A file cannot replace a directory; a missing source is ENOENT.
    let r = rename(&fx.store, &b, b"moved", &fx.root(), b"a", &root());
    assert_eq!(code(r), libc::EISDIR);
    let r = rename(&fx.store, &a, b"missing", &b, b"x", &root());
    assert_eq!(code(r), libc::ENOENT);
    // A directory can replace an empty one but not a non-empty one.
    fx.dir("b/empty", 0o755, 0, 0);
    fx.dir("full", 0o755, 0, 0);
    fx.file("full/x", b"", 0o644, 0, 0);
    let r = rename(&fx.store, &fx.root(), b"a", &fx.root(), b"full", &root());
    assert_eq!(code(r), libc::ENOTEMPTY);
    rename(&fx.store, &fx.root(), b"a", &b, b"empty", &root()).unwrap();
    assert!(!fx.exists("a"));
    assert!(fx.meta("b/empty").is_dir());
    assert!(fx.exists("full/x"));
}

#[test]
fn rename_and_link_across_volumes_are_exdev() {
    let fx = Fx::new();
    fx.store
        .add_volume("other", VolumeOptions::default())
        .unwrap();
    let other = fx.store.volume_by_name("other").unwrap();
    let other_root = fx
        .store
        .resolve(other.root_handle(), libc::O_DIRECTORY)
        .unwrap();
    fx.file("f", b"x", 0o644, 0, 0);
    let r = rename(&fx.store, &fx.root(), b"f", &other_root, b"f", &root());
    assert_eq!(code(r), libc::EXDEV);
    let r = link(&fx.obj("f"), &other_root, b"f", &root());
    assert_eq!(code(r), libc::EXDEV);
    assert!(fx.exists("f"));
    assert!(!other.path.join("f").exists());
}

#[test]
fn link_adds_a_name_to_a_file_but_not_to_a_directory() {
    let fx = Fx::new();
    // Writable by all, so that fs.protected_hardlinks lets any user link it.
    fx.file("f", b"x", 0o666, 0, 0);
    fx.dir("d", 0o755, 0, 0);
    let dir = fx.root();
    let r = link(&fx.obj("f"), &fx.obj("d"), b"g", &user(OTHER));
    assert_eq!(code(r), libc::EACCES, "d is root's, 0755");
    link(&fx.obj("f"), &dir, b"g", &user(UID)).unwrap();
    let (f, g) = (fx.meta("f"), fx.meta("g"));
    assert_eq!(f.ino(), g.ino());
    assert_eq!(f.nlink(), 2);
    assert_eq!(getattr(&fx.obj("f")).unwrap().nlink, 2);

    let r = link(&fx.obj("d"), &dir, b"d2", &root());
    assert_eq!(code(r), libc::EISDIR);
    assert!(!fx.exists("d2"));
    let r = link(&fx.obj("f"), &dir, b"g", &root());
    assert_eq!(code(r), libc::EEXIST);
    assert!(!fx.exists("d/g"));
}

#[test]
fn symlink_and_readlink_round_trip_any_target_bytes() {
    let fx = Fx::new();
    let target: &[u8] = b"../some where/\xff\xfe not utf-8";
    let (handle, attr) = symlink(&fx.store, &fx.root(), b"l", &user(UID), target).unwrap();
    assert_eq!(attr.kind, NodeKind::Symlink);
    let md = fx.meta("l");
    assert!(md.file_type().is_symlink());
    assert_eq!(md.uid(), UID);
    assert_eq!(
        fs::read_link(fx.path("l")).unwrap().as_os_str().as_bytes(),
        target
    );
    let l = fx.open(&handle, attr.kind);
    assert_eq!(readlink(&l).unwrap(), target);
    assert_eq!(readlink(&fx.obj("l")).unwrap(), target);
    assert_eq!(getattr(&l).unwrap().size, target.len() as u64);

    fx.file("f", b"", 0o644, 0, 0);
    assert_eq!(code(readlink(&fx.obj("f"))), libc::EINVAL);
    let r = symlink(&fx.store, &fx.root(), b"nul", &root(), b"a\0b");
    assert_eq!(code(r), libc::EINVAL);
    let long = vec![b'x'; libc::PATH_MAX as usize];
    let r = symlink(&fx.store, &fx.root(), b"long", &root(), &long);
    assert_eq!(code(r), libc::ENAMETOOLONG);
    let r = symlink(&fx.store, &fx.root(), b"l", &root(), b"t");
    assert_eq!(code(r), libc::EEXIST);
    assert!(!fx.exists("nul") && !fx.exists("long"));
}

#[test]
fn mknod_makes_fifos_and_sockets_and_devices_only_for_root() {
    let fx = Fx::new();
    let dir = fx.root();
    let (_, attr) = mknod(
        &fx.store,
        &dir,
        b"p",
        &user(UID),
        NodeSpec::Fifo,
        &mode(0o640),
    )
    .unwrap();
    assert_eq!(attr.kind, NodeKind::Fifo);
    let md = fx.meta("p");
    assert!(md.file_type().is_fifo());
    assert_eq!((md.mode() & 0o7777, md.uid()), (0o640, UID));
    mknod(
        &fx.store,
        &dir,
        b"s",
        &root(),
        NodeSpec::Socket,
        &SetAttr::default(),
    )
    .unwrap();
    assert!(fx.meta("s").file_type().is_socket());

    let r = mknod(
        &fx.store,
        &dir,
        b"c",
        &user(UID),
        NodeSpec::Char(1, 3),
        &SetAttr::default(),
    );
    assert_eq!(code(r), libc::EPERM);
    let r = mknod(
        &fx.store,
        &dir,
        b"b",
        &user(UID),
        NodeSpec::Block(7, 0),
        &SetAttr::default(),
    );
    assert_eq!(code(r), libc::EPERM);
    assert!(!fx.exists("c") && !fx.exists("b"));

    let (_, attr) = mknod(
        &fx.store,
        &dir,
        b"c",
        &root(),
        NodeSpec::Char(1, 3),
        &SetAttr::default(),
    )
    .unwrap();
    assert_eq!(
        (attr.kind, attr.rdev_major, attr.rdev_minor),
        (NodeKind::Char, 1, 3)
    );
    let md = fx.meta("c");
    assert!(md.file_type().is_char_device());
    assert_eq!(md.rdev(), libc::makedev(1, 3));
    // A special file has no data to write.
    let r = write(&fx.obj("p"), &root(), 0, b"x", WriteStability::FileSync);
    assert_eq!(code(r), libc::EINVAL);
}

// ---------------------------------------------------------------------------------------
// READDIR

#[test]
fn readdir_continues_from_cookies_and_lists_every_entry_once() {
    let fx = Fx::new();
    fx.dir("big", 0o755, 0, 0);
    for i in 0..300 {
        fs::write(fx.path(&format!("big/file-{i:03}")), b"").unwrap();
    }
    let dir = fx.obj("big");
    let mut seen: HashMap<Vec<u8>, u64> = HashMap::new();
    let (mut cookie, mut calls) = (0u64, 0);
    loop {
        calls += 1;
        assert!(calls < 100, "the listing does not end");
        let (mut taken, mut next) = (0, cookie);
        let end = readdir(&dir, &user(UID), cookie, |_, e| {
            if taken == 40 {
                return Ok(false);
            }
            taken += 1;
            next = e.cookie;
            let name = String::from_utf8_lossy(&e.name).into_owned();
            assert!(seen.insert(e.name, e.fileid).is_none(), "{name} twice");
            Ok(true)
        })
        .unwrap();
        cookie = next;
        if end {
            break;
        }
        assert_eq!(taken, 40, "a call stopped early only when asked to");
    }
    assert!(calls >= 8, "{calls} calls for 302 entries, 40 a call");
    assert_eq!(seen.len(), 302);
    for i in 0..300 {
        let name = format!("file-{i:03}");
        let ino = fx.meta(&format!("big/{name}")).ino();
        assert_eq!(seen.get(name.as_bytes()), Some(&ino), "{name}");
    }
    assert_eq!(seen.get(&b"."[..]), Some(&fx.meta("big").ino()));
    assert!(seen.contains_key(&b".."[..]));

    // A listing of an empty directory has just the two dots, in one call.
    fx.dir("empty", 0o755, 0, 0);
    let mut names = Vec::new();
    let end = readdir(&fx.obj("empty"), &root(), 0, |_, e| {
        names.push(e.name);
        Ok(true)
    })
    .unwrap();
    names.sort();
    assert!(end);
    assert_eq!(names, [b".".to_vec(), b"..".to_vec()]);
}

#[test]
fn entry_details_give_the_handle_and_attributes_of_listed_names_but_not_the_dots() {
    let fx = Fx::new();
    fx.file("f", b"abc", 0o600, UID, UID);
    let dir = fx.root();
    let mut details = HashMap::new();
    readdir(&dir, &root(), 0, |listing, e| {
        let d = entry_details(&fx.store, &dir, listing.as_fd(), &e.name);
        details.insert(e.name, d);
        Ok(true)
    })
    .unwrap();
    assert_eq!(details.len(), 3);
    assert!(details[&b"."[..]].is_none() && details[&b".."[..]].is_none());
    let (handle, attr) = details[&b"f"[..]].clone().unwrap();
    assert_eq!((attr.size, attr.uid, attr.mode), (3, UID, 0o600));
    assert_eq!(attr.fileid, fx.meta("f").ino());
    assert_eq!(getattr(&fx.open(&handle, attr.kind)).unwrap(), attr);
    assert!(entry_details(&fx.store, &dir, fd_of(&dir), b"missing").is_none());
}

#[test]
fn readdir_needs_read_permission() {
    let fx = Fx::new();
    fx.dir("d", 0o711, 0, 0);
    fx.file("d/f", b"", 0o644, 0, 0);
    let r = readdir(&fx.obj("d"), &user(UID), 0, |_, _| Ok(true));
    assert_eq!(code(r), libc::EACCES);
    // Search permission alone still finds a known name.
    assert!(lookup(&fx.store, &fx.obj("d"), b"f", &user(UID)).is_ok());
}

// ---------------------------------------------------------------------------------------
// ACCESS

#[test]
fn access_grants_the_bits_the_mode_gives_each_class() {
    let fx = Fx::new();
    fx.file("f", b"", 0o640, UID, 50);
    fx.file("x", b"", 0o751, UID, 50);
    fx.file("none", b"", 0o000, UID, 50);
    fx.dir("d", 0o750, UID, 50);
    let owner = user(UID);
    let member = Identity {
        uid: OTHER,
        gid: OTHER,
        groups: vec![50],
    };
    let other = user(3000);
    let rw = A_READ | A_MODIFY | A_EXTEND;
    let granted = |rel: &str, id: &Identity| access(&fx.obj(rel), id, A_ALL).unwrap().0;

    assert_eq!(granted("f", &owner), rw);
    assert_eq!(granted("f", &member), A_READ);
    assert_eq!(granted("f", &other), 0);
    assert_eq!(
        granted("f", &root()),
        rw,
        "root executes nothing unexecutable"
    );

    assert_eq!(granted("x", &owner), rw | A_EXECUTE);
    assert_eq!(granted("x", &member), A_READ | A_EXECUTE);
    assert_eq!(granted("x", &other), A_EXECUTE);
    assert_eq!(granted("x", &root()), rw | A_EXECUTE);

    assert_eq!(granted("none", &owner), 0);
    assert_eq!(granted("none", &root()), rw);

    assert_eq!(granted("d", &owner), rw | A_DELETE | A_LOOKUP);
    assert_eq!(granted("d", &member), A_READ | A_LOOKUP);
    assert_eq!(granted("d", &other), 0);
    assert_eq!(granted("d", &root()), rw | A_DELETE | A_LOOKUP);

    // Only what was asked is answered, with the object's attributes.
    let (bits, attr) = access(&fx.obj("f"), &owner, A_READ | A_EXECUTE).unwrap();
    assert_eq!(bits, A_READ);
    assert_eq!((attr.uid, attr.gid, attr.mode), (UID, 50, 0o640));
}

// ---------------------------------------------------------------------------------------
// Volume size

fn sized(bytes: u64) -> Fx {
    Fx::with(VolumeOptions {
        size: Some(bytes),
        ..VolumeOptions::default()
    })
}

#[test]
fn a_write_near_the_volume_size_is_short_and_then_edquot() {
    let fx = sized(64 * 1024);
    let q = &fx.vol.quota;
    assert_eq!(q.limit(), Some(64 * 1024));
    let f = fx.create_file("big", &root());
    let available = q.available();
    assert!(available > 0 && available < 64 * 1024, "{available}");

    let data = vec![7u8; 128 * 1024];
    let (_, after, n) = write(&f, &root(), 0, &data, WriteStability::FileSync).unwrap();
    assert_eq!(n as u64, available, "cut short at the limit");
    assert_eq!(after.size, n as u64);
    assert_eq!(fx.meta("big").len(), n as u64);
    assert!(q.is_full(), "used {} of {:?}", q.used(), q.limit());

    let r = write(&f, &root(), n as u64, &data[n..], WriteStability::FileSync);
    assert_eq!(code(r), libc::EDQUOT);
    assert_eq!(fx.meta("big").len(), n as u64);
    // Data already allocated may still be rewritten.
    write(&f, &root(), 0, b"rewritten", WriteStability::FileSync).unwrap();
    assert_eq!(&fx.read("big")[..9], b"rewritten");

    // A full volume takes no new names and no growth.
    let dir = fx.root();
    let none = SetAttr::default();
    let r = create(&fx.store, &dir, b"n", &root(), CreateHow::Guarded(none));
    assert_eq!(code(r), libc::EDQUOT);
    assert_eq!(
        code(mkdir(&fx.store, &dir, b"n", &root(), &none)),
        libc::EDQUOT
    );
    assert_eq!(
        code(symlink(&fx.store, &dir, b"n", &root(), b"t")),
        libc::EDQUOT
    );
    assert_eq!(code(setattr(&f, &root(), &size(1 << 20))), libc::EDQUOT);
    assert!(!fx.exists("n"));
    assert_eq!(fx.meta("big").len(), n as u64);

    // FSSTAT shows the volume's size, with nothing left.
    let s = fsstat(&dir).unwrap();
    assert_eq!(s.f_blocks * s.f_frsize, 64 * 1024);
    assert_eq!((s.f_bfree, s.f_bavail), (0, 0));

    // Removing the file gives its space back.
    remove(&fx.store, &dir, b"big", &root(), false).unwrap();
    assert!(
        q.available() >= available,
        "{} < {available}",
        q.available()
    );
    let f = fx.create_file("again", &root());
    let (_, _, n) = write(&f, &root(), 0, &data[..4096], WriteStability::FileSync).unwrap();
    assert_eq!(n, 4096);
}

#[test]
fn space_is_counted_once_for_hard_links_and_given_back_by_the_last_name() {
    let fx = sized(1 << 20);
    let q = &fx.vol.quota;
    let f = fx.create_file("a", &root());
    let empty = q.used();
    write(&f, &root(), 0, &[1u8; 64 * 1024], WriteStability::FileSync).unwrap();
    let full = q.used();
    assert!(full >= empty + 64 * 1024, "{full} after {empty}");
    assert_eq!(full - empty, fx.meta("a").blocks() * 512);

    let dir = fx.root();
    link(&f, &dir, b"b", &root()).unwrap();
    remove(&fx.store, &dir, b"a", &root(), false).unwrap();
    assert!(q.used() >= full - 4096, "the data still has a name");
    // Renaming a link onto the same file keeps both names and the space.
    link(&fx.obj("b"), &dir, b"c", &root()).unwrap();
    rename(&fx.store, &dir, b"b", &dir, b"c", &root()).unwrap();
    assert!(fx.exists("b") && fx.exists("c"));
    assert!(q.used() >= full - 4096);
    remove(&fx.store, &dir, b"b", &root(), false).unwrap();
    remove(&fx.store, &dir, b"c", &root(), false).unwrap();
    assert!(q.used() < empty + 4096, "{} after removing all", q.used());
}

#[test]
fn allocate_reserves_and_punch_frees_space() {
    let fx = sized(4 << 20);
    let q = &fx.vol.quota;
    let f = fx.create_file("f", &root());
    let start = q.used();
    allocate(&f, &root(), 0, 1 << 20, false).unwrap();
    let md = fx.meta("f");
    assert_eq!(md.len(), 1 << 20);
    assert!(md.blocks() * 512 >= 1 << 20);
    assert_eq!(q.used() - start, md.blocks() * 512);

    allocate(&f, &root(), 0, 1 << 20, true).unwrap();
    let md = fx.meta("f");
    assert_eq!(md.len(), 1 << 20, "punching keeps the size");
    assert!(md.blocks() * 512 < 1 << 20);
    assert_eq!(q.used() - start, md.blocks() * 512);

    // More than the volume has left: refused, nothing allocated.
    let r = allocate(&f, &root(), 0, 8 << 20, false);
    assert_eq!(code(r), libc::EDQUOT);
    assert_eq!(fx.meta("f").len(), 1 << 20);
    assert_eq!(q.used() - start, fx.meta("f").blocks() * 512);
    let r = allocate(&f, &root(), u64::MAX, 1, false);
    assert_eq!(code(r), libc::EFBIG);
}

// ---------------------------------------------------------------------------------------
// SEEK, extended attributes

#[test]
fn seek_finds_data_and_holes() {
    let fx = Fx::new();
    let f = fx.create_file("sparse", &root());
    write(&f, &root(), 1 << 20, b"data", WriteStability::FileSync).unwrap();
    assert_eq!(seek(&f, &root(), 0, false).unwrap(), Some(1 << 20));
    assert_eq!(seek(&f, &root(), 0, true).unwrap(), Some(0));
    assert_eq!(
        seek(&f, &root(), (1 << 20) + 2, false).unwrap(),
        Some((1 << 20) + 2)
    );
    assert_eq!(
        seek(&f, &root(), 1 << 20, true).unwrap(),
        Some((1 << 20) + 4)
    );
    assert_eq!(seek(&f, &root(), 2 << 20, false).unwrap(), None);
    // Past what an offset can be: no data either (as ENXIO, which is NFS4ERR_NXIO too).
    match seek(&f, &root(), u64::MAX, false) {
        Ok(None) => {}
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn user_xattrs_are_set_read_listed_and_removed() {
    let fx = Fx::new();
    fx.file("f", b"", 0o644, 0, 0);
    let f = fx.obj("f");
    if !xattr_support(&f) {
        eprintln!("no user xattrs on this file system: skipped");
        return;
    }
    let on_disk = |name: &str| {
        let path = CString::new(fx.path("f").as_os_str().as_bytes()).unwrap();
        let name = CString::new(format!("user.{name}")).unwrap();
        let mut buf = [0u8; 256];
        // SAFETY: valid C strings; the buffer is writable for its length.
        let n = unsafe {
            libc::lgetxattr(
                path.as_ptr(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        (n >= 0).then(|| buf[..n as usize].to_vec())
    };

    setxattr(&f, &root(), b"color", b"blue", XattrSet::Create).unwrap();
    assert_eq!(on_disk("color").as_deref(), Some(&b"blue"[..]));
    assert_eq!(getxattr(&f, &user(UID), b"color").unwrap(), b"blue");
    let r = setxattr(&f, &root(), b"color", b"red", XattrSet::Create);
    assert_eq!(code(r), libc::EEXIST);
    let r = setxattr(&f, &root(), b"missing", b"x", XattrSet::Replace);
    assert_eq!(code(r), libc::ENODATA);
    setxattr(&f, &root(), b"color", b"red", XattrSet::Replace).unwrap();
    assert_eq!(on_disk("color").as_deref(), Some(&b"red"[..]));
    assert_eq!(listxattr(&f, &root()).unwrap(), [b"color".to_vec()]);

    // Changing needs write permission.
    let r = setxattr(&f, &user(UID), b"mine", b"x", XattrSet::Either);
    assert_eq!(code(r), libc::EACCES);
    assert_eq!(on_disk("mine"), None);
    for bad in [&b""[..], b"a\0b"] {
        let r = setxattr(&f, &root(), bad, b"x", XattrSet::Either);
        assert_eq!(code(r), libc::EINVAL);
    }

    removexattr(&f, &root(), b"color").unwrap();
    assert_eq!(on_disk("color"), None);
    assert_eq!(code(getxattr(&f, &root(), b"color")), libc::ENODATA);
    assert_eq!(code(removexattr(&f, &root(), b"color")), libc::ENODATA);
    assert!(listxattr(&f, &root()).unwrap().is_empty());
}

#[test]
fn create_says_whether_it_made_the_file() {
    let fx = Fx::new();
    let made = |how| {
        super::create(&fx.store, &fx.root(), b"f", &root(), how)
            .unwrap()
            .1
    };
    assert!(made(CreateHow::Unchecked(SetAttr::default())));
    assert!(!made(CreateHow::Unchecked(SetAttr::default())));
    let (_, made_x) = super::create(
        &fx.store,
        &fx.root(),
        b"x",
        &root(),
        CreateHow::Exclusive([7; 8]),
    )
    .unwrap();
    assert!(made_x);
    // A retransmitted EXCLUSIVE create finds its own file: not made by this call.
    let (_, again) = super::create(
        &fx.store,
        &fx.root(),
        b"x",
        &root(),
        CreateHow::Exclusive([7; 8]),
    )
    .unwrap();
    assert!(!again);
}

#[test]
fn resolve_attr_reads_the_attributes_now_and_a_removed_file_is_stale() {
    let fx = Fx::new();
    let f = fx.create_file("f", &root());
    let handle = fx.store.handle_of(&fx.vol, f.fd.as_fd(), c"").unwrap();
    let (obj, attr) = fx.store.resolve_attr(&handle, libc::O_PATH).unwrap();
    assert_eq!(attr, getattr(&obj).unwrap());
    // Changed beside the server between two calls: the next call sees the change (nothing
    // is kept from one resolve to the next), and ACCESS judges by it.
    fs::set_permissions(fx.path("f"), fs::Permissions::from_mode(0o600)).unwrap();
    let (obj, attr) = fx.store.resolve_attr(&handle, libc::O_PATH).unwrap();
    assert_eq!(attr.mode, 0o600);
    assert_eq!(access_given(&obj, &user(UID), A_ALL, attr).0, 0);
    fs::remove_file(fx.path("f")).unwrap();
    assert_eq!(
        code(fx.store.resolve_attr(&handle, libc::O_PATH)),
        libc::ESTALE
    );
}
