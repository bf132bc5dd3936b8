//! A client speaking raw NFSv4.1 (or 4.2) COMPOUNDs over TCP, for tests that need exact control of
//! every operation and status (RFC 8881 sections 15 to 18): operation and status numbers,
//! encoders for the operations the tests send, a reply parser, and a session-holding client.

use super::*;

// Operation numbers and statuses (RFC 8881 sections 15 and 16, RFC 8276 section 8).
pub const OP_ACCESS: u32 = 3;
pub const OP_CLOSE: u32 = 4;
pub const OP_CREATE: u32 = 6;
pub const OP_GETATTR: u32 = 9;
pub const OP_GETFH: u32 = 10;
pub const OP_LOCK: u32 = 12;
pub const OP_LOCKT: u32 = 13;
pub const OP_LOCKU: u32 = 14;
pub const OP_LOOKUPP: u32 = 16;
pub const OP_OPEN: u32 = 18;
pub const OP_OPEN_CONFIRM: u32 = 20;
pub const OP_PUTFH: u32 = 22;
pub const OP_PUTROOTFH: u32 = 24;
pub const OP_READ: u32 = 25;
pub const OP_REMOVE: u32 = 28;
pub const OP_RENAME: u32 = 29;
pub const OP_RENEW: u32 = 30;
pub const OP_SAVEFH: u32 = 32;
pub const OP_SETATTR: u32 = 34;
pub const OP_SETCLIENTID: u32 = 35;
pub const OP_SETCLIENTID_CONFIRM: u32 = 36;
pub const OP_WRITE: u32 = 38;
pub const OP_RELEASE_LOCKOWNER: u32 = 39;
pub const OP_BIND_CONN_TO_SESSION: u32 = 41;
pub const OP_EXCHANGE_ID: u32 = 42;
pub const OP_CREATE_SESSION: u32 = 43;
pub const OP_SECINFO_NO_NAME: u32 = 52;
pub const OP_SEQUENCE: u32 = 53;
pub const OP_TEST_STATEID: u32 = 55;
pub const OP_DESTROY_CLIENTID: u32 = 57;
pub const OP_RECLAIM_COMPLETE: u32 = 58;
pub const OP_GETXATTR: u32 = 72;
pub const OP_SETXATTR: u32 = 73;
pub const OP_LISTXATTRS: u32 = 74;
pub const OP_REMOVEXATTR: u32 = 75;
/// Also the status of an op that does not exist.
pub const OP_ILLEGAL: u32 = 10044;

pub const OK: u32 = 0;
pub const ACCESS: u32 = 13;
pub const EXIST: u32 = 17;
pub const ROFS: u32 = 30;
pub const DQUOT: u32 = 69;
pub const NOTSUPP: u32 = 10004;
pub const TOOSMALL: u32 = 10005;
pub const STALE: u32 = 70;
pub const DELAY: u32 = 10008;
pub const DENIED: u32 = 10010;
pub const SHARE_DENIED: u32 = 10015;
pub const CLID_INUSE: u32 = 10017;
pub const STALE_CLIENTID: u32 = 10022;
pub const BADSESSION: u32 = 10052;
pub const REQ_TOO_BIG: u32 = 10065;
pub const REP_TOO_BIG: u32 = 10066;
pub const REP_TOO_BIG_TO_CACHE: u32 = 10067;
pub const TOO_MANY_OPS: u32 = 10070;
pub const NOXATTR: u32 = 10095;
pub const XATTR2BIG: u32 = 10096;

pub const MIB: u32 = 1 << 20;
/// What the server grants at most as ca_maxresponsesize / ca_maxrequestsize.
pub const SERVER_MAX_MSG: u32 = MIB + 64 * 1024;
/// Client records the server keeps at most.
pub const MAX_CLIENTS: usize = 1024;

// ---------------------------------------------------------------------------------------
// Encoding.

pub fn opaque(b: &[u8]) -> Vec<u8> {
    xdr_opaque(b)
}

pub const ANONYMOUS: [u8; 16] = [0; 16];

pub fn sequence(sid: &[u8; 16], seqid: u32, slot: u32, cache: bool) -> Vec<u8> {
    [
        words(&[OP_SEQUENCE]),
        sid.to_vec(),
        words(&[seqid, slot, slot, u32::from(cache)]),
    ]
    .concat()
}

pub fn putfh(fh: &[u8]) -> Vec<u8> {
    [words(&[OP_PUTFH]), opaque(fh)].concat()
}

