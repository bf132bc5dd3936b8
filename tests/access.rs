//! Per-volume access control (`clients`, `secure`) on every path a client can take to a
//! volume: MOUNT MNT and EXPORT, every NFSv3 procedure (handles work without mounting), NLM,
//! NFSv4 PUTFH and the pseudo-root's listing and LOOKUP. Callers come from real loopback
//! addresses (127.0.0.1, 127.0.0.2) and real source ports.

mod common;

use std::net::SocketAddr;

use common::*;
use export_store::access::parse_clients;
use tokio::net::TcpSocket;

const ACCES: u32 = 13;
const PERM: u32 = 1;

fn only(cidrs: &str) -> VolumeOptions {
    VolumeOptions {
        clients: parse_clients(cidrs).unwrap(),
        ..VolumeOptions::default()
    }
}

/// `open` (everyone), `mine` (127.0.0.1 only), `far` (10.0.0.0/8), `guarded` (secure).
async fn server() -> Server {
    Server::with_volumes(&[
        ("open", VolumeOptions::default()),
        ("mine", only("127.0.0.1/32")),
        ("far", only("10.0.0.0/8, fd00::/8")),
        (
            "guarded",
            VolumeOptions {
                secure: true,
                ..VolumeOptions::default()
            },
        ),
    ])
    .await
}

fn root_handle(s: &Server, vol: &str) -> Vec<u8> {
    s.running
        .store
        .volume_by_name(vol)
        .unwrap()
        .root_handle()
        .to_vec()
}

/// A raw connection from the address `source` (any port).
async fn raw_from(source: &str, to: SocketAddr) -> Raw {
    Raw::from_stream(connect_from(source, to).await)
}

fn status_of(kind: ReplyKind) -> (u32, Vec<u8>) {
    match kind {
        ReplyKind::Success(body) => (u32::from_be_bytes(body[..4].try_into().unwrap()), body),
        other => panic!("expected a reply body, got {other:?}"),
    }
}

/// Arguments of NFSv3 procedure `proc_` that are well formed and start with `fh` (a second
/// handle where the procedure has one).
fn v3_args(proc_: u32, fh: &[u8]) -> Vec<u8> {
    let h = xdr_opaque(fh);
    let name = xdr_opaque(b"x");
    let sattr = words(&[0, 0, 0, 0, 0, 0]); // nothing set
    let w = |ws: &[u32]| words(ws);
    match proc_ {
        1 | 5 | 18 | 19 | 20 => h,
        2 => [h, sattr, w(&[0])].concat(),
        3 | 12 | 13 => [h, name].concat(),
        4 => [h, w(&[1])].concat(),
        6 | 21 => [h, w(&[0, 0, 16])].concat(),
        7 => [h, w(&[0, 0, 4, 0]), xdr_opaque(b"data")].concat(),
        8 => [h, name, w(&[0]), sattr].concat(),
        9 => [h, name, sattr].concat(),
        10 => [h, name, sattr, xdr_opaque(b"target")].concat(),
        11 => [h, name, w(&[6])].concat(), // NF3SOCK with sattr
        14 => [h.clone(), name.clone(), h, xdr_opaque(b"y")].concat(),
        15 => [h.clone(), h, name].concat(),
        16 => [h, w(&[0, 0, 0, 0, 512])].concat(),
        17 => [h, w(&[0, 0, 0, 0, 512, 4096])].concat(),
        _ => unreachable!(),
    }
}

/// The number of bytes a failure reply of each procedure carries: status plus the optional
/// attributes (each one word, "absent").
fn failure_len(proc_: u32) -> usize {
    4 * match proc_ {
        1 => 1,
        3 | 4 | 5 | 6 | 16..=20 => 2,
        15 => 4,
        14 => 5,
        _ => 3,
    }
}

