//! NFSv4.1 session and client rules of RFC 8881, checked with exact COMPOUNDs over a raw TCP
//! connection: where the session-setup operations may stand, EXCHANGE_ID's flags and its
//! case table (section 18.35.5), CREATE_SESSION's flags and that refused CREATE_SESSIONs
//! change nothing, RECLAIM_COMPLETE before new opens (section 18.51.3), LOOKUPP on a
//! symlink and SECINFO_NO_NAME above the root.

mod common;

use common::nfs4::*;
use common::*;

const INVAL: u32 = 22;
const NOENT: u32 = 2;
const NOTDIR: u32 = 20;
const GRACE: u32 = 10013;
const NOT_SAME: u32 = 10027;
const SYMLINK: u32 = 10029;
const PERM: u32 = 1;
const BADSESSION: u32 = 10052;
const CLIENTID_BUSY: u32 = 10074;
const OP_NOT_IN_SESSION: u32 = 10071;
const NOT_ONLY_OP: u32 = 10081;
const SEQ_MISORDERED: u32 = 10063;
const SEQUENCE_POS: u32 = 10064;
const TOOSMALL: u32 = 10005;

const CONFIRMED_R: u32 = 0x8000_0000;
const UPD_CONFIRMED_REC_A: u32 = 0x4000_0000;
/// The sessions one client may hold.
const MAX_SESSIONS_PER_CLIENT: usize = 16;

fn cred_of(uid: u32) -> Vec<u8> {
    sys_cred(uid, uid, b"rules-client")
}

/// EXCHANGE_ID's result: client id, sequence id, flags.
fn exid(c: &Compound) -> (u64, u32, u32) {
    let mut b = Cur(c.body(OP_EXCHANGE_ID));
    (b.u64(), b.u32(), b.u32())
}

