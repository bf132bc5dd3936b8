//! NFSv4.1 lease and open-state rules against the whole in-process server, with exact
//! COMPOUNDs over raw TCP and the server's lease clock moved forward instead of waited for:
//! a client whose lease ran out keeps its state only as a courtesy (RFC 8881 section 8.4.3)
//! and loses it the moment another client's LOCK, LOCKT, OPEN or NLM lock needs it;
//! unconfirmed records get no courtesy; and an open file stays usable through its stateid
//! after another client removes it or renames over it, until CLOSE.

mod common;

use std::time::Duration;

use common::nfs4::*;
// The COMPOUND encoders, not the NFSv3 procedures of the same name.
use common::nfs4::{getattr, remove, rename, write};
use common::*;

const SHARE_ACCESS_READ: u32 = 1;
const SHARE_ACCESS_BOTH: u32 = 3;
const SHARE_DENY_WRITE: u32 = 2;

/// Moves the server's lease clock past one whole lease.
fn outlive_lease(server: &Server) {
    let lease = server.running.v4.config.lease;
    server
        .running
        .v4
        .clock
        .advance(lease + Duration::from_secs(1));
}

/// OPENs `name` in the volume's root: the open stateid.
async fn open_file(server: &Server, c: &mut V4, owner: &[u8], access: u32, deny: u32) -> Vec<u8> {
    let root = volume_root(server, VOL);
    let clientid = c.clientid;
    let (_, r) = c
        .seq(
            false,
            &[
                putfh(&root),
                open_deny(clientid, owner, access, deny, false, "f"),
            ],
        )
        .await;
    assert_eq!(r.status, OK, "{:?}", r.statuses());
    r.body(OP_OPEN)[..16].to_vec()
}

/// A write lock on the whole file by a new lock owner of the open `osid`: the status.
async fn lock_all(c: &mut V4, fh: &[u8], osid: &[u8], owner: &[u8]) -> u32 {
    let clientid = c.clientid;
    let (_, r) = c
        .seq(false, &[putfh(fh), lock(clientid, osid, owner, u64::MAX)])
        .await;
    r.status
}

