//! Who may do what: AUTH_UNIX credentials enforced by the kernel, root/all squashing,
//! read-only exports, and file handles that can be neither forged nor reused after their
//! volume is gone, but survive a server restart.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use export_store::Squash;
use nfs3_types::xdr_codec::Opaque;

/// A file owned by `uid:gid` with `mode`, made directly on disk in the volume.
fn disk_file(s: &Server, vol: &str, n: &str, data: &[u8], uid: u32, gid: u32, mode: u32) {
    let p = s.vol_path(vol).join(n);
    std::fs::write(&p, data).unwrap();
    std::os::unix::fs::chown(&p, Some(uid), Some(gid)).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
}

// ---------------------------------------------------------------------------------------
// Plain AUTH_UNIX permission checks

#[tokio::test]
async fn non_root_uid_denied_read_of_0600_root_owned_file() {
    let s = Server::start().await;
    let root = s.root_fh(VOL).await;
    let mut rootc = s.client().await;
    let f = file_with(&mut rootc, &root, "secret", 0o600, b"top secret").await;
    assert_eq!(getattr(&mut rootc, &f).await.unwrap().uid, 0);

    let mut user = s.client_as(USER).await;
    let r = user
        .read(&READ3args {
            file: f.clone(),
            offset: 0,
            count: 100,
        })
        .await
        .unwrap();
    match r {
        Nfs3Result::Err((st, _)) => assert_eq!(st, nfsstat3::NFS3ERR_ACCES),
        Nfs3Result::Ok(ok) => panic!("uid 1000 read {:?} of a 0600 root file", ok.data),
    }
    // ACCESS agrees, and GETATTR (no permission needed) still works.
    let ok = user
        .access(&ACCESS3args {
            object: f.clone(),
            access: ACCESS3_READ | ACCESS3_MODIFY,
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ok.access, 0);
    assert_eq!(getattr(&mut user, &f).await.unwrap().mode, 0o600);
    // Root (not squashed here) reads it.
    assert_eq!(read_all(&mut rootc, &f).await, b"top secret");
}

#[tokio::test]
async fn non_root_uid_denied_0600_file_of_other_uid() {
    let s = Server::start().await;
    let root = s.root_fh(VOL).await;
    let mut owner = s.client_as((1234, 1234)).await;
    let f = file_with(&mut owner, &root, "private", 0o600, b"mine").await;
    let mut other = s.client_as(USER).await;
    assert_eq!(
        try_read(&mut other, &f, 0, 10).await.unwrap_err(),
        nfsstat3::NFS3ERR_ACCES
    );
    assert_eq!(
        try_write(&mut other, &f, 0, b"theirs", stable_how::FILE_SYNC)
            .await
            .unwrap_err(),
        nfsstat3::NFS3ERR_ACCES
    );
    assert_eq!(read_all(&mut owner, &f).await, b"mine");
}

#[tokio::test]
async fn non_root_uid_denied_create_in_0755_root_owned_directory() {
    let s = Server::start().await;
    let root = s.root_fh(VOL).await;
    let mut rootc = s.client().await;
    let (d, da) = mkdir(&mut rootc, &root, "rootdir", 0o755).await;
    assert_eq!((da.uid, da.mode), (0, 0o755));
    file_with(&mut rootc, &d, "existing", 0o666, b"x").await;
    mkdir(&mut rootc, &d, "subdir", 0o777).await;

    let mut user = s.client_as(USER).await;
    assert_eq!(
        try_create(&mut user, &d, "nope", 0o644).await.unwrap_err(),
        nfsstat3::NFS3ERR_ACCES
    );
    assert_eq!(
        try_mkdir(&mut user, &d, "nope", 0o755).await.unwrap_err(),
        nfsstat3::NFS3ERR_ACCES
    );
    let r = user
        .symlink(&SYMLINK3args {
            where_: dirop(&d, "nope"),
            symlink: symlinkdata3 {
                symlink_attributes: sattr3::default(),
                symlink_data: nfspath3::from(&b"target"[..]),
            },
        })
        .await
        .unwrap();
    assert_eq!(status(&r), nfsstat3::NFS3ERR_ACCES);
    let r = user
        .mknod(&MKNOD3args {
            where_: dirop(&d, "nope"),
            what: mknoddata3::NF3FIFO(sattr3::default()),
        })
        .await
        .unwrap();
    assert_eq!(status(&r), nfsstat3::NFS3ERR_ACCES);
    let r = user
        .remove(&REMOVE3args {
            object: dirop(&d, "existing"),
        })
        .await
        .unwrap();
    assert_eq!(status(&r), nfsstat3::NFS3ERR_ACCES);
    let r = user
        .rmdir(&RMDIR3args {
            object: dirop(&d, "subdir"),
        })
        .await
        .unwrap();
    assert_eq!(status(&r), nfsstat3::NFS3ERR_ACCES);
    let r = user
        .rename(&RENAME3args {
            from: dirop(&d, "existing"),
            to: dirop(&root, "stolen"),
        })
        .await
        .unwrap();
    assert_eq!(status(&r), nfsstat3::NFS3ERR_ACCES);
    let (own, _) = create(&mut user, &root, "own", 0o644).await;
    let r = user
        .link(&LINK3args {
            file: own,
            link: dirop(&d, "nope"),
        })
        .await
        .unwrap();
    assert_eq!(status(&r), nfsstat3::NFS3ERR_ACCES);

    let names: Vec<_> = std::fs::read_dir(s.vol_path(VOL).join("rootdir"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names.len(),
        2,
        "nothing changed in the directory: {names:?}"
    );
    // But uid 1000 may still list and look up in it.
    assert!(lookup(&mut user, &d, "existing").await.is_ok());
}

#[tokio::test]
async fn non_root_uid_may_not_chmod_or_chown_what_it_does_not_own() {
    let s = Server::start().await;
    let root = s.root_fh(VOL).await;
    let mut rootc = s.client().await;
    let (f, _) = create(&mut rootc, &root, "rootfile", 0o666).await;
    let mut user = s.client_as(USER).await;
    let setattr = |set: sattr3| SETATTR3args {
        object: f.clone(),
        new_attributes: set,
        guard: Nfs3Option::None,
    };
    let r = user.setattr(&setattr(with_mode(0o777))).await.unwrap();
    assert_eq!(status(&r), nfsstat3::NFS3ERR_PERM);
    let r = user
        .setattr(&setattr(sattr3 {
            uid: Nfs3Option::Some(USER.0),
            ..sattr3::default()
        }))
        .await
        .unwrap();
    assert_eq!(status(&r), nfsstat3::NFS3ERR_PERM);
    let md = std::fs::metadata(s.vol_path(VOL).join("rootfile")).unwrap();
    assert_eq!((md.uid(), md.mode() & 0o7777), (0, 0o666));

    // A user cannot give its own file away either.
    let (mine, _) = create(&mut user, &root, "mine", 0o644).await;
    let r = user
        .setattr(&SETATTR3args {
            object: mine,
            new_attributes: sattr3 {
                uid: Nfs3Option::Some(4321),
                ..sattr3::default()
            },
            guard: Nfs3Option::None,
        })
        .await
        .unwrap();
    assert_eq!(status(&r), nfsstat3::NFS3ERR_PERM);
}

#[tokio::test]
async fn writer_who_is_not_owner_can_touch_but_not_set_explicit_times() {
    let s = Server::start().await;
    let root = s.root_fh(VOL).await;
    let mut rootc = s.client().await;
    let (f, _) = create(&mut rootc, &root, "shared", 0o666).await;
    let mut user = s.client_as(USER).await;
    let touch = sattr3 {
        atime: set_atime::SET_TO_SERVER_TIME,
        mtime: set_mtime::SET_TO_SERVER_TIME,
        ..sattr3::default()
    };
    let r = user
        .setattr(&SETATTR3args {
            object: f.clone(),
            new_attributes: touch,
            guard: Nfs3Option::None,
        })
        .await
        .unwrap();
    assert_eq!(
        status(&r),
        nfsstat3::NFS3_OK,
        "`touch` needs write permission only"
    );
    let t = nfstime3 {
        seconds: 1_000_000,
        nseconds: 0,
    };
    let explicit = sattr3 {
        atime: set_atime::SET_TO_CLIENT_TIME(t),
        mtime: set_mtime::SET_TO_CLIENT_TIME(t),
        ..sattr3::default()
    };
    let r = user
        .setattr(&SETATTR3args {
            object: f.clone(),
            new_attributes: explicit,
            guard: Nfs3Option::None,
        })
        .await
        .unwrap();
    assert_eq!(status(&r), nfsstat3::NFS3ERR_PERM);
    assert_ne!(getattr(&mut user, &f).await.unwrap().mtime, t);
}

#[tokio::test]
async fn owner_may_write_its_own_read_only_file_like_knfsd() {
    // open(O_CREAT|O_WRONLY, 0444) followed by writes must work over NFS.
    let s = Server::start().await;
    let root = s.root_fh(VOL).await;
    let mut user = s.client_as(USER).await;
    let (f, a) = create(&mut user, &root, "ro", 0o444).await;
    assert_eq!((a.uid, a.mode), (USER.0, 0o444));
    write(&mut user, &f, 0, b"written anyway").await;
    assert_eq!(read_all(&mut user, &f).await, b"written anyway");
    // Somebody else still may not.
    let mut other = s.client_as((2000, 2000)).await;
    assert_eq!(
        try_write(&mut other, &f, 0, b"x", stable_how::UNSTABLE)
            .await
            .unwrap_err(),
        nfsstat3::NFS3ERR_ACCES
    );
}

#[tokio::test]
async fn group_permissions_use_primary_and_supplementary_groups() {
    let s = Server::start().await;
    let root = s.root_fh(VOL).await;
    disk_file(&s, VOL, "team", b"for the team", 0, 3000, 0o640);
    let mut rootc = s.client().await;
    let (f, _) = lookup(&mut rootc, &root, "team").await.unwrap();

    let mut primary = s.client_with_groups(1000, 3000, vec![]).await;
    assert_eq!(read_all(&mut primary, &f).await, b"for the team");
    let mut supplementary = s.client_with_groups(1000, 1000, vec![1000, 3000]).await;
    assert_eq!(read_all(&mut supplementary, &f).await, b"for the team");
    let mut outsider = s.client_with_groups(1000, 1000, vec![1000, 4000]).await;
    assert_eq!(
        try_read(&mut outsider, &f, 0, 10).await.unwrap_err(),
        nfsstat3::NFS3ERR_ACCES
    );
    // The group may read but not write (0640).
    assert_eq!(
        try_write(&mut primary, &f, 0, b"x", stable_how::FILE_SYNC)
            .await
            .unwrap_err(),
        nfsstat3::NFS3ERR_ACCES
    );
}

#[tokio::test]
async fn non_root_uid_cannot_list_or_search_a_0700_directory() {
    let s = Server::start().await;
    let root = s.root_fh(VOL).await;
    let mut rootc = s.client().await;
    let (p, _) = mkdir(&mut rootc, &root, "private", 0o700).await;
    create(&mut rootc, &p, "inside", 0o644).await;
    let mut user = s.client_as(USER).await;
    let r = user
        .readdir(&READDIR3args {
            dir: p.clone(),
            cookie: 0,
            cookieverf: cookieverf3::default(),
            count: 4096,
        })
        .await
        .unwrap();
    assert_eq!(status(&r), nfsstat3::NFS3ERR_ACCES);
    let r = user
        .readdirplus(&READDIRPLUS3args {
            dir: p.clone(),
            cookie: 0,
            cookieverf: cookieverf3::default(),
            dircount: 4096,
            maxcount: 8192,
        })
        .await
        .unwrap();
    assert_eq!(status(&r), nfsstat3::NFS3ERR_ACCES);
    for n in ["inside", "missing", ".", ".."] {
        assert_eq!(
            lookup(&mut user, &p, n).await.unwrap_err(),
            nfsstat3::NFS3ERR_ACCES,
            "LOOKUP {n}"
        );
    }
    // Root lists it.
    let ok = rootc
        .readdir(&READDIR3args {
            dir: p.clone(),
            cookie: 0,
            cookieverf: cookieverf3::default(),
            count: 4096,
        })
        .await
        .unwrap()
        .unwrap();
    assert!(
        ok.reply
            .entries
            .0
            .iter()
            .any(|e| e.name.as_ref() == b"inside")
    );
}

#[tokio::test]
async fn sticky_directory_protects_other_users_files() {
    let s = Server::start().await;
    let root = s.root_fh(VOL).await;
    let mut rootc = s.client().await;
    let (tmp, a) = mkdir(&mut rootc, &root, "tmp", 0o1777).await;
    assert_eq!(a.mode, 0o1777);
    let mut alice = s.client_as((2000, 2000)).await;
    create(&mut alice, &tmp, "alices", 0o666).await;
    let mut bob = s.client_as(USER).await;
    let r = bob
        .remove(&REMOVE3args {
            object: dirop(&tmp, "alices"),
        })
        .await
        .unwrap();
    let st = status(&r);
    assert!(
        matches!(st, nfsstat3::NFS3ERR_PERM | nfsstat3::NFS3ERR_ACCES),
        "REMOVE of another user's file in a sticky directory: {st}"
    );
    let r = bob
        .rename(&RENAME3args {
            from: dirop(&tmp, "alices"),
            to: dirop(&tmp, "bobs-now"),
        })
        .await
        .unwrap();
    let st = status(&r);
    assert!(
        matches!(st, nfsstat3::NFS3ERR_PERM | nfsstat3::NFS3ERR_ACCES),
        "RENAME of another user's file in a sticky directory: {st}"
    );
    assert!(s.vol_path(VOL).join("tmp/alices").exists());
    // Bob may create and remove his own files there.
    create(&mut bob, &tmp, "bobs", 0o644).await;
    let r = bob
        .remove(&REMOVE3args {
            object: dirop(&tmp, "bobs"),
        })
        .await
        .unwrap();
    assert_eq!(status(&r), nfsstat3::NFS3_OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_never_leak_between_concurrent_callers() {
    // Many callers with different identities at once, so the server's worker threads keep
    // switching fsuid/fsgid/groups: every call must run as exactly its own caller.
    let s = Server::start().await;
    let root = s.root_fh(VOL).await;
    let mut rootc = s.client().await;
    let secret = file_with(&mut rootc, &root, "secret", 0o600, b"root only").await;

    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..8u32 {
        let as_root = worker % 2 == 0;
        let uid = if as_root { 0 } else { 1000 + worker };
        let mut c = s.client_as((uid, uid)).await;
        let (root, secret) = (root.clone(), secret.clone());
        tasks.spawn(async move {
            for i in 0..40 {
                let r = try_read(&mut c, &secret, 0, 100).await;
                if as_root {
                    assert_eq!(r.expect("root reads").data.as_ref(), b"root only");
                } else {
                    assert_eq!(r.unwrap_err(), nfsstat3::NFS3ERR_ACCES, "uid {uid}");
                }
                let (_, a) = create(&mut c, &root, &format!("w{worker}-{i}"), 0o600).await;
                assert_eq!((a.uid, a.gid), (uid, uid), "file created by uid {uid}");
            }
            uid
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("caller task");
    }
    for worker in 0..8u32 {
        let uid = if worker % 2 == 0 { 0 } else { 1000 + worker };
        for i in 0..40 {
            let md = std::fs::metadata(s.vol_path(VOL).join(format!("w{worker}-{i}"))).unwrap();
            assert_eq!((md.uid(), md.gid()), (uid, uid), "w{worker}-{i} on disk");
        }
    }
}

#[tokio::test]
async fn create_with_attributes_it_may_not_apply_never_fails_leaving_the_object_behind() {
    // knfsd ignores uid/gid in CREATE attributes from non-root callers; the other acceptable
    // answer is an error with nothing created. An error *and* a new file (a GUARDED retry then
    // says EXIST) is neither.
    let s = Server::start().await;
    let root = s.root_fh(VOL).await;
    let mut user = s.client_as(USER).await;
    let set = sattr3 {
        mode: Nfs3Option::Some(0o644),
        gid: Nfs3Option::Some(4242),
        ..sattr3::default()
    };
    let r = user
        .create(&CREATE3args {
            where_: dirop(&root, "f"),
            how: createhow3::GUARDED(set.clone()),
        })
        .await
        .unwrap();
    let exists = s.vol_path(VOL).join("f").exists();
    assert!(
        status(&r) == nfsstat3::NFS3_OK || !exists,
        "CREATE answered {} yet created the file",
        status(&r)
    );
    let r = user
        .mkdir(&MKDIR3args {
            where_: dirop(&root, "d"),
            attributes: sattr3 {
                mode: Nfs3Option::Some(0o755),
                ..set
            },
        })
        .await
        .unwrap();
    let exists = s.vol_path(VOL).join("d").exists();
    assert!(
        status(&r) == nfsstat3::NFS3_OK || !exists,
        "MKDIR answered {} yet created the directory",
        status(&r)
    );
}

#[tokio::test]
async fn root_squash_also_maps_group_zero() {
    let s = Server::with_volumes(&[("sq", squashed(Squash::Root))]).await;
    let root = s.root_fh("sq").await;
    let mut c = s.client_with_groups(1000, 0, vec![0, 1000]).await;
    let (_, a) = create(&mut c, &root, "f", 0o644).await;
    assert_eq!((a.uid, a.gid), (1000, 65534));
}

// ---------------------------------------------------------------------------------------
// Set-id bits

/// The mode bits on disk (the server's view could be cached).
fn disk_mode(s: &Server, vol: &str, n: &str) -> u32 {
    std::fs::metadata(s.vol_path(vol).join(n)).unwrap().mode() & 0o7777
}

async fn handle(c: &mut Client, dir: &nfs_fh3, n: &str) -> nfs_fh3 {
    lookup(c, dir, n).await.unwrap().0
}

async fn set_size(c: &mut Client, f: &nfs_fh3, size: u64) -> nfsstat3 {
    let r = c
        .setattr(&SETATTR3args {
            object: f.clone(),
            new_attributes: sattr3 {
                size: Nfs3Option::Some(size),
                ..sattr3::default()
            },
            guard: Nfs3Option::None,
        })
        .await
        .unwrap();
    status(&r)
}

#[tokio::test]
async fn write_or_truncate_by_non_root_clears_setuid_and_setgid_like_knfsd() {
    let s = Server::start().await;
    let root = s.root_fh(VOL).await;
    // Each file is new to the server, so its descriptor is opened in the very call that
    // changes it (as root, to let the owner write a read-only file).
    disk_file(&s, VOL, "own", b"#!", USER.0, USER.1, 0o6755);
    disk_file(&s, VOL, "roots", b"#!", 0, 0, 0o6777);
    disk_file(&s, VOL, "cut", b"#!", USER.0, USER.1, 0o6755);
    disk_file(&s, VOL, "grow", b"#!", 0, 0, 0o6777);
    // Setgid without group-exec is a locking mark, not a privilege: it stays for a
    // writer in the file's group.
    disk_file(&s, VOL, "mark", b"#!", USER.0, USER.1, 0o2644);
    let mut rootc = s.client().await;
    let mut user = s.client_as(USER).await;

    write(&mut user, &handle(&mut rootc, &root, "own").await, 0, b"x").await;
    assert_eq!(disk_mode(&s, VOL, "own"), 0o755, "owner's WRITE");
    write(
        &mut user,
        &handle(&mut rootc, &root, "roots").await,
        0,
        b"x",
    )
    .await;
    assert_eq!(disk_mode(&s, VOL, "roots"), 0o777, "non-owner's WRITE");
    assert_eq!(
        set_size(&mut user, &handle(&mut rootc, &root, "cut").await, 0).await,
        nfsstat3::NFS3_OK
    );
    assert_eq!(disk_mode(&s, VOL, "cut"), 0o755, "SETATTR truncating");
    assert_eq!(
        set_size(&mut user, &handle(&mut rootc, &root, "grow").await, 1 << 20).await,
        nfsstat3::NFS3_OK
    );
    assert_eq!(disk_mode(&s, VOL, "grow"), 0o777, "SETATTR extending");
    write(&mut user, &handle(&mut rootc, &root, "mark").await, 0, b"x").await;
    assert_eq!(
        disk_mode(&s, VOL, "mark"),
        0o2644,
        "setgid without group-exec"
    );
    // And the client sees it in the reply's attributes.
    let a = getattr(&mut user, &handle(&mut rootc, &root, "own").await)
        .await
        .unwrap();
    assert_eq!(a.mode, 0o755);

    // Root keeps them, for WRITE and SETATTR alike.
    disk_file(&s, VOL, "by-root", b"#!", 0, 0, 0o6755);
    let f = handle(&mut rootc, &root, "by-root").await;
    write(&mut rootc, &f, 0, b"x").await;
    assert_eq!(set_size(&mut rootc, &f, 1).await, nfsstat3::NFS3_OK);
    assert_eq!(disk_mode(&s, VOL, "by-root"), 0o6755);
    // A SETATTR of both size and mode leaves the mode asked for (the size goes first).
    let r = user
        .setattr(&SETATTR3args {
            object: handle(&mut rootc, &root, "own").await,
            new_attributes: sattr3 {
                size: Nfs3Option::Some(0),
                ..with_mode(0o4755)
            },
            guard: Nfs3Option::None,
        })
        .await
        .unwrap();
    assert_eq!(status(&r), nfsstat3::NFS3_OK);
    assert_eq!(disk_mode(&s, VOL, "own"), 0o4755);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nfsv4_write_setattr_and_allocate_by_non_root_clear_setuid_and_setgid() {
    let s = Server::start().await;
    let url = |(uid, gid): (u32, u32)| {
        format!(
            "nfs://127.0.0.1/export/{VOL}?version=4.2&nfsport={}&noresvport=true&uid={uid}&gid={gid}",
            s.running.nfs.port()
        )
    };
    for n in ["w", "t", "a", "r"] {
        disk_file(&s, VOL, n, b"#!", 0, 0, 0o6777);
    }
    let user = nfs_rs::parse_url_and_mount(&url(USER)).await.unwrap();
    let f = user.open_path("w", nfs_rs::OPEN_BOTH).await.unwrap();
    user.write(f.fh.clone(), 0, Bytes::from_static(b"x"))
        .await
        .unwrap();
    assert_eq!(disk_mode(&s, VOL, "w"), 0o777, "WRITE");
    user.setattr_path("t", false, None, None, None, Some(0), None, None)
        .await
        .unwrap();
    assert_eq!(disk_mode(&s, VOL, "t"), 0o777, "SETATTR size");
    let f = user.open_path("a", nfs_rs::OPEN_BOTH).await.unwrap();
    user.allocate(f.fh.clone(), 0, 1 << 16).await.unwrap();
    assert_eq!(disk_mode(&s, VOL, "a"), 0o777, "ALLOCATE");
    user.umount().await.unwrap();

    // Root keeps them.
    let root = nfs_rs::parse_url_and_mount(&url(ROOT)).await.unwrap();
    let f = root.open_path("r", nfs_rs::OPEN_BOTH).await.unwrap();
    root.write(f.fh.clone(), 0, Bytes::from_static(b"x"))
        .await
        .unwrap();
    root.allocate(f.fh.clone(), 0, 1 << 16).await.unwrap();
    root.setattr_path("r", false, None, None, None, Some(1), None, None)
        .await
        .unwrap();
    assert_eq!(disk_mode(&s, VOL, "r"), 0o6777);
    root.umount().await.unwrap();
}

#[tokio::test]
async fn squashed_root_clears_setuid_on_write() {
    let s = Server::with_volumes(&[("sq", squashed(Squash::Root))]).await;
    let root = s.root_fh("sq").await;
    disk_file(&s, "sq", "tool", b"#!", 0, 0, 0o6777);
    let mut rootc = s.client().await;
    let (f, _) = lookup(&mut rootc, &root, "tool").await.unwrap();
    write(&mut rootc, &f, 0, b"x").await;
    assert_eq!(disk_mode(&s, "sq", "tool"), 0o777);
}

// ---------------------------------------------------------------------------------------
// Squashing

fn squashed(squash: Squash) -> VolumeOptions {
    VolumeOptions {
        squash,
        anonuid: 65534,
        anongid: 65534,
        ..VolumeOptions::default()
    }
}

#[tokio::test]
async fn root_squash_creates_files_as_anonymous_uid() {
    let s = Server::with_volumes(&[("sq", squashed(Squash::Root))]).await;
    let root = s.root_fh("sq").await;
    let mut rootc = s.client().await;
    let (_, a) = create(&mut rootc, &root, "by-root", 0o644).await;
    assert_eq!((a.uid, a.gid), (65534, 65534));
    let md = std::fs::metadata(s.vol_path("sq").join("by-root")).unwrap();
    assert_eq!((md.uid(), md.gid()), (65534, 65534), "owner on disk");
    let (_, d) = mkdir(&mut rootc, &root, "dir-by-root", 0o755).await;
    assert_eq!((d.uid, d.gid), (65534, 65534));

    // Other users are not squashed.
    let mut user = s.client_as(USER).await;
    create(&mut user, &root, "by-user", 0o644).await;
    let md = std::fs::metadata(s.vol_path("sq").join("by-user")).unwrap();
    assert_eq!((md.uid(), md.gid()), USER);
}

#[tokio::test]
async fn root_squash_denies_root_a_0600_file_of_another_uid() {
    let s = Server::with_volumes(&[("sq", squashed(Squash::Root))]).await;
    let root = s.root_fh("sq").await;
    disk_file(&s, "sq", "private", b"not for root", 1234, 1234, 0o600);
    let mut rootc = s.client().await;
    let (f, a) = lookup(&mut rootc, &root, "private").await.unwrap();
    assert_eq!(a.uid, 1234);
    assert_eq!(
        try_read(&mut rootc, &f, 0, 100).await.unwrap_err(),
        nfsstat3::NFS3ERR_ACCES
    );
    assert_eq!(
        try_write(&mut rootc, &f, 0, b"x", stable_how::FILE_SYNC)
            .await
            .unwrap_err(),
        nfsstat3::NFS3ERR_ACCES
    );
    // Nor can squashed root take the file over.
    let r = rootc
        .setattr(&SETATTR3args {
            object: f.clone(),
            new_attributes: sattr3 {
                uid: Nfs3Option::Some(0),
                mode: Nfs3Option::Some(0o666),
                ..sattr3::default()
            },
            guard: Nfs3Option::None,
        })
        .await
        .unwrap();
    assert_eq!(status(&r), nfsstat3::NFS3ERR_PERM);
    let ok = rootc
        .access(&ACCESS3args {
            object: f.clone(),
            access: ACCESS3_READ | ACCESS3_MODIFY,
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ok.access, 0, "ACCESS agrees squashed root has no rights");
    // The owner still can.
    let mut owner = s.client_as((1234, 1234)).await;
    assert_eq!(read_all(&mut owner, &f).await, b"not for root");
}

#[tokio::test]
async fn all_squash_maps_every_user_to_the_anonymous_uid() {
    let s = Server::with_volumes(&[("all", squashed(Squash::All))]).await;
    let root = s.root_fh("all").await;
    let mut user = s.client_as(USER).await;
    let (_, a) = create(&mut user, &root, "f", 0o644).await;
    assert_eq!((a.uid, a.gid), (65534, 65534));
    let md = std::fs::metadata(s.vol_path("all").join("f")).unwrap();
    assert_eq!(md.uid(), 65534);
}

#[tokio::test]
async fn auth_none_caller_acts_as_the_anonymous_uid() {
    let s = Server::start().await;
    let root = s.root_fh(VOL).await;
    let mut anon = s.client_auth_none().await;
    let (_, a) = create(&mut anon, &root, "anon", 0o644).await;
    assert_eq!((a.uid, a.gid), (65534, 65534));
    disk_file(&s, VOL, "rootonly", b"x", 0, 0, 0o600);
    let (f, _) = lookup(&mut anon, &root, "rootonly").await.unwrap();
    assert_eq!(
        try_read(&mut anon, &f, 0, 1).await.unwrap_err(),
        nfsstat3::NFS3ERR_ACCES
    );
}

// ---------------------------------------------------------------------------------------
// Read-only volumes

#[tokio::test]
async fn read_only_volume_refuses_every_change_with_rofs() {
    let ro = VolumeOptions {
        read_only: true,
        ..VolumeOptions::default()
    };
    let s = Server::with_volumes(&[("ro", ro)]).await;
    disk_file(&s, "ro", "file", b"read me", 0, 0, 0o666);
    std::fs::create_dir(s.vol_path("ro").join("dir")).unwrap();
    let root = s.root_fh("ro").await;
    let mut c = s.client().await;
    let (f, _) = lookup(&mut c, &root, "file").await.unwrap();

    // Reading works.
    assert_eq!(read_all(&mut c, &f).await, b"read me");
    let ok = c
        .readdir(&READDIR3args {
            dir: root.clone(),
            cookie: 0,
            cookieverf: cookieverf3::default(),
            count: 4096,
        })
        .await
        .unwrap()
        .unwrap();
    assert!(
        ok.reply
            .entries
            .0
            .iter()
            .any(|e| e.name.as_ref() == b"file")
    );

    // Every change is ROFS.
    const ROFS: nfsstat3 = nfsstat3::NFS3ERR_ROFS;
    for stable in [
        stable_how::UNSTABLE,
        stable_how::DATA_SYNC,
        stable_how::FILE_SYNC,
    ] {
        assert_eq!(
            try_write(&mut c, &f, 0, b"overwrite", stable)
                .await
                .unwrap_err(),
            ROFS
        );
    }
    assert_eq!(
        try_create(&mut c, &root, "new", 0o644).await.unwrap_err(),
        ROFS
    );
    let r = c
        .create(&CREATE3args {
            where_: dirop(&root, "new"),
            how: createhow3::EXCLUSIVE(createverf3([1; 8])),
        })
        .await
        .unwrap();
    assert_eq!(status(&r), ROFS);
    assert_eq!(
        try_mkdir(&mut c, &root, "new", 0o755).await.unwrap_err(),
        ROFS
    );
    let r = c
        .symlink(&SYMLINK3args {
            where_: dirop(&root, "new"),
            symlink: symlinkdata3 {
                symlink_attributes: sattr3::default(),
                symlink_data: nfspath3::from(&b"file"[..]),
            },
        })
        .await
        .unwrap();
    assert_eq!(status(&r), ROFS);
    let r = c
        .mknod(&MKNOD3args {
            where_: dirop(&root, "new"),
            what: mknoddata3::NF3FIFO(sattr3::default()),
        })
        .await
        .unwrap();
    assert_eq!(status(&r), ROFS);
    let r = c
        .setattr(&SETATTR3args {
            object: f.clone(),
            new_attributes: sattr3 {
                size: Nfs3Option::Some(0),
                ..sattr3::default()
            },
            guard: Nfs3Option::None,
        })
        .await
        .unwrap();
    assert_eq!(status(&r), ROFS);
    let r = c
        .remove(&REMOVE3args {
            object: dirop(&root, "file"),
        })
        .await
        .unwrap();
    assert_eq!(status(&r), ROFS);
    let r = c
        .rmdir(&RMDIR3args {
            object: dirop(&root, "dir"),
        })
        .await
        .unwrap();
    assert_eq!(status(&r), ROFS);
    let r = c
        .rename(&RENAME3args {
            from: dirop(&root, "file"),
            to: dirop(&root, "renamed"),
        })
        .await
        .unwrap();
    assert_eq!(status(&r), ROFS);
    let r = c
        .link(&LINK3args {
            file: f.clone(),
            link: dirop(&root, "hard"),
        })
        .await
        .unwrap();
    assert_eq!(status(&r), ROFS);

    // ACCESS does not offer what would be refused.
    let ok = c
        .access(&ACCESS3args {
            object: f.clone(),
            access: ACCESS3_READ | ACCESS3_MODIFY | ACCESS3_EXTEND,
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ok.access, ACCESS3_READ);
    let ok = c
        .access(&ACCESS3args {
            object: root.clone(),
            access: ACCESS3_LOOKUP | ACCESS3_MODIFY | ACCESS3_EXTEND | ACCESS3_DELETE,
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ok.access, ACCESS3_LOOKUP);

    // Nothing changed on disk.
    assert_eq!(
        std::fs::read(s.vol_path("ro").join("file")).unwrap(),
        b"read me"
    );
    let mut names: Vec<_> = std::fs::read_dir(s.vol_path("ro"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["dir", "file"]);
}

// ---------------------------------------------------------------------------------------
// File handles

fn is_refused(st: nfsstat3) -> bool {
    matches!(st, nfsstat3::NFS3ERR_BADHANDLE | nfsstat3::NFS3ERR_STALE)
}

/// GETATTR and READ with `handle` must both be refused with BADHANDLE or STALE.
async fn assert_handle_refused(c: &mut Client, handle: &[u8], what: &str) {
    let h = fh(handle);
    match getattr(c, &h).await {
        Err(st) => assert!(is_refused(st), "{what}: GETATTR answered {st}"),
        Ok(a) => panic!("{what}: GETATTR of {handle:02x?} succeeded: {a:?}"),
    }
    match try_read(c, &h, 0, 4096).await {
        Err(st) => assert!(is_refused(st), "{what}: READ answered {st}"),
        Ok(r) => panic!("{what}: READ of {handle:02x?} returned {:?}", r.data),
    }
}

#[tokio::test]
async fn random_handles_are_never_accepted() {
    let s = Server::start().await;
    let root = s.root_fh(VOL).await;
    let mut c = s.client().await;
    file_with(&mut c, &root, "data", 0o644, b"valuable").await;
    let real = root.data.to_vec();
    let mut rng = Rng::from_clock();
    for i in 0..1000 {
        let mut h = rng.bytes(64);
        if i % 2 == 1 {
            // Plausible: our version byte and a consistent kernel-handle length, so only the
            // authentication tag can catch it.
            h.truncate(real.len());
            h[0] = real[0];
            h[14] = real[14];
        }
        assert_handle_refused(&mut c, &h, &format!("random handle #{i}")).await;
    }
    // Every length up to the NFSv3 maximum, including the empty handle.
    for len in 0..=64 {
        let h = rng.bytes(len);
        assert_handle_refused(&mut c, &h, &format!("random {len}-byte handle")).await;
    }
}

#[tokio::test]
async fn handle_of_volume_a_with_altered_bytes_fails() {
    let s = Server::with_volumes(&[
        ("va", VolumeOptions::default()),
        ("vb", VolumeOptions::default()),
    ])
    .await;
    let ra = s.root_fh("va").await;
    let rb = s.root_fh("vb").await;
    let mut c = s.client().await;
    let f = file_with(&mut c, &ra, "f", 0o644, b"in volume a").await;
    let good = f.data.to_vec();
    assert_eq!(read_all(&mut c, &f).await, b"in volume a");

    // Every single bit flipped, one at a time.
    for byte in 0..good.len() {
        for bit in 0..8 {
            let mut h = good.clone();
            h[byte] ^= 1 << bit;
            assert_handle_refused(&mut c, &h, &format!("bit {bit} of byte {byte} flipped")).await;
        }
    }
    // Relabelled as volume b (its volume id bytes copied over).
    let mut relabelled = good.clone();
    relabelled[2..10].copy_from_slice(&rb.data[2..10]);
    assert_handle_refused(&mut c, &relabelled, "relabelled to volume b").await;
    // Truncated and extended.
    for len in 0..good.len() {
        assert_handle_refused(&mut c, &good[..len], &format!("truncated to {len}")).await;
    }
    let mut longer = good.clone();
    longer.push(0);
    assert_handle_refused(&mut c, &longer, "one byte longer").await;
    // The original is still good.
    assert_eq!(read_all(&mut c, &f).await, b"in volume a");
}

#[tokio::test]
async fn oversized_handles_are_refused_without_data() {
    let s = Server::start().await;
    let mut c = s.client().await;
    let mut rng = Rng::from_clock();
    for len in [65usize, 100, 128, 1024] {
        let h = fh(&rng.bytes(len));
        match c.getattr(&GETATTR3args { object: h.clone() }).await {
            Ok(r) => assert!(is_refused(status(&r)), "{len}-byte handle: {}", status(&r)),
            Err(nfs3_client::RpcError::GarbageArgs) => {}
            Err(e) => panic!("{len}-byte handle: {e}"),
        }
        // The connection is still usable.
        c.null().await.unwrap();
    }
}

#[tokio::test]
async fn handles_of_removed_volume_become_stale() {
    let s = Server::start().await;
    let root = s.root_fh(VOL).await;
    let mut c = s.client().await;
    let f = file_with(&mut c, &root, "f", 0o644, b"soon gone").await;
    let (d, _) = mkdir(&mut c, &root, "d", 0o755).await;

    s.running.store.remove_volume(VOL).expect("remove volume");
    // The store reloads on remove; also give the reload loop a turn.
    tokio::time::sleep(RELOAD * 2).await;
    for (h, what) in [(&root, "root"), (&f, "file"), (&d, "dir")] {
        assert_eq!(
            getattr(&mut c, h).await.unwrap_err(),
            nfsstat3::NFS3ERR_STALE,
            "{what}"
        );
    }
    assert_eq!(
        try_read(&mut c, &f, 0, 10).await.unwrap_err(),
        nfsstat3::NFS3ERR_STALE
    );
    assert_eq!(
        try_create(&mut c, &root, "new", 0o644).await.unwrap_err(),
        nfsstat3::NFS3ERR_STALE
    );
    // The data is left in place on disk.
    assert_eq!(
        std::fs::read(s.vol_path(VOL).join("f")).unwrap(),
        b"soon gone"
    );

    // Re-adding a volume of the same name does not revive the old handles.
    s.add_volume(VOL, VolumeOptions::default());
    assert_eq!(
        getattr(&mut c, &f).await.unwrap_err(),
        nfsstat3::NFS3ERR_STALE
    );
    let new_root = s.root_fh(VOL).await;
    assert_ne!(new_root, root, "a new incarnation has a new root handle");
    let (nf, _) = lookup(&mut c, &new_root, "f").await.unwrap();
    assert_eq!(read_all(&mut c, &nf).await, b"soon gone");
}

#[tokio::test]
async fn volume_removed_by_another_process_goes_stale_after_reload_interval() {
    let s = Server::start().await;
    let root = s.root_fh(VOL).await;
    let mut c = s.client().await;
    let f = file_with(&mut c, &root, "f", 0o644, b"x").await;
    // A second store on the same root (like `nfs-server-provisioner volume remove`).
    let other = export_store::ExportStore::open(s.export_root()).unwrap();
    other.remove_volume(VOL).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    let mut went_stale = false;
    while tokio::time::Instant::now() < deadline {
        if getattr(&mut c, &f).await.err() == Some(nfsstat3::NFS3ERR_STALE) {
            went_stale = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        went_stale,
        "handle still valid 3 s after the volume was removed"
    );

    // And a volume added elsewhere becomes mountable.
    other.add_volume("late", VolumeOptions::default()).unwrap();
    let mut m = s.mounter().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    let mut mounted = false;
    while tokio::time::Instant::now() < deadline {
        let path = nfs3_types::mount::dirpath(Opaque::borrowed(b"/export/late"));
        if m.mnt(path).await.is_ok() {
            mounted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        mounted,
        "volume added by another process never became mountable"
    );
}

#[tokio::test]
async fn volume_options_changed_at_runtime_apply_to_existing_handles() {
    let s = Server::start().await;
    let root = s.root_fh(VOL).await;
    let mut c = s.client().await;
    let f = file_with(&mut c, &root, "f", 0o644, b"before").await;

    // Another process flips the volume to read-only with root squash, in the registry.
    let other = export_store::ExportStore::open(s.export_root()).unwrap();
    other
        .registry()
        .update(|data| {
            let v = data.volumes.iter_mut().find(|v| v.name == VOL).unwrap();
            v.options.read_only = true;
            v.options.squash = Squash::Root;
            Ok(())
        })
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    let mut applied = false;
    while tokio::time::Instant::now() < deadline {
        // Rewrites the same first byte until the write is refused.
        let r = try_write(&mut c, &f, 0, b"b", stable_how::FILE_SYNC).await;
        if r.err() == Some(nfsstat3::NFS3ERR_ROFS) {
            applied = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(applied, "read-only never applied to the running volume");
    // Same volume, same handles: not stale, just read-only now.
    assert_eq!(read_all(&mut c, &f).await, b"before");
    assert_eq!(s.root_fh(VOL).await, root, "the root handle did not change");
    assert_eq!(
        try_create(&mut c, &root, "new", 0o644).await.unwrap_err(),
        nfsstat3::NFS3ERR_ROFS
    );
}

#[tokio::test]
async fn handles_stay_valid_across_a_server_restart() {
    let first = Server::start().await;
    let root = first.root_fh(VOL).await;
    let mut c1 = first.client().await;
    let (d, _) = mkdir(&mut c1, &root, "dir", 0o755).await;
    let f = file_with(&mut c1, &d, "f", 0o644, b"survives restarts").await;
    let attr1 = getattr(&mut c1, &f).await.unwrap();
    let w1 = try_write(&mut c1, &f, 0, b"s", stable_how::UNSTABLE)
        .await
        .unwrap();

    let second = first.restart_on_same_root().await;
    assert_ne!(second.running.nfs, first.running.nfs);
    let mut c2 = second.client().await;
    let attr2 = getattr(&mut c2, &f)
        .await
        .expect("GETATTR with the old handle");
    assert_eq!(attr2.fileid, attr1.fileid);
    assert_eq!(attr2.size, attr1.size);
    assert_eq!(read_all(&mut c2, &f).await, b"survives restarts");
    let (found, _) = lookup(&mut c2, &d, "f").await.expect("old dir handle");
    assert_eq!(found, f, "the same handle is minted again");
    assert_eq!(
        second.root_fh(VOL).await,
        root,
        "MNT gives the same root handle"
    );

    // A new server instance has a new write verifier, so clients resend unstable writes.
    let w2 = try_write(&mut c2, &f, 0, b"s", stable_how::UNSTABLE)
        .await
        .unwrap();
    assert_ne!(
        w1.verf, w2.verf,
        "write verifier must change across restarts"
    );
}

#[tokio::test]
async fn directory_listing_resumes_on_a_restarted_server() {
    let first = Server::start().await;
    let dir = first.vol_path(VOL).join("list");
    std::fs::create_dir(&dir).unwrap();
    for i in 0..300 {
        std::fs::File::create(dir.join(format!("name-{i:03}"))).unwrap();
    }
    let root = first.root_fh(VOL).await;
    let mut c1 = first.client().await;
    let (list, _) = lookup(&mut c1, &root, "list").await.unwrap();
    let page = c1
        .readdir(&READDIR3args {
            dir: list.clone(),
            cookie: 0,
            cookieverf: cookieverf3::default(),
            count: 2048,
        })
        .await
        .unwrap()
        .unwrap();
    assert!(!page.reply.eof);
    let mut seen: Vec<Vec<u8>> = page
        .reply
        .entries
        .0
        .iter()
        .map(|e| e.name.as_ref().to_vec())
        .collect();
    let mut cookie = page.reply.entries.0.last().unwrap().cookie;
    let verf = page.cookieverf;

    // The rest of the listing from a new server instance, with the old cookie and verifier.
    let second = first.restart_on_same_root().await;
    let mut c2 = second.client().await;
    loop {
        let ok = c2
            .readdir(&READDIR3args {
                dir: list.clone(),
                cookie,
                cookieverf: verf,
                count: 2048,
            })
            .await
            .unwrap()
            .expect("the old cookie and verifier are still good");
        for e in &ok.reply.entries.0 {
            seen.push(e.name.as_ref().to_vec());
            cookie = e.cookie;
        }
        if ok.reply.eof {
            break;
        }
    }
    let total = seen.len();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), total, "no name listed twice");
    assert_eq!(total, 302, "300 names plus . and ..");
}

#[tokio::test]
async fn symlinks_are_never_followed_by_the_server() {
    let s = Server::start().await;
    let root = s.root_fh(VOL).await;
    let mut c = s.client().await;
    // A secret outside every volume, and a link to it (as a client could make).
    let secret = s.export_root().join("outside-secret");
    std::fs::write(&secret, b"do not leak").unwrap();
    let r = c
        .symlink(&SYMLINK3args {
            where_: dirop(&root, "escape"),
            symlink: symlinkdata3 {
                symlink_attributes: sattr3::default(),
                symlink_data: nfspath3::from(secret.to_str().unwrap().as_bytes()),
            },
        })
        .await
        .unwrap()
        .unwrap();
    let ln = handle_of(r.obj);
    let st = try_read(&mut c, &ln, 0, 100).await.unwrap_err();
    assert_eq!(st, nfsstat3::NFS3ERR_INVAL, "READ of a symlink");
    assert!(
        try_write(&mut c, &ln, 0, b"x", stable_how::FILE_SYNC)
            .await
            .is_err()
    );
    assert!(try_create(&mut c, &ln, "x", 0o644).await.is_err());
    // A symlinked directory is not entered either.
    std::os::unix::fs::symlink(s.export_root(), s.vol_path(VOL).join("rootlink")).unwrap();
    let (dl, _) = lookup(&mut c, &root, "rootlink").await.unwrap();
    assert_eq!(
        lookup(&mut c, &dl, "outside-secret").await.unwrap_err(),
        nfsstat3::NFS3ERR_NOTDIR
    );
    assert_eq!(std::fs::read(&secret).unwrap(), b"do not leak");
}

#[tokio::test]
async fn setattr_and_link_of_a_symlink_act_on_the_link_never_its_target() {
    let s = Server::start().await;
    let root = s.root_fh(VOL).await;
    let mut c = s.client().await;
    let target = s.export_root().join("outside-target");
    std::fs::write(&target, b"outside").unwrap();
    let before = std::fs::metadata(&target).unwrap();
    std::os::unix::fs::symlink(&target, s.vol_path(VOL).join("ln")).unwrap();
    let (ln, _) = lookup(&mut c, &root, "ln").await.unwrap();

    let t = nfstime3 {
        seconds: 12_345,
        nseconds: 0,
    };
    let set = sattr3 {
        mode: Nfs3Option::Some(0o600),
        uid: Nfs3Option::Some(777),
        atime: set_atime::SET_TO_CLIENT_TIME(t),
        mtime: set_mtime::SET_TO_CLIENT_TIME(t),
        ..sattr3::default()
    };
    let r = c
        .setattr(&SETATTR3args {
            object: ln.clone(),
            new_attributes: set,
            guard: Nfs3Option::None,
        })
        .await
        .unwrap();
    assert_eq!(status(&r), nfsstat3::NFS3_OK);
    let r = c
        .setattr(&SETATTR3args {
            object: ln.clone(),
            new_attributes: sattr3 {
                size: Nfs3Option::Some(0),
                ..sattr3::default()
            },
            guard: Nfs3Option::None,
        })
        .await
        .unwrap();
    assert_ne!(status(&r), nfsstat3::NFS3_OK, "truncating a symlink");
    let r = c
        .link(&LINK3args {
            file: ln.clone(),
            link: dirop(&root, "hard"),
        })
        .await
        .unwrap();
    assert_eq!(status(&r), nfsstat3::NFS3_OK);

    let after = std::fs::metadata(&target).unwrap();
    assert_eq!(std::fs::read(&target).unwrap(), b"outside");
    assert_eq!(
        (after.uid(), after.mode(), after.mtime(), after.nlink()),
        (before.uid(), before.mode(), before.mtime(), before.nlink()),
        "the target outside the volume is untouched"
    );
    let link = std::fs::symlink_metadata(s.vol_path(VOL).join("ln")).unwrap();
    assert_eq!(
        (link.uid(), link.mtime()),
        (777, 12_345),
        "the link itself changed"
    );
    let hard = std::fs::symlink_metadata(s.vol_path(VOL).join("hard")).unwrap();
    assert!(
        hard.file_type().is_symlink(),
        "LINK linked the symlink itself"
    );
    assert_eq!(hard.ino(), link.ino());
}

#[tokio::test]
async fn symlink_handle_used_as_directory_is_notdir_not_stale() {
    let s = Server::start().await;
    let root = s.root_fh(VOL).await;
    let mut c = s.client().await;
    mkdir(&mut c, &root, "realdir", 0o755).await;
    std::os::unix::fs::symlink("realdir", s.vol_path(VOL).join("dirlink")).unwrap();
    let (ln, la) = lookup(&mut c, &root, "dirlink").await.unwrap();
    assert_eq!(la.type_, ftype3::NF3LNK);
    let (f, _) = create(&mut c, &root, "f", 0o644).await;
    const NOTDIR: nfsstat3 = nfsstat3::NFS3ERR_NOTDIR;
    let mut wrong = Vec::new();
    let mut check = |what: &str, st: nfsstat3| {
        if st != NOTDIR {
            wrong.push(format!("{what}: {st}"));
        }
    };
    check("LOOKUP", lookup(&mut c, &ln, "x").await.unwrap_err());
    check(
        "CREATE",
        try_create(&mut c, &ln, "x", 0o644).await.unwrap_err(),
    );
    check(
        "MKDIR",
        try_mkdir(&mut c, &ln, "x", 0o755).await.unwrap_err(),
    );
    let r = c
        .symlink(&SYMLINK3args {
            where_: dirop(&ln, "x"),
            symlink: symlinkdata3 {
                symlink_attributes: sattr3::default(),
                symlink_data: nfspath3::from(&b"t"[..]),
            },
        })
        .await
        .unwrap();
    check("SYMLINK", status(&r));
    let r = c
        .mknod(&MKNOD3args {
            where_: dirop(&ln, "x"),
            what: mknoddata3::NF3FIFO(sattr3::default()),
        })
        .await
        .unwrap();
    check("MKNOD", status(&r));
    let r = c
        .remove(&REMOVE3args {
            object: dirop(&ln, "x"),
        })
        .await
        .unwrap();
    check("REMOVE", status(&r));
    let r = c
        .rmdir(&RMDIR3args {
            object: dirop(&ln, "x"),
        })
        .await
        .unwrap();
    check("RMDIR", status(&r));
    let r = c
        .rename(&RENAME3args {
            from: dirop(&root, "f"),
            to: dirop(&ln, "x"),
        })
        .await
        .unwrap();
    check("RENAME", status(&r));
    let r = c
        .link(&LINK3args {
            file: f.clone(),
            link: dirop(&ln, "x"),
        })
        .await
        .unwrap();
    check("LINK", status(&r));
    let r = c
        .readdir(&READDIR3args {
            dir: ln.clone(),
            cookie: 0,
            cookieverf: cookieverf3::default(),
            count: 4096,
        })
        .await
        .unwrap();
    check("READDIR", status(&r));
    let r = c
        .readdirplus(&READDIRPLUS3args {
            dir: ln.clone(),
            cookie: 0,
            cookieverf: cookieverf3::default(),
            dircount: 4096,
            maxcount: 8192,
        })
        .await
        .unwrap();
    check("READDIRPLUS", status(&r));
    assert!(wrong.is_empty(), "not NOTDIR: {wrong:?}");
    // The link itself is of course not stale.
    assert_eq!(getattr(&mut c, &ln).await.unwrap().type_, ftype3::NF3LNK);
}
