//! NFSv4.0 (RFC 7530) rules, checked with exact COMPOUNDs of minor version 0 over a raw TCP
//! connection: SETCLIENTID / SETCLIENTID_CONFIRM and their cases, RENEW, open owners that
//! confirm and carry sequence ids with a replay of the last reply, lock owners,
//! RELEASE_LOCKOWNER, the callback probe, and which operations each minor version has.
//! (tests/nfs4.rs runs the independent client over 4.0 as well.)

mod common;

use std::time::Duration;

use common::nfs4::*;
// The COMPOUND encoder, not the NFSv3 procedure of the same name.
use common::nfs4::write;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const GRACE: u32 = 10013;
const BAD_STATEID: u32 = 10025;
const BAD_SEQID: u32 = 10026;
const LOCKS_HELD: u32 = 10037;
const NOTSUPP: u32 = 10004;
/// The op number and the status of an op that does not exist.
const OP_ILLEGAL: u32 = 10044;
const OPEN4_RESULT_CONFIRM: u32 = 0x2;
const CB_PROGRAM: u32 = 0x4000_0000;

fn cred_of(uid: u32) -> Vec<u8> {
    sys_cred(uid, uid, b"v40-client")
}

async fn v40(server: &Server, cred: Vec<u8>) -> V4 {
    let mut c = V4::connect(server, cred).await;
    c.minor = 0;
    c
}

/// SETCLIENTID's result: client id and confirm verifier.
fn scid(c: &Compound) -> (u64, Vec<u8>) {
    let mut b = Cur(c.body(OP_SETCLIENTID));
    (b.u64(), b.take(8).to_vec())
}

fn only(c: &Compound) -> u32 {
    assert_eq!(c.results.len(), 1, "{:?}", c.statuses());
    c.results[0].status
}

/// A confirmed client id.
async fn client(c: &mut V4, id: &[u8]) -> u64 {
    let r = c
        .call(&[setclientid([1; 8], id, CB_PROGRAM, "127.0.0.1.0.1")])
        .await;
    let (clientid, confirm) = scid(&r);
    let r = c.call(&[setclientid_confirm(clientid, &confirm)]).await;
    assert_eq!(only(&r), OK);
    clientid
}

