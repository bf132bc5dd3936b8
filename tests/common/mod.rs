//! Shared helpers of the in-process integration tests: start a whole server on loopback with
//! free ports and a temporary export root, talk to it with the independent `nfs3_client`
//! crate (MOUNT, NFSv3, portmapper), and speak raw ONC RPC over TCP for the wire-level tests.
//!
//! Every test binary uses only part of this module.
#![allow(dead_code)]

pub mod nfs4;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use export_store::VolumeOptions;
use nfs_server_provisioner::{LockingConfig, Running, ServeConfig};
use nfs3_client::tokio::TokioIo;
use nfs3_client::{MountClient, Nfs3Client, PortmapperClient};
use nfs3_types::mount::dirpath;
pub use nfs3_types::nfs3::*;
use nfs3_types::rpc::{auth_unix, opaque_auth};
use nfs3_types::xdr_codec::Opaque;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub type Io = TokioIo<TcpStream>;
pub type Client = Nfs3Client<Io>;
pub type Mounter = MountClient<Io>;

/// How often the test servers re-read the registry.
pub const RELOAD: Duration = Duration::from_millis(100);
/// The default volume every [`Server::start`] exports.
pub const VOL: &str = "vol";
/// An unprivileged AUTH_UNIX identity.
pub const USER: (u32, u32) = (1000, 1000);
pub const ROOT: (u32, u32) = (0, 0);

/// Overrides where export roots are made (a test that runs a child process which may die
/// points it into a directory the parent removes).
pub const TMPDIR_ENV: &str = "NFS_IT_TMPDIR";

