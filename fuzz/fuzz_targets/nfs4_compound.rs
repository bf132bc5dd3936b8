//! Fuzzes NFSv4.1 COMPOUNDs against a real export store, past the session checks: a client
//! and session are set up once (EXCHANGE_ID, CREATE_SESSION) and each fuzzed compound starts
//! with a SEQUENCE on one of its slots with the sequence id the slot expects (or, when the
//! input says so, a retransmission), followed by fuzzed ops whose file handles are real ones
//! (PUTROOTFH, PUTFH of the fixture's objects) and whose stateids are special, the current
//! one, or made up. Inputs may also hold the ops that stand alone (EXCHANGE_ID,
//! CREATE_SESSION, DESTROY_*, BIND_CONN_TO_SESSION) aimed at the fuzzer's own client and
//! session, and raw compounds. When the session goes, a new client and session replace it.
#![no_main]

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use nfs_fuzz::{Cred, Fh, Fixture, Name, Xdr, word};
use nfs_server::grace::Grace;
use nfs_server::locks::LockTable;
use nfs_server::nfs4::Nfs4Service;
use nfs_server::nfs4::state::{State, StateConfig};
use nfs_server::nfs4::xdr::*;
use oncrpc::Reply;

/// The fuzzer's own client and session.
struct Session {
    clientid: u64,
    /// The client's last CREATE_SESSION sequence id.
    cs_seq: u32,
    sid: [u8; 16],
    /// Each slot's last sequence id.
    slots: Vec<u32>,
    /// Other sessions fuzzed CREATE_SESSIONs gave the client: destroyed with it.
    extra: Vec<[u8; 16]>,
    /// Clients made so far (each has its own owner).
    made: u32,
}

struct Target {
    fixture: Fixture,
    service: Nfs4Service,
    session: Mutex<Session>,
}

const SLOTS: u32 = 16;
const NFS4ERR_BADSESSION: u32 = 10052;

fn root() -> Cred {
    Cred::Root
}

fn call(service: &Nfs4Service, cred: &Cred, args: &[u8]) -> Vec<u8> {
    match service.call_blocking(&cred.context(4, 1), args) {
        Reply::Success(b) | Reply::SuccessFile(b, _) => b,
        _ => Vec::new(),
    }
}

/// COMPOUND arguments: empty tag, minor version 1, the ops.
fn compound(minor: u32, ops: &[Vec<u8>]) -> Vec<u8> {
    let mut x = Xdr::default();
    x.opaque(b"").u32(minor).u32(ops.len() as u32);
    for op in ops {
        x.fixed(op);
    }
    x.0
}

/// The status of the first op of a COMPOUND reply (after status, empty tag, count, op).
fn first_status(reply: &[u8]) -> Option<u32> {
    word(reply, 16)
}

fn fore(x: &mut Xdr, request: u32, response: u32, cached: u32, ops: u32, slots: u32) {
    x.u32(0)
        .u32(request)
        .u32(response)
        .u32(cached)
        .u32(ops)
        .u32(slots)
        .u32(0);
}

fn create_session_op(clientid: u64, seq: u32) -> Vec<u8> {
    let mut x = Xdr::default();
    x.u32(OP_CREATE_SESSION).u64(clientid).u32(seq).u32(0);
    fore(&mut x, 2 << 20, 2 << 20, 64 << 10, 32, SLOTS);
    fore(&mut x, 4096, 4096, 0, 2, 1);
    // Callback program, one AUTH_NONE security parameter.
    x.u32(0x4000_0000).u32(1).u32(0);
    x.0
}

