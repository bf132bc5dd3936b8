//! ONC RPC over TCP at the byte level (RFC 5531): record marking, the call header, and how
//! the server answers bad input. Calls are written by hand to a tokio `TcpStream`.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use nfs3_types::xdr_codec::Unpack;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const GETATTR: u32 = 1;
const AUTH_BADCRED: u32 = 1;
const AUTH_TOOWEAK: u32 = 5;

async fn server_and_root() -> (Server, Vec<u8>) {
    let s = Server::start().await;
    let root = s
        .running
        .store
        .volume_by_name(VOL)
        .unwrap()
        .root_handle()
        .to_vec();
    (s, root)
}

fn success(kind: ReplyKind) -> Vec<u8> {
    match kind {
        ReplyKind::Success(body) => body,
        other => panic!("expected SUCCESS, got {other:?}"),
    }
}

/// The connection still serves calls: NULL answers with an empty body.
async fn assert_alive(raw: &mut Raw, prog: u32, vers: u32) {
    let body = success(raw.call(0xa11e, prog, vers, 0, &[]).await);
    assert!(body.is_empty());
}

#[tokio::test]
async fn null_call_by_hand_gets_an_empty_success_reply() {
    let (s, _) = server_and_root().await;
    let mut raw = Raw::connect(s.running.nfs).await;
    assert_eq!(
        raw.call(42, NFS_PROGRAM, 3, 0, &[]).await,
        ReplyKind::Success(vec![])
    );
    let mut raw = Raw::connect(s.running.mount).await;
    assert_eq!(
        raw.call(43, MOUNT_PROGRAM, 3, 0, &[]).await,
        ReplyKind::Success(vec![])
    );
}

#[tokio::test]
async fn unknown_program_is_prog_unavail() {
    let (s, _) = server_and_root().await;
    let mut raw = Raw::connect(s.running.nfs).await;
    for prog in [
        400_000u32,
        100_011, /* RQUOTA */
        100_227, /* NFS ACL */
        0,
        u32::MAX,
    ] {
        assert_eq!(
            raw.call(prog ^ 7, prog, 1, 0, &[]).await,
            ReplyKind::ProgUnavail,
            "program {prog}"
        );
    }
    assert_alive(&mut raw, NFS_PROGRAM, 3).await;
}

#[tokio::test]
async fn nfs_versions_other_than_3_and_4_are_prog_mismatch_3_to_4() {
    let (s, root) = server_and_root().await;
    let mut raw = Raw::connect(s.running.nfs).await;
    for vers in [2u32, 1, 0, 5] {
        assert_eq!(
            raw.call(vers, NFS_PROGRAM, vers, GETATTR, &xdr_opaque(&root))
                .await,
            ReplyKind::ProgMismatch { low: 3, high: 4 },
            "NFS version {vers}"
        );
    }
    // MOUNT v1/v2 and rpcbind v3/v4 likewise name the one version served.
    assert_eq!(
        raw.call(10, MOUNT_PROGRAM, 1, 0, &[]).await,
        ReplyKind::ProgMismatch { low: 3, high: 3 }
    );
    assert_eq!(
        raw.call(11, PORTMAP_PROGRAM, 4, 0, &[]).await,
        ReplyKind::ProgMismatch { low: 2, high: 2 }
    );
    assert_alive(&mut raw, NFS_PROGRAM, 3).await;
}

#[tokio::test]
async fn procedure_22_and_above_is_proc_unavail() {
    let (s, _) = server_and_root().await;
    let mut raw = Raw::connect(s.running.nfs).await;
    for proc_ in [22u32, 23, 100, 0x8000_0000, u32::MAX] {
        assert_eq!(
            raw.call(proc_, NFS_PROGRAM, 3, proc_, &[]).await,
            ReplyKind::ProcUnavail,
            "NFS procedure {proc_}"
        );
    }
    for proc_ in [6u32, 7, u32::MAX] {
        assert_eq!(
            raw.call(proc_, MOUNT_PROGRAM, 3, proc_, &[]).await,
            ReplyKind::ProcUnavail,
            "MOUNT procedure {proc_}"
        );
    }
    for proc_ in [5u32, 6, u32::MAX] {
        assert_eq!(
            raw.call(proc_, PORTMAP_PROGRAM, 2, proc_, &[]).await,
            ReplyKind::ProcUnavail,
            "PMAP procedure {proc_}"
        );
    }
    assert_alive(&mut raw, NFS_PROGRAM, 3).await;
}

