//! The XDR of NFSv4.1 (RFC 8881 / RFC 5662): a cursor that decodes arguments one operation at
//! a time, an encoder for results, and the protocol's numbers.
//!
//! COMPOUND is decoded as a stream rather than into one typed value: an unknown operation must
//! stop the request with OP_ILLEGAL after the results of the operations before it, and each
//! result is encoded as soon as its operation ran. Fixed-shape pieces (stateids, channel
//! attributes) have small typed readers here.

/// Decoding ran past the arguments or met an impossible value: the whole request is
/// malformed (NFS4ERR_BADXDR).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadXdr;

pub type DResult<T> = Result<T, BadXdr>;

/// Reads XDR from a byte slice.
#[derive(Clone)]
pub struct Dec<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Dec<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize) -> DResult<&'a [u8]> {
        let end = self.pos.checked_add(n).ok_or(BadXdr)?;
        let s = self.buf.get(self.pos..end).ok_or(BadXdr)?;
        self.pos = end;
        Ok(s)
    }

    pub fn u32(&mut self) -> DResult<u32> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn u64(&mut self) -> DResult<u64> {
        Ok((u64::from(self.u32()?) << 32) | u64::from(self.u32()?))
    }

    pub fn i64(&mut self) -> DResult<i64> {
        Ok(self.u64()? as i64)
    }

    pub fn bool(&mut self) -> DResult<bool> {
        match self.u32()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(BadXdr),
        }
    }

    /// Fixed-length opaque (padded to 4 bytes).
    pub fn fixed<const N: usize>(&mut self) -> DResult<[u8; N]> {
        let b = self.take(N)?;
        self.take((4 - N % 4) % 4)?;
        let mut out = [0u8; N];
        out.copy_from_slice(b);
        Ok(out)
    }

    /// Variable-length opaque of at most `max` bytes.
    pub fn opaque(&mut self, max: usize) -> DResult<&'a [u8]> {
        let len = self.u32()? as usize;
        if len > max {
            return Err(BadXdr);
        }
        let b = self.take(len)?;
        self.take((4 - len % 4) % 4)?;
        Ok(b)
    }

    /// An array length, bounded by `max` and by what is left to read (each element takes at
    /// least `min_elem` bytes), so a forged count cannot make us allocate.
    pub fn count(&mut self, max: usize, min_elem: usize) -> DResult<usize> {
        let n = self.u32()? as usize;
        if n > max || n.saturating_mul(min_elem) > self.remaining() {
            return Err(BadXdr);
        }
        Ok(n)
    }

    pub fn bitmap(&mut self) -> DResult<Bitmap> {
        let n = self.count(8, 4)?;
        let mut words = Vec::with_capacity(n);
        for _ in 0..n {
            words.push(self.u32()?);
        }
        Ok(Bitmap(words))
    }

    pub fn stateid(&mut self) -> DResult<StateId> {
        Ok(StateId {
            seqid: self.u32()?,
            other: self.fixed::<12>()?,
        })
    }

    pub fn time(&mut self) -> DResult<(i64, u32)> {
        let s = self.i64()?;
        let ns = self.u32()?;
        if ns >= 1_000_000_000 {
            return Err(BadXdr);
        }
        Ok((s, ns))
    }
}

/// Writes XDR into a byte vector.
#[derive(Default)]
pub struct Enc {
    pub buf: Vec<u8>,
}

impl Enc {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn bool(&mut self, v: bool) -> &mut Self {
        self.u32(u32::from(v))
    }

    pub fn fixed(&mut self, b: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(b);
        self.pad(b.len())
    }

    pub fn opaque(&mut self, b: &[u8]) -> &mut Self {
        self.u32(b.len() as u32);
        self.fixed(b)
    }

    fn pad(&mut self, len: usize) -> &mut Self {
        let n = (4 - len % 4) % 4;
        self.buf.extend_from_slice(&[0u8; 3][..n]);
        self
    }

    pub fn bitmap(&mut self, b: &Bitmap) -> &mut Self {
        self.u32(b.0.len() as u32);
        for w in &b.0 {
            self.u32(*w);
        }
        self
    }

    pub fn stateid(&mut self, s: &StateId) -> &mut Self {
        self.u32(s.seqid);
        self.fixed(&s.other)
    }