impl Session {
    /// A new client and session, after getting rid of the old ones. If the server refuses
    /// (its client table is full of live clients: DELAY), the session is a dead one and the
    /// next sequenced compound tries again.
    fn establish(service: &Nfs4Service, old: Option<&Session>) -> Session {
        let made = old.map_or(0, |s| s.made + 1);
        if let Some(s) = old {
            for sid in std::iter::once(&s.sid).chain(&s.extra) {
                let mut x = Xdr::default();
                x.u32(OP_DESTROY_SESSION).fixed(sid);
                call(service, &root(), &compound(1, &[x.0]));
            }
            let mut x = Xdr::default();
            x.u32(OP_DESTROY_CLIENTID).u64(s.clientid);
            call(service, &root(), &compound(1, &[x.0]));
        }
        let mut x = Xdr::default();
        x.u32(OP_EXCHANGE_ID)
            .fixed(&[7; 8])
            .opaque(format!("fuzz-client-{made}").as_bytes())
            .u32(0)
            .u32(0)
            .u32(0);
        let r = call(service, &root(), &compound(1, &[x.0]));
        let mut s = Session {
            clientid: 0,
            cs_seq: 0,
            sid: [0; 16],
            slots: vec![0; SLOTS as usize],
            extra: Vec::new(),
            made,
        };
        let (Some(0), Some(hi), Some(lo), Some(seq)) =
            (first_status(&r), word(&r, 20), word(&r, 24), word(&r, 28))
        else {
            return s;
        };
        s.clientid = u64::from(hi) << 32 | u64::from(lo);
        let r = call(
            service,
            &root(),
            &compound(1, &[create_session_op(s.clientid, seq)]),
        );
        if let (Some(0), Some(sid)) = (first_status(&r), r.get(20..36)) {
            s.sid.copy_from_slice(sid);
            s.cs_seq = seq;
            // RECLAIM_COMPLETE, so fuzzed OPENs and LOCKs are not all NFS4ERR_GRACE.
            let mut x = Xdr::default();
            x.u32(OP_SEQUENCE)
                .fixed(&s.sid)
                .u32(1)
                .u32(0)
                .u32(SLOTS - 1)
                .bool(false);
            let mut rc = Xdr::default();
            rc.u32(OP_RECLAIM_COMPLETE).bool(false);
            call(service, &root(), &compound(1, &[x.0, rc.0]));
            s.slots[0] = 1;
        }
        s
    }
}

fn target() -> &'static Target {
    static TARGET: OnceLock<Target> = OnceLock::new();
    TARGET.get_or_init(|| {
        let fixture = Fixture::new();
        let locks = Arc::new(LockTable::new());
        let grace = Arc::new(Grace::none());
        let state = Arc::new(State::new(
            StateConfig {
                // Short, so clients the fuzzer abandons go soon.
                lease: Duration::from_secs(5),
                grace: Duration::from_secs(90),
                records: None,
            },
            locks,
            grace,
        ));
        let service = Nfs4Service::new(
            Arc::clone(&fixture.store),
            state,
            nfs_server::executor::Executor::new(1),
            [1; 8],
            None,
        );
        let session = Mutex::new(Session::establish(&service, None));
        Target {
            fixture,
            service,
            session,
        }
    })
}

#[derive(Arbitrary, Debug)]
enum Sid {
    Anonymous,
    Bypass,
    Current,
    Invalid,
    Raw(u32, [u8; 12]),
}

impl Sid {
    fn put(&self, x: &mut Xdr) {
        let s = match self {
            Sid::Anonymous => StateId::ANONYMOUS,
            Sid::Bypass => StateId::BYPASS,
            Sid::Current => StateId::CURRENT,
            Sid::Invalid => StateId::INVALID,
            Sid::Raw(seqid, other) => StateId {
                seqid: *seqid,
                other: *other,
            },
        };
        x.u32(s.seqid).fixed(&s.other);
    }
}

#[derive(Arbitrary, Debug)]
enum Who {
    Id(u32),
    Name(u8),
    Raw(Vec<u8>),
}

