//! The TCP side of RPC: accept connections, read bounded records, dispatch each call to the
//! [`RpcService`] registered for its program, and write replies as they complete.
//!
//! A connection carries many calls at once (up to `max_in_flight` per connection, after which
//! reading pauses): each call gets a [`ReplySender`] that the service completes from wherever
//! it does the work — inline for cheap calls, from a blocking worker thread for file-system
//! calls — and replies go out in completion order, matched by xid. Handing the reply straight
//! to the connection's writer saves a task wake-up per call. A malformed record closes that
//! connection and nothing else.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tracing::{debug, warn};

use crate::message::{
    self, AUTH_BADCRED, AUTH_TOOWEAK, CallHeader, Credential, DecodeError, FileSlice, Reply,
};
use crate::metrics::{CallNames, Observed, RpcMetrics};
use crate::record;

/// Where a service sends the reply to one call. It may be moved to any thread; if it is
/// dropped unanswered (a bug, or a panic in the handler), the caller gets SYSTEM_ERR rather
/// than waiting forever.
pub struct ReplySender {
    inner: Option<(
        mpsc::UnboundedSender<Outgoing>,
        u32,
        Option<OwnedSemaphorePermit>,
    )>,
    /// Set when the server keeps metrics: the call's names and start time.
    observed: Option<Box<Observed>>,
}

impl ReplySender {
    /// Sends the reply (the connection may already be gone; then it is dropped).
    pub fn send(mut self, reply: Reply) {
        if let Some(o) = self.observed.take() {
            o.finish(&reply);
        }
        if let Some((tx, xid, permit)) = self.inner.take() {
            send(&tx, xid, reply, permit);
        }
    }

    /// A sender whose reply goes to `tx` (for tests and fuzzing of services).
    pub fn detached() -> (Self, mpsc::UnboundedReceiver<Outgoing>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Self {
                inner: Some((tx, 0, None)),
                observed: None,
            },
            rx,
        )
    }
}

impl Drop for ReplySender {
    fn drop(&mut self) {
        if let Some((tx, xid, permit)) = self.inner.take() {
            warn!(xid, "call dropped without a reply; answering SYSTEM_ERR");
            if let Some(o) = self.observed.take() {
                o.finish(&Reply::SystemErr);
            }
            send(&tx, xid, Reply::SystemErr, permit);
        }
    }
}

/// Everything about a call except its arguments.
#[derive(Clone, Debug)]
pub struct CallContext {
    pub xid: u32,
    pub vers: u32,
    pub proc_: u32,
    pub credential: Credential,
    pub peer: SocketAddr,
}

/// The arguments of a call: the whole record, owned, and where the arguments start.
#[derive(Debug)]
pub struct CallArgs {
    record: Vec<u8>,
    offset: usize,
}

impl Drop for CallArgs {
    fn drop(&mut self) {
        crate::buffers::give(std::mem::take(&mut self.record));
    }
}

impl CallArgs {
    pub fn new(record: Vec<u8>, offset: usize) -> Self {
        Self { record, offset }
    }

    pub fn bytes(&self) -> &[u8] {
        self.record.get(self.offset..).unwrap_or(&[])
    }

    /// The size of the whole call message, RPC header included (record marking excluded).
    pub fn record_len(&self) -> usize {
        self.record.len()
    }
}

/// One RPC program (all of its versions in `versions()`).
pub trait RpcService: Send + Sync + 'static {
    fn program(&self) -> u32;
    /// Lowest and highest version served.
    fn versions(&self) -> (u32, u32);
    /// Handles a call whose program and version were already checked, answering through
    /// `reply`. Must not block: file-system work belongs on a blocking worker thread.
    fn call(&self, ctx: CallContext, args: CallArgs, reply: ReplySender);
    /// How the call is named in metrics.
    fn call_names(&self, _vers: u32, _proc: u32) -> CallNames {
        CallNames {
            program: "unknown",
            version: "unknown",
            procedure: "unknown",
        }
    }
    /// Reads the status label of a successful reply's body (`proc`, body).
    fn status_reader(&self) -> fn(u32, &[u8]) -> &'static str {
        |_, _| "OK"
    }
}

/// Dispatches calls to services; the same dispatcher serves every listening port.
pub struct Server {
    services: Vec<Arc<dyn RpcService>>,
    max_record: usize,
    max_in_flight: usize,
    metrics: Option<Arc<RpcMetrics>>,
}

