//! Every NFSv3 procedure (RFC 1813 section 3.3) and its error paths, driven over loopback TCP
//! by the independent `nfs3_client` crate against an in-process server.

mod common;

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::time::{SystemTime, UNIX_EPOCH};

use common::*;
use nfs3_types::xdr_codec::Pack;

fn now_secs() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as u32
}

// ---------------------------------------------------------------------------------------
// NULL, GETATTR

#[tokio::test]
async fn null_procedure_answers() {
    let s = Server::start().await;
    let mut c = s.client().await;
    c.null().await.expect("NULL");
}

#[tokio::test]
async fn getattr_of_volume_root_matches_the_directory_on_disk() {
    let s = Server::start().await;
    let root = s.root_fh(VOL).await;
    let mut c = s.client().await;
    let a = getattr(&mut c, &root).await.expect("GETATTR root");
    let md = std::fs::metadata(s.vol_path(VOL)).unwrap();
    assert_eq!(a.type_, ftype3::NF3DIR);
    assert_eq!(a.mode, 0o777, "volumes are created 0777");
    assert_eq!(a.fileid, md.ino());
    assert_eq!(a.nlink as u64, md.nlink());
    assert_eq!((a.uid, a.gid), (md.uid(), md.gid()));
    let vol_id = s.running.store.volume_by_name(VOL).unwrap().id();
    assert_eq!(a.fsid, u64::from(vol_id), "fsid is the volume id");
}

#[tokio::test]
async fn getattr_of_file_reports_type_size_mode_and_times() {
    let s = Server::start().await;
    let root = s.root_fh(VOL).await;
    let mut c = s.client().await;
    let f = file_with(&mut c, &root, "f", 0o640, b"hello world").await;
    let a = getattr(&mut c, &f).await.unwrap();
    let md = std::fs::metadata(s.vol_path(VOL).join("f")).unwrap();
    assert_eq!(a.type_, ftype3::NF3REG);
    assert_eq!(a.mode, 0o640);
    assert_eq!(a.size, 11);
    assert_eq!(a.nlink, 1);
    assert_eq!(a.fileid, md.ino());
    assert_eq!(a.mtime.seconds as i64, md.mtime());
    assert_eq!(a.mtime.nseconds as i64, md.mtime_nsec());
    assert_eq!(a.ctime.seconds as i64, md.ctime());
    assert!(a.used >= 11, "used {} covers the data", a.used);
}

// ---------------------------------------------------------------------------------------
// SETATTR

async fn setattr(c: &mut Client, f: &nfs_fh3, set: sattr3, guard: sattrguard3) -> SETATTR3res {
    c.setattr(&SETATTR3args {
        object: f.clone(),
        new_attributes: set,
        guard,
    })
    .await
    .expect("SETATTR rpc")
}

#[tokio::test]
async fn setattr_mode_changes_permission_bits() {
    let s = Server::start().await;
    let root = s.root_fh(VOL).await;
    let mut c = s.client().await;
    let (f, _) = create(&mut c, &root, "f", 0o644).await;
    let r = setattr(&mut c, &f, with_mode(0o4751), Nfs3Option::None).await;
    let ok = r.unwrap();
    assert_eq!(attrs(ok.obj_wcc.after).mode, 0o4751);
    assert!(ok.obj_wcc.before.is_some(), "wcc before attributes sent");
    let md = std::fs::metadata(s.vol_path(VOL).join("f")).unwrap();
    assert_eq!(md.mode() & 0o7777, 0o4751);
    assert_eq!(getattr(&mut c, &f).await.unwrap().mode, 0o4751);
}

#[tokio::test]
async fn setattr_uid_and_gid_as_root_chowns_the_file() {
    let s = Server::start().await;
    let root = s.root_fh(VOL).await;
    let mut c = s.client().await;
    let (f, a) = create(&mut c, &root, "f", 0o644).await;
    assert_eq!((a.uid, a.gid), (0, 0));
    let set = sattr3 {
        uid: Nfs3Option::Some(1234),
        gid: Nfs3Option::Some(5678),
        ..sattr3::default()
    };
    let ok = setattr(&mut c, &f, set, Nfs3Option::None).await.unwrap();
    let after = attrs(ok.obj_wcc.after);
    assert_eq!((after.uid, after.gid), (1234, 5678));
    let md = std::fs::metadata(s.vol_path(VOL).join("f")).unwrap();
    assert_eq!((md.uid(), md.gid()), (1234, 5678));
}

#[tokio::test]
async fn setattr_mode_and_owner_together_keep_the_setuid_bit() {
    // A chown clears setuid; the mode sent in the same call must win.
    let s = Server::start().await;
    let root = s.root_fh(VOL).await;
    let mut c = s.client().await;
    let (f, _) = create(&mut c, &root, "suid", 0o644).await;
    let set = sattr3 {
        mode: Nfs3Option::Some(0o4755),
        uid: Nfs3Option::Some(1234),
        gid: Nfs3Option::Some(1234),
        ..sattr3::default()
    };
    let ok = setattr(&mut c, &f, set, Nfs3Option::None).await.unwrap();
    let a = attrs(ok.obj_wcc.after);
    assert_eq!((a.mode, a.uid, a.gid), (0o4755, 1234, 1234));
}

#[tokio::test]
async fn create_as_root_applies_owner_from_attributes() {
    let s = Server::start().await;
    let root = s.root_fh(VOL).await;
    let mut c = s.client().await;
    let set = sattr3 {
        mode: Nfs3Option::Some(0o600),
        uid: Nfs3Option::Some(1234),
        gid: Nfs3Option::Some(5678),
        ..sattr3::default()
    };
    let ok = c
        .create(&CREATE3args {
            where_: dirop(&root, "owned"),
            how: createhow3::GUARDED(set),
        })
        .await
        .unwrap()
        .unwrap();
    let a = attrs(ok.obj_attributes);
    assert_eq!((a.mode, a.uid, a.gid), (0o600, 1234, 5678));
    let md = std::fs::metadata(s.vol_path(VOL).join("owned")).unwrap();
    assert_eq!(
        (md.uid(), md.gid(), md.mode() & 0o7777),
        (1234, 5678, 0o600)
    );
}

#[tokio::test]
async fn setattr_size_truncates_and_extends_with_zeros() {
    let s = Server::start().await;
    let root = s.root_fh(VOL).await;
    let mut c = s.client().await;
    let f = file_with(&mut c, &root, "f", 0o644, &[7u8; 100]).await;

    let size = |n| sattr3 {
        size: Nfs3Option::Some(n),
        ..sattr3::default()
    };
    let ok = setattr(&mut c, &f, size(10), Nfs3Option::None)
        .await
        .unwrap();
    assert_eq!(attrs(ok.obj_wcc.after).size, 10);
    match ok.obj_wcc.before {
        Nfs3Option::Some(b) => assert_eq!(b.size, 100, "wcc before size"),
        Nfs3Option::None => panic!("no wcc before attributes"),
    }
    assert_eq!(read_all(&mut c, &f).await, vec![7u8; 10]);

    let ok = setattr(&mut c, &f, size(50), Nfs3Option::None)
        .await
        .unwrap();
    assert_eq!(attrs(ok.obj_wcc.after).size, 50);
    let mut expected = vec![7u8; 10];
    expected.resize(50, 0);
    assert_eq!(read_all(&mut c, &f).await, expected);
    assert_eq!(std::fs::read(s.vol_path(VOL).join("f")).unwrap(), expected);
}

#[tokio::test]
async fn setattr_size_of_directory_is_isdir() {
    let s = Server::start().await;
    let root = s.root_fh(VOL).await;
    let mut c = s.client().await;
    let (d, _) = mkdir(&mut c, &root, "d", 0o755).await;
    let set = sattr3 {
        size: Nfs3Option::Some(0),
        ..sattr3::default()
    };
    let r = setattr(&mut c, &d, set, Nfs3Option::None).await;
    assert_eq!(status(&r), nfsstat3::NFS3ERR_ISDIR);
}

