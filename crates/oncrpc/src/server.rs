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
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::limits::{Admission, Charge, Limits, Slot, wait_for_room};
use crate::listeners::{EndGuard, ListenerHealth, ListenerReport};
use crate::record::RecordError;
use crate::throttle;

/// The first pause after a failed accept; it doubles up to the second.
/// Bytes read ahead per connection: a few small calls.
const READ_BUFFER: usize = 4096;
const ACCEPT_PAUSE_MIN: Duration = Duration::from_millis(10);
const ACCEPT_PAUSE_MAX: Duration = Duration::from_secs(1);

use crate::message::{
    self, AUTH_BADCRED, AUTH_TOOWEAK, CallHeader, Credential, DecodeError, FileSlice, Reply,
};
use crate::metrics::{CallNames, Observed, RpcMetrics};
use crate::record;

/// What a call holds until its reply is written: its place among the connection's calls in
/// flight and its bytes against the memory budgets.
#[derive(Debug)]
pub struct Hold {
    /// Held for its drop: the place among the calls in flight is freed with the reply.
    _permit: Option<OwnedSemaphorePermit>,
    charge: Charge,
}

impl Hold {
    /// Holds nothing (tests, UDP).
    pub fn none() -> Self {
        Self {
            _permit: None,
            charge: Charge::none(),
        }
    }
}

/// Where a service sends the reply to one call. It may be moved to any thread; if it is
/// dropped unanswered (a bug, or a panic in the handler), the caller gets SYSTEM_ERR rather
/// than waiting forever.
pub struct ReplySender {
    inner: Option<(Way, u32, Hold)>,
    /// Set when the server keeps metrics: the call's names and start time.
    observed: Option<Box<Observed>>,
}

impl ReplySender {
    /// Sends the reply (the connection may already be gone; then it is dropped).
    pub fn send(mut self, reply: Reply) {
        if let Some(o) = self.observed.take() {
            o.finish(&reply);
        }
        if let Some((way, xid, hold)) = self.inner.take() {
            send(&way, xid, reply, hold);
        }
    }

    /// A sender whose reply goes to `tx` (for tests and fuzzing of services).
    pub fn detached() -> (Self, mpsc::UnboundedReceiver<Outgoing>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Self {
                inner: Some((Way::queued(tx), 0, Hold::none())),
                observed: None,
            },
            rx,
        )
    }
}

