//! Volume sizes: a volume with a size gets DQUOT when full on every call that allocates, frees
//! space on removal, reports its size and use in FSSTAT, grows online, and counts the same
//! after a restart. Driven over loopback by the `nfs3_client` crate (and `nfs-rs` for NFSv4.1)
//! against an in-process server on a real file system.

mod common;

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use bytes::Bytes;
use common::*;

const MIB: u64 = 1 << 20;
const Q: &str = "sized";

fn sized(bytes: u64) -> VolumeOptions {
    VolumeOptions {
        size: Some(bytes),
        ..VolumeOptions::default()
    }
}

async fn fsstat(c: &mut Client, root: &nfs_fh3) -> FSSTAT3resok {
    c.fsstat(&FSSTAT3args {
        fsroot: root.clone(),
    })
    .await
    .expect("FSSTAT rpc")
    .unwrap()
}

fn used(s: &Server) -> u64 {
    s.running.store.volume_by_name(Q).unwrap().quota.used()
}

/// Bytes allocated under a directory as the kernel counts them (each inode once).
fn du(dir: &std::path::Path) -> u64 {
    export_store::quota::measure(dir).unwrap().0
}

async fn setattr_size(c: &mut Client, f: &nfs_fh3, size: u64) -> nfsstat3 {
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
        .expect("SETATTR rpc");
    status(&r)
}

#[tokio::test]
async fn a_full_volume_refuses_allocation_with_dquot_and_keeps_its_files() {
    let s = Server::with_volumes(&[(Q, sized(MIB))]).await;
    let root = s.root_fh(Q).await;
    let mut c = s.client().await;

    // df: the volume's size, not the disk's.
    let st = fsstat(&mut c, &root).await;
    assert_eq!(st.tbytes, MIB);
    assert!(st.fbytes <= MIB && st.abytes == st.fbytes);

    let keep = file_with(&mut c, &root, "keep", 0o644, &[7u8; 200_000]).await;
    file_with(&mut c, &root, "victim", 0o644, b"old").await;
    let (big, _) = create(&mut c, &root, "big", 0o644).await;
    // Write 256 KiB chunks until the server says no: the last accepted write is cut short
    // at the limit, then DQUOT.
    let chunk = vec![1u8; 256 << 10];
    let mut offset = 0u64;
    let refused = loop {
        match try_write(&mut c, &big, offset, &chunk, stable_how::FILE_SYNC).await {
            Ok(ok) => {
                assert!(ok.count > 0);
                offset += u64::from(ok.count);
            }
            Err(st) => break st,
        }
        assert!(offset < 4 * MIB, "the limit was never enforced");
    };
    assert_eq!(refused, nfsstat3::NFS3ERR_DQUOT);
    let on_disk = du(&s.vol_path(Q));
    assert!(
        on_disk <= MIB + 8192,
        "{on_disk} bytes on disk for a 1 MiB volume"
    );
    assert_eq!(used(&s), on_disk, "the server's count is the disk's");
    let st = fsstat(&mut c, &root).await;
    assert!(
        st.fbytes < 8192,
        "df shows the volume full: {} free",
        st.fbytes
    );

    // Every call that allocates is refused; the other file is intact.
    assert_eq!(
        try_create(&mut c, &root, "new", 0o644).await.unwrap_err(),
        nfsstat3::NFS3ERR_DQUOT
    );
    assert_eq!(
        try_mkdir(&mut c, &root, "dir", 0o755).await.unwrap_err(),
        nfsstat3::NFS3ERR_DQUOT
    );
    assert_eq!(
        try_symlink(&mut c, &root, "sym", "keep").await,
        nfsstat3::NFS3ERR_DQUOT
    );
    assert_eq!(
        try_link(&mut c, &keep, &root, "hard").await,
        nfsstat3::NFS3ERR_DQUOT
    );
    assert_eq!(
        try_rename(&mut c, &root, "keep", "renamed").await,
        nfsstat3::NFS3ERR_DQUOT
    );
    assert_eq!(
        setattr_size(&mut c, &keep, 300_000).await,
        nfsstat3::NFS3ERR_DQUOT
    );
    assert_eq!(read_all(&mut c, &keep).await, vec![7u8; 200_000]);
    // Overwriting allocated bytes needs no space and still works.
    assert_eq!(write(&mut c, &keep, 0, &[9u8; 1000]).await.count, 1000);

    // Renaming onto an existing file frees space: allowed, and the replaced file's space
    // comes back.
    let before = used(&s);
    assert_eq!(
        try_rename(&mut c, &root, "big", "victim").await,
        nfsstat3::NFS3_OK
    );
    assert!(used(&s) < before);
    assert_eq!(used(&s), du(&s.vol_path(Q)));

    // Removing a file frees its space at once.
    let r = c
        .remove(&REMOVE3args {
            object: dirop(&root, "victim"),
        })
        .await
        .unwrap();
    assert_eq!(status(&r), nfsstat3::NFS3_OK);
    assert_eq!(used(&s), du(&s.vol_path(Q)));
    let st = fsstat(&mut c, &root).await;
    assert!(
        st.fbytes > MIB / 2,
        "space back after REMOVE: {} free",
        st.fbytes
    );
    create(&mut c, &root, "new", 0o644).await;
}

