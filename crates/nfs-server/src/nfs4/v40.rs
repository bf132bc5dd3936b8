//! NFSv4.0 (RFC 7530) on the same operations and state as NFSv4.1: what minor version 0
//! has instead of sessions.
//!
//! - Client ids come from SETCLIENTID / SETCLIENTID_CONFIRM (section 16.33.5's cases) and
//!   share the client records of [`super::state`]: leases, the on-disk list for recovery,
//!   reclaims during grace. The callback address a client gives is probed once with CB_NULL
//!   (only when it is the caller's own address, so no client can make the server connect
//!   elsewhere); no delegation is ever handed out, so a down path costs nothing.
//! - Leases are renewed by RENEW and by every operation that names the client's id or one of
//!   its stateids (section 9.5).
//! - Open and lock owners carry sequence ids (section 9.1.3): a request with the next seqid
//!   runs, one with the last seqid gets the owner's cached reply again, anything else is
//!   BAD_SEQID. A new open owner's first OPEN asks for OPEN_CONFIRM, and its stateid is
//!   refused until then (section 9.1.11).
//! - RELEASE_LOCKOWNER drops a lock owner that holds no locks.
//!
//! The compound driver ([`super::Compound`]) sends every minor-version-0 op through
//! [`Compound::op40`], which does the above around the shared operation code. The tables
//! here are bounded: per-client owners ([`MAX_OWNERS_PER_CLIENT`]) and the cached reply of
//! each owner's last request only; entries of clients that are gone are dropped lazily.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tracing::info;

use super::state::{Principal, Stateful};
use super::xdr::*;
use super::{Compound, Fh};

/// Open plus lock owners one client may have.
pub const MAX_OWNERS_PER_CLIENT: usize = 4096;
/// The longest reply kept for an owner's replay (an OPEN result with its attribute bitmap).
const MAX_OWNER_REPLY: usize = 1024;

/// OPEN4_RESULT_CONFIRM (RFC 7530 section 16.16.5).
const RESULT_CONFIRM: u32 = 0x2;

/// Statuses after which an owner's seqid does not advance (RFC 7530 section 9.1.7).
fn keeps_seqid(status: u32) -> bool {
    matches!(
        status,
        st::STALE_CLIENTID
            | st::STALE_STATEID
            | st::BAD_STATEID
            | st::BAD_SEQID
            | st::BADXDR
            | st::RESOURCE
            | st::NOFILEHANDLE
            | st::MOVED
    )
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum OwnerKind {
    Open,
    Lock,
}

type OwnerKey = (OwnerKind, u64, Vec<u8>);

/// An open or lock owner's sequence state.
struct OwnerRec {
    /// The seqid of the last request that advanced it.
    seqid: u32,
    /// That request's op result (status, body), for a retransmission.
    reply: Option<(u32, Vec<u8>)>,
    /// Open owners: OPEN_CONFIRM done (lock owners are always confirmed).
    confirmed: bool,
    /// The stateid that request named, so a retransmitted CLOSE finds its owner after the
    /// state is gone.
    sid: Option<[u8; 12]>,
}

/// A SETCLIENTID's callback (`cb_client4`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Callback {
    program: u32,
    netid: String,
    addr: String,
}

/// What minor version 0 keeps per client id beside the shared record.
struct ClientInfo {
    /// The confirm verifier SETCLIENTID handed out for this id.
    confirm: [u8; 8],
    callback: Callback,
    /// A callback update of a confirmed id (case 3), waiting for its confirm verifier.
    pending: Option<([u8; 8], Callback)>,
}

#[derive(Default)]
struct Tables40 {
    clients: HashMap<u64, ClientInfo>,
    owners: HashMap<OwnerKey, OwnerRec>,
    next_verifier: u64,
}

/// The minor-version-0 tables.
#[derive(Default, Clone)]
pub struct V40 {
    t: Arc<Mutex<Tables40>>,
}

