//! A thin layer over `nfs3_client`: a loopback-only TCP connector, a timeout on every call and
//! helpers that turn NFS status codes into errors that name the procedure that failed.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use nfs3_client::io::{AsyncRead, AsyncWrite};
use nfs3_client::net::Connector;
use nfs3_client::nfs3_types::nfs3::{
    COMMIT3args, CREATE3args, FSINFO3args, GETATTR3args, LOOKUP3args, MKDIR3args, Nfs3Option,
    Nfs3Result, READ3args, REMOVE3args, RMDIR3args, WRITE3args, createhow3, diropargs3, fattr3,
    filename3, nfs_fh3, sattr3, stable_how,
};
use nfs3_client::nfs3_types::rpc::{auth_unix, opaque_auth};
use nfs3_client::nfs3_types::xdr_codec::Opaque;
use nfs3_client::{Nfs3Client, Nfs3Connection, Nfs3ConnectionBuilder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// No single call may take longer than this; a hung server ends the run with an error.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Where one server listens.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub addr: IpAddr,
    pub nfs_port: u16,
    pub mount_port: u16,
    pub export: String,
    pub privileged_port: bool,
}

/// A TCP stream with `TCP_NODELAY` that reports end-of-stream as an error (the client crate's
/// `read_exact` loop would otherwise spin on a closed connection).
pub struct Stream(TcpStream);

impl AsyncRead for Stream {
    async fn async_read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.0.read(buf).await?;
        if n == 0 && !buf.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "server closed the connection",
            ));
        }
        Ok(n)
    }
}

impl AsyncWrite for Stream {
    async fn async_write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf).await
    }
}

/// Connects only to loopback addresses.
pub struct LoopbackConnector;

fn check_loopback(addr: SocketAddr) -> std::io::Result<()> {
    if addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!("{addr} is not a loopback address"),
        ))
    }
}

impl Connector for LoopbackConnector {
    type Connection = Stream;

    async fn connect(&self, addr: SocketAddr) -> std::io::Result<Stream> {
        check_loopback(addr)?;
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Stream(stream))
    }

    async fn connect_with_port(
        &self,
        addr: SocketAddr,
        local_port: u16,
    ) -> std::io::Result<Stream> {
        check_loopback(addr)?;
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            local_port,
        ))?;
        let stream = socket.connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Stream(stream))
    }
}

/// AUTH_SYS as root (uid 0, gid 0), like a kernel client writing as root.
pub fn credential() -> opaque_auth<'static> {
    opaque_auth::auth_unix(&auth_unix {
        stamp: 1,
        machinename: Opaque::owned(b"nfs-bench".to_vec()),
        uid: 0,
        gid: 0,
        gids: vec![0],
    })
}

/// Runs one call with [`CALL_TIMEOUT`].
async fn timed<T, E, F>(what: &str, fut: F) -> Result<T>
where
    F: Future<Output = Result<T, E>>,
    E: std::error::Error + Send + Sync + 'static,
{
    match tokio::time::timeout(CALL_TIMEOUT, fut).await {
        // Display only: the client's errors repeat their source in their own message.
        Ok(result) => result.map_err(|e| anyhow!("{what}: RPC failed: {e}")),
        Err(_) => bail!("{what}: no reply within {} s", CALL_TIMEOUT.as_secs()),
    }
}

fn status<T, E>(what: &str, res: Nfs3Result<T, E>) -> Result<T> {
    match res {
        Nfs3Result::Ok(ok) => Ok(ok),
        Nfs3Result::Err((stat, _)) => Err(anyhow!("{what}: server returned {stat:?}")),
    }
}

/// MOUNT the export; the returned connection carries the root handle.
pub async fn mount(ep: &Endpoint) -> Result<Nfs3Connection<Stream>> {
    let builder = Nfs3ConnectionBuilder::new(LoopbackConnector, ep.addr.to_string(), &ep.export)
        .mount_port(ep.mount_port)
        .nfs3_port(ep.nfs_port)
        .connect_from_privileged_port(ep.privileged_port)
        .credential(credential());
    timed(&format!("MNT {}", ep.export), builder.mount()).await
}

/// UMNT, ignoring errors (only tidiness is at stake).
pub async fn unmount(conn: Nfs3Connection<Stream>) {
    let _ = tokio::time::timeout(CALL_TIMEOUT, conn.unmount()).await;
}

/// A further NFS connection (no MOUNT) for parallel streams.
pub async fn connect_nfs(ep: &Endpoint) -> Result<Nfs3Client<Stream>> {
    let addr = SocketAddr::new(ep.addr, ep.nfs_port);
    let io = if ep.privileged_port {
        let mut last = None;
        let mut found = None;
        for port in (600..1024).rev() {
            match LoopbackConnector.connect_with_port(addr, port).await {
                Ok(s) => {
                    found = Some(s);
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => last = Some(e),
                Err(e) => return Err(e).with_context(|| format!("connect to {addr}")),
            }
        }
        found.ok_or_else(|| anyhow!("no free privileged port: {last:?}"))?
    } else {
        LoopbackConnector
            .connect(addr)
            .await
            .with_context(|| format!("connect to {addr}"))?
    };
    Ok(Nfs3Client::new_with_auth(
        io,
        credential(),
        opaque_auth::default(),
    ))
}

fn dirop<'a>(dir: &nfs_fh3, name: &'a str) -> diropargs3<'a> {
    diropargs3 {
        dir: dir.clone(),
        name: filename3(Opaque::borrowed(name.as_bytes())),
    }
}