#[tokio::test]
async fn every_nfsv3_procedure_refuses_a_caller_outside_the_volumes_clients() {
    let s = server().await;
    let far = root_handle(&s, "far");
    let mine = root_handle(&s, "mine");
    let mut from_one = raw_from("127.0.0.1", s.running.nfs).await;
    let mut from_two = raw_from("127.0.0.2", s.running.nfs).await;
    for proc_ in 1..=21u32 {
        let sattr_fix = if proc_ == 11 {
            // MKNOD of a socket carries a sattr3 after the type.
            [v3_args(11, &far), words(&[0, 0, 0, 0, 0, 0])].concat()
        } else {
            v3_args(proc_, &far)
        };
        let (status, body) = status_of(
            from_one
                .call(proc_, NFS_PROGRAM, 3, proc_, &sattr_fix)
                .await,
        );
        assert_eq!(
            status, ACCES,
            "procedure {proc_} on a volume for 10.0.0.0/8"
        );
        assert_eq!(
            body.len(),
            failure_len(proc_),
            "procedure {proc_}'s failure body"
        );
        let args = if proc_ == 11 {
            [v3_args(11, &mine), words(&[0, 0, 0, 0, 0, 0])].concat()
        } else {
            v3_args(proc_, &mine)
        };
        let (status, _) = status_of(
            from_two
                .call(100 + proc_, NFS_PROGRAM, 3, proc_, &args)
                .await,
        );
        assert_eq!(
            status, ACCES,
            "procedure {proc_} from 127.0.0.2 on a 127.0.0.1 volume"
        );
    }
    // The caller the volume names is served.
    let (status, _) = status_of(
        from_one
            .call(500, NFS_PROGRAM, 3, 1, &v3_args(1, &mine))
            .await,
    );
    assert_eq!(status, 0);
    // A RENAME whose second handle is the forbidden one is refused too.
    let open = root_handle(&s, "open");
    let args = [
        xdr_opaque(&open),
        xdr_opaque(b"a"),
        xdr_opaque(&far),
        xdr_opaque(b"b"),
    ]
    .concat();
    let (status, _) = status_of(from_one.call(501, NFS_PROGRAM, 3, 14, &args).await);
    assert_eq!(status, ACCES);
}

async fn mnt(raw: &mut Raw, xid: u32, path: &str) -> u32 {
    status_of(
        raw.call(xid, MOUNT_PROGRAM, 3, 1, &xdr_opaque(path.as_bytes()))
            .await,
    )
    .0
}

/// MOUNT EXPORT's directory names.
async fn exports(raw: &mut Raw) -> Vec<String> {
    let ReplyKind::Success(body) = raw.call(77, MOUNT_PROGRAM, 3, 5, &[]).await else {
        panic!("EXPORT failed");
    };
    let mut names = Vec::new();
    let mut at = 0;
    let word = |at: usize| u32::from_be_bytes(body[at..at + 4].try_into().unwrap()) as usize;
    while word(at) == 1 {
        let len = word(at + 4);
        names.push(String::from_utf8(body[at + 8..at + 8 + len].to_vec()).unwrap());
        at += 8 + len.next_multiple_of(4);
        // ex_groups: an empty list.
        assert_eq!(word(at), 0);
        at += 4;
    }
    names.sort();
    names
}

#[tokio::test]
async fn mount_refuses_and_export_hides_what_the_caller_may_not_use() {
    let s = server().await;
    let mut one = raw_from("127.0.0.1", s.running.mount).await;
    let mut two = raw_from("127.0.0.2", s.running.mount).await;
    assert_eq!(mnt(&mut one, 1, "/export/far").await, ACCES);
    assert_eq!(mnt(&mut one, 2, "/export/mine").await, 0);
    assert_eq!(mnt(&mut two, 3, "/export/mine").await, ACCES);
    assert_eq!(mnt(&mut two, 4, "/export/open").await, 0);
    assert_eq!(
        exports(&mut one).await,
        ["/export/guarded", "/export/mine", "/export/open"]
    );
    assert_eq!(exports(&mut two).await, ["/export/guarded", "/export/open"]);
}

#[tokio::test]
async fn a_secure_volume_needs_a_reserved_source_port() {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: binding a reserved source port needs root");
        return;
    }
    let s = server().await;
    let guarded = root_handle(&s, "guarded");
    let mut unprivileged = raw_from("127.0.0.1", s.running.nfs).await;
    let (status, _) = status_of(
        unprivileged
            .call(1, NFS_PROGRAM, 3, 1, &xdr_opaque(&guarded))
            .await,
    );
    assert_eq!(status, PERM);
    let mut m = raw_from("127.0.0.1", s.running.mount).await;
    assert_eq!(mnt(&mut m, 2, "/export/guarded").await, PERM);
    // From a reserved port (as the kernel client sends by default), it works.
    let mut served = false;
    for port in (700..1000).step_by(7) {
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_reuseaddr(true).unwrap();
        if socket
            .bind(format!("127.0.0.1:{port}").parse().unwrap())
            .is_err()
        {
            continue;
        }
        let Ok(stream) = socket.connect(s.running.nfs).await else {
            continue;
        };
        let mut raw = Raw::from_stream(stream);
        let (status, _) = status_of(raw.call(3, NFS_PROGRAM, 3, 1, &xdr_opaque(&guarded)).await);
        assert_eq!(status, 0, "GETATTR from reserved port {port}");
        served = true;
        break;
    }
    assert!(served, "no reserved port was free");
}

