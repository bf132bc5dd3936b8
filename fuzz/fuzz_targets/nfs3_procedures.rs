//! Fuzzes the NFSv3 procedures against a real export store: each input is a short sequence of
//! calls whose file handles are real ones (the volume root, the fixture's objects, and
//! handles returned by earlier calls of the same input) or deliberately damaged ones, and
//! whose other arguments are fuzzed, structured per procedure or as raw bytes. So the calls
//! get past handle authentication into the handlers. Any input must produce replies, never
//! a panic.
#![no_main]

use std::sync::{Arc, OnceLock};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use nfs_fuzz::{Cred, Fh, Fixture, Name, Xdr, opaque_at, word};
use nfs_server::nfs3::Nfs3Service;
use oncrpc::Reply;

struct Target {
    fixture: Fixture,
    service: Nfs3Service,
}

fn target() -> &'static Target {
    static TARGET: OnceLock<Target> = OnceLock::new();
    TARGET.get_or_init(|| {
        let fixture = Fixture::new();
        let service = Nfs3Service::new(
            Arc::clone(&fixture.store),
            nfs_server::executor::Executor::new(1),
            [1; 8],
            None,
        );
        Target { fixture, service }
    })
}

#[derive(Arbitrary, Debug)]
struct Call {
    cred: Cred,
    proc_: Proc,
}

#[derive(Arbitrary, Debug)]
struct Time {
    how: u8,
    sec: u32,
    nsec: u32,
}

#[derive(Arbitrary, Debug)]
struct Sattr {
    mode: Option<u32>,
    uid: Option<u32>,
    gid: Option<u32>,
    size: Option<u64>,
    atime: Time,
    mtime: Time,
}

#[derive(Arbitrary, Debug)]
enum Proc {
    Null,
    Getattr(Fh),
    Setattr(Fh, Sattr, Option<(u32, u32)>),
    Lookup(Fh, Name),
    Access(Fh, u32),
    Readlink(Fh),
    Read(Fh, u64, u32),
    Write(Fh, u64, u32, u32, Vec<u8>),
    Create(Fh, Name, u8, Sattr, [u8; 8]),
    Mkdir(Fh, Name, Sattr),
    Symlink(Fh, Name, Sattr, Vec<u8>),
    Mknod(Fh, Name, u8, Sattr, u32, u32),
    Remove(Fh, Name),
    Rmdir(Fh, Name),
    Rename(Fh, Name, Fh, Name),
    Link(Fh, Fh, Name),
    /// cookie, whether to send the verifier of the last listing, count.
    Readdir(Fh, u64, bool, u32),
    Readdirplus(Fh, u64, bool, u32, u32),
    Fsstat(Fh),
    Fsinfo(Fh),
    Pathconf(Fh),
    Commit(Fh, u64, u32),
    /// Any procedure number with a real handle first and raw bytes after it.
    AfterHandle(u8, Fh, Vec<u8>),
    /// Any procedure number with raw arguments.
    Raw(u8, Vec<u8>),
}

/// What a run has learned from replies: handles and a directory's cookie verifier.
struct Run {
    handles: Vec<Vec<u8>>,
    verifier: [u8; 8],
}

fn sattr(x: &mut Xdr, s: &Sattr) {
    for v in [s.mode, s.uid, s.gid] {
        x.bool(v.is_some());
        if let Some(v) = v {
            x.u32(v);
        }
    }
    x.bool(s.size.is_some());
    if let Some(v) = s.size {
        x.u64(v);
    }
    for t in [&s.atime, &s.mtime] {
        let how = u32::from(t.how % 4);
        x.u32(how);
        if how == 2 {
            x.u32(t.sec).u32(t.nsec);
        }
    }
}

impl Run {
    fn fh(&self, x: &mut Xdr, fh: Fh) {
        x.opaque(&fh.pick(&self.handles));
    }

    fn dirop(&self, x: &mut Xdr, fh: Fh, name: &Name) {
        self.fh(x, fh);
        x.opaque(&name.bytes());
    }