#[tokio::test]
async fn setattr_client_times_are_stored_exactly() {
    let s = Server::start().await;
    let root = s.root_fh(VOL).await;
    let mut c = s.client().await;
    let (f, _) = create(&mut c, &root, "f", 0o644).await;
    let at = nfstime3 {
        seconds: 1_000_000_000,
        nseconds: 123_456_789,
    };
    let mt = nfstime3 {
        seconds: 1_200_000_000,
        nseconds: 987_654_321,
    };
    let set = sattr3 {
        atime: set_atime::SET_TO_CLIENT_TIME(at),
        mtime: set_mtime::SET_TO_CLIENT_TIME(mt),
        ..sattr3::default()
    };
    setattr(&mut c, &f, set, Nfs3Option::None).await.unwrap();
    let a = getattr(&mut c, &f).await.unwrap();
    assert_eq!(a.atime, at);
    assert_eq!(a.mtime, mt);
    let md = std::fs::metadata(s.vol_path(VOL).join("f")).unwrap();
    assert_eq!((md.atime(), md.atime_nsec()), (1_000_000_000, 123_456_789));
    assert_eq!((md.mtime(), md.mtime_nsec()), (1_200_000_000, 987_654_321));
}

#[tokio::test]
async fn setattr_server_time_sets_times_to_now() {
    let s = Server::start().await;
    let root = s.root_fh(VOL).await;
    let mut c = s.client().await;
    let (f, _) = create(&mut c, &root, "f", 0o644).await;
    let old = nfstime3 {
        seconds: 1_000,
        nseconds: 0,
    };
    let set_old = sattr3 {
        atime: set_atime::SET_TO_CLIENT_TIME(old),
        mtime: set_mtime::SET_TO_CLIENT_TIME(old),
        ..sattr3::default()
    };
    setattr(&mut c, &f, set_old, Nfs3Option::None)
        .await
        .unwrap();
    let before = now_secs();
    let set_now = sattr3 {
        atime: set_atime::SET_TO_SERVER_TIME,
        mtime: set_mtime::SET_TO_SERVER_TIME,
        ..sattr3::default()
    };
    setattr(&mut c, &f, set_now, Nfs3Option::None)
        .await
        .unwrap();
    let after = now_secs();
    let a = getattr(&mut c, &f).await.unwrap();
    for t in [a.atime, a.mtime] {
        assert!(
            t.seconds + 1 >= before && t.seconds <= after + 1,
            "time {t:?} not within [{before}, {after}]"
        );
    }
}

#[tokio::test]
async fn setattr_with_stale_ctime_guard_is_not_sync_and_changes_nothing() {
    let s = Server::start().await;
    let root = s.root_fh(VOL).await;
    let mut c = s.client().await;
    let (f, a) = create(&mut c, &root, "f", 0o644).await;
    let wrong = nfstime3 {
        seconds: a.ctime.seconds.wrapping_sub(100),
        nseconds: a.ctime.nseconds,
    };
    let r = setattr(&mut c, &f, with_mode(0o600), Nfs3Option::Some(wrong)).await;
    assert_eq!(status(&r), nfsstat3::NFS3ERR_NOT_SYNC);
    assert_eq!(getattr(&mut c, &f).await.unwrap().mode, 0o644);

    // The right guard (the current ctime) lets the change through.
    let r = setattr(&mut c, &f, with_mode(0o600), Nfs3Option::Some(a.ctime)).await;
    assert_eq!(status(&r), nfsstat3::NFS3_OK);
    assert_eq!(getattr(&mut c, &f).await.unwrap().mode, 0o600);
}

// ---------------------------------------------------------------------------------------
// LOOKUP

