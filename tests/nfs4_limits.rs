//! NFSv4.1 limits against the whole in-process server, with COMPOUNDs built by hand and sent
//! over a raw TCP connection: sessions hold replies and requests to what CREATE_SESSION
//! negotiated, client records belong to the principal that made them and are bounded in
//! number, and read-only volumes refuse write access with NFS4ERR_ROFS.

mod common;

use std::time::Duration;

use common::*;

// Operation numbers and statuses (RFC 8881 sections 15 and 16).
const OP_CLOSE: u32 = 4;
const OP_CREATE: u32 = 6;
const OP_GETATTR: u32 = 9;
const OP_GETFH: u32 = 10;
const OP_LOCK: u32 = 12;
const OP_LOCKT: u32 = 13;
const OP_OPEN: u32 = 18;
const OP_PUTFH: u32 = 22;
const OP_READ: u32 = 25;
const OP_REMOVE: u32 = 28;
const OP_SETATTR: u32 = 34;
const OP_WRITE: u32 = 38;
const OP_EXCHANGE_ID: u32 = 42;
const OP_CREATE_SESSION: u32 = 43;
const OP_SEQUENCE: u32 = 53;
const OP_TEST_STATEID: u32 = 55;

const OK: u32 = 0;
const ROFS: u32 = 30;
const DELAY: u32 = 10008;
const DENIED: u32 = 10010;
const CLID_INUSE: u32 = 10017;
const STALE_CLIENTID: u32 = 10022;
const REQ_TOO_BIG: u32 = 10065;
const REP_TOO_BIG: u32 = 10066;
const REP_TOO_BIG_TO_CACHE: u32 = 10067;
const TOO_MANY_OPS: u32 = 10070;

const MIB: u32 = 1 << 20;
/// What the server grants at most as ca_maxresponsesize / ca_maxrequestsize.
const SERVER_MAX_MSG: u32 = MIB + 64 * 1024;
/// Client records the server keeps at most.
const MAX_CLIENTS: usize = 1024;

// ---------------------------------------------------------------------------------------
// Encoding.

fn opaque(b: &[u8]) -> Vec<u8> {
    xdr_opaque(b)
}

const ANONYMOUS: [u8; 16] = [0; 16];

fn sequence(sid: &[u8; 16], seqid: u32, slot: u32, cache: bool) -> Vec<u8> {
    [
        words(&[OP_SEQUENCE]),
        sid.to_vec(),
        words(&[seqid, slot, slot, u32::from(cache)]),
    ]
    .concat()
}

fn putfh(fh: &[u8]) -> Vec<u8> {
    [words(&[OP_PUTFH]), opaque(fh)].concat()
}

fn read(offset: u64, count: u32) -> Vec<u8> {
    [
        words(&[OP_READ]),
        ANONYMOUS.to_vec(),
        (offset).to_be_bytes().to_vec(),
        words(&[count]),
    ]
    .concat()
}

fn write(sid: &[u8], offset: u64, data: &[u8]) -> Vec<u8> {
    [
        words(&[OP_WRITE]),
        sid.to_vec(),
        offset.to_be_bytes().to_vec(),
        words(&[2]),
        opaque(data),
    ]
    .concat()
}

/// GETATTR of type and size.
fn getattr() -> Vec<u8> {
    words(&[OP_GETATTR, 1, (1 << 1) | (1 << 4)])
}

/// OPEN by name in the current directory; `create`: UNCHECKED with no attributes.
fn open(clientid: u64, owner: &[u8], access: u32, create: bool, name: &str) -> Vec<u8> {
    let how = if create {
        words(&[1, 0, 0, 0])
    } else {
        words(&[0])
    };
    [
        words(&[OP_OPEN, 0, access, 0]),
        clientid.to_be_bytes().to_vec(),
        opaque(owner),
        how,
        words(&[0]),
        opaque(name.as_bytes()),
    ]
    .concat()
}

/// LOCK (write) of `len` bytes from 0 by a new lock owner of the given open.
fn lock(clientid: u64, open_sid: &[u8], owner: &[u8], len: u64) -> Vec<u8> {
    [
        words(&[OP_LOCK, 2, 0]),
        0u64.to_be_bytes().to_vec(),
        len.to_be_bytes().to_vec(),
        words(&[1, 0]),
        open_sid.to_vec(),
        words(&[0]),
        clientid.to_be_bytes().to_vec(),
        opaque(owner),
    ]
    .concat()
}

fn lockt(clientid: u64, owner: &[u8], len: u64) -> Vec<u8> {
    [
        words(&[OP_LOCKT, 2]),
        0u64.to_be_bytes().to_vec(),
        len.to_be_bytes().to_vec(),
        clientid.to_be_bytes().to_vec(),
        opaque(owner),
    ]
    .concat()
}