/// A temporary export root on a real (disk) file system: under the target directory, never
/// `/tmp` (which may be tmpfs on CI). Removed when dropped.
pub fn export_root() -> tempfile::TempDir {
    let parent = std::env::var_os(TMPDIR_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
    tempfile::Builder::new()
        .prefix("nfs-it-")
        .tempdir_in(parent)
        .expect("create a temporary export root")
}

/// One in-process server and the export root it serves.
pub struct Server {
    pub running: Running,
    /// Kept alive for the test's duration (None when the root belongs to another server).
    _dir: Option<tempfile::TempDir>,
    root: PathBuf,
}

fn config(root: &Path) -> ServeConfig {
    ServeConfig {
        export_root: root.to_owned(),
        bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
        nfs_port: 0,
        mount_port: 0,
        portmap_port: Some(0),
        reload_interval: RELOAD,
        recount_interval: None,
        http_port: Some(0),
        metrics: true,
        v4: nfs_server::V4Config::default(),
        locking: Default::default(),
        limits: Default::default(),
        nfs_threads: nfs_server::executor::DEFAULT_THREADS,
        metric_labels: Vec::new(),
    }
}

impl Server {
    /// A server exporting one default volume, [`VOL`].
    pub async fn start() -> Self {
        Self::with_volumes(&[(VOL, VolumeOptions::default())]).await
    }

    /// A server on a fresh export root with the given volumes.
    pub async fn with_volumes(volumes: &[(&str, VolumeOptions)]) -> Self {
        Self::configured(volumes, |_| {}).await
    }

    /// A server on a fresh export root with the given volumes and the test configuration
    /// changed by `change`.
    pub async fn configured(
        volumes: &[(&str, VolumeOptions)],
        change: impl FnOnce(&mut ServeConfig),
    ) -> Self {
        let dir = export_root();
        let root = dir.path().to_owned();
        let mut cfg = config(&root);
        change(&mut cfg);
        let running = nfs_server_provisioner::start(cfg)
            .await
            .expect("start the server");
        for (name, options) in volumes {
            running
                .store
                .add_volume(name, options.clone())
                .expect("add a volume");
        }
        Self {
            running,
            _dir: Some(dir),
            root,
        }
    }

    /// A server on an existing export root, whose NFSv4 grace period (when clients were
    /// recorded there) lasts `grace`; [`VOL`] is added if the root does not have it.
    pub async fn on_root(root: &Path, grace: Duration) -> Self {
        let mut cfg = config(root);
        cfg.v4.grace = grace;
        let running = nfs_server_provisioner::start(cfg)
            .await
            .expect("start a server on an existing export root");
        if running.store.volume_by_name(VOL).is_none() {
            running
                .store
                .add_volume(VOL, VolumeOptions::default())
                .expect("add a volume");
        }
        Self {
            running,
            _dir: None,
            root: root.to_owned(),
        }
    }

    /// A server exporting [`VOL`] with the given NFSv3 locking configuration.
    pub async fn with_locking(locking: LockingConfig) -> Self {
        Self::configured(&[(VOL, VolumeOptions::default())], |c| c.locking = locking).await
    }

    /// [`Server::restart_on_same_root`] with the given locking configuration.
    pub async fn restart_with_locking(&self, locking: LockingConfig) -> Self {
        let running = nfs_server_provisioner::start(ServeConfig {
            locking,
            ..config(&self.root)
        })
        .await
        .expect("start a second server on the same export root");
        Self {
            running,
            _dir: None,
            root: self.root.clone(),
        }
    }

    /// A second server instance on this server's export root (a restart, or another
    /// process sharing the root). The first server keeps running.
    pub async fn restart_on_same_root(&self) -> Self {
        let running = nfs_server_provisioner::start(config(&self.root))
            .await
            .expect("start a second server on the same export root");
        Self {
            running,
            _dir: None,
            root: self.root.clone(),
        }
    }

    pub fn export_root(&self) -> &Path {
        &self.root
    }

    /// The on-disk directory of a volume.
    pub fn vol_path(&self, vol: &str) -> PathBuf {
        self.root.join(vol)
    }

    pub fn add_volume(&self, name: &str, options: VolumeOptions) {
        self.running
            .store
            .add_volume(name, options)
            .expect("add a volume");
    }

    /// An NFSv3 client calling as root (AUTH_UNIX uid 0).
    pub async fn client(&self) -> Client {
        self.client_as(ROOT).await
    }

    /// An NFSv3 client calling with AUTH_UNIX `uid`/`gid`.
    pub async fn client_as(&self, (uid, gid): (u32, u32)) -> Client {
        Nfs3Client::new_with_auth(connect(self.running.nfs).await, cred(uid, gid), verf())
    }

    /// An NFSv3 client calling with AUTH_UNIX `uid`/`gid` and supplementary `groups`.
    pub async fn client_with_groups(&self, uid: u32, gid: u32, groups: Vec<u32>) -> Client {
        let auth = opaque_auth::auth_unix(&auth_unix {
            stamp: 2,
            machinename: Opaque::borrowed(b"it-client"),
            uid,
            gid,
            gids: groups,
        });
        Nfs3Client::new_with_auth(connect(self.running.nfs).await, auth, verf())
    }

    /// An NFSv3 client calling with AUTH_NONE.
    pub async fn client_auth_none(&self) -> Client {
        Nfs3Client::new(connect(self.running.nfs).await)
    }

    pub async fn mounter(&self) -> Mounter {
        MountClient::new_with_auth(connect(self.running.mount).await, cred(0, 0), verf())
    }

    pub async fn portmapper(&self) -> PortmapperClient<Io> {
        PortmapperClient::new(connect(self.running.portmap.expect("portmapper enabled")).await)
    }

    /// The root handle of a volume, obtained over the wire with MOUNT MNT.
    pub async fn root_fh(&self, vol: &str) -> nfs_fh3 {
        let mut m = self.mounter().await;
        let ok = m
            .mnt(dirpath(Opaque::owned(
                format!("/export/{vol}").into_bytes(),
            )))
            .await
            .unwrap_or_else(|e| panic!("MNT /export/{vol}: {e}"));
        nfs_fh3 {
            data: Opaque::owned(ok.fhandle.0.to_vec()),
        }
    }
}

/// Resident memory of this process (server and test client share it).
pub fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status");
    kb * 1024
}

/// A TCP connection to `to` from the source address `source` (any port): all of 127/8 is
/// loopback on Linux, so 127.0.0.2 is a real second client address.
pub async fn connect_from(source: &str, to: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    socket.connect(to).await.expect("connect")
}

pub async fn connect(addr: SocketAddr) -> Io {
    TokioIo::new(TcpStream::connect(addr).await.expect("connect"))
}

/// AUTH_UNIX credential.
pub fn cred(uid: u32, gid: u32) -> opaque_auth<'static> {
    opaque_auth::auth_unix(&auth_unix {
        stamp: 1,
        machinename: Opaque::borrowed(b"it-client"),
        uid,
        gid,
        gids: vec![gid],
    })
}

pub fn verf() -> opaque_auth<'static> {
    opaque_auth::default()
}

/// The status of any NFSv3 result.
pub fn status<T, E>(r: &Nfs3Result<T, E>) -> nfsstat3 {
    match r {
        Nfs3Result::Ok(_) => nfsstat3::NFS3_OK,
        Nfs3Result::Err((st, _)) => *st,
    }
}