#[tokio::test]
async fn lookup_finds_created_file_with_same_handle_and_attributes() {
    let s = Server::start().await;
    let root = s.root_fh(VOL).await;
    let mut c = s.client().await;
    let (f, a) = create(&mut c, &root, "file.txt", 0o644).await;
    let r = c
        .lookup(&LOOKUP3args {
            what: dirop(&root, "file.txt"),
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.object, f, "LOOKUP returns the handle CREATE returned");
    assert_eq!(attrs(r.obj_attributes).fileid, a.fileid);
    assert_eq!(attrs(r.dir_attributes).type_, ftype3::NF3DIR);
}

#[tokio::test]
async fn lookup_missing_name_is_noent_with_dir_attributes() {
    let s = Server::start().await;
    let root = s.root_fh(VOL).await;
    let mut c = s.client().await;
    let r = c
        .lookup(&LOOKUP3args {
            what: dirop(&root, "nope"),
        })
        .await
        .unwrap();
    match r {
        Nfs3Result::Err((st, fail)) => {
            assert_eq!(st, nfsstat3::NFS3ERR_NOENT);
            assert_eq!(attrs(fail.dir_attributes).type_, ftype3::NF3DIR);
        }
        Nfs3Result::Ok(_) => panic!("LOOKUP of a missing name succeeded"),
    }
}

#[tokio::test]
async fn lookup_name_longer_than_255_bytes_is_nametoolong() {
    let s = Server::start().await;
    let root = s.root_fh(VOL).await;
    let mut c = s.client().await;
    let long = "a".repeat(256);
    assert_eq!(
        lookup(&mut c, &root, &long).await.unwrap_err(),
        nfsstat3::NFS3ERR_NAMETOOLONG
    );
    // 255 bytes is a legal name: simply absent.
    assert_eq!(
        lookup(&mut c, &root, &"a".repeat(255)).await.unwrap_err(),
        nfsstat3::NFS3ERR_NOENT
    );
}

#[tokio::test]
async fn lookup_dotdot_at_volume_root_returns_the_root_itself() {
    let s = Server::start().await;
    let root = s.root_fh(VOL).await;
    let mut c = s.client().await;
    let root_attr = getattr(&mut c, &root).await.unwrap();
    let (up, up_attr) = lookup(&mut c, &root, "..").await.expect("LOOKUP ..");
    assert_eq!(
        up_attr.fileid, root_attr.fileid,
        ".. of the root is the root"
    );
    assert_eq!(up_attr.fsid, root_attr.fsid);
    let export_root_ino = std::fs::metadata(s.export_root()).unwrap().ino();
    assert_ne!(up_attr.fileid, export_root_ino, "must not leave the volume");
    // And the handle it returned is the root's, usable as such.
    assert_eq!(getattr(&mut c, &up).await.unwrap().fileid, root_attr.fileid);
    let (up2, up2_attr) = lookup(&mut c, &up, "..").await.unwrap();
    assert_eq!(up2_attr.fileid, root_attr.fileid);
    assert_eq!(up2, up);
}

#[tokio::test]
async fn lookup_dot_returns_the_directory_and_dotdot_of_subdir_its_parent() {
    let s = Server::start().await;
    let root = s.root_fh(VOL).await;
    let mut c = s.client().await;
    let root_attr = getattr(&mut c, &root).await.unwrap();
    let (d, d_attr) = mkdir(&mut c, &root, "sub", 0o755).await;
    let (_, dot) = lookup(&mut c, &d, ".").await.expect("LOOKUP .");
    assert_eq!(dot.fileid, d_attr.fileid);
    let (_, dotdot) = lookup(&mut c, &d, "..").await.expect("LOOKUP ..");
    assert_eq!(dotdot.fileid, root_attr.fileid);
}

#[tokio::test]
async fn lookup_of_name_with_slash_or_nul_is_refused() {
    let s = Server::start().await;
    let root = s.root_fh(VOL).await;
    let mut c = s.client().await;
    let (d, _) = mkdir(&mut c, &root, "a", 0o755).await;
    create(&mut c, &d, "b", 0o644).await;
    for bad in ["a/b", "a\0b", "/a"] {
        let st = lookup(&mut c, &root, bad).await.unwrap_err();
        assert!(
            matches!(st, nfsstat3::NFS3ERR_INVAL | nfsstat3::NFS3ERR_ACCES),
            "LOOKUP {bad:?}: {st}"
        );
    }
    let st = lookup(&mut c, &root, "").await.unwrap_err();
    assert!(
        matches!(
            st,
            nfsstat3::NFS3ERR_NOENT | nfsstat3::NFS3ERR_INVAL | nfsstat3::NFS3ERR_ACCES
        ),
        "LOOKUP of the empty name: {st}"
    );
}

#[tokio::test]
async fn lookup_in_a_regular_file_is_notdir() {
    let s = Server::start().await;
    let root = s.root_fh(VOL).await;
    let mut c = s.client().await;
    let (f, _) = create(&mut c, &root, "f", 0o644).await;
    assert_eq!(
        lookup(&mut c, &f, "x").await.unwrap_err(),
        nfsstat3::NFS3ERR_NOTDIR
    );
}

// ---------------------------------------------------------------------------------------
// ACCESS

const ALL_ACCESS: u32 = ACCESS3_READ
    | ACCESS3_LOOKUP
    | ACCESS3_MODIFY
    | ACCESS3_EXTEND
    | ACCESS3_DELETE
    | ACCESS3_EXECUTE;

async fn access(c: &mut Client, f: &nfs_fh3, want: u32) -> u32 {
    let ok = c
        .access(&ACCESS3args {
            object: f.clone(),
            access: want,
        })
        .await
        .expect("ACCESS rpc")
        .unwrap();
    assert!(ok.obj_attributes.is_some());
    ok.access
}

#[tokio::test]
async fn access_grants_owner_and_other_uids_different_bits() {
    let s = Server::start().await;
    let root = s.root_fh(VOL).await;
    let mut owner = s.client_as(USER).await;
    let (f, a) = create(&mut owner, &root, "mine", 0o604).await;
    assert_eq!(a.uid, USER.0, "file created by uid 1000 is owned by it");

    let granted_owner = access(&mut owner, &f, ALL_ACCESS).await;
    assert_eq!(
        granted_owner,
        ACCESS3_READ | ACCESS3_MODIFY | ACCESS3_EXTEND,
        "owner has rw-"
    );
    let mut other = s.client_as((2000, 2000)).await;
    let granted_other = access(&mut other, &f, ALL_ACCESS).await;
    assert_eq!(granted_other, ACCESS3_READ, "others have r--");
    // Only requested bits are ever granted.
    assert_eq!(access(&mut owner, &f, ACCESS3_MODIFY).await, ACCESS3_MODIFY);

    // Directories: lookup and delete instead of execute.
    let (d, _) = mkdir(&mut owner, &root, "dir", 0o750).await;
    let dir_owner = access(&mut owner, &d, ALL_ACCESS).await;
    assert_eq!(
        dir_owner,
        ACCESS3_READ | ACCESS3_LOOKUP | ACCESS3_MODIFY | ACCESS3_EXTEND | ACCESS3_DELETE
    );
    assert_eq!(access(&mut other, &d, ALL_ACCESS).await, 0);
}

#[tokio::test]
async fn access_for_root_does_not_grant_execute_of_non_executable_file() {
    let s = Server::start().await;
    let root = s.root_fh(VOL).await;
    let mut c = s.client().await;
    let (f, _) = create(&mut c, &root, "f", 0o644).await;
    assert_eq!(
        access(&mut c, &f, ALL_ACCESS).await,
        ACCESS3_READ | ACCESS3_MODIFY | ACCESS3_EXTEND
    );
    let (x, _) = create(&mut c, &root, "x", 0o700).await;
    assert_eq!(access(&mut c, &x, ACCESS3_EXECUTE).await, ACCESS3_EXECUTE);
}

// ---------------------------------------------------------------------------------------
// READLINK, SYMLINK

#[tokio::test]
async fn symlink_creates_link_and_readlink_returns_its_target() {
    let s = Server::start().await;
    let root = s.root_fh(VOL).await;
    let mut c = s.client().await;
    let target = "../some/where/else";
    let ok = c
        .symlink(&SYMLINK3args {
            where_: dirop(&root, "ln"),
            symlink: symlinkdata3 {
                symlink_attributes: sattr3::default(),
                symlink_data: nfspath3::from(target.as_bytes()),
            },
        })
        .await
        .unwrap()
        .unwrap();
    let ln = handle_of(ok.obj);
    let a = attrs(ok.obj_attributes);
    assert_eq!(a.type_, ftype3::NF3LNK);
    assert_eq!(a.size, target.len() as u64);
    assert!(ok.dir_wcc.after.is_some());
    assert_eq!(
        std::fs::read_link(s.vol_path(VOL).join("ln")).unwrap(),
        std::path::Path::new(target)
    );

    let r = c
        .readlink(&READLINK3args { symlink: ln })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.data.as_ref(), target.as_bytes());
    assert_eq!(attrs(r.symlink_attributes).type_, ftype3::NF3LNK);

    // LOOKUP does not follow the link.
    let (_, la) = lookup(&mut c, &root, "ln").await.unwrap();
    assert_eq!(la.type_, ftype3::NF3LNK);
}

#[tokio::test]
async fn readlink_of_regular_file_is_inval() {
    let s = Server::start().await;
    let root = s.root_fh(VOL).await;
    let mut c = s.client().await;
    let (f, _) = create(&mut c, &root, "f", 0o644).await;
    let r = c.readlink(&READLINK3args { symlink: f }).await.unwrap();
    assert_eq!(status(&r), nfsstat3::NFS3ERR_INVAL);
}

#[tokio::test]
async fn symlink_over_existing_name_is_exist() {
    let s = Server::start().await;
    let root = s.root_fh(VOL).await;
    let mut c = s.client().await;
    create(&mut c, &root, "taken", 0o644).await;
    let r = c
        .symlink(&SYMLINK3args {
            where_: dirop(&root, "taken"),
            symlink: symlinkdata3 {
                symlink_attributes: sattr3::default(),
                symlink_data: nfspath3::from(&b"x"[..]),
            },
        })
        .await
        .unwrap();
    assert_eq!(status(&r), nfsstat3::NFS3ERR_EXIST);
}

// ---------------------------------------------------------------------------------------
// READ

#[tokio::test]
async fn read_returns_data_and_sets_eof_only_at_the_end() {
    let s = Server::start().await;
    let root = s.root_fh(VOL).await;
    let mut c = s.client().await;
    let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let f = file_with(&mut c, &root, "f", 0o644, &data).await;

    let r = try_read(&mut c, &f, 0, 4096).await.unwrap();
    assert_eq!(r.count, 4096);
    assert_eq!(r.data.as_ref(), &data[..4096]);
    assert!(!r.eof, "eof before the end");
    assert_eq!(attrs(r.file_attributes).size, 10_000);

    let r = try_read(&mut c, &f, 9_000, 4096).await.unwrap();
    assert_eq!(r.count, 1000);
    assert_eq!(r.data.as_ref(), &data[9_000..]);
    assert!(r.eof, "eof when the read reaches the end");

    let r = try_read(&mut c, &f, 0, 10_000).await.unwrap();
    assert_eq!(r.data.as_ref(), &data[..]);
    assert!(r.eof, "eof when the read ends exactly at the end");
}

#[tokio::test]
async fn read_at_offset_beyond_eof_returns_nothing_with_eof() {
    let s = Server::start().await;
    let root = s.root_fh(VOL).await;
    let mut c = s.client().await;
    let f = file_with(&mut c, &root, "f", 0o644, b"short").await;
    for offset in [5u64, 6, 1 << 20, 1 << 40] {
        let r = try_read(&mut c, &f, offset, 100).await.unwrap();
        assert_eq!(r.count, 0, "offset {offset}");
        assert!(r.data.is_empty());
        assert!(r.eof, "eof at offset {offset}");
    }
}

#[tokio::test]
async fn read_larger_than_rtmax_returns_at_most_rtmax() {
    let s = Server::start().await;
    let root = s.root_fh(VOL).await;
    let mut c = s.client().await;
    let data: Vec<u8> = (0..(3u32 << 19)).map(|i| (i % 253) as u8).collect(); // 1.5 MiB
    std::fs::write(s.vol_path(VOL).join("big"), &data).unwrap();
    let (f, _) = lookup(&mut c, &root, "big").await.unwrap();
    let r = try_read(&mut c, &f, 0, 2 << 20).await.unwrap();
    assert_eq!(r.count, 1 << 20, "READ is capped at rtmax (1 MiB)");
    assert_eq!(r.data.as_ref(), &data[..1 << 20]);
    assert!(!r.eof);
    assert_eq!(read_all(&mut c, &f).await, data);
}

