//! NFSv3 locking end to end: NLM v4 and NSM calls over real TCP and UDP RPC against a whole
//! in-process server, with the test playing the clients' hosts — their lock managers (to
//! receive GRANTED callbacks), their statds (to receive SM_NOTIFY) and their portmappers.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use nfs_server::locks::{Lock, Owner};
use nfs_server_provisioner::LockingConfig;
use oncrpc::portmap::{IPPROTO_TCP, IPPROTO_UDP, Mapping, Portmapper};
use oncrpc::{CallArgs, CallContext, Reply, ReplySender, RpcService};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;

const NLM: u32 = 100_021;
const NSM: u32 = 100_024;

const GRANTED: u32 = 0;
const DENIED: u32 = 1;
const DENIED_NOLOCKS: u32 = 2;
const BLOCKED: u32 = 3;
const DENIED_GRACE_PERIOD: u32 = 4;
const STALE_FH: u32 = 7;
const FAILED: u32 = 9;

const TEST: u32 = 1;
const LOCK: u32 = 2;
const CANCEL: u32 = 3;
const UNLOCK: u32 = 4;
const SHARE: u32 = 20;
const UNSHARE: u32 = 21;
const FREE_ALL: u32 = 23;

/// One lock request as a client's lock manager describes it.
#[derive(Clone)]
struct Req<'a> {
    host: &'a str,
    svid: u32,
    fh: &'a [u8],
    offset: u64,
    len: u64,
}

impl<'a> Req<'a> {
    fn new(host: &'a str, svid: u32, fh: &'a [u8], offset: u64, len: u64) -> Self {
        Self {
            host,
            svid,
            fh,
            offset,
            len,
        }
    }

    /// `nlm4_lock`; the owner handle is derived from host and svid, as Linux does.
    fn alock(&self) -> Vec<u8> {
        let mut v = xdr_opaque(self.host.as_bytes());
        v.extend(xdr_opaque(self.fh));
        v.extend(xdr_opaque(
            format!("{}-{}", self.svid, self.host).as_bytes(),
        ));
        v.extend(words(&[self.svid]));
        v.extend(self.offset.to_be_bytes());
        v.extend(self.len.to_be_bytes());
        v
    }
}

fn xbool(v: bool) -> Vec<u8> {
    words(&[u32::from(v)])
}

fn lock_args(cookie: &[u8], block: bool, exclusive: bool, r: &Req, reclaim: bool) -> Vec<u8> {
    let mut v = xdr_opaque(cookie);
    v.extend(xbool(block));
    v.extend(xbool(exclusive));
    v.extend(r.alock());
    v.extend(xbool(reclaim));
    v.extend(words(&[1]));
    v
}

fn test_args(exclusive: bool, r: &Req) -> Vec<u8> {
    let mut v = xdr_opaque(b"t");
    v.extend(xbool(exclusive));
    v.extend(r.alock());
    v
}

fn cancel_args(block: bool, exclusive: bool, r: &Req) -> Vec<u8> {
    let mut v = xdr_opaque(b"c");
    v.extend(xbool(block));
    v.extend(xbool(exclusive));
    v.extend(r.alock());
    v
}

fn unlock_args(r: &Req) -> Vec<u8> {
    let mut v = xdr_opaque(b"u");
    v.extend(r.alock());
    v
}

fn share_args(host: &str, fh: &[u8], oh: &[u8], mode: u32, access: u32) -> Vec<u8> {
    let mut v = xdr_opaque(b"s");
    v.extend(xdr_opaque(host.as_bytes()));
    v.extend(xdr_opaque(fh));
    v.extend(xdr_opaque(oh));
    v.extend(words(&[mode, access, 0]));
    v
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}

/// Skips the cookie of an `nlm4_res`/`nlm4_testres`: the offset of the status.
fn after_cookie(body: &[u8]) -> usize {
    4 + (be32(body, 0) as usize).div_ceil(4) * 4
}

/// The test's side of an NLM conversation: one TCP connection to the lock manager.
struct Nlm {
    raw: Raw,
    xid: u32,
}

/// The holder of a conflicting lock in a TEST reply: (exclusive, svid, offset, len).
type HolderSeen = (bool, u32, u64, u64);

impl Nlm {
    async fn connect(server: &Server) -> Self {
        Self {
            raw: Raw::connect(server.running.nlm).await,
            xid: 1,
        }
    }

    /// A connection from another loopback address (all of 127/8 reaches the server on
    /// 127.0.0.1), as from another machine.
    async fn connect_from(server: &Server, local: &str) -> Self {
        Self {
            raw: raw_from(local, server.running.nlm).await,
            xid: 1,
        }
    }

    async fn body(&mut self, proc_: u32, args: &[u8]) -> Vec<u8> {
        self.xid += 1;
        match self.raw.call(self.xid, NLM, 4, proc_, args).await {
            ReplyKind::Success(body) => body,
            other => panic!("NLM procedure {proc_}: {other:?}"),
        }
    }

