//! NFSv4.1 limits against the whole in-process server, with COMPOUNDs built by hand and sent
//! over a raw TCP connection: sessions hold replies and requests to what CREATE_SESSION
//! negotiated, client records belong to the principal that made them and are bounded in
//! number, and read-only volumes refuse write access with NFS4ERR_ROFS.

mod common;

use std::time::Duration;

use common::nfs4::*;
// The COMPOUND encoders, not the NFSv3 procedures of the same name.
use common::nfs4::{getattr, write};
use common::*;

// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amplifying_compound_gets_rep_too_big_within_the_negotiated_size() {
    let server = Server::start().await;
    let data = pattern(MIB as usize);
    let fh = file(&server, "big", &data);
    let mut c = V4::mount(&server, root_cred(), b"amplifier", GENEROUS).await;
    assert_eq!(
        c.granted,
        [SERVER_MAX_MSG, SERVER_MAX_MSG, 64 * 1024, 64, 64],
        "granted at most what the server handles"
    );
    // SEQUENCE, PUTFH, 61 x READ of 1 MiB, GETATTR: 64 MB of replies asked for in 1 KiB.
    let mut ops = vec![putfh(&fh)];
    ops.extend((0..61).map(|_| read(0, MIB)));
    ops.push(getattr());
    let (size, r) = c.seq(false, &ops).await;
    assert!(
        size <= c.granted[1] as usize,
        "a reply of {size} bytes, {} allowed",
        c.granted[1]
    );
    assert_eq!(r.status, REP_TOO_BIG);
    let st = r.statuses();
    assert_eq!(
        st,
        [
            (OP_SEQUENCE, OK),
            (OP_PUTFH, OK),
            (OP_READ, OK),
            (OP_READ, OK),
            (OP_READ, REP_TOO_BIG)
        ]
    );
    // The first READ is whole, the second one short (what still fitted), both correct.
    let (eof, first) = read_data(&r.results[2].body);
    assert!(eof);
    assert!(first == data, "the first READ returns the file");
    let (eof, second) = read_data(&r.results[3].body);
    assert!(!eof, "a short read is not the end of the file");
    assert!(!second.is_empty() && second.len() < 64 * 1024);
    assert!(second[..] == data[..second.len()]);

    // The connection is still in step, and a plain one-READ compound is whole.
    let (size, r) = c.seq(false, &[putfh(&fh), read(0, MIB)]).await;
    assert_eq!(r.status, OK);
    assert_eq!(read_data(&r.results[2].body).1.len(), MIB as usize);
    assert!(size <= c.granted[1] as usize);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_larger_than_negotiated_is_refused_and_leaves_the_slot() {
    let server = Server::start().await;
    let fh = file(&server, "f", b"");
    let fore = Fore {
        request: 1024,
        ..GENEROUS
    };
    let mut c = V4::mount(&server, root_cred(), b"small-requests", fore).await;
    assert_eq!(c.granted[0], 1024);
    let (_, r) = c
        .seq(false, &[putfh(&fh), write(&ANONYMOUS, 0, &[7; 2000])])
        .await;
    assert_eq!(r.status, REQ_TOO_BIG);
    assert_eq!(r.statuses(), [(OP_SEQUENCE, REQ_TOO_BIG)]);
    assert_eq!(
        std::fs::metadata(server.vol_path(VOL).join("f"))
            .unwrap()
            .len(),
        0
    );
    // The slot did not move: the same sequence id is accepted with a smaller request.
    c.seqid -= 1;
    let (_, r) = c
        .seq(false, &[putfh(&fh), write(&ANONYMOUS, 0, &[7; 500])])
        .await;
    assert_eq!(r.status, OK, "{:?}", r.statuses());
    assert_eq!(
        std::fs::read(server.vol_path(VOL).join("f")).unwrap(),
        vec![7; 500]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_ops_than_negotiated_are_refused() {
    let server = Server::start().await;
    let fh = file(&server, "f", b"abc");
    let fore = Fore { ops: 4, ..GENEROUS };
    let mut c = V4::mount(&server, root_cred(), b"few-ops", fore).await;
    assert_eq!(c.granted[3], 4);
    let (_, r) = c
        .seq(false, &[putfh(&fh), getattr(), getattr(), getattr()])
        .await;
    assert_eq!(r.statuses(), [(OP_SEQUENCE, TOO_MANY_OPS)]);
    c.seqid -= 1;
    let (_, r) = c.seq(false, &[putfh(&fh), getattr(), getattr()]).await;
    assert_eq!(r.status, OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_to_cache_is_held_to_the_cached_size() {
    let server = Server::start().await;
    let data = pattern(8192);
    let fh = file(&server, "f", &data);
    let fore = Fore {
        cached: 512,
        ..GENEROUS
    };
    let mut c = V4::mount(&server, root_cred(), b"small-cache", fore).await;
    assert_eq!(c.granted[2], 512);
    let ops = [putfh(&fh), read(0, 4096), read(4096, 4096)];
    // Asked to cache: the first READ is cut to what the cache holds, the second fails.
    let (size, r) = c.seq(true, &ops).await;
    assert!(size <= 512, "a cached reply of {size} bytes");
    assert_eq!(r.status, REP_TOO_BIG_TO_CACHE);
    assert_eq!(
        r.statuses(),
        [
            (OP_SEQUENCE, OK),
            (OP_PUTFH, OK),
            (OP_READ, OK),
            (OP_READ, REP_TOO_BIG_TO_CACHE)
        ]
    );
    let (_, short) = read_data(&r.results[2].body);
    assert!(!short.is_empty() && short.len() < 4096);
    assert!(short[..] == data[..short.len()]);
    // A retransmission gets the cached reply.
    c.seqid -= 1;
    let (_, again) = c.seq(true, &ops).await;
    assert_eq!(again.statuses(), r.statuses());
    assert!(again.results[2].body == r.results[2].body);
    // Not cached, the same compound is whole.
    let (size, r) = c.seq(false, &ops).await;
    assert_eq!(r.status, OK);
    assert_eq!(read_data(&r.results[3].body).1, data[4096..]);
    assert!(size > 8192 && size <= c.granted[1] as usize);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_id_from_another_principal_cannot_take_a_live_client_over() {
    let server = Server::start().await;
    let fh = file(&server, "held", b"");
    let owner = b"victim-owner";
    let mut victim = V4::mount(&server, sys_cred(0, 0, b"victim-host"), owner, GENEROUS).await;
    let dir = volume_root(&server, VOL);
    let (_, r) = victim
        .seq(
            false,
            &[putfh(&dir), open(victim.clientid, b"oo", 3, false, "held")],
        )
        .await;
    assert_eq!(r.status, OK, "{:?}", r.statuses());
    let open_sid = r.body(OP_OPEN)[..16].to_vec();
    let (_, r) = victim
        .seq(
            false,
            &[putfh(&fh), lock(victim.clientid, &open_sid, b"lo", 100)],
        )
        .await;
    assert_eq!(r.status, OK, "{:?}", r.statuses());
    let lock_sid = r.body(OP_LOCK)[..16].to_vec();
    assert_eq!(server.running.locks.snapshot().len(), 1);

    // Another uid, and the same uid from another machine, present the victim's owner with
    // a new verifier: refused, and nothing of the victim's goes.
    for cred in [
        sys_cred(1000, 1000, b"victim-host"),
        sys_cred(0, 0, b"attacker-host"),
    ] {
        let mut attacker = V4::connect(&server, cred).await;
        assert_eq!(attacker.exchange([66; 8], owner).await, CLID_INUSE);
        // Not even the victim's client id makes a session for it.
        attacker.clientid = victim.clientid;
        assert_eq!(attacker.create_session(GENEROUS).await, CLID_INUSE);
    }
    // A confirmation by the victim's principal still works for it (after the attempts).
    let (_, r) = victim
        .seq(
            false,
            &[
                putfh(&fh),
                write(&open_sid, 0, b"still mine"),
                test_stateid(&[&open_sid, &lock_sid]),
            ],
        )
        .await;
    assert_eq!(r.status, OK, "{:?}", r.statuses());
    let mut t = Cur(r.body(OP_TEST_STATEID));
    assert_eq!((t.u32(), t.u32(), t.u32()), (2, OK, OK));
    assert_eq!(
        std::fs::read(server.vol_path(VOL).join("held")).unwrap(),
        b"still mine"
    );
    let mut other = V4::mount(&server, sys_cred(1000, 1000, b"other"), b"other", GENEROUS).await;
    let (_, r) = other
        .seq(false, &[putfh(&fh), lockt(other.clientid, b"x", 10)])
        .await;
    assert_eq!(r.status, DENIED, "the victim's lock is still held");

    // The victim itself rebooting (same principal, new verifier) does replace its record:
    // its old state goes once the new record is confirmed.
    let mut reborn = V4::connect(&server, sys_cred(0, 0, b"victim-host")).await;
    assert_eq!(reborn.exchange([2; 8], owner).await, OK);
    assert_ne!(reborn.clientid, victim.clientid);
    assert_eq!(reborn.create_session(GENEROUS).await, OK);
    assert!(server.running.locks.snapshot().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_session_by_another_principal_than_exchange_id_is_refused() {
    let server = Server::start().await;
    let mut honest = V4::connect(&server, sys_cred(0, 0, b"honest")).await;
    assert_eq!(honest.exchange([3; 8], b"honest-owner").await, OK);
    let mut intruder = V4::connect(&server, sys_cred(1000, 1000, b"intruder")).await;
    intruder.clientid = honest.clientid;
    assert_eq!(intruder.create_session(GENEROUS).await, CLID_INUSE);
    assert_eq!(honest.create_session(GENEROUS).await, OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_records_are_bounded_and_unconfirmed_ones_never_written() {
    let server = Server::start().await;
    let records = server
        .running
        .store
        .registry()
        .state_dir()
        .join(nfs_server::CLIENT_RECORDS);
    let mut c = V4::connect(&server, root_cred()).await;
    // More unconfirmed records than the table holds: each new one pushes the oldest out.
    let mut first = 0;
    for i in 0..MAX_CLIENTS + 100 {
        assert_eq!(c.exchange([4; 8], format!("fake-{i}").as_bytes()).await, OK);
        if i == 0 {
            first = c.clientid;
        }
    }
    assert!(!records.exists(), "unconfirmed clients are not recorded");
    c.clientid = first;
    assert_eq!(c.create_session(GENEROUS).await, STALE_CLIENTID);

    // Confirmed clients fill the table; then a new owner is asked to retry later, while a
    // known client still gets its record.
    for i in 0..MAX_CLIENTS {
        let owner = format!("live-{i}");
        assert_eq!(c.exchange([5; 8], owner.as_bytes()).await, OK);
        assert_eq!(c.create_session(GENEROUS).await, OK, "{owner}");
    }
    assert_eq!(c.exchange([5; 8], b"one-too-many").await, DELAY);
    assert_eq!(c.exchange([5; 8], b"live-7").await, OK);
    let text = std::fs::read_to_string(&records).unwrap();
    assert_eq!(text.lines().count(), MAX_CLIENTS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_volume_refuses_write_access_with_rofs() {
    let server = Server::with_volumes(&[
        (VOL, VolumeOptions::default()),
        (
            "ro",
            VolumeOptions {
                read_only: true,
                ..VolumeOptions::default()
            },
        ),
    ])
    .await;
    std::fs::write(server.vol_path("ro").join("f"), b"data").unwrap();
    let dir = volume_root(&server, "ro");
    let mut c = V4::mount(&server, root_cred(), b"ro-client", GENEROUS).await;
    let id = c.clientid;
    for access in [2, 3] {
        let (_, r) = c
            .seq(false, &[putfh(&dir), open(id, b"o", access, false, "f")])
            .await;
        assert_eq!(
            r.statuses().last(),
            Some(&(OP_OPEN, ROFS)),
            "access {access}"
        );
    }
    let (_, r) = c
        .seq(false, &[putfh(&dir), open(id, b"o", 2, true, "new")])
        .await;
    assert_eq!(r.statuses().last(), Some(&(OP_OPEN, ROFS)));
    // Reading is fine.
    let (_, r) = c
        .seq(
            false,
            &[putfh(&dir), open(id, b"o", 1, false, "f"), read(0, 10)],
        )
        .await;
    assert_eq!(r.status, OK, "{:?}", r.statuses());
    assert_eq!(read_data(r.body(OP_READ)).1, b"data");
    // WRITE (the anonymous stateid), SETATTR, CREATE and REMOVE.
    let mode = [
        words(&[OP_SETATTR]),
        ANONYMOUS.to_vec(),
        words(&[2, 0, 2]),
        opaque(&words(&[0o600])),
    ]
    .concat();
    let mkdir = [words(&[OP_CREATE, 2]), opaque(b"d"), words(&[0, 0])].concat();
    let remove = [words(&[OP_REMOVE]), opaque(b"f")].concat();
    let f = putfh(&handle(&server, "ro", "f"));
    for (first, op, code) in [
        (f.clone(), write(&ANONYMOUS, 0, b"x"), OP_WRITE),
        (f.clone(), mode, OP_SETATTR),
        (putfh(&dir), mkdir, OP_CREATE),
        (putfh(&dir), remove, OP_REMOVE),
    ] {
        let (_, r) = c.seq(false, &[first, op]).await;
        assert_eq!(r.statuses().last(), Some(&(code, ROFS)), "op {code}");
    }
    assert_eq!(
        std::fs::read(server.vol_path("ro").join("f")).unwrap(),
        b"data"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amplifying_compounds_from_a_client_that_never_reads_keep_memory_bounded() {
    const CALLS: u32 = 40;
    let server = Server::start().await;
    let fh = file(&server, "big", &pattern(MIB as usize));
    let mut c = V4::mount(&server, root_cred(), b"never-reads", GENEROUS).await;
    let before = rss_bytes();
    // Each on its own slot, all sent at once and none of the replies read: 40 x 61 MiB
    // asked for.
    let mut wire = Vec::new();
    for slot in 0..CALLS {
        let mut ops = vec![sequence(&c.sid, 1, slot, false), putfh(&fh)];
        ops.extend((0..61).map(|_| read(0, MIB)));
        ops.push(getattr());
        wire.extend(c.record(&ops));
    }
    c.raw.send(&wire).await;
    let mut peak = before;
    for _ in 0..80 {
        tokio::time::sleep(Duration::from_millis(25)).await;
        peak = peak.max(rss_bytes());
    }
    drop(c);
    let grown = peak.saturating_sub(before) / u64::from(MIB);
    eprintln!("resident memory grew by {grown} MiB for {CALLS} amplifying compounds");
    assert!(
        grown < 256,
        "the server held {grown} MiB for {CALLS} compounds of at most ~1 MiB replies each"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cannot_hold_more_sessions_than_the_cap() {
    const MAX_SESSIONS: u32 = 16;
    let server = Server::start().await;
    let mut c = V4::connect(&server, root_cred()).await;
    assert_eq!(c.exchange([6; 8], b"many-sessions").await, OK);
    // Each CREATE_SESSION of a client takes the next sequence number (RFC 8881 18.36.4).
    for seq in 1..=MAX_SESSIONS {
        let r = c.call(&[create_session(c.clientid, seq, GENEROUS)]).await;
        assert_eq!(r.status, OK, "session {seq}");
    }
    let r = c
        .call(&[create_session(c.clientid, MAX_SESSIONS + 1, GENEROUS)])
        .await;
    assert_eq!(r.status, DELAY, "one session too many");
}