fn test_stateid(sids: &[&[u8]]) -> Vec<u8> {
    let mut v = words(&[OP_TEST_STATEID, sids.len() as u32]);
    for s in sids {
        v.extend_from_slice(s);
    }
    v
}

fn exchange_id(verifier: [u8; 8], owner: &[u8]) -> Vec<u8> {
    [
        words(&[OP_EXCHANGE_ID]),
        verifier.to_vec(),
        opaque(owner),
        words(&[0, 0, 0]),
    ]
    .concat()
}

/// The fore channel a test asks for: max request, max response, max cached, max ops, slots.
#[derive(Clone, Copy)]
struct Fore {
    request: u32,
    response: u32,
    cached: u32,
    ops: u32,
    slots: u32,
}

const GENEROUS: Fore = Fore {
    request: 2 * MIB,
    response: 2 * MIB,
    cached: 64 * 1024,
    ops: 64,
    slots: 64,
};

fn create_session(clientid: u64, seq: u32, fore: Fore) -> Vec<u8> {
    [
        words(&[OP_CREATE_SESSION]),
        clientid.to_be_bytes().to_vec(),
        words(&[seq, 0]),
        words(&[
            0,
            fore.request,
            fore.response,
            fore.cached,
            fore.ops,
            fore.slots,
            0,
        ]),
        words(&[0, 4096, 4096, 0, 2, 1, 0]),
        words(&[0x4000_0000, 1, 0]),
    ]
    .concat()
}

/// An AUTH_SYS credential body.
fn sys_cred(uid: u32, gid: u32, machine: &[u8]) -> Vec<u8> {
    [words(&[7]), xdr_opaque(machine), words(&[uid, gid, 1, gid])].concat()
}

// ---------------------------------------------------------------------------------------
// Decoding.

struct Cur<'a>(&'a [u8]);

impl<'a> Cur<'a> {
    fn take(&mut self, n: usize) -> &'a [u8] {
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
    fn u32(&mut self) -> u32 {
        u32::from_be_bytes(self.take(4).try_into().unwrap())
    }
    fn u64(&mut self) -> u64 {
        u64::from_be_bytes(self.take(8).try_into().unwrap())
    }
    fn opaque(&mut self) -> &'a [u8] {
        let n = self.u32() as usize;
        let b = self.take(n);
        self.take((4 - n % 4) % 4);
        b
    }
    fn bitmap(&mut self) {
        let n = self.u32() as usize;
        self.take(4 * n);
    }
}

/// One op's result: its number, status and result body.
#[derive(Debug)]
struct Res {
    op: u32,
    status: u32,
    body: Vec<u8>,
}

/// A COMPOUND reply: its status and the results of the ops it ran.
#[derive(Debug)]
struct Compound {
    status: u32,
    results: Vec<Res>,
}

impl Compound {
    fn parse(body: &[u8]) -> Self {
        let mut c = Cur(body);
        let status = c.u32();
        c.opaque();
        let n = c.u32();
        let mut results = Vec::new();
        for _ in 0..n {
            let op = c.u32();
            let status = c.u32();
            let before = c.0;
            if status == OK {
                match op {
                    OP_SEQUENCE => drop(c.take(36)),
                    OP_GETFH => drop(c.opaque()),
                    OP_READ => {
                        c.u32();
                        c.opaque();
                    }
                    OP_WRITE => drop(c.take(16)),
                    OP_GETATTR => {
                        c.bitmap();
                        c.opaque();
                    }
                    OP_OPEN => {
                        c.take(16 + 20 + 4);
                        c.bitmap();
                        assert_eq!(c.u32(), 0, "no delegation");
                    }
                    OP_LOCK | OP_CLOSE => drop(c.take(16)),
                    OP_TEST_STATEID => {
                        let n = c.u32() as usize;
                        c.take(4 * n);
                    }
                    OP_EXCHANGE_ID => {
                        c.take(8 + 4 + 4 + 4 + 8);
                        c.opaque();
                        c.opaque();
                        for _ in 0..c.u32() {
                            c.opaque();
                            c.opaque();
                            c.take(12);
                        }
                    }
                    OP_CREATE_SESSION => {
                        c.take(16 + 4 + 4);
                        for _ in 0..2 {
                            c.take(24);
                            let n = c.u32() as usize;
                            c.take(4 * n);
                        }
                    }
                    _ => {}
                }
            } else {
                // A failing op ends the reply (LOCK and LOCKT keep their LOCK4denied).
                c.0 = &[];
            }
            let used = before.len() - c.0.len();
            results.push(Res {
                op,
                status,
                body: before[..used].to_vec(),
            });
        }
        assert!(c.0.is_empty(), "bytes left after the results");
        Compound { status, results }
    }

    fn statuses(&self) -> Vec<(u32, u32)> {
        self.results.iter().map(|r| (r.op, r.status)).collect()
    }