fn one_status(c: &Compound) -> u32 {
    assert_eq!(c.results.len(), 1, "{:?}", c.statuses());
    c.results[0].status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_setup_ops_may_follow_sequence_and_otherwise_stand_alone() {
    let server = Server::start().await;
    let mut a = V4::mount(&server, root_cred(), b"rules-a", GENEROUS).await;

    // Alone they work; with another op and no SEQUENCE first they are NOT_ONLY_OP.
    let c = a
        .call(&[exchange_id([2; 8], b"rules-b"), putrootfh()])
        .await;
    assert_eq!(c.statuses(), vec![(OP_EXCHANGE_ID, NOT_ONLY_OP)]);
    let c = a
        .call(&[putrootfh(), exchange_id([2; 8], b"rules-b")])
        .await;
    assert_eq!(c.statuses(), vec![(OP_PUTROOTFH, OP_NOT_IN_SESSION)]);

    // After SEQUENCE: EXCHANGE_ID, CREATE_SESSION, BIND_CONN_TO_SESSION and
    // DESTROY_CLIENTID run in the session (RFC 8881 sections 18.34-18.36, 18.50).
    let (_, c) = a.seq(false, &[exchange_id([2; 8], b"rules-b")]).await;
    assert_eq!(c.status, OK, "{:?}", c.statuses());
    let (b_id, b_seq, _) = exid(&c);
    let (_, c) = a.seq(false, &[create_session(b_id, b_seq, GENEROUS)]).await;
    assert_eq!(c.status, OK, "{:?}", c.statuses());
    let sid = a.sid;
    let (_, c) = a.seq(false, &[bind_conn_to_session(&sid)]).await;
    assert_eq!(c.status, OK, "{:?}", c.statuses());
    // The session's own client is busy; another client without sessions can go.
    let own = a.clientid;
    let (_, c) = a.seq(false, &[destroy_clientid(own)]).await;
    assert_eq!(c.statuses()[1], (OP_DESTROY_CLIENTID, CLIENTID_BUSY));
    let (_, c) = a.seq(false, &[exchange_id([3; 8], b"rules-c")]).await;
    let (c_id, ..) = exid(&c);
    let (_, c) = a.seq(false, &[destroy_clientid(c_id)]).await;
    assert_eq!(c.status, OK, "{:?}", c.statuses());
    // SEQUENCE itself only comes first.
    let seqid = a.seqid + 1;
    let (_, c) = a.seq(false, &[sequence(&sid, seqid, 1, false)]).await;
    assert_eq!(c.statuses()[1], (OP_SEQUENCE, SEQUENCE_POS));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_id_refuses_undefined_and_server_only_flags() {
    let server = Server::start().await;
    let mut a = V4::connect(&server, root_cred()).await;
    for flags in [CONFIRMED_R, 0x4, 0x8000, 0x0100_0000] {
        let c = a
            .call(&[exchange_id_flags([1; 8], b"rules-flags", flags)])
            .await;
        assert_eq!(one_status(&c), INVAL, "flags {flags:#x}");
    }
    // Every flag a client may set is accepted; 4.2 adds SUPP_FENCE_OPS (RFC 7862 14.1).
    let c = a
        .call(&[exchange_id_flags([1; 8], b"rules-flags", 0x0001_0103)])
        .await;
    assert_eq!(one_status(&c), OK);
    a.minor = 2;
    let c = a
        .call(&[exchange_id_flags([1; 8], b"rules-flags", 0x0001_0107)])
        .await;
    assert_eq!(one_status(&c), OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_id_follows_the_case_table() {
    let server = Server::start().await;
    let mut a = V4::connect(&server, cred_of(1000)).await;
    let mut other = V4::connect(&server, cred_of(2000)).await;
    let owner = b"rules-cases";

    // Case 9: an update of nothing.
    let c = a
        .call(&[exchange_id_flags([1; 8], owner, UPD_CONFIRMED_REC_A)])
        .await;
    assert_eq!(one_status(&c), NOENT);

    // Case 1, then case 4: an unconfirmed record is replaced, the old id is stale.
    let c = a.call(&[exchange_id([1; 8], owner)]).await;
    let (first, _, flags) = exid(&c);
    assert_eq!(flags & CONFIRMED_R, 0);
    let c = a.call(&[exchange_id([2; 8], owner)]).await;
    let (second, seq, _) = exid(&c);
    assert_ne!(first, second);
    let c = a.call(&[create_session(first, 1, GENEROUS)]).await;
    assert_eq!(one_status(&c), STALE_CLIENTID);
    // An update of an unconfirmed record is an update of nothing.
    let c = a
        .call(&[exchange_id_flags([2; 8], owner, UPD_CONFIRMED_REC_A)])
        .await;
    assert_eq!(one_status(&c), NOENT);
    let c = a.call(&[create_session(second, seq, GENEROUS)]).await;
    assert_eq!(one_status(&c), OK);
    a.clientid = second;

    // Case 2: the same client again gets its confirmed id back; case 6: so does an update.
    for flags in [0, UPD_CONFIRMED_REC_A] {
        let c = a.call(&[exchange_id_flags([2; 8], owner, flags)]).await;
        let (id, _, got) = exid(&c);
        assert_eq!(id, second);
        assert_ne!(got & CONFIRMED_R, 0, "flags {flags:#x}");
    }
    // Case 7: an update by another principal; case 8: an update with another verifier.
    let c = other
        .call(&[exchange_id_flags([2; 8], owner, UPD_CONFIRMED_REC_A)])
        .await;
    assert_eq!(one_status(&c), PERM);
    let c = a
        .call(&[exchange_id_flags([9; 8], owner, UPD_CONFIRMED_REC_A)])
        .await;
    assert_eq!(one_status(&c), NOT_SAME);
    // Case 3: another principal presenting a live client's owner.
    let c = other.call(&[exchange_id([2; 8], owner)]).await;
    assert_eq!(one_status(&c), CLID_INUSE);

    // Case 5: the client rebooted (new verifier): a new id; the old record and its
    // session live until the new one is confirmed.
    let c = a.call(&[create_session(second, seq + 1, GENEROUS)]).await;
    assert_eq!(one_status(&c), OK);
    let old_session = Cur(c.body(OP_CREATE_SESSION)).take(16).to_vec();
    let old_session: [u8; 16] = old_session.try_into().unwrap();
    let c = a.call(&[exchange_id([3; 8], owner)]).await;
    let (rebooted, rseq, flags) = exid(&c);
    assert_ne!(rebooted, second);
    assert_eq!(flags & CONFIRMED_R, 0);
    let c = a.call(&[sequence(&old_session, 1, 0, false)]).await;
    assert_eq!(c.status, OK, "{:?}", c.statuses());
    let c = a.call(&[create_session(rebooted, rseq, GENEROUS)]).await;
    assert_eq!(one_status(&c), OK);
    let c = a.call(&[sequence(&old_session, 2, 0, false)]).await;
    assert_eq!(c.statuses(), vec![(OP_SEQUENCE, BADSESSION)]);
    let c = a.call(&[create_session(second, seq + 2, GENEROUS)]).await;
    assert_eq!(one_status(&c), STALE_CLIENTID);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_create_sessions_change_nothing() {
    let server = Server::start().await;
    let mut a = V4::connect(&server, cred_of(1000)).await;
    let mut other = V4::connect(&server, cred_of(2000)).await;
    let c = a.call(&[exchange_id([1; 8], b"rules-cs")]).await;
    let (id, seq, _) = exid(&c);
    let tiny = Fore {
        request: 100,
        ..GENEROUS
    };
    for i in 0..10_000u32 {
        let (who, op, want) = match i % 4 {
            0 => (&mut a, create_session_flags(id, seq, 0x8, GENEROUS), INVAL),
            1 => (
                &mut a,
                create_session(id, seq + 1 + i, GENEROUS),
                SEQ_MISORDERED,
            ),
            2 => (&mut a, create_session(id, seq, tiny), TOOSMALL),
            _ => (&mut other, create_session(id, seq, GENEROUS), CLID_INUSE),
        };
        let c = who.call(&[op]).await;
        assert_eq!(one_status(&c), want, "attempt {i}");
    }
    // The record is as EXCHANGE_ID left it: the expected sequence id still works, and the
    // client still has room for exactly its quota of sessions.
    for n in 0..MAX_SESSIONS_PER_CLIENT as u32 {
        let c = a.call(&[create_session(id, seq + n, GENEROUS)]).await;
        assert_eq!(one_status(&c), OK, "session {n}");
        let mut b = Cur(c.body(OP_CREATE_SESSION));
        b.take(16);
        assert_eq!(b.u32(), seq + n);
    }
    let c = a
        .call(&[create_session(
            id,
            seq + MAX_SESSIONS_PER_CLIENT as u32,
            GENEROUS,
        )])
        .await;
    assert_eq!(one_status(&c), DELAY);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opens_wait_for_the_clients_reclaim_complete() {
    let server = Server::start().await;
    let root = volume_root(&server, VOL);
    let mut a = V4::connect(&server, root_cred()).await;
    assert_eq!(a.exchange([1; 8], b"rules-rc").await, OK);
    assert_eq!(a.create_session(GENEROUS).await, OK);
    let clientid = a.clientid;
    let open_new = |name: &str| open(clientid, b"owner", 2, true, name);
    let (_, c) = a.seq(false, &[putfh(&root), open_new("early")]).await;
    assert_eq!(c.statuses()[2], (OP_OPEN, GRACE));
    assert!(!server.vol_path(VOL).join("early").exists());
    let (_, c) = a.seq(false, &[reclaim_complete()]).await;
    assert_eq!(c.status, OK);
    let (_, c) = a.seq(false, &[putfh(&root), open_new("late")]).await;
    assert_eq!(c.status, OK, "{:?}", c.statuses());
    assert!(server.vol_path(VOL).join("late").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookupp_of_a_symlink_and_secinfo_above_the_root() {
    let server = Server::start().await;
    std::os::unix::fs::symlink("target", server.vol_path(VOL).join("ln")).unwrap();
    let link = handle(&server, VOL, "ln");
    let plain = file(&server, "plain", b"x");
    let root = volume_root(&server, VOL);
    let mut a = V4::mount(&server, root_cred(), b"rules-lk", GENEROUS).await;

    let (_, c) = a.seq(false, &[putfh(&link), lookupp()]).await;
    assert_eq!(c.statuses()[2], (OP_LOOKUPP, SYMLINK));
    let (_, c) = a.seq(false, &[putfh(&plain), lookupp()]).await;
    assert_eq!(c.statuses()[2], (OP_LOOKUPP, NOTDIR));

    let (_, c) = a.seq(false, &[putrootfh(), secinfo_no_name(1)]).await;
    assert_eq!(c.statuses()[2], (OP_SECINFO_NO_NAME, NOENT));
    let (_, c) = a.seq(false, &[putrootfh(), secinfo_no_name(0)]).await;
    assert_eq!(c.status, OK, "{:?}", c.statuses());
    let (_, c) = a.seq(false, &[putfh(&root), secinfo_no_name(1)]).await;
    assert_eq!(c.status, OK, "{:?}", c.statuses());
    let (_, c) = a.seq(false, &[putfh(&root), secinfo_no_name(2)]).await;
    assert_eq!(c.statuses()[2], (OP_SECINFO_NO_NAME, INVAL));
}