pub fn read(offset: u64, count: u32) -> Vec<u8> {
    read_with(&ANONYMOUS, offset, count)
}

/// READ through a stateid.
pub fn read_with(sid: &[u8], offset: u64, count: u32) -> Vec<u8> {
    [
        words(&[OP_READ]),
        sid.to_vec(),
        (offset).to_be_bytes().to_vec(),
        words(&[count]),
    ]
    .concat()
}

pub fn close(sid: &[u8]) -> Vec<u8> {
    close_seq(0, sid)
}

pub fn remove(name: &str) -> Vec<u8> {
    [words(&[OP_REMOVE]), opaque(name.as_bytes())].concat()
}

/// RENAME from the saved directory to the current one.
pub fn rename(from: &str, to: &str) -> Vec<u8> {
    [
        words(&[OP_RENAME]),
        opaque(from.as_bytes()),
        opaque(to.as_bytes()),
    ]
    .concat()
}

pub fn savefh() -> Vec<u8> {
    words(&[OP_SAVEFH])
}

pub fn write(sid: &[u8], offset: u64, data: &[u8]) -> Vec<u8> {
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
pub fn getattr() -> Vec<u8> {
    words(&[OP_GETATTR, 1, (1 << 1) | (1 << 4)])
}

/// OPEN by name in the current directory; `create`: UNCHECKED with no attributes.
pub fn open(clientid: u64, owner: &[u8], access: u32, create: bool, name: &str) -> Vec<u8> {
    open_full(0, clientid, owner, access, 0, create, name)
}

/// OPEN with an owner seqid (minor version 0).
pub fn open_seq(
    seqid: u32,
    clientid: u64,
    owner: &[u8],
    access: u32,
    create: bool,
    name: &str,
) -> Vec<u8> {
    open_full(seqid, clientid, owner, access, 0, create, name)
}

/// [`open`] with a share deny mode.
pub fn open_deny(
    clientid: u64,
    owner: &[u8],
    access: u32,
    deny: u32,
    create: bool,
    name: &str,
) -> Vec<u8> {
    open_full(0, clientid, owner, access, deny, create, name)
}

/// OPEN with every choice: owner seqid, access and deny modes, create or not.
pub fn open_full(
    seqid: u32,
    clientid: u64,
    owner: &[u8],
    access: u32,
    deny: u32,
    create: bool,
    name: &str,
) -> Vec<u8> {
    let how = if create {
        words(&[1, 0, 0, 0])
    } else {
        words(&[0])
    };
    [
        words(&[OP_OPEN, seqid, access, deny]),
        clientid.to_be_bytes().to_vec(),
        opaque(owner),
        how,
        words(&[0]),
        opaque(name.as_bytes()),
    ]
    .concat()
}

/// LOCK (write) of `len` bytes from 0 by a new lock owner of the given open.
pub fn lock(clientid: u64, open_sid: &[u8], owner: &[u8], len: u64) -> Vec<u8> {
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

pub fn lockt(clientid: u64, owner: &[u8], len: u64) -> Vec<u8> {
    [
        words(&[OP_LOCKT, 2]),
        0u64.to_be_bytes().to_vec(),
        len.to_be_bytes().to_vec(),
        clientid.to_be_bytes().to_vec(),
        opaque(owner),
    ]
    .concat()
}

/// GETATTR of the given attribute numbers.
pub fn getattr_of(bits: &[u32]) -> Vec<u8> {
    let mut words_ = vec![0u32; bits.iter().map(|b| *b as usize / 32 + 1).max().unwrap_or(0)];
    for b in bits {
        words_[*b as usize / 32] |= 1 << (b % 32);
    }
    let mut v = words(&[OP_GETATTR, words_.len() as u32]);
    v.extend(words(&words_));
    v
}

pub fn access(bits: u32) -> Vec<u8> {
    words(&[OP_ACCESS, bits])
}

/// RECLAIM_COMPLETE for all file systems (rca_one_fs false).
pub fn reclaim_complete() -> Vec<u8> {
    words(&[OP_RECLAIM_COMPLETE, 0])
}

pub fn getxattr(name: &[u8]) -> Vec<u8> {
    [words(&[OP_GETXATTR]), opaque(name)].concat()
}

/// SETXATTR with option 0 (EITHER), 1 (CREATE) or 2 (REPLACE).
pub fn setxattr(option: u32, name: &[u8], value: &[u8]) -> Vec<u8> {
    [words(&[OP_SETXATTR, option]), opaque(name), opaque(value)].concat()
}

pub fn listxattrs(cookie: u64, maxcount: u32) -> Vec<u8> {
    [
        words(&[OP_LISTXATTRS]),
        cookie.to_be_bytes().to_vec(),
        words(&[maxcount]),
    ]
    .concat()
}

pub fn removexattr(name: &[u8]) -> Vec<u8> {
    [words(&[OP_REMOVEXATTR]), opaque(name)].concat()
}

pub fn test_stateid(sids: &[&[u8]]) -> Vec<u8> {
    let mut v = words(&[OP_TEST_STATEID, sids.len() as u32]);
    for s in sids {
        v.extend_from_slice(s);
    }
    v
}

/// LOCK (write, from 0) by a new lock owner, with the open owner's and the lock owner's
/// seqids (minor version 0).
pub fn lock_new_owner(
    open_seqid: u32,
    open_sid: &[u8],
    lock_seqid: u32,
    clientid: u64,
    owner: &[u8],
    len: u64,
) -> Vec<u8> {
    [
        words(&[OP_LOCK, 2, 0]),
        0u64.to_be_bytes().to_vec(),
        len.to_be_bytes().to_vec(),
        words(&[1, open_seqid]),
        open_sid.to_vec(),
        words(&[lock_seqid]),
        clientid.to_be_bytes().to_vec(),
        opaque(owner),
    ]
    .concat()
}

/// LOCKU (write, from 0) of `len` bytes.
pub fn locku(seqid: u32, lock_sid: &[u8], len: u64) -> Vec<u8> {
    [
        words(&[OP_LOCKU, 2, seqid]),
        lock_sid.to_vec(),
        0u64.to_be_bytes().to_vec(),
        len.to_be_bytes().to_vec(),
    ]
    .concat()
}

/// CLOSE with an owner seqid (minor version 0).
pub fn close_seq(seqid: u32, sid: &[u8]) -> Vec<u8> {
    [words(&[OP_CLOSE, seqid]), sid.to_vec()].concat()
}

pub fn open_confirm(sid: &[u8], seqid: u32) -> Vec<u8> {
    [words(&[OP_OPEN_CONFIRM]), sid.to_vec(), words(&[seqid])].concat()
}

/// SETCLIENTID with a TCP callback at `addr` ("h1.h2.h3.h4.p1.p2").
pub fn setclientid(verifier: [u8; 8], id: &[u8], program: u32, addr: &str) -> Vec<u8> {
    [
        words(&[OP_SETCLIENTID]),
        verifier.to_vec(),
        opaque(id),
        words(&[program]),
        opaque(b"tcp"),
        opaque(addr.as_bytes()),
        words(&[1]),
    ]
    .concat()
}

pub fn setclientid_confirm(clientid: u64, confirm: &[u8]) -> Vec<u8> {
    [
        words(&[OP_SETCLIENTID_CONFIRM]),
        clientid.to_be_bytes().to_vec(),
        confirm.to_vec(),
    ]
    .concat()
}

pub fn renew(clientid: u64) -> Vec<u8> {
    [words(&[OP_RENEW]), clientid.to_be_bytes().to_vec()].concat()
}

pub fn release_lockowner(clientid: u64, owner: &[u8]) -> Vec<u8> {
    [
        words(&[OP_RELEASE_LOCKOWNER]),
        clientid.to_be_bytes().to_vec(),
        opaque(owner),
    ]
    .concat()
}

pub fn exchange_id(verifier: [u8; 8], owner: &[u8]) -> Vec<u8> {
    exchange_id_flags(verifier, owner, 0)
}

/// EXCHANGE_ID with `flags`, SP4_NONE and no implementation id.
pub fn exchange_id_flags(verifier: [u8; 8], owner: &[u8], flags: u32) -> Vec<u8> {
    [
        words(&[OP_EXCHANGE_ID]),
        verifier.to_vec(),
        opaque(owner),
        words(&[flags, 0, 0]),
    ]
    .concat()
}

pub fn destroy_clientid(clientid: u64) -> Vec<u8> {
    [
        words(&[OP_DESTROY_CLIENTID]),
        clientid.to_be_bytes().to_vec(),
    ]
    .concat()
}

/// BIND_CONN_TO_SESSION in both directions, without RDMA mode.
pub fn bind_conn_to_session(sid: &[u8; 16]) -> Vec<u8> {
    [
        words(&[OP_BIND_CONN_TO_SESSION]),
        sid.to_vec(),
        words(&[3, 0]),
    ]
    .concat()
}

/// SECINFO_NO_NAME: style 0 the current object, 1 its parent.
pub fn secinfo_no_name(style: u32) -> Vec<u8> {
    words(&[OP_SECINFO_NO_NAME, style])
}

pub fn getfh() -> Vec<u8> {
    words(&[OP_GETFH])
}

pub fn putrootfh() -> Vec<u8> {
    words(&[OP_PUTROOTFH])
}

pub fn lookupp() -> Vec<u8> {
    words(&[OP_LOOKUPP])
}

/// The fore channel a test asks for: max request, max response, max cached, max ops, slots.
#[derive(Clone, Copy)]
pub struct Fore {
    pub request: u32,
    pub response: u32,
    pub cached: u32,
    pub ops: u32,
    pub slots: u32,
}

pub const GENEROUS: Fore = Fore {
    request: 2 * MIB,
    response: 2 * MIB,
    cached: 64 * 1024,
    ops: 64,
    slots: 64,
};

pub fn create_session(clientid: u64, seq: u32, fore: Fore) -> Vec<u8> {
    create_session_flags(clientid, seq, 0, fore)
}

/// CREATE_SESSION with `flags` (csa_flags), no back channel security.
pub fn create_session_flags(clientid: u64, seq: u32, flags: u32, fore: Fore) -> Vec<u8> {
    [
        words(&[OP_CREATE_SESSION]),
        clientid.to_be_bytes().to_vec(),
        words(&[seq, flags]),
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
pub fn sys_cred(uid: u32, gid: u32, machine: &[u8]) -> Vec<u8> {
    [words(&[7]), xdr_opaque(machine), words(&[uid, gid, 1, gid])].concat()
}

// ---------------------------------------------------------------------------------------
// Decoding.

pub struct Cur<'a>(pub &'a [u8]);

impl<'a> Cur<'a> {
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
    pub fn u32(&mut self) -> u32 {
        u32::from_be_bytes(self.take(4).try_into().unwrap())
    }
    pub fn u64(&mut self) -> u64 {
        u64::from_be_bytes(self.take(8).try_into().unwrap())
    }
    pub fn opaque(&mut self) -> &'a [u8] {
        let n = self.u32() as usize;
        let b = self.take(n);
        self.take((4 - n % 4) % 4);
        b
    }
    pub fn bitmap(&mut self) {
        let n = self.u32() as usize;
        self.take(4 * n);
    }
}

/// One op's result: its number, status and result body.
#[derive(Debug)]
pub struct Res {
    pub op: u32,
    pub status: u32,
    pub body: Vec<u8>,
}

/// A COMPOUND reply: its status and the results of the ops it ran.
#[derive(Debug)]
pub struct Compound {
    pub status: u32,
    pub results: Vec<Res>,
}

impl Compound {
    pub fn parse(body: &[u8]) -> Self {
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
                    OP_LOCK | OP_CLOSE | OP_LOCKU | OP_OPEN_CONFIRM => drop(c.take(16)),
                    OP_SETCLIENTID => drop(c.take(16)),
                    OP_BIND_CONN_TO_SESSION => drop(c.take(24)),
                    OP_SECINFO_NO_NAME => {
                        for _ in 0..c.u32() {
                            // RPCSEC_GSS carries an OID, a QOP and a service.
                            if c.u32() == 6 {
                                c.opaque();
                                c.take(8);
                            }
                        }
                    }
                    OP_ACCESS => drop(c.take(8)),
                    OP_GETXATTR => drop(c.opaque()),
                    // change_info4.
                    OP_SETXATTR | OP_REMOVEXATTR => drop(c.take(20)),
                    OP_LISTXATTRS => {
                        c.u64();
                        for _ in 0..c.u32() {
                            c.opaque();
                        }
                        c.u32();
                    }
                    OP_REMOVE => drop(c.take(20)),
                    OP_RENAME => drop(c.take(40)),
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

    pub fn statuses(&self) -> Vec<(u32, u32)> {
        self.results.iter().map(|r| (r.op, r.status)).collect()
    }

    pub fn body(&self, op: u32) -> &[u8] {
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

pub struct V4 {
    pub raw: Raw,
    pub cred: Vec<u8>,
    pub xid: u32,
    pub clientid: u64,
    pub sid: [u8; 16],
    /// Granted fore channel: max request, response, cached, ops, slots.
    pub granted: [u32; 5],
    pub seqid: u32,
    /// The minor version of the COMPOUNDs it sends (1 unless a test says otherwise).
    pub minor: u32,
}

impl V4 {
    pub async fn connect(server: &Server, cred: Vec<u8>) -> Self {
        Self {
            raw: Raw::connect(server.running.nfs).await,
            cred,
            xid: 0,
            clientid: 0,
            sid: [0; 16],
            granted: [0; 5],
            seqid: 0,
            minor: 1,
        }
    }

    pub fn record(&mut self, ops: &[Vec<u8>]) -> Vec<u8> {
        self.xid += 1;
        let mut args = [opaque(b"limits"), words(&[self.minor, ops.len() as u32])].concat();
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
    pub async fn call_sized(&mut self, ops: &[Vec<u8>]) -> (usize, Compound) {
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

    pub async fn call(&mut self, ops: &[Vec<u8>]) -> Compound {
        self.call_sized(ops).await.1
    }

    /// SEQUENCE on slot 0 with the next sequence id, then `ops`.
    pub async fn seq(&mut self, cache: bool, ops: &[Vec<u8>]) -> (usize, Compound) {
        self.seqid += 1;
        let mut all = vec![sequence(&self.sid, self.seqid, 0, cache)];
        all.extend_from_slice(ops);
        self.call_sized(&all).await
    }

    /// EXCHANGE_ID: the status; the client id is kept.
    pub async fn exchange(&mut self, verifier: [u8; 8], owner: &[u8]) -> u32 {
        let c = self.call(&[exchange_id(verifier, owner)]).await;
        if c.status == OK {
            self.clientid = Cur(c.body(OP_EXCHANGE_ID)).u64();
        }
        c.status
    }

    /// CREATE_SESSION for the kept client id: the status; the session is kept.
    pub async fn create_session(&mut self, fore: Fore) -> u32 {
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

    /// A client with a session that has sent RECLAIM_COMPLETE (so it may open and lock).
    pub async fn mount(server: &Server, cred: Vec<u8>, owner: &[u8], fore: Fore) -> Self {
        Self::mount_minor(server, cred, owner, fore, 1).await
    }

    /// A session of minor version `minor` whose client has sent RECLAIM_COMPLETE (RFC 8881
    /// section 18.51.3: before any OPEN but a reclaim).
    pub async fn mount_minor(
        server: &Server,
        cred: Vec<u8>,
        owner: &[u8],
        fore: Fore,
        minor: u32,
    ) -> Self {
        let mut c = Self::connect(server, cred).await;
        c.minor = minor;
        assert_eq!(c.exchange([1; 8], owner).await, OK);
        assert_eq!(c.create_session(fore).await, OK);
        let (_, r) = c.seq(false, &[reclaim_complete()]).await;
        assert_eq!(r.status, OK, "RECLAIM_COMPLETE: {:?}", r.statuses());
        c
    }

    /// [`V4::mount`], then RECLAIM_COMPLETE (RFC 8881 section 18.51.3: before any OPEN that
    /// is not a reclaim), as a client starts.
    pub async fn start(server: &Server, cred: Vec<u8>, owner: &[u8]) -> Self {
        Self::mount(server, cred, owner, GENEROUS).await
    }
}

pub fn root_cred() -> Vec<u8> {
    sys_cred(0, 0, b"limits-client")
}

/// The handle of `name` in the root of volume `vol`.
pub fn handle(server: &Server, vol: &str, name: &str) -> Vec<u8> {
    let store = &server.running.store;
    let root = store.volume_by_name(vol).unwrap();
    let dir = store.resolve(root.root_handle(), libc::O_PATH).unwrap();
    let id = export_store::Identity::root();
    export_store::ops::lookup(store, &dir, name.as_bytes(), &id)
        .unwrap()
        .0
}

/// A file of `data` in [`VOL`], and its handle.
pub fn file(server: &Server, name: &str, data: &[u8]) -> Vec<u8> {
    std::fs::write(server.vol_path(VOL).join(name), data).unwrap();
    handle(server, VOL, name)
}

pub fn volume_root(server: &Server, name: &str) -> Vec<u8> {
    server
        .running
        .store
        .volume_by_name(name)
        .unwrap()
        .root_handle()
        .to_vec()
}

pub fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

/// READ's data from a result body.
pub fn read_data(body: &[u8]) -> (bool, Vec<u8>) {
    let mut c = Cur(body);
    let eof = c.u32() == 1;
    (eof, c.opaque().to_vec())
}
