//! NFSv4.1 (RFC 8881) and the cheap parts of 4.2 (RFC 7862: SEEK, ALLOCATE, DEALLOCATE;
//! RFC 8276 extended attributes, in [`xattr`]) on the NFS program's version 4.
//!
//! A COMPOUND runs on one blocking worker thread, operation after operation, with a current
//! and a saved file handle. Sessions give exactly-once semantics: SEQUENCE names a slot, a
//! retransmission on the same slot and sequence id gets the cached reply. File-system work
//! goes through `export-store` exactly as NFSv3 does, with the same persistent handles, so a
//! volume's v3 and v4 handles are the same bytes.
//!
//! The namespace: a read-only pseudo-root holding `export`, which lists the volumes by name,
//! so `SERVER:/export/<volume>` is the same path for v3 and v4.
//!
//! A session holds its compounds to what CREATE_SESSION negotiated (RFC 8881 section
//! 2.10.6.4): requests larger than `ca_maxrequestsize` or with more than `ca_maxoperations`
//! ops are refused on SEQUENCE, and a reply never grows past `ca_maxresponsesize` (or
//! `ca_maxresponsesize_cached` when the client asked to cache it): see [`Budget`].

/// Evaluates a `Result<T, u32>` in an op, returning the status on error.
macro_rules! tri {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(s) => return Ok(s),
        }
    };
}

mod attrs;
mod fileops;
pub mod state;
mod v40;
mod xattr;
pub mod xdr;

use std::os::fd::OwnedFd;
use std::sync::Arc;

use export_store::access::Refused;
use export_store::{Attr, ExportStore, Identity, NodeKind, Object};
use oncrpc::{CallArgs, CallContext, CallNames, Reply, ReplySender, RpcService};
use tracing::{debug, warn};

use crate::metrics::NfsMetrics;
use crate::{MAX_IO, NFS_PROGRAM};
use state::{Session, Slot, State};
use xdr::*;

/// How long one compound may hold ops: a bound on work per request.
const MAX_OPS: u32 = 64;
/// Largest request and reply we negotiate: a full-size WRITE or READ plus headers.
const MAX_MSG: u32 = MAX_IO + 64 * 1024;
/// Smallest `ca_maxrequestsize` / `ca_maxresponsesize` a session may have: below this not
/// even a SEQUENCE fits (RFC 8881 section 18.36.3: NFS4ERR_TOOSMALL).
const MIN_MSG: u32 = 256;
/// The RPC reply header before a COMPOUND's results (xid, message type, reply status,
/// AUTH_NONE verifier, accept status): part of what `ca_maxresponsesize` counts.
const RPC_REPLY_HEADER: usize = 24;
/// An op's number and status: what a failing op adds to a reply.
const OP_HEADER: usize = 8;

/// How large a COMPOUND's reply may grow: the session's `ca_maxresponsesize`, and
/// `ca_maxresponsesize_cached` when SEQUENCE asked to cache the reply. Lengths count the
/// whole RPC reply (RFC 8881 section 18.36: headers included, record marking excluded),
/// file data sent from the page cache included.
///
/// A reply always keeps room for one more op's number and status until its last op, so an
/// op that does not fit can still say so: it fails with NFS4ERR_REP_TOO_BIG (or
/// NFS4ERR_REP_TOO_BIG_TO_CACHE) and the reply holds the results before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Budget {
    max_response: usize,
    /// `Some` when the reply is to be cached.
    max_cached: Option<usize>,
}

impl Budget {
    /// Before SEQUENCE (and for the ops that stand alone): the most any session allows.
    const SESSIONLESS: Budget = Budget {
        max_response: MAX_MSG as usize,
        max_cached: None,
    };

    fn limit(&self) -> usize {
        self.max_cached
            .map_or(self.max_response, |c| c.min(self.max_response))
    }

    /// The status for a reply of `len` bytes, or `None` if it fits. `last`: no op follows,
    /// so no room needs to be kept for one.
    fn check(&self, len: usize, last: bool) -> Option<u32> {
        let len = if last { len } else { len + OP_HEADER };
        if len > self.max_response {
            Some(st::REP_TOO_BIG)
        } else if self.max_cached.is_some_and(|c| len > c) {
            Some(st::REP_TOO_BIG_TO_CACHE)
        } else {
            None
        }
    }

    /// How many bytes may still be added to a reply of `len` bytes.
    fn room(&self, len: usize, last: bool) -> usize {
        let keep = if last { 0 } else { OP_HEADER };
        self.limit().saturating_sub(len + keep)
    }

    /// The status for running out of room: which of the two limits binds.
    fn exceeded(&self) -> u32 {
        self.check(self.limit() + 1, true)
            .unwrap_or(st::REP_TOO_BIG)
    }
}

/// The largest result (after the op's number and status) of an op that changes state: such
/// an op runs only when that much still fits, so it never succeeds in a reply that cannot
/// carry its result. Ops that change nothing are checked after running, and their result is
/// replaced by NFS4ERR_REP_TOO_BIG if it did not fit; READ and READDIR shrink to fit.
fn result_reserve(op: u32) -> usize {
    // A bitmap4 of the attributes we set: at most 8 words (xdr::Dec::bitmap).
    const BITMAP: usize = 4 + 8 * 4;
    const CHANGE_INFO: usize = 4 + 8 + 8;
    const STATEID: usize = 16;
    match op {
        // stateid, change_info, rflags, attrset, delegation (none: type and reason, flag).
        OP_OPEN => STATEID + CHANGE_INFO + 4 + BITMAP + 12,
        OP_CREATE => CHANGE_INFO + BITMAP,
        OP_SETATTR => BITMAP,
        OP_REMOVE | OP_LINK | OP_SETXATTR | OP_REMOVEXATTR => CHANGE_INFO,
        OP_RENAME => 2 * CHANGE_INFO,
        // count, committed, verifier.
        OP_WRITE => 4 + 4 + 8,
        OP_COMMIT => 8,
        OP_CLOSE | OP_OPEN_DOWNGRADE | OP_LOCK | OP_LOCKU => STATEID,
        _ => 0,
    }
}

/// A current or saved file handle.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Fh {
    /// The pseudo-root `/`.
    Root,
    /// The pseudo directory `/export`, listing the volumes.
    Export,
    /// A handle inside a volume (the persistent export-store handle).
    Vol(Vec<u8>),
}

const PSEUDO_PREFIX: &[u8; 7] = b"\xf4pseudo";

impl Fh {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Fh::Root => [&PSEUDO_PREFIX[..], &[0]].concat(),
            Fh::Export => [&PSEUDO_PREFIX[..], &[1]].concat(),
            Fh::Vol(h) => h.clone(),
        }
    }

    fn parse(b: &[u8]) -> Fh {
        if b.len() == 8 && b.starts_with(PSEUDO_PREFIX) {
            match b[7] {
                0 => return Fh::Root,
                1 => return Fh::Export,
                _ => {}
            }
        }
        Fh::Vol(b.to_vec())
    }
}

/// The NFSv4 program.
pub struct Nfs4Service {
    inner: Arc<Inner>,
    executor: Arc<crate::executor::Executor>,
}

struct Inner {
    store: Arc<ExportStore>,
    state: Arc<State>,
    write_verifier: [u8; 8],
    metrics: Option<Arc<NfsMetrics>>,
    started: (i64, u32),
    /// Minor version 0's client ids and owners.
    v40: v40::V40,
}

