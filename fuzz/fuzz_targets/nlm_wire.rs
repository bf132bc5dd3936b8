//! Fuzzes the NLM v4 lock manager and the NSM status monitor through their RPC services, as
//! the server runs them (on a tokio runtime, blocking work on its pool): each input is a
//! short sequence of TEST, LOCK, NM_LOCK, CANCEL, UNLOCK, GRANTED, SHARE, UNSHARE and
//! FREE_ALL calls on real file handles of the fixture (or damaged ones), with hosts, owners
//! and ranges from small sets so the calls meet each other's locks, blocking requests and
//! shares; plus SM_* calls and raw arguments for every procedure. Any input must produce
//! replies, never a panic (a panic on a worker thread aborts too: libFuzzer's panic hook).
#![no_main]

use std::sync::{Arc, OnceLock};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use nfs_fuzz::{Cred, Fh, Fixture, Xdr};
use nfs_server::grace::Grace;
use nfs_server::locks::LockTable;
use nfs_server::nlm::{NlmConfig, NlmService, NlmState};
use nfs_server::nsm::{Nsm, NsmService};
use oncrpc::{CallArgs, ReplySender, RpcService};

struct Target {
    fixture: Fixture,
    runtime: tokio::runtime::Runtime,
    nlm: NlmService,
    nsm: NsmService,
    state: Arc<NlmState>,
}

fn target() -> &'static Target {
    static TARGET: OnceLock<Target> = OnceLock::new();
    TARGET.get_or_init(|| {
        let fixture = Fixture::new();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(4)
            .enable_all()
            .build()
            .expect("runtime");
        let nsm = Arc::new(Nsm::open(fixture.store.registry().state_dir()).expect("NSM state"));
        let state = {
            let _in = runtime.enter();
            NlmState::new(
                Arc::clone(&fixture.store),
                Arc::new(LockTable::new()),
                Arc::new(Grace::none()),
                Arc::clone(&nsm),
                NlmConfig {
                    // Nothing listens there: GRANTED callbacks fail at once.
                    callback_portmap_port: 9,
                    our_name: b"fuzz-server".to_vec(),
                    bind: std::net::Ipv4Addr::UNSPECIFIED.into(),
                },
            )
        };
        Target {
            nlm: NlmService::new(Arc::clone(&state)),
            nsm: NsmService::new(nsm, Arc::clone(&state)),
            fixture,
            runtime,
            state,
        }
    })
}

/// An `nlm4_lock` from small sets of hosts, owners and ranges.
#[derive(Arbitrary, Debug)]
struct Lock {
    host: u8,
    fh: Fh,
    oh: u8,
    svid: u8,
    offset: Span,
    len: Span,
}

#[derive(Arbitrary, Debug)]
enum Span {
    Small(u8),
    Any(u64),
}

impl Span {
    fn get(&self) -> u64 {
        match self {
            Span::Small(v) => u64::from(v % 16),
            Span::Any(v) => *v,
        }
    }
}

fn host(n: u8) -> Vec<u8> {
    match n % 6 {
        5 => b"fuzz-server".to_vec(),
        4 => b"HOST-A.example".to_vec(),
        n => vec![b'h', b'o', b's', b't', b'-', b'a' + n],
    }
}

impl Lock {
    fn put(&self, x: &mut Xdr, handles: &[Vec<u8>]) {
        x.opaque(&host(self.host))
            .opaque(&self.fh.pick(handles))
            .opaque(&[self.oh % 4])
            .u32(u32::from(self.svid % 4))
            .u64(self.offset.get())
            .u64(self.len.get());
    }
}

#[derive(Arbitrary, Debug)]
struct Share {
    host: u8,
    fh: Fh,
    oh: u8,
    mode: u8,
    access: u8,
    reclaim: bool,
}

impl Share {
    fn put(&self, x: &mut Xdr, handles: &[Vec<u8>]) {
        x.opaque(b"c")
            .opaque(&host(self.host))
            .opaque(&self.fh.pick(handles))
            .opaque(&[self.oh % 4])
            .u32(u32::from(self.mode % 5))
            .u32(u32::from(self.access % 5))
            .bool(self.reclaim);
    }
}

