//! NFSv4.2 extended attributes (RFC 8276): GETXATTR, SETXATTR, LISTXATTRS and REMOVEXATTR
//! (section 8.4) on the current object, and the ACCESS4_XA* bits of ACCESS.
//!
//! The protocol carries user attributes only, named without a namespace; the server keeps
//! them in the file's `user.` namespace, so a client's `user.x` (as Linux clients send it,
//! stripped) is `user.x` on the export's disk too.
//! `export-store` adds the prefix, runs the file-system calls as the caller (squashing, the
//! kernel's permission checks, read-only volumes, the volume's size) and makes changes
//! durable. The pseudo file system has no extended attributes (its `xattr_support` is
//! false): the four ops answer NOTSUPP there. The ops exist in minor version 2 only; the
//! compound driver answers OP_ILLEGAL for them in 4.1.

use std::io;

use export_store::ops::{self, XATTR_NAME_MAX, XATTR_SIZE_MAX, XattrSet};
use export_store::{Attr, NodeKind, Object};

use super::Compound;
use super::fileops::cinfo;
use super::xdr::*;

pub const ACCESS4_XAREAD: u32 = 0x40;
pub const ACCESS4_XAWRITE: u32 = 0x80;
pub const ACCESS4_XALIST: u32 = 0x100;
const ACCESS_READ: u32 = 1;
const ACCESS_MODIFY: u32 = 4;

/// LISTXATTRS4resok without names: cookie, the array's length, eof.
const LIST_FIXED: usize = 8 + 4 + 4;
/// Names a listing can hold at most (each takes at least `user.?` and a NUL in Linux's
/// 64 KiB list): a larger cookie was never handed out.
const MAX_NAMES: u64 = 64 * 1024 / 7;

/// A file-system error as an xattr op reports it (RFC 8276 section 8.3).
fn status(e: &io::Error) -> u32 {
    match e.raw_os_error() {
        Some(libc::ENODATA) => st::NOXATTR,
        Some(libc::E2BIG) => st::XATTR2BIG,
        _ => status_of(e),
    }
}

/// An attribute name from the wire: a non-empty UTF-8 component (xattrkey4 is component4),
/// short enough for Linux once `user.` is added.
fn key_of(b: &[u8]) -> Result<&[u8], u32> {
    if b.is_empty() || std::str::from_utf8(b).is_err() {
        return Err(st::INVAL);
    }
    if b.contains(&0) {
        return Err(st::BADCHAR);
    }
    if b.len() > XATTR_NAME_MAX {
        return Err(st::NAMETOOLONG);
    }
    Ok(b)
}

/// The ACCESS4_XA* bits of `want` granted on an object whose ACCESS3-style grant (asked for
/// READ and MODIFY at least) is `granted`. Reading a value takes read permission, changing
/// one write permission (so never on a read-only volume), listing none, as the kernel
/// checks them; objects that cannot have attributes get none.
pub(super) fn access_bits(want: u32, granted: u32, attr: &Attr, obj: &Object) -> u32 {
    let xa = want & (ACCESS4_XAREAD | ACCESS4_XAWRITE | ACCESS4_XALIST);
    if xa == 0
        || !matches!(attr.kind, NodeKind::Regular | NodeKind::Directory)
        || !ops::xattr_support(obj)
    {
        return 0;
    }
    let mut bits = ACCESS4_XALIST;
    if granted & ACCESS_READ != 0 {
        bits |= ACCESS4_XAREAD;
    }
    if granted & ACCESS_MODIFY != 0 {
        bits |= ACCESS4_XAWRITE;
    }
    bits & xa
}

