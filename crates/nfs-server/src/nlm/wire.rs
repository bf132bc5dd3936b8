//! NLM v4 and NSM v1 arguments and results (XNFS / RFC 1813 appendix II; XNFS chapter 11) as
//! pure functions over byte buffers: strict, bounded decoding (a malformed or truncated
//! argument is `None`, which the services answer with GARBAGE_ARGS) and encoding.

use oncrpc::message::XdrReader;

/// `LM_MAXSTRLEN`: caller names.
pub const LM_MAXSTRLEN: usize = 1024;
/// `MAXNETOBJ_SZ`: cookies, file handles, owner handles.
pub const MAXNETOBJ_SZ: usize = 1024;
/// `SM_MAXSTRLEN`: NSM host names.
pub const SM_MAXSTRLEN: usize = 1024;

/// `nlm4_stats`.
pub mod stat {
    pub const GRANTED: u32 = 0;
    pub const DENIED: u32 = 1;
    pub const DENIED_NOLOCKS: u32 = 2;
    pub const BLOCKED: u32 = 3;
    pub const DENIED_GRACE_PERIOD: u32 = 4;
    pub const DEADLCK: u32 = 5;
    pub const ROFS: u32 = 6;
    pub const STALE_FH: u32 = 7;
    pub const FBIG: u32 = 8;
    pub const FAILED: u32 = 9;

    /// The name of a status, for metrics and logs.
    pub fn name(s: u32) -> &'static str {
        match s {
            GRANTED => "NLM4_GRANTED",
            DENIED => "NLM4_DENIED",
            DENIED_NOLOCKS => "NLM4_DENIED_NOLOCKS",
            BLOCKED => "NLM4_BLOCKED",
            DENIED_GRACE_PERIOD => "NLM4_DENIED_GRACE_PERIOD",
            DEADLCK => "NLM4_DEADLCK",
            ROFS => "NLM4_ROFS",
            STALE_FH => "NLM4_STALE_FH",
            FBIG => "NLM4_FBIG",
            FAILED => "NLM4_FAILED",
            _ => "unknown",
        }
    }
}

/// `nlm4_lock`: who locks what range of which file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NlmLock {
    pub caller_name: Vec<u8>,
    pub fh: Vec<u8>,
    pub oh: Vec<u8>,
    pub svid: u32,
    pub offset: u64,
    pub len: u64,
}

/// `nlm4_lockargs` (LOCK, NM_LOCK).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockArgs {
    pub cookie: Vec<u8>,
    pub block: bool,
    pub exclusive: bool,
    pub lock: NlmLock,
    pub reclaim: bool,
    pub state: u32,
}

/// `nlm4_cancargs`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CancelArgs {
    pub cookie: Vec<u8>,
    pub block: bool,
    pub exclusive: bool,
    pub lock: NlmLock,
}

/// `nlm4_testargs` (TEST, and the GRANTED callback we send).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestArgs {
    pub cookie: Vec<u8>,
    pub exclusive: bool,
    pub lock: NlmLock,
}

/// `nlm4_unlockargs`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnlockArgs {
    pub cookie: Vec<u8>,
    pub lock: NlmLock,
}

/// `nlm4_shareargs`: a DOS share reservation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShareArgs {
    pub cookie: Vec<u8>,
    pub caller_name: Vec<u8>,
    pub fh: Vec<u8>,
    pub oh: Vec<u8>,
    /// `fsh4_mode`: what others are denied (bit 0 read, bit 1 write).
    pub mode: u32,
    /// `fsh4_access`: what this opener does (bit 0 read, bit 1 write).
    pub access: u32,
    pub reclaim: bool,
}

/// `nlm4_notify` (FREE_ALL).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotifyArgs {
    pub name: Vec<u8>,
    pub state: u32,
}

/// `nlm4_holder`: the lock in the way, in a TEST reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    pub exclusive: bool,
    pub svid: u32,
    pub oh: Vec<u8>,
    pub offset: u64,
    pub len: u64,
}

/// A bounds-checked reader with the XDR types NLM and NSM use.
pub struct Dec<'a>(XdrReader<'a>);

