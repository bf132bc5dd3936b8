//! NFSv4.2 extended attributes (RFC 8276) against the whole in-process server, with
//! COMPOUNDs built by hand: GETXATTR, SETXATTR (each option), LISTXATTRS (maxcount and
//! cookies) and REMOVEXATTR with their exact statuses, the `user.` namespace they map to on
//! the export's disk, permissions, read-only and full volumes, the xattr_support attribute
//! and the ACCESS xattr bits, and the ops being OP_ILLEGAL in minor version 1.

mod common;

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use common::nfs4::*;
use common::*;

const XATTR_SUPPORT: u32 = 82;
const XAREAD: u32 = 0x40;
const XAWRITE: u32 = 0x80;
const XALIST: u32 = 0x100;

fn c_path(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

/// The value of extended attribute `name` (with its namespace) of a file on the host.
fn host_xattr(path: &Path, name: &str) -> Result<Vec<u8>, i32> {
    let mut buf = vec![0u8; 64 * 1024];
    let name = CString::new(name).unwrap();
    // SAFETY: valid C strings, a writable buffer of its length.
    let n = unsafe {
        libc::getxattr(
            c_path(path).as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

fn set_host_xattr(path: &Path, name: &str, value: &[u8]) {
    let name = CString::new(name).unwrap();
    // SAFETY: valid C strings, the value readable for its length.
    let r = unsafe {
        libc::setxattr(
            c_path(path).as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
}

/// change_info4 of a SETXATTR or REMOVEXATTR result: atomic, before, after.
fn change_info(body: &[u8]) -> (bool, u64, u64) {
    let mut c = Cur(body);
    (c.u32() == 1, c.u64(), c.u64())
}

/// LISTXATTRS4resok: cookie, names, eof.
fn listing(body: &[u8]) -> (u64, Vec<Vec<u8>>, bool) {
    let mut c = Cur(body);
    let cookie = c.u64();
    let names = (0..c.u32()).map(|_| c.opaque().to_vec()).collect();
    (cookie, names, c.u32() == 1)
}

/// The last op's status of a SEQUENCE, PUTFH, `op` compound.
async fn last(c: &mut V4, fh: &[u8], op: Vec<u8>) -> (u32, u32, Compound) {
    let (_, r) = c.seq(false, &[putfh(fh), op]).await;
    let (code, status) = *r.statuses().last().unwrap();
    (code, status, r)
}

async fn status_of(c: &mut V4, fh: &[u8], op: Vec<u8>) -> u32 {
    last(c, fh, op).await.1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_get_list_and_remove_map_to_the_user_namespace() {
    let server = Server::start().await;
    let fh = file(&server, "f", b"data");
    let path = server.vol_path(VOL).join("f");
    let mut c = V4::mount_minor(&server, root_cred(), b"xattr", GENEROUS, 2).await;

    // EITHER creates; the value is `user.color` on the export's disk.
    let (_, s, r) = last(&mut c, &fh, setxattr(0, b"color", b"blue")).await;
    assert_eq!(s, OK);
    let (atomic, before, after) = change_info(r.body(OP_SETXATTR));
    assert!(!atomic && after >= before, "{before} {after}");
    assert_eq!(host_xattr(&path, "user.color").unwrap(), b"blue");
    assert_eq!(host_xattr(&path, "color"), Err(libc::EOPNOTSUPP));

    // CREATE of an existing name: EXIST, the value unchanged.
    assert_eq!(
        status_of(&mut c, &fh, setxattr(1, b"color", b"x")).await,
        EXIST
    );
    assert_eq!(host_xattr(&path, "user.color").unwrap(), b"blue");
    // REPLACE of an existing name, of a missing one (NOXATTR, nothing created).
    assert_eq!(
        status_of(&mut c, &fh, setxattr(2, b"color", b"red")).await,
        OK
    );
    assert_eq!(
        status_of(&mut c, &fh, setxattr(2, b"shape", b"x")).await,
        NOXATTR
    );
    assert_eq!(host_xattr(&path, "user.shape"), Err(libc::ENODATA));
    // CREATE of a new name; an empty value is a value.
    assert_eq!(status_of(&mut c, &fh, setxattr(1, b"shape", b"")).await, OK);
    // An option that does not exist.
    assert_eq!(status_of(&mut c, &fh, setxattr(3, b"x", b"")).await, 22);

    let (_, s, r) = last(&mut c, &fh, getxattr(b"color")).await;
    assert_eq!(s, OK);
    assert_eq!(Cur(r.body(OP_GETXATTR)).opaque(), b"red");
    let (_, s, r) = last(&mut c, &fh, getxattr(b"shape")).await;
    assert_eq!(s, OK);
    assert_eq!(Cur(r.body(OP_GETXATTR)).opaque(), b"");
    assert_eq!(status_of(&mut c, &fh, getxattr(b"missing")).await, NOXATTR);

    // Only `user.` names are listed, without the prefix.
    set_host_xattr(&path, "trusted.hidden", b"t");
    set_host_xattr(&path, "user.zeta", b"z");
    let (_, s, r) = last(&mut c, &fh, listxattrs(0, 4096)).await;
    assert_eq!(s, OK);
    let (_, mut all, eof) = listing(r.body(OP_LISTXATTRS));
    assert!(eof);
    all.sort();
    assert_eq!(all, [&b"color"[..], b"shape", b"zeta"]);

    // maxcount counts the whole result (cookie, array length, eof: 16 bytes): 16 + 4 + 8
    // holds one name of up to 8 bytes, less holds none (TOOSMALL).
    assert_eq!(status_of(&mut c, &fh, listxattrs(0, 27)).await, TOOSMALL);
    assert_eq!(status_of(&mut c, &fh, listxattrs(0, 8)).await, TOOSMALL);
    let mut seen = Vec::new();
    let mut cookie = 0;
    for call in 0.. {
        let (_, s, r) = last(&mut c, &fh, listxattrs(cookie, 28)).await;
        assert_eq!(s, OK);
        let (next, names, eof) = listing(r.body(OP_LISTXATTRS));
        assert_eq!(names.len(), 1, "call {call}: one name fits");
        seen.extend(names);
        cookie = next;
        if eof {
            break;
        }
        assert!(call < 3, "eof after the last name");
    }
    seen.sort();
    assert_eq!(seen, all, "the cookies resume where the last call stopped");
    // Two calls: one name, then the rest from its cookie.
    let (_, _, r) = last(&mut c, &fh, listxattrs(0, 28)).await;
    let (next, first, eof) = listing(r.body(OP_LISTXATTRS));
    assert!(!eof);
    let (_, s, r) = last(&mut c, &fh, listxattrs(next, 4096)).await;
    assert_eq!(s, OK);
    let (_, rest, eof) = listing(r.body(OP_LISTXATTRS));
    assert!(eof);
    let mut both = [first, rest].concat();
    both.sort();
    assert_eq!(both, all);
    // A cookie past the end lists nothing; one never handed out is BAD_COOKIE.
    let (_, _, r) = last(&mut c, &fh, listxattrs(3, 4096)).await;
    assert_eq!(listing(r.body(OP_LISTXATTRS)).1.len(), 0);
    assert_eq!(
        status_of(&mut c, &fh, listxattrs(u64::MAX, 4096)).await,
        10003
    );

    // REMOVEXATTR, twice.
    let (_, s, r) = last(&mut c, &fh, removexattr(b"shape")).await;
    assert_eq!(s, OK);
    let (_, before, after) = change_info(r.body(OP_REMOVEXATTR));
    assert!(after >= before);
    assert_eq!(host_xattr(&path, "user.shape"), Err(libc::ENODATA));
    assert_eq!(status_of(&mut c, &fh, removexattr(b"shape")).await, NOXATTR);
    assert_eq!(host_xattr(&path, "trusted.hidden").unwrap(), b"t");

    // Directories have them too; the pseudo file system has none.
    let dir = volume_root(&server, VOL);
    assert_eq!(status_of(&mut c, &dir, setxattr(0, b"d", b"1")).await, OK);
    assert_eq!(
        host_xattr(&server.vol_path(VOL), "user.d").unwrap(),
        b"1".to_vec()
    );
    let (_, r) = c.seq(false, &[words(&[24]), getxattr(b"d")]).await;
    assert_eq!(r.statuses().last(), Some(&(OP_GETXATTR, NOTSUPP)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sizes_past_the_linux_limits_are_refused() {
    let server = Server::start().await;
    let fh = file(&server, "f", b"");
    let mut c = V4::mount_minor(&server, root_cred(), b"sizes", GENEROUS, 2).await;
    let big = vec![7u8; 64 * 1024 + 1];
    assert_eq!(
        status_of(&mut c, &fh, setxattr(0, b"big", &big)).await,
        XATTR2BIG
    );
    // 255 bytes with `user.`: 250 of name.
    let long = vec![b'n'; 251];
    assert_eq!(status_of(&mut c, &fh, setxattr(0, &long, b"v")).await, 63);
    assert_eq!(status_of(&mut c, &fh, getxattr(&long)).await, 63);
    assert_eq!(
        status_of(&mut c, &fh, setxattr(0, &long[..250], b"v")).await,
        OK
    );
    // Empty and non-UTF-8 names.
    assert_eq!(status_of(&mut c, &fh, setxattr(0, b"", b"v")).await, 22);
    assert_eq!(status_of(&mut c, &fh, getxattr(b"\xff")).await, 22);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_volume_refuses_changes_with_rofs() {
    let server = Server::with_volumes(&[(
        "ro",
        VolumeOptions {
            read_only: true,
            ..VolumeOptions::default()
        },
    )])
    .await;
    let path = server.vol_path("ro").join("f");
    std::fs::write(&path, b"").unwrap();
    set_host_xattr(&path, "user.kept", b"k");
    let fh = handle(&server, "ro", "f");
    let mut c = V4::mount_minor(&server, root_cred(), b"ro", GENEROUS, 2).await;
    assert_eq!(
        status_of(&mut c, &fh, setxattr(0, b"new", b"v")).await,
        ROFS
    );
    assert_eq!(status_of(&mut c, &fh, removexattr(b"kept")).await, ROFS);
    // Reading and listing work; ACCESS grants no XAWRITE.
    let (_, s, r) = last(&mut c, &fh, getxattr(b"kept")).await;
    assert_eq!(s, OK);
    assert_eq!(Cur(r.body(OP_GETXATTR)).opaque(), b"k");
    assert_eq!(status_of(&mut c, &fh, listxattrs(0, 4096)).await, OK);
    let (_, _, r) = last(&mut c, &fh, access(XAREAD | XAWRITE | XALIST)).await;
    let mut b = Cur(r.body(OP_ACCESS));
    assert_eq!(
        (b.u32(), b.u32()),
        (XAREAD | XAWRITE | XALIST, XAREAD | XALIST)
    );
    assert_eq!(host_xattr(&path, "user.kept").unwrap(), b"k");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_without_permission_is_refused() {
    let server = Server::start().await;
    let fh = file(&server, "f", b"");
    let path = server.vol_path(VOL).join("f");
    set_host_xattr(&path, "user.owned", b"root's");
    let secret = file(&server, "secret", b"");
    let secret_path = server.vol_path(VOL).join("secret");
    set_host_xattr(&secret_path, "user.s", b"s");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(&secret_path, std::fs::Permissions::from_mode(0o600)).unwrap();

    let mut c = V4::mount_minor(&server, sys_cred(1000, 1000, b"user"), b"user", GENEROUS, 2).await;
    // Not the owner, no write permission: no changes.
    assert_eq!(
        status_of(&mut c, &fh, setxattr(0, b"mine", b"v")).await,
        ACCESS
    );
    assert_eq!(status_of(&mut c, &fh, removexattr(b"owned")).await, ACCESS);
    assert_eq!(host_xattr(&path, "user.owned").unwrap(), b"root's");
    assert_eq!(host_xattr(&path, "user.mine"), Err(libc::ENODATA));
    // Reading needs read permission.
    assert_eq!(status_of(&mut c, &fh, getxattr(b"owned")).await, OK);
    assert_eq!(status_of(&mut c, &secret, getxattr(b"s")).await, ACCESS);
    // ACCESS says the same.
    let all = XAREAD | XAWRITE | XALIST;
    let (_, _, r) = last(&mut c, &fh, access(all | 1)).await;
    let mut b = Cur(r.body(OP_ACCESS));
    assert_eq!((b.u32(), b.u32()), (all | 1, XAREAD | XALIST | 1));
    let (_, _, r) = last(&mut c, &secret, access(all)).await;
    let mut b = Cur(r.body(OP_ACCESS));
    assert_eq!((b.u32(), b.u32()), (all, XALIST));

    // Root is squashed on a root_squash volume: root's files are not its to change.
    server.add_volume(
        "squashed",
        VolumeOptions {
            squash: export_store::Squash::Root,
            ..VolumeOptions::default()
        },
    );
    let sq = server.vol_path("squashed").join("f");
    std::fs::write(&sq, b"").unwrap();
    std::fs::set_permissions(&sq, std::fs::Permissions::from_mode(0o644)).unwrap();
    let sq_fh = handle(&server, "squashed", "f");
    let mut root = V4::mount_minor(&server, root_cred(), b"root", GENEROUS, 2).await;
    assert_eq!(
        status_of(&mut root, &sq_fh, setxattr(0, b"r", b"v")).await,
        ACCESS
    );
    assert_eq!(status_of(&mut root, &fh, setxattr(0, b"r", b"v")).await, OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xattr_bytes_count_against_the_volume_size() {
    let limit = 256 * 1024;
    let server = Server::with_volumes(&[(
        VOL,
        VolumeOptions {
            size: Some(limit),
            ..VolumeOptions::default()
        },
    )])
    .await;
    let fh = file(&server, "f", b"");
    let path = server.vol_path(VOL).join("f");
    let quota = || {
        server
            .running
            .store
            .volume_by_name(VOL)
            .unwrap()
            .quota
            .used()
    };
    let blocks = || {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&path).unwrap().blocks() * 512
    };
    let mut c = V4::mount_minor(&server, root_cred(), b"quota", GENEROUS, 2).await;
    // A value too large to live in the inode takes a block: charged, then credited back.
    let (used, allocated) = (quota(), blocks());
    assert_eq!(
        status_of(&mut c, &fh, setxattr(0, b"v", &[1; 3000])).await,
        OK
    );
    assert_eq!(quota() - used, blocks() - allocated);
    assert_eq!(status_of(&mut c, &fh, removexattr(b"v")).await, OK);
    assert_eq!(quota(), used);

    // A full volume refuses new attributes with DQUOT.
    let mut offset = 0;
    loop {
        let (_, r) = c
            .seq(false, &[putfh(&fh), nfs4_write(offset, &[9; 64 * 1024])])
            .await;
        if r.status != OK {
            assert_eq!(r.status, DQUOT);
            break;
        }
        offset += u64::from(Cur(r.body(OP_WRITE)).u32());
        assert!(offset <= limit, "writes stop at the limit");
    }
    assert!(quota() >= limit);
    assert_eq!(status_of(&mut c, &fh, setxattr(0, b"w", b"v")).await, DQUOT);
    assert_eq!(host_xattr(&path, "user.w"), Err(libc::ENODATA));
}

fn nfs4_write(offset: u64, data: &[u8]) -> Vec<u8> {
    common::nfs4::write(&ANONYMOUS, offset, data)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xattr_ops_are_illegal_in_minor_version_1() {
    let server = Server::start().await;
    let fh = file(&server, "f", b"");
    let mut c = V4::mount_minor(&server, root_cred(), b"v41", GENEROUS, 1).await;
    for op in [
        getxattr(b"a"),
        setxattr(0, b"a", b"v"),
        listxattrs(0, 4096),
        removexattr(b"a"),
    ] {
        let (_, r) = c.seq(false, &[putfh(&fh), op]).await;
        assert_eq!(r.status, OP_ILLEGAL);
        assert_eq!(
            r.statuses(),
            [(OP_SEQUENCE, OK), (OP_PUTFH, OK), (OP_ILLEGAL, OP_ILLEGAL)]
        );
    }
    // ACCESS answers only the 4.1 bits; xattr_support is not an attribute of 4.1.
    let (_, _, r) = last(&mut c, &fh, access(0x1ff)).await;
    let mut b = Cur(r.body(OP_ACCESS));
    assert_eq!(b.u32(), 0x3f);
    let (_, _, r) = last(&mut c, &fh, getattr_of(&[XATTR_SUPPORT])).await;
    let mut b = Cur(r.body(OP_GETATTR));
    assert_eq!(b.u32(), 0, "an empty bitmap");
    assert_eq!(
        host_xattr(&server.vol_path(VOL).join("f"), "user.a"),
        Err(libc::ENODATA)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xattr_support_is_true_in_volumes_on_v42() {
    let server = Server::start().await;
    let fh = file(&server, "f", b"");
    let mut c = V4::mount_minor(&server, root_cred(), b"support", GENEROUS, 2).await;
    let value = |r: &Compound| {
        let mut b = Cur(r.body(OP_GETATTR));
        let n = b.u32();
        let words: Vec<u32> = (0..n).map(|_| b.u32()).collect();
        let vals = b.opaque();
        (words, vals.to_vec())
    };
    let (_, s, r) = last(&mut c, &fh, getattr_of(&[XATTR_SUPPORT])).await;
    assert_eq!(s, OK);
    assert_eq!(
        value(&r),
        (vec![0, 0, 1 << (XATTR_SUPPORT - 64)], words(&[1]))
    );
    // supported_attrs includes it.
    let (_, _, r) = last(&mut c, &fh, getattr_of(&[0])).await;
    let (_, vals) = value(&r);
    let mut v = Cur(&vals);
    let n = v.u32();
    let sup: Vec<u32> = (0..n).map(|_| v.u32()).collect();
    assert!(
        sup.len() == 3 && sup[2] & (1 << (XATTR_SUPPORT - 64)) != 0,
        "{sup:?}"
    );
    // The pseudo root has none.
    let (_, r) = c
        .seq(false, &[words(&[24]), getattr_of(&[XATTR_SUPPORT])])
        .await;
    assert_eq!(value(&r).1, words(&[0]));
}