    fn body(&self, op: u32) -> &[u8] {
        &self
            .results
            .iter()
            .find(|r| r.op == op)
            .unwrap_or_else(|| panic!("no result of op {op}: {:?}", self.statuses()))
            .body
    }
}

// ---------------------------------------------------------------------------------------
// A client speaking raw COMPOUNDs.

struct V4 {
    raw: Raw,
    cred: Vec<u8>,
    xid: u32,
    clientid: u64,
    sid: [u8; 16],
    /// Granted fore channel: max request, response, cached, ops, slots.
    granted: [u32; 5],
    seqid: u32,
}

impl V4 {
    async fn connect(server: &Server, cred: Vec<u8>) -> Self {
        Self {
            raw: Raw::connect(server.running.nfs).await,
            cred,
            xid: 0,
            clientid: 0,
            sid: [0; 16],
            granted: [0; 5],
            seqid: 0,
        }
    }

    fn record(&mut self, ops: &[Vec<u8>]) -> Vec<u8> {
        self.xid += 1;
        let mut args = [opaque(b"limits"), words(&[1, ops.len() as u32])].concat();
        for op in ops {
            args.extend_from_slice(op);
        }
        record(&call_with_cred(
            self.xid,
            2,
            NFS_PROGRAM,
            4,
            1,
            1,
            &self.cred,
            &args,
        ))
    }

    /// Sends a COMPOUND; the reply's size (the RPC message) and the compound.
    async fn call_sized(&mut self, ops: &[Vec<u8>]) -> (usize, Compound) {
        let rec = self.record(ops);
        self.raw.send(&rec).await;
        let reply = self.raw.recv_record().await.expect("a reply");
        let size = reply.len();
        let parsed = parse_reply(&reply);
        assert_eq!(parsed.xid, self.xid);
        let ReplyKind::Success(body) = parsed.kind else {
            panic!("{:?}", parsed.kind)
        };
        (size, Compound::parse(&body))
    }

    async fn call(&mut self, ops: &[Vec<u8>]) -> Compound {
        self.call_sized(ops).await.1
    }

    /// SEQUENCE on slot 0 with the next sequence id, then `ops`.
    async fn seq(&mut self, cache: bool, ops: &[Vec<u8>]) -> (usize, Compound) {
        self.seqid += 1;
        let mut all = vec![sequence(&self.sid, self.seqid, 0, cache)];
        all.extend_from_slice(ops);
        self.call_sized(&all).await
    }

    /// EXCHANGE_ID: the status; the client id is kept.
    async fn exchange(&mut self, verifier: [u8; 8], owner: &[u8]) -> u32 {
        let c = self.call(&[exchange_id(verifier, owner)]).await;
        if c.status == OK {
            self.clientid = Cur(c.body(OP_EXCHANGE_ID)).u64();
        }
        c.status
    }

    /// CREATE_SESSION for the kept client id: the status; the session is kept.
    async fn create_session(&mut self, fore: Fore) -> u32 {
        let c = self.call(&[create_session(self.clientid, 1, fore)]).await;
        if c.status == OK {
            let mut b = Cur(c.body(OP_CREATE_SESSION));
            self.sid = b.take(16).try_into().unwrap();
            b.take(8);
            b.u32();
            for g in &mut self.granted {
                *g = b.u32();
            }
            self.seqid = 0;
        }
        c.status
    }

    async fn mount(server: &Server, cred: Vec<u8>, owner: &[u8], fore: Fore) -> Self {
        let mut c = Self::connect(server, cred).await;
        assert_eq!(c.exchange([1; 8], owner).await, OK);
        assert_eq!(c.create_session(fore).await, OK);
        c
    }
}

fn root_cred() -> Vec<u8> {
    sys_cred(0, 0, b"limits-client")
}

/// The handle of `name` in the root of volume `vol`.
fn handle(server: &Server, vol: &str, name: &str) -> Vec<u8> {
    let store = &server.running.store;
    let root = store.volume_by_name(vol).unwrap();
    let dir = store.resolve(root.root_handle(), libc::O_PATH).unwrap();
    let id = export_store::Identity::root();
    export_store::ops::lookup(store, &dir, name.as_bytes(), &id)
        .unwrap()
        .0
}

/// A file of `data` in [`VOL`], and its handle.
fn file(server: &Server, name: &str, data: &[u8]) -> Vec<u8> {
    std::fs::write(server.vol_path(VOL).join(name), data).unwrap();
    handle(server, VOL, name)
}

fn volume_root(server: &Server, name: &str) -> Vec<u8> {
    server
        .running
        .store
        .volume_by_name(name)
        .unwrap()
        .root_handle()
        .to_vec()
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

/// READ's data from a result body.
fn read_data(body: &[u8]) -> (bool, Vec<u8>) {
    let mut c = Cur(body);
    let eof = c.u32() == 1;
    (eof, c.opaque().to_vec())
}

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
