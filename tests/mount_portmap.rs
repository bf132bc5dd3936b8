//! MOUNT v3 (RFC 1813 appendix I) and the portmapper (RFC 1833), through `nfs3_client`.

mod common;

use common::*;
use nfs3_client::{MountError, PortmapError};
use nfs3_types::mount::{dirpath, mountstat3};
use nfs3_types::portmap::IPPROTO_TCP;
use nfs3_types::xdr_codec::Opaque;

fn path(p: &str) -> dirpath<'static> {
    dirpath(Opaque::owned(p.as_bytes().to_vec()))
}

#[tokio::test]
async fn mount_null_answers() {
    let s = Server::start().await;
    s.mounter().await.null().await.expect("MOUNT NULL");
}

#[tokio::test]
async fn mnt_of_export_volume_returns_its_root_handle() {
    let s = Server::start().await;
    let mut m = s.mounter().await;
    let ok = m.mnt(path("/export/vol")).await.expect("MNT /export/vol");
    let vol = s.running.store.volume_by_name(VOL).unwrap();
    assert_eq!(ok.fhandle.0.as_ref(), vol.root_handle());
    assert!(
        ok.fhandle.0.len() <= 64,
        "NFSv3 handles are at most 64 bytes"
    );
    assert!(
        ok.auth_flavors.contains(&1),
        "AUTH_UNIX offered: {:?}",
        ok.auth_flavors
    );

    // The handle is the volume root over NFS.
    let mut c = s.client().await;
    let a = getattr(&mut c, &fh(ok.fhandle.0.as_ref())).await.unwrap();
    let md = std::fs::metadata(s.vol_path(VOL)).unwrap();
    assert_eq!(a.fileid, std::os::unix::fs::MetadataExt::ino(&md));

    // A trailing slash names the same export.
    let again = m.mnt(path("/export/vol/")).await.expect("MNT with slash");
    assert_eq!(again.fhandle.0.as_ref(), vol.root_handle());
}

#[tokio::test]
async fn mnt_of_unknown_path_is_noent() {
    let s = Server::start().await;
    let mut m = s.mounter().await;
    for p in [
        "/export/missing",
        "/export",
        "/export/",
        "/",
        "/etc",
        "/export/vol/sub",
        "/export/../export/vol",
        "/export/.nfs-server-provisioner",
        "",
    ] {
        match m.mnt(path(p)).await {
            Err(MountError::Denied(st)) => {
                assert!(matches!(st, mountstat3::MNT3ERR_NOENT), "MNT {p:?}: {st:?}")
            }
            Err(e) => panic!("MNT {p:?}: {e}"),
            Ok(ok) => panic!("MNT {p:?} succeeded with {:?}", ok.fhandle),
        }
    }
}

#[tokio::test]
async fn mnt_of_path_longer_than_mntpathlen_is_refused() {
    let s = Server::start().await;
    let mut m = s.mounter().await;
    let long = format!("/export/{}", "v".repeat(1100));
    match m.mnt(path(&long)).await {
        Err(MountError::Denied(st)) => assert!(
            matches!(
                st,
                mountstat3::MNT3ERR_NAMETOOLONG | mountstat3::MNT3ERR_NOENT
            ),
            "{st:?}"
        ),
        Err(MountError::Rpc(nfs3_client::RpcError::GarbageArgs)) => {}
        Err(e) => panic!("MNT of a 1100-byte path: {e}"),
        Ok(_) => panic!("MNT of a 1100-byte path succeeded"),
    }
    // The connection still works.
    m.mnt(path("/export/vol")).await.unwrap();
}

#[tokio::test]
async fn export_lists_every_volume_as_export_slash_name() {
    let s = Server::with_volumes(&[
        ("alpha", VolumeOptions::default()),
        (
            "pvc-0b5e5c2a-1111-2222-3333-444455556666",
            VolumeOptions::default(),
        ),
        (
            "zeta",
            VolumeOptions {
                read_only: true,
                ..VolumeOptions::default()
            },
        ),
    ])
    .await;
    let mut m = s.mounter().await;
    let list = m.export().await.expect("EXPORT");
    let mut dirs: Vec<String> = list
        .into_inner()
        .into_iter()
        .map(|e| String::from_utf8(e.ex_dir.0.to_vec()).unwrap())
        .collect();
    dirs.sort();
    assert_eq!(
        dirs,
        [
            "/export/alpha",
            "/export/pvc-0b5e5c2a-1111-2222-3333-444455556666",
            "/export/zeta"
        ]
    );
    // Every listed export can be mounted.
    for d in &dirs {
        m.mnt(path(d))
            .await
            .unwrap_or_else(|e| panic!("MNT {d}: {e}"));
    }

    // A removed volume disappears from the list and can no longer be mounted.
    s.running.store.remove_volume("alpha").unwrap();
    let list = m.export().await.unwrap();
    assert_eq!(list.into_inner().len(), 2);
    assert!(matches!(
        m.mnt(path("/export/alpha")).await,
        Err(MountError::Denied(mountstat3::MNT3ERR_NOENT))
    ));
}

