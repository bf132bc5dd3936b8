//! NFSv4.1 state: client records, sessions with their slot tables and reply caches, open and
//! lock stateids, leases, and the client list kept on disk for the grace period.
//!
//! Everything lives under one mutex, held only for table updates (never across file-system
//! work). Ids embed this server instance's boot number, so ids from before a restart are
//! recognised as stale rather than aliased to new state.
//!
//! Restart: the owners of confirmed clients are written to `nfs4-clients` in the state
//! directory. After a restart they are the clients allowed to reclaim; the grace period ends
//! as soon as each of them sent RECLAIM_COMPLETE, or when it runs out. Unconfirmed records
//! (an EXCHANGE_ID never followed by CREATE_SESSION) are never written: they hold nothing to
//! reclaim.
//!
//! Every client record remembers the principal that created it (RFC 8881 section 2.4), so
//! another caller presenting the same owner string cannot take the record over, and the
//! number of records is bounded ([`MAX_CLIENTS`]).
//!
//! Leases (RFC 8881 section 8.4.3, knfsd's "courteous server"): a confirmed client whose
//! lease ran out becomes a *courtesy* client. Its state is kept for up to [`COURTESY`], so a
//! client cut off for a while continues where it was with its next SEQUENCE, but only as
//! long as nobody needs it: the moment another client's LOCK, LOCKT or OPEN, or an NLM
//! request, conflicts with its state, the courtesy client is expired at once (everything it
//! holds released, its sessions and record gone) and the request proceeds (see
//! [`State::expire_courtesy`] and [`crate::locks::Yield`]). Its next SEQUENCE then gets
//! NFS4ERR_BADSESSION and its CREATE_SESSION NFS4ERR_STALE_CLIENTID, and it starts over with
//! EXCHANGE_ID. Courtesy clients are also the first to go when the client table is full.
//! Unconfirmed records get no courtesy: they go when their lease runs out.
//!
//! Time is read from a [`Clock`] that tests move forward, so lease rules are tested without
//! waiting for them.
//!
//! An open keeps the file's descriptor ([`Held`]) until CLOSE or expiry, so the file stays
//! usable through its stateid after another client removed or renamed over it, as on a
//! local file system; open states are bounded per client and in all.

use std::collections::{HashMap, HashSet};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use export_store::Volume;

use tracing::{info, warn};

use super::xdr::{StateId, st};
use crate::grace::Grace;
use crate::locks::{LockTable, Owner, Yield};
use crate::statefile::StateFiles;

/// Slots granted per session.
pub const MAX_SLOTS: u32 = 64;
/// Longest compound reply kept for replay.
pub const MAX_CACHED_REPLY: u32 = 64 * 1024;
/// How long a confirmed client whose lease ran out keeps its state, unless another client
/// needs it first (as knfsd's courtesy clients).
pub const COURTESY: Duration = Duration::from_secs(24 * 60 * 60);
/// Client records kept at most, confirmed or not. When the table is full, the oldest
/// unconfirmed record makes room, then the courtesy client silent the longest; otherwise a
/// new client is told to retry later (see [`State::make_room`]).
pub const MAX_CLIENTS: usize = 1024;
/// Open states one client may hold (each keeps its file's descriptor): beyond it OPEN gets
/// NFS4ERR_DELAY until the client closes some.
pub const MAX_OPENS_PER_CLIENT: usize = 8192;
/// Open states kept at most, all clients together.
pub const MAX_OPENS: usize = 65_536;
/// Sessions one client may hold at once (each keeps up to [`MAX_SLOTS`] cached replies); a
/// client that asks for more is told to retry later (NFS4ERR_DELAY), as knfsd does when its
/// reply cache is spent. Linux uses one.
pub const MAX_SESSIONS_PER_CLIENT: usize = 16;

pub type SessionId = [u8; 16];

/// The time leases, courtesy and sweeps are measured by: the monotonic clock, plus an offset
/// that only tests move (so a test need not wait out a lease).
#[derive(Debug, Default)]
pub struct Clock {
    ahead_ms: AtomicU64,
}

impl Clock {
    pub fn now(&self) -> Instant {
        let now = Instant::now();
        now.checked_add(Duration::from_millis(self.ahead_ms.load(Ordering::Relaxed)))
            .unwrap_or(now)
    }

