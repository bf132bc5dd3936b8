//! The UDP side of RPC (RFC 5531 over datagrams): one call per datagram, one reply datagram
//! back to the sender. Used by the small programs that peers reach over UDP (rpc.statd sends
//! SM_NOTIFY that way); calls go through the same routing and services as the TCP path.
//!
//! Bounded: a datagram larger than [`MAX_DATAGRAM`] is cut short by the receive buffer (and
//! then fails to decode), and at most `max_in_flight` calls are being answered at once; beyond
//! that, datagrams wait in the socket's buffer and the kernel drops the excess, which is what
//! UDP clients expect (they retransmit).

use std::net::SocketAddr;
use std::sync::Arc;

use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::{Semaphore, mpsc};
use tracing::{debug, warn};

use crate::listeners::ListenerHealth;
use crate::server::{Hold, Outgoing, Routed, Server, Way, send};
use crate::throttle;

/// Pause after a failed receive before the next.
const RECEIVE_PAUSE: Duration = Duration::from_millis(100);

/// Largest datagram read or written.
pub const MAX_DATAGRAM: usize = 64 * 1024;

impl Server {
    /// Answers calls arriving on `socket` for as long as the task runs.
    pub async fn serve_udp(self: Arc<Self>, socket: UdpSocket) -> std::io::Result<()> {
        let health = ListenerHealth::new("rpc-udp", socket.local_addr()?);
        self.receive_loop(socket, &health).await;
        Ok(())
    }

    /// Answers datagrams forever; a failed receive is retried after a pause (the health says
    /// the socket is failing meanwhile).
    pub(crate) async fn receive_loop(self: Arc<Self>, socket: UdpSocket, health: &ListenerHealth) {
        let socket = Arc::new(socket);
        let permits = Arc::new(Semaphore::new(self.max_in_flight()));
        loop {
            let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
                return;
            };
            let mut buf = vec![0u8; MAX_DATAGRAM];
            let received = tokio::select! {
                received = socket.recv_from(&mut buf) => received,
                () = self.stopped() => return,
            };
            let (len, peer) = match received {
                Ok(r) => r,
                Err(e) => {
                    health.failing(&e);
                    if let Some(suppressed) = throttle::allow("udp_receive_failed") {
                        warn!(error = %e, suppressed, "cannot receive a datagram");
                    }
                    tokio::time::sleep(RECEIVE_PAUSE).await;
                    continue;
                }
            };
            health.serving();
            buf.truncate(len);
            let (tx, rx) = mpsc::unbounded_channel::<Outgoing>();
            let way = Way::queued(tx);
            match self.route(&buf, peer) {
                Routed::Call(header, service) => {
                    self.start_call(&service, header, buf, peer, &way, Hold::none())
                }
                Routed::Answer(xid, reply) => send(&way, xid, reply, Hold::none()),
                Routed::Ignore | Routed::Close => continue,
            }
            drop(way);
            tokio::spawn(reply_datagram(Arc::clone(&socket), peer, rx, permit));
        }
    }
}

/// Waits for the one reply of a datagram's call and sends it back.
async fn reply_datagram(
    socket: Arc<UdpSocket>,
    peer: SocketAddr,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
    _permit: tokio::sync::OwnedSemaphorePermit,
) {
    let Some(Outgoing {
        head, body, file, ..
    }) = rx.recv().await
    else {
        return;
    };
    // The header starts with 4 bytes reserved for TCP's record mark.
    let mut out = head.get(4..).unwrap_or(&[]).to_vec();
    if let Some(body) = body {
        out.extend_from_slice(&body);
    }
    if let Some(file) = file {
        file.read_into(&mut out);
    }
    if out.len() > MAX_DATAGRAM {
        debug!(%peer, len = out.len(), "reply too large for a datagram; dropped");
        return;
    }
    if let Err(e) = socket.send_to(&out, peer).await {
        debug!(%peer, error = %e, "cannot send a UDP reply");
    }
}