#[tokio::test]
async fn truncated_or_malformed_arguments_are_garbage_args() {
    let (s, root) = server_and_root().await;
    let mut raw = Raw::connect(s.running.nfs).await;
    let fh = xdr_opaque(&root);
    let cat = |parts: &[&[u8]]| parts.concat();

    let mut truncated_handle = fh.clone();
    truncated_handle.truncate(fh.len() - 8);
    let cases: Vec<(&str, u32, Vec<u8>)> = vec![
        ("GETATTR without arguments", 1, vec![]),
        (
            "GETATTR with a truncated handle",
            1,
            truncated_handle.clone(),
        ),
        ("GETATTR with only a length", 1, words(&[64])),
        (
            "GETATTR with a 2 GiB handle length",
            1,
            words(&[0x7fff_ffff, 1, 2]),
        ),
        ("SETATTR without sattr3", 2, fh.clone()),
        (
            "SETATTR with a bad time_how",
            2,
            cat(&[&fh, &words(&[0, 0, 0, 0, 7, 0, 0])]),
        ),
        ("LOOKUP without a name", 3, fh.clone()),
        (
            "LOOKUP with a truncated name",
            3,
            cat(&[&fh, &words(&[10]), b"ab\0\0"]),
        ),
        ("ACCESS without the mask", 4, fh.clone()),
        ("READ without count", 6, cat(&[&fh, &words(&[0, 0])])),
        (
            "WRITE with less data than its length",
            7,
            cat(&[&fh, &words(&[0, 0, 100, 2, 100]), &[1u8; 40]]),
        ),
        (
            "WRITE with stable_how 3",
            7,
            cat(&[&fh, &words(&[0, 0, 4, 3, 4]), b"data"]),
        ),
        (
            "CREATE with createmode 5",
            8,
            cat(&[&fh, &xdr_opaque(b"name"), &words(&[5])]),
        ),
        (
            "MKDIR without attributes",
            9,
            cat(&[&fh, &xdr_opaque(b"d")]),
        ),
        (
            "READDIR without count",
            16,
            cat(&[&fh, &words(&[0, 0, 0, 0])]),
        ),
        ("COMMIT without count", 21, cat(&[&fh, &words(&[0, 0])])),
    ];
    for (i, (what, proc_, args)) in cases.iter().enumerate() {
        assert_eq!(
            raw.call(1000 + i as u32, NFS_PROGRAM, 3, *proc_, args)
                .await,
            ReplyKind::GarbageArgs,
            "{what}"
        );
    }
    assert_alive(&mut raw, NFS_PROGRAM, 3).await;

    // MOUNT and the portmapper check their arguments too.
    let mut m = Raw::connect(s.running.mount).await;
    assert_eq!(
        m.call(1, MOUNT_PROGRAM, 3, 1, &words(&[100])).await,
        ReplyKind::GarbageArgs,
        "MNT with a path longer than the record"
    );
    assert_eq!(
        m.call(2, MOUNT_PROGRAM, 3, 1, &[]).await,
        ReplyKind::GarbageArgs
    );
    assert_eq!(
        m.call(3, MOUNT_PROGRAM, 3, 3, &[]).await,
        ReplyKind::GarbageArgs
    );
    let mut pm = Raw::connect(s.running.portmap.unwrap()).await;
    assert_eq!(
        pm.call(1, PORTMAP_PROGRAM, 2, 3, &words(&[NFS_PROGRAM, 3]))
            .await,
        ReplyKind::GarbageArgs,
        "GETPORT with half a mapping"
    );
    assert_alive(&mut pm, PORTMAP_PROGRAM, 2).await;
}

