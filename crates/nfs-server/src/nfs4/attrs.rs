//! NFSv4 attributes (RFC 8881 section 5): which ones we support, encoding an object's
//! attributes for GETATTR/READDIR, and decoding the ones a client sets.
//!
//! Owners travel as numeric strings ("1000"), which the Linux client sends and accepts when
//! id mapping is off; "1000@domain" is accepted too. Names are refused with BADOWNER.

use export_store::{Attr, NodeKind, SetAttr, TimeSet};

use super::xdr::{Bitmap, DResult, Dec, Enc, st};

pub const SUPPORTED_ATTRS: u32 = 0;
pub const TYPE: u32 = 1;
pub const FH_EXPIRE_TYPE: u32 = 2;
pub const CHANGE: u32 = 3;
pub const SIZE: u32 = 4;
pub const LINK_SUPPORT: u32 = 5;
pub const SYMLINK_SUPPORT: u32 = 6;
pub const NAMED_ATTR: u32 = 7;
pub const FSID: u32 = 8;
pub const UNIQUE_HANDLES: u32 = 9;
pub const LEASE_TIME: u32 = 10;
pub const RDATTR_ERROR: u32 = 11;
pub const CANSETTIME: u32 = 15;
pub const CASE_INSENSITIVE: u32 = 16;
pub const CASE_PRESERVING: u32 = 17;
pub const CHOWN_RESTRICTED: u32 = 18;
pub const FILEHANDLE: u32 = 19;
pub const FILEID: u32 = 20;
pub const FILES_AVAIL: u32 = 21;
pub const FILES_FREE: u32 = 22;
pub const FILES_TOTAL: u32 = 23;
pub const HOMOGENEOUS: u32 = 26;
pub const MAXFILESIZE: u32 = 27;
pub const MAXLINK: u32 = 28;
pub const MAXNAME: u32 = 29;
pub const MAXREAD: u32 = 30;
pub const MAXWRITE: u32 = 31;
pub const MODE: u32 = 33;
pub const NO_TRUNC: u32 = 34;
pub const NUMLINKS: u32 = 35;
pub const OWNER: u32 = 36;
pub const OWNER_GROUP: u32 = 37;
pub const RAWDEV: u32 = 41;
pub const SPACE_AVAIL: u32 = 42;
pub const SPACE_FREE: u32 = 43;
pub const SPACE_TOTAL: u32 = 44;
pub const SPACE_USED: u32 = 45;
pub const TIME_ACCESS: u32 = 47;
pub const TIME_ACCESS_SET: u32 = 48;
pub const TIME_DELTA: u32 = 51;
pub const TIME_METADATA: u32 = 52;
pub const TIME_MODIFY: u32 = 53;
pub const TIME_MODIFY_SET: u32 = 54;
pub const MOUNTED_ON_FILEID: u32 = 55;
pub const SUPPATTR_EXCLCREAT: u32 = 75;
/// RFC 8276 section 8.2 (NFSv4.2).
pub const XATTR_SUPPORT: u32 = 82;

const SUPPORTED: &[u32] = &[
    SUPPORTED_ATTRS,
    TYPE,
    FH_EXPIRE_TYPE,
    CHANGE,
    SIZE,
    LINK_SUPPORT,
    SYMLINK_SUPPORT,
    NAMED_ATTR,
    FSID,
    UNIQUE_HANDLES,
    LEASE_TIME,
    RDATTR_ERROR,
    CANSETTIME,
    CASE_INSENSITIVE,
    CASE_PRESERVING,
    CHOWN_RESTRICTED,
    FILEHANDLE,
    FILEID,
    FILES_AVAIL,
    FILES_FREE,
    FILES_TOTAL,
    HOMOGENEOUS,
    MAXFILESIZE,
    MAXLINK,
    MAXNAME,
    MAXREAD,
    MAXWRITE,
    MODE,
    NO_TRUNC,
    NUMLINKS,
    OWNER,
    OWNER_GROUP,
    RAWDEV,
    SPACE_AVAIL,
    SPACE_FREE,
    SPACE_TOTAL,
    SPACE_USED,
    TIME_ACCESS,
    TIME_ACCESS_SET,
    TIME_DELTA,
    TIME_METADATA,
    TIME_MODIFY,
    TIME_MODIFY_SET,
    MOUNTED_ON_FILEID,
    SUPPATTR_EXCLCREAT,
    XATTR_SUPPORT,
];