impl V40 {
    fn lock(&self) -> MutexGuard<'_, Tables40> {
        self.t.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What a seqid-carrying op names: the owner it advances, and for a LOCK by a new lock owner
/// the open owner it advances as well.
struct SeqOp {
    owner: OwnerKey,
    seqid: u32,
    /// The stateid the op names, if any.
    sid: Option<[u8; 12]>,
    /// An OPEN that reclaims (CLAIM_PREVIOUS): its owner needs no OPEN_CONFIRM.
    reclaim: bool,
    /// A new lock owner: its first seqid (it is created, not checked).
    new_lock_owner: Option<(OwnerKey, u32)>,
}

impl Compound<'_> {
    /// Runs one minor-version-0 op.
    pub(super) fn op40(&mut self, op: u32, d: &mut Dec<'_>, out: &mut Enc) -> DResult<u32> {
        match op {
            OP_SETCLIENTID => self.setclientid(d, out),
            OP_SETCLIENTID_CONFIRM => self.setclientid_confirm(d),
            OP_RENEW => {
                let id = d.u64()?;
                Ok(self.renew(id))
            }
            OP_RELEASE_LOCKOWNER => self.release_lockowner(d),
            OP_OPEN | OP_OPEN_CONFIRM | OP_OPEN_DOWNGRADE | OP_CLOSE | OP_LOCK | OP_LOCKU => {
                self.sequenced(op, d, out)
            }
            OP_LOCKT => {
                // locktype, offset, length, then the lock owner's client id.
                let mut peek = d.clone();
                peek.u32()?;
                peek.u64()?;
                peek.u64()?;
                let id = peek.u64()?;
                tri!(self.use_client(id));
                self.op_common(op, d, out)
            }
            OP_READ | OP_WRITE | OP_SETATTR => {
                let sid = d.clone().stateid()?;
                tri!(self.use_stateid(&sid));
                self.op_common(op, d, out)
            }
            _ => self.op_common(op, d, out),
        }
    }

    /// A client id named by an op: it must be confirmed; its lease is renewed and it becomes
    /// the compound's client.
    fn use_client(&mut self, id: u64) -> Result<(), u32> {
        let state = &self.inner.state;
        let mut t = state.lock();
        state.sweep(&mut t);
        match t.clients.get_mut(&id) {
            Some(c) if c.confirmed => {
                c.renewed = state.now();
                self.clientid = Some(id);
                Ok(())
            }
            _ => Err(st::STALE_CLIENTID),
        }
    }

    /// A stateid named by an op: its client's lease is renewed and it becomes the compound's
    /// client. Special stateids pass; stateids of an open owner not yet confirmed do not.
    fn use_stateid(&mut self, sid: &StateId) -> Result<(), u32> {
        if sid.is_special() {
            return Ok(());
        }
        let state = &self.inner.state;
        let (clientid, open_owner) = {
            let t = state.lock();
            match t.states.get(&sid.other) {
                Some(Stateful::Open(o)) => (o.clientid, o.owner.clone()),
                Some(Stateful::Lock(l)) => match t.states.get(&l.open) {
                    Some(Stateful::Open(o)) => (l.clientid, o.owner.clone()),
                    _ => (l.clientid, Vec::new()),
                },
                None if state.from_earlier_boot(&sid.other) => return Err(st::STALE_STATEID),
                None => return Err(st::BAD_STATEID),
            }
        };
        let key = (OwnerKind::Open, clientid, open_owner);
        if self
            .inner
            .v40
            .lock()
            .owners
            .get(&key)
            .is_some_and(|o| !o.confirmed)
        {
            return Err(st::BAD_STATEID);
        }
        self.use_client(clientid)
    }