#[tokio::test]
async fn read_of_directory_is_isdir() {
    let s = Server::start().await;
    let root = s.root_fh(VOL).await;
    let mut c = s.client().await;
    assert_eq!(
        try_read(&mut c, &root, 0, 10).await.unwrap_err(),
        nfsstat3::NFS3ERR_ISDIR
    );
}

// ---------------------------------------------------------------------------------------
// WRITE, COMMIT

#[tokio::test]
async fn write_each_stability_reports_count_and_committed_level() {
    let s = Server::start().await;
    let root = s.root_fh(VOL).await;
    let mut c = s.client().await;
    let (f, _) = create(&mut c, &root, "f", 0o644).await;
    let mut verifiers = Vec::new();
    for (i, stable) in [
        stable_how::UNSTABLE,
        stable_how::DATA_SYNC,
        stable_how::FILE_SYNC,
    ]
    .into_iter()
    .enumerate()
    {
        let data = vec![b'a' + i as u8; 1000];
        let ok = try_write(&mut c, &f, i as u64 * 1000, &data, stable)
            .await
            .unwrap();
        assert_eq!(ok.count, 1000, "{stable}: count");
        assert!(
            ok.committed as u32 >= stable as u32,
            "{stable}: committed {} is weaker than asked",
            ok.committed
        );
        let after = attrs(ok.file_wcc.after);
        assert_eq!(after.size, (i as u64 + 1) * 1000, "{stable}: size after");
        match ok.file_wcc.before {
            Nfs3Option::Some(b) => assert_eq!(b.size, i as u64 * 1000, "{stable}: size before"),
            Nfs3Option::None => panic!("{stable}: no wcc before attributes"),
        }
        verifiers.push(ok.verf);
    }
    assert!(
        verifiers.iter().all(|v| *v == verifiers[0]),
        "one verifier per server instance: {verifiers:?}"
    );
    let mut expected = vec![b'a'; 1000];
    expected.extend(vec![b'b'; 1000]);
    expected.extend(vec![b'c'; 1000]);
    assert_eq!(read_all(&mut c, &f).await, expected);
    assert_eq!(std::fs::read(s.vol_path(VOL).join("f")).unwrap(), expected);
}

#[tokio::test]
async fn write_unstable_then_commit_returns_same_verifier() {
    let s = Server::start().await;
    let root = s.root_fh(VOL).await;
    let mut c = s.client().await;
    let (f, _) = create(&mut c, &root, "f", 0o644).await;
    let w = try_write(&mut c, &f, 0, &[1u8; 64 * 1024], stable_how::UNSTABLE)
        .await
        .unwrap();
    assert_eq!(w.count, 64 * 1024);
    let ok = c
        .commit(&COMMIT3args {
            file: f.clone(),
            offset: 0,
            count: 0,
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ok.verf, w.verf, "COMMIT verifier equals WRITE verifier");
    assert_eq!(attrs(ok.file_wcc.after).size, 64 * 1024);
}

#[tokio::test]
async fn write_at_offset_leaves_a_hole_of_zeros() {
    let s = Server::start().await;
    let root = s.root_fh(VOL).await;
    let mut c = s.client().await;
    let (f, _) = create(&mut c, &root, "f", 0o644).await;
    write(&mut c, &f, 4096, b"tail").await;
    let data = read_all(&mut c, &f).await;
    assert_eq!(data.len(), 4100);
    assert!(data[..4096].iter().all(|&b| b == 0));
    assert_eq!(&data[4096..], b"tail");
}

#[tokio::test]
async fn write_of_one_mebibyte_in_one_call_is_accepted_whole() {
    let s = Server::start().await;
    let root = s.root_fh(VOL).await;
    let mut c = s.client().await;
    let (f, _) = create(&mut c, &root, "f", 0o644).await;
    let data: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 241) as u8).collect();
    let ok = try_write(&mut c, &f, 0, &data, stable_how::UNSTABLE)
        .await
        .unwrap();
    assert_eq!(ok.count, 1 << 20);
    assert_eq!(read_all(&mut c, &f).await, data);
}

#[tokio::test]
async fn write_to_directory_is_isdir() {
    let s = Server::start().await;
    let root = s.root_fh(VOL).await;
    let mut c = s.client().await;
    assert_eq!(
        try_write(&mut c, &root, 0, b"x", stable_how::FILE_SYNC)
            .await
            .unwrap_err(),
        nfsstat3::NFS3ERR_ISDIR
    );
}

#[tokio::test]
async fn write_of_zero_bytes_succeeds_and_changes_nothing() {
    let s = Server::start().await;
    let root = s.root_fh(VOL).await;
    let mut c = s.client().await;
    let f = file_with(&mut c, &root, "f", 0o644, b"abc").await;
    let ok = try_write(&mut c, &f, 10, b"", stable_how::FILE_SYNC)
        .await
        .unwrap();
    assert_eq!(ok.count, 0);
    assert_eq!(attrs(ok.file_wcc.after).size, 3);
    assert_eq!(read_all(&mut c, &f).await, b"abc");
}

#[tokio::test]
async fn write_and_truncate_beyond_maximum_file_size_are_fbig() {
    let s = Server::start().await;
    let root = s.root_fh(VOL).await;
    let mut c = s.client().await;
    let f = file_with(&mut c, &root, "f", 0o644, b"abc").await;
    for offset in [u64::MAX - 2, (1u64 << 63) - 2] {
        assert_eq!(
            try_write(&mut c, &f, offset, b"abcd", stable_how::FILE_SYNC)
                .await
                .unwrap_err(),
            nfsstat3::NFS3ERR_FBIG,
            "WRITE at {offset:#x}"
        );
    }
    let r = c
        .setattr(&SETATTR3args {
            object: f.clone(),
            new_attributes: sattr3 {
                size: Nfs3Option::Some(u64::MAX),
                ..sattr3::default()
            },
            guard: Nfs3Option::None,
        })
        .await
        .unwrap();
    assert_eq!(status(&r), nfsstat3::NFS3ERR_FBIG);
    // Reading there is merely the end of the file.
    let r = try_read(&mut c, &f, u64::MAX, 10).await.unwrap();
    assert_eq!((r.count, r.eof), (0, true));
    assert_eq!(read_all(&mut c, &f).await, b"abc");
}

// ---------------------------------------------------------------------------------------
// CREATE

async fn create_how(c: &mut Client, dir: &nfs_fh3, n: &str, how: createhow3) -> CREATE3res {
    c.create(&CREATE3args {
        where_: dirop(dir, n),
        how,
    })
    .await
    .expect("CREATE rpc")
}

#[tokio::test]
async fn create_unchecked_makes_file_and_keeps_existing_one() {
    let s = Server::start().await;
    let root = s.root_fh(VOL).await;
    let mut c = s.client().await;
    let ok = create_how(&mut c, &root, "u", createhow3::UNCHECKED(with_mode(0o640)))
        .await
        .unwrap();
    let f = handle_of(ok.obj);
    let a = attrs(ok.obj_attributes);
    assert_eq!((a.type_, a.mode, a.size), (ftype3::NF3REG, 0o640, 0));
    let dir_after = attrs(ok.dir_wcc.after);
    assert_eq!(dir_after.type_, ftype3::NF3DIR);
    assert!(ok.dir_wcc.before.is_some());
    let md = std::fs::metadata(s.vol_path(VOL).join("u")).unwrap();
    assert_eq!(md.mode() & 0o7777, 0o640);
    write(&mut c, &f, 0, b"keep me").await;

    // UNCHECKED on an existing file succeeds, returns the same file and keeps its data.
    let ok = create_how(&mut c, &root, "u", createhow3::UNCHECKED(with_mode(0o600)))
        .await
        .unwrap();
    assert_eq!(handle_of(ok.obj), f);
    assert_eq!(read_all(&mut c, &f).await, b"keep me");
    assert_eq!(getattr(&mut c, &f).await.unwrap().mode, 0o640);

    // ... but a size in the attributes applies (O_TRUNC).
    let trunc = sattr3 {
        size: Nfs3Option::Some(0),
        ..sattr3::default()
    };
    create_how(&mut c, &root, "u", createhow3::UNCHECKED(trunc))
        .await
        .unwrap();
    assert_eq!(getattr(&mut c, &f).await.unwrap().size, 0);
}