impl Nfs4Service {
    /// The service over `store` and the v4 `state`, running COMPOUNDs on `executor`'s
    /// threads.
    pub fn new(
        store: Arc<ExportStore>,
        state: Arc<State>,
        executor: Arc<crate::executor::Executor>,
        write_verifier: [u8; 8],
        metrics: Option<Arc<NfsMetrics>>,
    ) -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Self {
            inner: Arc::new(Inner {
                store,
                state,
                write_verifier,
                metrics,
                started: (now.as_secs() as i64, now.subsec_nanos()),
                v40: v40::V40::default(),
            }),
            executor,
        }
    }

    /// Runs one call on the calling thread (tests and fuzzing).
    pub fn call_blocking(&self, ctx: &CallContext, args: &[u8]) -> Reply {
        match ctx.proc_ {
            0 => Reply::Success(Vec::new()),
            1 => self
                .inner
                .durable_compound(ctx, args, args.len())
                .into_bytes(),
            _ => Reply::ProcUnavail,
        }
    }
}

impl RpcService for Nfs4Service {
    fn program(&self) -> u32 {
        NFS_PROGRAM
    }

    fn versions(&self) -> (u32, u32) {
        (4, 4)
    }

    fn call_names(&self, _vers: u32, proc_: u32) -> CallNames {
        CallNames {
            program: "nfs",
            version: "4",
            procedure: match proc_ {
                0 => "null",
                1 => "compound",
                _ => "unknown",
            },
        }
    }

    fn status_reader(&self) -> fn(u32, &[u8]) -> &'static str {
        status_name
    }

    /// A COMPOUND's reply may take what its session negotiated (`ca_maxresponsesize`, which
    /// the compound enforces); without a session (EXCHANGE_ID, CREATE_SESSION) it is small.
    fn reply_reservation(&self, _vers: u32, proc_: u32, args: &[u8]) -> usize {
        const SMALL: usize = oncrpc::server::DEFAULT_REPLY_RESERVATION;
        if proc_ != 1 {
            return SMALL;
        }
        let word = |at: usize| {
            args.get(at..at + 4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        };
        // tag<>, minorversion, op count, then the first op: SEQUENCE carries the session.
        let Some(tag) = word(0).filter(|n| *n <= 1024) else {
            return SMALL;
        };
        // Minor version 0 has no session to say how large a reply may be: the largest.
        if word(4 + tag + (4 - tag % 4) % 4) == Some(0) {
            return MAX_MSG as usize;
        }
        let first = 4 + tag + (4 - tag % 4) % 4 + 8;
        if word(first) != Some(OP_SEQUENCE as usize) {
            return SMALL;
        }
        let Some(sid) = args
            .get(first + 4..first + 20)
            .and_then(|b| <[u8; 16]>::try_from(b).ok())
        else {
            return SMALL;
        };
        let t = self.inner.state.lock();
        t.sessions
            .get(&sid)
            .map_or(SMALL, |s| (s.max_response as usize).max(SMALL))
    }

    fn call(&self, ctx: CallContext, args: CallArgs, reply: ReplySender) {
        if ctx.proc_ != 1 {
            return reply.send(self.call_blocking(&ctx, &[]));
        }
        if quick_compound(&self.inner.store, args.bytes()) {
            // Attributes, access and names of open handles: cheaper here, on the connection's
            // task, than handed to a worker and back. The thread is root again afterwards.
            let _scope = export_store::cred::Scope::enter();
            return reply.send(self.inner.compound(&ctx, args.bytes(), args.record_len()));
        }
        let inner = Arc::clone(&self.inner);
        self.executor.run_then_send(
            move || inner.durable_compound(&ctx, args.bytes(), args.record_len()),
            move |r| reply.send(r),
        );
    }
}

/// The metrics label of a COMPOUND reply: its overall status.
fn status_name(proc_: u32, body: &[u8]) -> &'static str {
    if proc_ != 1 {
        return "OK";
    }
    let Some(w) = body.get(..4) else {
        return "OK";
    };
    match u32::from_be_bytes([w[0], w[1], w[2], w[3]]) {
        st::OK => "OK",
        status => st::name(status),
    }
}

/// Whether a COMPOUND may run inline: at most 8 ops, each a quick one (the session's
/// SEQUENCE; the attributes, access and names of handles whose descriptors are already open),
/// every PUTFH's handle a pseudo-directory's or an open one. Anything else, or arguments that
/// do not decode, runs on a worker.
fn quick_compound(store: &ExportStore, args: &[u8]) -> bool {
    let mut d = Dec::new(args);
    let mut scan = || -> DResult<bool> {
        d.opaque(1024)?;
        let _minor = d.u32()?;
        let ops = d.u32()?;
        if ops > 8 {
            return Ok(false);
        }
        for _ in 0..ops {
            match d.u32()? {
                OP_SEQUENCE => {
                    d.fixed::<16>()?;
                    d.u32()?;
                    d.u32()?;
                    d.u32()?;
                    d.bool()?;
                }
                OP_PUTFH => {
                    let fh = d.opaque(128)?;
                    if !matches!(Fh::parse(fh), Fh::Root | Fh::Export) && !store.is_cached(fh) {
                        return Ok(false);
                    }
                }
                OP_PUTROOTFH | OP_GETFH | OP_SAVEFH | OP_RESTOREFH => {}
                OP_GETATTR => {
                    d.bitmap()?;
                }
                OP_ACCESS => {
                    d.u32()?;
                }
                OP_LOOKUP => {
                    d.opaque(1024)?;
                }
                _ => return Ok(false),
            }
        }
        Ok(true)
    };
    scan().unwrap_or(false)
}

/// Ops that are not in NFSv4.1 any more (RFC 8881 section 18: NOTSUPP).
fn v40_only(op: u32) -> bool {
    matches!(
        op,
        OP_OPEN_CONFIRM | OP_RENEW | OP_SETCLIENTID | OP_SETCLIENTID_CONFIRM | OP_RELEASE_LOCKOWNER
    )
}

/// Ops that may come without SEQUENCE, as the only op of their COMPOUND (or after a
/// SEQUENCE).
fn sessionless(op: u32) -> bool {
    matches!(
        op,
        OP_EXCHANGE_ID
            | OP_CREATE_SESSION
            | OP_DESTROY_SESSION
            | OP_DESTROY_CLIENTID
            | OP_BIND_CONN_TO_SESSION
    )
}

/// One COMPOUND in progress.
struct Compound<'a> {
    inner: &'a Inner,
    ctx: &'a CallContext,
    /// The minor version: 0 has owners' seqids where 1 and 2 have sessions.
    minor: u32,
    nops: u32,
    cur: Option<Fh>,
    saved: Option<Fh>,
    cur_sid: Option<StateId>,
    saved_sid: Option<StateId>,
    clientid: Option<u64>,
    /// Session, slot, and whether the client asked to cache the reply.
    slot: Option<(state::SessionId, usize, bool)>,
    /// The failing op's result keeps its body (LOCK denied, SETATTR's attrsset).
    keep_body: bool,
    /// SEQUENCE found a retransmission: the whole cached reply.
    replay: Option<Vec<u8>>,
    /// The op being run is the compound's last.
    last: bool,
    /// A final READ's data, left out of the results to be sent from the file.
    tail: Option<(Arc<OwnedFd>, u64, usize)>,
    /// The size of the whole RPC call (for `ca_maxrequestsize`).
    request_len: usize,
    /// How large the reply may grow (set by SEQUENCE).
    budget: Budget,
}