/// The expired client's next SEQUENCE and CREATE_SESSION: its session and record are gone.
async fn assert_expired(c: &mut V4) {
    let (_, r) = c.seq(false, &[]).await;
    assert_eq!(r.statuses(), [(OP_SEQUENCE, BADSESSION)]);
    let r = c.call(&[create_session(c.clientid, 2, GENEROUS)]).await;
    assert_eq!(r.statuses(), [(OP_CREATE_SESSION, STALE_CLIENTID)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflicting_lock_expires_a_courtesy_client_at_once() {
    let server = Server::start().await;
    let fh = file(&server, "f", b"data");
    let mut a = V4::start(&server, root_cred(), b"client-a").await;
    let mut b = V4::start(&server, root_cred(), b"client-b").await;
    let osid = open_file(&server, &mut a, b"open-a", SHARE_ACCESS_BOTH, 0).await;
    assert_eq!(lock_all(&mut a, &fh, &osid, b"lock-a").await, OK);
    let bsid = open_file(&server, &mut b, b"open-b", SHARE_ACCESS_BOTH, 0).await;
    // A's lease runs: its lock holds.
    assert_eq!(lock_all(&mut b, &fh, &bsid, b"lock-b").await, DENIED);

    outlive_lease(&server);
    // A is a courtesy client now: B's conflicting LOCK expires it and succeeds at once.
    assert_eq!(lock_all(&mut b, &fh, &bsid, b"lock-b").await, OK);
    assert_expired(&mut a).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lockt_reports_no_conflict_with_a_courtesy_client_and_expires_it() {
    let server = Server::start().await;
    let fh = file(&server, "f", b"data");
    let mut a = V4::start(&server, root_cred(), b"client-a").await;
    let mut b = V4::start(&server, root_cred(), b"client-b").await;
    let osid = open_file(&server, &mut a, b"open-a", SHARE_ACCESS_BOTH, 0).await;
    assert_eq!(lock_all(&mut a, &fh, &osid, b"lock-a").await, OK);
    let bid = b.clientid;
    let (_, r) = b
        .seq(false, &[putfh(&fh), lockt(bid, b"lock-b", u64::MAX)])
        .await;
    assert_eq!(r.status, DENIED);

    outlive_lease(&server);
    let (_, r) = b
        .seq(false, &[putfh(&fh), lockt(bid, b"lock-b", u64::MAX)])
        .await;
    assert_eq!(r.status, OK, "{:?}", r.statuses());
    assert_expired(&mut a).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflicting_open_expires_a_courtesy_clients_share_reservation() {
    let server = Server::start().await;
    file(&server, "f", b"data");
    let mut a = V4::start(&server, root_cred(), b"client-a").await;
    let mut b = V4::start(&server, root_cred(), b"client-b").await;
    // A reads and denies writers.
    open_file(
        &server,
        &mut a,
        b"open-a",
        SHARE_ACCESS_READ,
        SHARE_DENY_WRITE,
    )
    .await;
    let root = volume_root(&server, VOL);
    let bid = b.clientid;
    let open_for_write = [
        putfh(&root),
        open(bid, b"open-b", SHARE_ACCESS_BOTH, false, "f"),
    ];
    let (_, r) = b.seq(false, &open_for_write).await;
    assert_eq!(r.status, SHARE_DENIED);

    outlive_lease(&server);
    let (_, r) = b.seq(false, &open_for_write).await;
    assert_eq!(r.status, OK, "{:?}", r.statuses());
    assert_expired(&mut a).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_courtesy_client_nobody_needed_continues_with_its_state() {
    let server = Server::start().await;
    let fh = file(&server, "f", b"data");
    let mut a = V4::start(&server, root_cred(), b"client-a").await;
    let mut b = V4::start(&server, root_cred(), b"client-b").await;
    let osid = open_file(&server, &mut a, b"open-a", SHARE_ACCESS_BOTH, 0).await;
    assert_eq!(lock_all(&mut a, &fh, &osid, b"lock-a").await, OK);

    outlive_lease(&server);
    // A comes back before anyone conflicted: its SEQUENCE renews the lease.
    let (_, r) = a.seq(false, &[putfh(&fh), getattr()]).await;
    assert_eq!(r.status, OK, "{:?}", r.statuses());
    // Its lock still holds, now against a live client.
    let bid = b.clientid;
    let (_, r) = b
        .seq(false, &[putfh(&fh), lockt(bid, b"lock-b", u64::MAX)])
        .await;
    assert_eq!(r.status, DENIED);
    let (_, r) = a.seq(false, &[]).await;
    assert_eq!(r.status, OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unconfirmed_records_go_when_their_lease_runs_out() {
    let server = Server::start().await;
    let mut u = V4::connect(&server, sys_cred(0, 0, b"machine-one")).await;
    assert_eq!(u.exchange([1; 8], b"never-confirmed").await, OK);
    outlive_lease(&server);
    assert_eq!(u.create_session(GENEROUS).await, STALE_CLIENTID);

    // Another principal presenting the owner of an expired unconfirmed record gets a record.
    let mut p1 = V4::connect(&server, sys_cred(0, 0, b"machine-one")).await;
    assert_eq!(p1.exchange([2; 8], b"shared-owner").await, OK);
    outlive_lease(&server);
    let mut p2 = V4::connect(&server, sys_cred(0, 0, b"machine-two")).await;
    assert_eq!(p2.exchange([3; 8], b"shared-owner").await, OK);
    assert_eq!(p2.create_session(GENEROUS).await, OK);

    // So does one presenting the owner of a courtesy client (its state is expired state);
    // the courtesy client goes when the new record is confirmed.
    let mut c = V4::start(&server, sys_cred(0, 0, b"machine-one"), b"taken-over").await;
    let mut live = V4::connect(&server, sys_cred(0, 0, b"machine-two")).await;
    assert_eq!(live.exchange([4; 8], b"taken-over").await, CLID_INUSE);
    outlive_lease(&server);
    assert_eq!(live.exchange([4; 8], b"taken-over").await, OK);
    assert_eq!(live.create_session(GENEROUS).await, OK);
    assert_expired(&mut c).await;
}

/// NLM's LOCK procedure (nlm4_lockargs), non-blocking, for host `host`: the status.
async fn nlm_lock(server: &Server, fh: &[u8], host: &str, exclusive: bool) -> u32 {
    const NLM: u32 = 100_021;
    const LOCK: u32 = 2;
    let mut args = xdr_opaque(b"cookie");
    args.extend(words(&[0, u32::from(exclusive)]));
    args.extend(xdr_opaque(host.as_bytes()));
    args.extend(xdr_opaque(fh));
    args.extend(xdr_opaque(format!("1-{host}").as_bytes()));
    args.extend(words(&[1]));
    args.extend(0u64.to_be_bytes());
    args.extend(0u64.to_be_bytes());
    args.extend(words(&[0, 1]));
    let mut raw = Raw::connect(server.running.nlm).await;
    let ReplyKind::Success(body) = raw.call(9, NLM, 4, LOCK, &args).await else {
        panic!("NLM LOCK was not answered");
    };
    let at = 4 + (u32::from_be_bytes(body[..4].try_into().unwrap()) as usize).div_ceil(4) * 4;
    u32::from_be_bytes(body[at..at + 4].try_into().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_nlm_lock_expires_a_courtesy_v4_client_holding_the_range() {
    const GRANTED: u32 = 0;
    const NLM_DENIED: u32 = 1;
    let server = Server::start().await;
    let fh = file(&server, "f", b"data");
    let mut a = V4::start(&server, root_cred(), b"client-a").await;
    let osid = open_file(&server, &mut a, b"open-a", SHARE_ACCESS_BOTH, 0).await;
    assert_eq!(lock_all(&mut a, &fh, &osid, b"lock-a").await, OK);
    assert_eq!(nlm_lock(&server, &fh, "v3-host", true).await, NLM_DENIED);

    outlive_lease(&server);
    assert_eq!(nlm_lock(&server, &fh, "v3-host", true).await, GRANTED);
    assert_expired(&mut a).await;
}

/// A opens `f`, B takes the name away (`how`), A keeps using the file through its stateid.
async fn open_file_survives(how: &str) {
    let server = Server::start().await;
    let fh = file(&server, "f", b"before");
    let root = volume_root(&server, VOL);
    let mut a = V4::start(&server, root_cred(), b"client-a").await;
    let mut b = V4::start(&server, root_cred(), b"client-b").await;
    let osid = open_file(&server, &mut a, b"open-a", SHARE_ACCESS_BOTH, 0).await;

    let ops = match how {
        "remove" => vec![putfh(&root), remove("f")],
        _ => {
            file(&server, "other", b"other file");
            vec![putfh(&root), savefh(), putfh(&root), rename("other", "f")]
        }
    };
    let (_, r) = b.seq(false, &ops).await;
    assert_eq!(r.status, OK, "{:?}", r.statuses());
    // For anyone without an open, the handle is stale.
    let (_, r) = b.seq(false, &[putfh(&fh)]).await;
    assert_eq!(r.statuses(), [(OP_SEQUENCE, OK), (OP_PUTFH, STALE)]);

    let quota = &server.running.store.volume_by_name(VOL).unwrap().quota;
    let used = quota.used();
    let data = pattern(256 * 1024);
    let (_, r) = a
        .seq(
            false,
            &[
                putfh(&fh),
                write(&osid, 0, &data),
                read_with(&osid, 0, 512 * 1024),
                getattr(),
            ],
        )
        .await;
    assert_eq!(
        r.statuses(),
        [
            (OP_SEQUENCE, OK),
            (OP_PUTFH, OK),
            (OP_WRITE, OK),
            (OP_READ, OK),
            (OP_GETATTR, OK)
        ]
    );
    let (eof, back) = read_data(r.body(OP_READ));
    assert!(eof);
    assert!(back == data, "reads back what it wrote");
    assert!(
        quota.used() > used,
        "writes to the removed file are charged to the volume"
    );
    let (_, r) = a.seq(false, &[putfh(&fh), close(&osid)]).await;
    assert_eq!(
        r.statuses(),
        [(OP_SEQUENCE, OK), (OP_PUTFH, OK), (OP_CLOSE, OK)]
    );
    assert_eq!(
        quota.used(),
        used,
        "the removed file's space is credited back once closed"
    );
    // Closed: the handle is stale for the opener too.
    let (_, r) = a.seq(false, &[putfh(&fh)]).await;
    assert_eq!(r.statuses(), [(OP_SEQUENCE, OK), (OP_PUTFH, STALE)]);
    // The name now holds what it should.
    let expected: &[u8] = if how == "remove" { b"" } else { b"other file" };
    assert_eq!(
        std::fs::read(server.vol_path(VOL).join("f")).unwrap_or_default(),
        expected
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_file_removed_by_another_client_stays_usable_until_close() {
    open_file_survives("remove").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_file_renamed_over_by_another_client_stays_usable_until_close() {
    open_file_survives("rename").await;
}