#[tokio::test]
async fn create_guarded_on_existing_name_is_exist() {
    let s = Server::start().await;
    let root = s.root_fh(VOL).await;
    let mut c = s.client().await;
    let f = file_with(&mut c, &root, "g", 0o644, b"original").await;
    let r = create_how(&mut c, &root, "g", createhow3::GUARDED(with_mode(0o600))).await;
    match r {
        Nfs3Result::Err((st, fail)) => {
            assert_eq!(st, nfsstat3::NFS3ERR_EXIST);
            assert!(fail.dir_wcc.after.is_some(), "failure carries dir wcc");
        }
        Nfs3Result::Ok(_) => panic!("GUARDED create over an existing file succeeded"),
    }
    assert_eq!(read_all(&mut c, &f).await, b"original");
    // Also EXIST over a directory.
    mkdir(&mut c, &root, "d", 0o755).await;
    let r = create_how(&mut c, &root, "d", createhow3::GUARDED(with_mode(0o600))).await;
    assert_eq!(status(&r), nfsstat3::NFS3ERR_EXIST);
}

#[tokio::test]
async fn create_exclusive_retransmit_with_same_verifier_returns_same_handle() {
    let s = Server::start().await;
    let root = s.root_fh(VOL).await;
    let mut c = s.client().await;
    let verf = createverf3([0xde, 0xad, 0xbe, 0xef, 0x12, 0x34, 0x56, 0x78]);
    let first = create_how(&mut c, &root, "x", createhow3::EXCLUSIVE(verf))
        .await
        .unwrap();
    let h1 = handle_of(first.obj);
    assert_eq!(attrs(first.obj_attributes).type_, ftype3::NF3REG);

    let again = create_how(&mut c, &root, "x", createhow3::EXCLUSIVE(verf))
        .await
        .expect("retransmitted EXCLUSIVE create succeeds");
    assert_eq!(handle_of(again.obj), h1, "same file handle");

    let other = createverf3([1, 2, 3, 4, 5, 6, 7, 8]);
    let r = create_how(&mut c, &root, "x", createhow3::EXCLUSIVE(other)).await;
    assert_eq!(status(&r), nfsstat3::NFS3ERR_EXIST);

    // The client then sets the real attributes, after which the file is a normal file.
    let set = sattr3 {
        mode: Nfs3Option::Some(0o644),
        atime: set_atime::SET_TO_SERVER_TIME,
        mtime: set_mtime::SET_TO_SERVER_TIME,
        ..sattr3::default()
    };
    let ok = c
        .setattr(&SETATTR3args {
            object: h1.clone(),
            new_attributes: set,
            guard: Nfs3Option::None,
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(attrs(ok.obj_wcc.after).mode, 0o644);
    write(&mut c, &h1, 0, b"data").await;
    assert_eq!(read_all(&mut c, &h1).await, b"data");
}

#[tokio::test]
async fn create_exclusive_over_existing_plain_file_is_exist() {
    let s = Server::start().await;
    let root = s.root_fh(VOL).await;
    let mut c = s.client().await;
    create(&mut c, &root, "plain", 0o644).await;
    let r = create_how(
        &mut c,
        &root,
        "plain",
        createhow3::EXCLUSIVE(createverf3([9; 8])),
    )
    .await;
    assert_eq!(status(&r), nfsstat3::NFS3ERR_EXIST);
}

#[tokio::test]
async fn create_with_bad_names_is_refused() {
    let s = Server::start().await;
    let root = s.root_fh(VOL).await;
    let mut c = s.client().await;
    assert_eq!(
        try_create(&mut c, &root, &"n".repeat(256), 0o644)
            .await
            .unwrap_err(),
        nfsstat3::NFS3ERR_NAMETOOLONG
    );
    for dots in [".", ".."] {
        assert_eq!(
            try_create(&mut c, &root, dots, 0o644).await.unwrap_err(),
            nfsstat3::NFS3ERR_EXIST,
            "CREATE {dots}"
        );
    }
    let (f, _) = create(&mut c, &root, "f", 0o644).await;
    assert_eq!(
        try_create(&mut c, &f, "in-a-file", 0o644)
            .await
            .unwrap_err(),
        nfsstat3::NFS3ERR_NOTDIR
    );
}

// ---------------------------------------------------------------------------------------
// MKDIR, MKNOD

#[tokio::test]
async fn mkdir_creates_directory_and_existing_name_is_exist() {
    let s = Server::start().await;
    let root = s.root_fh(VOL).await;
    let mut c = s.client().await;
    let root_before = getattr(&mut c, &root).await.unwrap();
    let (d, a) = mkdir(&mut c, &root, "dir", 0o750).await;
    assert_eq!((a.type_, a.mode, a.nlink), (ftype3::NF3DIR, 0o750, 2));
    let md = std::fs::metadata(s.vol_path(VOL).join("dir")).unwrap();
    assert!(md.is_dir());
    assert_eq!(md.mode() & 0o7777, 0o750);
    assert_eq!(
        getattr(&mut c, &root).await.unwrap().nlink,
        root_before.nlink + 1,
        "the parent gained a link"
    );
    // A directory inside works too.
    let (_, inner) = mkdir(&mut c, &d, "inner", 0o700).await;
    assert_eq!(inner.type_, ftype3::NF3DIR);

    assert_eq!(
        try_mkdir(&mut c, &root, "dir", 0o755).await.unwrap_err(),
        nfsstat3::NFS3ERR_EXIST
    );
    create(&mut c, &root, "file", 0o644).await;
    assert_eq!(
        try_mkdir(&mut c, &root, "file", 0o755).await.unwrap_err(),
        nfsstat3::NFS3ERR_EXIST
    );
}

async fn mknod(c: &mut Client, dir: &nfs_fh3, n: &str, what: mknoddata3) -> MKNOD3res {
    c.mknod(&MKNOD3args {
        where_: dirop(dir, n),
        what,
    })
    .await
    .expect("MKNOD rpc")
}

#[tokio::test]
async fn mknod_fifo_and_socket_succeed() {
    let s = Server::start().await;
    let root = s.root_fh(VOL).await;
    let mut c = s.client_as(USER).await;
    let ok = mknod(&mut c, &root, "fifo", mknoddata3::NF3FIFO(with_mode(0o640)))
        .await
        .unwrap();
    let a = attrs(ok.obj_attributes);
    assert_eq!((a.type_, a.mode, a.uid), (ftype3::NF3FIFO, 0o640, USER.0));
    let fifo = handle_of(ok.obj);
    assert_eq!(getattr(&mut c, &fifo).await.unwrap().type_, ftype3::NF3FIFO);

    let ok = mknod(&mut c, &root, "sock", mknoddata3::NF3SOCK(with_mode(0o600)))
        .await
        .unwrap();
    assert_eq!(attrs(ok.obj_attributes).type_, ftype3::NF3SOCK);

    use std::os::unix::fs::FileTypeExt;
    let vol = s.vol_path(VOL);
    assert!(
        std::fs::symlink_metadata(vol.join("fifo"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
    assert!(
        std::fs::symlink_metadata(vol.join("sock"))
            .unwrap()
            .file_type()
            .is_socket()
    );

    // READ of a FIFO must not block or succeed: it is not a regular file.
    let st = try_read(&mut c, &fifo, 0, 10).await.unwrap_err();
    assert_eq!(st, nfsstat3::NFS3ERR_INVAL);
}

fn chr(major: u32, minor: u32) -> mknoddata3 {
    mknoddata3::NF3CHR(devicedata3 {
        dev_attributes: with_mode(0o600),
        spec: specdata3 {
            specdata1: major,
            specdata2: minor,
        },
    })
}

#[tokio::test]
async fn mknod_character_device_as_non_root_is_perm() {
    let s = Server::start().await;
    let root = s.root_fh(VOL).await;
    let mut c = s.client_as(USER).await;
    let r = mknod(&mut c, &root, "null", chr(1, 3)).await;
    assert_eq!(status(&r), nfsstat3::NFS3ERR_PERM);
    assert!(!s.vol_path(VOL).join("null").exists());
    let blk = mknoddata3::NF3BLK(devicedata3 {
        dev_attributes: with_mode(0o600),
        spec: specdata3 {
            specdata1: 7,
            specdata2: 0,
        },
    });
    let r = mknod(&mut c, &root, "loop", blk).await;
    assert_eq!(status(&r), nfsstat3::NFS3ERR_PERM);
}

#[tokio::test]
async fn mknod_character_device_as_root_carries_device_numbers() {
    let s = Server::start().await;
    let root = s.root_fh(VOL).await;
    let mut c = s.client().await;
    match mknod(&mut c, &root, "null", chr(1, 3)).await {
        Nfs3Result::Ok(ok) => {
            let a = attrs(ok.obj_attributes);
            assert_eq!(a.type_, ftype3::NF3CHR);
            assert_eq!((a.rdev.specdata1, a.rdev.specdata2), (1, 3));
            use std::os::unix::fs::FileTypeExt;
            let md = std::fs::symlink_metadata(s.vol_path(VOL).join("null")).unwrap();
            assert!(md.file_type().is_char_device());
        }
        // Without CAP_MKNOD (some containers) the kernel refuses even root.
        Nfs3Result::Err((st, _)) => assert_eq!(st, nfsstat3::NFS3ERR_PERM),
    }
}

// ---------------------------------------------------------------------------------------
// REMOVE, RMDIR

async fn remove(c: &mut Client, dir: &nfs_fh3, n: &str) -> REMOVE3res {
    c.remove(&REMOVE3args {
        object: dirop(dir, n),
    })
    .await
    .expect("REMOVE rpc")
}

async fn rmdir(c: &mut Client, dir: &nfs_fh3, n: &str) -> RMDIR3res {
    c.rmdir(&RMDIR3args {
        object: dirop(dir, n),
    })
    .await
    .expect("RMDIR rpc")
}

#[tokio::test]
async fn remove_deletes_file_and_missing_name_is_noent() {
    let s = Server::start().await;
    let root = s.root_fh(VOL).await;
    let mut c = s.client().await;
    let f = file_with(&mut c, &root, "f", 0o644, b"bye").await;
    let ok = remove(&mut c, &root, "f").await.unwrap();
    assert!(ok.dir_wcc.before.is_some() && ok.dir_wcc.after.is_some());
    assert_eq!(
        lookup(&mut c, &root, "f").await.unwrap_err(),
        nfsstat3::NFS3ERR_NOENT
    );
    assert!(!s.vol_path(VOL).join("f").exists());
    // The removed file's handle is stale now.
    assert_eq!(
        getattr(&mut c, &f).await.unwrap_err(),
        nfsstat3::NFS3ERR_STALE
    );
    assert_eq!(
        status(&remove(&mut c, &root, "f").await),
        nfsstat3::NFS3ERR_NOENT
    );
}

#[tokio::test]
async fn remove_of_directory_fails_and_keeps_it() {
    let s = Server::start().await;
    let root = s.root_fh(VOL).await;
    let mut c = s.client().await;
    mkdir(&mut c, &root, "d", 0o755).await;
    let st = status(&remove(&mut c, &root, "d").await);
    assert!(
        matches!(
            st,
            nfsstat3::NFS3ERR_ISDIR | nfsstat3::NFS3ERR_PERM | nfsstat3::NFS3ERR_NOTSUPP
        ),
        "REMOVE of a directory: {st}"
    );
    assert!(s.vol_path(VOL).join("d").is_dir());
}

#[tokio::test]
async fn rmdir_removes_empty_directory_and_non_empty_is_notempty() {
    let s = Server::start().await;
    let root = s.root_fh(VOL).await;
    let mut c = s.client().await;
    mkdir(&mut c, &root, "empty", 0o755).await;
    let (full, _) = mkdir(&mut c, &root, "full", 0o755).await;
    create(&mut c, &full, "child", 0o644).await;

    assert_eq!(
        status(&rmdir(&mut c, &root, "full").await),
        nfsstat3::NFS3ERR_NOTEMPTY
    );
    assert!(s.vol_path(VOL).join("full/child").exists());

    assert_eq!(
        status(&rmdir(&mut c, &root, "empty").await),
        nfsstat3::NFS3_OK
    );
    assert!(!s.vol_path(VOL).join("empty").exists());
    assert_eq!(
        status(&rmdir(&mut c, &root, "empty").await),
        nfsstat3::NFS3ERR_NOENT
    );

    create(&mut c, &root, "file", 0o644).await;
    assert_eq!(
        status(&rmdir(&mut c, &root, "file").await),
        nfsstat3::NFS3ERR_NOTDIR
    );
    for dots in [".", ".."] {
        let st = status(&rmdir(&mut c, &full, dots).await);
        assert!(
            matches!(
                st,
                nfsstat3::NFS3ERR_INVAL | nfsstat3::NFS3ERR_NOTEMPTY | nfsstat3::NFS3ERR_EXIST
            ),
            "RMDIR {dots}: {st}"
        );
    }
    assert!(s.vol_path(VOL).join("full").is_dir());
}

// ---------------------------------------------------------------------------------------
// RENAME

async fn rename(
    c: &mut Client,
    from: &nfs_fh3,
    from_name: &str,
    to: &nfs_fh3,
    to_name: &str,
) -> RENAME3res {
    c.rename(&RENAME3args {
        from: dirop(from, from_name),
        to: dirop(to, to_name),
    })
    .await
    .expect("RENAME rpc")
}

#[tokio::test]
async fn rename_within_directory_moves_the_same_file() {
    let s = Server::start().await;
    let root = s.root_fh(VOL).await;
    let mut c = s.client().await;
    let f = file_with(&mut c, &root, "old", 0o644, b"payload").await;
    let fileid = getattr(&mut c, &f).await.unwrap().fileid;
    let ok = rename(&mut c, &root, "old", &root, "new").await.unwrap();
    assert!(ok.fromdir_wcc.after.is_some() && ok.todir_wcc.after.is_some());
    assert_eq!(
        lookup(&mut c, &root, "old").await.unwrap_err(),
        nfsstat3::NFS3ERR_NOENT
    );
    let (nf, na) = lookup(&mut c, &root, "new").await.unwrap();
    assert_eq!(na.fileid, fileid);
    assert_eq!(read_all(&mut c, &nf).await, b"payload");
    // The old handle still names the file.
    assert_eq!(read_all(&mut c, &f).await, b"payload");
}

#[tokio::test]
async fn rename_across_directories_and_over_existing_file() {
    let s = Server::start().await;
    let root = s.root_fh(VOL).await;
    let mut c = s.client().await;
    let (a, _) = mkdir(&mut c, &root, "a", 0o755).await;
    let (b, _) = mkdir(&mut c, &root, "b", 0o755).await;
    file_with(&mut c, &a, "f", 0o644, b"moving").await;
    file_with(&mut c, &b, "victim", 0o644, b"replaced").await;

    rename(&mut c, &a, "f", &b, "g").await.unwrap();
    assert!(!s.vol_path(VOL).join("a/f").exists());
    assert_eq!(
        std::fs::read(s.vol_path(VOL).join("b/g")).unwrap(),
        b"moving"
    );

    // Over an existing file: atomically replaced.
    rename(&mut c, &b, "g", &b, "victim").await.unwrap();
    let (v, _) = lookup(&mut c, &b, "victim").await.unwrap();
    assert_eq!(read_all(&mut c, &v).await, b"moving");
    assert_eq!(
        lookup(&mut c, &b, "g").await.unwrap_err(),
        nfsstat3::NFS3ERR_NOENT
    );

    // A directory moves too.
    rename(&mut c, &root, "a", &b, "a2").await.unwrap();
    assert!(s.vol_path(VOL).join("b/a2").is_dir());
}

#[tokio::test]
async fn rename_directory_onto_non_empty_directory_is_refused() {
    let s = Server::start().await;
    let root = s.root_fh(VOL).await;
    let mut c = s.client().await;
    mkdir(&mut c, &root, "src", 0o755).await;
    let (dst, _) = mkdir(&mut c, &root, "dst", 0o755).await;
    create(&mut c, &dst, "occupant", 0o644).await;
    let st = status(&rename(&mut c, &root, "src", &root, "dst").await);
    assert!(
        matches!(st, nfsstat3::NFS3ERR_NOTEMPTY | nfsstat3::NFS3ERR_EXIST),
        "RENAME onto a non-empty directory: {st}"
    );
    assert!(s.vol_path(VOL).join("src").is_dir());
    assert!(s.vol_path(VOL).join("dst/occupant").exists());
}

#[tokio::test]
async fn rename_error_paths() {
    let s = Server::start().await;
    let root = s.root_fh(VOL).await;
    let mut c = s.client().await;
    assert_eq!(
        status(&rename(&mut c, &root, "missing", &root, "x").await),
        nfsstat3::NFS3ERR_NOENT
    );
    mkdir(&mut c, &root, "d", 0o755).await;
    create(&mut c, &root, "f", 0o644).await;
    // A file over a directory, and a directory over a file.
    assert_eq!(
        status(&rename(&mut c, &root, "f", &root, "d").await),
        nfsstat3::NFS3ERR_ISDIR
    );
    assert_eq!(
        status(&rename(&mut c, &root, "d", &root, "f").await),
        nfsstat3::NFS3ERR_NOTDIR
    );
    // A directory into itself.
    let (d, _) = lookup(&mut c, &root, "d").await.unwrap();
    assert_eq!(
        status(&rename(&mut c, &root, "d", &d, "inside").await),
        nfsstat3::NFS3ERR_INVAL
    );
}

// ---------------------------------------------------------------------------------------
// LINK

#[tokio::test]
async fn link_adds_second_name_and_nlink_becomes_two() {
    let s = Server::start().await;
    let root = s.root_fh(VOL).await;
    let mut c = s.client().await;
    let (d, _) = mkdir(&mut c, &root, "d", 0o755).await;
    let f = file_with(&mut c, &root, "f", 0o644, b"shared").await;
    let ok = c
        .link(&LINK3args {
            file: f.clone(),
            link: dirop(&d, "hard"),
        })
        .await
        .unwrap()
        .unwrap();
    let fa = attrs(ok.file_attributes);
    assert_eq!(fa.nlink, 2);
    assert!(ok.linkdir_wcc.after.is_some());
    let (h, ha) = lookup(&mut c, &d, "hard").await.unwrap();
    assert_eq!(ha.fileid, fa.fileid);
    assert_eq!(read_all(&mut c, &h).await, b"shared");
    assert_eq!(
        std::fs::metadata(s.vol_path(VOL).join("f"))
            .unwrap()
            .nlink(),
        2
    );

    // LINK over an existing name is EXIST; LINK of a directory is refused.
    let r = c
        .link(&LINK3args {
            file: f.clone(),
            link: dirop(&d, "hard"),
        })
        .await
        .unwrap();
    assert_eq!(status(&r), nfsstat3::NFS3ERR_EXIST);
    let r = c
        .link(&LINK3args {
            file: d.clone(),
            link: dirop(&root, "dirlink"),
        })
        .await
        .unwrap();
    let st = status(&r);
    assert!(
        matches!(
            st,
            nfsstat3::NFS3ERR_ISDIR | nfsstat3::NFS3ERR_PERM | nfsstat3::NFS3ERR_INVAL
        ),
        "LINK of a directory: {st}"
    );
}

#[tokio::test]
async fn link_across_two_volumes_is_xdev() {
    let s = Server::with_volumes(&[
        ("va", VolumeOptions::default()),
        ("vb", VolumeOptions::default()),
    ])
    .await;
    let ra = s.root_fh("va").await;
    let rb = s.root_fh("vb").await;
    let mut c = s.client().await;
    let f = file_with(&mut c, &ra, "f", 0o644, b"x").await;
    let r = c
        .link(&LINK3args {
            file: f.clone(),
            link: dirop(&rb, "stolen"),
        })
        .await
        .unwrap();
    assert_eq!(status(&r), nfsstat3::NFS3ERR_XDEV);
    assert!(!s.vol_path("vb").join("stolen").exists());
    // RENAME across volumes likewise.
    let r = c
        .rename(&RENAME3args {
            from: dirop(&ra, "f"),
            to: dirop(&rb, "moved"),
        })
        .await
        .unwrap();
    assert_eq!(status(&r), nfsstat3::NFS3ERR_XDEV);
    assert!(s.vol_path("va").join("f").exists());
}

// ---------------------------------------------------------------------------------------
// READDIR, READDIRPLUS

const MANY: usize = 2000;

/// A volume with MANY files (made directly on disk, this is about listing) in directory
/// "big"; returns the directory handle and the expected name -> inode map.
async fn big_directory(s: &Server, c: &mut Client) -> (nfs_fh3, HashMap<Vec<u8>, u64>) {
    let dir = s.vol_path(VOL).join("big");
    std::fs::create_dir(&dir).unwrap();
    let mut expected = HashMap::new();
    for i in 0..MANY {
        // Names of varied lengths.
        let n = format!("entry-{i:04}-{}", "x".repeat(i % 37));
        let p = dir.join(&n);
        std::fs::File::create(&p).unwrap();
        expected.insert(n.into_bytes(), std::fs::metadata(&p).unwrap().ino());
    }
    expected.insert(b".".to_vec(), std::fs::metadata(&dir).unwrap().ino());
    expected.insert(
        b"..".to_vec(),
        std::fs::metadata(s.vol_path(VOL)).unwrap().ino(),
    );
    let root = s.root_fh(VOL).await;
    let (big, _) = lookup(c, &root, "big").await.unwrap();
    (big, expected)
}

#[tokio::test]
async fn readdir_lists_2000_entries_exactly_once_across_many_calls() {
    let s = Server::start().await;
    let mut c = s.client().await;
    let (big, expected) = big_directory(&s, &mut c).await;
    const COUNT: u32 = 1024;

    let mut seen: HashMap<Vec<u8>, u64> = HashMap::new();
    let mut cookie = 0u64;
    let mut verf = cookieverf3::default();
    let mut first_verf = None;
    let mut calls = 0;
    loop {
        calls += 1;
        assert!(calls < 2000, "READDIR never reached eof");
        let ok = c
            .readdir(&READDIR3args {
                dir: big.clone(),
                cookie,
                cookieverf: verf,
                count: COUNT,
            })
            .await
            .expect("READDIR rpc")
            .unwrap();
        assert!(
            4 + ok.packed_size() <= COUNT as usize,
            "reply of {} bytes exceeds count {COUNT}",
            4 + ok.packed_size()
        );
        match first_verf {
            None => {
                assert_ne!(ok.cookieverf, cookieverf3::default(), "a cookie verifier");
                first_verf = Some(ok.cookieverf);
            }
            Some(v) => assert_eq!(ok.cookieverf, v, "verifier stable across the listing"),
        }
        verf = ok.cookieverf;
        assert!(ok.dir_attributes.is_some());
        let eof = ok.reply.eof;
        let entries = ok.reply.entries.into_inner();
        assert!(eof || !entries.is_empty(), "no progress without eof");
        for e in entries {
            let n = e.name.as_ref().to_vec();
            assert!(
                seen.insert(n.clone(), e.fileid).is_none(),
                "{} listed twice",
                String::from_utf8_lossy(&n)
            );
            cookie = e.cookie;
        }
        if eof {
            break;
        }
    }
    assert!(calls > 20, "only {calls} calls: count was not honoured");
    assert_eq!(seen.len(), expected.len());
    assert_eq!(seen, expected, "every name with its inode number");
}

#[tokio::test]
async fn readdirplus_lists_2000_entries_with_handles_and_attributes() {
    let s = Server::start().await;
    let mut c = s.client().await;
    let (big, expected) = big_directory(&s, &mut c).await;
    const DIRCOUNT: u32 = 512;
    const MAXCOUNT: u32 = 4096;

    let mut seen: HashMap<Vec<u8>, u64> = HashMap::new();
    let mut handles = Vec::new();
    let mut cookie = 0u64;
    let mut verf = cookieverf3::default();
    let mut calls = 0;
    loop {
        calls += 1;
        assert!(calls < 2000, "READDIRPLUS never reached eof");
        let ok = c
            .readdirplus(&READDIRPLUS3args {
                dir: big.clone(),
                cookie,
                cookieverf: verf,
                dircount: DIRCOUNT,
                maxcount: MAXCOUNT,
            })
            .await
            .expect("READDIRPLUS rpc")
            .unwrap();
        assert!(
            4 + ok.packed_size() <= MAXCOUNT as usize,
            "reply of {} bytes exceeds maxcount {MAXCOUNT}",
            4 + ok.packed_size()
        );
        if calls == 1 {
            assert_ne!(ok.cookieverf, cookieverf3::default());
        } else {
            assert_eq!(ok.cookieverf, verf, "verifier echoed back unchanged");
        }
        verf = ok.cookieverf;
        let eof = ok.reply.eof;
        let entries = ok.reply.entries.into_inner();
        assert!(eof || !entries.is_empty(), "no progress without eof");
        for e in entries {
            let n = e.name.as_ref().to_vec();
            if n != b"." && n != b".." {
                let a = match e.name_attributes {
                    Nfs3Option::Some(a) => a,
                    Nfs3Option::None => panic!("no attributes for an entry"),
                };
                assert_eq!(a.fileid, e.fileid);
                assert_eq!(a.type_, ftype3::NF3REG);
                handles.push((handle_of(e.name_handle), e.fileid));
            }
            assert!(seen.insert(n, e.fileid).is_none(), "entry listed twice");
            cookie = e.cookie;
        }
        if eof {
            break;
        }
    }
    assert!(
        calls > 20,
        "only {calls} calls: dircount/maxcount not honoured"
    );
    assert_eq!(seen, expected);
    // The handles it handed out work.
    for (h, fileid) in handles.iter().step_by(97) {
        assert_eq!(getattr(&mut c, h).await.unwrap().fileid, *fileid);
    }
}

#[tokio::test]
async fn readdir_with_count_too_small_for_one_entry_is_toosmall() {
    let s = Server::start().await;
    let root = s.root_fh(VOL).await;
    let mut c = s.client().await;
    create(&mut c, &root, "some-file-name", 0o644).await;
    let r = c
        .readdir(&READDIR3args {
            dir: root.clone(),
            cookie: 0,
            cookieverf: cookieverf3::default(),
            count: 64,
        })
        .await
        .unwrap();
    assert_eq!(status(&r), nfsstat3::NFS3ERR_TOOSMALL);
    let r = c
        .readdirplus(&READDIRPLUS3args {
            dir: root.clone(),
            cookie: 0,
            cookieverf: cookieverf3::default(),
            dircount: 64,
            maxcount: 64,
        })
        .await
        .unwrap();
    assert_eq!(status(&r), nfsstat3::NFS3ERR_TOOSMALL);
}

#[tokio::test]
async fn readdir_with_wrong_cookie_verifier_is_bad_cookie() {
    let s = Server::start().await;
    let root = s.root_fh(VOL).await;
    let mut c = s.client().await;
    for i in 0..5 {
        create(&mut c, &root, &format!("f{i}"), 0o644).await;
    }
    let ok = c
        .readdir(&READDIR3args {
            dir: root.clone(),
            cookie: 0,
            cookieverf: cookieverf3::default(),
            count: 200,
        })
        .await
        .unwrap()
        .unwrap();
    let last = ok.reply.entries.0.last().expect("an entry").cookie;
    let mut wrong = ok.cookieverf;
    wrong.0[0] ^= 0xff;
    let r = c
        .readdir(&READDIR3args {
            dir: root.clone(),
            cookie: last,
            cookieverf: wrong,
            count: 4096,
        })
        .await
        .unwrap();
    assert_eq!(status(&r), nfsstat3::NFS3ERR_BAD_COOKIE);
}

#[tokio::test]
async fn readdir_of_a_file_is_notdir() {
    let s = Server::start().await;
    let root = s.root_fh(VOL).await;
    let mut c = s.client().await;
    let (f, _) = create(&mut c, &root, "f", 0o644).await;
    let r = c
        .readdir(&READDIR3args {
            dir: f,
            cookie: 0,
            cookieverf: cookieverf3::default(),
            count: 4096,
        })
        .await
        .unwrap();
    assert_eq!(status(&r), nfsstat3::NFS3ERR_NOTDIR);
}

// ---------------------------------------------------------------------------------------
// FSSTAT, FSINFO, PATHCONF

#[tokio::test]
async fn fsstat_reports_consistent_space_and_files() {
    let s = Server::start().await;
    let root = s.root_fh(VOL).await;
    let mut c = s.client().await;
    let ok = c
        .fsstat(&FSSTAT3args {
            fsroot: root.clone(),
        })
        .await
        .unwrap()
        .unwrap();
    assert!(ok.tbytes > 0);
    assert!(ok.fbytes <= ok.tbytes && ok.abytes <= ok.fbytes);
    assert!(ok.tfiles > 0 && ok.ffiles <= ok.tfiles && ok.afiles <= ok.ffiles);
    assert_eq!(attrs(ok.obj_attributes).type_, ftype3::NF3DIR);
}

#[tokio::test]
async fn fsinfo_reports_one_mebibyte_transfers() {
    let s = Server::start().await;
    let root = s.root_fh(VOL).await;
    let mut c = s.client().await;
    let ok = c
        .fsinfo(&FSINFO3args {
            fsroot: root.clone(),
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ok.rtmax, 1 << 20);
    assert_eq!(ok.wtmax, 1 << 20);
    assert!(ok.rtpref <= ok.rtmax && ok.rtpref > 0);
    assert!(ok.wtpref <= ok.wtmax && ok.wtpref > 0);
    assert!(ok.dtpref > 0);
    assert!(ok.maxfilesize >= 1 << 40);
    for flag in [FSF3_LINK, FSF3_SYMLINK, FSF3_HOMOGENEOUS, FSF3_CANSETTIME] {
        assert_ne!(ok.properties & flag, 0, "property {flag}");
    }
    assert!(ok.obj_attributes.is_some());
}

#[tokio::test]
async fn pathconf_reports_posix_limits() {
    let s = Server::start().await;
    let root = s.root_fh(VOL).await;
    let mut c = s.client().await;
    let ok = c
        .pathconf(&PATHCONF3args {
            object: root.clone(),
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ok.name_max, 255);
    assert!(ok.linkmax >= 1);
    assert!(ok.no_trunc, "long names are refused, not truncated");
    assert!(ok.chown_restricted);
    assert!(!ok.case_insensitive);
    assert!(ok.case_preserving);
}

// ---------------------------------------------------------------------------------------
// A whole small session: the procedures together, as a client would use them.

#[tokio::test]
async fn handles_from_readdirplus_lookup_and_create_agree() {
    let s = Server::start().await;
    let root = s.root_fh(VOL).await;
    let mut c = s.client().await;
    let (f, _) = create(&mut c, &root, "same", 0o644).await;
    let (l, _) = lookup(&mut c, &root, "same").await.unwrap();
    let ok = c
        .readdirplus(&READDIRPLUS3args {
            dir: root.clone(),
            cookie: 0,
            cookieverf: cookieverf3::default(),
            dircount: 4096,
            maxcount: 32 * 1024,
        })
        .await
        .unwrap()
        .unwrap();
    assert!(ok.reply.eof);
    let entry = ok
        .reply
        .entries
        .0
        .into_iter()
        .find(|e| e.name.as_ref() == b"same")
        .expect("listed");
    assert_eq!(handle_of(entry.name_handle), f);
    assert_eq!(l, f);
}