pub fn fh(bytes: &[u8]) -> nfs_fh3 {
    nfs_fh3 {
        data: Opaque::owned(bytes.to_vec()),
    }
}

pub fn name(s: &str) -> filename3<'static> {
    filename3::from(s.as_bytes().to_vec())
}

pub fn dirop(dir: &nfs_fh3, n: &str) -> diropargs3<'static> {
    diropargs3 {
        dir: dir.clone(),
        name: name(n),
    }
}

pub fn with_mode(mode: u32) -> sattr3 {
    sattr3 {
        mode: Nfs3Option::Some(mode),
        ..sattr3::default()
    }
}

/// Attributes from a post_op_attr that the server must have sent.
pub fn attrs(a: post_op_attr) -> fattr3 {
    match a {
        Nfs3Option::Some(a) => a,
        Nfs3Option::None => panic!("the server sent no attributes"),
    }
}

pub fn handle_of(h: post_op_fh3) -> nfs_fh3 {
    match h {
        Nfs3Option::Some(h) => h,
        Nfs3Option::None => panic!("the server sent no handle"),
    }
}

pub async fn getattr(c: &mut Client, f: &nfs_fh3) -> Result<fattr3, nfsstat3> {
    match c
        .getattr(&GETATTR3args { object: f.clone() })
        .await
        .expect("GETATTR rpc")
    {
        Nfs3Result::Ok(ok) => Ok(ok.obj_attributes),
        Nfs3Result::Err((st, _)) => Err(st),
    }
}

pub async fn lookup(c: &mut Client, dir: &nfs_fh3, n: &str) -> Result<(nfs_fh3, fattr3), nfsstat3> {
    match c
        .lookup(&LOOKUP3args {
            what: dirop(dir, n),
        })
        .await
        .expect("LOOKUP rpc")
    {
        Nfs3Result::Ok(ok) => Ok((ok.object, attrs(ok.obj_attributes))),
        Nfs3Result::Err((st, _)) => Err(st),
    }
}

/// CREATE GUARDED with `mode`.
pub async fn try_create(
    c: &mut Client,
    dir: &nfs_fh3,
    n: &str,
    mode: u32,
) -> Result<(nfs_fh3, fattr3), nfsstat3> {
    match c
        .create(&CREATE3args {
            where_: dirop(dir, n),
            how: createhow3::GUARDED(with_mode(mode)),
        })
        .await
        .expect("CREATE rpc")
    {
        Nfs3Result::Ok(ok) => Ok((handle_of(ok.obj), attrs(ok.obj_attributes))),
        Nfs3Result::Err((st, _)) => Err(st),
    }
}

pub async fn create(c: &mut Client, dir: &nfs_fh3, n: &str, mode: u32) -> (nfs_fh3, fattr3) {
    try_create(c, dir, n, mode)
        .await
        .unwrap_or_else(|st| panic!("CREATE {n}: {st}"))
}

pub async fn try_mkdir(
    c: &mut Client,
    dir: &nfs_fh3,
    n: &str,
    mode: u32,
) -> Result<(nfs_fh3, fattr3), nfsstat3> {
    match c
        .mkdir(&MKDIR3args {
            where_: dirop(dir, n),
            attributes: with_mode(mode),
        })
        .await
        .expect("MKDIR rpc")
    {
        Nfs3Result::Ok(ok) => Ok((handle_of(ok.obj), attrs(ok.obj_attributes))),
        Nfs3Result::Err((st, _)) => Err(st),
    }
}

/// SYMLINK `n` -> `target` in `dir`; the reply's status.
pub async fn try_symlink(c: &mut Client, dir: &nfs_fh3, n: &str, target: &str) -> nfsstat3 {
    let r = c
        .symlink(&SYMLINK3args {
            where_: dirop(dir, n),
            symlink: symlinkdata3 {
                symlink_attributes: sattr3::default(),
                symlink_data: nfspath3(Opaque::owned(target.as_bytes().to_vec())),
            },
        })
        .await
        .expect("SYMLINK rpc");
    status(&r)
}

/// LINK `file` as `n` in `dir`; the reply's status.
pub async fn try_link(c: &mut Client, file: &nfs_fh3, dir: &nfs_fh3, n: &str) -> nfsstat3 {
    let r = c
        .link(&LINK3args {
            file: file.clone(),
            link: dirop(dir, n),
        })
        .await
        .expect("LINK rpc");
    status(&r)
}

/// RENAME `from` to `to`, both in `dir`; the reply's status.
pub async fn try_rename(c: &mut Client, dir: &nfs_fh3, from: &str, to: &str) -> nfsstat3 {
    let r = c
        .rename(&RENAME3args {
            from: dirop(dir, from),
            to: dirop(dir, to),
        })
        .await
        .expect("RENAME rpc");
    status(&r)
}