    pub fn time(&mut self, t: (i64, u32)) -> &mut Self {
        self.u64(t.0 as u64);
        self.u32(t.1)
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

/// An attribute bitmap (bitmap4).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Bitmap(pub Vec<u32>);

impl Bitmap {
    pub fn from_bits(bits: &[u32]) -> Self {
        let mut b = Self::default();
        for &bit in bits {
            b.set(bit);
        }
        b
    }

    pub fn has(&self, bit: u32) -> bool {
        self.0
            .get((bit / 32) as usize)
            .is_some_and(|w| w & (1 << (bit % 32)) != 0)
    }

    pub fn set(&mut self, bit: u32) {
        let i = (bit / 32) as usize;
        if self.0.len() <= i {
            self.0.resize(i + 1, 0);
        }
        self.0[i] |= 1 << (bit % 32);
    }

    /// The bits set, in increasing order.
    pub fn bits(&self) -> impl Iterator<Item = u32> + '_ {
        self.0.iter().enumerate().flat_map(|(i, w)| {
            (0..32)
                .filter(move |b| w & (1 << b) != 0)
                .map(move |b| i as u32 * 32 + b)
        })
    }

    pub fn intersect(&self, other: &Bitmap) -> Bitmap {
        let mut out = Bitmap(
            self.0
                .iter()
                .zip(other.0.iter())
                .map(|(a, b)| a & b)
                .collect(),
        );
        while out.0.last() == Some(&0) {
            out.0.pop();
        }
        out
    }

    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|w| *w == 0)
    }
}

/// stateid4.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StateId {
    pub seqid: u32,
    pub other: [u8; 12],
}

impl StateId {
    /// The anonymous stateid (all zeros).
    pub const ANONYMOUS: StateId = StateId {
        seqid: 0,
        other: [0; 12],
    };
    /// READ bypass (all ones).
    pub const BYPASS: StateId = StateId {
        seqid: u32::MAX,
        other: [0xff; 12],
    };
    /// "The current stateid" of the compound (RFC 8881 section 16.2.3.1.2).
    pub const CURRENT: StateId = StateId {
        seqid: 1,
        other: [0; 12],
    };
    /// What CLOSE returns (RFC 8881 section 18.2.4: the invalid special stateid).
    pub const INVALID: StateId = StateId {
        seqid: u32::MAX,
        other: [0; 12],
    };

    pub fn is_special(&self) -> bool {
        self.other == [0; 12] || self.other == [0xff; 12]
    }
}

// Operation numbers (RFC 8881 section 16.2, RFC 7862 for 4.2).
pub const OP_ACCESS: u32 = 3;
pub const OP_CLOSE: u32 = 4;
pub const OP_COMMIT: u32 = 5;
pub const OP_CREATE: u32 = 6;
pub const OP_DELEGPURGE: u32 = 7;
pub const OP_DELEGRETURN: u32 = 8;
pub const OP_GETATTR: u32 = 9;
pub const OP_GETFH: u32 = 10;
pub const OP_LINK: u32 = 11;
pub const OP_LOCK: u32 = 12;
pub const OP_LOCKT: u32 = 13;
pub const OP_LOCKU: u32 = 14;
pub const OP_LOOKUP: u32 = 15;
pub const OP_LOOKUPP: u32 = 16;
pub const OP_NVERIFY: u32 = 17;
pub const OP_OPEN: u32 = 18;
pub const OP_OPENATTR: u32 = 19;
pub const OP_OPEN_CONFIRM: u32 = 20;
pub const OP_OPEN_DOWNGRADE: u32 = 21;
pub const OP_PUTFH: u32 = 22;
pub const OP_PUTPUBFH: u32 = 23;
pub const OP_PUTROOTFH: u32 = 24;
pub const OP_READ: u32 = 25;
pub const OP_READDIR: u32 = 26;
pub const OP_READLINK: u32 = 27;
pub const OP_REMOVE: u32 = 28;
pub const OP_RENAME: u32 = 29;
pub const OP_RENEW: u32 = 30;
pub const OP_RESTOREFH: u32 = 31;
pub const OP_SAVEFH: u32 = 32;
pub const OP_SECINFO: u32 = 33;
pub const OP_SETATTR: u32 = 34;
pub const OP_SETCLIENTID: u32 = 35;
pub const OP_SETCLIENTID_CONFIRM: u32 = 36;
pub const OP_VERIFY: u32 = 37;
pub const OP_WRITE: u32 = 38;
pub const OP_RELEASE_LOCKOWNER: u32 = 39;
pub const OP_BACKCHANNEL_CTL: u32 = 40;
pub const OP_BIND_CONN_TO_SESSION: u32 = 41;
pub const OP_EXCHANGE_ID: u32 = 42;
pub const OP_CREATE_SESSION: u32 = 43;
pub const OP_DESTROY_SESSION: u32 = 44;
pub const OP_FREE_STATEID: u32 = 45;
pub const OP_GET_DIR_DELEGATION: u32 = 46;
pub const OP_GETDEVICEINFO: u32 = 47;
pub const OP_GETDEVICELIST: u32 = 48;
pub const OP_LAYOUTCOMMIT: u32 = 49;
pub const OP_LAYOUTGET: u32 = 50;
pub const OP_LAYOUTRETURN: u32 = 51;
pub const OP_SECINFO_NO_NAME: u32 = 52;
pub const OP_SEQUENCE: u32 = 53;
pub const OP_SET_SSV: u32 = 54;
pub const OP_TEST_STATEID: u32 = 55;
pub const OP_WANT_DELEGATION: u32 = 56;
pub const OP_DESTROY_CLIENTID: u32 = 57;
pub const OP_RECLAIM_COMPLETE: u32 = 58;
pub const OP_ALLOCATE: u32 = 59;
pub const OP_COPY: u32 = 60;
pub const OP_COPY_NOTIFY: u32 = 61;
pub const OP_DEALLOCATE: u32 = 62;
pub const OP_IO_ADVISE: u32 = 63;
pub const OP_LAYOUTERROR: u32 = 64;
pub const OP_LAYOUTSTATS: u32 = 65;
pub const OP_OFFLOAD_CANCEL: u32 = 66;
pub const OP_OFFLOAD_STATUS: u32 = 67;
pub const OP_READ_PLUS: u32 = 68;
pub const OP_SEEK: u32 = 69;
pub const OP_WRITE_SAME: u32 = 70;
pub const OP_CLONE: u32 = 71;
// RFC 8276 section 8.4 (NFSv4.2 only).
pub const OP_GETXATTR: u32 = 72;
pub const OP_SETXATTR: u32 = 73;
pub const OP_LISTXATTRS: u32 = 74;
pub const OP_REMOVEXATTR: u32 = 75;
pub const OP_ILLEGAL: u32 = 10044;