/// Counts a connection as open for as long as it lives.
struct OpenConnection(Option<Arc<RpcMetrics>>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        if let Some(m) = &self.0 {
            m.connection_closed();
        }
    }
}

impl Server {
    /// `max_record` bounds one request; `max_in_flight` bounds concurrent calls per connection.
    pub fn new(
        services: Vec<Arc<dyn RpcService>>,
        max_record: usize,
        max_in_flight: usize,
    ) -> Self {
        Self {
            services,
            max_record,
            max_in_flight,
            metrics: None,
        }
    }

    /// Records every call and connection in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<RpcMetrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    pub(crate) fn max_in_flight(&self) -> usize {
        self.max_in_flight
    }

    fn rejected(&self, reason: &'static str) {
        if let Some(m) = &self.metrics {
            m.rejected(reason);
        }
    }

    /// Accepts connections until the listener fails.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) -> std::io::Result<()> {
        loop {
            let (stream, peer) = listener.accept().await?;
            let server = Arc::clone(&self);
            tokio::spawn(async move {
                if let Err(e) = server.connection(stream, peer).await {
                    debug!(%peer, error = %e, "connection closed");
                }
            });
        }
    }

    async fn connection(&self, stream: TcpStream, peer: SocketAddr) -> std::io::Result<()> {
        stream.set_nodelay(true)?;
        if let Some(m) = &self.metrics {
            m.connection_opened();
        }
        let _open = OpenConnection(self.metrics.clone());
        let (mut reader, writer) = stream.into_split();
        let (tx, rx) = mpsc::unbounded_channel::<Outgoing>();
        let writer_task = tokio::spawn(write_replies(writer, rx));
        let permits = Arc::new(Semaphore::new(self.max_in_flight));
        loop {
            let mut buf = Vec::new();
            match record::read_record(&mut reader, &mut buf, self.max_record).await {
                Ok(true) => {}
                Ok(false) => break,
                Err(record::RecordError::Io(e)) => {
                    debug!(%peer, error = %e, "connection read failed");
                    break;
                }
                Err(e) => {
                    warn!(%peer, error = %e, "closing connection after a bad record");
                    self.rejected("bad_record");
                    break;
                }
            }
            let (header, service) = match self.route(&buf, peer) {
                Routed::Call(header, service) => (header, service),
                Routed::Answer(xid, reply) => {
                    send(&tx, xid, reply, None);
                    continue;
                }
                Routed::Ignore => continue,
                Routed::Close => break,
            };
            let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
                break;
            };
            // The permit travels with the reply and is released once it is written, so a
            // client that stops reading cannot make replies pile up without bound.
            self.start_call(&service, header, buf, peer, &tx, Some(permit));
        }
        drop(tx);
        writer_task.await.unwrap_or(Ok(()))
    }

    /// Decodes a call's header and finds its service, or says what to do instead. Shared by
    /// the TCP and UDP paths.
    pub(crate) fn route(&self, buf: &[u8], peer: SocketAddr) -> Routed {
        let header = match message::decode_call(buf) {
            Ok(h) => h,
            Err(DecodeError::Unreplyable) => {
                warn!(%peer, "a message without an RPC header: dropped (TCP: with its connection)");
                self.rejected("no_rpc_header");
                return Routed::Close;
            }
            Err(DecodeError::NotACall(t)) => {
                debug!(%peer, msg_type = t, "ignoring a message that is not a call");
                return Routed::Ignore;
            }
            Err(e) => {
                // decode_call read the xid before failing, so it is there.
                let xid = buf
                    .get(..4)
                    .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
                let (reply, reason) = match e {
                    DecodeError::RpcMismatch(_) => (Reply::RpcMismatch, "rpc_version"),
                    DecodeError::UnsupportedFlavor(_) => {
                        (Reply::AuthError(AUTH_TOOWEAK), "auth_flavor")
                    }
                    _ => (Reply::AuthError(AUTH_BADCRED), "bad_credential"),
                };
                self.rejected(reason);
                return Routed::Answer(xid, reply);
            }
        };
        // A program may be served by several services, one per range of versions.
        let mut range: Option<(u32, u32)> = None;
        for s in self.services.iter().filter(|s| s.program() == header.prog) {
            let (low, high) = s.versions();
            if (low..=high).contains(&header.vers) {
                return Routed::Call(header, Arc::clone(s));
            }
            range = Some(range.map_or((low, high), |(l, h)| (l.min(low), h.max(high))));
        }
        match range {
            None => {
                self.rejected("unknown_program");
                Routed::Answer(header.xid, Reply::ProgUnavail)
            }
            Some((low, high)) => {
                self.rejected("unknown_version");
                Routed::Answer(header.xid, Reply::ProgMismatch { low, high })
            }
        }
    }

    /// Hands a routed call to its service with a [`ReplySender`] that answers through `tx`.
    pub(crate) fn start_call(
        &self,
        service: &Arc<dyn RpcService>,
        header: CallHeader,
        buf: Vec<u8>,
        peer: SocketAddr,
        tx: &mpsc::UnboundedSender<Outgoing>,
        permit: Option<OwnedSemaphorePermit>,
    ) {
        let ctx = CallContext {
            xid: header.xid,
            vers: header.vers,
            proc_: header.proc_,
            credential: header.credential,
            peer,
        };
        let observed = self.metrics.as_ref().map(|m| {
            Box::new(Observed {
                metrics: Arc::clone(m),
                names: service.call_names(header.vers, header.proc_),
                start: Instant::now(),
                status_of: service.status_reader(),
                proc_: header.proc_,
            })
        });
        let reply = ReplySender {
            inner: Some((tx.clone(), header.xid, permit)),
            observed,
        };
        service.call(ctx, CallArgs::new(buf, header.args_offset), reply);
    }
}