pub async fn mkdir(c: &mut Client, dir: &nfs_fh3, n: &str, mode: u32) -> (nfs_fh3, fattr3) {
    try_mkdir(c, dir, n, mode)
        .await
        .unwrap_or_else(|st| panic!("MKDIR {n}: {st}"))
}

pub async fn try_write(
    c: &mut Client,
    f: &nfs_fh3,
    offset: u64,
    data: &[u8],
    stable: stable_how,
) -> Result<WRITE3resok, nfsstat3> {
    match c
        .write(&WRITE3args {
            file: f.clone(),
            offset,
            count: data.len() as u32,
            stable,
            data: Opaque::borrowed(data),
        })
        .await
        .expect("WRITE rpc")
    {
        Nfs3Result::Ok(ok) => Ok(ok),
        Nfs3Result::Err((st, _)) => Err(st),
    }
}

pub async fn write(c: &mut Client, f: &nfs_fh3, offset: u64, data: &[u8]) -> WRITE3resok {
    try_write(c, f, offset, data, stable_how::FILE_SYNC)
        .await
        .unwrap_or_else(|st| panic!("WRITE: {st}"))
}

pub async fn try_read(
    c: &mut Client,
    f: &nfs_fh3,
    offset: u64,
    count: u32,
) -> Result<READ3resok<'static>, nfsstat3> {
    match c
        .read(&READ3args {
            file: f.clone(),
            offset,
            count,
        })
        .await
        .expect("READ rpc")
    {
        Nfs3Result::Ok(ok) => Ok(ok),
        Nfs3Result::Err((st, _)) => Err(st),
    }
}

/// Reads a whole (small) file: its bytes.
pub async fn read_all(c: &mut Client, f: &nfs_fh3) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let r = try_read(c, f, out.len() as u64, 1 << 20)
            .await
            .unwrap_or_else(|st| panic!("READ: {st}"));
        out.extend_from_slice(r.data.as_ref());
        if r.eof {
            return out;
        }
        assert!(r.count > 0, "READ returned no data without eof");
    }
}

/// A file created through NFS (by `c`) holding `data`.
pub async fn file_with(c: &mut Client, dir: &nfs_fh3, n: &str, mode: u32, data: &[u8]) -> nfs_fh3 {
    let (f, _) = create(c, dir, n, mode).await;
    if !data.is_empty() {
        write(c, &f, 0, data).await;
    }
    f
}

// ---------------------------------------------------------------------------------------
// Raw ONC RPC over TCP (record marking done by hand).

pub const NFS_PROGRAM: u32 = 100_003;
pub const MOUNT_PROGRAM: u32 = 100_005;
pub const PORTMAP_PROGRAM: u32 = 100_000;

/// Big-endian XDR words.
pub fn words(ws: &[u32]) -> Vec<u8> {
    ws.iter().flat_map(|w| w.to_be_bytes()).collect()
}