/// The slot is normally freed with the reply stored in it (see `Inner::compound`); this frees
/// it if an op panicked, or the session would answer NFS4ERR_DELAY on that slot forever.
impl Drop for Compound<'_> {
    fn drop(&mut self) {
        if let Some((sid, slot, _)) = self.slot.take() {
            let mut t = self.inner.state.lock();
            if let Some(s) = t.sessions.get_mut(&sid).and_then(|s| s.slots.get_mut(slot)) {
                s.busy = false;
            }
        }
    }
}

impl Inner {
    /// Runs a COMPOUND whose arguments are `args`, from an RPC call of `request_len` bytes.
    /// [`Inner::compound`], answered once the client records it changed are on disk (a
    /// COMPOUND that confirmed a client may then reclaim after a restart).
    fn durable_compound(&self, ctx: &CallContext, args: &[u8], request_len: usize) -> Reply {
        let answer = self.compound(ctx, args, request_len);
        self.state.records_durable();
        answer
    }

    fn compound(&self, ctx: &CallContext, args: &[u8], request_len: usize) -> Reply {
        let span = tracing::debug_span!("nfs4", xid = ctx.xid);
        let _entered = span.enter();
        let mut d = Dec::new(args);
        let Ok((tag, minor, nops)) = (|| Ok::<_, BadXdr>((d.opaque(1024)?, d.u32()?, d.u32()?)))()
        else {
            return Reply::GarbageArgs;
        };
        let mut out = Enc::new();
        out.u32(st::OK).opaque(tag).u32(0);
        let count_at = out.len() - 4;
        if minor > 2 {
            out.buf[..4].copy_from_slice(&st::MINOR_VERS_MISMATCH.to_be_bytes());
            return Reply::Success(out.buf);
        }
        let mut c = Compound {
            inner: self,
            ctx,
            minor,
            nops,
            cur: None,
            saved: None,
            cur_sid: None,
            saved_sid: None,
            clientid: None,
            slot: None,
            keep_body: false,
            replay: None,
            last: false,
            tail: None,
            request_len,
            budget: Budget::SESSIONLESS,
        };
        let mut status = st::OK;
        let mut done = 0u32;
        for i in 0..nops {
            let op = match d.u32() {
                Ok(op) => op,
                Err(BadXdr) => {
                    out.u32(OP_ILLEGAL).u32(st::BADXDR);
                    status = st::BADXDR;
                    done += 1;
                    break;
                }
            };
            let known = op >= OP_ACCESS
                && match minor {
                    // RFC 7530 section 16: the operations end with RELEASE_LOCKOWNER.
                    0 => op <= OP_RELEASE_LOCKOWNER,
                    1 => op <= OP_RECLAIM_COMPLETE,
                    _ => op <= OP_REMOVEXATTR,
                };
            let resop = if known { op } else { OP_ILLEGAL };
            out.u32(resop);
            let at = out.len();
            out.u32(st::OK);
            c.keep_body = false;
            c.last = i + 1 == nops;
            let s = if !known {
                st::OP_ILLEGAL
            } else if minor == 0 {
                // No sessions: every op may come anywhere (RFC 7530 section 15.2).
                match c.op(op, &mut d, &mut out) {
                    Ok(s) => c.fit(s, at, &mut out),
                    Err(BadXdr) => st::BADXDR,
                }
            } else if i == 0 && op != OP_SEQUENCE && !sessionless(op) {
                st::OP_NOT_IN_SESSION
            } else if i == 0 && sessionless(op) && nops != 1 {
                st::NOT_ONLY_OP
            } else if i > 0 && op == OP_SEQUENCE {
                st::SEQUENCE_POS
            } else if i > 0 && sessionless(op) && c.slot.is_none() {
                // They stand alone unless a SEQUENCE comes first (RFC 8881 sections
                // 18.34.3, 18.35.4, 18.36.4, 18.37.3, 18.50.3); then they run in its session.
                st::NOT_ONLY_OP
            } else if let Some(s) = c
                .budget
                .check(c.reply_len(&out) + result_reserve(op), c.last)
            {
                // Not even this op's result fits: it does not run.
                s
            } else {
                match c.op(op, &mut d, &mut out) {
                    Ok(s) => c.fit(s, at, &mut out),
                    Err(BadXdr) => st::BADXDR,
                }
            };
            if let Some(cached) = c.replay.take() {
                return Reply::Success(cached);
            }
            out.buf[at..at + 4].copy_from_slice(&s.to_be_bytes());
            tracing::trace!(op, status = s, len = out.len() - at, "op");
            done += 1;
            if s != st::OK {
                if !c.keep_body {
                    out.buf.truncate(at + 4);
                }
                debug!(op, status = s, "compound stopped");
                status = s;
                break;
            }
        }
        out.buf[..4].copy_from_slice(&status.to_be_bytes());
        out.buf[count_at..count_at + 4].copy_from_slice(&done.to_be_bytes());
        if let Some((sid, slot, cache)) = c.slot.take() {
            let mut t = self.state.lock();
            if let Some(s) = t.sessions.get_mut(&sid).and_then(|s| s.slots.get_mut(slot)) {
                s.busy = false;
                // The budget kept a reply to be cached within ca_maxresponsesize_cached.
                s.reply = (cache && out.len() <= state::MAX_CACHED_REPLY as usize)
                    .then(|| out.buf.clone());
            }
        }
        match c.tail.take() {
            Some((fd, offset, n)) if status == st::OK => crate::read_reply(out.buf, fd, offset, n),
            _ => Reply::Success(out.buf),
        }
    }

    fn identity(&self, ctx: &CallContext, obj: &Object) -> Identity {
        crate::nfs3::identity(&ctx.credential, obj)
    }
}