    async fn status(&mut self, proc_: u32, args: &[u8]) -> u32 {
        let body = self.body(proc_, args).await;
        be32(&body, after_cookie(&body))
    }

    async fn lock(&mut self, exclusive: bool, r: &Req<'_>) -> u32 {
        self.status(LOCK, &lock_args(b"ck", false, exclusive, r, false))
            .await
    }

    async fn unlock(&mut self, r: &Req<'_>) -> u32 {
        self.status(UNLOCK, &unlock_args(r)).await
    }

    /// TEST: `Ok(())` if the lock could be had, else the holder.
    async fn test(&mut self, exclusive: bool, r: &Req<'_>) -> Result<(), HolderSeen> {
        let body = self.body(TEST, &test_args(exclusive, r)).await;
        let at = after_cookie(&body);
        match be32(&body, at) {
            GRANTED => Ok(()),
            DENIED => {
                let oh_len = (be32(&body, at + 12) as usize).div_ceil(4) * 4;
                let rest = at + 16 + oh_len;
                Err((
                    be32(&body, at + 4) == 1,
                    be32(&body, at + 8),
                    be64(&body, rest),
                    be64(&body, rest + 8),
                ))
            }
            other => panic!("TEST answered status {other}"),
        }
    }
}

/// A TCP connection to `to` from the loopback address `local`.
async fn raw_from(local: &str, to: SocketAddr) -> Raw {
    Raw::from_stream(connect_from(local, to).await)
}

/// `stat_chge`: SM_NOTIFY's arguments.
fn notify_args(name: &str, state: u32) -> Vec<u8> {
    let mut v = xdr_opaque(name.as_bytes());
    v.extend(words(&[state]));
    v
}

/// Sends SM_NOTIFY over UDP from the loopback address `local`; returns when it is answered.
async fn notify_over_udp(s: &Server, local: &str, name: &str) {
    let udp = UdpSocket::bind(format!("{local}:0")).await.unwrap();
    let call = call_body(40, 2, NSM, 1, 6, &notify_args(name, 7));
    udp.send_to(&call, s.running.statd).await.unwrap();
    let reply = parse_reply(&recv_datagram(&udp).await);
    assert_eq!((reply.xid, reply.kind), (40, ReplyKind::Success(vec![])));
}

/// Our NSM state number, asked over TCP.
async fn nsm_state(statd: &mut Raw) -> u32 {
    let ReplyKind::Success(stat) = statd.call(90, NSM, 1, 1, &xdr_opaque(b"me")).await else {
        panic!("SM_STAT failed")
    };
    be32(&stat, 4)
}

/// A file of the default volume, as an NLM file handle.
async fn file(server: &Server, name: &str, mode: u32) -> Vec<u8> {
    let mut c = server.client().await;
    let root = server.root_fh(VOL).await;
    file_with(&mut c, &root, name, mode, b"data")
        .await
        .data
        .to_vec()
}

#[tokio::test]
async fn locks_conflict_between_hosts_and_between_processes_of_one_host() {
    let s = Server::start().await;
    let f = file(&s, "f", 0o644).await;
    let mut n = Nlm::connect(&s).await;
    let a1 = |off, len| Req::new("host-a", 1, &f, off, len);
    let a2 = |off, len| Req::new("host-a", 2, &f, off, len);
    let b1 = |off, len| Req::new("host-b", 1, &f, off, len);

    assert_eq!(n.lock(true, &a1(0, 100)).await, GRANTED);
    // Another host, and another process of the same host, are both refused.
    assert_eq!(n.test(true, &b1(50, 10)).await, Err((true, 1, 0, 100)));
    assert_eq!(n.lock(true, &b1(50, 10)).await, DENIED);
    assert_eq!(n.lock(false, &a2(99, 1)).await, DENIED);
    assert_eq!(n.test(false, &a2(100, 1)).await, Ok(()));
    // Read locks share; a read lock to the end of the file (length 0) beyond 2^32.
    assert_eq!(n.lock(false, &a1(1 << 40, 0)).await, GRANTED);
    assert_eq!(n.lock(false, &b1(1 << 41, 10)).await, GRANTED);
    assert_eq!(
        n.test(true, &b1(u64::MAX - 5, 1)).await,
        Err((false, 1, 1 << 40, 0))
    );
    // The owner's own test never conflicts with itself.
    assert_eq!(n.test(true, &a1(0, 100)).await, Ok(()));
    // Unlocking part of a range frees exactly that part.
    assert_eq!(n.unlock(&a1(0, 50)).await, GRANTED);
    assert_eq!(n.lock(true, &b1(0, 50)).await, GRANTED);
    assert_eq!(n.lock(true, &b1(50, 1)).await, DENIED);
    assert_eq!(n.unlock(&a1(0, 0)).await, GRANTED);
    assert_eq!(n.lock(true, &b1(50, 1)).await, GRANTED);
}

