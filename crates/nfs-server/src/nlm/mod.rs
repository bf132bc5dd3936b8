//! NLM v4, the NFSv3 lock manager (program 100021 version 4; XNFS, RFC 1813 appendix II).
//!
//! This module owns the lock manager's behaviour on top of the shared byte-range table
//! ([`crate::locks`], which NFSv4.1 uses too, so v3 and v4 locks conflict): TEST, LOCK
//! (including blocking requests, granted later through an NLM_GRANTED callback to the client's
//! lock manager), CANCEL, UNLOCK, the DOS share reservations of SHARE/UNSHARE, NM_LOCK and
//! FREE_ALL, the grace period after a restart (only reclaims are granted), and releasing all
//! of a host's state when it reboots ([`NlmState::host_rebooted`], called by [`crate::nsm`]).
//! Releasing another host's locks is guarded ([`peers`]): FREE_ALL only from a local peer,
//! SM_NOTIFY only from an address that host's lock requests came from (or a local peer), so
//! the addresses each host's requests came from are kept while it holds anything.
//! The wire format lives in [`wire`]; file handles are our NFSv3 handles, resolved through the
//! export store, and the caller must be able to read (shared lock) or write (exclusive lock)
//! the file with its credential squashed per the volume's options (as Linux knfsd checks).
//!
//! A reclaim outside the grace period is taken as a new lock request (granted if nothing
//! conflicts) rather than refused, so a client whose SM_NOTIFY came late keeps what it can.
//! The asynchronous `_MSG`/`_RES` procedures (used by old clients over UDP) are not offered:
//! Linux and the BSDs use the synchronous ones with NLM v4; our GRANTED callback is the
//! synchronous one too (a client answering NLM4_DENIED no longer wants the lock: released).

pub mod peers;
pub mod wire;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use export_store::{ExportStore, ops};
use oncrpc::client::{self, Call, CallCred, Transport};
use oncrpc::{CallArgs, CallContext, CallNames, Reply, ReplySender, RpcService};
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use crate::grace::Grace;
use crate::locks::{Lock, LockError, LockTable, Owner};
use crate::nsm::Nsm;
use peers::LocalPeers;
use wire::{CancelArgs, Holder, LockArgs, NotifyArgs, ShareArgs, TestArgs, UnlockArgs, stat};

/// NLM's RPC program number.
pub const NLM_PROGRAM: u32 = 100_021;
/// The version served (64-bit offsets, NFSv3 handles).
pub const NLM_VERSION: u32 = 4;
const PROC_GRANTED: u32 = 5;
/// Waiting (blocked) lock requests kept at most, all hosts together.
pub const MAX_BLOCKED: usize = 4096;

/// How long a blocked request waits between checks when no release wakes it.
const BLOCKED_RECHECK: Duration = Duration::from_secs(30);
/// Addresses kept per host (a multi-homed client may use several; the oldest goes first).
const MAX_PEERS_PER_HOST: usize = 8;

const PROC_NAMES: [&str; 24] = [
    "NULL",
    "TEST",
    "LOCK",
    "CANCEL",
    "UNLOCK",
    "GRANTED",
    "TEST_MSG",
    "LOCK_MSG",
    "CANCEL_MSG",
    "UNLOCK_MSG",
    "GRANTED_MSG",
    "TEST_RES",
    "LOCK_RES",
    "CANCEL_RES",
    "UNLOCK_RES",
    "GRANTED_RES",
    "unknown",
    "unknown",
    "unknown",
    "unknown",
    "SHARE",
    "UNSHARE",
    "NM_LOCK",
    "FREE_ALL",
];

/// How the lock manager reaches clients.
#[derive(Clone, Debug)]
pub struct NlmConfig {
    /// The port of the clients' portmappers (111), asked where a client's lock manager
    /// listens for GRANTED callbacks and where its statd listens for SM_NOTIFY.
    pub callback_portmap_port: u16,
    /// Our name in callbacks and SM_NOTIFY.
    pub our_name: Vec<u8>,
    /// The address the server listens on: calls from it, as from 127.0.0.1 and ::1, are
    /// local (see [`peers`]).
    pub bind: IpAddr,
}