    /// The owner (and seqid) a sequenced op names, read ahead of the op itself.
    fn seq_op(&self, op: u32, d: &Dec<'_>) -> DResult<Result<SeqOp, u32>> {
        let mut p = d.clone();
        let from_stateid = |sid: StateId, seqid: u32, kind: OwnerKind| {
            let t = self.inner.state.lock();
            let owner = match (t.states.get(&sid.other), kind) {
                (Some(Stateful::Open(o)), OwnerKind::Open) => (kind, o.clientid, o.owner.clone()),
                (Some(Stateful::Lock(l)), OwnerKind::Lock) => (kind, l.clientid, l.owner.clone()),
                (None, _) if self.inner.state.from_earlier_boot(&sid.other) => {
                    return Err(st::STALE_STATEID);
                }
                // Gone (closed, unlocked and released): a retransmission of the request
                // that ended it still gets its reply.
                (None, _) => {
                    drop(t);
                    let v = self.inner.v40.lock();
                    match v
                        .owners
                        .iter()
                        .find(|(k, r)| k.0 == kind && r.sid == Some(sid.other) && r.seqid == seqid)
                    {
                        Some((k, _)) => k.clone(),
                        None => return Err(st::BAD_STATEID),
                    }
                }
                _ => return Err(st::BAD_STATEID),
            };
            Ok(SeqOp {
                owner,
                seqid,
                sid: Some(sid.other),
                reclaim: false,
                new_lock_owner: None,
            })
        };
        Ok(match op {
            OP_OPEN => {
                let seqid = p.u32()?;
                p.u32()?;
                p.u32()?;
                let clientid = p.u64()?;
                let owner = p.opaque(1024)?.to_vec();
                // openflag4, then the claim.
                if p.u32()? == 1 {
                    match p.u32()? {
                        0 | 1 => {
                            p.bitmap()?;
                            p.opaque(64 * 1024)?;
                        }
                        _ => {
                            p.fixed::<8>()?;
                        }
                    }
                }
                let reclaim = p.u32()? == 1;
                Ok(SeqOp {
                    owner: (OwnerKind::Open, clientid, owner),
                    seqid,
                    sid: None,
                    reclaim,
                    new_lock_owner: None,
                })
            }
            OP_OPEN_CONFIRM | OP_OPEN_DOWNGRADE => {
                let sid = p.stateid()?;
                let seqid = p.u32()?;
                from_stateid(sid, seqid, OwnerKind::Open)
            }
            OP_CLOSE => {
                let seqid = p.u32()?;
                let sid = p.stateid()?;
                from_stateid(sid, seqid, OwnerKind::Open)
            }
            OP_LOCKU => {
                p.u32()?;
                let seqid = p.u32()?;
                let sid = p.stateid()?;
                from_stateid(sid, seqid, OwnerKind::Lock)
            }
            OP_LOCK => {
                p.u32()?;
                p.bool()?;
                p.u64()?;
                p.u64()?;
                if p.bool()? {
                    let open_seqid = p.u32()?;
                    let open = p.stateid()?;
                    let lock_seqid = p.u32()?;
                    let clientid = p.u64()?;
                    let owner = p.opaque(1024)?.to_vec();
                    from_stateid(open, open_seqid, OwnerKind::Open).map(|mut s| {
                        s.new_lock_owner = Some(((OwnerKind::Lock, clientid, owner), lock_seqid));
                        s
                    })
                } else {
                    let sid = p.stateid()?;
                    let seqid = p.u32()?;
                    from_stateid(sid, seqid, OwnerKind::Lock)
                }
            }
            _ => Err(st::SERVERFAULT),
        })
    }