#[tokio::test]
async fn an_nfsv4_lock_in_the_shared_table_conflicts_with_nlm() {
    let s = Server::start().await;
    let f = file(&s, "f", 0o644).await;
    let v4 = Owner::V4 {
        clientid: 7,
        owner: b"v4-owner".to_vec(),
    };
    let (start, end) = Lock::range(10, 10);
    s.running
        .locks
        .lock(
            &f,
            Lock {
                owner: v4.clone(),
                start,
                end,
                write: true,
            },
        )
        .unwrap();
    let mut n = Nlm::connect(&s).await;
    let r = Req::new("host-a", 1, &f, 0, 0);
    assert_eq!(n.test(false, &r).await, Err((true, 0, 10, 10)));
    assert_eq!(n.lock(false, &r).await, DENIED);
    s.running.locks.release_all(|o| o == &v4);
    assert_eq!(n.lock(false, &r).await, GRANTED);
    // And the other way round: the v4 side sees the NLM lock.
    let conflict = s.running.locks.test(
        &f,
        &Lock {
            owner: v4,
            start: 0,
            end: 1,
            write: true,
        },
    );
    assert!(matches!(
        conflict.map(|l| l.owner),
        Some(Owner::Nlm { svid: 1, .. })
    ));
}

#[tokio::test]
async fn stale_handles_and_files_the_caller_cannot_write_are_refused() {
    let s = Server::start().await;
    let f = file(&s, "private", 0o600).await;
    let mut n = Nlm::connect(&s).await;
    let bogus = vec![0xab; 40];
    assert_eq!(
        n.lock(false, &Req::new("h", 1, &bogus, 0, 0)).await,
        STALE_FH
    );
    // uid 1000 may neither read nor write root's 0600 file.
    let args = lock_args(b"x", false, true, &Req::new("h", 1, &f, 0, 0), false);
    let mut cred = words(&[1]);
    cred.extend(xdr_opaque(b"h"));
    cred.extend(words(&[1000, 1000, 0]));
    n.raw
        .send(&record(&call_with_cred(
            77, 2, NLM, 4, LOCK, 1, &cred, &args,
        )))
        .await;
    let ReplyKind::Success(body) = n.raw.recv().await.kind else {
        panic!("LOCK as uid 1000 was not answered")
    };
    assert_eq!(be32(&body, after_cookie(&body)), FAILED);
    // Root may.
    assert_eq!(n.lock(true, &Req::new("h", 1, &f, 0, 0)).await, GRANTED);
}

#[tokio::test]
async fn malformed_calls_get_garbage_args_and_the_connection_lives_on() {
    let s = Server::start().await;
    let f = file(&s, "f", 0o644).await;
    let good = lock_args(b"ck", false, true, &Req::new("h", 1, &f, 0, 0), false);
    let mut bad_bool = good.clone();
    bad_bool[8..12].copy_from_slice(&7u32.to_be_bytes());
    let mut huge_name = xdr_opaque(b"ck");
    huge_name.extend(words(&[0, 1]));
    huge_name.extend(xdr_opaque(&vec![b'n'; 5000]));
    let mut raw = Raw::connect(s.running.nlm).await;
    let mut xid = 100;
    for proc_ in [TEST, LOCK, CANCEL, UNLOCK, SHARE, UNSHARE, FREE_ALL, 22] {
        xid += 1;
        let got = raw.call(xid, NLM, 4, proc_, &[0, 0, 0, 0, 0]).await;
        assert_eq!(got, ReplyKind::GarbageArgs, "procedure {proc_}");
    }
    for args in [&good[..good.len() - 3], &bad_bool, &huge_name] {
        for proc_ in [LOCK, 22] {
            xid += 1;
            let got = raw.call(xid, NLM, 4, proc_, args).await;
            assert_eq!(got, ReplyKind::GarbageArgs, "procedure {proc_}");
        }
    }
    assert_eq!(
        raw.call(1, NLM, 4, 0, &[]).await,
        ReplyKind::Success(vec![])
    );
    assert_eq!(
        raw.call(2, NLM, 1, 0, &[]).await,
        ReplyKind::ProgMismatch { low: 4, high: 4 }
    );
    let mut statd = Raw::connect(s.running.statd).await;
    for proc_ in 1..=6 {
        if proc_ == 5 {
            continue; // SM_SIMU_CRASH has no arguments
        }
        assert_eq!(
            statd.call(proc_, NSM, 1, proc_, &[0, 0, 0]).await,
            ReplyKind::GarbageArgs
        );
    }
    // The same over UDP.
    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    udp.send_to(&call_body(9, 2, NSM, 1, 6, &[1, 2]), s.running.statd)
        .await
        .unwrap();
    let reply = recv_datagram(&udp).await;
    assert_eq!(parse_reply(&reply).kind, ReplyKind::GarbageArgs);
    // Still serving.
    let mut n = Nlm::connect(&s).await;
    assert_eq!(n.lock(true, &Req::new("h", 1, &f, 0, 0)).await, GRANTED);
}