/// A DOS share reservation.
#[derive(Clone, Debug)]
struct Share {
    host: Vec<u8>,
    oh: Vec<u8>,
    /// What others are denied: bit 0 read, bit 1 write.
    mode: u32,
    /// What this opener does: bit 0 read, bit 1 write.
    access: u32,
}

/// A LOCK that had to wait: granted (and called back) once the conflicting lock goes.
struct Blocked {
    fh: Vec<u8>,
    lock: Lock,
    /// The GRANTED callback's arguments (the client matches them to its waiting request).
    callback: TestArgs,
    peer: IpAddr,
    cancelled: Notify,
}

/// The lock manager's state, shared by the NLM and NSM services.
pub struct NlmState {
    store: Arc<ExportStore>,
    locks: Arc<LockTable>,
    grace: Arc<Grace>,
    nsm: Arc<Nsm>,
    config: NlmConfig,
    shares: Mutex<HashMap<Vec<u8>, Vec<Share>>>,
    blocked: Mutex<Vec<Arc<Blocked>>>,
    /// The addresses each host's granted or waiting requests came from (canonical form),
    /// kept while the host holds anything.
    peers: Mutex<HashMap<Vec<u8>, Vec<IpAddr>>>,
    local: LocalPeers,
    runtime: tokio::runtime::Handle,
}

/// What an SM_NOTIFY did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notified {
    /// The hosts it named (or that used its address) lost this many locks and shares.
    Released(usize),
    /// It named hosts holding state, none of which sent requests from its address.
    Ignored,
}

fn owner(l: &wire::NlmLock) -> Owner {
    Owner::Nlm {
        host: l.caller_name.clone(),
        svid: l.svid,
        oh: l.oh.clone(),
    }
}

fn wanted(l: &wire::NlmLock, exclusive: bool) -> Lock {
    let (start, end) = Lock::range(l.offset, l.len);
    Lock {
        owner: owner(l),
        start,
        end,
        write: exclusive,
    }
}

fn holder(l: &Lock) -> Holder {
    let (svid, oh) = match &l.owner {
        Owner::Nlm { svid, oh, .. } => (*svid, oh.clone()),
        Owner::V4 { .. } => (0, Vec::new()),
    };
    Holder {
        exclusive: l.write,
        svid,
        oh,
        offset: l.start,
        // NLM says "to the end of the file" with length 0.
        len: if l.end == u64::MAX {
            0
        } else {
            l.end - l.start
        },
    }
}

fn shares_conflict(a: &Share, b: &Share) -> bool {
    a.access & b.mode != 0 || a.mode & b.access != 0
}

impl NlmState {
    /// The lock manager over `locks` (shared with NFSv4.1) and `grace` (shared too). Must be
    /// called inside the tokio runtime, which later runs the blocked-lock waiters.
    pub fn new(
        store: Arc<ExportStore>,
        locks: Arc<LockTable>,
        grace: Arc<Grace>,
        nsm: Arc<Nsm>,
        config: NlmConfig,
    ) -> Arc<Self> {
        let local = LocalPeers::new(config.bind);
        Arc::new(Self {
            store,
            locks,
            grace,
            nsm,
            config,
            shares: Mutex::new(HashMap::new()),
            blocked: Mutex::new(Vec::new()),
            peers: Mutex::new(HashMap::new()),
            local,
            runtime: tokio::runtime::Handle::current(),
        })
    }

    /// Whether `peer` is this machine (see [`peers`]).
    pub fn is_local(&self, peer: IpAddr) -> bool {
        self.local.contains(peer)
    }