pub type Client = Nfs3Client<Stream>;

/// (rtmax, wtmax) from FSINFO.
pub async fn fsinfo(c: &mut Client, root: &nfs_fh3) -> Result<(u32, u32)> {
    let args = FSINFO3args {
        fsroot: root.clone(),
    };
    let ok = status("FSINFO", timed("FSINFO", c.fsinfo(&args)).await?)?;
    Ok((ok.rtmax, ok.wtmax))
}

pub async fn lookup(c: &mut Client, dir: &nfs_fh3, name: &str) -> Result<Option<nfs_fh3>> {
    let args = LOOKUP3args {
        what: dirop(dir, name),
    };
    match timed("LOOKUP", c.lookup(&args)).await? {
        Nfs3Result::Ok(ok) => Ok(Some(ok.object)),
        Nfs3Result::Err((stat, _)) if stat as u32 == 2 => Ok(None),
        Nfs3Result::Err((stat, _)) => Err(anyhow!("LOOKUP {name}: server returned {stat:?}")),
    }
}

/// CREATE (UNCHECKED, mode 0644) and return the new file's handle.
pub async fn create(c: &mut Client, dir: &nfs_fh3, name: &str) -> Result<nfs_fh3> {
    let args = CREATE3args {
        where_: dirop(dir, name),
        how: createhow3::UNCHECKED(sattr3 {
            mode: Nfs3Option::Some(0o644),
            ..sattr3::default()
        }),
    };
    let ok = status("CREATE", timed("CREATE", c.create(&args)).await?)?;
    match ok.obj {
        Nfs3Option::Some(fh) => Ok(fh),
        Nfs3Option::None => lookup(c, dir, name)
            .await?
            .ok_or_else(|| anyhow!("CREATE {name}: no handle returned and LOOKUP finds nothing")),
    }
}

pub async fn mkdir(c: &mut Client, dir: &nfs_fh3, name: &str) -> Result<nfs_fh3> {
    let args = MKDIR3args {
        where_: dirop(dir, name),
        attributes: sattr3 {
            mode: Nfs3Option::Some(0o755),
            ..sattr3::default()
        },
    };
    let ok = status("MKDIR", timed("MKDIR", c.mkdir(&args)).await?)?;
    match ok.obj {
        Nfs3Option::Some(fh) => Ok(fh),
        Nfs3Option::None => lookup(c, dir, name)
            .await?
            .ok_or_else(|| anyhow!("MKDIR {name}: no handle returned and LOOKUP finds nothing")),
    }
}

pub async fn remove(c: &mut Client, dir: &nfs_fh3, name: &str) -> Result<()> {
    let args = REMOVE3args {
        object: dirop(dir, name),
    };
    status("REMOVE", timed("REMOVE", c.remove(&args)).await?)?;
    Ok(())
}

pub async fn rmdir(c: &mut Client, dir: &nfs_fh3, name: &str) -> Result<()> {
    let args = RMDIR3args {
        object: dirop(dir, name),
    };
    status("RMDIR", timed("RMDIR", c.rmdir(&args)).await?)?;
    Ok(())
}

pub async fn getattr(c: &mut Client, fh: &nfs_fh3) -> Result<fattr3> {
    let args = GETATTR3args { object: fh.clone() };
    let ok = status("GETATTR", timed("GETATTR", c.getattr(&args)).await?)?;
    Ok(ok.obj_attributes)
}

/// WRITE UNSTABLE; returns (bytes accepted, write verifier).
pub async fn write(
    c: &mut Client,
    fh: &nfs_fh3,
    offset: u64,
    data: &[u8],
) -> Result<(u32, [u8; 8])> {
    let count = u32::try_from(data.len()).context("write chunk too large")?;
    let args = WRITE3args {
        file: fh.clone(),
        offset,
        count,
        stable: stable_how::UNSTABLE,
        data: Opaque::borrowed(data),
    };
    let what = format!("WRITE offset {offset} count {count}");
    let ok = status(&what, timed(&what, c.write(&args)).await?)?;
    if ok.count == 0 || ok.count > count {
        bail!("{what}: server accepted {} bytes", ok.count);
    }
    Ok((ok.count, ok.verf.0))
}

/// COMMIT the whole file; returns the write verifier.
pub async fn commit(c: &mut Client, fh: &nfs_fh3) -> Result<[u8; 8]> {
    let args = COMMIT3args {
        file: fh.clone(),
        offset: 0,
        count: 0,
    };
    let ok = status("COMMIT", timed("COMMIT", c.commit(&args)).await?)?;
    Ok(ok.verf.0)
}

/// READ; returns (data, eof).
pub async fn read(
    c: &mut Client,
    fh: &nfs_fh3,
    offset: u64,
    count: u32,
) -> Result<(Vec<u8>, bool)> {
    let args = READ3args {
        file: fh.clone(),
        offset,
        count,
    };
    let what = format!("READ offset {offset} count {count}");
    let ok = status(&what, timed(&what, c.read(&args)).await?)?;
    if ok.data.len() != ok.count as usize || ok.count > count {
        bail!(
            "{what}: reply says count {} but carries {} bytes",
            ok.count,
            ok.data.len()
        );
    }
    Ok((ok.data.0.into_owned(), ok.eof))
}