    /// Moves this clock forward (tests).
    #[doc(hidden)]
    pub fn advance(&self, by: Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        let _ = self
            .ahead_ms
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |a| {
                Some(a.saturating_add(ms))
            });
    }
}

/// Settings of the state tables.
#[derive(Clone, Debug)]
pub struct StateConfig {
    pub lease: Duration,
    pub grace: Duration,
    /// Where client owners are recorded for recovery (`None`: not recorded, tests).
    pub records: Option<PathBuf>,
}

/// Who created a client record: the RPC credential of its EXCHANGE_ID (RFC 8881 section
/// 2.4). With AUTH_SYS that is the caller's uid, gid and machine name; the stamp and the
/// supplementary groups are not part of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    None,
    Sys {
        uid: u32,
        gid: u32,
        machine: Vec<u8>,
    },
}

impl Principal {
    pub fn of(credential: &oncrpc::Credential) -> Self {
        match credential {
            oncrpc::Credential::None => Principal::None,
            oncrpc::Credential::Sys(s) => Principal::Sys {
                uid: s.uid,
                gid: s.gid,
                machine: s.machine_name.clone(),
            },
        }
    }
}

pub struct Client {
    pub owner: Vec<u8>,
    pub verifier: [u8; 8],
    pub principal: Principal,
    pub confirmed: bool,
    /// CREATE_SESSION's sequence id: the last one seen, and its reply for replays.
    pub cs_seq: u32,
    pub cs_reply: Option<Vec<u8>>,
    pub renewed: Instant,
    /// Open states it holds (bounded by [`MAX_OPENS_PER_CLIENT`]).
    pub opens: usize,
    pub reclaim_complete: bool,
    /// Known before the restart: its reclaims are accepted during grace.
    pub may_reclaim: bool,
    pub sessions: HashSet<SessionId>,
}

impl Client {
    /// A new, unconfirmed client record (EXCHANGE_ID) made at `now` ([`State::now`]).
    pub fn new(owner: Vec<u8>, verifier: [u8; 8], principal: Principal, now: Instant) -> Self {
        Self {
            owner,
            verifier,
            principal,
            confirmed: false,
            cs_seq: 0,
            cs_reply: None,
            renewed: now,
            opens: 0,
            reclaim_complete: false,
            may_reclaim: false,
            sessions: HashSet::new(),
        }
    }
}

pub struct Slot {
    pub seqid: u32,
    pub busy: bool,
    pub reply: Option<Vec<u8>>,
}

pub struct Session {
    pub clientid: u64,
    pub slots: Vec<Slot>,
    pub max_ops: u32,
    pub max_request: u32,
    pub max_response: u32,
    pub max_cached: u32,
}

/// The file of an open, held from OPEN to CLOSE (or expiry): an `O_PATH` descriptor, the
/// one the handle resolved to (so holding it costs a descriptor only once the handle cache
/// lets go of it). When another client removes the file or renames over it, the handle no
/// longer resolves but the opener keeps using the file through this.
#[derive(Debug)]
pub struct Held {
    pub volume: Arc<Volume>,
    pub fd: Arc<OwnedFd>,
    /// Bytes charged to the volume's quota by writes through this after the file was
    /// removed: its removal already credited what it had, and the file system frees the rest
    /// when the last descriptor closes, so they are credited back then.
    pub charged_unlinked: AtomicI64,
}