async fn recv_datagram(udp: &UdpSocket) -> Vec<u8> {
    let mut buf = vec![0u8; 65536];
    let n = tokio::time::timeout(Duration::from_secs(5), udp.recv(&mut buf))
        .await
        .expect("a UDP reply within 5 s")
        .unwrap();
    buf.truncate(n);
    buf
}

#[tokio::test]
async fn lock_manager_and_statd_are_registered_with_the_portmapper() {
    let s = Server::start().await;
    let mut pm = Raw::connect(s.running.portmap.unwrap()).await;
    for (prog, vers, prot, want) in [
        (NLM, 4, IPPROTO_TCP, s.running.nlm.port()),
        (NLM, 4, IPPROTO_UDP, s.running.nlm.port()),
        (NSM, 1, IPPROTO_TCP, s.running.statd.port()),
        (NSM, 1, IPPROTO_UDP, s.running.statd.port()),
    ] {
        let got = pm
            .call(prog, 100_000, 2, 3, &words(&[prog, vers, prot, 0]))
            .await;
        assert_eq!(
            got,
            ReplyKind::Success(words(&[u32::from(want)])),
            "{prog}/{prot}"
        );
    }
}

/// A client host as the server sees it from outside: a portmapper and a lock manager (NLM
/// GRANTED callbacks) on one TCP port, and a statd over UDP; every call they receive is
/// forwarded to the test.
struct ClientHost {
    portmap_port: u16,
    calls: mpsc::UnboundedReceiver<(u32, u32, Vec<u8>)>,
}

/// Records calls (program, procedure, arguments) and answers NLM GRANTED with NLM4_GRANTED.
struct Recorder {
    prog: u32,
    tx: mpsc::UnboundedSender<(u32, u32, Vec<u8>)>,
}

impl RpcService for Recorder {
    fn program(&self) -> u32 {
        self.prog
    }
    fn versions(&self) -> (u32, u32) {
        (1, 4)
    }
    fn call(&self, ctx: CallContext, args: CallArgs, reply: ReplySender) {
        let _ = self.tx.send((self.prog, ctx.proc_, args.bytes().to_vec()));
        let body = if self.prog == NLM {
            let mut v = xdr_opaque(b"");
            v.extend(words(&[GRANTED]));
            v
        } else {
            Vec::new()
        };
        reply.send(Reply::Success(body));
    }
}

impl ClientHost {
    async fn start() -> Self {
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = tcp.local_addr().unwrap().port();
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let statd_port = udp.local_addr().unwrap().port();
        let (tx, calls) = mpsc::unbounded_channel();
        let map = |prog, vers, prot, port: u16| Mapping {
            prog,
            vers,
            prot,
            port: u32::from(port),
        };
        let services: Vec<Arc<dyn RpcService>> = vec![
            Arc::new(Portmapper::new(vec![
                map(NLM, 4, IPPROTO_TCP, port),
                map(NSM, 1, IPPROTO_UDP, statd_port),
            ])),
            Arc::new(Recorder {
                prog: NLM,
                tx: tx.clone(),
            }),
            Arc::new(Recorder { prog: NSM, tx }),
        ];
        let server = Arc::new(oncrpc::Server::new(services, 1 << 20, 16));
        tokio::spawn(Arc::clone(&server).serve(tcp));
        tokio::spawn(server.serve_udp(udp));
        Self {
            portmap_port: port,
            calls,
        }
    }

    fn locking(&self) -> LockingConfig {
        LockingConfig {
            callback_portmap_port: self.portmap_port,
            ..LockingConfig::default()
        }
    }

    async fn next_call(&mut self, within: Duration) -> Option<(u32, u32, Vec<u8>)> {
        tokio::time::timeout(within, self.calls.recv())
            .await
            .ok()
            .flatten()
    }
}