    /// An op that advances an owner's seqid (RFC 7530 section 9.1.3): replays, BAD_SEQID,
    /// or runs it and keeps its reply.
    fn sequenced(&mut self, op: u32, d: &mut Dec<'_>, out: &mut Enc) -> DResult<u32> {
        let s = tri!(self.seq_op(op, d)?);
        let clientid = s.owner.1;
        tri!(self.use_client(clientid));
        if op == OP_LOCK
            && let Some(((_, lock_client, _), _)) = &s.new_lock_owner
            && *lock_client != clientid
        {
            return Ok(st::BAD_STATEID);
        }
        let v40 = self.inner.v40.clone();
        // Where this owner stands: new, a retransmission of its last request, the next
        // request, or out of order.
        let new_owner = {
            let t = v40.lock();
            match t.owners.get(&s.owner) {
                Some(rec) if s.seqid == rec.seqid => {
                    return Ok(match &rec.reply {
                        Some((status, body)) => {
                            out.buf.extend_from_slice(body);
                            self.keep_body = *status != st::OK;
                            *status
                        }
                        None => st::BAD_SEQID,
                    });
                }
                Some(rec) if s.seqid == rec.seqid.wrapping_add(1) => {
                    // An unconfirmed open owner may only be confirmed, or start over.
                    if !rec.confirmed && !matches!(op, OP_OPEN | OP_OPEN_CONFIRM) {
                        return Ok(st::BAD_SEQID);
                    }
                    !rec.confirmed && op == OP_OPEN
                }
                // An unconfirmed open owner's OPEN starts it over (section 16.16.5).
                Some(rec) if !rec.confirmed && op == OP_OPEN => true,
                Some(_) => return Ok(st::BAD_SEQID),
                None if op != OP_OPEN => return Ok(st::BAD_SEQID),
                None => {
                    let per_client = t.owners.keys().filter(|k| k.1 == clientid).count();
                    if per_client >= MAX_OWNERS_PER_CLIENT {
                        drop(t);
                        self.forget_gone_clients();
                        let t = v40.lock();
                        if t.owners.keys().filter(|k| k.1 == clientid).count()
                            >= MAX_OWNERS_PER_CLIENT
                        {
                            return Ok(st::RESOURCE);
                        }
                    }
                    true
                }
            }
        };
        let start = out.len();
        let status = if op == OP_OPEN_CONFIRM {
            self.open_confirm(d, out)?
        } else {
            self.op_common(op, d, out)?
        };
        // A reclaim confirms its owner: the client held it before the restart (as knfsd
        // does; Linux sends no OPEN_CONFIRM after a reclaim).
        let new_owner = new_owner && !s.reclaim;
        if op == OP_OPEN && status == st::OK && new_owner {
            // rflags follow the stateid (16) and change_info4 (20).
            let at = start + 16 + 20;
            if let Some(w) = out.buf.get_mut(at..at + 4) {
                let flags = u32::from_be_bytes([w[0], w[1], w[2], w[3]]) | RESULT_CONFIRM;
                w.copy_from_slice(&flags.to_be_bytes());
            }
        }
        if keeps_seqid(status) {
            return Ok(status);
        }
        let body = out.buf[start..].to_vec();
        let reply = (body.len() <= MAX_OWNER_REPLY).then_some((status, body));
        let mut t = v40.lock();
        if new_owner && status != st::OK {
            // Nothing refers to an owner whose first OPEN failed.
            t.owners.remove(&s.owner);
        } else {
            let confirmed = if new_owner {
                false
            } else {
                let before = t.owners.get(&s.owner).is_none_or(|r| r.confirmed);
                before || (op == OP_OPEN_CONFIRM && status == st::OK)
            };
            t.owners.insert(
                s.owner,
                OwnerRec {
                    seqid: s.seqid,
                    reply: reply.clone(),
                    confirmed,
                    sid: s.sid,
                },
            );
        }
        if let Some((lock_owner, lock_seqid)) = s.new_lock_owner
            && status == st::OK
        {
            t.owners.insert(
                lock_owner,
                OwnerRec {
                    seqid: lock_seqid,
                    reply,
                    confirmed: true,
                    sid: None,
                },
            );
        }
        Ok(status)
    }

    /// OPEN_CONFIRM (RFC 7530 section 16.18): the open stateid's seqid moves on.
    fn open_confirm(&mut self, d: &mut Dec<'_>, out: &mut Enc) -> DResult<u32> {
        let sid = d.stateid()?;
        let _seqid = d.u32()?;
        if !matches!(self.cur, Some(Fh::Vol(_))) {
            return Ok(if self.cur.is_none() {
                st::NOFILEHANDLE
            } else {
                st::ISDIR
            });
        }
        let file = self.cur_bytes();
        let mut t = self.inner.state.lock();
        let Some(Stateful::Open(o)) = t.states.get_mut(&sid.other) else {
            return Ok(st::BAD_STATEID);
        };
        if o.file != file {
            return Ok(st::BAD_STATEID);
        }
        if sid.seqid != o.seqid {
            return Ok(if sid.seqid < o.seqid {
                st::OLD_STATEID
            } else {
                st::BAD_STATEID
            });
        }
        o.seqid = o.seqid.wrapping_add(1);
        let new = StateId {
            seqid: o.seqid,
            other: sid.other,
        };
        drop(t);
        out.stateid(&new);
        Ok(st::OK)
    }

    /// RENEW (RFC 7530 section 16.29).
    fn renew(&mut self, id: u64) -> u32 {
        match self.use_client(id) {
            Ok(()) => st::OK,
            Err(s) => s,
        }
    }

