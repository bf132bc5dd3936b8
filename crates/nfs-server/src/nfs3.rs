//! The 22 NFSv3 procedures (RFC 1813 section 3.3).
//!
//! Each call runs on a blocking worker thread: resolve the handle(s) as root, squash the
//! caller's credential per the volume's options, perform the operation as that identity,
//! and encode the reply with weak cache consistency data.

use std::io;
use std::os::fd::AsFd;
use std::sync::Arc;

use export_store::access::Refused;
use export_store::ops::{self, NodeSpec};
use export_store::{Attr, CreateHow, ExportStore, Identity, Object, WriteStability};
use nfs3_types::nfs3::*;
use nfs3_types::xdr_codec::{List, Opaque, Pack, Unpack};
use oncrpc::message::XdrReader;
use oncrpc::{CallArgs, CallContext, CallNames, Credential, Reply, ReplySender, RpcService};
use tracing::debug;

use crate::convert::{fattr, post_op, set_attr, status, wcc};
use crate::executor::Executor;
use crate::metrics::NfsMetrics;
use crate::{MAX_IO, NFS_PROGRAM};

/// The NFSv3 program.
pub struct Nfs3Service {
    inner: Arc<Inner>,
    executor: Arc<Executor>,
}

struct Inner {
    store: Arc<ExportStore>,
    write_verifier: [u8; 8],
    metrics: Option<Arc<NfsMetrics>>,
}

impl Nfs3Service {
    /// The service over `store`, running calls on `executor`'s threads (quick ones on a
    /// cached handle inline, see [`RpcService::call`]), with the server's write verifier
    /// (see [`crate::write_verifier`]) and, if given, counting bytes per volume and stale
    /// handles in `metrics`.
    pub fn new(
        store: Arc<ExportStore>,
        executor: Arc<Executor>,
        write_verifier: [u8; 8],
        metrics: Option<Arc<NfsMetrics>>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                write_verifier,
                metrics,
            }),
            executor,
        }
    }
}

impl Nfs3Service {
    /// Runs one call synchronously on the calling thread (which it may switch to other
    /// credentials). The async path runs exactly this on a blocking worker; fuzzing and
    /// tests call it directly.
    pub fn call_blocking(&self, ctx: &CallContext, args: &[u8]) -> Reply {
        match ctx.proc_ {
            0 => Reply::Success(Vec::new()),
            1..=21 => self.inner.dispatch(ctx, args).into_bytes(),
            _ => Reply::ProcUnavail,
        }
    }
}

impl RpcService for Nfs3Service {
    fn program(&self) -> u32 {
        NFS_PROGRAM
    }

    fn versions(&self) -> (u32, u32) {
        (3, 3)
    }

    fn call_names(&self, _vers: u32, proc_: u32) -> CallNames {
        CallNames {
            program: "nfs",
            version: "3",
            procedure: crate::metrics::nfs3_procedure(proc_),
        }
    }

    fn status_reader(&self) -> fn(u32, &[u8]) -> &'static str {
        crate::metrics::nfs3_status
    }

    fn reply_reservation(&self, _vers: u32, proc_: u32, args: &[u8]) -> usize {
        reply_reservation(proc_, args)
    }

    fn call(&self, ctx: CallContext, args: CallArgs, reply: ReplySender) {
        if ctx.proc_ == 0 || ctx.proc_ > 21 {
            return reply.send(self.call_blocking(&ctx, &[]));
        }
        if quick(ctx.proc_) && self.inner.quick_and_cached(ctx.proc_, args.bytes()) {
            // A quick call on an open handle costs less than the hand-over to a worker and
            // back: it runs here, on the connection's task, and leaves the thread root.
            let _scope = export_store::cred::Scope::enter();
            return reply.send(self.inner.dispatch(&ctx, args.bytes()));
        }
        let inner = Arc::clone(&self.inner);
        // File-system work runs on a worker thread, which sends the reply itself.
        self.executor.run_then_send(
            move || inner.dispatch(&ctx, args.bytes()),
            move |r| reply.send(r),
        );
    }
}

/// Procedures that never wait for the disk once their handle is open (the attributes, access
/// and names of cached objects; the volume's statistics): GETATTR, LOOKUP, ACCESS, READLINK,
/// FSSTAT, FSINFO and PATHCONF.
fn quick(proc_: u32) -> bool {
    matches!(proc_, 1 | 3 | 4 | 5 | 18 | 19 | 20)
}