#[tokio::test]
async fn a_blocked_lock_is_granted_with_a_callback_once_the_holder_unlocks() {
    let mut host_b = ClientHost::start().await;
    let s = Server::with_locking(host_b.locking()).await;
    let f = file(&s, "f", 0o644).await;
    let mut n = Nlm::connect(&s).await;
    let a = Req::new("host-a", 1, &f, 0, 0);
    let b = Req::new("host-b", 9, &f, 10, 5);
    assert_eq!(n.lock(true, &a).await, GRANTED);
    let blocking = lock_args(b"wait-for-me", true, true, &b, false);
    assert_eq!(n.status(LOCK, &blocking).await, BLOCKED);
    // A retransmission is still just blocked.
    assert_eq!(n.status(LOCK, &blocking).await, BLOCKED);
    assert!(host_b.next_call(Duration::from_millis(300)).await.is_none());
    assert_eq!(n.unlock(&a).await, GRANTED);
    let (prog, proc_, args) = host_b
        .next_call(Duration::from_secs(10))
        .await
        .expect("a GRANTED callback");
    assert_eq!((prog, proc_), (NLM, 5));
    // nlm4_testargs: the cookie of the blocked LOCK, exclusive, and its lock.
    let mut want = xdr_opaque(b"wait-for-me");
    want.extend(xbool(true));
    want.extend(b.alock());
    assert_eq!(args, want);
    assert_eq!(n.test(true, &a).await, Err((true, 9, 10, 5)));
    // Exactly one callback.
    assert!(host_b.next_call(Duration::from_millis(500)).await.is_none());
}

#[tokio::test]
async fn a_cancelled_blocked_lock_is_never_granted() {
    let mut host_b = ClientHost::start().await;
    let s = Server::with_locking(host_b.locking()).await;
    let f = file(&s, "f", 0o644).await;
    let mut n = Nlm::connect(&s).await;
    let a = Req::new("host-a", 1, &f, 0, 0);
    let b = Req::new("host-b", 9, &f, 0, 0);
    assert_eq!(n.lock(true, &a).await, GRANTED);
    assert_eq!(
        n.status(LOCK, &lock_args(b"w", true, false, &b, false))
            .await,
        BLOCKED
    );
    assert_eq!(
        n.status(CANCEL, &cancel_args(true, false, &b)).await,
        GRANTED
    );
    assert_eq!(n.unlock(&a).await, GRANTED);
    assert!(host_b.next_call(Duration::from_secs(1)).await.is_none());
    assert_eq!(n.test(true, &Req::new("host-c", 1, &f, 0, 0)).await, Ok(()));
}

#[tokio::test]
async fn free_all_releases_every_lock_and_share_of_the_host() {
    let s = Server::start().await;
    let f = file(&s, "f", 0o644).await;
    let g = file(&s, "g", 0o644).await;
    let mut n = Nlm::connect(&s).await;
    assert_eq!(
        n.lock(true, &Req::new("host-a", 1, &f, 0, 0)).await,
        GRANTED
    );
    assert_eq!(
        n.lock(true, &Req::new("host-a", 2, &g, 0, 0)).await,
        GRANTED
    );
    assert_eq!(n.lock(true, &Req::new("host-c", 1, &g, 0, 0)).await, DENIED);
    // Deny write, access read.
    assert_eq!(
        n.status(SHARE, &share_args("host-a", &f, b"o", 2, 1)).await,
        GRANTED
    );
    assert_eq!(
        n.status(SHARE, &share_args("host-c", &f, b"o", 0, 2)).await,
        DENIED
    );
    let mut notify = xdr_opaque(b"host-a");
    notify.extend(words(&[3]));
    assert!(n.body(FREE_ALL, &notify).await.is_empty());
    assert_eq!(
        n.lock(true, &Req::new("host-c", 1, &f, 0, 0)).await,
        GRANTED
    );
    assert_eq!(
        n.lock(true, &Req::new("host-c", 1, &g, 0, 0)).await,
        GRANTED
    );
    assert_eq!(
        n.status(SHARE, &share_args("host-c", &f, b"o", 0, 2)).await,
        GRANTED
    );
}

#[tokio::test]
async fn share_reservations_conflict_by_access_and_deny_mode() {
    let s = Server::start().await;
    let f = file(&s, "f", 0o644).await;
    let mut n = Nlm::connect(&s).await;
    // a reads and denies writers; b may read but not write; after UNSHARE b may write.
    assert_eq!(
        n.status(SHARE, &share_args("a", &f, b"1", 2, 1)).await,
        GRANTED
    );
    assert_eq!(
        n.status(SHARE, &share_args("b", &f, b"1", 0, 1)).await,
        GRANTED
    );
    assert_eq!(
        n.status(SHARE, &share_args("b", &f, b"2", 0, 2)).await,
        DENIED
    );
    // A reader that denies reading conflicts with the readers there.
    assert_eq!(
        n.status(SHARE, &share_args("c", &f, b"1", 1, 1)).await,
        DENIED
    );
    assert_eq!(
        n.status(UNSHARE, &share_args("a", &f, b"1", 2, 1)).await,
        GRANTED
    );
    assert_eq!(
        n.status(SHARE, &share_args("b", &f, b"2", 0, 2)).await,
        GRANTED
    );
}