/// XDR variable-length opaque: length, bytes, zero padding.
pub fn xdr_opaque(data: &[u8]) -> Vec<u8> {
    let mut v = (data.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(data);
    v.resize(v.len() + (4 - data.len() % 4) % 4, 0);
    v
}

/// An RPC call message body (no record mark) with an AUTH_UNIX credential for root.
pub fn call_body(xid: u32, rpcvers: u32, prog: u32, vers: u32, proc_: u32, args: &[u8]) -> Vec<u8> {
    let mut cred = words(&[1]); // stamp
    cred.extend(xdr_opaque(b"raw"));
    cred.extend(words(&[0, 0, 1, 0])); // uid, gid, one group: 0
    call_with_cred(xid, rpcvers, prog, vers, proc_, 1, &cred, args)
}

/// An RPC call message body with any credential flavor and body.
#[allow(clippy::too_many_arguments)]
pub fn call_with_cred(
    xid: u32,
    rpcvers: u32,
    prog: u32,
    vers: u32,
    proc_: u32,
    flavor: u32,
    cred: &[u8],
    args: &[u8],
) -> Vec<u8> {
    let mut v = words(&[xid, 0, rpcvers, prog, vers, proc_, flavor]);
    v.extend(xdr_opaque(cred));
    v.extend(words(&[0, 0])); // AUTH_NONE verifier
    v.extend_from_slice(args);
    v
}

/// One record: a single last fragment.
pub fn record(body: &[u8]) -> Vec<u8> {
    let mut v = (body.len() as u32 | 0x8000_0000).to_be_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

/// A standard RPC v2 call, record-marked.
pub fn call(xid: u32, prog: u32, vers: u32, proc_: u32, args: &[u8]) -> Vec<u8> {
    record(&call_body(xid, 2, prog, vers, proc_, args))
}

/// What a reply says.
#[derive(Debug, PartialEq, Eq)]
pub enum ReplyKind {
    Success(Vec<u8>),
    ProgUnavail,
    ProgMismatch { low: u32, high: u32 },
    ProcUnavail,
    GarbageArgs,
    SystemErr,
    RpcMismatch { low: u32, high: u32 },
    AuthError(u32),
}

#[derive(Debug)]
pub struct RawReply {
    pub xid: u32,
    pub kind: ReplyKind,
}

fn word(b: &[u8], i: usize) -> u32 {
    u32::from_be_bytes(b[i * 4..i * 4 + 4].try_into().expect("4 bytes"))
}

/// Parses a reply record.
pub fn parse_reply(rec: &[u8]) -> RawReply {
    assert!(rec.len() >= 12, "reply too short: {rec:?}");
    let xid = word(rec, 0);
    assert_eq!(word(rec, 1), 1, "message type must be REPLY");
    let kind = match word(rec, 2) {
        0 => {
            // accepted: verifier flavor, verifier body, accept_stat
            let vlen = word(rec, 4) as usize;
            let at = 20 + vlen.div_ceil(4) * 4;
            let rest = &rec[at..];
            match word(rest, 0) {
                0 => ReplyKind::Success(rest[4..].to_vec()),
                1 => ReplyKind::ProgUnavail,
                2 => ReplyKind::ProgMismatch {
                    low: word(rest, 1),
                    high: word(rest, 2),
                },
                3 => ReplyKind::ProcUnavail,
                4 => ReplyKind::GarbageArgs,
                5 => ReplyKind::SystemErr,
                other => panic!("unknown accept_stat {other}"),
            }
        }
        1 => match word(rec, 3) {
            0 => ReplyKind::RpcMismatch {
                low: word(rec, 4),
                high: word(rec, 5),
            },
            1 => ReplyKind::AuthError(word(rec, 4)),
            other => panic!("unknown reject_stat {other}"),
        },
        other => panic!("unknown reply_stat {other}"),
    };
    RawReply { xid, kind }
}

/// A raw RPC connection.
pub struct Raw {
    pub stream: TcpStream,
}

impl Raw {
    /// Speaks over a connection made by the caller (from a chosen source address or port).
    pub fn from_stream(stream: TcpStream) -> Self {
        stream.set_nodelay(true).expect("nodelay");
        Self { stream }
    }

    pub async fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        Self { stream }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("send");
    }

    /// Reads one whole record (joining fragments); `None` if the server closed the
    /// connection (EOF or reset) before a record started. Panics after 10 s.
    pub async fn recv_record(&mut self) -> Option<Vec<u8>> {
        tokio::time::timeout(Duration::from_secs(10), async {
            let mut out = Vec::new();
            loop {
                let mut h = [0u8; 4];
                match self.stream.read_exact(&mut h).await {
                    Ok(_) => {}
                    Err(_) if out.is_empty() => return None,
                    Err(e) => panic!("connection failed inside a record: {e}"),
                }
                let h = u32::from_be_bytes(h);
                let start = out.len();
                out.resize(start + (h & 0x7fff_ffff) as usize, 0);
                self.stream
                    .read_exact(&mut out[start..])
                    .await
                    .expect("record body");
                if h & 0x8000_0000 != 0 {
                    return Some(out);
                }
            }
        })
        .await
        .expect("no reply within 10 s")
    }

    pub async fn recv(&mut self) -> RawReply {
        parse_reply(
            &self
                .recv_record()
                .await
                .expect("the server closed the connection"),
        )
    }

    /// Sends one call and returns its reply, checking the xid.
    pub async fn call(
        &mut self,
        xid: u32,
        prog: u32,
        vers: u32,
        proc_: u32,
        args: &[u8],
    ) -> ReplyKind {
        self.send(&call(xid, prog, vers, proc_, args)).await;
        let r = self.recv().await;
        assert_eq!(r.xid, xid, "reply xid");
        r.kind
    }
}

/// A small deterministic PRNG (xorshift64*) so failures can be replayed from the seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    /// Seeded from the clock; the seed is printed so a failing run can be replayed.
    pub fn from_clock() -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        eprintln!("random seed: {seed}");
        Self::new(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}