/// Attributes a client may set, and those it may set with an EXCLUSIVE4_1 create (the
/// verifier occupies the times until the client sets them).
const WRITABLE: &[u32] = &[
    SIZE,
    MODE,
    OWNER,
    OWNER_GROUP,
    TIME_ACCESS_SET,
    TIME_MODIFY_SET,
];
const EXCLCREAT: &[u32] = &[SIZE, MODE, OWNER, OWNER_GROUP];

pub fn supported() -> Bitmap {
    Bitmap::from_bits(SUPPORTED)
}

/// What the encoder needs to know about one object.
pub struct Node<'a> {
    pub attr: Attr,
    pub fh: &'a [u8],
    pub fsid: (u64, u64),
    pub mounted_on_fileid: u64,
    /// The file system's statvfs, asked only when a space or files attribute is requested.
    pub fs: &'a dyn Fn() -> Option<libc::statvfs>,
    pub lease_s: u32,
    pub max_io: u64,
    /// `xattr_support`: whether the file system keeps extended attributes; `None` in minor
    /// version 1, which does not have the attribute.
    pub xattr_support: Option<bool>,
}

/// The change attribute: ctime in nanoseconds.
pub(super) fn change(a: &Attr) -> u64 {
    (a.ctime.0 as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(u64::from(a.ctime.1))
}

fn ftype(k: NodeKind) -> u32 {
    match k {
        NodeKind::Regular => 1,
        NodeKind::Directory => 2,
        NodeKind::Block => 3,
        NodeKind::Char => 4,
        NodeKind::Symlink => 5,
        NodeKind::Socket => 6,
        NodeKind::Fifo => 7,
    }
}

/// Encodes fattr4 with the requested attributes we have.
pub fn encode(req: &Bitmap, n: &Node<'_>, out: &mut Enc) {
    let mut supported = supported();
    if n.xattr_support.is_none() {
        supported.0[(XATTR_SUPPORT / 32) as usize] &= !(1 << (XATTR_SUPPORT % 32));
    }
    let mut have = req.intersect(&supported);
    let space = [
        FILES_AVAIL,
        FILES_FREE,
        FILES_TOTAL,
        SPACE_AVAIL,
        SPACE_FREE,
        SPACE_TOTAL,
    ];
    let fs = if space.iter().any(|b| have.has(*b)) {
        (n.fs)()
    } else {
        None
    };
    if fs.is_none() {
        for b in space {
            if have.has(b) {
                have.0[(b / 32) as usize] &= !(1 << (b % 32));
            }
        }
    }
    // Write-only attributes are never returned.
    for b in [TIME_ACCESS_SET, TIME_MODIFY_SET] {
        if have.has(b) {
            have.0[(b / 32) as usize] &= !(1 << (b % 32));
        }
    }
    let mut v = Enc::new();
    let a = &n.attr;
    for bit in have.bits() {
        match bit {
            SUPPORTED_ATTRS => {
                v.bitmap(&supported);
            }
            TYPE => {
                v.u32(ftype(a.kind));
            }
            FH_EXPIRE_TYPE => {
                v.u32(0); // FH4_PERSISTENT
            }
            CHANGE => {
                v.u64(change(a));
            }
            SIZE => {
                v.u64(a.size);
            }
            LINK_SUPPORT | SYMLINK_SUPPORT | UNIQUE_HANDLES | CANSETTIME | CASE_PRESERVING
            | CHOWN_RESTRICTED | HOMOGENEOUS | NO_TRUNC => {
                v.bool(true);
            }
            NAMED_ATTR | CASE_INSENSITIVE => {
                v.bool(false);
            }
            FSID => {
                v.u64(n.fsid.0).u64(n.fsid.1);
            }
            LEASE_TIME => {
                v.u32(n.lease_s);
            }
            RDATTR_ERROR => {
                v.u32(st::OK);
            }
            FILEHANDLE => {
                v.opaque(n.fh);
            }
            FILEID => {
                v.u64(a.fileid);
            }
            MAXFILESIZE => {
                v.u64(i64::MAX as u64);
            }
            MAXLINK => {
                v.u32(65000);
            }
            MAXNAME => {
                v.u32(255);
            }
            MAXREAD | MAXWRITE => {
                v.u64(n.max_io);
            }
            MODE => {
                v.u32(a.mode & 0o7777);
            }
            NUMLINKS => {
                v.u32(a.nlink);
            }
            OWNER => {
                v.opaque(a.uid.to_string().as_bytes());
            }
            OWNER_GROUP => {
                v.opaque(a.gid.to_string().as_bytes());
            }
            RAWDEV => {
                v.u32(a.rdev_major).u32(a.rdev_minor);
            }
            SPACE_USED => {
                v.u64(a.used);
            }
            TIME_ACCESS => {
                v.time(a.atime);
            }
            TIME_DELTA => {
                v.time((0, 1));
            }
            TIME_METADATA => {
                v.time(a.ctime);
            }
            TIME_MODIFY => {
                v.time(a.mtime);
            }
            MOUNTED_ON_FILEID => {
                v.u64(n.mounted_on_fileid);
            }
            SUPPATTR_EXCLCREAT => {
                v.bitmap(&Bitmap::from_bits(EXCLCREAT));
            }
            XATTR_SUPPORT => {
                v.bool(n.xattr_support.unwrap_or(false));
            }
            FILES_AVAIL | FILES_FREE | FILES_TOTAL | SPACE_AVAIL | SPACE_FREE | SPACE_TOTAL => {
                let s = fs.as_ref().map_or_else(
                    // SAFETY: an all-zero statvfs is a valid value.
                    || unsafe { std::mem::zeroed::<libc::statvfs>() },
                    |s| *s,
                );
                let frsize = s.f_frsize;
                v.u64(match bit {
                    FILES_AVAIL => s.f_favail,
                    FILES_FREE => s.f_ffree,
                    FILES_TOTAL => s.f_files,
                    SPACE_AVAIL => s.f_bavail.saturating_mul(frsize),
                    SPACE_FREE => s.f_bfree.saturating_mul(frsize),
                    _ => s.f_blocks.saturating_mul(frsize),
                });
            }
            _ => {}
        }
    }
    out.bitmap(&have);
    out.opaque(&v.buf);
}

/// An attribute failure as GETATTR/READDIR report it for an entry: only rdattr_error.
pub fn encode_error(req: &Bitmap, status: u32, out: &mut Enc) {
    if req.has(RDATTR_ERROR) {
        out.bitmap(&Bitmap::from_bits(&[RDATTR_ERROR]));
        let mut v = Enc::new();
        v.u32(status);
        out.opaque(&v.buf);
    } else {
        out.bitmap(&Bitmap::default());
        out.opaque(&[]);
    }
}

fn parse_id(s: &[u8]) -> Option<u32> {
    let s = std::str::from_utf8(s).ok()?;
    let num = s.split_once('@').map_or(s, |(n, _)| n);
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    num.parse().ok()
}

/// Decodes fattr4 of attributes to set. `Err` inside: the status to answer (ATTRNOTSUPP,
/// INVAL for read-only ones, BADOWNER).
pub fn decode_set(d: &mut Dec<'_>, exclusive: bool) -> DResult<Result<(SetAttr, Bitmap), u32>> {
    let bits = d.bitmap()?;
    let vals = d.opaque(64 * 1024)?;
    let mut v = Dec::new(vals);
    let mut set = SetAttr::default();
    let allowed = if exclusive { EXCLCREAT } else { WRITABLE };
    for bit in bits.bits() {
        if !allowed.contains(&bit) {
            return Ok(Err(if SUPPORTED.contains(&bit) {
                st::INVAL
            } else {
                st::ATTRNOTSUPP
            }));
        }
        match bit {
            SIZE => set.size = Some(v.u64()?),
            MODE => set.mode = Some(v.u32()? & 0o7777),
            OWNER => match parse_id(v.opaque(1024)?) {
                Some(id) => set.uid = Some(id),
                None => return Ok(Err(st::BADOWNER)),
            },
            OWNER_GROUP => match parse_id(v.opaque(1024)?) {
                Some(id) => set.gid = Some(id),
                None => return Ok(Err(st::BADOWNER)),
            },
            TIME_ACCESS_SET | TIME_MODIFY_SET => {
                let t = match v.u32()? {
                    0 => TimeSet::ServerNow,
                    1 => {
                        let (s, ns) = v.time()?;
                        TimeSet::Client(s, ns)
                    }
                    _ => return Err(super::xdr::BadXdr),
                };
                if bit == TIME_ACCESS_SET {
                    set.atime = t;
                } else {
                    set.mtime = t;
                }
            }
            _ => return Ok(Err(st::ATTRNOTSUPP)),
        }
    }
    if v.remaining() != 0 {
        return Err(super::xdr::BadXdr);
    }
    Ok(Ok((set, bits)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr() -> Attr {
        Attr {
            kind: NodeKind::Regular,
            mode: 0o640,
            nlink: 1,
            uid: 1000,
            gid: 100,
            size: 5,
            used: 4096,
            rdev_major: 0,
            rdev_minor: 0,
            fsid: 3,
            fileid: 42,
            atime: (1, 2),
            mtime: (3, 4),
            ctime: (5, 6),
        }
    }

    #[test]
    fn encodes_in_bit_order_and_skips_unsupported() {
        let fs = || None;
        let n = Node {
            attr: attr(),
            fh: b"fh",
            fsid: (3, 0),
            mounted_on_fileid: 42,
            fs: &fs,
            lease_s: 90,
            max_io: 1 << 20,
            xattr_support: None,
        };
        // 12 (acl) is not supported; 42 (space_avail) has no statvfs here.
        let req = Bitmap::from_bits(&[TYPE, SIZE, 12, OWNER, SPACE_AVAIL, TIME_MODIFY]);
        let mut out = Enc::new();
        encode(&req, &n, &mut out);
        let mut d = Dec::new(&out.buf);
        let got = d.bitmap().unwrap();
        assert_eq!(
            got.bits().collect::<Vec<_>>(),
            vec![TYPE, SIZE, OWNER, TIME_MODIFY]
        );
        let vals = d.opaque(1024).unwrap();
        let mut v = Dec::new(vals);
        assert_eq!(v.u32(), Ok(1));
        assert_eq!(v.u64(), Ok(5));
        assert_eq!(v.opaque(10), Ok(&b"1000"[..]));
        assert_eq!(v.time(), Ok((3, 4)));
        assert_eq!(v.remaining(), 0);
    }

    #[test]
    fn decodes_settable_attributes_and_refuses_others() {
        let mut e = Enc::new();
        let mut vals = Enc::new();
        vals.u64(0)
            .u32(0o755)
            .opaque(b"7@example")
            .u32(1)
            .time((9, 9));
        e.bitmap(&Bitmap::from_bits(&[SIZE, MODE, OWNER, TIME_MODIFY_SET]))
            .opaque(&vals.buf);
        let (set, _) = decode_set(&mut Dec::new(&e.buf), false).unwrap().unwrap();
        assert_eq!(set.size, Some(0));
        assert_eq!(set.mode, Some(0o755));
        assert_eq!(set.uid, Some(7));
        assert_eq!(set.mtime, TimeSet::Client(9, 9));

        let mut e = Enc::new();
        let mut vals = Enc::new();
        vals.opaque(b"alice");
        e.bitmap(&Bitmap::from_bits(&[OWNER])).opaque(&vals.buf);
        assert_eq!(
            decode_set(&mut Dec::new(&e.buf), false).unwrap(),
            Err(st::BADOWNER)
        );
        let mut e = Enc::new();
        e.bitmap(&Bitmap::from_bits(&[FILEID])).opaque(&[0; 8]);
        assert_eq!(
            decode_set(&mut Dec::new(&e.buf), false).unwrap(),
            Err(st::INVAL)
        );
        let mut e = Enc::new();
        e.bitmap(&Bitmap::from_bits(&[TIME_MODIFY_SET]))
            .opaque(&[0; 4]);
        assert_eq!(
            decode_set(&mut Dec::new(&e.buf), true).unwrap(),
            Err(st::INVAL)
        );
    }
}