#[tokio::test]
async fn sm_notify_over_udp_releases_only_the_rebooted_hosts_locks() {
    let s = Server::start().await;
    let f = file(&s, "f", 0o644).await;
    let mut n = Nlm::connect(&s).await;
    assert_eq!(
        n.lock(true, &Req::new("Host-A", 1, &f, 0, 10)).await,
        GRANTED
    );
    assert_eq!(
        n.lock(true, &Req::new("host-b", 1, &f, 10, 10)).await,
        GRANTED
    );
    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    // SM_STAT: our state is odd (up).
    udp.send_to(
        &call_body(1, 2, NSM, 1, 1, &xdr_opaque(b"x")),
        s.running.statd,
    )
    .await
    .unwrap();
    let ReplyKind::Success(stat) = parse_reply(&recv_datagram(&udp).await).kind else {
        panic!("SM_STAT failed")
    };
    assert_eq!((be32(&stat, 0), be32(&stat, 4) % 2), (0, 1));
    // statd's name for the host may differ in case from the kernel's caller_name.
    let mut args = xdr_opaque(b"host-a");
    args.extend(words(&[5]));
    udp.send_to(&call_body(2, 2, NSM, 1, 6, &args), s.running.statd)
        .await
        .unwrap();
    let reply = parse_reply(&recv_datagram(&udp).await);
    assert_eq!((reply.xid, reply.kind), (2, ReplyKind::Success(vec![])));
    assert_eq!(
        n.test(true, &Req::new("host-c", 1, &f, 0, 10)).await,
        Ok(())
    );
    assert_eq!(
        n.test(true, &Req::new("host-c", 1, &f, 0, 0)).await,
        Err((true, 1, 10, 10))
    );
}

#[tokio::test]
async fn during_grace_only_reclaims_are_granted() {
    let s = Server::with_locking(LockingConfig::default()).await;
    // As after a restart that only NFSv4 clients knew of: the period can end early.
    s.running.grace.start(Duration::from_secs(60));
    let f = file(&s, "f", 0o644).await;
    let mut n = Nlm::connect(&s).await;
    let a = Req::new("host-a", 1, &f, 0, 0);
    let b = Req::new("host-b", 1, &f, 0, 0);
    assert_eq!(n.lock(true, &b).await, DENIED_GRACE_PERIOD);
    let body = n.body(TEST, &test_args(true, &b)).await;
    assert_eq!(be32(&body, after_cookie(&body)), DENIED_GRACE_PERIOD);
    assert_eq!(
        n.status(SHARE, &share_args("host-b", &f, b"o", 0, 1)).await,
        DENIED_GRACE_PERIOD
    );
    assert_eq!(
        n.status(LOCK, &lock_args(b"r", false, true, &a, true))
            .await,
        GRANTED
    );
    s.running.grace.end();
    assert_eq!(n.lock(true, &b).await, DENIED);
    assert_eq!(n.test(true, &b).await, Err((true, 1, 0, 0)));
}

#[tokio::test]
async fn a_restarted_server_notifies_lock_holders_with_a_larger_state() {
    let mut host = ClientHost::start().await;
    let first = Server::with_locking(host.locking()).await;
    let f = file(&first, "f", 0o644).await;
    let mut statd = Raw::connect(first.running.statd).await;
    let ReplyKind::Success(stat) = statd.call(1, NSM, 1, 1, &xdr_opaque(b"me")).await else {
        panic!("SM_STAT failed")
    };
    let old_state = be32(&stat, 4);
    let mut n = Nlm::connect(&first).await;
    assert_eq!(
        n.lock(true, &Req::new("holder", 1, &f, 0, 0)).await,
        GRANTED
    );
    // Nobody was notified at the first start (no host held locks before it).
    assert!(host.next_call(Duration::from_millis(300)).await.is_none());

    // The hosts that held locks get the whole grace period (the default 90 s here).
    let second = first.restart_with_locking(host.locking()).await;
    let (prog, proc_, args) = host
        .next_call(Duration::from_secs(10))
        .await
        .expect("SM_NOTIFY from the restarted server");
    assert_eq!((prog, proc_), (NSM, 6));
    // stat_chge: our name, then the new state.
    let name_len = be32(&args, 0) as usize;
    let name = &args[4..4 + name_len];
    assert_eq!(name, nfs_server::nsm::local_host_name());
    let new_state = be32(&args, 4 + name_len.div_ceil(4) * 4);
    assert!(new_state > old_state, "{new_state} <= {old_state}");
    assert_eq!(new_state % 2, 1);
    // The notified host reclaims its lock during the grace period; nobody else gets in.
    let mut n = Nlm::connect(&second).await;
    let holder = Req::new("holder", 1, &f, 0, 0);
    assert_eq!(
        n.status(LOCK, &lock_args(b"r", false, true, &holder, true))
            .await,
        GRANTED
    );
    assert_eq!(
        n.lock(true, &Req::new("other", 1, &f, 0, 0)).await,
        DENIED_GRACE_PERIOD
    );
}