impl<'a> Dec<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self(XdrReader::new(buf))
    }

    pub fn u32(&mut self) -> Option<u32> {
        self.0.u32()
    }

    pub fn u64(&mut self) -> Option<u64> {
        let hi = self.0.u32()?;
        let lo = self.0.u32()?;
        Some(u64::from(hi) << 32 | u64::from(lo))
    }

    /// An XDR bool: exactly 0 or 1.
    pub fn bool(&mut self) -> Option<bool> {
        match self.0.u32()? {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        }
    }

    pub fn opaque(&mut self, max: usize) -> Option<Vec<u8>> {
        self.0.opaque(max).map(<[u8]>::to_vec)
    }

    /// Fixed-length opaque of `n` bytes (padded to a multiple of 4).
    pub fn fixed(&mut self, n: usize) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n.div_ceil(4) {
            out.extend_from_slice(&self.0.u32()?.to_be_bytes());
        }
        out.truncate(n);
        Some(out)
    }
}

fn netobj(d: &mut Dec<'_>) -> Option<Vec<u8>> {
    d.opaque(MAXNETOBJ_SZ)
}

fn nlm_lock(d: &mut Dec<'_>) -> Option<NlmLock> {
    Some(NlmLock {
        caller_name: d.opaque(LM_MAXSTRLEN)?,
        fh: netobj(d)?,
        oh: netobj(d)?,
        svid: d.u32()?,
        offset: d.u64()?,
        len: d.u64()?,
    })
}

impl LockArgs {
    pub fn decode(buf: &[u8]) -> Option<Self> {
        let d = &mut Dec::new(buf);
        Some(Self {
            cookie: netobj(d)?,
            block: d.bool()?,
            exclusive: d.bool()?,
            lock: nlm_lock(d)?,
            reclaim: d.bool()?,
            state: d.u32()?,
        })
    }
}

impl CancelArgs {
    pub fn decode(buf: &[u8]) -> Option<Self> {
        let d = &mut Dec::new(buf);
        Some(Self {
            cookie: netobj(d)?,
            block: d.bool()?,
            exclusive: d.bool()?,
            lock: nlm_lock(d)?,
        })
    }
}

