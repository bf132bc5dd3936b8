//! NFSv4.0 and NFSv4.1 against the whole in-process server, driven by the independent
//! `nfs-rs` client: file operations through the pseudo-root path `/export/<volume>`, the same
//! handles as v3, byte-range locks between two clients, and the grace period after a restart.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use nfs_rs::{Mount, OPEN_BOTH, parse_url_and_mount};

fn url(server: &Server, path: &str) -> String {
    url_of(server, path, "4.1")
}

fn url_of(server: &Server, path: &str, version: &str) -> String {
    format!(
        "nfs://127.0.0.1{path}?version={version}&nfsport={}&noresvport=true&uid=0&gid=0",
        server.running.nfs.port()
    )
}

async fn mount(server: &Server) -> Box<dyn Mount> {
    mount_version(server, "4.1").await
}

async fn mount_version(server: &Server, version: &str) -> Box<dyn Mount> {
    parse_url_and_mount(&url_of(server, "/export/vol", version))
        .await
        .unwrap_or_else(|e| panic!("NFSv{version} mount of /export/vol: {e:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_operations_over_v40() {
    file_operations("4.0").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_operations_over_v41() {
    file_operations("4.1").await;
}

async fn file_operations(version: &str) {
    let server = Server::start().await;
    let m = mount_version(&server, version).await;

    // Create, write, read back; the bytes are in the real file.
    let created = m.create_path("hello.txt", Some(0o640)).await.unwrap();
    m.write(created.fh.clone(), 0, Bytes::from_static(b"hello over v4"))
        .await
        .unwrap();
    m.commit(created.fh.clone(), 0, 0).await.unwrap();
    m.close(created.fh.clone()).await.unwrap();
    let on_disk = std::fs::read(server.vol_path(VOL).join("hello.txt")).unwrap();
    assert_eq!(on_disk, b"hello over v4");
    let back = m.read_path("hello.txt", 0, 100).await.unwrap();
    assert_eq!(&back[..], b"hello over v4");
    let attr = m.getattr_path("hello.txt").await.unwrap();
    assert_eq!(attr.filesize, 13);
    assert_eq!(attr.file_mode & 0o777, 0o640);

    // Directories, rename, hard and symbolic links, chmod, truncate.
    m.mkdir_path("dir", 0o755).await.unwrap();
    m.rename_path("hello.txt", "dir/renamed.txt").await.unwrap();
    assert!(server.vol_path(VOL).join("dir/renamed.txt").exists());
    m.link_path("dir/renamed.txt", "dir/hard.txt")
        .await
        .unwrap();
    let attr = m.getattr_path("dir/renamed.txt").await.unwrap();
    assert_eq!(attr.nlink, 2);
    m.symlink_path("renamed.txt", "dir/sym").await.unwrap();
    assert_eq!(m.readlink_path("dir/sym").await.unwrap(), "renamed.txt");
    m.setattr_path(
        "dir/renamed.txt",
        false,
        Some(0o600),
        None,
        None,
        None,
        None,
        None,
    )
    .await
    .unwrap();
    let meta = std::fs::metadata(server.vol_path(VOL).join("dir/renamed.txt")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
        0o600
    );

    // A listing sees every entry, with attributes.
    for i in 0..300 {
        m.create_path(&format!("dir/f{i:03}"), Some(0o644))
            .await
            .unwrap();
    }
    let mut names = Vec::new();
    let mut stream = m.readdirplus_path("dir").await.unwrap();
    while let Some(entry) = futures_next(&mut stream).await {
        names.push(entry.unwrap().file_name);
    }
    assert_eq!(names.len(), 303, "{names:?}");
    assert!(names.iter().any(|n| n == "sym"));

    // Removal, and errors that name the problem.
    m.remove_path("dir/hard.txt").await.unwrap();
    assert!(!server.vol_path(VOL).join("dir/hard.txt").exists());
    assert!(m.lookup_path("dir/missing").await.is_err());
    assert!(m.rmdir_path("dir").await.is_err(), "not empty");

    let stat = m.fsstat().await.unwrap();
    assert!(stat.tbytes > 0 && stat.fbytes <= stat.tbytes);
    m.umount().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_reads_come_from_the_file_intact() {
    // Large READ data is sent from the page cache (sendfile); odd lengths need XDR padding
    // and the connection must stay framed for the calls that follow.
    let server = Server::start().await;
    let data: Vec<u8> = (0..300_001u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(server.vol_path(VOL).join("big"), &data).unwrap();
    let m = mount(&server).await;
    for (offset, count) in [(1u64, 200_001u32), (0, 300_001), (250_000, 100_000)] {
        let got = m.read_path("big", offset, count).await.unwrap();
        let end = (offset as usize + count as usize).min(data.len());
        assert_eq!(&got[..], &data[offset as usize..end], "offset {offset}");
    }
    let attr = m.getattr_path("big").await.unwrap();
    assert_eq!(attr.filesize, 300_001);
}

async fn futures_next<S: futures::Stream + Unpin>(s: &mut S) -> Option<S::Item> {
    futures::StreamExt::next(s).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pseudo_root_lists_volumes_and_handles_match_v3() {
    let server = Server::start().await;
    server.add_volume("second", VolumeOptions::default());
    tokio::time::sleep(RELOAD * 3).await;
    let root = parse_url_and_mount(&url(&server, "/export"))
        .await
        .expect("mount the pseudo directory /export");
    let mut names = Vec::new();
    let mut stream = root.readdir_path("/").await.unwrap();
    while let Some(e) = futures_next(&mut stream).await {
        names.push(e.unwrap().file_name);
    }
    names.sort();
    assert_eq!(names, ["second", "vol"]);
    assert!(root.create_path("nope", Some(0o644)).await.is_err());

    // The v4 handle of a file is the v3 handle of the same file.
    let m = mount(&server).await;
    let f = m.create_path("same.txt", Some(0o644)).await.unwrap();
    let mut v3 = server.client().await;
    let dir = server.root_fh(VOL).await;
    let looked = v3
        .lookup(&LOOKUP3args {
            what: diropargs3 {
                dir,
                name: filename3(nfs3_types::xdr_codec::Opaque::borrowed(b"same.txt")),
            },
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(looked.object.data.as_ref(), &f.fh[..]);
}

fn denied(r: &nfs_rs::Result<impl std::fmt::Debug>) -> bool {
    match r {
        Err(nfs_rs::NfsError::LockDenied { .. }) => true,
        Err(nfs_rs::NfsError::Nfs4(code)) => *code as u32 == 10010,
        _ => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_conflict_between_v41_clients() {
    locks_conflict_between_clients("4.1", "4.1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_conflict_between_v40_and_v41_clients() {
    locks_conflict_between_clients("4.0", "4.1").await;
    locks_conflict_between_clients("4.1", "4.0").await;
}

async fn locks_conflict_between_clients(va: &str, vb: &str) {
    let server = Server::start().await;
    let a = mount_version(&server, va).await;
    let b = mount_version(&server, vb).await;
    let created = a.create_path("locked", Some(0o666)).await.unwrap();
    a.close(created.fh).await.unwrap();
    let fa = a.open_path("locked", OPEN_BOTH).await.unwrap();
    let fb = b.open_path("locked", OPEN_BOTH).await.unwrap();
    let held = a
        .lock(fa.fh.clone(), 2, 0, 100)
        .await
        .expect("A takes a write lock");
    assert_eq!(server.running.locks.snapshot().len(), 1);
    let t = b.lock_test(fb.fh.clone(), 1, 50, 10).await;
    assert!(denied(&t), "B sees A's lock: {t:?}");
    let l = b.lock(fb.fh.clone(), 2, 99, 1).await;
    assert!(denied(&l), "B cannot take it: {l:?}");
    b.lock(fb.fh.clone(), 2, 100, 10)
        .await
        .expect("past A's range is free");
    a.locku(fa.fh.clone(), held, 2, 0, 100).await.unwrap();
    b.lock(fb.fh.clone(), 1, 0, 100)
        .await
        .expect("free once A unlocked");
    // A lock held keeps CLOSE from succeeding silently; unlocking and closing releases all.
    a.close(fa.fh).await.unwrap();
    b.close(fb.fh).await.ok();
}

#[test]
fn restart_starts_a_grace_period_only_for_known_clients() {
    let dir = export_root();
    let root = dir.path().to_path_buf();
    // First server: a client takes a lock, then the server dies with its runtime.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let server = Server::on_root(&root, Duration::from_secs(90)).await;
        let m = mount(&server).await;
        let created = m.create_path("held", Some(0o666)).await.unwrap();
        m.close(created.fh).await.unwrap();
        let f = m.open_path("held", OPEN_BOTH).await.unwrap();
        m.lock(f.fh.clone(), 2, 0, 10).await.unwrap();
    });
    rt.shutdown_background();
    let records = std::fs::read_to_string(
        root.join(export_store::registry::STATE_DIR)
            .join(nfs_server::CLIENT_RECORDS),
    )
    .unwrap();
    assert_eq!(records.lines().count(), 1, "{records}");

    // Second server on the same root with a short grace period: a new client's lock is
    // refused (NFS4ERR_GRACE, which the client retries) until the period is over.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let server = Server::on_root(&root, Duration::from_secs(6)).await;
        assert!(server.running.grace.active());
        let early = mount(&server).await;
        // Opening is refused too; the client keeps retrying until the period ends.
        let attempt = tokio::time::timeout(Duration::from_secs(3), async {
            let f = early.open_path("held", OPEN_BOTH).await?;
            early.lock(f.fh.clone(), 2, 0, 10).await
        })
        .await;
        assert!(
            !matches!(attempt, Ok(Ok(_))),
            "a new lock during grace: {attempt:?}"
        );
        assert!(server.running.locks.snapshot().is_empty());
        drop(early);
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert!(!server.running.grace.active());
        let m = mount(&server).await;
        let f = m.open_path("held", OPEN_BOTH).await.unwrap();
        m.lock(f.fh.clone(), 2, 0, 10)
            .await
            .expect("after grace, the old holder is gone and the lock is free");
    });
    rt.shutdown_background();
}