impl Held {
    pub fn new(volume: Arc<Volume>, fd: Arc<OwnedFd>) -> Self {
        Self {
            volume,
            fd,
            charged_unlinked: AtomicI64::new(0),
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let charged = self.charged_unlinked.load(Ordering::Relaxed);
        if charged != 0 {
            let quota = &self.volume.quota;
            let _busy = quota.begin();
            quota.charge(-charged);
        }
    }
}

#[derive(Clone, Debug)]
pub struct OpenState {
    pub clientid: u64,
    pub owner: Vec<u8>,
    pub file: Vec<u8>,
    pub seqid: u32,
    pub access: u32,
    pub deny: u32,
    /// The file, held until CLOSE (`None` only before OPEN has filled it in).
    pub held: Option<Arc<Held>>,
}

#[derive(Clone, Debug)]
pub struct LockState {
    pub clientid: u64,
    pub owner: Vec<u8>,
    pub file: Vec<u8>,
    pub open: [u8; 12],
    pub seqid: u32,
}

#[derive(Clone, Debug)]
pub enum Stateful {
    Open(OpenState),
    Lock(LockState),
}

#[derive(Default)]
pub struct Tables {
    next: u64,
    pub clients: HashMap<u64, Client>,
    pub sessions: HashMap<SessionId, Session>,
    pub states: HashMap<[u8; 12], Stateful>,
    /// (client, open owner, file) → open stateid.
    opens: HashMap<(u64, Vec<u8>, Vec<u8>), [u8; 12]>,
    /// (client, lock owner, file) → lock stateid.
    lockers: HashMap<(u64, Vec<u8>, Vec<u8>), [u8; 12]>,
    /// Owners of clients from before the restart that have not finished reclaiming.
    pending_reclaim: HashSet<Vec<u8>>,
    /// Owners written in the records file.
    recorded: HashSet<Vec<u8>>,
    last_sweep: Option<Instant>,
    /// Open states held, all clients together.
    open_count: usize,
}

/// The NFSv4.1 state of this server.
pub struct State {
    tables: Mutex<Tables>,
    pub locks: Arc<LockTable>,
    pub grace: Arc<Grace>,
    pub config: StateConfig,
    /// This server instance, in every client id, session id and stateid.
    pub boot: u32,
    /// EXCHANGE_ID's server owner and scope.
    pub server_owner: Vec<u8>,
    /// What leases are measured by.
    pub clock: Clock,
    /// The last write of the client records handed to the state-file writer, and the last
    /// one known to be on disk.
    records_submitted: AtomicU64,
    records_durable: AtomicU64,
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_secs())
}

impl State {
    /// Loads the client records and starts a grace period if any client was known before.
    pub fn new(config: StateConfig, locks: Arc<LockTable>, grace: Arc<Grace>) -> Self {
        let previous = config
            .records
            .as_ref()
            .map(load_records)
            .unwrap_or_default();
        if !previous.is_empty() {
            info!(
                clients = previous.len(),
                grace_s = config.grace.as_secs(),
                "NFSv4 clients known before the restart may reclaim their state during the grace period"
            );
            grace.start(config.grace);
        }
        // Low bits of the clock: distinct across restarts, and never zero (zero is the
        // anonymous stateid's).
        let boot = (now_secs() as u32).max(1);
        let mut server_owner = b"nfs-server-provisioner:".to_vec();
        server_owner.extend_from_slice(
            config
                .records
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
                .as_bytes(),
        );
        Self {
            tables: Mutex::new(Tables {
                pending_reclaim: previous.iter().cloned().collect(),
                recorded: previous.into_iter().collect(),
                ..Tables::default()
            }),
            locks,
            grace,
            config,
            boot,
            server_owner,
            clock: Clock::default(),
            records_submitted: AtomicU64::new(0),
            records_durable: AtomicU64::new(0),
        }
    }

    /// Waits until the client records written so far are on disk: a COMPOUND that confirmed
    /// a client is answered only then (so it can reclaim after a restart). Called with no
    /// lock held; costs nothing when nothing is being written.
    pub fn records_durable(&self) {
        let submitted = self.records_submitted.load(Ordering::Acquire);
        if submitted > self.records_durable.load(Ordering::Acquire) {
            StateFiles::global().wait(submitted);
            self.records_durable.fetch_max(submitted, Ordering::AcqRel);
        }
    }

    /// [`State::new`], shared, and asked by the lock table to make courtesy clients yield
    /// (how the servers are built; a bare `State::new` never expires a conflicting holder).
    pub fn shared(config: StateConfig, locks: Arc<LockTable>, grace: Arc<Grace>) -> Arc<Self> {
        let state = Arc::new(Self::new(config, Arc::clone(&locks), grace));
        let weak = Arc::downgrade(&state);
        locks.set_yield(weak);
        state
    }

    /// Now, by [`State::clock`].
    pub fn now(&self) -> Instant {
        self.clock.now()
    }

    pub fn lock(&self) -> MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new id, unique for this server instance: boot in the high half.
    pub fn new_clientid(&self, t: &mut Tables) -> u64 {
        t.next += 1;
        (u64::from(self.boot) << 32) | (t.next & 0xffff_ffff)
    }