impl Who {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Who::Id(n) => n.to_string().into_bytes(),
            Who::Name(n) => [&b"root"[..], b"nobody", b"1000@localdomain", b"", b"-1"]
                [usize::from(*n) % 5]
                .to_vec(),
            Who::Raw(b) => b.clone(),
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Fattr {
    size: Option<u64>,
    mode: Option<u32>,
    owner: Option<Who>,
    group: Option<Who>,
    atime: Option<Option<(i64, u32)>>,
    mtime: Option<Option<(i64, u32)>>,
    /// Another attribute asked for (read-only or unsupported ones are refused).
    extra: Option<u8>,
}

impl Fattr {
    fn put(&self, x: &mut Xdr) {
        let mut bits = Vec::new();
        let mut vals = Xdr::default();
        let time = |vals: &mut Xdr, t: &Option<(i64, u32)>| match t {
            None => {
                vals.u32(0);
            }
            Some((s, ns)) => {
                vals.u32(1).u64(*s as u64).u32(*ns);
            }
        };
        // In bit order, as the decoder reads them.
        if let Some(v) = self.size {
            bits.push(4);
            vals.u64(v);
        }
        if let Some(v) = self.mode {
            bits.push(33);
            vals.u32(v);
        }
        if let Some(w) = &self.owner {
            bits.push(36);
            vals.opaque(&w.bytes());
        }
        if let Some(w) = &self.group {
            bits.push(37);
            vals.opaque(&w.bytes());
        }
        if let Some(t) = &self.atime {
            bits.push(48);
            time(&mut vals, t);
        }
        if let Some(t) = &self.mtime {
            bits.push(54);
            time(&mut vals, t);
        }
        if let Some(e) = self.extra {
            bits.push(u32::from(e % 80));
        }
        bitmap(x, &bits);
        x.opaque(&vals.0);
    }
}

fn bitmap(x: &mut Xdr, bits: &[u32]) {
    let words = bits.iter().map(|b| b / 32 + 1).max().unwrap_or(0);
    x.u32(words);
    for w in 0..words {
        let mut v = 0u32;
        for b in bits.iter().filter(|b| *b / 32 == w) {
            v |= 1 << (b % 32);
        }
        x.u32(v);
    }
}

#[derive(Arbitrary, Debug)]
enum ClientId {
    Ours,
    Next(u8),
    Raw(u64),
}

#[derive(Arbitrary, Debug)]
enum CreateType {
    Link(Vec<u8>),
    Block(u32, u32),
    Char(u32, u32),
    Socket,
    Fifo,
    Dir,
    Other(u32),
}

#[derive(Arbitrary, Debug)]
enum OpenHow {
    NoCreate,
    Unchecked(Fattr),
    Guarded(Fattr),
    Exclusive([u8; 8]),
    Exclusive41([u8; 8], Fattr),
    Bad(u32, u32),
}

#[derive(Arbitrary, Debug)]
enum Claim {
    Null(Name),
    Previous(u32),
    DelegateCur(Sid, Name),
    DelegatePrev(Name),
    Fh,
    DelegCurFh(Sid),
    DelegPrevFh,
    Other(u32),
}

#[derive(Arbitrary, Debug)]
enum Locker {
    New {
        open_seqid: u32,
        open: Sid,
        lock_seqid: u32,
        clientid: ClientId,
        owner: u8,
    },
    Existing {
        lock: Sid,
        seqid: u32,
    },
}

#[derive(Arbitrary, Debug)]
enum Op {
    PutRootFh,
    PutPubFh,
    PutFh(Fh),
    /// The pseudo handles of `/` and `/export`, or anything.
    PutPseudo(u8),
    GetFh,
    SaveFh,
    RestoreFh,
    Lookup(Name),
    LookupP,
    Readlink,
    Getattr(Vec<u8>),
    Setattr(Sid, Fattr),
    Access(u32),
    Read(Sid, u64, u32),
    Write(Sid, u64, u32, Vec<u8>),
    Commit(u64, u32),
    Create(CreateType, Name, Fattr),
    Remove(Name),
    Rename(Name, Name),
    Link(Name),
    Readdir(u64, [u8; 8], u32, u32, Vec<u8>),
    Verify(bool, Fattr),
    Open {
        seqid: u32,
        access: u32,
        deny: u32,
        clientid: ClientId,
        owner: u8,
        how: OpenHow,
        claim: Claim,
    },
    OpenDowngrade(Sid, u32, u32, u32),
    Close(u32, Sid),
    Lock {
        kind: u8,
        reclaim: bool,
        offset: u64,
        length: u64,
        locker: Locker,
    },
    Lockt(u8, u64, u64, ClientId, u8),
    Locku(u8, u32, Sid, u64, u64),
    FreeStateid(Sid),
    TestStateid(Vec<Sid>),
    Allocate(Sid, u64, u64),
    Deallocate(Sid, u64, u64),
    Seek(Sid, u64, u32),
    Secinfo(Name),
    SecinfoNoName(u32),
    ReclaimComplete(bool),
    DelegReturn(Sid),
    /// Any op number with raw arguments.
    Raw(u8, Vec<u8>),
}

/// The ops that stand alone, aimed at the fuzzer's own client and session when asked.
#[derive(Arbitrary, Debug)]
enum Alone {
    ExchangeId {
        verifier: u8,
        /// The fuzzer's own client owner, or another one.
        ours: bool,
        flags: u32,
        protect: u8,
        impl_ids: u8,
    },
    CreateSession {
        clientid: ClientId,
        seq_delta: u8,
        flags: u32,
        fore: [u32; 6],
        back: [u32; 6],
    },
    DestroySession(bool, [u8; 16]),
    DestroyClientid(ClientId),
    BindConn(bool, u32, bool),
}

#[derive(Arbitrary, Debug)]
enum Compound {
    Sequenced {
        cred: Cred,
        slot: u8,
        /// Send the slot's last sequence id again: a retransmission.
        replay: bool,
        cache: bool,
        ops: Vec<Op>,
    },
    Alone(Cred, Alone),
    /// Raw compound arguments, minor version and all.
    Raw(Vec<u8>),
}

fn owner(n: u8) -> Vec<u8> {
    vec![b'o', b'0' + n % 4]
}

impl ClientId {
    fn get(&self, s: &Session) -> u64 {
        match self {
            ClientId::Ours => s.clientid,
            ClientId::Next(n) => s.clientid.wrapping_add(u64::from(*n % 4)),
            ClientId::Raw(v) => *v,
        }
    }
}

fn encode_op(op: &Op, s: &Session, handles: &[Vec<u8>]) -> Vec<u8> {
    let mut x = Xdr::default();
    match op {
        Op::PutRootFh => {
            x.u32(OP_PUTROOTFH);
        }
        Op::PutPubFh => {
            x.u32(OP_PUTPUBFH);
        }
        Op::PutFh(f) => {
            x.u32(OP_PUTFH).opaque(&f.pick(handles));
        }
        Op::PutPseudo(n) => {
            x.u32(OP_PUTFH)
                .opaque(&[0xf4, b'p', b's', b'e', b'u', b'd', b'o', *n % 3]);
        }
        Op::GetFh => {
            x.u32(OP_GETFH);
        }
        Op::SaveFh => {
            x.u32(OP_SAVEFH);
        }
        Op::RestoreFh => {
            x.u32(OP_RESTOREFH);
        }
        Op::Lookup(n) => {
            x.u32(OP_LOOKUP).opaque(&n.bytes());
        }
        Op::LookupP => {
            x.u32(OP_LOOKUPP);
        }
        Op::Readlink => {
            x.u32(OP_READLINK);
        }
        Op::Getattr(bits) => {
            x.u32(OP_GETATTR);
            let bits: Vec<u32> = bits.iter().take(8).map(|b| u32::from(*b % 96)).collect();
            bitmap(&mut x, &bits);
        }
        Op::Setattr(sid, a) => {
            x.u32(OP_SETATTR);
            sid.put(&mut x);
            a.put(&mut x);
        }
        Op::Access(a) => {
            x.u32(OP_ACCESS).u32(*a);
        }
        Op::Read(sid, off, n) => {
            x.u32(OP_READ);
            sid.put(&mut x);
            x.u64(*off).u32(*n);
        }
        Op::Write(sid, off, stable, data) => {
            x.u32(OP_WRITE);
            sid.put(&mut x);
            x.u64(*off).u32(stable % 4).opaque(data);
        }
        Op::Commit(off, n) => {
            x.u32(OP_COMMIT).u64(*off).u32(*n);
        }
        Op::Create(kind, name, a) => {
            x.u32(OP_CREATE);
            match kind {
                CreateType::Link(target) => {
                    x.u32(5).opaque(target);
                }
                CreateType::Block(ma, mi) => {
                    x.u32(3).u32(*ma).u32(*mi);
                }
                CreateType::Char(ma, mi) => {
                    x.u32(4).u32(*ma).u32(*mi);
                }
                CreateType::Socket => {
                    x.u32(6);
                }
                CreateType::Fifo => {
                    x.u32(7);
                }
                CreateType::Dir => {
                    x.u32(2);
                }
                CreateType::Other(t) => {
                    x.u32(*t % 12);
                }
            }
            x.opaque(&name.bytes());
            a.put(&mut x);
        }
        Op::Remove(n) => {
            x.u32(OP_REMOVE).opaque(&n.bytes());
        }
        Op::Rename(a, b) => {
            x.u32(OP_RENAME).opaque(&a.bytes()).opaque(&b.bytes());
        }
        Op::Link(n) => {
            x.u32(OP_LINK).opaque(&n.bytes());
        }
        Op::Readdir(cookie, verf, dircount, maxcount, bits) => {
            x.u32(OP_READDIR)
                .u64(*cookie)
                .fixed(verf)
                .u32(*dircount)
                .u32(*maxcount);
            let bits: Vec<u32> = bits.iter().take(8).map(|b| u32::from(*b % 96)).collect();
            bitmap(&mut x, &bits);
        }
        Op::Verify(not, a) => {
            x.u32(if *not { OP_NVERIFY } else { OP_VERIFY });
            a.put(&mut x);
        }
        Op::Open {
            seqid,
            access,
            deny,
            clientid,
            owner: o,
            how,
            claim,
        } => {
            x.u32(OP_OPEN)
                .u32(*seqid)
                .u32(*access % 4)
                .u32(*deny % 4)
                .u64(clientid.get(s))
                .opaque(&owner(*o));
            match how {
                OpenHow::NoCreate => {
                    x.u32(0);
                }
                OpenHow::Unchecked(a) => {
                    x.u32(1).u32(0);
                    a.put(&mut x);
                }
                OpenHow::Guarded(a) => {
                    x.u32(1).u32(1);
                    a.put(&mut x);
                }
                OpenHow::Exclusive(v) => {
                    x.u32(1).u32(2).fixed(v);
                }
                OpenHow::Exclusive41(v, a) => {
                    x.u32(1).u32(3).fixed(v);
                    a.put(&mut x);
                }
                OpenHow::Bad(a, b) => {
                    x.u32(*a).u32(*b);
                }
            }
            match claim {
                Claim::Null(n) => {
                    x.u32(0).opaque(&n.bytes());
                }
                Claim::Previous(d) => {
                    x.u32(1).u32(*d);
                }
                Claim::DelegateCur(sid, n) => {
                    x.u32(2);
                    sid.put(&mut x);
                    x.opaque(&n.bytes());
                }
                Claim::DelegatePrev(n) => {
                    x.u32(3).opaque(&n.bytes());
                }
                Claim::Fh => {
                    x.u32(4);
                }
                Claim::DelegCurFh(sid) => {
                    x.u32(5);
                    sid.put(&mut x);
                }
                Claim::DelegPrevFh => {
                    x.u32(6);
                }
                Claim::Other(c) => {
                    x.u32(*c);
                }
            }
        }
        Op::OpenDowngrade(sid, seqid, access, deny) => {
            x.u32(OP_OPEN_DOWNGRADE);
            sid.put(&mut x);
            x.u32(*seqid).u32(*access % 4).u32(*deny % 4);
        }
        Op::Close(seqid, sid) => {
            x.u32(OP_CLOSE).u32(*seqid);
            sid.put(&mut x);
        }
        Op::Lock {
            kind,
            reclaim,
            offset,
            length,
            locker,
        } => {
            x.u32(OP_LOCK)
                .u32(u32::from(kind % 5))
                .bool(*reclaim)
                .u64(*offset)
                .u64(*length);
            match locker {
                Locker::New {
                    open_seqid,
                    open,
                    lock_seqid,
                    clientid,
                    owner: o,
                } => {
                    x.bool(true).u32(*open_seqid);
                    open.put(&mut x);
                    x.u32(*lock_seqid).u64(clientid.get(s)).opaque(&owner(*o));
                }
                Locker::Existing { lock, seqid } => {
                    x.bool(false);
                    lock.put(&mut x);
                    x.u32(*seqid);
                }
            }
        }
        Op::Lockt(kind, offset, length, clientid, o) => {
            x.u32(OP_LOCKT)
                .u32(u32::from(kind % 5))
                .u64(*offset)
                .u64(*length)
                .u64(clientid.get(s))
                .opaque(&owner(*o));
        }
        Op::Locku(kind, seqid, sid, offset, length) => {
            x.u32(OP_LOCKU).u32(u32::from(kind % 5)).u32(*seqid);
            sid.put(&mut x);
            x.u64(*offset).u64(*length);
        }
        Op::FreeStateid(sid) => {
            x.u32(OP_FREE_STATEID);
            sid.put(&mut x);
        }
        Op::TestStateid(sids) => {
            x.u32(OP_TEST_STATEID).u32(sids.len() as u32);
            for sid in sids {
                sid.put(&mut x);
            }
        }
        Op::Allocate(sid, off, len) | Op::Deallocate(sid, off, len) => {
            x.u32(if matches!(op, Op::Allocate(..)) {
                OP_ALLOCATE
            } else {
                OP_DEALLOCATE
            });
            sid.put(&mut x);
            x.u64(*off).u64(*len);
        }
        Op::Seek(sid, off, what) => {
            x.u32(OP_SEEK);
            sid.put(&mut x);
            x.u64(*off).u32(*what % 3);
        }
        Op::Secinfo(n) => {
            x.u32(OP_SECINFO).opaque(&n.bytes());
        }
        Op::SecinfoNoName(s) => {
            x.u32(OP_SECINFO_NO_NAME).u32(*s);
        }
        Op::ReclaimComplete(one) => {
            x.u32(OP_RECLAIM_COMPLETE).bool(*one);
        }
        Op::DelegReturn(sid) => {
            x.u32(OP_DELEGRETURN);
            sid.put(&mut x);
        }
        Op::Raw(op, rest) => {
            x.u32(u32::from(*op % 80)).fixed(rest);
        }
    }
    x.0
}

fn encode_alone(a: &Alone, s: &Session) -> Vec<u8> {
    let mut x = Xdr::default();
    match a {
        Alone::ExchangeId {
            verifier,
            ours,
            flags,
            protect,
            impl_ids,
        } => {
            let owner = if *ours {
                format!("fuzz-client-{}", s.made)
            } else {
                format!("other-{}", verifier % 4)
            };
            x.u32(OP_EXCHANGE_ID)
                .fixed(&[verifier % 3 + 6; 8])
                .opaque(owner.as_bytes())
                .u32(*flags);
            match protect % 3 {
                0 => {
                    x.u32(0);
                }
                1 => {
                    x.u32(1);
                    bitmap(&mut x, &[3, 40]);
                    bitmap(&mut x, &[]);
                }
                _ => {
                    x.u32(u32::from(*protect));
                }
            }
            let n = u32::from(impl_ids % 3);
            x.u32(n);
            for _ in 0..n {
                x.opaque(b"fuzz").opaque(b"fuzz 1").u64(0).u32(0);
            }
        }
        Alone::CreateSession {
            clientid,
            seq_delta,
            flags,
            fore: f,
            back: b,
        } => {
            x.u32(OP_CREATE_SESSION)
                .u64(clientid.get(s))
                .u32(s.cs_seq.wrapping_add(u32::from(*seq_delta % 4)))
                .u32(*flags);
            fore(&mut x, f[0], f[1], f[2], f[3], f[4] % 128);
            fore(&mut x, b[0], b[1], b[2], b[3], b[4] % 8);
            x.u32(0x4000_0000).u32(1).u32(f[5] % 2);
            if f[5] % 2 == 1 {
                // AUTH_SYS parameters.
                x.u32(1).opaque(b"fuzz").u32(0).u32(0).u32(0);
            }
        }
        Alone::DestroySession(ours, sid) => {
            x.u32(OP_DESTROY_SESSION)
                .fixed(if *ours { &s.sid } else { sid });
        }
        Alone::DestroyClientid(c) => {
            x.u32(OP_DESTROY_CLIENTID).u64(c.get(s));
        }
        Alone::BindConn(ours, dir, rdma) => {
            x.u32(OP_BIND_CONN_TO_SESSION)
                .fixed(if *ours { &s.sid } else { &[0; 16] })
                .u32(*dir % 8)
                .bool(*rdma);
        }
    }
    x.0
}

fuzz_target!(|compounds: Vec<Compound>| {
    let t = target();
    let handles = t.fixture.begin();
    let mut s = t.session.lock().unwrap_or_else(|e| e.into_inner());
    for c in compounds.iter().take(4) {
        match c {
            Compound::Sequenced {
                cred,
                slot,
                replay,
                cache,
                ops,
            } => {
                let slot = u32::from(*slot) % (SLOTS + 1);
                let last = s.slots.get(slot as usize).copied().unwrap_or(0);
                let seq = if *replay { last } else { last.wrapping_add(1) };
                let mut x = Xdr::default();
                x.u32(OP_SEQUENCE)
                    .fixed(&s.sid)
                    .u32(seq)
                    .u32(slot)
                    .u32(SLOTS - 1)
                    .bool(*cache);
                let mut all = vec![x.0];
                all.extend(ops.iter().take(24).map(|op| encode_op(op, &s, &handles)));
                let r = call(&t.service, cred, &compound(1, &all));
                match first_status(&r) {
                    Some(0) if !*replay => {
                        if let Some(v) = s.slots.get_mut(slot as usize) {
                            *v = seq;
                        }
                    }
                    Some(NFS4ERR_BADSESSION) => {
                        let fresh = Session::establish(&t.service, Some(&s));
                        *s = fresh;
                    }
                    _ => {}
                }
            }
            Compound::Alone(cred, a) => {
                let op = encode_alone(a, &s);
                let r = call(&t.service, cred, &compound(1, &[op]));
                if let Alone::CreateSession {
                    clientid: ClientId::Ours,
                    seq_delta,
                    ..
                } = a
                    && first_status(&r) == Some(0)
                {
                    s.cs_seq = s.cs_seq.wrapping_add(u32::from(*seq_delta % 4));
                    if let Some(sid) = r.get(20..36).and_then(|b| <[u8; 16]>::try_from(b).ok())
                        && *seq_delta % 4 == 1
                        && s.extra.len() < 256
                    {
                        s.extra.push(sid);
                    }
                }
            }
            Compound::Raw(bytes) => {
                call(&t.service, &root(), bytes);
            }
        }
    }
});