impl TestArgs {
    pub fn decode(buf: &[u8]) -> Option<Self> {
        let d = &mut Dec::new(buf);
        Some(Self {
            cookie: netobj(d)?,
            exclusive: d.bool()?,
            lock: nlm_lock(d)?,
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut e = Enc::default();
        e.opaque(&self.cookie).bool(self.exclusive).lock(&self.lock);
        e.0
    }
}

impl UnlockArgs {
    pub fn decode(buf: &[u8]) -> Option<Self> {
        let d = &mut Dec::new(buf);
        Some(Self {
            cookie: netobj(d)?,
            lock: nlm_lock(d)?,
        })
    }
}

impl ShareArgs {
    pub fn decode(buf: &[u8]) -> Option<Self> {
        let d = &mut Dec::new(buf);
        let cookie = netobj(d)?;
        let caller_name = d.opaque(LM_MAXSTRLEN)?;
        let fh = netobj(d)?;
        let oh = netobj(d)?;
        let mode = d.u32().filter(|m| *m <= 3)?;
        let access = d.u32().filter(|a| *a <= 3)?;
        Some(Self {
            cookie,
            caller_name,
            fh,
            oh,
            mode,
            access,
            reclaim: d.bool()?,
        })
    }
}

impl NotifyArgs {
    pub fn decode(buf: &[u8]) -> Option<Self> {
        let d = &mut Dec::new(buf);
        Some(Self {
            name: d.opaque(LM_MAXSTRLEN)?,
            state: d.u32()?,
        })
    }
}

/// An XDR writer.
#[derive(Default)]
pub struct Enc(pub Vec<u8>);

impl Enc {
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn bool(&mut self, v: bool) -> &mut Self {
        self.u32(u32::from(v))
    }

    pub fn opaque(&mut self, v: &[u8]) -> &mut Self {
        self.u32(v.len() as u32);
        self.0.extend_from_slice(v);
        self.0.resize(self.0.len() + (4 - v.len() % 4) % 4, 0);
        self
    }

    pub fn lock(&mut self, l: &NlmLock) -> &mut Self {
        self.opaque(&l.caller_name)
            .opaque(&l.fh)
            .opaque(&l.oh)
            .u32(l.svid)
            .u64(l.offset)
            .u64(l.len)
    }
}

/// `nlm4_res`.
pub fn res(cookie: &[u8], status: u32) -> Vec<u8> {
    let mut e = Enc::default();
    e.opaque(cookie).u32(status);
    e.0
}

/// `nlm4_testres`: the holder is sent only with NLM4_DENIED.
pub fn test_res(cookie: &[u8], status: u32, holder: Option<&Holder>) -> Vec<u8> {
    let mut e = Enc::default();
    e.opaque(cookie).u32(status);
    if let (stat::DENIED, Some(h)) = (status, holder) {
        e.bool(h.exclusive)
            .u32(h.svid)
            .opaque(&h.oh)
            .u64(h.offset)
            .u64(h.len);
    }
    e.0
}

/// `nlm4_shareres` (the sequence number is unused and always 0).
pub fn share_res(cookie: &[u8], status: u32) -> Vec<u8> {
    let mut e = Enc::default();
    e.opaque(cookie).u32(status).u32(0);
    e.0
}

/// The status of an `nlm4_res` (the reply to our GRANTED callback).
pub fn decode_res_status(buf: &[u8]) -> Option<u32> {
    let d = &mut Dec::new(buf);
    netobj(d)?;
    d.u32()
}

/// The status carried by the reply body of procedure `proc_` (for metrics).
pub fn reply_status(proc_: u32, body: &[u8]) -> &'static str {
    match proc_ {
        1..=5 | 20..=22 => decode_res_status(body).map_or("OK", stat::name),
        _ => "OK",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_lock() -> NlmLock {
        NlmLock {
            caller_name: b"client-a".to_vec(),
            fh: vec![7; 37],
            oh: b"owner".to_vec(),
            svid: 4242,
            offset: 1 << 40,
            len: 0,
        }
    }

    fn lockargs_bytes() -> Vec<u8> {
        let mut e = Enc::default();
        e.opaque(b"cookie")
            .bool(true)
            .bool(true)
            .lock(&sample_lock())
            .bool(false)
            .u32(3);
        e.0
    }

    #[test]
    fn lock_args_round_trip_through_the_wire_layout() {
        let a = LockArgs::decode(&lockargs_bytes()).unwrap();
        assert_eq!(a.cookie, b"cookie");
        assert!(a.block && a.exclusive && !a.reclaim);
        assert_eq!(a.lock, sample_lock());
        assert_eq!(a.state, 3);
        let t = TestArgs {
            cookie: b"c".to_vec(),
            exclusive: false,
            lock: sample_lock(),
        };
        assert_eq!(TestArgs::decode(&t.encode()).unwrap(), t);
    }

    #[test]
    fn every_truncation_and_a_bad_bool_are_rejected() {
        let bytes = lockargs_bytes();
        for len in 0..bytes.len() {
            assert!(LockArgs::decode(&bytes[..len]).is_none(), "prefix {len}");
            let _ = CancelArgs::decode(&bytes[..len]);
            let _ = TestArgs::decode(&bytes[..len]);
            let _ = UnlockArgs::decode(&bytes[..len]);
            let _ = ShareArgs::decode(&bytes[..len]);
            let _ = NotifyArgs::decode(&bytes[..len]);
        }
        let mut bad = bytes.clone();
        bad[12..16].copy_from_slice(&2u32.to_be_bytes()); // block = 2
        assert!(LockArgs::decode(&bad).is_none());
    }

    #[test]
    fn oversized_lengths_are_rejected_before_allocation() {
        let mut e = Enc::default();
        e.u32(u32::MAX); // cookie length
        assert!(UnlockArgs::decode(&e.0).is_none());
        let mut e = Enc::default();
        e.opaque(b"").u32(2000); // caller_name longer than LM_MAXSTRLEN
        e.0.extend(vec![b'a'; 2000]);
        assert!(UnlockArgs::decode(&e.0).is_none());
    }

    #[test]
    fn share_modes_out_of_range_are_garbage() {
        let mut e = Enc::default();
        e.opaque(b"c")
            .opaque(b"host")
            .opaque(b"fh")
            .opaque(b"oh")
            .u32(4)
            .u32(1)
            .bool(false);
        assert!(ShareArgs::decode(&e.0).is_none());
    }

    #[test]
    fn test_reply_carries_the_holder_only_when_denied() {
        let h = Holder {
            exclusive: true,
            svid: 9,
            oh: b"x".to_vec(),
            offset: 5,
            len: 0,
        };
        assert_eq!(test_res(b"", stat::GRANTED, Some(&h)).len(), 8);
        let denied = test_res(b"", stat::DENIED, Some(&h));
        assert_eq!(denied.len(), 8 + 4 + 4 + 8 + 8 + 8);
        assert_eq!(decode_res_status(&denied), Some(stat::DENIED));
        assert_eq!(reply_status(2, &res(b"ck", stat::BLOCKED)), "NLM4_BLOCKED");
    }
}