impl Drop for ReplySender {
    fn drop(&mut self) {
        if let Some((way, xid, hold)) = self.inner.take() {
            warn!(xid, "call dropped without a reply; answering SYSTEM_ERR");
            if let Some(o) = self.observed.take() {
                o.finish(&Reply::SystemErr);
            }
            send(&way, xid, Reply::SystemErr, hold);
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
    /// Bytes of memory the reply to this call may take (file data sent from the page cache
    /// does not count), charged against the budgets before the call runs so that calls whose
    /// replies are large wait rather than pile up. An underestimate is corrected when the
    /// reply is made, an overestimate only lowers concurrency.
    fn reply_reservation(&self, _vers: u32, _proc: u32, _args: &[u8]) -> usize {
        DEFAULT_REPLY_RESERVATION
    }
}

/// What a call's reply is expected to take unless its service says otherwise.
pub const DEFAULT_REPLY_RESERVATION: usize = 8 * 1024;

/// Dispatches calls to services; the same dispatcher serves every listening port.
pub struct Server {
    services: Vec<Arc<dyn RpcService>>,
    limits: Limits,
    metrics: Option<Arc<RpcMetrics>>,
    /// Made on first use, from the final limits and metrics.
    admission: OnceLock<Arc<Admission>>,
    listeners: Mutex<Vec<Arc<ListenerHealth>>>,
    /// The tasks of the listeners started with `spawn_*`, awaited on shutdown.
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Set once on shutdown: listeners stop accepting, connections stop reading.
    stopping: watch::Sender<bool>,
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

/// Why a connection's reading ended.
#[derive(Debug)]
enum Ended {
    /// The client closed it.
    Eof,
    /// Nothing in flight and nothing received within the idle timeout.
    Idle,
    /// A record did not arrive in full within its deadline.
    RecordTimeout,
    /// A record too large, cut short, or without an RPC header.
    Bad(String),
    Io(std::io::Error),
    /// The server is shutting down (between records).
    Shutdown,
}

impl Server {
    /// `max_record` bounds one request; `max_in_flight` bounds concurrent calls per connection.
    /// Every other limit takes its default (see [`Limits`] and [`Server::with_limits`]).
    pub fn new(
        services: Vec<Arc<dyn RpcService>>,
        max_record: usize,
        max_in_flight: usize,
    ) -> Self {
        Self {
            services,
            limits: Limits {
                max_record,
                max_in_flight,
                ..Limits::default()
            },
            metrics: None,
            admission: OnceLock::new(),
            listeners: Mutex::new(Vec::new()),
            tasks: Mutex::new(Vec::new()),
            stopping: watch::channel(false).0,
        }
    }

    /// Stops gracefully: every listener stops accepting (its socket is closed, so new
    /// connections are refused), every connection stops reading new calls, and the calls
    /// already read are answered and their replies written, for at most `grace`. Returns
    /// how many connections were still open when it gave up.
    pub async fn shutdown(&self, grace: Duration) -> usize {
        self.stopping.send_replace(true);
        let tasks: Vec<JoinHandle<()>> =
            std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        let deadline = tokio::time::Instant::now() + grace;
        for t in tasks {
            let _ = tokio::time::timeout_at(deadline, t).await;
        }
        loop {
            let open = self.admission().open();
            if open == 0 || tokio::time::Instant::now() >= deadline {
                return open;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub(crate) async fn stopped(&self) {
        let mut rx = self.stopping.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// Replaces every limit.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Records every call and connection in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<RpcMetrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub(crate) fn max_in_flight(&self) -> usize {
        self.limits.max_in_flight
    }

    fn admission(&self) -> &Arc<Admission> {
        self.admission.get_or_init(|| {
            let gauge = self.metrics.as_ref().map(|m| m.bytes_in_flight.clone());
            Arc::new(Admission::new(self.limits.clone(), gauge))
        })
    }

    fn rejected(&self, reason: &'static str) {
        if let Some(m) = &self.metrics {
            m.rejected(reason);
        }
    }

    fn closed(&self, reason: &'static str) {
        if let Some(m) = &self.metrics {
            m.closed(reason);
        }
    }

    /// The health of every listener started with [`Server::spawn_tcp`] or
    /// [`Server::spawn_udp`].
    pub fn listeners(&self) -> Vec<ListenerReport> {
        self.listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|l| l.report())
            .collect()
    }

    fn watch(&self, name: &'static str, addr: SocketAddr) -> Arc<ListenerHealth> {
        let health = ListenerHealth::new(name, addr);
        self.listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::clone(&health));
        health
    }

    /// Serves `listener` in a task whose health [`Server::listeners`] reports as `name`.
    pub fn spawn_tcp(
        self: &Arc<Self>,
        name: &'static str,
        listener: TcpListener,
    ) -> std::io::Result<()> {
        let health = self.watch(name, listener.local_addr()?);
        let server = Arc::clone(self);
        let task = tokio::spawn(async move {
            let guard = EndGuard(health);
            server.accept_loop(listener, &guard.0).await;
        });
        self.keep(task);
        Ok(())
    }

    /// Keeps a listener's task, awaited on shutdown.
    fn keep(&self, task: JoinHandle<()>) {
        self.tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(task);
    }

    /// Serves `socket` in a task whose health [`Server::listeners`] reports as `name`.
    pub fn spawn_udp(
        self: &Arc<Self>,
        name: &'static str,
        socket: UdpSocket,
    ) -> std::io::Result<()> {
        let health = self.watch(name, socket.local_addr()?);
        let server = Arc::clone(self);
        let task = tokio::spawn(async move {
            let guard = EndGuard(health);
            server.receive_loop(socket, &guard.0).await;
        });
        self.keep(task);
        Ok(())
    }

    /// Accepts connections for as long as the task runs (errors are retried with back-off).
    pub async fn serve(self: Arc<Self>, listener: TcpListener) -> std::io::Result<()> {
        let health = ListenerHealth::new("rpc", listener.local_addr()?);
        self.accept_loop(listener, &health).await;
        Ok(())
    }

    /// Accepts connections forever. A failed accept (out of file descriptors or memory, a
    /// connection aborted before it was taken) is retried after a pause that doubles up to
    /// a second, so the listener neither dies nor spins; its health says it is failing.
    async fn accept_loop(self: Arc<Self>, listener: TcpListener, health: &ListenerHealth) {
        let mut pause = ACCEPT_PAUSE_MIN;
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = self.stopped() => return,
            };
            let (stream, peer) = match accepted {
                Ok(s) => s,
                Err(e) => {
                    health.failing(&e);
                    if let Some(m) = &self.metrics {
                        m.accept_failed();
                    }
                    if let Some(suppressed) = throttle::allow("accept_failed") {
                        warn!(error = %e, suppressed, retry_in = ?pause, "cannot accept a connection");
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(ACCEPT_PAUSE_MAX);
                    continue;
                }
            };
            pause = ACCEPT_PAUSE_MIN;
            health.serving();
            let slot = match self.admission().admit(peer.ip()) {
                Ok(slot) => slot,
                Err(refusal) => {
                    if let Some(m) = &self.metrics {
                        m.refused(refusal.reason());
                    }
                    if let Some(suppressed) = throttle::allow(refusal.reason()) {
                        warn!(%peer, reason = refusal.reason(), suppressed,
                            "connection refused: too many connections");
                    }
                    drop(stream);
                    continue;
                }
            };
            let server = Arc::clone(&self);
            tokio::spawn(async move {
                if let Err(e) = server.connection(stream, peer, slot).await {
                    debug!(%peer, error = %e, "connection closed");
                }
            });
        }
    }

    async fn connection(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        slot: Slot,
    ) -> std::io::Result<()> {
        stream.set_nodelay(true)?;
        if let Some(m) = &self.metrics {
            m.connection_opened();
        }
        let _open = OpenConnection(self.metrics.clone());
        let direct = Direct::of(&stream).map(Arc::new);
        let (reader, writer) = stream.into_split();
        // A small call arrives whole in one read: its record mark and body cost one system
        // call, not two. Large records bypass the buffer.
        let mut reader = BufReader::with_capacity(READ_BUFFER, reader);
        let (tx, rx) = mpsc::unbounded_channel::<Outgoing>();
        let way = Way {
            tx,
            direct: direct.clone(),
            permits: Arc::new(Semaphore::new(self.limits.max_in_flight)),
            max_in_flight: self.limits.max_in_flight,
        };
        // Whatever way the connection ends, no reply is written straight to it afterwards.
        let _closing = CloseDirect(direct.clone());
        let mut writer_task =
            tokio::spawn(write_replies(writer, rx, self.limits.send_timeout, direct));
        let ended = {
            let reading = self.read_calls(&mut reader, peer, &slot, way);
            tokio::pin!(reading);
            tokio::select! {
                ended = &mut reading => Some(ended),
                written = &mut writer_task => {
                    // The writer gave up (the client stopped taking replies, or the socket
                    // failed): the connection is closed, whatever is being read.
                    return match written {
                        Ok(Err(e)) if e.kind() == std::io::ErrorKind::TimedOut => {
                            self.closed("send_timeout");
                            if let Some(suppressed) = throttle::allow("send_timeout") {
                                warn!(%peer, suppressed, "closing a connection whose client does not read its replies");
                            }
                            Ok(())
                        }
                        Ok(r) => r,
                        Err(_) => Ok(()),
                    };
                }
            }
        };
        match ended {
            Some(Ended::Eof | Ended::Shutdown) | None => {}
            Some(Ended::Idle) => {
                self.closed("idle");
                debug!(%peer, "closing an idle connection");
            }
            Some(Ended::RecordTimeout) => {
                self.closed("record_timeout");
                if let Some(suppressed) = throttle::allow("record_timeout") {
                    warn!(%peer, suppressed, timeout = ?self.limits.record_timeout,
                        "closing a connection whose record did not arrive in time");
                }
            }
            Some(Ended::Bad(e)) => {
                self.rejected("bad_record");
                if let Some(suppressed) = throttle::allow("bad_record") {
                    warn!(%peer, error = %e, suppressed, "closing connection after a bad record");
                }
            }
            Some(Ended::Io(e)) => debug!(%peer, error = %e, "connection read failed"),
        }
        // Replies still being made go out before the connection closes.
        writer_task.await.unwrap_or(Ok(()))
    }

    /// Reads and dispatches calls until the connection ends; says why it ended.
    async fn read_calls(
        &self,
        reader: &mut BufReader<OwnedReadHalf>,
        peer: SocketAddr,
        slot: &Slot,
        way: Way,
    ) -> Ended {
        let limits = &self.limits;
        let global = &self.admission().global;
        let permits = Arc::clone(&way.permits);
        loop {
            // Back-pressure: while this client's replies (or everyone's) hold the budget,
            // its next call waits in the socket rather than in our memory.
            if wait_for_room(&slot.budget, global).await
                && let Some(m) = &self.metrics
            {
                m.backpressure();
            }
            let mut header = [0u8; 4];
            let got = loop {
                tokio::select! {
                    got = reader.read(&mut header) => match got {
                        Ok(0) => return Ended::Eof,
                        Ok(n) => break n,
                        Err(e) => return Ended::Io(e),
                    },
                    () = tokio::time::sleep(limits.idle_timeout) => {
                        // Idle means nothing in flight either (a blocked lock is not idle).
                        if permits.available_permits() == limits.max_in_flight {
                            return Ended::Idle;
                        }
                    }
                    // Shutting down: no new calls; those read are answered.
                    () = self.stopped() => return Ended::Shutdown,
                }
            };
            let mut charge = Charge::none();
            let buf = match self
                .read_record_rest(reader, header, got, slot, &mut charge)
                .await
            {
                Ok(buf) => buf,
                Err(RecordError::TimedOut(_)) => return Ended::RecordTimeout,
                Err(RecordError::Io(e)) => return Ended::Io(e),
                Err(e) => return Ended::Bad(e.to_string()),
            };
            // Every message, even one answered at once, holds a place among the calls in
            // flight until its reply is written: a client that sends junk and never reads
            // cannot queue answers without bound.
            let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
                return Ended::Eof;
            };
            match self.route(&buf, peer) {
                Routed::Call(header, service) => {
                    let reserve = service.reply_reservation(
                        header.vers,
                        header.proc_,
                        buf.get(header.args_offset..).unwrap_or(&[]),
                    );
                    if charge.grow(&slot.budget, global, reserve).await
                        && let Some(m) = &self.metrics
                    {
                        m.backpressure();
                    }
                    let hold = Hold {
                        _permit: Some(permit),
                        charge,
                    };
                    self.start_call(&service, header, buf, peer, &way, hold);
                }
                Routed::Answer(xid, reply) => {
                    crate::buffers::give(buf);
                    let hold = Hold {
                        _permit: Some(permit),
                        charge,
                    };
                    send(&way, xid, reply, hold);
                }
                Routed::Ignore => crate::buffers::give(buf),
                Routed::Close => return Ended::Bad("a message without an RPC header".into()),
            }
        }
    }

    /// Reads the rest of a record whose first `got` header bytes are in `header`, within
    /// the record deadline (time spent waiting for the budget does not count against it).
    /// Each fragment's bytes are charged before they are read.
    async fn read_record_rest(
        &self,
        reader: &mut BufReader<OwnedReadHalf>,
        mut header: [u8; 4],
        got: usize,
        slot: &Slot,
        charge: &mut Charge,
    ) -> Result<Vec<u8>, RecordError> {
        let limits = &self.limits;
        let global = &self.admission().global;
        let mut deadline = tokio::time::Instant::now() + limits.record_timeout;
        let truncated = |e: std::io::Error| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                RecordError::Truncated
            } else {
                RecordError::Io(e)
            }
        };
        let mut buf = Vec::new();
        let mut filled = got;
        loop {
            if filled < 4 {
                tokio::time::timeout_at(deadline, reader.read_exact(&mut header[filled..]))
                    .await
                    .map_err(|_| RecordError::TimedOut(limits.record_timeout))?
                    .map_err(truncated)?;
            }
            let (len, last) = record::fragment_header(header);
            let total = buf.len() + len;
            if total > limits.max_record {
                return Err(RecordError::TooLarge(total, limits.max_record));
            }
            let waiting = tokio::time::Instant::now();
            charge.grow(&slot.budget, global, len).await;
            deadline += waiting.elapsed();
            match tokio::time::timeout_at(deadline, record::read_fragment(reader, &mut buf, len))
                .await
            {
                Ok(r) => r?,
                Err(_) => return Err(RecordError::TimedOut(limits.record_timeout)),
            }
            if last {
                return Ok(buf);
            }
            filled = 0;
        }
    }