/// Defines the nfsstat4 constants and [`st::name`], so every status has its name.
macro_rules! statuses {
    ($($name:ident = $value:literal,)*) => {
        $(pub const $name: u32 = $value;)*

        /// The status's name as the RFC spells it (`NFS4_OK`, `NFS4ERR_...`), for metrics
        /// and logs; statuses this server never sends are `NFS4ERR_UNKNOWN`.
        pub fn name(status: u32) -> &'static str {
            match status {
                OK => "NFS4_OK",
                $($value => concat!("NFS4ERR_", stringify!($name)),)*
                _ => "NFS4ERR_UNKNOWN",
            }
        }
    };
}

/// nfsstat4 values (RFC 8881 section 15.1, RFC 8276 section 8.1).
#[allow(dead_code)]
pub mod st {
    pub const OK: u32 = 0;

    statuses! {
        PERM = 1,
        NOENT = 2,
        IO = 5,
        NXIO = 6,
        ACCESS = 13,
        EXIST = 17,
        XDEV = 18,
        NOTDIR = 20,
        ISDIR = 21,
        INVAL = 22,
        FBIG = 27,
        NOSPC = 28,
        ROFS = 30,
        MLINK = 31,
        NAMETOOLONG = 63,
        NOTEMPTY = 66,
        DQUOT = 69,
        STALE = 70,
        BADHANDLE = 10001,
        BAD_COOKIE = 10003,
        NOTSUPP = 10004,
        TOOSMALL = 10005,
        SERVERFAULT = 10006,
        BADTYPE = 10007,
        DELAY = 10008,
        SAME = 10009,
        DENIED = 10010,
        EXPIRED = 10011,
        LOCKED = 10012,
        GRACE = 10013,
        FHEXPIRED = 10014,
        SHARE_DENIED = 10015,
        WRONGSEC = 10016,
        CLID_INUSE = 10017,
        RESOURCE = 10018,
        MOVED = 10019,
        NOFILEHANDLE = 10020,
        MINOR_VERS_MISMATCH = 10021,
        STALE_CLIENTID = 10022,
        STALE_STATEID = 10023,
        OLD_STATEID = 10024,
        BAD_STATEID = 10025,
        BAD_SEQID = 10026,
        NOT_SAME = 10027,
        LOCK_RANGE = 10028,
        SYMLINK = 10029,
        RESTOREFH = 10030,
        LEASE_MOVED = 10031,
        ATTRNOTSUPP = 10032,
        NO_GRACE = 10033,
        RECLAIM_BAD = 10034,
        RECLAIM_CONFLICT = 10035,
        BADXDR = 10036,
        LOCKS_HELD = 10037,
        OPENMODE = 10038,
        BADOWNER = 10039,
        BADCHAR = 10040,
        BADNAME = 10041,
        BAD_RANGE = 10042,
        LOCK_NOTSUPP = 10043,
        OP_ILLEGAL = 10044,
        DEADLOCK = 10045,
        FILE_OPEN = 10046,
        ADMIN_REVOKED = 10047,
        CB_PATH_DOWN = 10048,
        BADIOMODE = 10049,
        BADLAYOUT = 10050,
        BAD_SESSION_DIGEST = 10051,
        BADSESSION = 10052,
        BADSLOT = 10053,
        COMPLETE_ALREADY = 10054,
        CONN_NOT_BOUND_TO_SESSION = 10055,
        DELEG_ALREADY_WANTED = 10056,
        BACK_CHAN_BUSY = 10057,
        LAYOUTTRYLATER = 10058,
        LAYOUTUNAVAILABLE = 10059,
        NOMATCHING_LAYOUT = 10060,
        RECALLCONFLICT = 10061,
        UNKNOWN_LAYOUTTYPE = 10062,
        SEQ_MISORDERED = 10063,
        SEQUENCE_POS = 10064,
        REQ_TOO_BIG = 10065,
        REP_TOO_BIG = 10066,
        REP_TOO_BIG_TO_CACHE = 10067,
        RETRY_UNCACHED_REP = 10068,
        UNSAFE_COMPOUND = 10069,
        TOO_MANY_OPS = 10070,
        OP_NOT_IN_SESSION = 10071,
        HASH_ALG_UNSUPP = 10072,
        CLIENTID_BUSY = 10074,
        PNFS_IO_HOLE = 10075,
        SEQ_FALSE_RETRY = 10076,
        BAD_HIGH_SLOT = 10077,
        DEADSESSION = 10078,
        ENCR_ALG_UNSUPP = 10079,
        PNFS_NO_LAYOUT = 10080,
        NOT_ONLY_OP = 10081,
        WRONG_CRED = 10082,
        WRONG_TYPE = 10083,
        DIRDELEG_UNAVAIL = 10084,
        REJECT_DELEG = 10085,
        RETURNCONFLICT = 10086,
        DELEG_REVOKED = 10087,
        PARTNER_NOTSUPP = 10088,
        PARTNER_NO_AUTH = 10089,
        UNION_NOTSUPP = 10090,
        OFFLOAD_DENIED = 10091,
        WRONG_LFS = 10092,
        BADLABEL = 10093,
        OFFLOAD_NO_REQS = 10094,
        NOXATTR = 10095,
        XATTR2BIG = 10096,
    }
}