#[tokio::test]
async fn mknod_of_regular_file_or_directory_type_is_badtype() {
    let (s, root) = server_and_root().await;
    let mut raw = Raw::connect(s.running.nfs).await;
    for (i, ftype) in [
        1u32, /* NF3REG */
        2,    /* NF3DIR */
        5,    /* NF3LNK */
    ]
    .into_iter()
    .enumerate()
    {
        let args = [xdr_opaque(&root), xdr_opaque(b"node"), words(&[ftype])].concat();
        let body = success(raw.call(i as u32, NFS_PROGRAM, 3, 11, &args).await);
        let (res, _) = MKNOD3res::unpack(&mut &body[..]).expect("MKNOD3res");
        assert_eq!(
            status(&res),
            nfsstat3::NFS3ERR_BADTYPE,
            "MKNOD type {ftype}"
        );
    }
    assert!(!s.vol_path(VOL).join("node").exists());
}

#[tokio::test]
async fn rpc_version_3_is_denied_with_rpc_mismatch() {
    let (s, _) = server_and_root().await;
    let mut raw = Raw::connect(s.running.nfs).await;
    for (xid, rpcvers) in [(7u32, 3u32), (8, 1), (9, 0)] {
        raw.send(&record(&call_body(xid, rpcvers, NFS_PROGRAM, 3, 0, &[])))
            .await;
        let r = raw.recv().await;
        assert_eq!(r.xid, xid);
        assert_eq!(
            r.kind,
            ReplyKind::RpcMismatch { low: 2, high: 2 },
            "RPC version {rpcvers}"
        );
    }
    assert_alive(&mut raw, NFS_PROGRAM, 3).await;
}

#[tokio::test]
async fn bad_credentials_are_denied_with_auth_error() {
    let (s, _) = server_and_root().await;
    let mut raw = Raw::connect(s.running.nfs).await;

    // RPCSEC_GSS (6) and an unknown flavor are not accepted.
    for flavor in [6u32, 0x1234] {
        raw.send(&record(&call_with_cred(
            flavor,
            2,
            NFS_PROGRAM,
            3,
            0,
            flavor,
            &[0; 8],
            &[],
        )))
        .await;
        let r = raw.recv().await;
        assert_eq!(r.xid, flavor);
        assert!(
            matches!(r.kind, ReplyKind::AuthError(AUTH_TOOWEAK | AUTH_BADCRED)),
            "flavor {flavor}: {:?}",
            r.kind
        );
    }

    // Malformed AUTH_UNIX bodies.
    let mut seventeen_groups = words(&[1]);
    seventeen_groups.extend(xdr_opaque(b"h"));
    seventeen_groups.extend(words(&[1000, 1000, 17]));
    seventeen_groups.extend(words(&[1000; 17]));
    let mut long_machine = words(&[1]);
    long_machine.extend(xdr_opaque(&[b'm'; 300]));
    long_machine.extend(words(&[0, 0, 0]));
    let cases: [(&str, Vec<u8>); 3] = [
        ("truncated", words(&[1, 0, 1000])),
        ("17 groups", seventeen_groups),
        ("300-byte machine name", long_machine),
    ];
    for (i, (what, cred)) in cases.iter().enumerate() {
        let xid = 100 + i as u32;
        raw.send(&record(&call_with_cred(
            xid,
            2,
            NFS_PROGRAM,
            3,
            0,
            1,
            cred,
            &[],
        )))
        .await;
        let r = raw.recv().await;
        assert_eq!(r.xid, xid);
        assert_eq!(r.kind, ReplyKind::AuthError(AUTH_BADCRED), "{what}");
    }
    assert_alive(&mut raw, NFS_PROGRAM, 3).await;
}