    /// RELEASE_LOCKOWNER (RFC 7530 section 16.37): forgets a lock owner holding no locks.
    fn release_lockowner(&mut self, d: &mut Dec<'_>) -> DResult<u32> {
        let clientid = d.u64()?;
        let owner = d.opaque(1024)?.to_vec();
        tri!(self.use_client(clientid));
        let state = &self.inner.state;
        let mut t = state.lock();
        let mine: Vec<([u8; 12], Vec<u8>)> = t
            .states
            .iter()
            .filter_map(|(k, s)| match s {
                Stateful::Lock(l) if l.clientid == clientid && l.owner == owner => {
                    Some((*k, l.file.clone()))
                }
                _ => None,
            })
            .collect();
        let as_owner = crate::locks::Owner::V4 {
            clientid,
            owner: owner.clone(),
        };
        if mine
            .iter()
            .any(|(_, file)| state.locks.holds(file, &as_owner))
        {
            return Ok(st::LOCKS_HELD);
        }
        for (k, _) in &mine {
            state.drop_state(&mut t, k);
        }
        drop(t);
        self.inner
            .v40
            .lock()
            .owners
            .remove(&(OwnerKind::Lock, clientid, owner));
        Ok(st::OK)
    }

    /// SETCLIENTID (RFC 7530 section 16.33).
    fn setclientid(&mut self, d: &mut Dec<'_>, out: &mut Enc) -> DResult<u32> {
        let verifier = d.fixed::<8>()?;
        let owner = d.opaque(1024)?.to_vec();
        let callback = Callback {
            program: d.u32()?,
            netid: String::from_utf8_lossy(d.opaque(64)?).into_owned(),
            addr: String::from_utf8_lossy(d.opaque(128)?).into_owned(),
        };
        let _ident = d.u32()?;
        let principal = Principal::of(&self.ctx.credential);
        let state = &self.inner.state;
        let v40 = self.inner.v40.clone();
        let mut t = state.lock();
        state.sweep(&mut t);
        let confirmed = t
            .clients
            .iter()
            .find(|(_, c)| c.owner == owner && c.confirmed)
            .map(|(id, c)| {
                // An expired (courtesy) client's id may be taken over, as in EXCHANGE_ID.
                let in_use = state.lease_running(c);
                (
                    *id,
                    c.verifier == verifier,
                    c.principal == principal,
                    in_use,
                )
            });
        let confirm = {
            let mut v = v40.lock();
            v.next_verifier += 1;
            let n = v.next_verifier ^ (u64::from(state.boot) << 32);
            n.to_be_bytes()
        };
        match confirmed {
            // Another principal's live client: refused, with the address it uses.
            Some((id, _, false, true)) => {
                let cb = v40
                    .lock()
                    .clients
                    .get(&id)
                    .map(|c| c.callback.clone())
                    .unwrap_or_default();
                out.opaque(cb.netid.as_bytes()).opaque(cb.addr.as_bytes());
                self.keep_body = true;
                Ok(st::CLID_INUSE)
            }
            // The same client updating its callback: same id, new confirm verifier.
            Some((id, true, true, _)) => {
                let mut v = v40.lock();
                let info = v.clients.entry(id).or_insert_with(|| ClientInfo {
                    confirm,
                    callback: callback.clone(),
                    pending: None,
                });
                info.pending = Some((confirm, callback));
                out.u64(id).fixed(&confirm);
                Ok(st::OK)
            }
            // A new client, a rebooted one (new verifier), or an abandoned owner: a new
            // unconfirmed record; the confirmed one goes when this one is confirmed.
            _ => {
                let Some(id) = state.new_record(&mut t, owner, verifier, principal) else {
                    return Ok(st::RESOURCE);
                };
                drop(t);
                v40.lock().clients.insert(
                    id,
                    ClientInfo {
                        confirm,
                        callback,
                        pending: None,
                    },
                );
                out.u64(id).fixed(&confirm);
                Ok(st::OK)
            }
        }
    }

