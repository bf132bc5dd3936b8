//! The NFSv4.1 operations on files: namespace (LOOKUP, READDIR, CREATE, REMOVE, RENAME,
//! LINK), attributes, I/O, and the stateful ones (OPEN, CLOSE, LOCK and friends).
//!
//! Each reads its arguments from the compound's cursor, writes its result body, and returns
//! the status. Everything below the pseudo directories goes through `export-store`, as the
//! caller's squashed credential.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use export_store::access::Refused;
use export_store::ops::{self, NodeSpec};
use export_store::{Attr, CreateHow, NodeKind, Object, SetAttr, WriteStability};

use super::attrs::{self, Node};
use super::state::{Held, State, Stateful};
use super::xdr::*;
use super::{Compound, Fh, mountpoint_fileid};
use crate::MAX_IO;
use crate::locks::{Lock, LockError, Owner};

const ACCESS_READ: u32 = 1;
const ACCESS_LOOKUP: u32 = 2;
const ACCESS_MODIFY: u32 = 4;
const SHARE_READ: u32 = 1;
const SHARE_WRITE: u32 = 2;

/// Evaluates an `io::Result`, returning its NFSv4 status on error.
macro_rules! io {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => return Ok(status_of(&e)),
        }
    };
}

/// A name from the wire: UTF-8, not empty, no `/` or NUL (RFC 8881 section 1.7.2).
fn name_of(b: &[u8]) -> Result<&[u8], u32> {
    if b.is_empty() {
        return Err(st::INVAL);
    }
    if b.len() > 255 {
        return Err(st::NAMETOOLONG);
    }
    if b == b"." || b == b".." {
        return Err(st::BADNAME);
    }
    if b.contains(&b'/') || b.contains(&0) {
        return Err(st::BADCHAR);
    }
    if std::str::from_utf8(b).is_err() {
        return Err(st::INVAL);
    }
    Ok(b)
}

pub(super) fn cinfo(out: &mut Enc, before: Option<&Attr>, after: Option<&Attr>) {
    out.bool(false)
        .u64(before.map_or(0, attrs::change))
        .u64(after.map_or(0, attrs::change));
}