    /// The procedure number and its encoded arguments.
    fn encode(&self, p: &Proc) -> (u32, Vec<u8>) {
        let mut x = Xdr::default();
        let n = match p {
            Proc::Null => 0,
            Proc::Getattr(f) => {
                self.fh(&mut x, *f);
                1
            }
            Proc::Setattr(f, s, guard) => {
                self.fh(&mut x, *f);
                sattr(&mut x, s);
                x.bool(guard.is_some());
                if let Some((sec, nsec)) = guard {
                    x.u32(*sec).u32(*nsec);
                }
                2
            }
            Proc::Lookup(f, name) => {
                self.dirop(&mut x, *f, name);
                3
            }
            Proc::Access(f, a) => {
                self.fh(&mut x, *f);
                x.u32(*a);
                4
            }
            Proc::Readlink(f) => {
                self.fh(&mut x, *f);
                5
            }
            Proc::Read(f, off, count) => {
                self.fh(&mut x, *f);
                x.u64(*off).u32(*count);
                6
            }
            Proc::Write(f, off, stable, skew, data) => {
                self.fh(&mut x, *f);
                // The count mostly matches the data.
                let count = if skew % 8 == 0 {
                    *skew
                } else {
                    data.len() as u32
                };
                x.u64(*off).u32(count).u32(stable % 4).opaque(data);
                7
            }
            Proc::Create(f, name, how, s, verf) => {
                self.dirop(&mut x, *f, name);
                let how = u32::from(how % 3);
                x.u32(how);
                if how == 2 {
                    x.fixed(verf);
                } else {
                    sattr(&mut x, s);
                }
                8
            }
            Proc::Mkdir(f, name, s) => {
                self.dirop(&mut x, *f, name);
                sattr(&mut x, s);
                9
            }
            Proc::Symlink(f, name, s, path) => {
                self.dirop(&mut x, *f, name);
                sattr(&mut x, s);
                x.opaque(path);
                10
            }
            Proc::Mknod(f, name, kind, s, major, minor) => {
                self.dirop(&mut x, *f, name);
                let kind = u32::from(kind % 8);
                x.u32(kind);
                match kind {
                    3 | 4 => {
                        sattr(&mut x, s);
                        x.u32(*major).u32(*minor);
                    }
                    6 | 7 => sattr(&mut x, s),
                    _ => {}
                }
                11
            }
            Proc::Remove(f, name) => {
                self.dirop(&mut x, *f, name);
                12
            }
            Proc::Rmdir(f, name) => {
                self.dirop(&mut x, *f, name);
                13
            }
            Proc::Rename(f, name, t, to) => {
                self.dirop(&mut x, *f, name);
                self.dirop(&mut x, *t, to);
                14
            }
            Proc::Link(f, d, name) => {
                self.fh(&mut x, *f);
                self.dirop(&mut x, *d, name);
                15
            }
            Proc::Readdir(f, cookie, verf, count) => {
                self.fh(&mut x, *f);
                x.u64(*cookie)
                    .fixed(&if *verf { self.verifier } else { [0; 8] })
                    .u32(*count);
                16
            }
            Proc::Readdirplus(f, cookie, verf, dircount, maxcount) => {
                self.fh(&mut x, *f);
                x.u64(*cookie)
                    .fixed(&if *verf { self.verifier } else { [0; 8] })
                    .u32(*dircount)
                    .u32(*maxcount);
                17
            }
            Proc::Fsstat(f) => {
                self.fh(&mut x, *f);
                18
            }
            Proc::Fsinfo(f) => {
                self.fh(&mut x, *f);
                19
            }
            Proc::Pathconf(f) => {
                self.fh(&mut x, *f);
                20
            }
            Proc::Commit(f, off, count) => {
                self.fh(&mut x, *f);
                x.u64(*off).u32(*count);
                21
            }
            Proc::AfterHandle(n, f, rest) => {
                self.fh(&mut x, *f);
                x.fixed(rest);
                u32::from(*n % 23)
            }
            Proc::Raw(n, rest) => {
                x.fixed(rest);
                u32::from(*n % 24)
            }
        };
        (n, x.0)
    }

    /// Keeps what a successful reply hands out: a new object's handle, a listing's verifier.
    fn learn(&mut self, proc_: u32, body: &[u8]) {
        if word(body, 0) != Some(0) || self.handles.len() >= 32 {
            return;
        }
        let fh = match proc_ {
            3 => opaque_at(body, 4, 64),
            // post_op_fh3: present, then the handle.
            8..=11 if word(body, 4) == Some(1) => opaque_at(body, 8, 64),
            16 | 17 => {
                // post_op_attr (present: 84 bytes of fattr3), then the cookie verifier.
                let at = if word(body, 4) == Some(1) { 8 + 84 } else { 8 };
                if let Some(v) = body.get(at..at + 8) {
                    self.verifier.copy_from_slice(v);
                }
                None
            }
            _ => None,
        };
        if let Some((h, _)) = fh {
            self.handles.push(h.to_vec());
        }
    }
}

fuzz_target!(|calls: Vec<Call>| {
    let t = target();
    let mut run = Run {
        handles: t.fixture.begin(),
        verifier: [0; 8],
    };
    for call in calls.iter().take(12) {
        let (proc_, args) = run.encode(&call.proc_);
        let ctx = call.cred.context(3, proc_);
        if let Reply::Success(body) = t.service.call_blocking(&ctx, &args) {
            run.learn(proc_, &body);
        }
    }
});