    /// SETCLIENTID_CONFIRM (RFC 7530 section 16.34).
    fn setclientid_confirm(&mut self, d: &mut Dec<'_>) -> DResult<u32> {
        let id = d.u64()?;
        let verifier = d.fixed::<8>()?;
        let state = &self.inner.state;
        let v40 = self.inner.v40.clone();
        let mut t = state.lock();
        state.sweep(&mut t);
        let Some(c) = t.clients.get(&id) else {
            return Ok(st::STALE_CLIENTID);
        };
        if c.principal != Principal::of(&self.ctx.credential) {
            return Ok(st::CLID_INUSE);
        }
        let was_confirmed = c.confirmed;
        let probe = {
            let mut v = v40.lock();
            let Some(info) = v.clients.get_mut(&id) else {
                // A minor-version-1 client id.
                return Ok(st::STALE_CLIENTID);
            };
            match &info.pending {
                Some((confirm, cb)) if *confirm == verifier => {
                    info.callback = cb.clone();
                    info.confirm = *confirm;
                    info.pending = None;
                    Some(info.callback.clone())
                }
                // Already confirmed: a retransmission.
                _ if was_confirmed && info.confirm == verifier => None,
                _ if !was_confirmed && info.confirm == verifier => Some(info.callback.clone()),
                _ => return Ok(st::STALE_CLIENTID),
            }
        };
        if !was_confirmed {
            state.confirm(&mut t, id);
        }
        if let Some(c) = t.clients.get_mut(&id) {
            c.renewed = state.now();
        }
        drop(t);
        if let Some(cb) = probe {
            probe_callback(id, cb, self.ctx.peer);
        }
        Ok(st::OK)
    }

    /// Drops the minor-version-0 entries of client ids that no longer exist.
    fn forget_gone_clients(&self) {
        let live: std::collections::HashSet<u64> =
            self.inner.state.lock().clients.keys().copied().collect();
        let mut v = self.inner.v40.lock();
        v.clients.retain(|id, _| live.contains(id));
        v.owners.retain(|k, _| live.contains(&k.1));
    }
}

/// The callback address (`r_netid`, `r_addr` "h1.h2.h3.h4.p1.p2" or "ipv6.p1.p2") as a
/// socket address.
fn callback_addr(cb: &Callback) -> Option<SocketAddr> {
    if !matches!(cb.netid.as_str(), "tcp" | "tcp6") {
        return None;
    }
    let (host, port) = cb.addr.rsplit_once('.')?;
    let (host, hi) = host.rsplit_once('.')?;
    let port = u16::from(hi.parse::<u8>().ok()?) << 8 | u16::from(port.parse::<u8>().ok()?);
    let ip: IpAddr = host.parse().ok()?;
    Some(SocketAddr::new(ip, port))
}

/// Calls CB_NULL on the client's callback address in the background, if that address is the
/// client's own (the server never connects where a client merely points it).
fn probe_callback(clientid: u64, cb: Callback, peer: SocketAddr) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let target = callback_addr(&cb).filter(|a| a.ip().to_canonical() == peer.ip().to_canonical());
    rt.spawn(async move {
        let up = match target {
            Some(addr) => cb_null(addr, cb.program).await,
            None => false,
        };
        if up {
            info!(clientid, addr = %cb.addr, "NFSv4.0 callback path up");
        } else {
            info!(
                clientid,
                netid = %cb.netid,
                addr = %cb.addr,
                "NFSv4.0 callback path down or not probed (no delegations are handed out, so nothing depends on it)"
            );
        }
    });
}

/// One CB_NULL call (program `program`, version 1, procedure 0) over TCP; true when answered.
async fn cb_null(addr: SocketAddr, program: u32) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let call = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        let words = [0x8000_0028u32, 1, 0, 2, program, 1, 0, 0, 0, 0, 0];
        let msg: Vec<u8> = words.iter().flat_map(|w| w.to_be_bytes()).collect();
        s.write_all(&msg).await.ok()?;
        let mut head = [0u8; 4 + 24];
        s.read_exact(&mut head).await.ok()?;
        let word = |i: usize| u32::from_be_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
        // xid 1, REPLY, MSG_ACCEPTED, AUTH_NONE verifier, SUCCESS.
        Some(word(4) == 1 && word(8) == 1 && word(12) == 0 && word(24) == 0)
    };
    tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callback_addresses_parse() {
        let cb = |netid: &str, addr: &str| Callback {
            program: 0x4000_0000,
            netid: netid.into(),
            addr: addr.into(),
        };
        assert_eq!(
            callback_addr(&cb("tcp", "10.0.2.15.3.233")),
            Some("10.0.2.15:1001".parse().unwrap())
        );
        assert_eq!(
            callback_addr(&cb("tcp6", "::1.0.80")),
            Some("[::1]:80".parse().unwrap())
        );
        assert_eq!(callback_addr(&cb("udp", "10.0.2.15.3.233")), None);
        assert_eq!(callback_addr(&cb("tcp", "10.0.2.15.999.1")), None);
        assert_eq!(callback_addr(&cb("tcp", "")), None);
    }
}