impl Compound<'_> {
    pub(super) fn file_op(&mut self, op: u32, d: &mut Dec<'_>, out: &mut Enc) -> DResult<u32> {
        match op {
            OP_GETATTR => self.getattr(d, out),
            OP_SETATTR => self.setattr(d, out),
            OP_ACCESS => self.access(d, out),
            OP_LOOKUP => self.lookup(d),
            OP_LOOKUPP => self.lookupp(),
            OP_READLINK => self.readlink(out),
            OP_READ => self.read(d, out),
            OP_WRITE => self.write(d, out),
            OP_COMMIT => self.commit(d, out),
            OP_CREATE => self.create(d, out),
            OP_REMOVE => self.remove(d, out),
            OP_RENAME => self.rename(d, out),
            OP_LINK => self.link(d, out),
            OP_READDIR => self.readdir(d, out),
            OP_VERIFY => self.verify(d, false),
            OP_NVERIFY => self.verify(d, true),
            OP_OPEN => self.open(d, out),
            OP_OPEN_DOWNGRADE => self.open_downgrade(d, out),
            OP_CLOSE => self.close(d, out),
            OP_LOCK => self.lock(d, out),
            OP_LOCKT => self.lockt(d, out),
            OP_LOCKU => self.locku(d, out),
            OP_FREE_STATEID => self.free_stateid(d),
            OP_TEST_STATEID => self.test_stateid(d, out),
            OP_ALLOCATE => self.allocate(d, false),
            OP_DEALLOCATE => self.allocate(d, true),
            OP_SEEK => self.seek(d, out),
            _ => Ok(st::NOTSUPP),
        }
    }

    fn node_for<'a>(
        &self,
        fh: &'a [u8],
        attr: Attr,
        obj: Option<&'a Object>,
        fs: &'a dyn Fn() -> Option<libc::statvfs>,
    ) -> Node<'a> {
        let (fsid, mounted_on) = match obj {
            Some(o) if o.volume.root_handle() == fh => (
                (u64::from(o.volume.id()), 0),
                mountpoint_fileid(o.volume.id()),
            ),
            Some(o) => ((u64::from(o.volume.id()), 0), attr.fileid),
            None => ((0, 0), attr.fileid),
        };
        Node {
            attr,
            fh,
            fsid,
            mounted_on_fileid: mounted_on,
            fs,
            lease_s: self.inner.state.config.lease.as_secs() as u32,
            max_io: u64::from(MAX_IO),
            xattr_support: self.xattr_support(obj),
        }
    }

    /// `xattr_support` of the file system of `obj` (false for the pseudo file system, `obj`
    /// `None`), or `None` in 4.1, which does not have the attribute.
    fn xattr_support(&self, obj: Option<&Object>) -> Option<bool> {
        (self.minor >= 2).then(|| obj.is_some_and(ops::xattr_support))
    }

    /// Encodes the attributes of the current object.
    fn current_attrs(&self, req: &Bitmap, out: &mut Enc) -> Result<(), u32> {
        let fh = self.cur.clone().ok_or(st::NOFILEHANDLE)?;
        let bytes = fh.bytes();
        match &fh {
            Fh::Root | Fh::Export => {
                let fs = || None;
                let node = self.node_for(&bytes, self.pseudo_attr(&fh), None, &fs);
                attrs::encode(req, &node, out);
            }
            Fh::Vol(_) => {
                let obj = self.vol_obj(st::INVAL)?;
                let attr = ops::getattr(&obj).map_err(|e| status_of(&e))?;
                let fs = || ops::fsstat(&obj).ok();
                let node = self.node_for(&bytes, attr, Some(&obj), &fs);
                attrs::encode(req, &node, out);
            }
        }
        Ok(())
    }

    fn getattr(&mut self, d: &mut Dec<'_>, out: &mut Enc) -> DResult<u32> {
        let req = d.bitmap()?;
        tri!(self.current_attrs(&req, out));
        Ok(st::OK)
    }

    fn verify(&mut self, d: &mut Dec<'_>, negate: bool) -> DResult<u32> {
        let req = d.bitmap()?;
        let given = d.opaque(64 * 1024)?;
        if req.has(attrs::RDATTR_ERROR) {
            return Ok(st::INVAL);
        }
        if !req.intersect(&attrs::supported()).eq(&trimmed(&req)) {
            return Ok(st::ATTRNOTSUPP);
        }
        let mut mine = Enc::new();
        tri!(self.current_attrs(&req, &mut mine));
        let mut m = Dec::new(&mine.buf);
        let _ = m.bitmap()?;
        let same = m.opaque(64 * 1024)? == given;
        Ok(match (same, negate) {
            (true, false) | (false, true) => st::OK,
            (false, false) => st::NOT_SAME,
            (true, true) => st::SAME,
        })
    }

    /// Resolves the special "current stateid" value.
    fn real_sid(&self, sid: StateId) -> Result<StateId, u32> {
        if sid == StateId::CURRENT {
            self.cur_sid.ok_or(st::BAD_STATEID)
        } else {
            Ok(sid)
        }
    }

    /// Checks the stateid of a READ, WRITE or SETATTR(size) on `file`.
    fn check_io_sid(&self, sid: StateId, file: &[u8], write: bool) -> Result<(), u32> {
        let sid = self.real_sid(sid)?;
        if sid == StateId::ANONYMOUS || sid == StateId::BYPASS {
            return Ok(());
        }
        let t = self.inner.state.lock();
        let open = match t.states.get(&sid.other) {
            None => return Err(st::BAD_STATEID),
            Some(Stateful::Open(o)) => {
                State::check_seqid(&sid, o.seqid)?;
                o.clone()
            }
            Some(Stateful::Lock(l)) => {
                State::check_seqid(&sid, l.seqid)?;
                match t.states.get(&l.open) {
                    Some(Stateful::Open(o)) => o.clone(),
                    _ => return Err(st::BAD_STATEID),
                }
            }
        };
        if open.file != file {
            return Err(st::BAD_STATEID);
        }
        if Some(open.clientid) != self.clientid {
            return Err(st::BAD_STATEID);
        }
        if write && open.access & SHARE_WRITE == 0 {
            return Err(st::OPENMODE);
        }
        Ok(())
    }

    fn setattr(&mut self, d: &mut Dec<'_>, out: &mut Enc) -> DResult<u32> {
        let sid = d.stateid()?;
        let decoded = attrs::decode_set(d, false)?;
        self.keep_body = true;
        let fail = |out: &mut Enc, s| {
            out.bitmap(&Bitmap::default());
            Ok(s)
        };
        let (set, bits) = match decoded {
            Ok(v) => v,
            Err(s) => return fail(out, s),
        };
        let obj = match self.vol_obj(st::ROFS) {
            Ok(o) => o,
            Err(s) => return fail(out, s),
        };
        if set.size.is_some()
            && let Err(s) = self.check_io_sid(sid, &self.cur_bytes(), true)
        {
            return fail(out, s);
        }
        let id = self.inner.identity(self.ctx, &obj);
        if let Err(e) = ops::setattr(&obj, &id, &set) {
            return fail(out, status_of(&e));
        }
        out.bitmap(&bits);
        Ok(st::OK)
    }

    pub(super) fn cur_bytes(&self) -> Vec<u8> {
        self.cur.as_ref().map(Fh::bytes).unwrap_or_default()
    }

    fn access(&mut self, d: &mut Dec<'_>, out: &mut Enc) -> DResult<u32> {
        // 4.2 adds the ACCESS4_XA* bits (RFC 8276).
        let want = d.u32()? & if self.minor >= 2 { 0x1ff } else { 0x3f };
        let granted = match &self.cur {
            None => return Ok(st::NOFILEHANDLE),
            Some(Fh::Root | Fh::Export) => want & (ACCESS_READ | ACCESS_LOOKUP),
            Some(Fh::Vol(_)) => {
                let obj = tri!(self.vol_obj(st::INVAL));
                let id = self.inner.identity(self.ctx, &obj);
                let asked = (want & 0x3f) | ACCESS_READ | ACCESS_MODIFY;
                let (granted, attr) = io!(ops::access(&obj, &id, asked));
                (granted & want) | super::xattr::access_bits(want, granted, &attr, &obj)
            }
        };
        out.u32(want).u32(granted);
        Ok(st::OK)
    }

    fn lookup(&mut self, d: &mut Dec<'_>) -> DResult<u32> {
        let raw = d.opaque(1024)?;
        let name = tri!(name_of(raw));
        let next = match &self.cur {
            None => return Ok(st::NOFILEHANDLE),
            Some(Fh::Root) => {
                if name != b"export" {
                    return Ok(st::NOENT);
                }
                Fh::Export
            }
            Some(Fh::Export) => {
                let Some(v) = std::str::from_utf8(name)
                    .ok()
                    .and_then(|n| self.inner.store.volume_by_name_fresh(n))
                else {
                    return Ok(st::NOENT);
                };
                // A volume the caller may not use is not there for it (nor in READDIR).
                match v.options().admits(self.ctx.peer) {
                    Ok(()) => {}
                    Err(Refused::Client) => return Ok(st::NOENT),
                    Err(Refused::InsecurePort) => return Ok(st::PERM),
                }
                Fh::Vol(v.root_handle().to_vec())
            }
            Some(Fh::Vol(_)) => {
                let dir = tri!(self.vol_obj(st::INVAL));
                let id = self.inner.identity(self.ctx, &dir);
                let (h, _) = io!(ops::lookup(&self.inner.store, &dir, name, &id));
                Fh::Vol(h)
            }
        };
        self.cur = Some(next);
        self.cur_sid = None;
        Ok(st::OK)
    }

    fn lookupp(&mut self) -> DResult<u32> {
        let next = match &self.cur {
            None => return Ok(st::NOFILEHANDLE),
            Some(Fh::Root) => return Ok(st::NOENT),
            Some(Fh::Export) => Fh::Root,
            Some(Fh::Vol(h)) => {
                let dir = tri!(self.vol_obj(st::INVAL));
                if dir.volume.root_handle() == h.as_slice() {
                    Fh::Export
                } else {
                    let attr = io!(ops::getattr(&dir));
                    match attr.kind {
                        NodeKind::Directory => {}
                        // RFC 8881 section 18.14.3.
                        NodeKind::Symlink => return Ok(st::SYMLINK),
                        _ => return Ok(st::NOTDIR),
                    }
                    let id = self.inner.identity(self.ctx, &dir);
                    let (h, _) = io!(ops::lookup(&self.inner.store, &dir, b"..", &id));
                    Fh::Vol(h)
                }
            }
        };
        self.cur = Some(next);
        self.cur_sid = None;
        Ok(st::OK)
    }

    fn readlink(&mut self, out: &mut Enc) -> DResult<u32> {
        let obj = tri!(self.vol_obj(st::INVAL));
        if io!(ops::getattr(&obj)).kind != NodeKind::Symlink {
            return Ok(st::INVAL);
        }
        out.opaque(&io!(ops::readlink(&obj)));
        Ok(st::OK)
    }

    fn read(&mut self, d: &mut Dec<'_>, out: &mut Enc) -> DResult<u32> {
        let sid = d.stateid()?;
        let offset = d.u64()?;
        let asked = d.u32()?.min(MAX_IO);
        let obj = tri!(self.vol_obj(st::ISDIR));
        tri!(self.check_io_sid(sid, &self.cur_bytes(), false));
        // A READ returns what fits in the reply the session allows (after eof and count,
        // whole XDR words): a short read, which RFC 8881 section 18.22.3 permits and clients
        // handle by reading the rest again. The Linux client never needs it: it sizes its
        // reads from ca_maxresponsesize minus its worst-case overhead and sends one READ per
        // compound. Only when no byte fits does the READ fail (REP_TOO_BIG, or
        // REP_TOO_BIG_TO_CACHE): a zero-length read short of the end of file would look like
        // an error to clients.
        let room = self.room(out).saturating_sub(8) & !3;
        let count = asked.min(u32::try_from(room).unwrap_or(u32::MAX));
        if count == 0 && asked > 0 {
            return Ok(self.budget.exceeded());
        }
        let id = self.inner.identity(self.ctx, &obj);
        let (fd, n, eof, _) = match ops::read_extent(&obj, &id, offset, count) {
            Ok(v) => v,
            Err(e) => return Ok(status_of(&e)),
        };
        out.u32(u32::from(eof)).u32(n as u32);
        // A final READ whose reply is not cached sends its data from the file; otherwise
        // (more ops follow, or the slot keeps a copy) the bytes go into the results.
        let cached = self.slot.is_some_and(|(_, _, cache)| cache);
        if self.last && !cached {
            self.tail = Some((fd, offset, n));
        } else {
            oncrpc::FileSlice {
                fd,
                offset,
                len: n as u32,
            }
            .read_into(&mut out.buf);
        }
        if let Some(m) = &self.inner.metrics {
            m.read(obj.volume.name(), n as u64);
        }
        Ok(st::OK)
    }

    fn write(&mut self, d: &mut Dec<'_>, out: &mut Enc) -> DResult<u32> {
        let sid = d.stateid()?;
        let offset = d.u64()?;
        let stable = match d.u32()? {
            0 => WriteStability::Unstable,
            1 => WriteStability::DataSync,
            2 => WriteStability::FileSync,
            _ => return Err(BadXdr),
        };
        let data = d.opaque(MAX_IO as usize)?;
        let (obj, held) = tri!(self.vol_obj_held(st::ISDIR));
        tri!(self.check_io_sid(sid, &self.cur_bytes(), true));
        let id = self.inner.identity(self.ctx, &obj);
        let (before, after, n) = io!(ops::write(&obj, &id, offset, data, stable));
        if let Some(held) = held {
            // Written to a removed file: credited back when its last descriptor closes.
            let growth = export_store::quota::growth(before.used, after.used);
            held.charged_unlinked.fetch_add(growth, Ordering::Relaxed);
        }
        if let Some(m) = &self.inner.metrics {
            m.written(obj.volume.name(), n as u64);
        }
        let committed = match stable {
            WriteStability::Unstable => 0,
            WriteStability::DataSync => 1,
            WriteStability::FileSync => 2,
        };
        out.u32(n as u32)
            .u32(committed)
            .fixed(&self.inner.write_verifier);
        Ok(st::OK)
    }

    fn commit(&mut self, d: &mut Dec<'_>, out: &mut Enc) -> DResult<u32> {
        let _offset = d.u64()?;
        let _count = d.u32()?;
        let obj = tri!(self.vol_obj(st::ISDIR));
        io!(ops::commit(&obj));
        out.fixed(&self.inner.write_verifier);
        Ok(st::OK)
    }

    /// The current handle as a directory of a volume (creating in the pseudo file system is
    /// refused as read-only).
    fn dir_obj(&self) -> Result<Object, u32> {
        let h = match &self.cur {
            None => return Err(st::NOFILEHANDLE),
            Some(Fh::Root | Fh::Export) => return Err(st::ROFS),
            Some(Fh::Vol(h)) => h.clone(),
        };
        self.inner
            .store
            .resolve(&h, libc::O_RDONLY | libc::O_DIRECTORY)
            .map_err(|e| status_of(&e))
    }

    fn create(&mut self, d: &mut Dec<'_>, out: &mut Enc) -> DResult<u32> {
        let kind = d.u32()?;
        let mut target = None;
        let mut spec = None;
        match kind {
            5 => target = Some(d.opaque(4096)?.to_vec()),
            3 | 4 => {
                let (ma, mi) = (d.u32()?, d.u32()?);
                spec = Some(if kind == 3 {
                    NodeSpec::Block(ma, mi)
                } else {
                    NodeSpec::Char(ma, mi)
                });
            }
            6 => spec = Some(NodeSpec::Socket),
            7 => spec = Some(NodeSpec::Fifo),
            2 => {}
            1 => {
                d.opaque(1024)?;
                let _ = attrs::decode_set(d, false)?;
                return Ok(st::BADTYPE);
            }
            _ => return Err(BadXdr),
        }
        let name = d.opaque(1024)?.to_vec();
        let (set, bits) = tri!(attrs::decode_set(d, false)?);
        let name = tri!(name_of(&name));
        let dir = tri!(self.dir_obj());
        let id = self.inner.identity(self.ctx, &dir);
        let before = ops::getattr(&dir).ok();
        let store = &self.inner.store;
        let made = if let Some(t) = target {
            ops::symlink(store, &dir, name, &id, &t).and_then(|c| {
                if set.uid.is_some() || set.gid.is_some() {
                    let obj = store.resolve(&c.0, libc::O_PATH)?;
                    let owner = SetAttr {
                        uid: set.uid,
                        gid: set.gid,
                        ..SetAttr::default()
                    };
                    ops::setattr(&obj, &id, &owner)?;
                }
                Ok(c)
            })
        } else if let Some(s) = spec {
            ops::mknod(store, &dir, name, &id, s, &set)
        } else {
            ops::mkdir(store, &dir, name, &id, &set)
        };
        let (h, _) = io!(made);
        let after = ops::getattr(&dir).ok();
        cinfo(out, before.as_ref(), after.as_ref());
        out.bitmap(&bits);
        self.cur = Some(Fh::Vol(h));
        self.cur_sid = None;
        Ok(st::OK)
    }

    fn remove(&mut self, d: &mut Dec<'_>, out: &mut Enc) -> DResult<u32> {
        let raw = d.opaque(1024)?;
        let name = tri!(name_of(raw));
        let dir = tri!(self.dir_obj());
        let id = self.inner.identity(self.ctx, &dir);
        let before = ops::getattr(&dir).ok();
        let attr = io!(ops::stat_entry(&dir, name, &id));
        let is_dir = attr.kind == NodeKind::Directory;
        io!(ops::remove(&self.inner.store, &dir, name, &id, is_dir));
        let after = ops::getattr(&dir).ok();
        cinfo(out, before.as_ref(), after.as_ref());
        Ok(st::OK)
    }

    fn saved_dir(&self) -> Result<Object, u32> {
        match &self.saved {
            None => Err(st::NOFILEHANDLE),
            Some(Fh::Root | Fh::Export) => Err(st::ROFS),
            Some(Fh::Vol(h)) => self
                .inner
                .store
                .resolve(h, libc::O_RDONLY | libc::O_DIRECTORY)
                .map_err(|e| status_of(&e)),
        }
    }

    fn rename(&mut self, d: &mut Dec<'_>, out: &mut Enc) -> DResult<u32> {
        let old = d.opaque(1024)?.to_vec();
        let new = d.opaque(1024)?.to_vec();
        let from = tri!(self.saved_dir());
        let to = tri!(self.dir_obj());
        let old = tri!(name_of(&old));
        let new = tri!(name_of(&new));
        if from.volume.id() != to.volume.id() {
            return Ok(st::XDEV);
        }
        let id = self.inner.identity(self.ctx, &to);
        let (fb, tb) = (ops::getattr(&from).ok(), ops::getattr(&to).ok());
        io!(ops::rename(&self.inner.store, &from, old, &to, new, &id));
        let (fa, ta) = (ops::getattr(&from).ok(), ops::getattr(&to).ok());
        cinfo(out, fb.as_ref(), fa.as_ref());
        cinfo(out, tb.as_ref(), ta.as_ref());
        Ok(st::OK)
    }

    fn link(&mut self, d: &mut Dec<'_>, out: &mut Enc) -> DResult<u32> {
        let raw = d.opaque(1024)?.to_vec();
        let name = tri!(name_of(&raw));
        let obj = match &self.saved {
            None => return Ok(st::NOFILEHANDLE),
            Some(Fh::Root | Fh::Export) => return Ok(st::ISDIR),
            Some(Fh::Vol(h)) => io!(self.inner.store.resolve(h, libc::O_PATH)),
        };
        let dir = tri!(self.dir_obj());
        if obj.volume.id() != dir.volume.id() {
            return Ok(st::XDEV);
        }
        let id = self.inner.identity(self.ctx, &dir);
        let before = ops::getattr(&dir).ok();
        io!(ops::link(&obj, &dir, name, &id));
        let after = ops::getattr(&dir).ok();
        cinfo(out, before.as_ref(), after.as_ref());
        Ok(st::OK)
    }

    fn readdir(&mut self, d: &mut Dec<'_>, out: &mut Enc) -> DResult<u32> {
        let cookie = d.u64()?;
        let verf = d.fixed::<8>()?;
        let _dircount = d.u32()?;
        let asked = d.u32()? as usize;
        // Like READ, a listing stops where the session's reply would be full; if not even one
        // entry fits there, the reply is what is too small.
        let room = self.room(out);
        let maxcount = asked.min(MAX_IO as usize).min(room);
        let req = d.bitmap()?;
        if cookie == 1 || cookie == 2 {
            return Ok(st::BAD_COOKIE);
        }
        // Fixed part: verifier, the list's terminator and eof.
        let mut used = 8 + 4 + 4;
        let mut entries = Enc::new();
        let mut count = 0usize;
        let mut fits = |entries: &mut Enc, cookie: u64, name: &[u8], attrs: &Enc| {
            let size = 4 + 8 + 4 + name.len().div_ceil(4) * 4 + attrs.len();
            if used + size > maxcount {
                return false;
            }
            used += size;
            count += 1;
            entries.bool(true).u64(cookie).opaque(name);
            entries.buf.extend_from_slice(&attrs.buf);
            true
        };
        let cur = match &self.cur {
            None => return Ok(st::NOFILEHANDLE),
            Some(fh) => fh.clone(),
        };
        let (eof, verifier) = match &cur {
            Fh::Root | Fh::Export => {
                // Pseudo directories: cookies are positions, from 3.
                let listing: Vec<(Vec<u8>, Fh)> = if cur == Fh::Root {
                    vec![(b"export".to_vec(), Fh::Export)]
                } else {
                    let mut v = self.inner.store.volumes();
                    // As MOUNT EXPORT: only what this address may use (a `secure` volume is
                    // listed on any port; using it takes a reserved one).
                    v.retain(|v| v.options().admits(self.ctx.peer) != Err(Refused::Client));
                    v.sort_by_key(|v| v.id());
                    v.iter()
                        .map(|v| {
                            (
                                v.name().as_bytes().to_vec(),
                                Fh::Vol(v.root_handle().to_vec()),
                            )
                        })
                        .collect()
                };
                let start = if cookie == 0 { 0 } else { cookie as usize - 2 };
                let mut eof = true;
                for (i, (name, fh)) in listing.iter().enumerate().skip(start) {
                    let mut a = Enc::new();
                    self.entry_attrs(&req, fh, &mut a);
                    if !fits(&mut entries, i as u64 + 3, name, &a) {
                        eof = false;
                        break;
                    }
                }
                (eof, [0u8; 8])
            }
            Fh::Vol(_) => {
                let dir = tri!(self.dir_obj());
                if !crate::cookie_valid(&dir.volume, cookie, verf) {
                    return Ok(st::NOT_SAME);
                }
                let v = crate::cookie_verifier(&dir.volume);
                let id = self.inner.identity(self.ctx, &dir);
                let store = &self.inner.store;
                let lease = self.inner.state.config.lease.as_secs() as u32;
                // Asked before the listing runs as the caller (the first ask runs as root).
                let xattr_support = self.xattr_support(Some(&dir));
                let eof = io!(ops::readdir(&dir, &id, cookie, |listing, e| {
                    use std::os::fd::AsFd;
                    let Some((h, attr)) = ops::entry_details(store, &dir, listing.as_fd(), &e.name)
                    else {
                        return Ok(true);
                    };
                    let mut a = Enc::new();
                    let fs = || ops::fsstat(&dir).ok();
                    let node = Node {
                        attr,
                        fh: &h,
                        fsid: (u64::from(dir.volume.id()), 0),
                        mounted_on_fileid: attr.fileid,
                        fs: &fs,
                        lease_s: lease,
                        max_io: u64::from(MAX_IO),
                        xattr_support,
                    };
                    attrs::encode(&req, &node, &mut a);
                    Ok(fits(&mut entries, e.cookie, &e.name, &a))
                }));
                (eof, v)
            }
        };
        if count == 0 && !eof {
            return Ok(if room < asked {
                self.budget.exceeded()
            } else {
                st::TOOSMALL
            });
        }
        out.fixed(&verifier);
        out.buf.extend_from_slice(&entries.buf);
        out.bool(false).bool(eof);
        Ok(st::OK)
    }

    /// Attributes of an entry of a pseudo directory (rdattr_error if it cannot be read).
    fn entry_attrs(&self, req: &Bitmap, fh: &Fh, out: &mut Enc) {
        let bytes = fh.bytes();
        match fh {
            Fh::Vol(h) => match self.inner.store.resolve(h, libc::O_PATH) {
                Ok(obj) => match ops::getattr(&obj) {
                    Ok(attr) => {
                        let fs = || ops::fsstat(&obj).ok();
                        let node = self.node_for(&bytes, attr, Some(&obj), &fs);
                        attrs::encode(req, &node, out);
                    }
                    Err(e) => attrs::encode_error(req, status_of(&e), out),
                },
                Err(e) => attrs::encode_error(req, status_of(&e), out),
            },
            _ => {
                let fs = || None;
                let node = self.node_for(&bytes, self.pseudo_attr(fh), None, &fs);
                attrs::encode(req, &node, out);
            }
        }
    }

    fn open(&mut self, d: &mut Dec<'_>, out: &mut Enc) -> DResult<u32> {
        let _seqid = d.u32()?;
        let share_access = d.u32()?;
        let share_deny = d.u32()?;
        let _owner_clientid = d.u64()?;
        let owner = d.opaque(1024)?.to_vec();
        enum How {
            NoCreate,
            Create(CreateHow, Option<(SetAttr, Bitmap)>),
            Bad(u32),
        }
        let how = match d.u32()? {
            0 => How::NoCreate,
            1 => match d.u32()? {
                mode @ (0 | 1) => {
                    let guarded = mode == 1;
                    match attrs::decode_set(d, false)? {
                        Ok((set, bits)) => How::Create(
                            if guarded {
                                CreateHow::Guarded(set)
                            } else {
                                CreateHow::Unchecked(set)
                            },
                            Some((set, bits)),
                        ),
                        Err(s) => How::Bad(s),
                    }
                }
                2 => How::Create(CreateHow::Exclusive(d.fixed::<8>()?), None),
                3 => {
                    let verf = d.fixed::<8>()?;
                    match attrs::decode_set(d, true)? {
                        Ok(sb) => How::Create(CreateHow::Exclusive(verf), Some(sb)),
                        Err(s) => How::Bad(s),
                    }
                }
                _ => return Err(BadXdr),
            },
            _ => return Err(BadXdr),
        };
        enum Claim {
            Null(Vec<u8>),
            Previous,
            Fh,
            Refused(u32),
        }
        let claim = match d.u32()? {
            0 => Claim::Null(d.opaque(1024)?.to_vec()),
            1 => {
                let deleg = d.u32()?;
                if deleg == 0 {
                    Claim::Previous
                } else {
                    Claim::Refused(st::RECLAIM_BAD)
                }
            }
            2 => {
                d.stateid()?;
                d.opaque(1024)?;
                Claim::Refused(st::BAD_STATEID)
            }
            3 => {
                d.opaque(1024)?;
                Claim::Refused(st::NOTSUPP)
            }
            4 => Claim::Fh,
            5 => {
                d.stateid()?;
                Claim::Refused(st::BAD_STATEID)
            }
            6 => Claim::Refused(st::NOTSUPP),
            _ => return Err(BadXdr),
        };
        if let How::Bad(s) = how {
            return Ok(s);
        }
        let access = share_access & 3;
        let deny = share_deny & 3;
        let want = share_access & 0xff00;
        if access == 0 || share_deny > 3 {
            return Ok(st::INVAL);
        }
        let Some(clientid) = self.clientid else {
            return Ok(st::OP_NOT_IN_SESSION);
        };
        let state = &self.inner.state;
        let reclaim = matches!(claim, Claim::Previous);
        if reclaim {
            tri!(state.check_reclaim(&state.lock(), clientid));
        } else if state.grace.active()
            || (self.minor > 0 && !state.reclaim_done(&state.lock(), clientid))
        {
            // Non-reclaim locking waits for the grace period, and for the client's own
            // RECLAIM_COMPLETE (RFC 8881 section 18.51.3; minor version 0 has none).
            return Ok(st::GRACE);
        }
        let mut created = false;
        let mut attrset = Bitmap::default();
        let mut dir_change = (None, None);
        let (handle, obj) = match claim {
            Claim::Refused(s) => return Ok(s),
            Claim::Previous | Claim::Fh => {
                if !matches!(how, How::NoCreate) && !reclaim {
                    return Ok(st::INVAL);
                }
                let obj = tri!(self.vol_obj(st::ISDIR));
                (self.cur_bytes(), obj)
            }
            Claim::Null(name) => {
                let name = tri!(name_of(&name));
                let dir = match &self.cur {
                    None => return Ok(st::NOFILEHANDLE),
                    Some(Fh::Root | Fh::Export) => {
                        return Ok(if matches!(how, How::NoCreate) {
                            st::ISDIR
                        } else {
                            st::ROFS
                        });
                    }
                    Some(Fh::Vol(_)) => tri!(self.dir_obj()),
                };
                let id = self.inner.identity(self.ctx, &dir);
                let store = &self.inner.store;
                let (h, _) = match how {
                    How::NoCreate => io!(ops::lookup(store, &dir, name, &id)),
                    How::Create(ch, sb) => {
                        let before = ops::getattr(&dir).ok();
                        let (c, made) = io!(ops::create(store, &dir, name, &id, ch));
                        created = made;
                        if let (CreateHow::Exclusive(_), Some((set, bits))) = (ch, &sb)
                            && created
                        {
                            let obj = io!(store.resolve(&c.0, libc::O_PATH));
                            io!(ops::setattr(&obj, &id, set));
                            attrset = bits.clone();
                        } else if let Some((set, bits)) = &sb {
                            attrset = if created {
                                bits.clone()
                            } else if set.size.is_some() {
                                Bitmap::from_bits(&[attrs::SIZE])
                            } else {
                                Bitmap::default()
                            };
                        }
                        dir_change = (before, ops::getattr(&dir).ok());
                        c
                    }
                    How::Bad(_) => unreachable!("handled above"),
                };
                let obj = io!(store.resolve(&h, libc::O_PATH));
                (h, obj)
            }
        };
        let attr = io!(ops::getattr(&obj));
        match attr.kind {
            NodeKind::Regular => {}
            NodeKind::Directory => return Ok(st::ISDIR),
            NodeKind::Symlink => return Ok(st::SYMLINK),
            _ => return Ok(st::WRONG_TYPE),
        }
        // A read-only volume refuses write access before any permission check (a create
        // there already failed with ROFS).
        if access & SHARE_WRITE != 0 && obj.volume.options().read_only {
            return Ok(st::ROFS);
        }
        if !created && !reclaim {
            let id = self.inner.identity(self.ctx, &obj);
            let mut need = 0;
            if access & SHARE_READ != 0 {
                need |= ACCESS_READ;
            }
            if access & SHARE_WRITE != 0 {
                need |= ACCESS_MODIFY;
            }
            let (granted, _) = io!(ops::access(&obj, &id, need));
            if granted != need {
                return Ok(st::ACCESS);
            }
        }
        let sid = {
            let mut t = state.lock();
            // A courtesy client's reservation yields: that client is expired and the open
            // proceeds (RFC 8881 section 8.4.3). Each round expires a whole client; the
            // bound only caps one OPEN's work.
            let mut rounds = 0;
            while let Some(holder) =
                State::share_conflict(&t, clientid, &owner, &handle, access, deny)
            {
                rounds += 1;
                if rounds > 8 || !state.expire_courtesy(&mut t, holder) {
                    return Ok(st::SHARE_DENIED);
                }
            }
            let (other, _) = match state.open_state(&mut t, clientid, &owner, &handle) {
                Ok(v) => v,
                Err(s) => {
                    if let Some(suppressed) = oncrpc::throttle::allow("nfs4_too_many_opens") {
                        tracing::warn!(peer = %self.ctx.peer, clientid, suppressed,
                            "NFSv4 client holds as many opens as allowed: OPEN refused for now");
                    }
                    return Ok(s);
                }
            };
            match t.states.get_mut(&other) {
                Some(Stateful::Open(o)) => {
                    // The file stays usable through this open until CLOSE, even if removed.
                    if o.held.is_none() {
                        o.held = Some(Arc::new(Held::new(
                            Arc::clone(&obj.volume),
                            Arc::clone(&obj.fd),
                        )));
                    }
                    o.access |= access;
                    o.deny |= deny;
                    o.seqid = o.seqid.wrapping_add(1);
                    StateId {
                        seqid: o.seqid,
                        other,
                    }
                }
                _ => return Ok(st::SERVERFAULT),
            }
        };
        self.cur = Some(Fh::Vol(handle));
        self.cur_sid = Some(sid);
        out.stateid(&sid);
        cinfo(out, dir_change.0.as_ref(), dir_change.1.as_ref());
        // OPEN4_RESULT_LOCKTYPE_POSIX.
        out.u32(4);
        out.bitmap(&attrset);
        match want {
            0 => {
                out.u32(0);
            }
            // WANT_NO_DELEG, WANT_CANCEL: "not wanted".
            0x0400 | 0x0500 => {
                out.u32(3).u32(0);
            }
            // A delegation asked for: none is offered (WND4_RESOURCE, no signal later).
            _ => {
                out.u32(3).u32(2).bool(false);
            }
        }
        Ok(st::OK)
    }

    /// The open stateid given (resolved, checked against the current file and client).
    fn open_sid(&self, sid: StateId) -> Result<StateId, u32> {
        let sid = self.real_sid(sid)?;
        let t = self.inner.state.lock();
        match t.states.get(&sid.other) {
            Some(Stateful::Open(o)) => {
                State::check_seqid(&sid, o.seqid)?;
                if o.file != self.cur_bytes() || Some(o.clientid) != self.clientid {
                    return Err(st::BAD_STATEID);
                }
                Ok(sid)
            }
            Some(Stateful::Lock(_)) => Err(st::BAD_STATEID),
            None => Err(st::BAD_STATEID),
        }
    }

    fn open_downgrade(&mut self, d: &mut Dec<'_>, out: &mut Enc) -> DResult<u32> {
        let sid = d.stateid()?;
        let _seqid = d.u32()?;
        let access = d.u32()? & 0xff;
        let deny = d.u32()?;
        let sid = tri!(self.open_sid(sid));
        let mut t = self.inner.state.lock();
        let Some(Stateful::Open(o)) = t.states.get_mut(&sid.other) else {
            return Ok(st::BAD_STATEID);
        };
        if access == 0 || access & !o.access != 0 || deny & !o.deny != 0 {
            return Ok(st::INVAL);
        }
        o.access = access;
        o.deny = deny;
        o.seqid = o.seqid.wrapping_add(1);
        let new = StateId {
            seqid: o.seqid,
            other: sid.other,
        };
        drop(t);
        self.cur_sid = Some(new);
        out.stateid(&new);
        Ok(st::OK)
    }

    fn close(&mut self, d: &mut Dec<'_>, out: &mut Enc) -> DResult<u32> {
        let _seqid = d.u32()?;
        let sid = d.stateid()?;
        let sid = tri!(self.open_sid(sid));
        let state = &self.inner.state;
        let mut t = state.lock();
        let lock_states: Vec<([u8; 12], Owner, Vec<u8>)> = t
            .states
            .iter()
            .filter_map(|(k, s)| match s {
                Stateful::Lock(l) if l.open == sid.other => Some((
                    *k,
                    Owner::V4 {
                        clientid: l.clientid,
                        owner: l.owner.clone(),
                    },
                    l.file.clone(),
                )),
                _ => None,
            })
            .collect();
        if lock_states
            .iter()
            .any(|(_, owner, file)| state.locks.holds(file, owner))
        {
            return Ok(st::LOCKS_HELD);
        }
        for (k, ..) in &lock_states {
            state.drop_state(&mut t, k);
        }
        state.drop_state(&mut t, &sid.other);
        drop(t);
        self.cur_sid = None;
        out.stateid(&StateId::INVALID);
        Ok(st::OK)
    }

    fn lock(&mut self, d: &mut Dec<'_>, out: &mut Enc) -> DResult<u32> {
        let locktype = d.u32()?;
        let reclaim = d.bool()?;
        let offset = d.u64()?;
        let length = d.u64()?;
        enum Locker {
            New { open: StateId, owner: Vec<u8> },
            Existing(StateId),
        }
        let locker = if d.bool()? {
            let _open_seqid = d.u32()?;
            let open = d.stateid()?;
            let _lock_seqid = d.u32()?;
            let _clientid = d.u64()?;
            let owner = d.opaque(1024)?.to_vec();
            Locker::New { open, owner }
        } else {
            let sid = d.stateid()?;
            let _lock_seqid = d.u32()?;
            Locker::Existing(sid)
        };
        if !(1..=4).contains(&locktype) {
            return Err(BadXdr);
        }
        let write = locktype == 2 || locktype == 4;
        tri!(check_range(offset, length));
        let Some(clientid) = self.clientid else {
            return Ok(st::OP_NOT_IN_SESSION);
        };
        let state = &self.inner.state;
        if reclaim {
            tri!(state.check_reclaim(&state.lock(), clientid));
        } else if state.grace.active()
            || (self.minor > 0 && !state.reclaim_done(&state.lock(), clientid))
        {
            // Non-reclaim locking waits for the grace period, and for the client's own
            // RECLAIM_COMPLETE (RFC 8881 section 18.51.3; minor version 0 has none).
            return Ok(st::GRACE);
        }
        let file = self.cur_bytes();
        if !matches!(self.cur, Some(Fh::Vol(_))) {
            return Ok(if self.cur.is_none() {
                st::NOFILEHANDLE
            } else {
                st::ISDIR
            });
        }
        let (lock_other, owner) = match locker {
            Locker::New { open, owner } => {
                let open = tri!(self.open_sid(open));
                let mut t = state.lock();
                let access = match t.states.get(&open.other) {
                    Some(Stateful::Open(o)) => o.access,
                    _ => return Ok(st::BAD_STATEID),
                };
                if write && access & SHARE_WRITE == 0 {
                    return Ok(st::OPENMODE);
                }
                let other = state.lock_state(&mut t, clientid, &owner, &file, open.other);
                (other, owner)
            }
            Locker::Existing(sid) => {
                let sid = tri!(self.real_sid(sid));
                let t = state.lock();
                match t.states.get(&sid.other) {
                    Some(Stateful::Lock(l)) if l.file == file && l.clientid == clientid => {
                        tri!(State::check_seqid(&sid, l.seqid));
                        (sid.other, l.owner.clone())
                    }
                    _ => return Ok(st::BAD_STATEID),
                }
            }
        };
        let (start, end) = Lock::range(offset, length);
        let want = Lock {
            owner: Owner::V4 {
                clientid,
                owner: owner.clone(),
            },
            start,
            end,
            write,
        };
        match state.locks.lock(&file, want) {
            Ok(()) => {}
            Err(LockError::Conflict(c)) => {
                self.keep_body = true;
                denied(out, &c);
                return Ok(st::DENIED);
            }
            // No room for another range: the client is asked to retry later.
            Err(LockError::Full) => {
                if let Some(suppressed) = oncrpc::throttle::allow("lock_table_full") {
                    tracing::warn!(peer = %self.ctx.peer, suppressed, "lock table full: NFSv4 LOCK refused");
                }
                return Ok(st::DELAY);
            }
        }
        let mut t = state.lock();
        let sid = match t.states.get_mut(&lock_other) {
            Some(Stateful::Lock(l)) => {
                l.seqid = l.seqid.wrapping_add(1);
                StateId {
                    seqid: l.seqid,
                    other: lock_other,
                }
            }
            _ => return Ok(st::BAD_STATEID),
        };
        drop(t);
        self.cur_sid = Some(sid);
        out.stateid(&sid);
        Ok(st::OK)
    }

    fn lockt(&mut self, d: &mut Dec<'_>, out: &mut Enc) -> DResult<u32> {
        let locktype = d.u32()?;
        let offset = d.u64()?;
        let length = d.u64()?;
        let _clientid = d.u64()?;
        let owner = d.opaque(1024)?.to_vec();
        if !(1..=4).contains(&locktype) {
            return Err(BadXdr);
        }
        tri!(check_range(offset, length));
        let Some(clientid) = self.clientid else {
            return Ok(st::OP_NOT_IN_SESSION);
        };
        if !matches!(self.cur, Some(Fh::Vol(_))) {
            return Ok(if self.cur.is_none() {
                st::NOFILEHANDLE
            } else {
                st::ISDIR
            });
        }
        let state = &self.inner.state;
        if state.grace.active() {
            return Ok(st::GRACE);
        }
        let (start, end) = Lock::range(offset, length);
        let want = Lock {
            owner: Owner::V4 { clientid, owner },
            start,
            end,
            write: locktype == 2 || locktype == 4,
        };
        if let Some(c) = state.locks.test(&self.cur_bytes(), &want) {
            self.keep_body = true;
            denied(out, &c);
            return Ok(st::DENIED);
        }
        Ok(st::OK)
    }

    fn locku(&mut self, d: &mut Dec<'_>, out: &mut Enc) -> DResult<u32> {
        let _locktype = d.u32()?;
        let _seqid = d.u32()?;
        let sid = d.stateid()?;
        let offset = d.u64()?;
        let length = d.u64()?;
        tri!(check_range(offset, length));
        let sid = tri!(self.real_sid(sid));
        let state = &self.inner.state;
        let mut t = state.lock();
        let (file, owner, clientid, seqid) = match t.states.get_mut(&sid.other) {
            Some(Stateful::Lock(l)) if Some(l.clientid) == self.clientid => {
                tri!(State::check_seqid(&sid, l.seqid));
                l.seqid = l.seqid.wrapping_add(1);
                (l.file.clone(), l.owner.clone(), l.clientid, l.seqid)
            }
            _ => return Ok(st::BAD_STATEID),
        };
        drop(t);
        if file != self.cur_bytes() {
            return Ok(st::BAD_STATEID);
        }
        let (start, end) = Lock::range(offset, length);
        state
            .locks
            .unlock(&file, &Owner::V4 { clientid, owner }, start, end);
        let new = StateId {
            seqid,
            other: sid.other,
        };
        self.cur_sid = Some(new);
        out.stateid(&new);
        Ok(st::OK)
    }

    fn free_stateid(&mut self, d: &mut Dec<'_>) -> DResult<u32> {
        let sid = d.stateid()?;
        let sid = tri!(self.real_sid(sid));
        let state = &self.inner.state;
        let mut t = state.lock();
        match t.states.get(&sid.other) {
            Some(Stateful::Lock(l)) if Some(l.clientid) == self.clientid => {
                let owner = Owner::V4 {
                    clientid: l.clientid,
                    owner: l.owner.clone(),
                };
                if state.locks.holds(&l.file, &owner) {
                    return Ok(st::LOCKS_HELD);
                }
                state.drop_state(&mut t, &sid.other);
                Ok(st::OK)
            }
            Some(Stateful::Open(o)) if Some(o.clientid) == self.clientid => Ok(st::LOCKS_HELD),
            _ => Ok(st::BAD_STATEID),
        }
    }

    fn test_stateid(&mut self, d: &mut Dec<'_>, out: &mut Enc) -> DResult<u32> {
        let n = d.count(1024, 16)?;
        let mut sids = Vec::with_capacity(n);
        for _ in 0..n {
            sids.push(d.stateid()?);
        }
        let t = self.inner.state.lock();
        out.u32(n as u32);
        for sid in sids {
            let s = match t.states.get(&sid.other) {
                Some(Stateful::Open(o)) if Some(o.clientid) == self.clientid => {
                    State::check_seqid(&sid, o.seqid).err().unwrap_or(st::OK)
                }
                Some(Stateful::Lock(l)) if Some(l.clientid) == self.clientid => {
                    State::check_seqid(&sid, l.seqid).err().unwrap_or(st::OK)
                }
                _ => st::BAD_STATEID,
            };
            out.u32(s);
        }
        Ok(st::OK)
    }

    fn allocate(&mut self, d: &mut Dec<'_>, punch: bool) -> DResult<u32> {
        let sid = d.stateid()?;
        let offset = d.u64()?;
        let length = d.u64()?;
        let obj = tri!(self.vol_obj(st::ISDIR));
        tri!(self.check_io_sid(sid, &self.cur_bytes(), true));
        let id = self.inner.identity(self.ctx, &obj);
        io!(ops::allocate(&obj, &id, offset, length, punch));
        Ok(st::OK)
    }

    fn seek(&mut self, d: &mut Dec<'_>, out: &mut Enc) -> DResult<u32> {
        let sid = d.stateid()?;
        let offset = d.u64()?;
        let what = d.u32()?;
        if what > 1 {
            return Ok(st::INVAL);
        }
        let obj = tri!(self.vol_obj(st::ISDIR));
        tri!(self.check_io_sid(sid, &self.cur_bytes(), false));
        let id = self.inner.identity(self.ctx, &obj);
        match io!(ops::seek(&obj, &id, offset, what == 1)) {
            Some(at) => out.bool(false).u64(at),
            None => return Ok(st::NXIO),
        };
        Ok(st::OK)
    }
}

/// LOCK4denied.
fn denied(out: &mut Enc, c: &Lock) {
    out.u64(c.start)
        .u64(c.length())
        .u32(if c.write { 2 } else { 1 });
    match &c.owner {
        Owner::V4 { clientid, owner } => out.u64(*clientid).opaque(owner),
        Owner::Nlm { oh, .. } => out.u64(0).opaque(oh),
    };
}

/// RFC 8881 section 18.10.3: zero length, or a range past 2^64 - 1, is invalid.
fn check_range(offset: u64, length: u64) -> Result<(), u32> {
    if length == 0 || (length != u64::MAX && offset.checked_add(length).is_none()) {
        Err(st::INVAL)
    } else {
        Ok(())
    }
}

fn trimmed(b: &Bitmap) -> Bitmap {
    let mut b = b.clone();
    while b.0.last() == Some(&0) {
        b.0.pop();
    }
    b
}