/// Maps a file-system error to nfsstat4.
pub fn status_of(e: &std::io::Error) -> u32 {
    match e.raw_os_error() {
        Some(libc::EPERM) => st::PERM,
        Some(libc::ENOENT) => st::NOENT,
        Some(libc::ENXIO) | Some(libc::ENODEV) => st::NXIO,
        Some(libc::EACCES) => st::ACCESS,
        Some(libc::EEXIST) => st::EXIST,
        Some(libc::EXDEV) => st::XDEV,
        Some(libc::ENOTDIR) => st::NOTDIR,
        Some(libc::EISDIR) => st::ISDIR,
        Some(libc::EINVAL) => st::INVAL,
        Some(libc::EFBIG) => st::FBIG,
        Some(libc::ENOSPC) => st::NOSPC,
        Some(libc::EROFS) => st::ROFS,
        Some(libc::EMLINK) => st::MLINK,
        Some(libc::ENAMETOOLONG) => st::NAMETOOLONG,
        Some(libc::ENOTEMPTY) => st::NOTEMPTY,
        Some(libc::EDQUOT) => st::DQUOT,
        Some(libc::ESTALE) => st::STALE,
        Some(export_store::store::EBADHANDLE) => st::BADHANDLE,
        Some(libc::ENOTSUP) => st::NOTSUPP,
        Some(libc::ELOOP) => st::SYMLINK,
        Some(libc::EOVERFLOW) => st::INVAL,
        Some(libc::EAGAIN) => st::DELAY,
        _ => st::IO,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_bounds() {
        let mut e = Enc::new();
        e.u32(7)
            .u64(1 << 40)
            .opaque(b"abcde")
            .bitmap(&Bitmap::from_bits(&[1, 33]));
        e.stateid(&StateId::CURRENT);
        let mut d = Dec::new(&e.buf);
        assert_eq!(d.u32(), Ok(7));
        assert_eq!(d.u64(), Ok(1 << 40));
        assert_eq!(d.opaque(5), Ok(&b"abcde"[..]));
        let b = d.bitmap().unwrap();
        assert_eq!(b.bits().collect::<Vec<_>>(), vec![1, 33]);
        assert_eq!(d.stateid(), Ok(StateId::CURRENT));
        assert_eq!(d.remaining(), 0);
        assert_eq!(d.u32(), Err(BadXdr));
        // A length beyond the limit or the buffer is malformed, not an allocation.
        let mut d = Dec::new(&[0, 0, 0, 9, 1, 2]);
        assert_eq!(d.opaque(8), Err(BadXdr));
        let mut d = Dec::new(&[0xff, 0xff, 0xff, 0xff]);
        assert_eq!(d.count(usize::MAX, 4), Err(BadXdr));
    }
}