#[derive(Arbitrary, Debug)]
enum Nlm {
    Test(bool, Lock),
    Lock {
        block: bool,
        exclusive: bool,
        lock: Lock,
        reclaim: bool,
        /// NM_LOCK (unmonitored) instead of LOCK.
        nm: bool,
    },
    Cancel(bool, bool, Lock),
    Unlock(Lock),
    Granted(bool, Lock),
    Share(Share),
    Unshare(Share),
    FreeAll(u8, u32),
    /// Any NLM procedure with raw arguments.
    Raw(u8, Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum Sm {
    Stat(u8),
    Mon {
        mon: u8,
        me: u8,
        prog: u32,
        vers: u32,
        proc_: u32,
    },
    Unmon {
        mon: u8,
        me: u8,
    },
    UnmonAll(u8),
    SimuCrash,
    Notify(u8, u32),
    /// Any NSM procedure with raw arguments.
    Raw(u8, Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum Call {
    Nlm(Cred, Nlm),
    Sm(Sm),
}

fn encode_nlm(c: &Nlm, handles: &[Vec<u8>]) -> (u32, Vec<u8>) {
    let mut x = Xdr::default();
    x.opaque(b"cookie");
    let p = match c {
        Nlm::Test(exclusive, l) => {
            x.bool(*exclusive);
            l.put(&mut x, handles);
            1
        }
        Nlm::Lock {
            block,
            exclusive,
            lock,
            reclaim,
            nm,
        } => {
            x.bool(*block).bool(*exclusive);
            lock.put(&mut x, handles);
            x.bool(*reclaim).u32(1);
            if *nm { 22 } else { 2 }
        }
        Nlm::Cancel(block, exclusive, l) => {
            x.bool(*block).bool(*exclusive);
            l.put(&mut x, handles);
            3
        }
        Nlm::Unlock(l) => {
            l.put(&mut x, handles);
            4
        }
        Nlm::Granted(exclusive, l) => {
            x.bool(*exclusive);
            l.put(&mut x, handles);
            5
        }
        Nlm::Share(s) => {
            s.put(&mut x, handles);
            20
        }
        Nlm::Unshare(s) => {
            s.put(&mut x, handles);
            21
        }
        Nlm::FreeAll(h, state) => {
            // nlm4_notify has no cookie.
            x = Xdr::default();
            x.opaque(&host(*h)).u32(*state);
            23
        }
        Nlm::Raw(p, bytes) => {
            x = Xdr::default();
            x.fixed(bytes);
            u32::from(*p % 25)
        }
    };
    (p, x.0)
}

fn encode_sm(c: &Sm) -> (u32, Vec<u8>) {
    let mut x = Xdr::default();
    let my_id = |x: &mut Xdr, me: u8| {
        x.opaque(&host(me)).u32(100_021).u32(4).u32(16);
    };
    let p = match c {
        Sm::Stat(h) => {
            x.opaque(&host(*h));
            1
        }
        Sm::Mon {
            mon,
            me,
            prog,
            vers,
            proc_,
        } => {
            x.opaque(&host(*mon))
                .opaque(&host(*me))
                .u32(*prog)
                .u32(*vers)
                .u32(*proc_)
                .fixed(&[0; 16]);
            2
        }
        Sm::Unmon { mon, me } => {
            x.opaque(&host(*mon));
            my_id(&mut x, *me);
            3
        }
        Sm::UnmonAll(me) => {
            my_id(&mut x, *me);
            4
        }
        Sm::SimuCrash => 5,
        Sm::Notify(h, state) => {
            x.opaque(&host(*h)).u32(*state);
            6
        }
        Sm::Raw(p, bytes) => {
            x.fixed(bytes);
            u32::from(*p % 8)
        }
    };
    (p, x.0)
}

/// Calls `service` as the server does and waits for its reply.
fn call(t: &Target, service: &dyn RpcService, cred: &Cred, vers: u32, proc_: u32, args: Vec<u8>) {
    let (reply, mut rx) = ReplySender::detached();
    {
        let _in = t.runtime.enter();
        service.call(cred.context(vers, proc_), CallArgs::new(args, 0), reply);
    }
    rx.blocking_recv().expect("every call is answered");
}

fuzz_target!(|calls: Vec<Call>| {
    let t = target();
    let handles = t.fixture.begin();
    for c in calls.iter().take(16) {
        match c {
            Call::Nlm(cred, n) => {
                let (p, args) = encode_nlm(n, &handles);
                call(t, &t.nlm, cred, 4, p, args);
            }
            Call::Sm(s) => {
                let (p, args) = encode_sm(s);
                call(t, &t.nsm, &Cred::Root, 1, p, args);
            }
        }
    }
    // Every host's locks go now and then, so the table does not only grow.
    if t.fixture.runs() % 1024 == 0 {
        for h in 0..6 {
            t.state.free_all(&host(h));
        }
    }
});