    fn peers(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, Vec<IpAddr>>> {
        self.peers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records that a request of `host` that now holds (or waits for) something came from
    /// `addr`. Called after the lock, share or waiting request is in place, so that
    /// [`Self::forget_if_idle`] either sees it or runs wholly before this.
    fn note_peer(&self, host: &[u8], addr: IpAddr) {
        let addr = peers::canonical(addr);
        let mut peers = self.peers();
        let known = peers.entry(host.to_vec()).or_default();
        if !known.contains(&addr) {
            if known.len() >= MAX_PEERS_PER_HOST {
                known.remove(0);
            }
            known.push(addr);
        }
    }

    fn blocked(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Blocked>>> {
        self.blocked.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn shares(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, Vec<Share>>> {
        self.shares.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Checks that `fh` is a live file of a volume the caller may read (or write).
    fn check_file(&self, ctx: &CallContext, fh: &[u8], write: bool) -> Result<(), u32> {
        let cred = &ctx.credential;
        let obj = self
            .store
            .resolve(fh, libc::O_PATH)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ESTALE | export_store::store::EBADHANDLE) => stat::STALE_FH,
                _ => stat::FAILED,
            })?;
        // The caller must be one the volume admits (NLM has no "access denied": FAILED).
        if let Err(refused) = obj.volume.options().admits(ctx.peer) {
            crate::access_refused(&obj.volume, ctx.peer, refused);
            return Err(stat::FAILED);
        }
        if write && obj.volume.options().read_only {
            return Err(stat::ROFS);
        }
        let id = crate::nfs3::identity(cred, &obj);
        const READ: u32 = 1;
        const MODIFY: u32 = 4;
        let want = if write { MODIFY } else { READ };
        let (granted, attr) = ops::access(&obj, &id, want).map_err(|_| stat::FAILED)?;
        // The owner may always lock its file (knfsd's NFSD_MAY_OWNER_OVERRIDE).
        if granted & want != 0 || attr.uid == id.uid {
            Ok(())
        } else {
            Err(stat::FAILED)
        }
    }

    fn test(&self, ctx: &CallContext, a: &TestArgs) -> (u32, Option<Holder>) {
        if self.grace.active() {
            return (stat::DENIED_GRACE_PERIOD, None);
        }
        if let Err(s) = self.check_file(ctx, &a.lock.fh, a.exclusive) {
            return (s, None);
        }
        match self.locks.test(&a.lock.fh, &wanted(&a.lock, a.exclusive)) {
            Some(l) => (stat::DENIED, Some(holder(&l))),
            None => (stat::GRANTED, None),
        }
    }

    fn lock(self: &Arc<Self>, ctx: &CallContext, a: &LockArgs, monitored: bool) -> u32 {
        if self.grace.active() && !a.reclaim {
            return stat::DENIED_GRACE_PERIOD;
        }
        if let Err(s) = self.check_file(ctx, &a.lock.fh, a.exclusive) {
            return s;
        }
        let want = wanted(&a.lock, a.exclusive);
        let same = |b: &Blocked| b.fh == a.lock.fh && b.lock == want;
        let mut blocked = self.blocked();
        match self.locks.lock(&a.lock.fh, want.clone()) {
            Ok(()) => {
                // A retransmitted LOCK that now succeeds replaces its waiting twin.
                blocked.retain(|b| {
                    let keep = !same(b);
                    if !keep {
                        b.cancelled.notify_one();
                    }
                    keep
                });
                drop(blocked);
                self.note_peer(&a.lock.caller_name, ctx.peer.ip());
                if monitored {
                    self.nsm.note(&a.lock.caller_name, ctx.peer.ip());
                }
                stat::GRANTED
            }
            Err(LockError::Full) => {
                if let Some(suppressed) = oncrpc::throttle::allow("lock_table_full") {
                    warn!(peer = %ctx.peer, suppressed, "lock table full: NLM lock refused");
                }
                stat::DENIED_NOLOCKS
            }
            Err(_) if !a.block => stat::DENIED,
            // Each waiting request holds a task: beyond the cap, the client is told no lock
            // can be queued now (it retries as for a non-blocking request).
            Err(_) if blocked.len() >= MAX_BLOCKED && !blocked.iter().any(|b| same(b)) => {
                if let Some(suppressed) = oncrpc::throttle::allow("nlm_too_many_blocked") {
                    warn!(peer = %ctx.peer, suppressed, max = MAX_BLOCKED,
                        "NLM: too many waiting lock requests; refused with DENIED_NOLOCKS");
                }
                stat::DENIED_NOLOCKS
            }
            Err(_) => {
                if !blocked.iter().any(|b| same(b)) {
                    let b = Arc::new(Blocked {
                        fh: a.lock.fh.clone(),
                        lock: want,
                        callback: TestArgs {
                            cookie: a.cookie.clone(),
                            exclusive: a.exclusive,
                            lock: a.lock.clone(),
                        },
                        peer: ctx.peer.ip(),
                        cancelled: Notify::new(),
                    });
                    blocked.push(Arc::clone(&b));
                    self.runtime
                        .spawn(Arc::clone(self).wait_and_grant(b, monitored));
                }
                drop(blocked);
                self.note_peer(&a.lock.caller_name, ctx.peer.ip());
                stat::BLOCKED
            }
        }
    }

    /// Takes a blocked request's lock: `None` if it was cancelled, else whether it was taken.
    fn try_grant(&self, b: &Arc<Blocked>) -> Option<bool> {
        let mut blocked = self.blocked();
        let at = blocked.iter().position(|x| Arc::ptr_eq(x, b))?;
        if self.locks.lock(&b.fh, b.lock.clone()).is_err() {
            return Some(false);
        }
        blocked.remove(at);
        Some(true)
    }

    async fn wait_and_grant(self: Arc<Self>, b: Arc<Blocked>, monitored: bool) {
        loop {
            let released = self.locks.released().notified();
            tokio::pin!(released);
            released.as_mut().enable();
            match self.try_grant(&b) {
                None => return,
                Some(true) => break,
                Some(false) => {}
            }
            tokio::select! {
                _ = released => {}
                _ = b.cancelled.notified() => {}
                _ = tokio::time::sleep(BLOCKED_RECHECK) => {}
            }
        }
        let host = b.callback.lock.caller_name.clone();
        debug!(host = %String::from_utf8_lossy(&host), "blocked lock granted; calling back");
        if monitored {
            let me = Arc::clone(&self);
            let (h, peer) = (host.clone(), b.peer);
            let _ = tokio::task::spawn_blocking(move || me.nsm.note(&h, peer)).await;
        }
        let mut pause = Duration::from_millis(500);
        for attempt in 1..=5 {
            match self.granted_callback(&b).await {
                Ok(stat::GRANTED) => return,
                Ok(other) => {
                    // The client no longer waits for it: give the lock back.
                    debug!(
                        status = stat::name(other),
                        "GRANTED callback refused; unlocking"
                    );
                    self.locks
                        .unlock(&b.fh, &b.lock.owner, b.lock.start, b.lock.end);
                    let me = Arc::clone(&self);
                    let _ = tokio::task::spawn_blocking(move || me.forget_if_idle(&host)).await;
                    return;
                }
                Err(e) => debug!(attempt, error = %e, "GRANTED callback failed"),
            }
            tokio::time::sleep(pause).await;
            pause *= 2;
        }
        // The lock stays granted: the client's periodic LOCK retransmission will find it held.
        warn!(
            host = %String::from_utf8_lossy(&host),
            peer = %b.peer,
            "cannot deliver the GRANTED callback; the client will learn on its next LOCK"
        );
    }

    async fn granted_callback(&self, b: &Blocked) -> Result<u32, client::ClientError> {
        let timeout = Duration::from_secs(5);
        let portmapper = SocketAddr::new(b.peer, self.config.callback_portmap_port);
        let port = client::getport(
            portmapper,
            NLM_PROGRAM,
            NLM_VERSION,
            Transport::Tcp,
            timeout,
        )
        .await?;
        let args = b.callback.encode();
        let cred = CallCred::Root {
            machine_name: self.config.our_name.clone(),
        };
        let call = Call {
            prog: NLM_PROGRAM,
            vers: NLM_VERSION,
            proc_: PROC_GRANTED,
            cred: &cred,
            args: &args,
        };
        let res = client::call(
            SocketAddr::new(b.peer, port),
            Transport::Tcp,
            &call,
            timeout,
        )
        .await?;
        wire::decode_res_status(&res).ok_or(client::ClientError::BadReply)
    }

    /// Drops waiting requests matching `which`; returns how many.
    fn cancel_blocked(&self, which: impl Fn(&Blocked) -> bool) -> usize {
        let mut n = 0;
        self.blocked().retain(|b| {
            let keep = !which(b);
            if !keep {
                b.cancelled.notify_one();
                n += 1;
            }
            keep
        });
        n
    }

    fn cancel(&self, a: &CancelArgs) -> u32 {
        let want = wanted(&a.lock, a.exclusive);
        let n = self.cancel_blocked(|b| b.fh == a.lock.fh && b.lock == want);
        debug!(cancelled = n, "CANCEL");
        self.forget_if_idle(&a.lock.caller_name);
        // As Linux: a CANCEL of nothing (already granted or never blocked) still succeeds.
        stat::GRANTED
    }

    fn unlock(&self, a: &UnlockArgs) -> u32 {
        let o = owner(&a.lock);
        let (start, end) = Lock::range(a.lock.offset, a.lock.len);
        self.cancel_blocked(|b| {
            b.fh == a.lock.fh && b.lock.owner == o && b.lock.start < end && start < b.lock.end
        });
        self.locks.unlock(&a.lock.fh, &o, start, end);
        self.forget_if_idle(&a.lock.caller_name);
        stat::GRANTED
    }

    fn share(&self, ctx: &CallContext, a: &ShareArgs) -> u32 {
        if self.grace.active() && !a.reclaim {
            return stat::DENIED_GRACE_PERIOD;
        }
        if let Err(s) = self.check_file(ctx, &a.fh, a.access & 2 != 0) {
            return s;
        }
        let new = Share {
            host: a.caller_name.clone(),
            oh: a.oh.clone(),
            mode: a.mode,
            access: a.access,
        };
        let mut shares = self.shares();
        let held = shares.entry(a.fh.clone()).or_default();
        let mine = |s: &Share| s.host == new.host && s.oh == new.oh;
        if held.iter().any(|s| !mine(s) && shares_conflict(s, &new)) {
            return stat::DENIED;
        }
        held.retain(|s| !mine(s));
        held.push(new);
        drop(shares);
        self.note_peer(&a.caller_name, ctx.peer.ip());
        self.nsm.note(&a.caller_name, ctx.peer.ip());
        stat::GRANTED
    }

    fn unshare(&self, a: &ShareArgs) -> u32 {
        let mut shares = self.shares();
        if let Some(held) = shares.get_mut(&a.fh) {
            held.retain(|s| !(s.host == a.caller_name && s.oh == a.oh));
            if held.is_empty() {
                shares.remove(&a.fh);
            }
        }
        drop(shares);
        self.forget_if_idle(&a.caller_name);
        stat::GRANTED
    }

    fn holds_anything(&self, host: &[u8]) -> bool {
        self.locks
            .snapshot()
            .iter()
            .any(|(_, l)| l.owner.is_nlm_host(host))
            || self
                .shares()
                .values()
                .any(|held| held.iter().any(|s| s.host == host))
            || self
                .blocked()
                .iter()
                .any(|b| b.lock.owner.is_nlm_host(host))
    }

    /// Takes `host` off the restart-notification list, and forgets its addresses, once it
    /// holds nothing. Blocking.
    fn forget_if_idle(&self, host: &[u8]) {
        let mut peers = self.peers();
        if !self.holds_anything(host) {
            peers.remove(host);
            drop(peers);
            self.nsm.forget(host);
        }
    }

    /// Takes every host that holds nothing off the restart-notification list (after the
    /// grace period, hosts that did not reclaim). Blocking.
    pub fn forget_idle_hosts(&self) {
        for (host, _) in self.nsm.hosts() {
            self.forget_if_idle(&host);
        }
    }

    /// Releases every lock, share and waiting request of `host` (FREE_ALL, or the host
    /// rebooted). Returns how many locks and shares went. Blocking.
    pub fn free_all(&self, host: &[u8]) -> usize {
        self.cancel_blocked(|b| b.lock.owner.is_nlm_host(host));
        let mut n = self.locks.release_all(|o| o.is_nlm_host(host));
        let mut shares = self.shares();
        shares.retain(|_, held| {
            let before = held.len();
            held.retain(|s| s.host != host);
            n += before - held.len();
            !held.is_empty()
        });
        drop(shares);
        self.forget_if_idle(host);
        n
    }

    /// A host's statd said it restarted (SM_NOTIFY `mon_name` from `peer`): release what it
    /// held. Hosts are matched by name, ignoring ASCII case (statd sends the host name the
    /// kernel also puts in `caller_name`, but case and domain may differ), and a host matched
    /// by name is released only if its requests came from `peer` (or `peer` is local); when
    /// no host of that name is known, the hosts whose requests came from `peer` are. Blocking.
    pub fn host_rebooted(&self, mon_name: &[u8], peer: IpAddr) -> Notified {
        if mon_name.eq_ignore_ascii_case(&self.config.our_name) {
            // Our own restart notice come back to us (clients behind our own address, as in
            // a test that forwards everything through loopback): nothing of ours rebooted.
            return Notified::Released(0);
        }
        let peer = peers::canonical(peer);
        let local = self.is_local(peer);
        // Every host holding something, or listed from before our restart, with the
        // addresses its requests came from.
        let mut known: HashMap<Vec<u8>, Vec<IpAddr>> = self.peers().clone();
        for (name, addr) in self.nsm.hosts() {
            let addrs = known.entry(name).or_default();
            let addr = peers::canonical(addr);
            if !addrs.contains(&addr) {
                addrs.push(addr);
            }
        }
        // The first label of a host name (an address is kept whole: 10.0.0.1 is not 10.0.0.2).
        let short = |n: &[u8]| -> Vec<u8> {
            let is_addr = std::str::from_utf8(n).is_ok_and(|t| t.parse::<IpAddr>().is_ok());
            let label = if is_addr {
                n
            } else {
                n.split(|b| *b == b'.').next().unwrap_or(&[])
            };
            label.to_ascii_lowercase()
        };
        let by_name: Vec<(&Vec<u8>, &Vec<IpAddr>)> = known
            .iter()
            .filter(|(n, _)| short(n) == short(mon_name))
            .collect();
        let hosts: Vec<&Vec<u8>> = if by_name.is_empty() {
            known
                .iter()
                .filter(|(_, addrs)| addrs.contains(&peer))
                .map(|(n, _)| n)
                .collect()
        } else {
            let allowed: Vec<&Vec<u8>> = by_name
                .iter()
                .filter(|(_, addrs)| local || addrs.contains(&peer))
                .map(|(n, _)| *n)
                .collect();
            if allowed.is_empty() {
                // Logged at a limited rate.
                if let Some(suppressed) = oncrpc::throttle::allow("nlm_sm_notify_ignored") {
                    warn!(
                        host = %String::from_utf8_lossy(mon_name),
                        %peer,
                        hosts = by_name.len(),
                        suppressed,
                        "SM_NOTIFY ignored: the host's lock requests never came from this address"
                    );
                }
                return Notified::Ignored;
            }
            allowed
        };
        Notified::Released(hosts.iter().map(|h| self.free_all(h)).sum())
    }

    /// Answers one call; runs on a blocking worker (it may touch the file system).
    fn answer(self: &Arc<Self>, ctx: &CallContext, args: &[u8]) -> Reply {
        macro_rules! args {
            ($ty:ty) => {
                match <$ty>::decode(args) {
                    Some(a) => a,
                    None => return Reply::GarbageArgs,
                }
            };
        }
        let reply = match ctx.proc_ {
            1 => {
                let a = args!(TestArgs);
                let (s, h) = self.test(ctx, &a);
                wire::test_res(&a.cookie, s, h.as_ref())
            }
            2 | 22 => {
                let a = args!(LockArgs);
                wire::res(&a.cookie, self.lock(ctx, &a, ctx.proc_ == 2))
            }
            3 => {
                let a = args!(CancelArgs);
                wire::res(&a.cookie, self.cancel(&a))
            }
            4 => {
                let a = args!(UnlockArgs);
                wire::res(&a.cookie, self.unlock(&a))
            }
            // GRANTED: we are not a client; nothing waits for it here.
            5 => {
                let a = args!(TestArgs);
                wire::res(&a.cookie, stat::DENIED)
            }
            20 => {
                let a = args!(ShareArgs);
                wire::share_res(&a.cookie, self.share(ctx, &a))
            }
            21 => {
                let a = args!(ShareArgs);
                wire::share_res(&a.cookie, self.unshare(&a))
            }
            23 => {
                let a = args!(NotifyArgs);
                let host = String::from_utf8_lossy(&a.name);
                if self.is_local(ctx.peer.ip()) {
                    let n = self.free_all(&a.name);
                    info!(%host, released = n, "FREE_ALL");
                } else if let Some(suppressed) = oncrpc::throttle::allow("nlm_free_all_ignored") {
                    warn!(
                        %host,
                        peer = %ctx.peer,
                        suppressed,
                        "FREE_ALL ignored: only the local statd may send it"
                    );
                }
                Vec::new()
            }
            _ => return Reply::ProcUnavail,
        };
        Reply::Success(reply)
    }
}

/// The NLM program.
pub struct NlmService {
    state: Arc<NlmState>,
}

impl NlmService {
    pub fn new(state: Arc<NlmState>) -> Self {
        Self { state }
    }
}

impl RpcService for NlmService {
    fn program(&self) -> u32 {
        NLM_PROGRAM
    }

    fn versions(&self) -> (u32, u32) {
        (NLM_VERSION, NLM_VERSION)
    }

    fn call_names(&self, _vers: u32, proc_: u32) -> CallNames {
        CallNames {
            program: "nlockmgr",
            version: "4",
            procedure: PROC_NAMES.get(proc_ as usize).copied().unwrap_or("unknown"),
        }
    }

    fn status_reader(&self) -> fn(u32, &[u8]) -> &'static str {
        wire::reply_status
    }

    fn call(&self, ctx: CallContext, args: CallArgs, reply: ReplySender) {
        match ctx.proc_ {
            0 => return reply.send(Reply::Success(Vec::new())),
            1..=5 | 20..=23 => {}
            _ => return reply.send(Reply::ProcUnavail),
        }
        let state = Arc::clone(&self.state);
        tokio::task::spawn_blocking(move || {
            // The blocking pool is shared with the server's own work, which runs as root.
            let _scope = export_store::cred::Scope::enter();
            let span = tracing::debug_span!(
                "nlm",
                xid = ctx.xid,
                procedure = PROC_NAMES
                    .get(ctx.proc_ as usize)
                    .copied()
                    .unwrap_or("unknown")
            );
            let _entered = span.enter();
            let answer = state.answer(&ctx, args.bytes());
            if tracing::enabled!(tracing::Level::DEBUG) {
                let status = match &answer {
                    Reply::Success(body) => wire::reply_status(ctx.proc_, body),
                    _ => "rpc error",
                };
                debug!(peer = %ctx.peer, status, "answered");
            }
            reply.send(answer);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn share(host: &str, mode: u32, access: u32) -> Share {
        Share {
            host: host.into(),
            oh: b"oh".to_vec(),
            mode,
            access,
        }
    }

    #[test]
    fn share_modes_conflict_per_deny_and_access() {
        // Reader denying writers vs. a writer: conflict either way round.
        assert!(shares_conflict(&share("a", 2, 1), &share("b", 0, 2)));
        assert!(shares_conflict(&share("b", 0, 2), &share("a", 2, 1)));
        // Two readers denying writes: fine.
        assert!(!shares_conflict(&share("a", 2, 1), &share("b", 2, 1)));
        // Deny-none readers and writers coexist.
        assert!(!shares_conflict(&share("a", 0, 3), &share("b", 0, 3)));
    }

    #[test]
    fn holders_report_to_end_of_file_as_length_zero() {
        let l = Lock {
            owner: Owner::V4 {
                clientid: 1,
                owner: vec![1],
            },
            start: 10,
            end: u64::MAX,
            write: true,
        };
        let h = holder(&l);
        assert_eq!((h.exclusive, h.svid, h.offset, h.len), (true, 0, 10, 0));
        let l = Lock { end: 15, ..l };
        assert_eq!(holder(&l).len, 5);
    }
}