#[tokio::test]
async fn hard_links_and_sparse_files_count_what_they_allocate() {
    let s = Server::with_volumes(&[(Q, sized(4 * MIB))]).await;
    let root = s.root_fh(Q).await;
    let mut c = s.client().await;
    let f = file_with(&mut c, &root, "f", 0o644, &[1u8; 300_000]).await;
    let before = used(&s);
    assert_eq!(try_link(&mut c, &f, &root, "hard").await, nfsstat3::NFS3_OK);
    // Removing one of two links frees nothing.
    c.remove(&REMOVE3args {
        object: dirop(&root, "f"),
    })
    .await
    .unwrap();
    assert_eq!(used(&s), before, "a hard link is not a second copy");

    // A 1 GiB sparse file in a 4 MiB volume: only its written block counts.
    let (sparse, _) = create(&mut c, &root, "sparse", 0o644).await;
    assert_eq!(
        setattr_size(&mut c, &sparse, 1 << 30).await,
        nfsstat3::NFS3_OK
    );
    write(&mut c, &sparse, 512 * MIB, b"middle").await;
    assert_eq!(used(&s), du(&s.vol_path(Q)));
    assert!(used(&s) < MIB);
    let md = std::fs::metadata(s.vol_path(Q).join("sparse")).unwrap();
    assert_eq!(md.size(), 1 << 30);
}

#[tokio::test]
async fn concurrent_writers_cannot_overshoot_the_limit() {
    let s = Server::with_volumes(&[(Q, sized(2 * MIB))]).await;
    let root = s.root_fh(Q).await;
    let mut tasks = Vec::new();
    for w in 0..2 {
        let mut c = s.client().await;
        let (f, _) = create(&mut c, &root, &format!("w{w}"), 0o644).await;
        tasks.push(tokio::spawn(async move {
            let chunk = vec![w as u8; 128 << 10];
            let mut offset = 0;
            loop {
                match try_write(&mut c, &f, offset, &chunk, stable_how::UNSTABLE).await {
                    Ok(ok) => offset += u64::from(ok.count),
                    Err(st) => return (st, offset),
                }
            }
        }));
    }
    let mut total = 0;
    for t in tasks {
        let (st, written) = t.await.unwrap();
        assert_eq!(st, nfsstat3::NFS3ERR_DQUOT);
        total += written;
    }
    let on_disk = du(&s.vol_path(Q));
    assert!(total <= 2 * MIB, "{total} bytes accepted");
    assert!(on_disk <= 2 * MIB + 2 * 8192, "{on_disk} bytes on disk");
    assert_eq!(used(&s), on_disk);
}