#[tokio::test]
async fn export_of_server_without_volumes_is_empty() {
    let s = Server::with_volumes(&[]).await;
    let mut m = s.mounter().await;
    assert!(m.export().await.unwrap().into_inner().is_empty());
}

async fn dump(m: &mut Mounter) -> Vec<(String, String)> {
    let mut v: Vec<_> = m
        .dump()
        .await
        .expect("DUMP")
        .into_inner()
        .into_iter()
        .map(|b| {
            (
                String::from_utf8(b.ml_hostname.0.to_vec()).unwrap(),
                String::from_utf8(b.ml_directory.0.to_vec()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn dump_umnt_and_umntall_track_mounts() {
    let s = Server::with_volumes(&[
        ("a", VolumeOptions::default()),
        ("b", VolumeOptions::default()),
    ])
    .await;
    let mut m = s.mounter().await;
    assert!(dump(&mut m).await.is_empty(), "no mounts yet");

    m.mnt(path("/export/a")).await.unwrap();
    m.mnt(path("/export/b")).await.unwrap();
    m.mnt(path("/export/a")).await.unwrap(); // mounting twice lists once
    let host = "127.0.0.1".to_string();
    assert_eq!(
        dump(&mut m).await,
        [
            (host.clone(), "/export/a".to_string()),
            (host.clone(), "/export/b".to_string())
        ]
    );
    // A failed MNT is not recorded.
    assert!(m.mnt(path("/export/none")).await.is_err());
    assert_eq!(dump(&mut m).await.len(), 2);

    m.umnt(path("/export/a")).await.expect("UMNT");
    assert_eq!(
        dump(&mut m).await,
        [(host.clone(), "/export/b".to_string())]
    );
    // UMNT of something not mounted is harmless.
    m.umnt(path("/export/never")).await.expect("UMNT unknown");
    assert_eq!(dump(&mut m).await.len(), 1);

    m.mnt(path("/export/a")).await.unwrap();
    assert_eq!(dump(&mut m).await.len(), 2);
    m.umntall().await.expect("UMNTALL");
    assert!(dump(&mut m).await.is_empty(), "UMNTALL forgets every mount");

    // Another connection from the same host sees the same (empty) list; mounts made
    // through it are visible here.
    let mut m2 = s.mounter().await;
    m2.mnt(path("/export/b")).await.unwrap();
    assert_eq!(dump(&mut m).await, [(host, "/export/b".to_string())]);
}

#[tokio::test]
async fn connection_builder_mounts_through_the_portmapper() {
    // The client's own discovery path: portmapper -> MOUNT -> NFS.
    let s = Server::start().await;
    let conn = nfs3_client::Nfs3ConnectionBuilder::new(
        nfs3_client::tokio::TokioConnector,
        "127.0.0.1",
        "/export/vol",
    )
    .portmapper_port(s.running.portmap.unwrap().port())
    .connect_from_privileged_port(false)
    .credential(cred(0, 0))
    .mount()
    .await
    .expect("mount through the portmapper");
    assert_eq!(conn.nfs3_port, s.running.nfs.port());
    assert_eq!(conn.mount_port, s.running.mount.port());
    let root = conn.root_nfs_fh3();
    let mut nfs = conn;
    let a = nfs
        .getattr(&GETATTR3args {
            object: root.clone(),
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a.obj_attributes.type_, ftype3::NF3DIR);
    nfs.unmount().await.expect("UMNT");
}

// ---------------------------------------------------------------------------------------
// Portmapper

#[tokio::test]
async fn portmapper_getport_for_nfs_v3_tcp_returns_the_nfs_port() {
    let s = Server::start().await;
    let mut pm = s.portmapper().await;
    pm.null().await.expect("PMAP NULL");
    let nfs = pm.getport(NFS_PROGRAM, 3, IPPROTO_TCP).await.unwrap();
    assert_eq!(nfs, s.running.nfs.port());
    let v4 = pm.getport(NFS_PROGRAM, 4, IPPROTO_TCP).await.unwrap();
    assert_eq!(v4, s.running.nfs.port(), "NFSv4 on the same port");
    let mount = pm.getport(MOUNT_PROGRAM, 3, IPPROTO_TCP).await.unwrap();
    assert_eq!(mount, s.running.mount.port());
    let own = pm.getport(PORTMAP_PROGRAM, 2, IPPROTO_TCP).await.unwrap();
    assert_eq!(own, s.running.portmap.unwrap().port());

    // Not offered: UDP, other versions, other programs.
    for (prog, vers, prot) in [
        (NFS_PROGRAM, 3, 17),
        (NFS_PROGRAM, 4, 17),
        (NFS_PROGRAM, 2, IPPROTO_TCP),
        (100_021, 1, IPPROTO_TCP), // NLM v1 and v3: only v4 is served
        (100_021, 3, 17),
    ] {
        match pm.getport(prog, vers, prot).await {
            Err(PortmapError::ProgramUnavailable) => {}
            other => panic!("GETPORT {prog} v{vers} prot {prot}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn portmapper_dump_lists_the_programs_served() {
    let s = Server::start().await;
    let mut pm = s.portmapper().await;
    let mut got: Vec<(u32, u32, u32, u32)> = pm
        .dump()
        .await
        .expect("DUMP")
        .into_iter()
        .map(|m| (m.prog, m.vers, m.prot, m.port))
        .collect();
    got.sort();
    let mut want = vec![
        (
            PORTMAP_PROGRAM,
            2,
            IPPROTO_TCP,
            u32::from(s.running.portmap.unwrap().port()),
        ),
        (NFS_PROGRAM, 3, IPPROTO_TCP, u32::from(s.running.nfs.port())),
        (NFS_PROGRAM, 4, IPPROTO_TCP, u32::from(s.running.nfs.port())),
        (
            MOUNT_PROGRAM,
            3,
            IPPROTO_TCP,
            u32::from(s.running.mount.port()),
        ),
    ];
    // The lock manager and statd, over TCP and UDP (17).
    for prot in [IPPROTO_TCP, 17] {
        want.push((100_021, 4, prot, u32::from(s.running.nlm.port())));
        want.push((100_024, 1, prot, u32::from(s.running.statd.port())));
    }
    want.sort();
    assert_eq!(got, want);
}

#[tokio::test]
async fn server_without_portmapper_has_no_portmap_listener() {
    let dir = export_root();
    let running = nfs_server_provisioner::start(nfs_server_provisioner::ServeConfig {
        export_root: dir.path().to_owned(),
        bind: std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        nfs_port: 0,
        mount_port: 0,
        portmap_port: None,
        reload_interval: RELOAD,
        recount_interval: None,
        http_port: None,
        metrics: true,
        v4: nfs_server::V4Config::default(),
        locking: Default::default(),
        limits: Default::default(),
        nfs_threads: nfs_server::executor::DEFAULT_THREADS,
        metric_labels: Vec::new(),
    })
    .await
    .unwrap();
    assert!(running.portmap.is_none());
    running
        .store
        .add_volume("v", VolumeOptions::default())
        .unwrap();
    // NFS and MOUNT still work.
    let mut m = nfs3_client::MountClient::new(connect(running.mount).await);
    let ok = m.mnt(path("/export/v")).await.unwrap();
    let mut c =
        nfs3_client::Nfs3Client::new_with_auth(connect(running.nfs).await, cred(0, 0), verf());
    let a = getattr(&mut c, &fh(ok.fhandle.0.as_ref())).await.unwrap();
    assert_eq!(a.type_, ftype3::NF3DIR);
}

#[tokio::test]
async fn mnt_of_path_variants_is_listed_once_under_the_normal_path() {
    let s = Server::start().await;
    let mut m = s.mounter().await;
    let vol = s.running.store.volume_by_name(VOL).unwrap();
    // 999 spellings of /export/vol: trailing slashes, doubled slashes and `.` components.
    for i in 1..=999 {
        let variant = match i % 3 {
            0 => format!("/export/vol{}", "/".repeat(i % 200 + 1)),
            1 => format!("/{}export//vol/", "/".repeat(i % 50)),
            _ => format!("/export/{}vol/.", "./".repeat(i % 100 + 1)),
        };
        let ok = m.mnt(path(&variant)).await.expect("MNT of a variant");
        assert_eq!(ok.fhandle.0.as_ref(), vol.root_handle(), "{variant}");
    }
    assert_eq!(
        dump(&mut m).await,
        [("127.0.0.1".to_string(), "/export/vol".to_string())]
    );
    // UMNT of any spelling removes it.
    m.umnt(path("/export//./vol///")).await.expect("UMNT");
    assert!(dump(&mut m).await.is_empty());
}

/// `volume add` while the server runs: a mount right after the command returns works (the
/// server re-reads the registry when asked for a name it does not know), over MOUNT and over
/// NFSv4, long before the periodic reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volume_added_by_the_cli_mounts_at_once() {
    let s = Server::configured(&[(VOL, VolumeOptions::default())], |c| {
        c.reload_interval = std::time::Duration::from_secs(3600)
    })
    .await;
    // The interval's first tick is at once: let it pass.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    for name in ["fresh", "fresh4"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_nfs-server-provisioner"))
            .args(["volume", "add", name, "--export-root"])
            .arg(s.export_root())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut m = s.mounter().await;
    let ok = m
        .mnt(dirpath(Opaque::borrowed(b"/export/fresh")))
        .await
        .expect("MNT of a volume added a moment ago");
    assert!(!ok.fhandle.0.is_empty());
    let url = format!(
        "nfs://127.0.0.1/export/fresh4?version=4.1&nfsport={}&noresvport=true&uid=0&gid=0",
        s.running.nfs.port()
    );
    nfs_rs::parse_url_and_mount(&url)
        .await
        .expect("NFSv4 mount of a volume added a moment ago");
}