impl Compound<'_> {
    /// The length of the RPC reply so far, file data to be sent from the page cache included.
    fn reply_len(&self, out: &Enc) -> usize {
        RPC_REPLY_HEADER + out.len() + self.tail.as_ref().map_or(0, |t| t.2.next_multiple_of(4))
    }

    /// Bytes the running op may still add to the reply.
    fn room(&self, out: &Enc) -> usize {
        self.budget.room(self.reply_len(out), self.last)
    }

    /// An op ran with status `s`; its result starts at `at` (after its status). If the reply
    /// grew past the budget, the result is dropped and the op fails with REP_TOO_BIG.
    fn fit(&mut self, s: u32, at: usize, out: &mut Enc) -> u32 {
        match self.budget.check(self.reply_len(out), self.last) {
            None => s,
            Some(too_big) => {
                out.buf.truncate(at + 4);
                self.tail = None;
                self.keep_body = false;
                too_big
            }
        }
    }

    fn op(&mut self, op: u32, d: &mut Dec<'_>, out: &mut Enc) -> DResult<u32> {
        if self.minor == 0 {
            return self.op40(op, d, out);
        }
        if v40_only(op) {
            return Ok(st::NOTSUPP);
        }
        self.op_common(op, d, out)
    }

    /// The operations every minor version shares (and those of 4.1 and 4.2, which the
    /// compound driver never lets a 4.0 COMPOUND reach).
    fn op_common(&mut self, op: u32, d: &mut Dec<'_>, out: &mut Enc) -> DResult<u32> {
        match op {
            OP_EXCHANGE_ID => self.exchange_id(d, out),
            OP_CREATE_SESSION => self.create_session(d, out),
            OP_DESTROY_SESSION => self.destroy_session(d),
            OP_DESTROY_CLIENTID => self.destroy_clientid(d),
            OP_BIND_CONN_TO_SESSION => self.bind_conn(d, out),
            OP_SEQUENCE => self.sequence(d, out),
            OP_RECLAIM_COMPLETE => self.reclaim_complete(d),
            OP_SECINFO_NO_NAME => match d.u32()? {
                // The pseudo-root has no parent (RFC 8881 section 18.45.3).
                1 if matches!(self.cur, Some(Fh::Root)) => Ok(st::NOENT),
                0 | 1 => self.secinfo(out),
                _ => Ok(st::INVAL),
            },
            OP_SECINFO => {
                d.opaque(1024)?;
                self.secinfo(out)
            }
            OP_PUTROOTFH | OP_PUTPUBFH => {
                self.cur = Some(Fh::Root);
                self.cur_sid = None;
                Ok(st::OK)
            }
            OP_PUTFH => self.putfh(d),
            OP_GETFH => match &self.cur {
                Some(fh) => {
                    out.opaque(&fh.bytes());
                    Ok(st::OK)
                }
                None => Ok(st::NOFILEHANDLE),
            },
            OP_SAVEFH => match &self.cur {
                Some(fh) => {
                    self.saved = Some(fh.clone());
                    self.saved_sid = self.cur_sid;
                    Ok(st::OK)
                }
                None => Ok(st::NOFILEHANDLE),
            },
            OP_RESTOREFH => match &self.saved {
                Some(fh) => {
                    self.cur = Some(fh.clone());
                    self.cur_sid = self.saved_sid;
                    Ok(st::OK)
                }
                None => Ok(st::RESTOREFH),
            },
            OP_BACKCHANNEL_CTL => {
                d.u32()?;
                skip_sec_parms(d)?;
                Ok(st::OK)
            }
            OP_DELEGRETURN => {
                d.stateid()?;
                Ok(st::BAD_STATEID)
            }
            OP_DELEGPURGE
            | OP_OPENATTR
            | OP_GETDEVICEINFO
            | OP_GETDEVICELIST
            | OP_LAYOUTCOMMIT
            | OP_LAYOUTGET
            | OP_LAYOUTRETURN
            | OP_SET_SSV
            | OP_WANT_DELEGATION
            | OP_GET_DIR_DELEGATION => Ok(st::NOTSUPP),
            OP_GETXATTR | OP_SETXATTR | OP_LISTXATTRS | OP_REMOVEXATTR => self.xattr_op(op, d, out),
            _ => self.file_op(op, d, out),
        }
    }

    fn putfh(&mut self, d: &mut Dec<'_>) -> DResult<u32> {
        let b = d.opaque(128)?;
        let fh = Fh::parse(b);
        if let Fh::Vol(h) = &fh {
            match self.resolve(h) {
                Err(s) => {
                    debug!(handle = %state::hex(h), status = s, "PUTFH refused");
                    return Ok(s);
                }
                // Handles work without mounting: the caller must be one the volume admits.
                Ok(obj) => {
                    if let Err(refused) = obj.volume.options().admits(self.ctx.peer) {
                        crate::access_refused(&obj.volume, self.ctx.peer, refused);
                        return Ok(match refused {
                            Refused::Client => st::ACCESS,
                            Refused::InsecurePort => st::PERM,
                        });
                    }
                }
            }
        }
        self.cur = Some(fh);
        self.cur_sid = None;
        Ok(st::OK)
    }

    fn secinfo(&mut self, out: &mut Enc) -> DResult<u32> {
        if self.cur.is_none() {
            return Ok(st::NOFILEHANDLE);
        }
        // AUTH_SYS only; the current handle is consumed (RFC 8881 section 2.6.3.1.1.8).
        out.u32(1).u32(1);
        self.cur = None;
        Ok(st::OK)
    }

    fn exchange_id(&mut self, d: &mut Dec<'_>, out: &mut Enc) -> DResult<u32> {
        const USE_NON_PNFS: u32 = 0x0001_0000;
        const UPD_CONFIRMED_REC_A: u32 = 0x4000_0000;
        const CONFIRMED_R: u32 = 0x8000_0000;
        /// The flags a client may set (RFC 8881 section 18.35.1, EXCHGID4_FLAG_MASK_A).
        const CLIENT_FLAGS: u32 = 0x4007_0103;
        let verifier = d.fixed::<8>()?;
        let owner = d.opaque(1024)?.to_vec();
        let flags = d.u32()?;
        /// NFSv4.2 adds EXCHGID4_FLAG_SUPP_FENCE_OPS (RFC 7862 section 14.1).
        const SUPP_FENCE_OPS: u32 = 0x4;
        let allowed = if self.minor >= 2 {
            CLIENT_FLAGS | SUPP_FENCE_OPS
        } else {
            CLIENT_FLAGS
        };
        // Undefined bits, and CONFIRMED_R (the server's to set), are INVAL (section 18.35.3).
        let bad_flags = flags & !allowed != 0;
        match d.u32()? {
            0 => {}
            1 => {
                // SP4_MACH_CRED needs RPCSEC_GSS, which we do not offer.
                d.bitmap()?;
                d.bitmap()?;
                return Ok(st::NOTSUPP);
            }
            _ => return Ok(st::NOTSUPP),
        }
        let n = d.count(1, 12)?;
        for _ in 0..n {
            d.opaque(1024)?;
            d.opaque(1024)?;
            d.time()?;
        }
        if bad_flags {
            return Ok(st::INVAL);
        }
        let principal = state::Principal::of(&self.ctx.credential);
        let update = flags & UPD_CONFIRMED_REC_A != 0;
        let state = &self.inner.state;
        let mut t = state.lock();
        state.sweep(&mut t);
        let confirmed = t
            .clients
            .iter()
            .find(|(_, c)| c.owner == owner && c.confirmed)
            .map(|(id, c)| {
                // A courtesy client's state is expired state (RFC 8881 section 8.4.3): it
                // yields its owner to another principal (case 5 below), and goes when the
                // new record is confirmed.
                let in_use = state.lease_running(c);
                (
                    *id,
                    c.verifier == verifier,
                    c.principal == principal,
                    in_use,
                    c.cs_seq,
                )
            });
        // The cases of RFC 8881 section 18.35.5.
        let (clientid, seq, rflags) = match confirmed {
            // 2 and 6: the same client again, or updating its record.
            Some((id, true, true, _, cs)) => (id, cs.wrapping_add(1), USE_NON_PNFS | CONFIRMED_R),
            // 7: an update by another principal.
            Some((_, _, false, ..)) if update => return Ok(st::PERM),
            // 8: an update with another verifier.
            Some(_) if update => return Ok(st::NOT_SAME),
            // 9: an update of nothing.
            None if update => return Ok(st::NOENT),
            // 3: another principal presents a live client's owner. Its state stays.
            Some((id, _, false, true, _)) => {
                if oncrpc::throttle::allow("nfs4_foreign_principal").is_some() {
                    warn!(
                        clientid = id,
                        peer = %self.ctx.peer,
                        "NFSv4 EXCHANGE_ID for a live client's owner from another principal: refused"
                    );
                }
                return Ok(st::CLID_INUSE);
            }
            _ => {
                // 1, 4 and 5: a new client, a replaced unconfirmed record, a client that
                // rebooted (new verifier), or an abandoned owner taken over: a fresh
                // unconfirmed record. A confirmed one's state goes when the new one is
                // confirmed.
                let Some(id) = state.new_record(&mut t, owner, verifier, principal) else {
                    if oncrpc::throttle::allow("nfs4_client_table_full").is_some() {
                        warn!(
                            peer = %self.ctx.peer,
                            max = state::MAX_CLIENTS,
                            "NFSv4 client table full of live clients: a new client is asked to retry"
                        );
                    }
                    return Ok(st::DELAY);
                };
                (id, 1, USE_NON_PNFS)
            }
        };
        drop(t);
        out.u64(clientid).u32(seq).u32(rflags).u32(0);
        out.u64(0).opaque(&state.server_owner);
        out.opaque(&state.server_owner);
        out.u32(1)
            .opaque(b"nfs-server-provisioner")
            .opaque(concat!("nfs-server-provisioner ", env!("CARGO_PKG_VERSION")).as_bytes())
            .time((0, 0));
        Ok(st::OK)
    }

    fn create_session(&mut self, d: &mut Dec<'_>, out: &mut Enc) -> DResult<u32> {
        let clientid = d.u64()?;
        let seq = d.u32()?;
        let flags = d.u32()?;
        let fore = ChannelAttrs::decode(d)?;
        let back = ChannelAttrs::decode(d)?;
        let _cb_program = d.u32()?;
        skip_sec_parms(d)?;
        let state = &self.inner.state;
        let mut t = state.lock();
        state.sweep(&mut t);
        // An unconfirmed record gets no courtesy: it is gone once its lease ran out.
        if t.clients
            .get(&clientid)
            .is_some_and(|c| !c.confirmed && !state.lease_running(c))
        {
            state.expire(&mut t, clientid);
        }
        let Some(client) = t.clients.get(&clientid) else {
            return Ok(st::STALE_CLIENTID);
        };
        // Only the principal that created the record may make it a session (RFC 8881
        // section 18.36.4).
        if client.principal != state::Principal::of(&self.ctx.credential) {
            if oncrpc::throttle::allow("nfs4_foreign_principal").is_some() {
                warn!(
                    clientid,
                    peer = %self.ctx.peer,
                    "NFSv4 CREATE_SESSION by another principal than the client's: refused"
                );
            }
            return Ok(st::CLID_INUSE);
        }
        if seq == client.cs_seq
            && let Some(r) = &client.cs_reply
        {
            out.buf.extend_from_slice(r);
            return Ok(st::OK);
        }
        if seq != client.cs_seq.wrapping_add(1) {
            return Ok(st::SEQ_MISORDERED);
        }
        // PERSIST, CONN_BACK_CHAN and CONN_RDMA are the only flags (section 18.36.1).
        if flags & !0x7 != 0 {
            return Ok(st::INVAL);
        }
        if fore.max_request < MIN_MSG || fore.max_response < MIN_MSG {
            return Ok(st::TOOSMALL);
        }
        // What is granted never exceeds what was asked (RFC 8881 section 18.36.3) nor what
        // this server handles: a full-size READ or WRITE with its headers, a bounded cache.
        let max_response = fore.max_response.min(MAX_MSG);
        let fore = ChannelAttrs {
            header_pad: 0,
            max_request: fore.max_request.min(MAX_MSG),
            max_response,
            max_cached: fore
                .max_cached
                .min(state::MAX_CACHED_REPLY)
                .min(max_response),
            max_ops: fore.max_ops.clamp(2, MAX_OPS),
            max_requests: fore.max_requests.clamp(1, state::MAX_SLOTS),
        };
        let back = ChannelAttrs {
            header_pad: 0,
            max_requests: back.max_requests.clamp(1, 4),
            ..back
        };
        if t.clients
            .get(&clientid)
            .is_some_and(|c| c.sessions.len() >= state::MAX_SESSIONS_PER_CLIENT)
        {
            if let Some(suppressed) = oncrpc::throttle::allow("nfs4_too_many_sessions") {
                warn!(clientid, peer = %self.ctx.peer, suppressed,
                    max = state::MAX_SESSIONS_PER_CLIENT, "NFSv4 client asks for too many sessions");
            }
            return Ok(st::DELAY);
        }
        let sid = state.new_sessionid(&mut t, clientid);
        t.sessions.insert(
            sid,
            Session {
                clientid,
                slots: (0..fore.max_requests)
                    .map(|_| Slot {
                        seqid: 0,
                        busy: false,
                        reply: None,
                    })
                    .collect(),
                max_ops: fore.max_ops,
                max_request: fore.max_request,
                max_response: fore.max_response,
                max_cached: fore.max_cached,
            },
        );
        let mut r = Enc::new();
        // CREATE_SESSION4_FLAG_CONN_BACK_CHAN is granted when asked (see bind_conn);
        // sessions are never persistent.
        r.fixed(&sid).u32(seq).u32(flags & 0x2);
        fore.encode(&mut r);
        back.encode(&mut r);
        if let Some(c) = t.clients.get_mut(&clientid) {
            c.cs_seq = seq;
            c.cs_reply = Some(r.buf.clone());
            c.sessions.insert(sid);
            c.renewed = state.now();
        }
        state.confirm(&mut t, clientid);
        out.buf.extend_from_slice(&r.buf);
        Ok(st::OK)
    }

    fn destroy_session(&mut self, d: &mut Dec<'_>) -> DResult<u32> {
        let sid = d.fixed::<16>()?;
        let mut t = self.inner.state.lock();
        let Some(s) = t.sessions.remove(&sid) else {
            return Ok(st::BADSESSION);
        };
        if let Some(c) = t.clients.get_mut(&s.clientid) {
            c.sessions.remove(&sid);
        }
        Ok(st::OK)
    }

    fn destroy_clientid(&mut self, d: &mut Dec<'_>) -> DResult<u32> {
        let id = d.u64()?;
        let state = &self.inner.state;
        let mut t = state.lock();
        match t.clients.get(&id) {
            None => Ok(st::STALE_CLIENTID),
            Some(c) if !c.sessions.is_empty() => Ok(st::CLIENTID_BUSY),
            Some(_) => {
                state.expire(&mut t, id);
                Ok(st::OK)
            }
        }
    }

    fn bind_conn(&mut self, d: &mut Dec<'_>, out: &mut Enc) -> DResult<u32> {
        let sid = d.fixed::<16>()?;
        let dir = d.u32()?;
        let _rdma = d.bool()?;
        if !self.inner.state.lock().sessions.contains_key(&sid) {
            return Ok(st::BADSESSION);
        }
        // The connection is bound as asked. No delegations or layouts are ever handed out,
        // so nothing is sent on a back channel, but clients may insist on having one.
        let bound = match dir {
            1 => 1,
            2 => 2,
            3 | 7 => 3,
            _ => return Ok(st::INVAL),
        };
        out.fixed(&sid).u32(bound).bool(false);
        Ok(st::OK)
    }

    fn sequence(&mut self, d: &mut Dec<'_>, out: &mut Enc) -> DResult<u32> {
        let sid = d.fixed::<16>()?;
        let seq = d.u32()?;
        let slotid = d.u32()?;
        let _highest = d.u32()?;
        let cachethis = d.bool()?;
        let state = &self.inner.state;
        let mut t = state.lock();
        state.sweep(&mut t);
        let Some(session) = t.sessions.get_mut(&sid) else {
            return Ok(st::BADSESSION);
        };
        // The session's limits are checked before the slot: a compound refused here leaves
        // the slot as it was (RFC 8881 section 2.10.6.4).
        if self.nops > session.max_ops {
            return Ok(st::TOO_MANY_OPS);
        }
        if self.request_len > session.max_request as usize {
            return Ok(st::REQ_TOO_BIG);
        }
        let budget = Budget {
            max_response: session.max_response as usize,
            max_cached: cachethis.then_some(session.max_cached as usize),
        };
        // SEQUENCE's own result: session id, sequence id, slot id, two slot ids, flags.
        if let Some(s) = budget.check(self.reply_len(out) + 16 + 5 * 4, self.last) {
            return Ok(s);
        }
        let nslots = session.slots.len() as u32;
        let clientid = session.clientid;
        let Some(slot) = session.slots.get_mut(slotid as usize) else {
            return Ok(st::BADSLOT);
        };
        if seq == slot.seqid.wrapping_add(1) {
            slot.seqid = seq;
            slot.busy = true;
            slot.reply = None;
        } else if seq == slot.seqid {
            if slot.busy {
                return Ok(st::DELAY);
            }
            return match &slot.reply {
                Some(r) => {
                    self.replay = Some(r.clone());
                    Ok(st::OK)
                }
                None => Ok(st::RETRY_UNCACHED_REP),
            };
        } else {
            return Ok(st::SEQ_MISORDERED);
        }
        // A courtesy client nobody needed the state of simply continues: its lease runs again.
        if let Some(c) = t.clients.get_mut(&clientid) {
            c.renewed = state.now();
        }
        self.clientid = Some(clientid);
        self.slot = Some((sid, slotid as usize, cachethis));
        self.budget = budget;
        out.fixed(&sid)
            .u32(seq)
            .u32(slotid)
            .u32(nslots - 1)
            .u32(nslots - 1)
            .u32(0);
        Ok(st::OK)
    }

    fn reclaim_complete(&mut self, d: &mut Dec<'_>) -> DResult<u32> {
        let one_fs = d.bool()?;
        if one_fs {
            // Per-file-system completion: ours is one server-wide grace period.
            return Ok(st::OK);
        }
        let Some(id) = self.clientid else {
            return Ok(st::OP_NOT_IN_SESSION);
        };
        let state = &self.inner.state;
        let mut t = state.lock();
        Ok(match state.reclaim_complete(&mut t, id) {
            Ok(()) => st::OK,
            Err(s) => s,
        })
    }

    /// The object of the current handle inside a volume (`Err`: the status to answer; the
    /// pseudo directories answer `pseudo`).
    fn vol_obj(&self, pseudo: u32) -> Result<Object, u32> {
        self.vol_obj_held(pseudo).map(|(obj, _)| obj)
    }

    /// [`Compound::vol_obj`], and the open this client holds the object through when its
    /// handle no longer resolves (see [`Compound::resolve`]).
    fn vol_obj_held(&self, pseudo: u32) -> Result<(Object, Option<Arc<state::Held>>), u32> {
        match &self.cur {
            None => Err(st::NOFILEHANDLE),
            Some(Fh::Root | Fh::Export) => Err(pseudo),
            Some(Fh::Vol(h)) => self.resolve_held(h),
        }
    }

    /// Resolves a handle of a volume (`Err`: the status to answer).
    fn resolve(&self, h: &[u8]) -> Result<Object, u32> {
        self.resolve_held(h).map(|(obj, _)| obj)
    }

    /// Resolves a handle of a volume. A file this client has open stays usable through its
    /// open until CLOSE even after another client removed it or renamed over it (its handle
    /// then no longer resolves), as on a local file system: the open's descriptor is used.
    fn resolve_held(&self, h: &[u8]) -> Result<(Object, Option<Arc<state::Held>>), u32> {
        let stale = |e: &std::io::Error| {
            if let Some(m) = &self.inner.metrics {
                m.stale();
            }
            status_of(e)
        };
        match self.inner.store.resolve(h, libc::O_PATH) {
            Ok(obj) => Ok((obj, None)),
            Err(e) if e.raw_os_error() == Some(libc::ESTALE) => {
                let held = self
                    .clientid
                    .and_then(|id| State::held(&self.inner.state.lock(), id, h));
                // Only while the volume is still exported (same generation).
                match (held, self.inner.store.volume_of(h)) {
                    (Some(held), Some(volume)) if volume.id() == held.volume.id() => {
                        let obj = Object::shared(volume, Arc::clone(&held.fd));
                        Ok((obj, Some(held)))
                    }
                    _ => Err(stale(&e)),
                }
            }
            Err(e) => Err(stale(&e)),
        }
    }

    fn pseudo_attr(&self, fh: &Fh) -> Attr {
        let vols = self.inner.store.volumes();
        let stamp = (
            self.inner.started.0,
            // Changes when volumes come or go, so clients re-read /export.
            (vols.len() as u32 + vols.iter().map(|v| v.id()).max().unwrap_or(0)) % 1_000_000_000,
        );
        Attr {
            kind: NodeKind::Directory,
            mode: 0o555,
            nlink: 2,
            uid: 0,
            gid: 0,
            size: 4096,
            used: 4096,
            rdev_major: 0,
            rdev_minor: 0,
            fsid: 0,
            fileid: if *fh == Fh::Root { 1 } else { 2 },
            atime: self.inner.started,
            mtime: stamp,
            ctime: stamp,
        }
    }
}