#[tokio::test]
async fn resizing_lets_the_same_client_write_more_and_a_restart_counts_the_same() {
    let s = Server::with_volumes(&[(Q, sized(MIB))]).await;
    let root = s.root_fh(Q).await;
    let mut c = s.client().await;
    let (f, _) = create(&mut c, &root, "f", 0o644).await;
    let chunk = vec![3u8; 512 << 10];
    write(&mut c, &f, 0, &chunk).await;
    let ok = try_write(&mut c, &f, 512 << 10, &chunk, stable_how::FILE_SYNC)
        .await
        .unwrap();
    assert!(u64::from(ok.count) < 512 << 10, "cut short at 1 MiB");
    let at = (512 << 10) + u64::from(ok.count);
    assert_eq!(
        try_write(&mut c, &f, at, &chunk, stable_how::FILE_SYNC)
            .await
            .unwrap_err(),
        nfsstat3::NFS3ERR_DQUOT
    );

    // Grow it while served: same connection, same handle.
    assert!(matches!(
        s.running.store.resize_volume(Q, MIB / 2),
        Err(export_store::StoreError::Registry(
            export_store::RegistryError::Shrink { .. }
        ))
    ));
    s.running.store.resize_volume(Q, 3 * MIB).unwrap();
    assert_eq!(write(&mut c, &f, at, &chunk).await.count, 512 << 10);
    assert_eq!(fsstat(&mut c, &root).await.tbytes, 3 * MIB);

    // A second server on the same export root (a restart) measures the same usage and keeps
    // the new size.
    let before = used(&s);
    let again = s.restart_on_same_root().await;
    let v = again.running.store.volume_by_name(Q).unwrap();
    assert_eq!(v.quota.used(), before);
    assert_eq!(v.quota.limit(), Some(3 * MIB));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nfsv4_writes_past_the_size_fail_and_space_attributes_show_it() {
    let s = Server::with_volumes(&[(Q, sized(MIB))]).await;
    let url = format!(
        "nfs://127.0.0.1/export/{Q}?version=4.1&nfsport={}&noresvport=true&uid=0&gid=0",
        s.running.nfs.port()
    );
    let m = nfs_rs::parse_url_and_mount(&url).await.expect("v4.1 mount");
    let f = m.create_path("f", Some(0o644)).await.unwrap();
    let chunk = Bytes::from(vec![5u8; 256 << 10]);
    let mut offset = 0u64;
    let err = loop {
        match m.write(f.fh.clone(), offset, chunk.clone()).await {
            Ok(w) => offset += u64::from(w.count),
            Err(e) => break e,
        }
        assert!(offset < 4 * MIB, "the limit was never enforced");
    };
    assert!(format!("{err:?}").contains("DQUOT"), "{err:?}");
    assert!(offset <= MIB);
    let st = m.fsstat().await.unwrap();
    assert_eq!(st.tbytes, MIB);
    assert!(st.fbytes < 8192);
}

#[tokio::test]
async fn files_copied_beside_the_server_are_counted_by_the_recount() {
    let s = Server::configured(&[(Q, sized(4 * MIB))], |c| {
        c.recount_interval = Some(RELOAD)
    })
    .await;
    let root = s.root_fh(Q).await;
    let mut c = s.client().await;
    let free = fsstat(&mut c, &root).await.fbytes;
    assert!(free > 3 * MIB, "an empty 4 MiB volume: {free} free");

    // An administrator copies 3 MiB straight into the volume's directory.
    let copied = s.vol_path(Q).join("copied");
    std::fs::write(&copied, vec![3u8; 3 * MIB as usize]).unwrap();
    std::fs::File::open(&copied).unwrap().sync_all().unwrap();
    let mut waited = Duration::ZERO;
    while used(&s) != du(&s.vol_path(Q)) && waited < Duration::from_secs(10) {
        tokio::time::sleep(RELOAD).await;
        waited += RELOAD;
    }
    assert_eq!(used(&s), du(&s.vol_path(Q)), "recounted");
    let free = fsstat(&mut c, &root).await.fbytes;
    assert!(free < MIB, "df counts the copied file: {free} free");

    // The copied bytes count against the size: at most what is left can be written.
    let (f, _) = create(&mut c, &root, "more", 0o644).await;
    let mut offset = 0u64;
    loop {
        match try_write(&mut c, &f, offset, &[1u8; 256 << 10], stable_how::FILE_SYNC).await {
            Ok(w) if w.count > 0 => offset += u64::from(w.count),
            Ok(_) => break,
            Err(st) => {
                assert_eq!(st, nfsstat3::NFS3ERR_DQUOT);
                break;
            }
        }
        assert!(offset <= 4 * MIB, "no limit enforced");
    }
    assert!(
        offset <= MIB,
        "{offset} bytes written after 3 MiB were copied in"
    );
    assert!(used(&s) <= 4 * MIB + 4096);
}