impl Compound<'_> {
    pub(super) fn xattr_op(&mut self, op: u32, d: &mut Dec<'_>, out: &mut Enc) -> DResult<u32> {
        match op {
            OP_GETXATTR => self.getxattr(d, out),
            OP_SETXATTR => self.setxattr(d, out),
            OP_LISTXATTRS => self.listxattrs(d, out),
            OP_REMOVEXATTR => self.removexattr(d, out),
            _ => Ok(st::NOTSUPP),
        }
    }

    /// The current object, on a file system with extended attributes.
    fn xattr_obj(&self) -> Result<Object, u32> {
        let obj = self.vol_obj(st::NOTSUPP)?;
        if !ops::xattr_support(&obj) {
            return Err(st::NOTSUPP);
        }
        Ok(obj)
    }

    /// GETXATTR (RFC 8276 section 8.4.1). A value larger than the reply may carry fails the
    /// op with REP_TOO_BIG (the compound checks the result's size).
    fn getxattr(&mut self, d: &mut Dec<'_>, out: &mut Enc) -> DResult<u32> {
        let raw = d.opaque(1024)?;
        let name = tri!(key_of(raw));
        let obj = tri!(self.xattr_obj());
        let id = self.inner.identity(self.ctx, &obj);
        match ops::getxattr(&obj, &id, name) {
            Ok(value) => {
                out.opaque(&value);
                Ok(st::OK)
            }
            Err(e) => Ok(status(&e)),
        }
    }

    /// SETXATTR (RFC 8276 section 8.4.2): SETXATTR4_CREATE on an existing name is EXIST,
    /// SETXATTR4_REPLACE on a missing one NOXATTR; values past Linux's 64 KiB are XATTR2BIG.
    fn setxattr(&mut self, d: &mut Dec<'_>, out: &mut Enc) -> DResult<u32> {
        let option = d.u32()?;
        let raw = d.opaque(1024)?;
        // Any length the request holds decodes; the size limit is a status, not BADXDR.
        let value = d.opaque(d.remaining())?;
        let how = match option {
            0 => XattrSet::Either,
            1 => XattrSet::Create,
            2 => XattrSet::Replace,
            _ => return Ok(st::INVAL),
        };
        let name = tri!(key_of(raw));
        let obj = tri!(self.xattr_obj());
        if value.len() > XATTR_SIZE_MAX {
            return Ok(st::XATTR2BIG);
        }
        let id = self.inner.identity(self.ctx, &obj);
        match ops::setxattr(&obj, &id, name, value, how) {
            Ok((before, after)) => {
                cinfo(out, Some(&before), Some(&after));
                Ok(st::OK)
            }
            Err(e) => Ok(status(&e)),
        }
    }

    /// LISTXATTRS (RFC 8276 section 8.4.3): at most `lxa_maxcount` bytes of LISTXATTRS4resok
    /// (and what the session's reply still allows), TOOSMALL if not even one name fits. The
    /// cookie is the position after the last name returned. Names that are not UTF-8 (set
    /// beside the server) are left out: they cannot be named in the protocol.
    fn listxattrs(&mut self, d: &mut Dec<'_>, out: &mut Enc) -> DResult<u32> {
        let cookie = d.u64()?;
        let asked = d.u32()? as usize;
        if cookie > MAX_NAMES {
            return Ok(st::BAD_COOKIE);
        }
        let obj = tri!(self.xattr_obj());
        let id = self.inner.identity(self.ctx, &obj);
        let names = match ops::listxattr(&obj, &id) {
            Ok(n) => n,
            Err(e) => return Ok(status(&e)),
        };
        let room = self.room(out);
        let maxcount = asked.min(room);
        let mut used = LIST_FIXED;
        let mut taken = Vec::new();
        let mut next = cookie;
        let mut eof = true;
        for name in names
            .iter()
            .filter(|n| std::str::from_utf8(n).is_ok())
            .skip(usize::try_from(cookie).unwrap_or(usize::MAX))
        {
            let size = 4 + name.len().next_multiple_of(4);
            if used + size > maxcount {
                eof = false;
                break;
            }
            used += size;
            taken.push(name);
            next += 1;
        }
        if used > maxcount || (taken.is_empty() && !eof) {
            return Ok(if room < asked {
                self.budget.exceeded()
            } else {
                st::TOOSMALL
            });
        }
        out.u64(next).u32(taken.len() as u32);
        for name in taken {
            out.opaque(name);
        }
        out.bool(eof);
        Ok(st::OK)
    }

    /// REMOVEXATTR (RFC 8276 section 8.4.4): NOXATTR if there is no such name.
    fn removexattr(&mut self, d: &mut Dec<'_>, out: &mut Enc) -> DResult<u32> {
        let raw = d.opaque(1024)?;
        let name = tri!(key_of(raw));
        let obj = tri!(self.xattr_obj());
        let id = self.inner.identity(self.ctx, &obj);
        match ops::removexattr(&obj, &id, name) {
            Ok((before, after)) => {
                cinfo(out, Some(&before), Some(&after));
                Ok(st::OK)
            }
            Err(e) => Ok(status(&e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_before_any_file_system_call() {
        assert_eq!(key_of(b"x"), Ok(&b"x"[..]));
        assert_eq!(key_of(b""), Err(st::INVAL));
        assert_eq!(key_of(b"\xff"), Err(st::INVAL));
        assert_eq!(key_of(b"a\0b"), Err(st::BADCHAR));
        assert_eq!(key_of(&[b'a'; 250]), Ok(&[b'a'; 250][..]));
        // Linux's 255 bytes include `user.`.
        assert_eq!(key_of(&[b'a'; 251]), Err(st::NAMETOOLONG));
        let e = io::Error::from_raw_os_error(libc::ENODATA);
        assert_eq!(status(&e), st::NOXATTR);
        let e = io::Error::from_raw_os_error(libc::EEXIST);
        assert_eq!(status(&e), st::EXIST);
    }
}