#[tokio::test]
async fn junk_datagrams_are_dropped_and_the_udp_listener_keeps_answering() {
    let s = Server::start().await;
    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    // Too short for a header, a reply instead of a call, an unknown program, a wrong version.
    for junk in [
        vec![1, 2],
        words(&[5, 1, 0, 0, 0, 0]),
        call_body(6, 2, 400_000, 1, 0, &[]),
        call_body(7, 2, NSM, 2, 0, &[]),
    ] {
        udp.send_to(&junk, s.running.statd).await.unwrap();
    }
    let mut kinds = Vec::new();
    for _ in 0..2 {
        let r = parse_reply(&recv_datagram(&udp).await);
        kinds.push((r.xid, r.kind));
    }
    kinds.sort_by_key(|k| k.0);
    assert_eq!(
        kinds,
        vec![
            (6, ReplyKind::ProgUnavail),
            (7, ReplyKind::ProgMismatch { low: 1, high: 1 })
        ]
    );
    // NLM answers over UDP too.
    udp.send_to(&call_body(8, 2, NLM, 4, 0, &[]), s.running.nlm)
        .await
        .unwrap();
    let r = parse_reply(&recv_datagram(&udp).await);
    assert_eq!((r.xid, r.kind), (8, ReplyKind::Success(vec![])));
}

#[tokio::test]
async fn random_arguments_to_every_procedure_never_break_the_lock_manager() {
    let s = Server::start().await;
    let f = file(&s, "f", 0o644).await;
    let g = file(&s, "g", 0o644).await;
    let mut rng = Rng::from_clock();
    let mut nlm = Raw::connect(s.running.nlm).await;
    let mut statd = Raw::connect(s.running.statd).await;
    let valid = lock_args(b"ck", false, true, &Req::new("h", 1, &f, 0, 0), false);
    for xid in 0..400u32 {
        // Random bytes, or a valid LOCK with some bytes flipped or cut short.
        let args = match rng.next_u64() % 3 {
            0 => {
                let n = (rng.next_u64() % 200) as usize;
                rng.bytes(n)
            }
            1 => {
                let mut a = valid.clone();
                let at = (rng.next_u64() as usize) % a.len();
                a[at] ^= rng.next_u64() as u8 | 1;
                a
            }
            _ => valid[..(rng.next_u64() as usize) % valid.len()].to_vec(),
        };
        let proc_ = (rng.next_u64() % 25) as u32;
        let got = nlm.call(xid, NLM, 4, proc_, &args).await;
        assert!(
            matches!(
                got,
                ReplyKind::Success(_) | ReplyKind::GarbageArgs | ReplyKind::ProcUnavail
            ),
            "NLM procedure {proc_}: {got:?}"
        );
        // SM_SIMU_CRASH (5) only raises our state; everything else may be junk.
        let proc_ = [0, 1, 2, 3, 4, 6, 7][(rng.next_u64() % 7) as usize];
        let got = statd.call(xid, NSM, 1, proc_, &args).await;
        assert!(
            matches!(
                got,
                ReplyKind::Success(_) | ReplyKind::GarbageArgs | ReplyKind::ProcUnavail
            ),
            "NSM procedure {proc_}: {got:?}"
        );
    }
    // Whatever the junk did, the lock manager still works.
    let mut n = Nlm::connect(&s).await;
    assert_eq!(n.lock(true, &Req::new("z", 1, &g, 0, 0)).await, GRANTED);
    assert_eq!(n.lock(true, &Req::new("y", 1, &g, 0, 0)).await, DENIED);
}

#[tokio::test]
async fn sm_notify_is_honoured_only_from_the_address_the_holders_locks_came_from() {
    let s = Server::start().await;
    let f = file(&s, "f", 0o644).await;
    // host-a locks from 127.0.0.3; the server listens on 127.0.0.1, so that is a remote
    // host, and so is 127.0.0.2.
    let mut a = Nlm::connect_from(&s, "127.0.0.3").await;
    let held = Req::new("host-a", 1, &f, 0, 10);
    assert_eq!(a.lock(true, &held).await, GRANTED);
    let mut n = Nlm::connect(&s).await;
    let probe = Req::new("host-c", 1, &f, 0, 0);
    assert_eq!(n.test(true, &probe).await, Err((true, 1, 0, 10)));

    // Naming host-a from elsewhere: answered, but the lock stays (UDP and TCP alike).
    notify_over_udp(&s, "127.0.0.2", "host-a").await;
    let mut foreign = raw_from("127.0.0.2", s.running.statd).await;
    assert_eq!(
        foreign
            .call(41, NSM, 1, 6, &notify_args("HOST-A.example.com", 7))
            .await,
        ReplyKind::Success(vec![])
    );
    assert_eq!(n.test(true, &probe).await, Err((true, 1, 0, 10)));
    // A name nobody holds locks under releases nothing either.
    notify_over_udp(&s, "127.0.0.2", "unknown-host").await;
    assert_eq!(n.test(true, &probe).await, Err((true, 1, 0, 10)));

    // From the holder's own address (statd's name may differ in case and domain): released.
    notify_over_udp(&s, "127.0.0.3", "HOST-A.example.com").await;
    assert_eq!(n.test(true, &probe).await, Ok(()));
    // host-a may lock again afterwards, and a name statd knows it by only as an address
    // releases it from that address too.
    assert_eq!(a.lock(true, &held).await, GRANTED);
    notify_over_udp(&s, "127.0.0.3", "127.0.0.3").await;
    assert_eq!(n.test(true, &probe).await, Ok(()));
}