    /// Decodes a call's header and finds its service, or says what to do instead. Shared by
    /// the TCP and UDP paths.
    pub(crate) fn route(&self, buf: &[u8], peer: SocketAddr) -> Routed {
        let header = match message::decode_call(buf) {
            Ok(h) => h,
            Err(DecodeError::Unreplyable) => {
                if let Some(suppressed) = throttle::allow("no_rpc_header") {
                    warn!(%peer, suppressed, "a message without an RPC header: dropped (TCP: with its connection)");
                }
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

    /// Hands a routed call to its service with a [`ReplySender`] that answers through `way`.
    pub(crate) fn start_call(
        &self,
        service: &Arc<dyn RpcService>,
        header: CallHeader,
        buf: Vec<u8>,
        peer: SocketAddr,
        way: &Way,
        hold: Hold,
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
            inner: Some((way.clone(), header.xid, hold)),
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

/// A reply on its way out: header (its first 4 bytes the record mark), results, file data
/// that ends the results, what the call holds until the reply is written, and how many of its
/// first bytes are already on the wire (a direct write the socket took only in part).
#[derive(Debug)]
pub struct Outgoing {
    pub head: Vec<u8>,
    pub body: Option<Vec<u8>>,
    pub file: Option<FileSlice>,
    pub hold: Hold,
    pub sent: usize,
}

/// Where a connection's replies go. From whichever thread made the reply, straight onto the
/// socket when nothing is queued before it (one non-blocking system call: no hand-over to the
/// writer task), otherwise into the writer task's queue, which keeps their order.
#[derive(Clone, Debug)]
pub(crate) struct Way {
    tx: mpsc::UnboundedSender<Outgoing>,
    direct: Option<Arc<Direct>>,
    /// The connection's places for calls in flight (one held by each call until its reply
    /// is written).
    permits: Arc<Semaphore>,
    max_in_flight: usize,
}

impl Way {
    /// Every reply through the queue (UDP, tests).
    pub(crate) fn queued(tx: mpsc::UnboundedSender<Outgoing>) -> Self {
        Self {
            tx,
            direct: None,
            permits: Arc::new(Semaphore::new(1)),
            max_in_flight: 1,
        }
    }

    /// Whether the call whose reply is being sent is the connection's only one in flight.
    /// With more, the writer task sends their replies together in fewer writes, which
    /// costs less than one direct write each.
    fn alone(&self) -> bool {
        self.permits.available_permits() + 1 >= self.max_in_flight
    }
}

/// The direct path of a TCP connection.
#[derive(Debug)]
pub(crate) struct Direct {
    /// A duplicate of the connection's socket, valid for as long as a reply may come.
    fd: std::os::fd::OwnedFd,
    /// Replies queued for the writer task or being written by it; `None` once the connection
    /// is closing (everything goes through the queue, which may be gone).
    queued: Mutex<Option<usize>>,
}

impl Direct {
    fn of(stream: &TcpStream) -> Option<Self> {
        use std::os::fd::AsFd;
        // Without a duplicate (out of descriptors), replies take the queue.
        let fd = stream.as_fd().try_clone_to_owned().ok()?;
        Some(Self {
            fd,
            queued: Mutex::new(Some(0)),
        })
    }

    fn queued(&self) -> std::sync::MutexGuard<'_, Option<usize>> {
        self.queued.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes `out` now if nothing is queued before it and the socket takes it whole;
    /// otherwise queues it (with what the socket took) behind the others.
    fn send(&self, tx: &mpsc::UnboundedSender<Outgoing>, mut out: Outgoing) {
        let mut queued = self.queued();
        if *queued == Some(0) && out.file.is_none() {
            let body = out.body.as_deref().unwrap_or(&[]);
            let total = out.head.len() + body.len();
            out.sent = write_now(&self.fd, &out.head, body);
            if out.sent == total {
                drop(queued);
                if let Some(body) = out.body.take() {
                    crate::buffers::give(body);
                }
                return;
            }
        }
        enqueue(&mut queued, tx, out);
    }

    /// Queues `out` behind the others (counted, so no direct write passes it).
    fn queue(&self, tx: &mpsc::UnboundedSender<Outgoing>, out: Outgoing) {
        enqueue(&mut self.queued(), tx, out);
    }

    /// The writer task has written (and flushed, unless more follow) one queued reply.
    fn written(&self) {
        if let Some(n) = self.queued().as_mut() {
            *n = n.saturating_sub(1);
        }
    }

    /// No more direct writes; with `shut`, the socket is shut down too (the duplicate would
    /// otherwise keep it open for calls still running).
    fn close(&self, shut: bool) {
        *self.queued() = None;
        if shut {
            use std::os::fd::AsRawFd;
            // SAFETY: plain syscall on a descriptor we own.
            unsafe { libc::shutdown(self.fd.as_raw_fd(), libc::SHUT_RDWR) };
        }
    }
}

thread_local! {
    static DIRECT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Lets replies made on the calling thread go straight onto their connection's socket (see
/// [`Way`]). For threads that make replies outside the async runtime (a service's own
/// workers): one system call instead of waking the writer task. Replies made on the runtime's
/// threads take the queue, where the writer task sends many in one write.
pub fn reply_directly_from_this_thread() {
    DIRECT.set(true);
}

/// Counts `out` among the queued replies and queues it, under the lock `queued` comes from,
/// so that nothing is written directly before it.
fn enqueue(queued: &mut Option<usize>, tx: &mpsc::UnboundedSender<Outgoing>, out: Outgoing) {
    if let Some(n) = queued.as_mut() {
        *n += 1;
    }
    let _ = tx.send(out);
}

/// Ends a connection's direct path when the connection ends, however it ends.
struct CloseDirect(Option<Arc<Direct>>);

impl Drop for CloseDirect {
    fn drop(&mut self) {
        if let Some(d) = &self.0 {
            d.close(true);
        }
    }
}

/// One non-blocking `sendmsg` of `head` and `body`: how many bytes the socket took (0 when it
/// takes nothing now or fails; the writer task then meets the error).
fn write_now(fd: &std::os::fd::OwnedFd, head: &[u8], body: &[u8]) -> usize {
    use std::os::fd::AsRawFd;
    let mut iov = [
        libc::iovec {
            iov_base: head.as_ptr() as *mut libc::c_void,
            iov_len: head.len(),
        },
        libc::iovec {
            iov_base: body.as_ptr() as *mut libc::c_void,
            iov_len: body.len(),
        },
    ];
    // SAFETY: a zeroed msghdr is valid; it points at two iovecs over live slices.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = if body.is_empty() { 1 } else { 2 };
    loop {
        // SAFETY: valid descriptor and message.
        let n = unsafe {
            libc::sendmsg(
                fd.as_raw_fd(),
                &msg,
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        if n >= 0 {
            return n as usize;
        }
        if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return 0;
        }
    }
}

pub(crate) fn send(way: &Way, xid: u32, reply: Reply, mut hold: Hold) {
    let mut head = vec![0u8; 4];
    message::encode_reply_header(xid, &reply, &mut head);
    let (body, file) = match reply {
        Reply::Success(body) => (Some(body), None),
        Reply::SuccessFile(body, file) => (Some(body), Some(file)),
        _ => (None, None),
    };
    // From now on the call holds what its reply takes in memory (file data is sent from the
    // page cache), not its request or its estimate.
    hold.charge
        .resize(head.len() + body.as_ref().map_or(0, Vec::capacity));
    let body_len =
        body.as_ref().map_or(0, Vec::len) + file.as_ref().map_or(0, |f| f.len as usize + f.pad());
    let len = u32::try_from(head.len() - 4 + body_len).unwrap_or(0x7fff_ffff) | 0x8000_0000;
    head[..4].copy_from_slice(&len.to_be_bytes());
    let out = Outgoing {
        head,
        body,
        file,
        hold,
        sent: 0,
    };
    match &way.direct {
        Some(direct) if DIRECT.get() && way.alone() => direct.send(&way.tx, out),
        Some(direct) => direct.queue(&way.tx, out),
        // The receiver is gone only when the connection is already closing.
        None => {
            let _ = way.tx.send(out);
        }
    }
}

/// Writes replies in the order they were made. A reply the client does not take within
/// `send_timeout` ends the writer with `TimedOut` (and so the connection).
async fn write_replies(
    writer: tokio::net::tcp::OwnedWriteHalf,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
    send_timeout: Duration,
    direct: Option<Arc<Direct>>,
) -> std::io::Result<()> {
    let mut out = BufWriter::with_capacity(64 * 1024, writer);
    while let Some(reply) = rx.recv().await {
        let more = !rx.is_empty();
        match tokio::time::timeout(send_timeout, write_reply(&mut out, reply, more)).await {
            Ok(r) => r?,
            Err(_) => return Err(std::io::ErrorKind::TimedOut.into()),
        }
        // Written, and flushed unless more follow (and count): the direct path may go on.
        if let Some(d) = &direct {
            d.written();
        }
    }
    tokio::time::timeout(send_timeout, out.flush())
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
}

/// Writes one reply; flushes unless `more` replies are waiting to share the write.
async fn write_reply(
    out: &mut BufWriter<tokio::net::tcp::OwnedWriteHalf>,
    reply: Outgoing,
    more: bool,
) -> std::io::Result<()> {
    let Outgoing {
        head,
        body,
        file,
        hold,
        sent,
    } = reply;
    if sent > 0 {
        // A direct write the socket took in part: the rest, then any file data.
        let body = body.unwrap_or_default();
        let (h, b) = if sent < head.len() {
            (&head[sent..], &body[..])
        } else {
            (&[][..], &body[(sent - head.len()).min(body.len())..])
        };
        out.write_all(h).await?;
        out.write_all(b).await?;
        crate::buffers::give(body);
        if let Some(file) = &file {
            out.flush().await?;
            send_file(out.get_mut(), file).await?;
        }
    } else {
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
    }
    if !more {
        out.flush().await?;
    }
    drop(hold);
    Ok(())
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
        let writer = tokio::spawn(write_replies(w, rx, Duration::from_secs(10), None));
        let tx = Way::queued(tx);
        let file = FileSlice {
            fd,
            offset: 3,
            len: 200_001,
        };
        send(
            &tx,
            7,
            Reply::SuccessFile(b"RES!".to_vec(), file),
            Hold::none(),
        );
        send(&tx, 8, Reply::Success(b"NEXT".to_vec()), Hold::none());
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

    /// Reads `n` records from `client`: (xid, results) of each.
    async fn records(client: &mut TcpStream, n: usize) -> Vec<(u32, Vec<u8>)> {
        let mut out = Vec::new();
        for _ in 0..n {
            let mut mark = [0u8; 4];
            client.read_exact(&mut mark).await.unwrap();
            let mark = u32::from_be_bytes(mark);
            assert_eq!(mark & 0x8000_0000, 0x8000_0000);
            let mut rec = vec![0u8; (mark & 0x7fff_ffff) as usize];
            client.read_exact(&mut rec).await.unwrap();
            let xid = u32::from_be_bytes(rec[..4].try_into().unwrap());
            out.push((xid, rec[24..].to_vec()));
        }
        out
    }

    #[tokio::test]
    async fn direct_replies_keep_their_order_with_queued_ones_and_a_partial_write_is_finished() {
        let (data, fd, server, mut client) = setup(100_000).await;
        reply_directly_from_this_thread();
        // A small send buffer, so that a large reply is taken only in part.
        let sock = socket2_sndbuf(&server, 4096);
        assert!(sock);
        let direct = Arc::new(Direct::of(&server).unwrap());
        let (_, w) = server.into_split();
        let (tx, rx) = mpsc::unbounded_channel();
        let writer = tokio::spawn(write_replies(
            w,
            rx,
            Duration::from_secs(10),
            Some(Arc::clone(&direct)),
        ));
        let way = Way {
            tx,
            direct: Some(Arc::clone(&direct)),
            permits: Arc::new(Semaphore::new(4)),
            max_in_flight: 4,
        };
        // 1: small, written directly. 2: 3 MB, more than the socket takes now: partly written,
        // the rest queued. 3: a file reply (always queued). 4: small, queued behind them.
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
        send(&way, 1, Reply::Success(b"ONE!".to_vec()), Hold::none());
        assert_eq!(
            *direct.queued(),
            Some(0),
            "the first reply went straight out"
        );
        send(&way, 2, Reply::Success(big.clone()), Hold::none());
        assert_eq!(
            *direct.queued(),
            Some(1),
            "the rest of the big one is queued"
        );
        let file = FileSlice {
            fd,
            offset: 0,
            len: 100_000,
        };
        send(
            &way,
            3,
            Reply::SuccessFile(b"FILE".to_vec(), file),
            Hold::none(),
        );
        send(&way, 4, Reply::Success(b"FOUR".to_vec()), Hold::none());
        let got = records(&mut client, 4).await;
        assert_eq!(
            got.iter().map(|(x, _)| *x).collect::<Vec<_>>(),
            vec![1, 2, 3, 4]
        );
        assert_eq!(got[0].1, b"ONE!");
        assert_eq!(got[1].1, big);
        assert_eq!(&got[2].1[..4], b"FILE");
        assert_eq!(&got[2].1[4..], &data[..]);
        assert_eq!(got[3].1, b"FOUR");
        // Once the queue is drained, replies go straight out again.
        for _ in 0..100 {
            if *direct.queued() == Some(0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(*direct.queued(), Some(0));
        send(&way, 5, Reply::Success(b"FIVE".to_vec()), Hold::none());
        assert_eq!(*direct.queued(), Some(0));
        assert_eq!(records(&mut client, 1).await[0], (5, b"FIVE".to_vec()));
        // A closed direct path queues everything.
        direct.close(false);
        send(&way, 6, Reply::Success(b"SIX!".to_vec()), Hold::none());
        assert_eq!(records(&mut client, 1).await[0], (6, b"SIX!".to_vec()));
        drop(way);
        writer.await.unwrap().unwrap();
    }

    /// Sets SO_SNDBUF on a stream.
    fn socket2_sndbuf(s: &TcpStream, bytes: libc::c_int) -> bool {
        use std::os::fd::AsRawFd;
        // SAFETY: valid descriptor and option value.
        unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_SNDBUF,
                (&bytes as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            ) == 0
        }
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
