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

/// nfsstat4 values (RFC 8881 section 15.1).
#[allow(dead_code)]
pub mod st {
    pub const OK: u32 = 0;
    pub const PERM: u32 = 1;
    pub const NOENT: u32 = 2;
    pub const IO: u32 = 5;
    pub const NXIO: u32 = 6;
    pub const ACCESS: u32 = 13;
    pub const EXIST: u32 = 17;
    pub const XDEV: u32 = 18;
    pub const NOTDIR: u32 = 20;
    pub const ISDIR: u32 = 21;
    pub const INVAL: u32 = 22;
    pub const FBIG: u32 = 27;
    pub const NOSPC: u32 = 28;
    pub const ROFS: u32 = 30;
    pub const MLINK: u32 = 31;
    pub const NAMETOOLONG: u32 = 63;
    pub const NOTEMPTY: u32 = 66;
    pub const DQUOT: u32 = 69;
    pub const STALE: u32 = 70;
    pub const BADHANDLE: u32 = 10001;
    pub const BAD_COOKIE: u32 = 10003;
    pub const NOTSUPP: u32 = 10004;
    pub const TOOSMALL: u32 = 10005;
    pub const SERVERFAULT: u32 = 10006;
    pub const BADTYPE: u32 = 10007;
    pub const DELAY: u32 = 10008;
    pub const SAME: u32 = 10009;
    pub const DENIED: u32 = 10010;
    pub const EXPIRED: u32 = 10011;
    pub const LOCKED: u32 = 10012;
    pub const GRACE: u32 = 10013;
    pub const FHEXPIRED: u32 = 10014;
    pub const SHARE_DENIED: u32 = 10015;
    pub const WRONGSEC: u32 = 10016;
    pub const CLID_INUSE: u32 = 10017;
    pub const MOVED: u32 = 10019;
    pub const NOFILEHANDLE: u32 = 10020;
    pub const MINOR_VERS_MISMATCH: u32 = 10021;
    pub const STALE_CLIENTID: u32 = 10022;
    pub const STALE_STATEID: u32 = 10023;
    pub const OLD_STATEID: u32 = 10024;
    pub const BAD_STATEID: u32 = 10025;
    pub const BAD_SEQID: u32 = 10026;
    pub const NOT_SAME: u32 = 10027;
    pub const LOCK_RANGE: u32 = 10028;
    pub const SYMLINK: u32 = 10029;
    pub const RESTOREFH: u32 = 10030;
    pub const ATTRNOTSUPP: u32 = 10032;
    pub const NO_GRACE: u32 = 10033;
    pub const RECLAIM_BAD: u32 = 10034;
    pub const RECLAIM_CONFLICT: u32 = 10035;
    pub const BADXDR: u32 = 10036;
    pub const LOCKS_HELD: u32 = 10037;
    pub const OPENMODE: u32 = 10038;
    pub const BADOWNER: u32 = 10039;
    pub const BADCHAR: u32 = 10040;
    pub const BADNAME: u32 = 10041;
    pub const BAD_RANGE: u32 = 10042;
    pub const LOCK_NOTSUPP: u32 = 10043;
    pub const OP_ILLEGAL: u32 = 10044;
    pub const DEADLOCK: u32 = 10045;
    pub const FILE_OPEN: u32 = 10046;
    pub const ADMIN_REVOKED: u32 = 10047;
    pub const CB_PATH_DOWN: u32 = 10048;
    pub const BADIOMODE: u32 = 10049;
    pub const BADLAYOUT: u32 = 10050;
    pub const BAD_SESSION_DIGEST: u32 = 10051;
    pub const BADSESSION: u32 = 10052;
    pub const BADSLOT: u32 = 10053;
    pub const COMPLETE_ALREADY: u32 = 10054;
    pub const CONN_NOT_BOUND_TO_SESSION: u32 = 10055;
    pub const DELEG_ALREADY_WANTED: u32 = 10056;
    pub const BACK_CHAN_BUSY: u32 = 10057;
    pub const LAYOUTTRYLATER: u32 = 10058;
    pub const LAYOUTUNAVAILABLE: u32 = 10059;
    pub const NOMATCHING_LAYOUT: u32 = 10060;
    pub const RECALLCONFLICT: u32 = 10061;
    pub const UNKNOWN_LAYOUTTYPE: u32 = 10062;
    pub const SEQ_MISORDERED: u32 = 10063;
    pub const SEQUENCE_POS: u32 = 10064;
    pub const REQ_TOO_BIG: u32 = 10065;
    pub const REP_TOO_BIG: u32 = 10066;
    pub const REP_TOO_BIG_TO_CACHE: u32 = 10067;
    pub const RETRY_UNCACHED_REP: u32 = 10068;
    pub const UNSAFE_COMPOUND: u32 = 10069;
    pub const TOO_MANY_OPS: u32 = 10070;
    pub const OP_NOT_IN_SESSION: u32 = 10071;
    pub const HASH_ALG_UNSUPP: u32 = 10072;
    pub const CLIENTID_BUSY: u32 = 10074;
    pub const PNFS_IO_HOLE: u32 = 10075;
    pub const SEQ_FALSE_RETRY: u32 = 10076;
    pub const BAD_HIGH_SLOT: u32 = 10077;
    pub const DEADSESSION: u32 = 10078;
    pub const ENCR_ALG_UNSUPP: u32 = 10079;
    pub const PNFS_NO_LAYOUT: u32 = 10080;
    pub const NOT_ONLY_OP: u32 = 10081;
    pub const WRONG_CRED: u32 = 10082;
    pub const WRONG_TYPE: u32 = 10083;
    pub const DIRDELEG_UNAVAIL: u32 = 10084;
    pub const REJECT_DELEG: u32 = 10085;
    pub const RETURNCONFLICT: u32 = 10086;
    pub const DELEG_REVOKED: u32 = 10087;
    // RFC 8276 section 8.3.
    pub const NOXATTR: u32 = 10095;
    pub const XATTR2BIG: u32 = 10096;
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