#[tokio::test]
async fn fragment_header_claiming_2_gib_closes_only_that_connection() {
    let (s, root) = server_and_root().await;
    let mut good = Raw::connect(s.running.nfs).await;
    assert_alive(&mut good, NFS_PROGRAM, 3).await;

    let mut bad = Raw::connect(s.running.nfs).await;
    // Last fragment, length 2^31 - 1, followed by a little data (one write, so the server
    // has not closed yet when it is sent).
    let mut wire = 0xffff_ffffu32.to_be_bytes().to_vec();
    wire.extend([0u8; 64]);
    bad.send(&wire).await;
    let mut buf = [0u8; 16];
    let r = tokio::time::timeout(Duration::from_secs(5), bad.stream.read(&mut buf))
        .await
        .expect("the server neither closed nor answered within 5 s");
    // EOF or reset: closed. Any bytes would be a reply to a record it must not accept.
    let closed = matches!(r, Ok(0) | Err(_));
    assert!(closed, "the server replied to a 2 GiB record");

    // The other, concurrent connection is unaffected.
    let body = success(
        good.call(5, NFS_PROGRAM, 3, GETATTR, &xdr_opaque(&root))
            .await,
    );
    let (res, _) = GETATTR3res::unpack(&mut &body[..]).unwrap();
    assert_eq!(status(&res), nfsstat3::NFS3_OK);
    // And new connections are accepted.
    let mut fresh = Raw::connect(s.running.nfs).await;
    assert_alive(&mut fresh, NFS_PROGRAM, 3).await;
}

#[tokio::test]
async fn record_larger_than_the_limit_is_refused_before_it_is_read() {
    let (s, _) = server_and_root().await;
    let mut bad = Raw::connect(s.running.nfs).await;
    // Non-final fragments that add up past 1 MiB + 64 KiB.
    for _ in 0..5 {
        let mut frag = (300_000u32).to_be_bytes().to_vec();
        frag.extend(vec![0u8; 300_000]);
        if bad.stream.write_all(&frag).await.is_err() {
            break; // already closed: fine
        }
    }
    let mut buf = [0u8; 16];
    let r = tokio::time::timeout(Duration::from_secs(5), bad.stream.read(&mut buf))
        .await
        .expect("connection neither closed nor answered");
    assert!(matches!(r, Ok(0) | Err(_)), "got a reply: {r:?}");
    let mut fresh = Raw::connect(s.running.nfs).await;
    assert_alive(&mut fresh, NFS_PROGRAM, 3).await;
}

#[tokio::test]
async fn record_too_short_for_a_header_closes_the_connection() {
    let (s, _) = server_and_root().await;
    let mut bad = Raw::connect(s.running.nfs).await;
    bad.send(&record(&[0, 0, 0, 1])).await; // an xid and nothing else
    assert!(
        bad.recv_record().await.is_none(),
        "expected the connection to close"
    );
    let mut fresh = Raw::connect(s.running.nfs).await;
    assert_alive(&mut fresh, NFS_PROGRAM, 3).await;
}

#[tokio::test]
async fn call_split_over_several_fragments_is_reassembled() {
    let (s, root) = server_and_root().await;
    let mut raw = Raw::connect(s.running.nfs).await;
    let body = call_body(77, 2, NFS_PROGRAM, 3, GETATTR, &xdr_opaque(&root));
    let mut wire = Vec::new();
    let chunks: Vec<&[u8]> = body.chunks(13).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        let mut h = chunk.len() as u32;
        if i == chunks.len() - 1 {
            h |= 0x8000_0000;
        }
        wire.extend(h.to_be_bytes());
        wire.extend_from_slice(chunk);
    }
    // Written byte by byte boundaries aside, in two halves with a pause between.
    let (a, b) = wire.split_at(wire.len() / 2);
    raw.send(a).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    raw.send(b).await;
    let r = raw.recv().await;
    assert_eq!(r.xid, 77);
    let (res, _) = GETATTR3res::unpack(&mut &success(r.kind)[..]).unwrap();
    assert_eq!(res.unwrap().obj_attributes.type_, ftype3::NF3DIR);
}