    pub fn new_other(&self, t: &mut Tables) -> [u8; 12] {
        t.next += 1;
        let mut o = [0u8; 12];
        o[..4].copy_from_slice(&self.boot.to_be_bytes());
        o[4..].copy_from_slice(&t.next.to_be_bytes());
        o
    }

    pub fn new_sessionid(&self, t: &mut Tables, clientid: u64) -> SessionId {
        t.next += 1;
        let mut s = [0u8; 16];
        s[..8].copy_from_slice(&clientid.to_be_bytes());
        s[8..12].copy_from_slice(&self.boot.to_be_bytes());
        s[12..].copy_from_slice(&(t.next as u32).to_be_bytes());
        s
    }

    /// Whether reclaims by this client are accepted now (RECLAIM_BAD / NO_GRACE otherwise).
    pub fn check_reclaim(&self, t: &Tables, clientid: u64) -> Result<(), u32> {
        if !self.grace.active() {
            return Err(st::NO_GRACE);
        }
        match t.clients.get(&clientid) {
            Some(c) if c.may_reclaim && !c.reclaim_complete => Ok(()),
            Some(c) if c.reclaim_complete => Err(st::NO_GRACE),
            _ => Err(st::RECLAIM_BAD),
        }
    }

    /// Whether the client sent RECLAIM_COMPLETE for the whole server: until then it may not
    /// take new locks or opens (RFC 8881 section 18.51.3).
    pub fn reclaim_done(&self, t: &Tables, clientid: u64) -> bool {
        t.clients.get(&clientid).is_some_and(|c| c.reclaim_complete)
    }