#[tokio::test]
async fn nlm_refuses_locks_on_a_volume_the_caller_may_not_use() {
    let s = server().await;
    let far = root_handle(&s, "far");
    let mut c = s.client().await;
    // A file in `far`, made beside the server.
    std::fs::write(s.vol_path("far").join("f"), b"x").unwrap();
    let fh = {
        let r = c
            .lookup(&LOOKUP3args {
                what: diropargs3 {
                    dir: nfs_fh3 {
                        data: nfs3_types::xdr_codec::Opaque::owned(far.clone()),
                    },
                    name: filename3(nfs3_types::xdr_codec::Opaque::borrowed(b"f")),
                },
            })
            .await
            .unwrap();
        // The lookup itself is refused: use the handle the store gives.
        assert!(
            matches!(r, Nfs3Result::Err((nfsstat3::NFS3ERR_ACCES, _))),
            "LOOKUP in far from 127.0.0.1 was not refused"
        );
        let obj = s.running.store.volume_by_name("far").unwrap();
        let (h, _) = export_store::ops::lookup(
            &s.running.store,
            &s.running
                .store
                .resolve(obj.root_handle(), libc::O_PATH)
                .unwrap(),
            b"f",
            &export_store::Identity {
                uid: 0,
                gid: 0,
                groups: vec![],
            },
        )
        .unwrap();
        h
    };
    // NLM4_TEST (proc 1): cookie, exclusive, lock {caller, fh, owner, svid, offset, len}.
    let args = [
        xdr_opaque(b"c"),
        words(&[1]),
        xdr_opaque(b"host"),
        xdr_opaque(&fh),
        xdr_opaque(b"owner"),
        words(&[1, 0, 0, 0, 0]),
    ]
    .concat();
    let mut raw = Raw::connect(s.running.nlm).await;
    let ReplyKind::Success(body) = raw.call(1, 100_021, 4, 1, &args).await else {
        panic!("NLM TEST failed at the RPC level");
    };
    // cookie (opaque "c": 8 bytes), then the status: NLM4_FAILED (9).
    assert_eq!(u32::from_be_bytes(body[8..12].try_into().unwrap()), 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nfsv4_hides_and_refuses_volumes_the_caller_may_not_use() {
    let s = server().await;
    let url = |path: &str| {
        format!(
            "nfs://127.0.0.1{path}?version=4.1&nfsport={}&noresvport=true&uid=0&gid=0",
            s.running.nfs.port()
        )
    };
    let root = nfs_rs::parse_url_and_mount(&url("/export"))
        .await
        .expect("mount the pseudo directory /export");
    let mut names = Vec::new();
    let mut stream = root.readdir_path("/").await.unwrap();
    while let Some(e) = futures::StreamExt::next(&mut stream).await {
        names.push(e.unwrap().file_name);
    }
    names.sort();
    assert_eq!(names, ["guarded", "mine", "open"], "far is not listed");
    assert!(
        nfs_rs::parse_url_and_mount(&url("/export/far"))
            .await
            .is_err(),
        "far was mounted from 127.0.0.1"
    );
    // Its handle, obtained some other way, is refused on PUTFH.
    let open = nfs_rs::parse_url_and_mount(&url("/export/open"))
        .await
        .unwrap();
    let far = root_handle(&s, "far");
    match open.getattr(far.into()).await {
        Err(nfs_rs::NfsError::Nfs4(code)) => assert_eq!(code as u32, ACCES),
        other => panic!("GETATTR of far's root from 127.0.0.1: {other:?}"),
    }
    assert!(open.getattr(root_handle(&s, "mine").into()).await.is_ok());
}