#[tokio::test]
async fn free_all_and_sm_simu_crash_are_taken_only_from_a_local_peer() {
    let s = Server::start().await;
    let f = file(&s, "f", 0o644).await;
    let mut n = Nlm::connect(&s).await;
    let held = Req::new("host-a", 1, &f, 0, 0);
    let probe = Req::new("host-c", 1, &f, 0, 0);
    assert_eq!(n.lock(true, &held).await, GRANTED);

    // From 127.0.0.2 (not the server's address): answered, and nothing happens.
    let mut foreign = Nlm::connect_from(&s, "127.0.0.2").await;
    assert!(
        foreign
            .body(FREE_ALL, &notify_args("host-a", 3))
            .await
            .is_empty()
    );
    assert_eq!(n.test(true, &probe).await, Err((true, 1, 0, 0)));
    let mut statd = Raw::connect(s.running.statd).await;
    let before = nsm_state(&mut statd).await;
    let mut foreign_statd = raw_from("127.0.0.2", s.running.statd).await;
    assert_eq!(
        foreign_statd.call(50, NSM, 1, 5, &[]).await,
        ReplyKind::Success(vec![])
    );
    assert_eq!(nsm_state(&mut statd).await, before);

    // From the server's own address: both act.
    assert_eq!(
        statd.call(51, NSM, 1, 5, &[]).await,
        ReplyKind::Success(vec![])
    );
    let after = nsm_state(&mut statd).await;
    assert_eq!((after - before, after % 2), (2, 1));
    assert!(n.body(FREE_ALL, &notify_args("host-a", 3)).await.is_empty());
    assert_eq!(n.test(true, &probe).await, Ok(()));
}

/// Waiting (blocked) lock requests are bounded: beyond the cap, a blocking LOCK that cannot be
/// granted is answered DENIED_NOLOCKS instead of queuing another waiter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_lock_requests_are_bounded() {
    let s = Server::start().await;
    let f = file(&s, "f", 0o644).await;
    let mut n = Nlm::connect(&s).await;
    assert_eq!(
        n.lock(true, &Req::new("holder", 1, &f, 0, 0)).await,
        GRANTED
    );
    let max = nfs_server::nlm::MAX_BLOCKED as u32;
    for svid in 0..max {
        // Distinct owners, each waiting for the whole file.
        let r = Req::new("waiter", 10 + svid, &f, 0, 0);
        assert_eq!(
            n.status(LOCK, &lock_args(b"ck", true, true, &r, false))
                .await,
            BLOCKED,
            "waiter {svid}"
        );
    }
    let r = Req::new("waiter", 10 + max, &f, 0, 0);
    assert_eq!(
        n.status(LOCK, &lock_args(b"ck", true, true, &r, false))
            .await,
        DENIED_NOLOCKS
    );
    // A non-blocking request is still answered as before.
    assert_eq!(n.lock(true, &r).await, DENIED);
}

/// One owner taking countless disjoint ranges of one file cannot make the table grow without
/// bound (or every lock on the file slower): beyond the cap, DENIED_NOLOCKS; unlocking makes
/// room again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_ranges_on_a_file_are_bounded() {
    let s = Server::start().await;
    let f = file(&s, "f", 0o644).await;
    let mut n = Nlm::connect(&s).await;
    let max = nfs_server::locks::MAX_RANGES_PER_FILE as u64;
    let mut granted = 0;
    for i in 0..max {
        match n.lock(true, &Req::new("greedy", 1, &f, i * 2, 1)).await {
            GRANTED => granted += 1,
            DENIED_NOLOCKS => break,
            other => panic!("lock {i}: status {other}"),
        }
    }
    assert!(
        granted < max && granted + 2 >= max,
        "{granted} ranges granted with a cap of {max}"
    );
    assert_eq!(n.unlock(&Req::new("greedy", 1, &f, 0, 0)).await, GRANTED);
    assert_eq!(
        n.lock(true, &Req::new("greedy", 1, &f, 0, 1)).await,
        GRANTED
    );
}