/// The fileid a volume's root shows in the pseudo file system it is mounted on.
fn mountpoint_fileid(volume_id: u32) -> u64 {
    (1 << 32) | u64::from(volume_id)
}

fn skip_sec_parms(d: &mut Dec<'_>) -> DResult<()> {
    let n = d.count(16, 4)?;
    for _ in 0..n {
        match d.u32()? {
            0 => {}
            1 => {
                d.u32()?;
                d.opaque(255)?;
                d.u32()?;
                d.u32()?;
                let g = d.count(16, 4)?;
                for _ in 0..g {
                    d.u32()?;
                }
            }
            6 => {
                d.u32()?;
                d.opaque(1024)?;
                d.opaque(1024)?;
            }
            _ => return Err(BadXdr),
        }
    }
    Ok(())
}

/// channel_attrs4.
#[derive(Clone, Copy, Debug)]
struct ChannelAttrs {
    header_pad: u32,
    max_request: u32,
    max_response: u32,
    max_cached: u32,
    max_ops: u32,
    max_requests: u32,
}

impl ChannelAttrs {
    fn decode(d: &mut Dec<'_>) -> DResult<Self> {
        let a = Self {
            header_pad: d.u32()?,
            max_request: d.u32()?,
            max_response: d.u32()?,
            max_cached: d.u32()?,
            max_ops: d.u32()?,
            max_requests: d.u32()?,
        };
        let n = d.count(1, 4)?;
        for _ in 0..n {
            d.u32()?;
        }
        Ok(a)
    }