    /// Confirms a client: drops other records of the same owner and writes it to disk.
    pub fn confirm(&self, t: &mut Tables, clientid: u64) {
        let Some(owner) = t.clients.get(&clientid).map(|c| c.owner.clone()) else {
            return;
        };
        let stale: Vec<u64> = t
            .clients
            .iter()
            .filter(|(id, c)| **id != clientid && c.owner == owner)
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            self.expire(t, id);
        }
        let may_reclaim = t.pending_reclaim.contains(&owner);
        if let Some(c) = t.clients.get_mut(&clientid) {
            c.confirmed = true;
            c.may_reclaim = may_reclaim && self.grace.active();
        }
        if t.recorded.insert(owner) {
            self.write_records(t);
        }
    }

    /// RECLAIM_COMPLETE: ends the grace period once no client from before is missing.
    pub fn reclaim_complete(&self, t: &mut Tables, clientid: u64) -> Result<(), u32> {
        let c = t.clients.get_mut(&clientid).ok_or(st::STALE_CLIENTID)?;
        if c.reclaim_complete {
            return Err(st::COMPLETE_ALREADY);
        }
        c.reclaim_complete = true;
        let owner = c.owner.clone();
        if t.pending_reclaim.remove(&owner) && t.pending_reclaim.is_empty() && self.grace.active() {
            info!("every NFSv4 client known before the restart has reclaimed: grace period over");
            self.grace.end();
            self.forget_absent(t);
        }
        Ok(())
    }

    /// After grace: clients that never came back lose their record.
    fn forget_absent(&self, t: &mut Tables) {
        let present: HashSet<Vec<u8>> = t.clients.values().map(|c| c.owner.clone()).collect();
        let before = t.recorded.len();
        t.recorded.retain(|o| present.contains(o));
        t.pending_reclaim.clear();
        if t.recorded.len() != before {
            self.write_records(t);
        }
    }

    /// Removes a client and everything it holds.
    pub fn expire(&self, t: &mut Tables, clientid: u64) {
        let Some(c) = t.clients.remove(&clientid) else {
            return;
        };
        if !c.confirmed {
            // No session yet, so no opens or locks either; never recorded.
            return;
        }
        for s in &c.sessions {
            t.sessions.remove(s);
        }
        t.states.retain(|_, s| match s {
            Stateful::Open(o) => o.clientid != clientid,
            Stateful::Lock(l) => l.clientid != clientid,
        });
        t.opens.retain(|k, _| k.0 != clientid);
        t.lockers.retain(|k, _| k.0 != clientid);
        t.open_count = t.open_count.saturating_sub(c.opens);
        self.locks
            .release_all(|o| matches!(o, Owner::V4 { clientid: c, .. } if *c == clientid));
        let owner_elsewhere = t.clients.values().any(|o| o.owner == c.owner);
        if !owner_elsewhere && t.recorded.remove(&c.owner) {
            self.write_records(t);
        }
    }

    /// Whether a client holds opens, locks or sessions.
    pub fn holds_state(t: &Tables, clientid: u64) -> bool {
        t.clients
            .get(&clientid)
            .is_some_and(|c| !c.sessions.is_empty())
            || t.states.values().any(|s| match s {
                Stateful::Open(o) => o.clientid == clientid,
                Stateful::Lock(l) => l.clientid == clientid,
            })
    }

    /// Whether a client's lease is still running (renewed within the lease period).
    pub fn lease_running(&self, c: &Client) -> bool {
        self.now().saturating_duration_since(c.renewed) <= self.config.lease
    }

    /// Whether a client is a courtesy client: confirmed, its lease run out, its state kept
    /// only until someone needs it (RFC 8881 section 8.4.3).
    pub fn is_courtesy(&self, c: &Client) -> bool {
        c.confirmed && !self.lease_running(c)
    }

    /// Expires `clientid` if it is a courtesy client, because another client's request
    /// conflicts with its state: the courtesy period must not delay anyone else. `true` if
    /// it was expired (the request may then proceed as if it never conflicted).
    pub fn expire_courtesy(&self, t: &mut Tables, clientid: u64) -> bool {
        if !t
            .clients
            .get(&clientid)
            .is_some_and(|c| self.is_courtesy(c))
        {
            return false;
        }
        info!(
            clientid,
            "NFSv4 courtesy client (lease expired) holds state another client needs: expired"
        );
        self.expire(t, clientid);
        true
    }

    /// A fresh unconfirmed record of `owner` (EXCHANGE_ID and SETCLIENTID): earlier
    /// unconfirmed records of the owner go; a confirmed one stays until this one is
    /// confirmed. `None`: the table is full of live clients.
    pub fn new_record(
        &self,
        t: &mut Tables,
        owner: Vec<u8>,
        verifier: [u8; 8],
        principal: Principal,
    ) -> Option<u64> {
        let unconfirmed: Vec<u64> = t
            .clients
            .iter()
            .filter(|(_, c)| c.owner == owner && !c.confirmed)
            .map(|(id, _)| *id)
            .collect();
        for id in unconfirmed {
            self.expire(t, id);
        }
        if !self.make_room(t) {
            return None;
        }
        let id = self.new_clientid(t);
        t.clients
            .insert(id, Client::new(owner, verifier, principal, self.now()));
        Some(id)
    }

    /// Makes room for one more client record when the table holds [`MAX_CLIENTS`]: drops
    /// the oldest unconfirmed record (it holds no state), else expires the courtesy client
    /// silent the longest. `false`: every record belongs to a live client, the new one must
    /// wait.
    pub fn make_room(&self, t: &mut Tables) -> bool {
        if t.clients.len() < MAX_CLIENTS {
            return true;
        }
        let oldest_unconfirmed = t
            .clients
            .iter()
            .filter(|(_, c)| !c.confirmed)
            .min_by_key(|(_, c)| c.renewed)
            .map(|(id, _)| *id);
        if let Some(id) = oldest_unconfirmed {
            self.expire(t, id);
            return true;
        }
        let oldest_courtesy = t
            .clients
            .iter()
            .filter(|(_, c)| self.is_courtesy(c))
            .min_by_key(|(_, c)| c.renewed)
            .map(|(id, _)| *id);
        if let Some(id) = oldest_courtesy {
            info!(
                clientid = id,
                "NFSv4 client table full: the courtesy client silent the longest is expired"
            );
            self.expire(t, id);
            return true;
        }
        false
    }

    /// Expires unconfirmed records whose lease ran out and courtesy clients past
    /// [`COURTESY`], and ends an expired grace period; at most every few seconds.
    pub fn sweep(&self, t: &mut Tables) {
        let now = self.now();
        if t.last_sweep
            .is_some_and(|l| now.saturating_duration_since(l) < Duration::from_secs(2))
        {
            return;
        }
        t.last_sweep = Some(now);
        let lease = self.config.lease;
        let gone: Vec<u64> = t
            .clients
            .iter()
            .filter(|(_, c)| {
                let silent = now.saturating_duration_since(c.renewed);
                if c.confirmed {
                    silent > lease + COURTESY
                } else {
                    silent > lease
                }
            })
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            info!(
                clientid = id,
                "NFSv4 client lease expired; its state is released"
            );
            self.expire(t, id);
        }
        if !t.pending_reclaim.is_empty() && !self.grace.active() {
            info!("grace period over");
            self.forget_absent(t);
        }
    }

    /// The open stateid of (client, owner, file), made if missing; `Err(NFS4ERR_DELAY)` when
    /// a new one would pass [`MAX_OPENS_PER_CLIENT`] or [`MAX_OPENS`].
    pub fn open_state(
        &self,
        t: &mut Tables,
        clientid: u64,
        owner: &[u8],
        file: &[u8],
    ) -> Result<([u8; 12], bool), u32> {
        let key = (clientid, owner.to_vec(), file.to_vec());
        if let Some(o) = t.opens.get(&key) {
            return Ok((*o, false));
        }
        let opens = t.clients.get(&clientid).map_or(0, |c| c.opens);
        if opens >= MAX_OPENS_PER_CLIENT || t.open_count >= MAX_OPENS {
            return Err(st::DELAY);
        }
        if let Some(c) = t.clients.get_mut(&clientid) {
            c.opens += 1;
        }
        t.open_count += 1;
        let other = self.new_other(t);
        t.opens.insert(key, other);
        t.states.insert(
            other,
            Stateful::Open(OpenState {
                clientid,
                owner: owner.to_vec(),
                file: file.to_vec(),
                seqid: 0,
                access: 0,
                deny: 0,
                held: None,
            }),
        );
        Ok((other, true))
    }

    /// The lock stateid of (client, lock owner, file), made if missing.
    pub fn lock_state(
        &self,
        t: &mut Tables,
        clientid: u64,
        owner: &[u8],
        file: &[u8],
        open: [u8; 12],
    ) -> [u8; 12] {
        let key = (clientid, owner.to_vec(), file.to_vec());
        if let Some(o) = t.lockers.get(&key) {
            return *o;
        }
        let other = self.new_other(t);
        t.lockers.insert(key, other);
        t.states.insert(
            other,
            Stateful::Lock(LockState {
                clientid,
                owner: owner.to_vec(),
                file: file.to_vec(),
                open,
                seqid: 0,
            }),
        );
        other
    }

    /// Drops an open or lock stateid (CLOSE, FREE_STATEID).
    pub fn drop_state(&self, t: &mut Tables, other: &[u8; 12]) {
        match t.states.remove(other) {
            Some(Stateful::Open(o)) => {
                if let Some(c) = t.clients.get_mut(&o.clientid) {
                    c.opens = c.opens.saturating_sub(1);
                }
                t.open_count = t.open_count.saturating_sub(1);
                t.opens.remove(&(o.clientid, o.owner, o.file));
            }
            Some(Stateful::Lock(l)) => {
                t.lockers.remove(&(l.clientid, l.owner, l.file));
            }
            None => {}
        }
    }

    /// Checks a stateid's seqid against the current one (RFC 8881 section 8.2.2: zero means
    /// "the current one").
    pub fn check_seqid(given: &StateId, current: u32) -> Result<(), u32> {
        if given.seqid == 0 || given.seqid == current {
            Ok(())
        } else if given.seqid > current {
            Err(st::BAD_STATEID)
        } else {
            Err(st::OLD_STATEID)
        }
    }

    /// Whether `other` was issued by an earlier instance of this server.
    pub fn from_earlier_boot(&self, other: &[u8; 12]) -> bool {
        other[..4] != self.boot.to_be_bytes()
    }

    /// Share reservations: the client of another owner's open that an open of `file` with
    /// `access`/`deny` by `owner` conflicts with, if any (RFC 8881 section 9.7).
    pub fn share_conflict(
        t: &Tables,
        clientid: u64,
        owner: &[u8],
        file: &[u8],
        access: u32,
        deny: u32,
    ) -> Option<u64> {
        t.states.values().find_map(|s| match s {
            Stateful::Open(o)
                if o.file == file
                    && !(o.clientid == clientid && o.owner == owner)
                    && ((o.deny & access) != 0 || (o.access & deny) != 0) =>
            {
                Some(o.clientid)
            }
            _ => None,
        })
    }

    /// The file `clientid` holds open under `file`'s handle, if any (the handle may no longer
    /// resolve: the file was removed while open).
    pub fn held(t: &Tables, clientid: u64, file: &[u8]) -> Option<Arc<Held>> {
        t.states.values().find_map(|s| match s {
            Stateful::Open(o) if o.clientid == clientid && o.file == file => o.held.clone(),
            _ => None,
        })
    }

    /// Hands the client records to the state-file writer (no I/O under the tables' lock).
    fn write_records(&self, t: &Tables) {
        let Some(path) = &self.config.records else {
            return;
        };
        let mut owners: Vec<String> = t.recorded.iter().map(|o| hex(o)).collect();
        owners.sort();
        let mut text = owners.join("\n");
        text.push('\n');
        let seq = StateFiles::global().submit(path.clone(), text.into_bytes());
        self.records_submitted.fetch_max(seq, Ordering::AcqRel);
    }
}