/// What [`Server::route`] decided about a message.
pub(crate) enum Routed {
    Call(CallHeader, Arc<dyn RpcService>),
    /// Answer at once with this reply (xid, reply).
    Answer(u32, Reply),
    /// Not a call: drop it.
    Ignore,
    /// Not even an RPC header: drop the connection (TCP) or the datagram (UDP).
    Close,
}

/// A reply on its way out: header, results, file data that ends the results, and the
/// in-flight permit it holds.
pub type Outgoing = (
    Vec<u8>,
    Option<Vec<u8>>,
    Option<FileSlice>,
    Option<OwnedSemaphorePermit>,
);

pub(crate) fn send(
    tx: &mpsc::UnboundedSender<Outgoing>,
    xid: u32,
    reply: Reply,
    permit: Option<OwnedSemaphorePermit>,
) {
    let mut head = vec![0u8; 4];
    message::encode_reply_header(xid, &reply, &mut head);
    let (body, file) = match reply {
        Reply::Success(body) => (Some(body), None),
        Reply::SuccessFile(body, file) => (Some(body), Some(file)),
        _ => (None, None),
    };
    // The receiver is gone only when the connection is already closing.
    let _ = tx.send((head, body, file, permit));
}

async fn write_replies(
    writer: tokio::net::tcp::OwnedWriteHalf,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
) -> std::io::Result<()> {
    let mut out = BufWriter::with_capacity(64 * 1024, writer);
    while let Some((mut head, body, file, permit)) = rx.recv().await {
        let body_len = body.as_ref().map_or(0, Vec::len)
            + file.as_ref().map_or(0, |f| f.len as usize + f.pad());
        let len = u32::try_from(head.len() - 4 + body_len).unwrap_or(0x7fff_ffff) | 0x8000_0000;
        head[..4].copy_from_slice(&len.to_be_bytes());
        match body {
            Some(body) if file.is_some() || body.len() > 64 * 1024 => {
                // A large reply goes out in one writev, after whatever is buffered.
                out.flush().await?;
                write_all_vectored(out.get_mut(), &head, &body).await?;
                crate::buffers::give(body);
                if let Some(file) = &file {
                    send_file(out.get_mut(), file).await?;
                }
            }
            Some(body) => {
                out.write_all(&head).await?;
                out.write_all(&body).await?;
            }
            None => out.write_all(&head).await?,
        }
        if rx.is_empty() {
            out.flush().await?;
        }
        drop(permit);
    }
    out.flush().await
}