/// The file handles in a well-formed call's arguments: every procedure starts with one;
/// RENAME has a second after the source name, LINK right after the first.
fn call_handles(proc_: u32, a: &[u8]) -> [Option<&[u8]>; 2] {
    let mut r = XdrReader::new(a);
    let first = r.opaque(64);
    let second = match proc_ {
        14 => r.opaque(4096).and_then(|_| r.opaque(64)),
        15 => r.opaque(64),
        _ => None,
    };
    [first, second]
}

/// A failure reply of procedure `proc_` with `status`: every failure body is the status
/// followed by attributes the server may leave out (each `attributes_follow` false).
fn refusal(proc_: u32, status: nfsstat3) -> Reply {
    let absent = match proc_ {
        1 => 0,
        3 | 4 | 5 | 6 | 16..=20 => 1,
        15 => 3,
        14 => 4,
        _ => 2,
    };
    let mut body = (status as u32).to_be_bytes().to_vec();
    body.resize(4 + 4 * absent, 0);
    Reply::Success(body)
}

/// What a reply may take in memory, from the counts the client asked for: READ data below
/// the sendfile threshold is copied into the reply, READDIR(PLUS) replies are as large as
/// their count. Everything else is small.
fn reply_reservation(proc_: u32, args: &[u8]) -> usize {
    const SMALL: usize = oncrpc::server::DEFAULT_REPLY_RESERVATION;
    let word = |at: usize| {
        args.get(at..at + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    // Every one of these starts with the file handle: length, bytes, padding.
    let Some(after_fh) = word(0).map(|n| 4 + n.min(64) + (4 - n % 4) % 4) else {
        return SMALL;
    };
    let count = match proc_ {
        // offset (8), count
        6 => word(after_fh + 8).map(|n| n.min(crate::SENDFILE_MIN)),
        // cookie (8), verifier (8), count
        16 => word(after_fh + 16),
        // cookie (8), verifier (8), dircount, maxcount
        17 => word(after_fh + 20),
        _ => None,
    };
    count.map_or(SMALL, |n| n.min(crate::MAX_IO as usize) + SMALL)
}

fn ok<T: Pack>(value: T) -> Reply {
    let mut out = Vec::with_capacity(value.packed_size());
    match value.pack(&mut out) {
        Ok(_) => Reply::Success(out),
        Err(_) => Reply::SystemErr,
    }
}

fn decode<T: Unpack>(bytes: &[u8]) -> Option<T> {
    let mut r = bytes;
    T::unpack(&mut r).ok().map(|(v, _)| v)
}

/// Decodes the arguments or answers GARBAGE_ARGS.
macro_rules! args {
    ($ty:ty, $bytes:expr) => {
        match decode::<$ty>($bytes) {
            Some(a) => a,
            None => return Reply::GarbageArgs,
        }
    };
}

/// Evaluates an `io::Result`, or returns the error reply built by `$fail(status)`.
macro_rules! tri {
    ($e:expr, $fail:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => {
                let st = status(&e);
                debug!(error = %e, ?st, "NFS error");
                #[allow(clippy::redundant_closure_call)]
                return ok($fail(st));
            }
        }
    };
}

/// The reply of CREATE, MKDIR, SYMLINK and MKNOD, which share one shape: the new handle and
/// attributes, or a status; the directory's wcc data either way.
macro_rules! made {
    ($outcome:expr, $dir_wcc:expr, $res:ident, $ok:ident, $fail:ident) => {
        match $outcome {
            Ok((h, attr)) => ok($res::Ok($ok {
                obj: Nfs3Option::Some(nfs_fh3 {
                    data: Opaque::owned(h),
                }),
                obj_attributes: post_op(Some(&attr)),
                dir_wcc: $dir_wcc,
            })),
            Err(st) => ok($res::Err((st, $fail { dir_wcc: $dir_wcc }))),
        }
    };
}

fn err<T>(st: nfsstat3, fail: T) -> Nfs3Result<Void, T> {
    Nfs3Result::Err((st, fail))
}

use nfs3_types::xdr_codec::Void;

const DIR_FLAGS: libc::c_int = libc::O_RDONLY | libc::O_DIRECTORY;

/// The identity a caller acts as on `obj`: its AUTH_SYS credential with the volume's squash
/// options applied (AUTH_NONE is the anonymous identity). Shared with NLM.
pub(crate) fn identity(credential: &Credential, obj: &Object) -> Identity {
    let opts = obj.volume.options();
    match credential {
        Credential::Sys(s) => opts.squash.apply(
            Identity {
                uid: s.uid,
                gid: s.gid,
                groups: s.gids.clone(),
            },
            opts.anonuid,
            opts.anongid,
        ),
        Credential::None => Identity {
            uid: opts.anonuid,
            gid: opts.anongid,
            groups: Vec::new(),
        },
    }
}

impl Inner {
    /// Whether a call may run inline: a quick procedure whose handle is already open.
    fn quick_and_cached(&self, proc_: u32, args: &[u8]) -> bool {
        quick(proc_) && call_handles(proc_, args)[0].is_some_and(|fh| self.store.is_cached(fh))
    }

    fn identity(&self, ctx: &CallContext, obj: &Object) -> Identity {
        identity(&ctx.credential, obj)
    }

    fn resolve(&self, fh: &nfs_fh3, flags: libc::c_int) -> io::Result<Object> {
        self.resolve_bytes(&fh.data, flags)
    }

    fn resolve_bytes(&self, fh: &[u8], flags: libc::c_int) -> io::Result<Object> {
        self.counted(self.store.resolve(fh, flags))
    }

    /// [`Inner::resolve`] with the attributes read while resolving (no second `fstat`).
    fn resolve_attr(&self, fh: &nfs_fh3, flags: libc::c_int) -> io::Result<(Object, Attr)> {
        self.counted(self.store.resolve_attr(&fh.data, flags))
    }

    /// Counts a stale or bad handle.
    fn counted<T>(&self, r: io::Result<T>) -> io::Result<T> {
        if let (Err(e), Some(m)) = (&r, &self.metrics)
            && matches!(
                e.raw_os_error(),
                Some(libc::ESTALE | export_store::store::EBADHANDLE)
            )
        {
            m.stale();
        }
        r
    }

    fn dispatch(&self, ctx: &CallContext, a: &[u8]) -> Reply {
        // Disabled unless RUST_LOG asks for debug: then every call logs inside this span.
        let span = tracing::debug_span!(
            "nfs3",
            xid = ctx.xid,
            procedure = crate::metrics::nfs3_procedure(ctx.proc_)
        );
        let _entered = span.enter();
        let reply = self.answer(ctx, a);
        if tracing::enabled!(tracing::Level::DEBUG) {
            let status = match &reply {
                Reply::Success(body) => crate::metrics::nfs3_status(ctx.proc_, body),
                _ => "rpc error",
            };
            debug!(peer = %ctx.peer, credential = ?ctx.credential, status, "answered");
        }
        reply
    }

    fn answer(&self, ctx: &CallContext, a: &[u8]) -> Reply {
        if !crate::shape::well_formed(ctx.proc_, a) {
            return Reply::GarbageArgs;
        }
        // Every handle in the call must name a volume this caller may use: handles work
        // without mounting, so MOUNT alone cannot keep a client out.
        for fh in call_handles(ctx.proc_, a).into_iter().flatten() {
            if let Some(vol) = self.store.volume_of(fh)
                && let Err(refused) = vol.options().admits(ctx.peer)
            {
                crate::access_refused(&vol, ctx.peer, refused);
                let status = match refused {
                    Refused::Client => nfsstat3::NFS3ERR_ACCES,
                    Refused::InsecurePort => nfsstat3::NFS3ERR_PERM,
                };
                return refusal(ctx.proc_, status);
            }
        }
        match ctx.proc_ {
            1 => self.getattr(a),
            2 => self.setattr(ctx, a),
            3 => self.lookup(ctx, a),
            4 => self.access(ctx, a),
            5 => self.readlink(a),
            6 => self.read(ctx, a),
            7 => self.write(ctx, a),
            8 => self.create(ctx, a),
            9 => self.mkdir(ctx, a),
            10 => self.symlink(ctx, a),
            11 => self.mknod(ctx, a),
            12 => self.remove(ctx, a, false),
            13 => self.remove(ctx, a, true),
            14 => self.rename(ctx, a),
            15 => self.link(ctx, a),
            16 => self.readdir(ctx, a),
            17 => self.readdirplus(ctx, a),
            18 => self.fsstat(a),
            19 => self.fsinfo(a),
            20 => self.pathconf(a),
            21 => self.commit(a),
            _ => Reply::ProcUnavail,
        }
    }

    fn getattr(&self, a: &[u8]) -> Reply {
        let args = args!(GETATTR3args, a);
        let (_obj, attr) = tri!(self.resolve_attr(&args.object, libc::O_PATH), |st| err(
            st, Void
        ));
        ok(GETATTR3res::Ok(GETATTR3resok {
            obj_attributes: fattr(&attr),
        }))
    }

    fn setattr(&self, ctx: &CallContext, a: &[u8]) -> Reply {
        let args = args!(SETATTR3args, a);
        let fail = |st, before: Option<&Attr>, after: Option<&Attr>| {
            SETATTR3res::Err((
                st,
                SETATTR3resfail {
                    obj_wcc: wcc(before, after),
                },
            ))
        };
        let obj = tri!(self.resolve(&args.object, libc::O_PATH), |st| fail(
            st, None, None
        ));
        let before = ops::getattr(&obj).ok();
        if let Nfs3Option::Some(guard) = args.guard
            && let Some(b) = &before
            && crate::convert::time(b.ctime) != guard
        {
            return ok(fail(
                nfsstat3::NFS3ERR_NOT_SYNC,
                before.as_ref(),
                before.as_ref(),
            ));
        }
        let id = self.identity(ctx, &obj);
        let r = ops::setattr(&obj, &id, &set_attr(&args.new_attributes));
        let after = ops::getattr(&obj).ok();
        tri!(r, |st| fail(st, before.as_ref(), after.as_ref()));
        ok(SETATTR3res::Ok(SETATTR3resok {
            obj_wcc: wcc(before.as_ref(), after.as_ref()),
        }))
    }

    fn lookup(&self, ctx: &CallContext, a: &[u8]) -> Reply {
        let args = args!(LOOKUP3args, a);
        let fail = |st, dir: Option<&Attr>| {
            LOOKUP3res::Err((
                st,
                LOOKUP3resfail {
                    dir_attributes: post_op(dir),
                },
            ))
        };
        let (dir, dir_attr) = tri!(self.resolve_attr(&args.what.dir, libc::O_PATH), |st| fail(
            st, None
        ));
        let id = self.identity(ctx, &dir);
        let dir_attr = Some(dir_attr);
        let (handle, attr) = tri!(
            ops::lookup(&self.store, &dir, args.what.name.as_ref(), &id),
            |st| fail(st, dir_attr.as_ref())
        );
        ok(LOOKUP3res::Ok(LOOKUP3resok {
            object: nfs_fh3 {
                data: Opaque::owned(handle),
            },
            obj_attributes: post_op(Some(&attr)),
            dir_attributes: post_op(dir_attr.as_ref()),
        }))
    }

    fn access(&self, ctx: &CallContext, a: &[u8]) -> Reply {
        let args = args!(ACCESS3args, a);
        let fail = |st| ACCESS3res::Err((st, ACCESS3resfail::default()));
        let (obj, attr) = tri!(self.resolve_attr(&args.object, libc::O_PATH), fail);
        let id = self.identity(ctx, &obj);
        let (granted, attr) = ops::access_given(&obj, &id, args.access, attr);
        ok(ACCESS3res::Ok(ACCESS3resok {
            obj_attributes: post_op(Some(&attr)),
            access: granted,
        }))
    }

    fn readlink(&self, a: &[u8]) -> Reply {
        let args = args!(READLINK3args, a);
        let fail = |st, attr: Option<&Attr>| {
            READLINK3res::Err((
                st,
                READLINK3resfail {
                    symlink_attributes: post_op(attr),
                },
            ))
        };
        let obj = tri!(self.resolve(&args.symlink, libc::O_PATH), |st| fail(
            st, None
        ));
        let attr = ops::getattr(&obj).ok();
        let target = tri!(ops::readlink(&obj), |st| fail(st, attr.as_ref()));
        ok(READLINK3res::Ok(READLINK3resok {
            symlink_attributes: post_op(attr.as_ref()),
            data: nfspath3(Opaque::owned(target)),
        }))
    }

    fn read(&self, ctx: &CallContext, a: &[u8]) -> Reply {
        let args = args!(READ3args, a);
        let fail = |st, attr: Option<&Attr>| {
            READ3res::Err((
                st,
                READ3resfail {
                    file_attributes: post_op(attr),
                },
            ))
        };
        let obj = tri!(self.resolve(&args.file, libc::O_PATH), |st| fail(st, None));
        let id = self.identity(ctx, &obj);
        let count = args.count.min(MAX_IO);
        let r = ops::read_extent(&obj, &id, args.offset, count);
        let (fd, n, eof, attr) = tri!(r, |st| fail(st, ops::getattr(&obj).ok().as_ref()));
        if let Some(m) = &self.metrics {
            m.read(obj.volume.name(), n as u64);
        }
        // Encoded by hand: status, post_op_attr, count, eof, then the data as an opaque whose
        // bytes follow the results (see `read_reply`).
        let mut head = Vec::with_capacity(4 + 4 + 84 + 4 + 4 + 4);
        let packed = (
            nfsstat3::NFS3_OK.pack(&mut head),
            post_op(Some(&attr)).pack(&mut head),
            (n as u32).pack(&mut head),
            eof.pack(&mut head),
            (n as u32).pack(&mut head),
        );
        if packed.0.is_err() {
            return Reply::SystemErr;
        }
        crate::read_reply(head, fd, args.offset, n)
    }

    fn write(&self, ctx: &CallContext, a: &[u8]) -> Reply {
        // Decoded by hand so the data is used in place, not copied out of the record.
        let mut r = XdrReader::new(a);
        let parsed = (|| {
            let fh = r.opaque(NFS3_FHSIZE)?.to_vec();
            let hi = u64::from(r.u32()?);
            let offset = (hi << 32) | u64::from(r.u32()?);
            let count = r.u32()?;
            let stable = match r.u32()? {
                0 => WriteStability::Unstable,
                1 => WriteStability::DataSync,
                2 => WriteStability::FileSync,
                _ => return None,
            };
            let data = r.opaque(MAX_IO as usize)?;
            Some((fh, offset, count, stable, data))
        })();
        let Some((fh, offset, count, stable, data)) = parsed else {
            return Reply::GarbageArgs;
        };
        let data = &data[..data.len().min(count as usize)];
        let fail = |st, before: Option<&Attr>, after: Option<&Attr>| {
            WRITE3res::Err((
                st,
                WRITE3resfail {
                    file_wcc: wcc(before, after),
                },
            ))
        };
        let obj = tri!(self.resolve_bytes(&fh, libc::O_PATH), |st| fail(
            st, None, None
        ));
        let id = self.identity(ctx, &obj);
        let (before, after, n) = tri!(ops::write(&obj, &id, offset, data, stable), |st| {
            let now = ops::getattr(&obj).ok();
            fail(st, now.as_ref(), now.as_ref())
        });
        if let Some(m) = &self.metrics {
            m.written(obj.volume.name(), n as u64);
        }
        ok(WRITE3res::Ok(WRITE3resok {
            file_wcc: wcc(Some(&before), Some(&after)),
            count: n as u32,
            committed: match stable {
                WriteStability::Unstable => stable_how::UNSTABLE,
                WriteStability::DataSync => stable_how::DATA_SYNC,
                WriteStability::FileSync => stable_how::FILE_SYNC,
            },
            verf: writeverf3(self.write_verifier),
        }))
    }

    /// Shared shape of CREATE, MKDIR, SYMLINK and MKNOD: resolve the directory, run `make`,
    /// and answer with the new handle, its attributes and the directory's wcc data.
    fn make(
        &self,
        ctx: &CallContext,
        dir_fh: &nfs_fh3,
        make: impl FnOnce(&Object, &Identity) -> io::Result<ops::Created>,
    ) -> (Result<ops::Created, nfsstat3>, wcc_data) {
        // The directory's attributes before the change: those read while resolving it.
        let (dir, before) = match self.resolve_attr(dir_fh, DIR_FLAGS) {
            Ok((dir, attr)) => (dir, Some(attr)),
            Err(e) => return (Err(status(&e)), wcc(None, None)),
        };
        let id = self.identity(ctx, &dir);
        let r = make(&dir, &id);
        let dir_wcc = wcc(before.as_ref(), ops::getattr(&dir).ok().as_ref());
        match r {
            Ok(created) => (Ok(created), dir_wcc),
            Err(e) => {
                debug!(error = %e, "create failed");
                (Err(status(&e)), dir_wcc)
            }
        }
    }

    fn create(&self, ctx: &CallContext, a: &[u8]) -> Reply {
        let args = args!(CREATE3args, a);
        let how = match &args.how {
            createhow3::UNCHECKED(s) => CreateHow::Unchecked(set_attr(s)),
            createhow3::GUARDED(s) => CreateHow::Guarded(set_attr(s)),
            createhow3::EXCLUSIVE(v) => CreateHow::Exclusive(v.0),
        };
        let name = args.where_.name.as_ref();
        let (outcome, dir_wcc) = self.make(ctx, &args.where_.dir, |dir, id| {
            ops::create(&self.store, dir, name, id, how).map(|(c, _)| c)
        });
        made!(outcome, dir_wcc, CREATE3res, CREATE3resok, CREATE3resfail)
    }

    fn mkdir(&self, ctx: &CallContext, a: &[u8]) -> Reply {
        let args = args!(MKDIR3args, a);
        let set = set_attr(&args.attributes);
        let name = args.where_.name.as_ref();
        let (outcome, dir_wcc) = self.make(ctx, &args.where_.dir, |dir, id| {
            ops::mkdir(&self.store, dir, name, id, &set)
        });
        made!(outcome, dir_wcc, MKDIR3res, MKDIR3resok, MKDIR3resfail)
    }

    fn symlink(&self, ctx: &CallContext, a: &[u8]) -> Reply {
        let args = args!(SYMLINK3args, a);
        let name = args.where_.name.as_ref();
        let target = args.symlink.symlink_data.as_ref();
        let (outcome, dir_wcc) = self.make(ctx, &args.where_.dir, |dir, id| {
            ops::symlink(&self.store, dir, name, id, target)
        });
        made!(
            outcome,
            dir_wcc,
            SYMLINK3res,
            SYMLINK3resok,
            SYMLINK3resfail
        )
    }

    fn mknod(&self, ctx: &CallContext, a: &[u8]) -> Reply {
        let args = args!(MKNOD3args, a);
        let (spec, set) = match &args.what {
            mknoddata3::NF3FIFO(s) => (NodeSpec::Fifo, set_attr(s)),
            mknoddata3::NF3SOCK(s) => (NodeSpec::Socket, set_attr(s)),
            mknoddata3::NF3CHR(d) => (
                NodeSpec::Char(d.spec.specdata1, d.spec.specdata2),
                set_attr(&d.dev_attributes),
            ),
            mknoddata3::NF3BLK(d) => (
                NodeSpec::Block(d.spec.specdata1, d.spec.specdata2),
                set_attr(&d.dev_attributes),
            ),
            mknoddata3::default => {
                return ok(MKNOD3res::Err((
                    nfsstat3::NFS3ERR_BADTYPE,
                    MKNOD3resfail {
                        dir_wcc: wcc(None, None),
                    },
                )));
            }
        };
        let name = args.where_.name.as_ref();
        let (outcome, dir_wcc) = self.make(ctx, &args.where_.dir, |dir, id| {
            ops::mknod(&self.store, dir, name, id, spec, &set)
        });
        made!(outcome, dir_wcc, MKNOD3res, MKNOD3resok, MKNOD3resfail)
    }

    fn remove(&self, ctx: &CallContext, a: &[u8], dir_only: bool) -> Reply {
        let args = args!(REMOVE3args, a);
        let fail = |st, b: Option<&Attr>, af: Option<&Attr>| {
            REMOVE3res::Err((
                st,
                REMOVE3resfail {
                    dir_wcc: wcc(b, af),
                },
            ))
        };
        let (dir, before) = tri!(self.resolve_attr(&args.object.dir, DIR_FLAGS), |st| fail(
            st, None, None
        ));
        let before = Some(before);
        let id = self.identity(ctx, &dir);
        let r = ops::remove(&self.store, &dir, args.object.name.as_ref(), &id, dir_only);
        let after = ops::getattr(&dir).ok();
        tri!(r, |st| fail(st, before.as_ref(), after.as_ref()));
        // REMOVE3 and RMDIR3 results have the same encoding.
        ok(REMOVE3res::Ok(REMOVE3resok {
            dir_wcc: wcc(before.as_ref(), after.as_ref()),
        }))
    }

    fn rename(&self, ctx: &CallContext, a: &[u8]) -> Reply {
        let args = args!(RENAME3args, a);
        let fail =
            |st, fb: Option<&Attr>, fa: Option<&Attr>, tb: Option<&Attr>, ta: Option<&Attr>| {
                RENAME3res::Err((
                    st,
                    RENAME3resfail {
                        fromdir_wcc: wcc(fb, fa),
                        todir_wcc: wcc(tb, ta),
                    },
                ))
            };
        let from = tri!(self.resolve(&args.from.dir, DIR_FLAGS), |st| fail(
            st, None, None, None, None
        ));
        let to = tri!(self.resolve(&args.to.dir, DIR_FLAGS), |st| fail(
            st, None, None, None, None
        ));
        let (fb, tb) = (ops::getattr(&from).ok(), ops::getattr(&to).ok());
        let id = self.identity(ctx, &from);
        let r = ops::rename(
            &self.store,
            &from,
            args.from.name.as_ref(),
            &to,
            args.to.name.as_ref(),
            &id,
        );
        let (fa, ta) = (ops::getattr(&from).ok(), ops::getattr(&to).ok());
        tri!(r, |st| fail(
            st,
            fb.as_ref(),
            fa.as_ref(),
            tb.as_ref(),
            ta.as_ref()
        ));
        ok(RENAME3res::Ok(RENAME3resok {
            fromdir_wcc: wcc(fb.as_ref(), fa.as_ref()),
            todir_wcc: wcc(tb.as_ref(), ta.as_ref()),
        }))
    }

    fn link(&self, ctx: &CallContext, a: &[u8]) -> Reply {
        let args = args!(LINK3args, a);
        let fail = |st, f: Option<&Attr>, b: Option<&Attr>, af: Option<&Attr>| {
            LINK3res::Err((
                st,
                LINK3resfail {
                    file_attributes: post_op(f),
                    linkdir_wcc: wcc(b, af),
                },
            ))
        };
        let file = tri!(self.resolve(&args.file, libc::O_PATH), |st| fail(
            st, None, None, None
        ));
        let dir = tri!(self.resolve(&args.link.dir, DIR_FLAGS), |st| fail(
            st, None, None, None
        ));
        let before = ops::getattr(&dir).ok();
        let id = self.identity(ctx, &dir);
        let r = ops::link(&file, &dir, args.link.name.as_ref(), &id);
        let (fattr_now, after) = (ops::getattr(&file).ok(), ops::getattr(&dir).ok());
        tri!(r, |st| fail(
            st,
            fattr_now.as_ref(),
            before.as_ref(),
            after.as_ref()
        ));
        ok(LINK3res::Ok(LINK3resok {
            file_attributes: post_op(fattr_now.as_ref()),
            linkdir_wcc: wcc(before.as_ref(), after.as_ref()),
        }))
    }

    fn cookieverf(dir: &Object) -> cookieverf3 {
        cookieverf3(crate::cookie_verifier(&dir.volume))
    }

    fn check_cookie(dir: &Object, cookie: u64, verf: &cookieverf3) -> bool {
        crate::cookie_valid(&dir.volume, cookie, verf.0)
    }

    fn readdir(&self, ctx: &CallContext, a: &[u8]) -> Reply {
        let args = args!(READDIR3args, a);
        let fail = |st, attr: Option<&Attr>| {
            READDIR3res::Err((
                st,
                READDIR3resfail {
                    dir_attributes: post_op(attr),
                },
            ))
        };
        let dir = tri!(self.resolve(&args.dir, libc::O_PATH), |st| fail(st, None));
        let dir_attr = ops::getattr(&dir).ok();
        if !Self::check_cookie(&dir, args.cookie, &args.cookieverf) {
            return ok(fail(nfsstat3::NFS3ERR_BAD_COOKIE, dir_attr.as_ref()));
        }
        let id = self.identity(ctx, &dir);
        // status + post_op_attr + verifier + list end + eof
        let mut used = 4 + 88 + 8 + 4 + 4;
        let limit = (args.count as usize).min(MAX_IO as usize);
        let mut entries = Vec::new();
        let eof = tri!(
            ops::readdir(&dir, &id, args.cookie, |_, e| {
                let size = 4 + 8 + 4 + e.name.len().div_ceil(4) * 4 + 8;
                if used + size > limit {
                    return Ok(false);
                }
                used += size;
                entries.push(entry3 {
                    fileid: e.fileid,
                    name: filename3(Opaque::owned(e.name)),
                    cookie: e.cookie,
                });
                Ok(true)
            }),
            |st| fail(st, dir_attr.as_ref())
        );
        if entries.is_empty() && !eof {
            return ok(fail(nfsstat3::NFS3ERR_TOOSMALL, dir_attr.as_ref()));
        }
        ok(READDIR3res::Ok(READDIR3resok {
            dir_attributes: post_op(dir_attr.as_ref()),
            cookieverf: Self::cookieverf(&dir),
            reply: dirlist3 {
                entries: List(entries),
                eof,
            },
        }))
    }

    fn readdirplus(&self, ctx: &CallContext, a: &[u8]) -> Reply {
        let args = args!(READDIRPLUS3args, a);
        let fail = |st, attr: Option<&Attr>| {
            READDIRPLUS3res::Err((
                st,
                READDIRPLUS3resfail {
                    dir_attributes: post_op(attr),
                },
            ))
        };
        let dir = tri!(self.resolve(&args.dir, libc::O_PATH), |st| fail(st, None));
        let dir_attr = ops::getattr(&dir).ok();
        if !Self::check_cookie(&dir, args.cookie, &args.cookieverf) {
            return ok(fail(nfsstat3::NFS3ERR_BAD_COOKIE, dir_attr.as_ref()));
        }
        let id = self.identity(ctx, &dir);
        let mut used = 4 + 88 + 8 + 4 + 4;
        let mut dir_used = 0usize;
        let limit = (args.maxcount as usize).min(MAX_IO as usize);
        let dir_limit = args.dircount as usize;
        let mut entries = Vec::new();
        let store = &self.store;
        let eof = tri!(
            ops::readdir(&dir, &id, args.cookie, |listing, e| {
                let name_size = e.name.len().div_ceil(4) * 4;
                let dsize = 8 + 4 + name_size + 8;
                let details = ops::entry_details(store, &dir, listing.as_fd(), &e.name);
                let extra = match &details {
                    Some((h, _)) => 4 + 84 + 4 + 4 + h.len().div_ceil(4) * 4,
                    None => 4 + 4,
                };
                let size = 4 + dsize + extra;
                if used + size > limit || (dir_limit > 0 && dir_used + dsize > dir_limit) {
                    return Ok(false);
                }
                used += size;
                dir_used += dsize;
                let (attrs, handle) = match details {
                    Some((h, attr)) => (
                        post_op(Some(&attr)),
                        Nfs3Option::Some(nfs_fh3 {
                            data: Opaque::owned(h),
                        }),
                    ),
                    None => (Nfs3Option::None, Nfs3Option::None),
                };
                entries.push(entryplus3 {
                    fileid: e.fileid,
                    name: filename3(Opaque::owned(e.name)),
                    cookie: e.cookie,
                    name_attributes: attrs,
                    name_handle: handle,
                });
                Ok(true)
            }),
            |st| fail(st, dir_attr.as_ref())
        );
        if entries.is_empty() && !eof {
            return ok(fail(nfsstat3::NFS3ERR_TOOSMALL, dir_attr.as_ref()));
        }
        ok(READDIRPLUS3res::Ok(READDIRPLUS3resok {
            dir_attributes: post_op(dir_attr.as_ref()),
            cookieverf: Self::cookieverf(&dir),
            reply: dirlistplus3 {
                entries: List(entries),
                eof,
            },
        }))
    }

    fn fsstat(&self, a: &[u8]) -> Reply {
        let args = args!(FSSTAT3args, a);
        let fail = |st| FSSTAT3res::Err((st, FSSTAT3resfail::default()));
        let obj = tri!(self.resolve(&args.fsroot, libc::O_PATH), fail);
        let s = tri!(ops::fsstat(&obj), fail);
        let attr = ops::getattr(&obj).ok();
        let frsize = s.f_frsize;
        ok(FSSTAT3res::Ok(FSSTAT3resok {
            obj_attributes: post_op(attr.as_ref()),
            tbytes: s.f_blocks.saturating_mul(frsize),
            fbytes: s.f_bfree.saturating_mul(frsize),
            abytes: s.f_bavail.saturating_mul(frsize),
            tfiles: s.f_files,
            ffiles: s.f_ffree,
            afiles: s.f_favail,
            invarsec: 0,
        }))
    }

    fn fsinfo(&self, a: &[u8]) -> Reply {
        let args = args!(FSINFO3args, a);
        let fail = |st| FSINFO3res::Err((st, FSINFO3resfail::default()));
        let obj = tri!(self.resolve(&args.fsroot, libc::O_PATH), fail);
        let attr = ops::getattr(&obj).ok();
        ok(FSINFO3res::Ok(FSINFO3resok {
            obj_attributes: post_op(attr.as_ref()),
            rtmax: MAX_IO,
            rtpref: MAX_IO,
            rtmult: 4096,
            wtmax: MAX_IO,
            wtpref: MAX_IO,
            wtmult: 4096,
            dtpref: 64 * 1024,
            maxfilesize: i64::MAX as u64,
            time_delta: nfstime3 {
                seconds: 0,
                nseconds: 1,
            },
            properties: FSF3_LINK | FSF3_SYMLINK | FSF3_HOMOGENEOUS | FSF3_CANSETTIME,
        }))
    }

    fn pathconf(&self, a: &[u8]) -> Reply {
        let args = args!(PATHCONF3args, a);
        let fail = |st| PATHCONF3res::Err((st, PATHCONF3resfail::default()));
        let obj = tri!(self.resolve(&args.object, libc::O_PATH), fail);
        let attr = ops::getattr(&obj).ok();
        ok(PATHCONF3res::Ok(PATHCONF3resok {
            obj_attributes: post_op(attr.as_ref()),
            linkmax: 65000,
            name_max: ops::NAME_MAX as u32,
            no_trunc: true,
            chown_restricted: true,
            case_insensitive: false,
            case_preserving: true,
        }))
    }

    fn commit(&self, a: &[u8]) -> Reply {
        let args = args!(COMMIT3args, a);
        let fail = |st, b: Option<&Attr>, af: Option<&Attr>| {
            COMMIT3res::Err((
                st,
                COMMIT3resfail {
                    file_wcc: wcc(b, af),
                },
            ))
        };
        let obj = tri!(self.resolve(&args.file, libc::O_PATH), |st| fail(
            st, None, None
        ));
        let before = ops::getattr(&obj).ok();
        let after = tri!(ops::commit(&obj), |st| fail(
            st,
            before.as_ref(),
            before.as_ref()
        ));
        ok(COMMIT3res::Ok(COMMIT3resok {
            file_wcc: wcc(before.as_ref(), Some(&after)),
            verf: writeverf3(self.write_verifier),
        }))
    }
}