/// The lock table's question: a conflicting NFSv4 lock holder that is a courtesy client is
/// expired (its locks released) instead of refusing the request.
impl Yield for State {
    fn yield_owner(&self, owner: &Owner) -> bool {
        let Owner::V4 { clientid, .. } = owner else {
            return false;
        };
        let mut t = self.lock();
        self.expire_courtesy(&mut t, *clientid)
    }
}

/// Bytes as lower-case hex (client owners on disk, handles in logs).
pub(super) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn load_records(path: &PathBuf) -> Vec<Vec<u8>> {
    match std::fs::read_to_string(path) {
        Ok(text) => text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .filter_map(|l| unhex(l.trim()))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            warn!(error = %e, path = %path.display(), "cannot read the NFSv4 client records; no grace period");
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn state(dir: &std::path::Path) -> State {
        State::new(
            StateConfig {
                lease: Duration::from_secs(90),
                grace: Duration::from_secs(90),
                records: Some(dir.join("nfs4-clients")),
            },
            Arc::new(LockTable::new()),
            Arc::new(Grace::none()),
        )
    }

    fn client(s: &State, owner: &[u8]) -> u64 {
        let mut t = s.lock();
        let id = s.new_clientid(&mut t);
        t.clients.insert(
            id,
            Client::new(owner.to_vec(), [0; 8], Principal::None, s.now()),
        );
        s.confirm(&mut t, id);
        drop(t);
        s.records_durable();
        id
    }

    #[test]
    fn records_are_written_whatever_identity_the_thread_carries() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let s = state(dir.path());
        let path = dir.path().join("nfs4-clients");
        crate::statefile::on_a_user_thread(|| {
            client(&s, b"alpha");
        });
        assert_eq!(std::fs::read_to_string(path).unwrap().lines().count(), 1);
    }

    #[test]
    fn records_give_a_grace_period_that_ends_when_all_reclaimed() {
        let dir = tempfile::tempdir().unwrap();
        let s = state(dir.path());
        assert!(!s.grace.active());
        client(&s, b"alpha");
        client(&s, b"beta");
        drop(s);
        let s = state(dir.path());
        assert!(s.grace.active());
        // An unconfirmed record of a recorded owner that goes away leaves the record.
        {
            let mut t = s.lock();
            let id = s.new_clientid(&mut t);
            t.clients.insert(
                id,
                Client::new(b"beta".to_vec(), [0; 8], Principal::None, s.now()),
            );
            s.expire(&mut t, id);
        }
        s.records_durable();
        let text = std::fs::read_to_string(dir.path().join("nfs4-clients")).unwrap();
        assert_eq!(text.lines().count(), 2, "{text}");
        let a = client(&s, b"alpha");
        assert_eq!(s.check_reclaim(&s.lock(), a), Ok(()));
        s.reclaim_complete(&mut s.lock(), a).unwrap();
        assert!(s.grace.active(), "beta has not reclaimed yet");
        let newcomer = client(&s, b"gamma");
        assert_eq!(s.check_reclaim(&s.lock(), newcomer), Err(st::RECLAIM_BAD));
        s.reclaim_complete(&mut s.lock(), newcomer).unwrap();
        assert!(s.grace.active());
        let b = client(&s, b"beta");
        s.reclaim_complete(&mut s.lock(), b).unwrap();
        assert!(!s.grace.active());
        assert_eq!(
            s.reclaim_complete(&mut s.lock(), b),
            Err(st::COMPLETE_ALREADY)
        );
        assert_eq!(s.check_reclaim(&s.lock(), a), Err(st::NO_GRACE));
    }

    #[test]
    fn expiry_releases_locks_and_record() {
        let dir = tempfile::tempdir().unwrap();
        let s = state(dir.path());
        let a = client(&s, b"alpha");
        let owner = Owner::V4 {
            clientid: a,
            owner: b"o".to_vec(),
        };
        s.locks
            .lock(
                b"file",
                crate::locks::Lock {
                    owner,
                    start: 0,
                    end: 10,
                    write: true,
                },
            )
            .unwrap();
        s.expire(&mut s.lock(), a);
        s.records_durable();
        assert!(s.locks.snapshot().is_empty());
        let text = std::fs::read_to_string(dir.path().join("nfs4-clients")).unwrap();
        assert!(text.trim().is_empty(), "{text}");
    }

    #[test]
    fn a_courtesy_client_yields_its_locks_a_live_one_does_not() {
        let locks = Arc::new(LockTable::new());
        let s = State::shared(
            StateConfig {
                lease: Duration::from_secs(90),
                grace: Duration::from_secs(90),
                records: None,
            },
            Arc::clone(&locks),
            Arc::new(Grace::none()),
        );
        let a = client(&s, b"alpha");
        let held = |clientid| crate::locks::Lock {
            owner: Owner::V4 {
                clientid,
                owner: b"o".to_vec(),
            },
            start: 0,
            end: 10,
            write: true,
        };
        locks.lock(b"file", held(a)).unwrap();
        let b = client(&s, b"beta");
        assert!(matches!(
            locks.lock(b"file", held(b)),
            Err(crate::locks::LockError::Conflict(_))
        ));
        s.clock.advance(Duration::from_secs(91));
        // B renews (SEQUENCE), A does not: A is a courtesy client and yields.
        let now = s.now();
        s.lock().clients.get_mut(&b).unwrap().renewed = now;
        assert!(s.lock().clients.get(&a).is_some_and(|c| s.is_courtesy(c)));
        locks.lock(b"file", held(b)).unwrap();
        assert!(!s.lock().clients.contains_key(&a), "A was expired");
        // B is live: a third client's request is refused, B keeps its lock.
        let c = client(&s, b"gamma");
        assert!(locks.test(b"file", &held(c)).is_some());
        assert!(s.lock().clients.contains_key(&b));
        // A sweep keeps courtesy clients for the courtesy period, no longer.
        s.clock.advance(Duration::from_secs(91));
        s.sweep(&mut s.lock());
        assert!(s.lock().clients.contains_key(&b));
        s.clock.advance(COURTESY);
        s.sweep(&mut s.lock());
        assert!(!s.lock().clients.contains_key(&b));
        assert!(locks.snapshot().is_empty());
    }

    #[test]
    fn a_full_table_drops_the_oldest_unconfirmed_record_then_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let s = state(dir.path());
        let mut t = s.lock();
        let mut unconfirmed = Vec::new();
        for i in 0..MAX_CLIENTS {
            assert!(s.make_room(&mut t));
            let id = s.new_clientid(&mut t);
            let owner = format!("fake-{i}").into_bytes();
            t.clients
                .insert(id, Client::new(owner, [0; 8], Principal::None, s.now()));
            unconfirmed.push(id);
        }
        assert!(
            !dir.path().join("nfs4-clients").exists(),
            "unconfirmed clients are not recorded"
        );
        // Full: the oldest unconfirmed record goes.
        assert!(s.make_room(&mut t));
        assert!(!t.clients.contains_key(&unconfirmed[0]));
        assert!(t.clients.contains_key(&unconfirmed[1]));
        // Full of live confirmed clients: no room.
        for id in &unconfirmed[1..] {
            s.confirm(&mut t, *id);
        }
        let id = s.new_clientid(&mut t);
        t.clients.insert(
            id,
            Client::new(b"last".to_vec(), [0; 8], Principal::None, s.now()),
        );
        s.confirm(&mut t, id);
        assert_eq!(t.clients.len(), MAX_CLIENTS);
        assert!(!s.make_room(&mut t));
        // A client whose lease ran out makes room.
        if let Some(c) = t.clients.get_mut(&unconfirmed[1]) {
            c.renewed = s.now() - s.config.lease - Duration::from_secs(1);
        }
        assert!(s.make_room(&mut t));
        assert!(!t.clients.contains_key(&unconfirmed[1]));
    }
}