    fn encode(&self, out: &mut Enc) {
        out.u32(self.header_pad)
            .u32(self.max_request)
            .u32(self.max_response)
            .u32(self.max_cached)
            .u32(self.max_ops)
            .u32(self.max_requests)
            .u32(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grace::Grace;
    use crate::locks::LockTable;
    use oncrpc::Credential;
    use std::net::{Ipv4Addr, SocketAddr};

    #[test]
    fn every_status_is_named_in_metrics() {
        let name = |s: u32| status_name(1, &s.to_be_bytes());
        assert_eq!(name(st::OK), "OK");
        assert_eq!(name(st::NOT_ONLY_OP), "NFS4ERR_NOT_ONLY_OP");
        assert_eq!(
            name(st::REP_TOO_BIG_TO_CACHE),
            "NFS4ERR_REP_TOO_BIG_TO_CACHE"
        );
        assert_eq!(name(st::NOXATTR), "NFS4ERR_NOXATTR");
        assert_eq!(name(st::SEQ_MISORDERED), "NFS4ERR_SEQ_MISORDERED");
        assert_eq!(name(10073), "NFS4ERR_UNKNOWN");
    }

    fn service() -> (tempfile::TempDir, Nfs4Service) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(ExportStore::open(dir.path()).unwrap());
        let state = Arc::new(State::new(
            state::StateConfig {
                lease: std::time::Duration::from_secs(90),
                grace: std::time::Duration::from_secs(90),
                records: None,
            },
            Arc::new(LockTable::new()),
            Arc::new(Grace::none()),
        ));
        (
            dir,
            Nfs4Service::new(
                store,
                state,
                crate::executor::Executor::new(1),
                [1; 8],
                None,
            ),
        )
    }

    fn ctx() -> CallContext {
        CallContext {
            xid: 1,
            vers: 4,
            proc_: 1,
            credential: Credential::None,
            peer: SocketAddr::from((Ipv4Addr::LOCALHOST, 1)),
        }
    }

    fn compound(svc: &Nfs4Service, minor: u32, ops: &[&[u32]]) -> Vec<u8> {
        let mut e = Enc::new();
        e.opaque(b"t").u32(minor).u32(ops.len() as u32);
        for op in ops {
            for w in *op {
                e.u32(*w);
            }
        }
        match svc.call_blocking(&ctx(), &e.buf) {
            Reply::Success(b) => b,
            other => panic!("{other:?}"),
        }
    }

    /// (status, [(op, status)]) of a reply.
    fn statuses(body: &[u8]) -> (u32, Vec<(u32, u32)>) {
        let mut d = Dec::new(body);
        let status = d.u32().unwrap();
        d.opaque(1024).unwrap();
        let n = d.u32().unwrap();
        let mut ops = Vec::new();
        for _ in 0..n {
            let op = d.u32().unwrap();
            let s = d.u32().unwrap();
            ops.push((op, s));
            if s != st::OK {
                break;
            }
        }
        (status, ops)
    }

    #[test]
    fn protocol_errors_are_answered_not_crashed_on() {
        let (_dir, svc) = service();
        // Minor version 3 does not exist; 0 needs no session.
        let (s, ops) = statuses(&compound(&svc, 3, &[&[OP_PUTROOTFH]]));
        assert_eq!((s, ops.len()), (st::MINOR_VERS_MISMATCH, 0));
        let (s, ops) = statuses(&compound(&svc, 0, &[&[OP_PUTROOTFH]]));
        assert_eq!((s, ops), (st::OK, vec![(OP_PUTROOTFH, st::OK)]));
        // Without SEQUENCE first.
        let (s, ops) = statuses(&compound(&svc, 1, &[&[OP_PUTROOTFH]]));
        assert_eq!(s, st::OP_NOT_IN_SESSION);
        assert_eq!(ops, [(OP_PUTROOTFH, st::OP_NOT_IN_SESSION)]);
        // An unknown operation.
        let (s, ops) = statuses(&compound(&svc, 1, &[&[9999]]));
        assert_eq!(
            (s, ops),
            (st::OP_ILLEGAL, vec![(OP_ILLEGAL, st::OP_ILLEGAL)])
        );
        // EXCHANGE_ID with other ops.
        let (s, _) = statuses(&compound(&svc, 1, &[&[OP_DESTROY_SESSION], &[OP_GETFH]]));
        assert_eq!(s, st::NOT_ONLY_OP);
        // SEQUENCE on a session that does not exist.
        let mut seq = vec![OP_SEQUENCE];
        seq.extend([0u32; 4]);
        seq.extend([1, 0, 0, 0]);
        let (s, _) = statuses(&compound(&svc, 1, &[&seq]));
        assert_eq!(s, st::BADSESSION);
        // Truncated arguments: BADXDR for that op, or GARBAGE_ARGS for the header.
        let (s, _) = statuses(&compound(&svc, 1, &[&[OP_SEQUENCE, 1]]));
        assert_eq!(s, st::BADXDR);
        assert!(matches!(
            svc.call_blocking(&ctx(), &[0, 0]),
            Reply::GarbageArgs
        ));
        // A forged operation count does not allocate or loop.
        let mut e = Enc::new();
        e.opaque(b"").u32(1).u32(u32::MAX);
        let Reply::Success(b) = svc.call_blocking(&ctx(), &e.buf) else {
            panic!()
        };
        assert_eq!(statuses(&b).0, st::BADXDR);
    }

    #[test]
    fn a_session_replays_its_cached_reply() {
        let (_dir, svc) = service();
        let mut e = Enc::new();
        e.opaque(b"").u32(1).u32(1).u32(OP_EXCHANGE_ID);
        e.fixed(&[7; 8]).opaque(b"client-a").u32(0).u32(0).u32(0);
        let Reply::Success(b) = svc.call_blocking(&ctx(), &e.buf) else {
            panic!()
        };
        let mut d = Dec::new(&b);
        assert_eq!(d.u32(), Ok(st::OK));
        d.opaque(1024).unwrap();
        d.u32().unwrap();
        d.u32().unwrap();
        d.u32().unwrap();
        let clientid = d.u64().unwrap();
        let seq = d.u32().unwrap();
        let mut e = Enc::new();
        e.opaque(b"").u32(1).u32(1).u32(OP_CREATE_SESSION);
        e.u64(clientid).u32(seq).u32(0);
        for _ in 0..2 {
            e.u32(0)
                .u32(1 << 20)
                .u32(1 << 20)
                .u32(4096)
                .u32(8)
                .u32(4)
                .u32(0);
        }
        e.u32(0x4000_0000).u32(0);
        let Reply::Success(b) = svc.call_blocking(&ctx(), &e.buf) else {
            panic!()
        };
        let mut d = Dec::new(&b);
        assert_eq!(d.u32(), Ok(st::OK));
        d.opaque(1024).unwrap();
        d.u32().unwrap();
        d.u32().unwrap();
        d.u32().unwrap();
        let sid = d.fixed::<16>().unwrap();
        let call = |seqid: u32| {
            let mut e = Enc::new();
            e.opaque(b"").u32(1).u32(3);
            e.u32(OP_SEQUENCE)
                .fixed(&sid)
                .u32(seqid)
                .u32(0)
                .u32(0)
                .bool(true);
            e.u32(OP_PUTROOTFH).u32(OP_GETFH);
            match svc.call_blocking(&ctx(), &e.buf) {
                Reply::Success(b) => b,
                other => panic!("{other:?}"),
            }
        };
        let first = call(1);
        assert_eq!(statuses(&first).0, st::OK);
        assert_eq!(call(1), first, "a retransmission gets the cached reply");
        assert_eq!(statuses(&call(3)).0, st::SEQ_MISORDERED);
        assert_eq!(statuses(&call(2)).0, st::OK);
    }

    /// (status, [(op, status)]) of a reply of SEQUENCE, PUTROOTFH and GETFH ops.
    fn session_statuses(body: &[u8]) -> (u32, Vec<(u32, u32)>) {
        let mut d = Dec::new(body);
        let status = d.u32().unwrap();
        d.opaque(1024).unwrap();
        let n = d.u32().unwrap();
        let mut ops = Vec::new();
        for _ in 0..n {
            let op = d.u32().unwrap();
            let s = d.u32().unwrap();
            ops.push((op, s));
            match (op, s) {
                (OP_SEQUENCE, st::OK) => drop(d.fixed::<36>().unwrap()),
                (OP_GETFH, st::OK) => drop(d.opaque(128).unwrap()),
                (_, st::OK) => {}
                _ => break,
            }
        }
        assert_eq!(d.remaining(), 0);
        (status, ops)
    }

    #[test]
    fn the_budget_counts_the_whole_reply_and_keeps_room_for_a_failing_op() {
        let b = Budget {
            max_response: 1000,
            max_cached: None,
        };
        assert_eq!(b.check(1000, true), None);
        assert_eq!(b.check(1001, true), Some(st::REP_TOO_BIG));
        // Until the last op, a following op's number and status must still fit.
        assert_eq!(b.check(992, false), None);
        assert_eq!(b.check(993, false), Some(st::REP_TOO_BIG));
        assert_eq!(b.room(900, true), 100);
        assert_eq!(b.room(900, false), 92);
        assert_eq!(b.room(995, false), 0);
        assert_eq!(b.exceeded(), st::REP_TOO_BIG);

        // A reply to be cached is held to the smaller cache limit, with its own status.
        let cached = Budget {
            max_response: 1000,
            max_cached: Some(600),
        };
        assert_eq!(cached.check(600, true), None);
        assert_eq!(cached.check(601, true), Some(st::REP_TOO_BIG_TO_CACHE));
        assert_eq!(cached.check(1001, true), Some(st::REP_TOO_BIG));
        assert_eq!(cached.room(500, true), 100);
        assert_eq!(cached.exceeded(), st::REP_TOO_BIG_TO_CACHE);
        // A cache limit above the response limit changes nothing.
        let loose = Budget {
            max_response: 1000,
            max_cached: Some(5000),
        };
        assert_eq!(loose.limit(), 1000);
        assert_eq!(loose.check(1001, true), Some(st::REP_TOO_BIG));
        assert_eq!(loose.exceeded(), st::REP_TOO_BIG);
    }

    /// EXCHANGE_ID and CREATE_SESSION with the given fore channel (max request, response,
    /// cached, ops): the session id and the granted attributes, or the failing status.
    fn session(svc: &Nfs4Service, fore: [u32; 4]) -> Result<([u8; 16], [u32; 6]), u32> {
        let mut e = Enc::new();
        e.opaque(b"").u32(1).u32(1).u32(OP_EXCHANGE_ID);
        e.fixed(&[9; 8]).opaque(b"client-b").u32(0).u32(0).u32(0);
        let Reply::Success(b) = svc.call_blocking(&ctx(), &e.buf) else {
            panic!()
        };
        let mut d = Dec::new(&b);
        assert_eq!(d.u32(), Ok(st::OK));
        d.opaque(1024).unwrap();
        d.fixed::<12>().unwrap();
        let clientid = d.u64().unwrap();
        let seq = d.u32().unwrap();
        let mut e = Enc::new();
        e.opaque(b"").u32(1).u32(1).u32(OP_CREATE_SESSION);
        e.u64(clientid).u32(seq).u32(0);
        e.u32(0)
            .u32(fore[0])
            .u32(fore[1])
            .u32(fore[2])
            .u32(fore[3])
            .u32(4)
            .u32(0);
        e.u32(0).u32(4096).u32(4096).u32(0).u32(2).u32(1).u32(0);
        e.u32(0x4000_0000).u32(0);
        let Reply::Success(b) = svc.call_blocking(&ctx(), &e.buf) else {
            panic!()
        };
        let (status, _) = statuses(&b);
        if status != st::OK {
            return Err(status);
        }
        let mut d = Dec::new(&b);
        d.u32().unwrap();
        d.opaque(1024).unwrap();
        d.fixed::<12>().unwrap();
        let sid = d.fixed::<16>().unwrap();
        d.fixed::<8>().unwrap();
        let mut attrs = [0u32; 6];
        for a in &mut attrs {
            *a = d.u32().unwrap();
        }
        Ok((sid, attrs))
    }

    #[test]
    fn create_session_grants_at_most_what_was_asked_and_what_the_server_handles() {
        let (_dir, svc) = service();
        let (_, granted) = session(&svc, [u32::MAX, u32::MAX, u32::MAX, 1000]).unwrap();
        assert_eq!(
            granted,
            [0, MAX_MSG, MAX_MSG, state::MAX_CACHED_REPLY, MAX_OPS, 4]
        );
        let (_, granted) = session(&svc, [4096, 2048, 8192, 8]).unwrap();
        assert_eq!(granted, [0, 4096, 2048, 2048, 8, 4], "cached <= response");
        assert_eq!(session(&svc, [100, 4096, 0, 8]), Err(st::TOOSMALL));
        assert_eq!(session(&svc, [4096, 100, 0, 8]), Err(st::TOOSMALL));
    }

    #[test]
    fn sequence_refuses_what_the_session_did_not_negotiate() {
        let (_dir, svc) = service();
        // Requests up to 300 bytes, replies up to 400, cached up to 100, 4 ops.
        let (sid, _) = session(&svc, [300, 400, 100, 4]).unwrap();
        let call = |seqid: u32, cache: bool, tail: &[&[u32]]| {
            let mut e = Enc::new();
            e.opaque(b"").u32(1).u32(1 + tail.len() as u32);
            e.u32(OP_SEQUENCE)
                .fixed(&sid)
                .u32(seqid)
                .u32(0)
                .u32(0)
                .bool(cache);
            for op in tail {
                for w in *op {
                    e.u32(*w);
                }
            }
            match svc.call_blocking(&ctx(), &e.buf) {
                Reply::Success(b) => b,
                other => panic!("{other:?}"),
            }
        };
        let root: &[u32] = &[OP_PUTROOTFH];
        let getfh: &[u32] = &[OP_GETFH];
        // Five ops: refused on SEQUENCE, the slot unchanged (sequence id 1 is still next).
        let r = call(1, false, &[root, getfh, root, getfh]);
        assert_eq!(
            statuses(&r),
            (st::TOO_MANY_OPS, vec![(OP_SEQUENCE, st::TOO_MANY_OPS)])
        );
        // A request over 300 bytes: REQ_TOO_BIG, the slot unchanged.
        let big: Vec<u32> = [OP_SECINFO, 400].into_iter().chain([0; 100]).collect();
        let r = call(1, false, &[&big]);
        assert_eq!(
            statuses(&r),
            (st::REQ_TOO_BIG, vec![(OP_SEQUENCE, st::REQ_TOO_BIG)])
        );
        let r = call(1, false, &[root, getfh]);
        assert_eq!(statuses(&r).0, st::OK);
        assert!(r.len() + RPC_REPLY_HEADER <= 400);
        // A cached reply over 100 bytes: the op that would overflow it fails, the results
        // before it stay and the whole reply is cached.
        let r = call(2, true, &[root, getfh]);
        let (s, ops) = session_statuses(&r);
        assert_eq!(s, st::REP_TOO_BIG_TO_CACHE);
        assert_eq!(
            ops,
            [
                (OP_SEQUENCE, st::OK),
                (OP_PUTROOTFH, st::OK),
                (OP_GETFH, st::REP_TOO_BIG_TO_CACHE)
            ]
        );
        assert!(r.len() + RPC_REPLY_HEADER <= 100, "{}", r.len());
        assert_eq!(call(2, true, &[root, getfh]), r, "replayed from the cache");
        // Not cached, the same compound fits.
        let r = call(3, false, &[root, getfh]);
        assert_eq!(session_statuses(&r).0, st::OK);
    }
}