#[tokio::test]
async fn reply_messages_sent_to_the_server_are_ignored() {
    let (s, _) = server_and_root().await;
    let mut raw = Raw::connect(s.running.nfs).await;
    // A REPLY (msg_type 1) where a call belongs: no answer, connection kept.
    raw.send(&record(&words(&[5, 1, 0, 0, 0, 0]))).await;
    raw.send(&call(6, NFS_PROGRAM, 3, 0, &[])).await;
    let r = raw.recv().await;
    assert_eq!(r.xid, 6, "only the call is answered");
    assert_eq!(r.kind, ReplyKind::Success(vec![]));
}

/// Writes `n` GETATTR calls (on `handles`, round robin) before reading any reply, then
/// checks every xid is answered exactly once with the attributes of its own handle.
async fn pipeline_getattrs(s: &Server, handles: &[(Vec<u8>, u64)], n: usize) {
    let mut raw = Raw::connect(s.running.nfs).await;
    let base = 0x5000_0000u32;
    let mut wire = Vec::new();
    let mut expect = HashMap::new();
    for i in 0..n {
        let (h, fileid) = &handles[i % handles.len()];
        let xid = base + i as u32;
        wire.extend(call(xid, NFS_PROGRAM, 3, GETATTR, &xdr_opaque(h)));
        expect.insert(xid, *fileid);
    }
    raw.send(&wire).await;
    let mut answered = HashMap::new();
    for _ in 0..n {
        let r = raw.recv().await;
        let (res, _) = GETATTR3res::unpack(&mut &success(r.kind)[..]).unwrap();
        let fileid = res.unwrap().obj_attributes.fileid;
        assert!(
            answered.insert(r.xid, fileid).is_none(),
            "xid {:#x} answered twice",
            r.xid
        );
    }
    assert_eq!(
        answered, expect,
        "every reply carries its own call's result"
    );
}

async fn files_for_pipelining(s: &Server, root: &[u8], n: usize) -> Vec<(Vec<u8>, u64)> {
    let mut c = s.client().await;
    let mut out = Vec::new();
    for i in 0..n {
        let (h, a) = create(&mut c, &fh(root), &format!("p{i}"), 0o644).await;
        out.push((h.data.to_vec(), a.fileid));
    }
    out
}

#[tokio::test]
async fn thirty_two_pipelined_getattrs_get_replies_matched_by_xid() {
    let (s, root) = server_and_root().await;
    let files = files_for_pipelining(&s, &root, 32).await;
    pipeline_getattrs(&s, &files, 32).await;
}

#[tokio::test]
async fn more_pipelined_calls_than_the_in_flight_limit_all_complete() {
    let (s, root) = server_and_root().await;
    let files = files_for_pipelining(&s, &root, 8).await;
    pipeline_getattrs(&s, &files, 300).await;
}

#[tokio::test]
async fn call_followed_by_half_close_still_gets_its_reply() {
    let (s, root) = server_and_root().await;
    let mut raw = Raw::connect(s.running.nfs).await;
    raw.send(&call(9, NFS_PROGRAM, 3, GETATTR, &xdr_opaque(&root)))
        .await;
    raw.stream.shutdown().await.unwrap();
    let r = raw.recv().await;
    assert_eq!(r.xid, 9);
    let (res, _) = GETATTR3res::unpack(&mut &success(r.kind)[..]).unwrap();
    assert_eq!(status(&res), nfsstat3::NFS3_OK);
    assert!(raw.recv_record().await.is_none(), "then the server closes");
}

#[tokio::test]
async fn many_concurrent_connections_are_served() {
    let (s, root) = server_and_root().await;
    let mut conns = Vec::new();
    for _ in 0..50 {
        conns.push(Raw::connect(s.running.nfs).await);
    }
    for (i, c) in conns.iter_mut().enumerate() {
        c.send(&call(i as u32, NFS_PROGRAM, 3, GETATTR, &xdr_opaque(&root)))
            .await;
    }
    for (i, c) in conns.iter_mut().enumerate() {
        let r = c.recv().await;
        assert_eq!(r.xid, i as u32);
        assert!(matches!(r.kind, ReplyKind::Success(_)));
    }
}