fn stateid(body: &[u8]) -> Vec<u8> {
    body[..16].to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setclientid_follows_its_cases() {
    let server = Server::start().await;
    let mut a = v40(&server, cred_of(1000)).await;
    let mut other = v40(&server, cred_of(2000)).await;
    let id = b"v40-cases";

    let r = a
        .call(&[setclientid([1; 8], id, CB_PROGRAM, "127.0.0.1.0.1")])
        .await;
    let (c1, s1) = scid(&r);
    // Confirm: a wrong verifier or an unknown id is stale; the right one confirms, twice.
    let r = a.call(&[setclientid_confirm(c1, &[9; 8])]).await;
    assert_eq!(only(&r), STALE_CLIENTID);
    let r = a.call(&[setclientid_confirm(c1 + 1000, &s1)]).await;
    assert_eq!(only(&r), STALE_CLIENTID);
    let r = other.call(&[setclientid_confirm(c1, &s1)]).await;
    assert_eq!(only(&r), CLID_INUSE, "another principal cannot confirm it");
    for _ in 0..2 {
        let r = a.call(&[setclientid_confirm(c1, &s1)]).await;
        assert_eq!(only(&r), OK);
    }
    let r = a.call(&[renew(c1)]).await;
    assert_eq!(only(&r), OK);
    let r = a.call(&[renew(c1 + 1000)]).await;
    assert_eq!(only(&r), STALE_CLIENTID);

    // Another principal presenting a live client's id: refused.
    let r = other
        .call(&[setclientid([1; 8], id, CB_PROGRAM, "127.0.0.1.0.1")])
        .await;
    assert_eq!(only(&r), CLID_INUSE);

    // The same client again (same verifier): a callback update of the same id.
    let r = a
        .call(&[setclientid([1; 8], id, CB_PROGRAM, "127.0.0.1.0.2")])
        .await;
    let (same, s2) = scid(&r);
    assert_eq!(same, c1);
    assert_ne!(s2, s1);
    let r = a.call(&[setclientid_confirm(c1, &s2)]).await;
    assert_eq!(only(&r), OK);

    // A rebooted client (new verifier): a new id; once confirmed, the old one is stale.
    let r = a
        .call(&[setclientid([2; 8], id, CB_PROGRAM, "127.0.0.1.0.1")])
        .await;
    let (c2, s3) = scid(&r);
    assert_ne!(c2, c1);
    let r = a.call(&[renew(c1)]).await;
    assert_eq!(
        only(&r),
        OK,
        "the old id lives until the new one is confirmed"
    );
    let r = a.call(&[setclientid_confirm(c2, &s3)]).await;
    assert_eq!(only(&r), OK);
    let r = a.call(&[renew(c1)]).await;
    assert_eq!(only(&r), STALE_CLIENTID);
    let r = a.call(&[renew(c2)]).await;
    assert_eq!(only(&r), OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_owners_confirm_and_keep_sequence() {
    let server = Server::start().await;
    let root = volume_root(&server, VOL);
    let mut a = v40(&server, root_cred()).await;
    let clientid = client(&mut a, b"v40-owners").await;
    let owner = b"open-owner-1";

    // A new owner's first OPEN asks for confirmation; its stateid is refused until then.
    let r = a
        .call(&[
            putfh(&root),
            open_seq(7, clientid, owner, 3, true, "f"),
            getfh(),
        ])
        .await;
    assert_eq!(r.status, OK, "{:?}", r.statuses());
    let body = r.body(OP_OPEN);
    let rflags = u32::from_be_bytes(body[36..40].try_into().unwrap());
    assert_ne!(rflags & OPEN4_RESULT_CONFIRM, 0);
    let sid = stateid(body);
    let fh = Cur(r.body(OP_GETFH)).opaque().to_vec();
    let r = a.call(&[putfh(&fh), read_with(&sid, 0, 10)]).await;
    assert_eq!(r.statuses()[1], (OP_READ, BAD_STATEID));

    // OPEN_CONFIRM with the next seqid; sent again, the same reply comes back.
    let r = a.call(&[putfh(&fh), open_confirm(&sid, 8)]).await;
    assert_eq!(r.status, OK, "{:?}", r.statuses());
    let confirmed = stateid(r.body(OP_OPEN_CONFIRM));
    assert_eq!(&confirmed[4..], &sid[4..]);
    let again = a.call(&[putfh(&fh), open_confirm(&sid, 8)]).await;
    assert_eq!(again.body(OP_OPEN_CONFIRM), r.body(OP_OPEN_CONFIRM));

    let r = a
        .call(&[putfh(&fh), write(&confirmed, 0, b"written over 4.0")])
        .await;
    assert_eq!(r.status, OK, "{:?}", r.statuses());
    let r = a.call(&[putfh(&fh), read_with(&confirmed, 0, 100)]).await;
    assert_eq!(read_data(r.body(OP_READ)).1, b"written over 4.0");

    // Out of order: BAD_SEQID; the next seqid closes; its retransmission gets the same reply.
    let r = a.call(&[putfh(&fh), close_seq(20, &confirmed)]).await;
    assert_eq!(r.statuses()[1], (OP_CLOSE, BAD_SEQID));
    let r = a.call(&[putfh(&fh), close_seq(9, &confirmed)]).await;
    assert_eq!(r.status, OK, "{:?}", r.statuses());
    let again = a.call(&[putfh(&fh), close_seq(9, &confirmed)]).await;
    assert_eq!(again.status, OK, "{:?}", again.statuses());
    assert_eq!(again.body(OP_CLOSE), r.body(OP_CLOSE));

    // The confirmed owner's next OPEN needs no confirmation.
    let r = a
        .call(&[putfh(&root), open_seq(10, clientid, owner, 1, false, "f")])
        .await;
    assert_eq!(r.status, OK, "{:?}", r.statuses());
    let rflags = u32::from_be_bytes(r.body(OP_OPEN)[36..40].try_into().unwrap());
    assert_eq!(rflags & OPEN4_RESULT_CONFIRM, 0);

    // An OPEN naming an unknown client id is stale.
    let r = a
        .call(&[
            putfh(&root),
            open_seq(1, clientid + 99, b"x", 1, false, "f"),
        ])
        .await;
    assert_eq!(r.statuses()[1], (OP_OPEN, STALE_CLIENTID));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_owners_and_release_lockowner() {
    let server = Server::start().await;
    let root = volume_root(&server, VOL);
    let mut a = v40(&server, root_cred()).await;
    let clientid = client(&mut a, b"v40-locks").await;
    let r = a
        .call(&[
            putfh(&root),
            open_seq(1, clientid, b"oo", 3, true, "l"),
            getfh(),
        ])
        .await;
    let sid = stateid(r.body(OP_OPEN));
    let fh = Cur(r.body(OP_GETFH)).opaque().to_vec();
    let r = a.call(&[putfh(&fh), open_confirm(&sid, 2)]).await;
    let open_sid = stateid(r.body(OP_OPEN_CONFIRM));

    let r = a
        .call(&[
            putfh(&fh),
            lock_new_owner(3, &open_sid, 0, clientid, b"lo", 10),
        ])
        .await;
    assert_eq!(r.status, OK, "{:?}", r.statuses());
    let lock_sid = stateid(r.body(OP_LOCK));
    assert_eq!(server.running.locks.snapshot().len(), 1);
    // Sent again: the same reply, and still one lock.
    let again = a
        .call(&[
            putfh(&fh),
            lock_new_owner(3, &open_sid, 0, clientid, b"lo", 10),
        ])
        .await;
    assert_eq!(again.body(OP_LOCK), r.body(OP_LOCK));
    assert_eq!(server.running.locks.snapshot().len(), 1);

    let r = a.call(&[release_lockowner(clientid, b"lo")]).await;
    assert_eq!(only(&r), LOCKS_HELD);
    let r = a.call(&[putfh(&fh), locku(5, &lock_sid, 10)]).await;
    assert_eq!(r.statuses()[1], (OP_LOCKU, BAD_SEQID));
    let r = a.call(&[putfh(&fh), locku(1, &lock_sid, 10)]).await;
    assert_eq!(r.status, OK, "{:?}", r.statuses());
    assert!(server.running.locks.snapshot().is_empty());
    let r = a.call(&[release_lockowner(clientid, b"lo")]).await;
    assert_eq!(only(&r), OK);
    let r = a.call(&[putfh(&fh), locku(2, &lock_sid, 10)]).await;
    assert_ne!(r.status, OK, "the released owner's stateid is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_minor_version_has_its_own_operations() {
    let server = Server::start().await;
    let mut a = v40(&server, root_cred()).await;
    // Sessions do not exist in 4.0.
    let r = a.call(&[exchange_id([1; 8], b"v40-ops")]).await;
    assert_eq!(r.statuses(), vec![(OP_ILLEGAL, OP_ILLEGAL)]);
    let r = a.call(&[sequence(&[0; 16], 1, 0, false)]).await;
    assert_eq!(r.statuses(), vec![(OP_ILLEGAL, OP_ILLEGAL)]);
    // Without SEQUENCE, plain operations run in 4.0.
    let r = a.call(&[putrootfh(), getfh()]).await;
    assert_eq!(r.status, OK, "{:?}", r.statuses());
    // SETCLIENTID and friends are not part of 4.1.
    let mut b = V4::mount(&server, root_cred(), b"v41-ops", GENEROUS).await;
    let (_, r) = b
        .seq(
            false,
            &[setclientid([1; 8], b"x", CB_PROGRAM, "127.0.0.1.0.1")],
        )
        .await;
    assert_eq!(r.statuses()[1], (OP_SETCLIENTID, NOTSUPP));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callback_path_is_probed_only_at_the_callers_address() {
    let server = Server::start().await;
    let own = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let elsewhere = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
    let addr = |l: &tokio::net::TcpListener| {
        let a = l.local_addr().unwrap();
        format!("{}.{}.{}", a.ip(), a.port() >> 8, a.port() & 0xff)
    };
    let mut a = v40(&server, root_cred()).await;
    for (id, at) in [
        (&b"cb-own"[..], addr(&own)),
        (b"cb-elsewhere", addr(&elsewhere)),
    ] {
        let r = a.call(&[setclientid([1; 8], id, CB_PROGRAM, &at)]).await;
        let (clientid, confirm) = scid(&r);
        let r = a.call(&[setclientid_confirm(clientid, &confirm)]).await;
        assert_eq!(only(&r), OK);
    }
    // CB_NULL arrives at the caller's own address, for the program it named.
    let (mut s, _) = tokio::time::timeout(Duration::from_secs(10), own.accept())
        .await
        .expect("a probe")
        .unwrap();
    let mut call = [0u8; 44];
    s.read_exact(&mut call).await.unwrap();
    let word = |i: usize| u32::from_be_bytes(call[i..i + 4].try_into().unwrap());
    assert_eq!(word(0) & 0x7fff_ffff, 40, "one record of 40 bytes");
    assert_eq!((word(8), word(12), word(16)), (0, 2, CB_PROGRAM));
    assert_eq!((word(20), word(24)), (1, 0), "version 1, CB_NULL");
    let xid = word(4);
    let reply: Vec<u8> = [0x8000_0018, xid, 1, 0, 0, 0, 0]
        .iter()
        .flat_map(|w: &u32| w.to_be_bytes())
        .collect();
    s.write_all(&reply).await.unwrap();
    // Never anywhere else.
    let stray = tokio::time::timeout(Duration::from_secs(2), elsewhere.accept()).await;
    assert!(
        stray.is_err(),
        "the server connected to an address it was pointed at"
    );
}

/// OPEN of the current file reclaiming it after a restart (CLAIM_PREVIOUS), read and write.
fn open_reclaim(seqid: u32, clientid: u64, owner: &[u8]) -> Vec<u8> {
    [
        words(&[OP_OPEN, seqid, 3, 0]),
        clientid.to_be_bytes().to_vec(),
        opaque(owner),
        words(&[0, 1, 0]),
    ]
    .concat()
}

/// LOCK (write, from 0) reclaiming, by a new lock owner.
fn lock_reclaim(open_seqid: u32, open_sid: &[u8], clientid: u64, owner: &[u8]) -> Vec<u8> {
    let mut op = lock_new_owner(open_seqid, open_sid, 0, clientid, owner, 10);
    // The reclaim flag follows the lock type.
    op[8..12].copy_from_slice(&1u32.to_be_bytes());
    op
}

#[test]
fn a_client_reclaims_its_open_and_lock_after_a_restart() {
    let dir = export_root();
    let root = dir.path().to_path_buf();
    let id = b"v40-restart";
    // First server: the client opens, confirms and locks; then the server dies.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fh = rt.block_on(async {
        let server = Server::on_root(&root, Duration::from_secs(90)).await;
        let vol = volume_root(&server, VOL);
        let mut a = v40(&server, root_cred()).await;
        let clientid = client(&mut a, id).await;
        let r = a
            .call(&[
                putfh(&vol),
                open_seq(1, clientid, b"oo", 3, true, "held"),
                getfh(),
            ])
            .await;
        let sid = stateid(r.body(OP_OPEN));
        let fh = Cur(r.body(OP_GETFH)).opaque().to_vec();
        let r = a.call(&[putfh(&fh), open_confirm(&sid, 2)]).await;
        let sid = stateid(r.body(OP_OPEN_CONFIRM));
        let r = a
            .call(&[putfh(&fh), lock_new_owner(3, &sid, 0, clientid, b"lo", 10)])
            .await;
        assert_eq!(r.status, OK, "{:?}", r.statuses());
        fh
    });
    rt.shutdown_background();

    // Second server: the old ids are stale; the client gets a new one and reclaims during
    // grace, with no OPEN_CONFIRM; a new open waits for the grace period.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let server = Server::on_root(&root, Duration::from_secs(60)).await;
        assert!(server.running.grace.active());
        let mut a = v40(&server, root_cred()).await;
        let clientid = client(&mut a, id).await;
        let r = a
            .call(&[putfh(&fh), open_reclaim(1, clientid, b"oo")])
            .await;
        assert_eq!(r.status, OK, "{:?}", r.statuses());
        let rflags = u32::from_be_bytes(r.body(OP_OPEN)[36..40].try_into().unwrap());
        assert_eq!(
            rflags & OPEN4_RESULT_CONFIRM,
            0,
            "a reclaim needs no confirmation"
        );
        let sid = stateid(r.body(OP_OPEN));
        let r = a.call(&[putfh(&fh), write(&sid, 0, b"still mine")]).await;
        assert_eq!(r.status, OK, "{:?}", r.statuses());
        let r = a
            .call(&[putfh(&fh), lock_reclaim(2, &sid, clientid, b"lo")])
            .await;
        assert_eq!(r.status, OK, "{:?}", r.statuses());
        assert_eq!(server.running.locks.snapshot().len(), 1);
        let vol = volume_root(&server, VOL);
        let r = a
            .call(&[putfh(&vol), open_seq(3, clientid, b"oo", 1, false, "held")])
            .await;
        assert_eq!(r.statuses()[1], (OP_OPEN, GRACE));
    });
    rt.shutdown_background();
}