/// Sends a file slice and its padding with `sendfile`: the kernel moves the page-cache pages
/// to the socket without a copy through user space.
async fn send_file(
    w: &mut tokio::net::tcp::OwnedWriteHalf,
    file: &FileSlice,
) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let sock: &tokio::net::TcpStream = w.as_ref();
    let mut off = file.offset as libc::off_t;
    let end = off + libc::off_t::from(file.len);
    while off < end {
        sock.writable().await?;
        let sent = sock.try_io(tokio::io::Interest::WRITABLE, || {
            // SAFETY: both descriptors are open; `off` is a valid offset pointer.
            let n = unsafe {
                libc::sendfile(
                    sock.as_raw_fd(),
                    file.fd.as_raw_fd(),
                    &mut off,
                    (end - off) as usize,
                )
            };
            if n < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        });
        match sent {
            // The file shrank after the reply was built: zeros keep the announced length.
            Ok(0) => break,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(e),
        }
    }
    let missing = (end - off) as usize + file.pad();
    if missing > 0 {
        w.write_all(&vec![0u8; missing]).await?;
    }
    Ok(())
}

async fn write_all_vectored<W: tokio::io::AsyncWrite + Unpin>(
    w: &mut W,
    mut a: &[u8],
    mut b: &[u8],
) -> std::io::Result<()> {
    while !a.is_empty() || !b.is_empty() {
        let n = w
            .write_vectored(&[std::io::IoSlice::new(a), std::io::IoSlice::new(b)])
            .await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        let from_a = n.min(a.len());
        a = &a[from_a..];
        b = &b[n - from_a..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::fd::OwnedFd;

    use tokio::io::AsyncReadExt;

    use super::*;

    /// A file of `len` known bytes and a connected TCP pair.
    async fn setup(len: usize) -> (Vec<u8>, Arc<OwnedFd>, TcpStream, TcpStream) {
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&data).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (data, Arc::new(OwnedFd::from(f)), server, client)
    }

    #[tokio::test]
    async fn file_replies_carry_the_bytes_their_padding_and_keep_the_stream_framed() {
        let (data, fd, server, mut client) = setup(300_001).await;
        let (_, w) = server.into_split();
        let (tx, rx) = mpsc::unbounded_channel();
        let writer = tokio::spawn(write_replies(w, rx));
        let file = FileSlice {
            fd,
            offset: 3,
            len: 200_001,
        };
        send(&tx, 7, Reply::SuccessFile(b"RES!".to_vec(), file), None);
        send(&tx, 8, Reply::Success(b"NEXT".to_vec()), None);
        drop(tx);
        writer.await.unwrap().unwrap();

        let mut wire = Vec::new();
        client.read_to_end(&mut wire).await.unwrap();
        let mark = u32::from_be_bytes(wire[..4].try_into().unwrap());
        assert_eq!(mark & 0x8000_0000, 0x8000_0000, "one last fragment");
        let len = (mark & 0x7fff_ffff) as usize;
        let record = &wire[4..4 + len];
        // xid, REPLY, ACCEPTED, verifier (2 words), SUCCESS, then the results.
        assert_eq!(&record[..4], &7u32.to_be_bytes());
        assert_eq!(&record[24..28], b"RES!");
        assert_eq!(&record[28..28 + 200_001], &data[3..200_004]);
        assert_eq!(&record[28 + 200_001..], &[0, 0, 0], "XDR padding");
        // The next reply starts right after, intact.
        let next = &wire[4 + len..];
        assert_eq!(&next[4..8], &8u32.to_be_bytes());
        assert_eq!(&next[28..], b"NEXT");
    }

    #[tokio::test]
    async fn a_file_that_shrank_is_sent_as_zeros_to_the_announced_length() {
        let (data, fd, server, mut client) = setup(70_000).await;
        let (_, mut w) = server.into_split();
        let file = FileSlice {
            fd: Arc::clone(&fd),
            offset: 0,
            len: 100_000,
        };
        send_file(&mut w, &file).await.unwrap();
        drop(w);
        let mut wire = Vec::new();
        client.read_to_end(&mut wire).await.unwrap();
        assert_eq!(wire.len(), 100_000);
        assert_eq!(&wire[..70_000], &data[..]);
        assert!(wire[70_000..].iter().all(|&b| b == 0));

        // The same rule when the bytes are read into memory (UDP).
        let mut body = Vec::new();
        file.read_into(&mut body);
        assert_eq!(body, wire);
    }
}