#[tokio::test]
async fn portmapper_refuses_set_and_unset() {
    let (s, _) = server_and_root().await;
    let mut pm = Raw::connect(s.running.portmap.unwrap()).await;
    let mapping = words(&[100_099, 1, 6, 4242]);
    for proc_ in [1u32 /* SET */, 2 /* UNSET */] {
        let body = success(pm.call(proc_, PORTMAP_PROGRAM, 2, proc_, &mapping).await);
        assert_eq!(body, words(&[0]), "procedure {proc_} answers FALSE");
    }
    // Nothing was registered.
    let body = success(pm.call(3, PORTMAP_PROGRAM, 2, 3, &mapping).await);
    assert_eq!(body, words(&[0]), "GETPORT finds no port");
}

/// Set in the child process of
/// `huge_declared_opaque_length_is_refused_without_allocating_it`.
const CHILD_ENV: &str = "NFS_IT_LIMITED_MEMORY_CHILD";

/// Runs only inside that child process, whose address space is limited to 3 GiB.
#[tokio::test]
#[ignore = "helper: started by huge_declared_opaque_length_is_refused_without_allocating_it"]
async fn child_huge_declared_opaque_length() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let (s, root) = server_and_root().await;
    let mut raw = Raw::connect(s.running.nfs).await;
    // A GETATTR whose handle claims u32::MAX bytes in a record of a few dozen.
    assert_eq!(
        raw.call(1, NFS_PROGRAM, 3, GETATTR, &words(&[u32::MAX, 0]))
            .await,
        ReplyKind::GarbageArgs
    );
    // A LOOKUP whose name claims u32::MAX bytes.
    let args = [xdr_opaque(&root), words(&[u32::MAX, 0])].concat();
    assert_eq!(
        raw.call(2, NFS_PROGRAM, 3, 3, &args).await,
        ReplyKind::GarbageArgs
    );
    assert_alive(&mut raw, NFS_PROGRAM, 3).await;
}

#[test]
fn huge_declared_opaque_length_is_refused_without_allocating_it() {
    use std::os::unix::process::CommandExt;
    // A host with less than 4 GiB of memory + swap (or strict overcommit) refuses such an
    // allocation; a 3 GiB address-space limit on a child test process stands in for it.
    // The child dies without cleaning up: its export root goes where we remove it.
    let scratch = export_root();
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "child_huge_declared_opaque_length",
        "--include-ignored",
        "--test-threads=1",
    ])
    .env(CHILD_ENV, "1")
    .env(TMPDIR_ENV, scratch.path());
    // SAFETY: only an async-signal-safe setrlimit between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 3 << 30,
                rlim_max: 3 << 30,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().expect("run the child test process");
    assert!(
        out.status.success(),
        "the server process died: {:?}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn client_that_never_reads_replies_cannot_make_the_server_buffer_without_bound() {
    const MIB: usize = 1 << 20;
    const CALLS: usize = 1024;
    let (s, root) = server_and_root().await;
    std::fs::write(s.vol_path(VOL).join("big"), vec![0x5au8; MIB]).unwrap();
    let mut c = s.client().await;
    let (big, _) = lookup(&mut c, &fh(&root), "big").await.unwrap();

    let before = rss_bytes();
    let mut raw = Raw::connect(s.running.nfs).await;
    let mut wire = Vec::new();
    for i in 0..CALLS {
        let args = [xdr_opaque(&big.data), words(&[0, 0, MIB as u32])].concat();
        wire.extend(call(i as u32, NFS_PROGRAM, 3, 6, &args));
    }
    // About 100 KiB of calls asking for 1 GiB of replies, none of which is read.
    raw.send(&wire).await;
    let mut peak = before;
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(25)).await;
        peak = peak.max(rss_bytes());
    }
    drop(raw);
    let grown = peak.saturating_sub(before) / MIB as u64;
    eprintln!("resident memory grew by {grown} MiB");
    assert!(
        grown < 256,
        "the server buffered {grown} MiB of replies for a client that reads none"
    );
}
