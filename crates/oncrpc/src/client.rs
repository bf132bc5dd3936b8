//! A minimal RPC caller: one call, one reply, over TCP or UDP, with a deadline. Enough for a
//! server's own outgoing calls (NLM GRANTED callbacks, NSM SM_NOTIFY, portmapper GETPORT);
//! not a general client (no connection reuse, no retransmission: callers retry).
//!
//! Encoding the call and decoding the reply are pure functions ([`encode_call`],
//! [`decode_reply`]); the I/O around them is a few lines per transport.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use thiserror::Error;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UdpSocket};

use crate::message::{AUTH_NONE, AUTH_SYS, XdrReader};
use crate::portmap::{self, IPPROTO_TCP, IPPROTO_UDP};
use crate::record;
use crate::udp::MAX_DATAGRAM;

/// Largest reply accepted over TCP.
const MAX_REPLY: usize = 64 * 1024;

/// Why a call got no usable reply.
#[derive(Debug, Error)]
pub enum ClientError {
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    #[error("the reply is malformed")]
    BadReply,
    #[error("the call was refused (accept_stat or reject_stat {0})")]
    Refused(u32),
    #[error("the program is not registered with the peer's portmapper")]
    NotRegistered,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// The transport of a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    Udp,
}

impl Transport {
    /// The portmapper's protocol number for this transport.
    pub fn ipproto(self) -> u32 {
        match self {
            Transport::Tcp => IPPROTO_TCP,
            Transport::Udp => IPPROTO_UDP,
        }
    }
}

/// The credential an outgoing call carries.
#[derive(Clone, Debug)]
pub enum CallCred {
    None,
    /// AUTH_SYS as root from `machine_name`.
    Root {
        machine_name: Vec<u8>,
    },
}

/// One call: program, version, procedure, credential and encoded arguments.
#[derive(Clone, Debug)]
pub struct Call<'a> {
    pub prog: u32,
    pub vers: u32,
    pub proc_: u32,
    pub cred: &'a CallCred,
    pub args: &'a [u8],
}

static NEXT_XID: AtomicU32 = AtomicU32::new(0);

fn next_xid() -> u32 {
    // Start from the clock so two processes (a restart) do not reuse each other's xids.
    let _ = NEXT_XID.compare_exchange(
        0,
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.subsec_nanos() | 1),
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    NEXT_XID.fetch_add(1, Ordering::Relaxed)
}

/// The call message (no record mark) for `xid`.
pub fn encode_call(xid: u32, call: &Call<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + call.args.len());
    let mut put = |v: u32| out.extend_from_slice(&v.to_be_bytes());
    for w in [xid, 0, 2, call.prog, call.vers, call.proc_] {
        put(w);
    }
    match call.cred {
        CallCred::None => {
            put(AUTH_NONE);
            put(0);
        }
        CallCred::Root { machine_name } => {
            let name = &machine_name[..machine_name.len().min(255)];
            let padded = (name.len() + 3) & !3;
            put(AUTH_SYS);
            put((20 + padded) as u32);
            put(0); // stamp
            put(name.len() as u32);
            out.extend_from_slice(name);
            out.resize(out.len() + padded - name.len(), 0);
            for w in [0u32, 0, 0] {
                // uid, gid, no supplementary groups
                out.extend_from_slice(&w.to_be_bytes());
            }
        }
    }
    out.extend_from_slice(&[0u8; 8]); // AUTH_NONE verifier
    out.extend_from_slice(call.args);
    out
}

/// The results of a successful reply to `xid`, or why there are none. `Ok(None)` means the
/// message is a reply to another xid (a late retransmission) and should be skipped.
pub fn decode_reply(xid: u32, msg: &[u8]) -> Result<Option<&[u8]>, ClientError> {
    let mut r = XdrReader::new(msg);
    let (Some(got), Some(mtype)) = (r.u32(), r.u32()) else {
        return Err(ClientError::BadReply);
    };
    if got != xid || mtype != 1 {
        return Ok(None);
    }
    match r.u32().ok_or(ClientError::BadReply)? {
        0 => {
            r.u32().ok_or(ClientError::BadReply)?; // verifier flavor
            r.opaque(400).ok_or(ClientError::BadReply)?;
            match r.u32().ok_or(ClientError::BadReply)? {
                0 => Ok(Some(msg.get(r.position()..).unwrap_or(&[]))),
                stat => Err(ClientError::Refused(stat)),
            }
        }
        _ => Err(ClientError::Refused(r.u32().ok_or(ClientError::BadReply)?)),
    }
}

/// Makes one call to `addr` and returns the reply's results.
pub async fn call(
    addr: SocketAddr,
    transport: Transport,
    call: &Call<'_>,
    timeout: Duration,
) -> Result<Vec<u8>, ClientError> {
    let xid = next_xid();
    let msg = encode_call(xid, call);
    let exchange = async {
        match transport {
            Transport::Tcp => call_tcp(addr, xid, msg).await,
            Transport::Udp => call_udp(addr, xid, msg).await,
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| ClientError::Timeout(timeout))?
}

async fn call_tcp(addr: SocketAddr, xid: u32, msg: Vec<u8>) -> Result<Vec<u8>, ClientError> {
    let mut stream = TcpStream::connect(addr).await?;
    let mut rec = vec![0u8; 4];
    rec.extend_from_slice(&msg);
    record::seal_record(&mut rec);
    stream.write_all(&rec).await?;
    let mut buf = Vec::new();
    loop {
        if !record::read_record(&mut stream, &mut buf, MAX_REPLY)
            .await
            .map_err(|_| ClientError::BadReply)?
        {
            return Err(ClientError::BadReply);
        }
        if let Some(results) = decode_reply(xid, &buf)? {
            return Ok(results.to_vec());
        }
    }
}

async fn call_udp(addr: SocketAddr, xid: u32, msg: Vec<u8>) -> Result<Vec<u8>, ClientError> {
    let local: SocketAddr = if addr.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(addr).await?;
    socket.send(&msg).await?;
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let n = socket.recv(&mut buf).await?;
        if let Some(results) = decode_reply(xid, &buf[..n])? {
            return Ok(results.to_vec());
        }
    }
}

/// Asks the portmapper at `portmapper` where `prog`/`vers` listens over `transport`
/// (the GETPORT call itself goes over TCP).
pub async fn getport(
    portmapper: SocketAddr,
    prog: u32,
    vers: u32,
    transport: Transport,
    timeout: Duration,
) -> Result<u16, ClientError> {
    let args: Vec<u8> = [prog, vers, transport.ipproto(), 0]
        .iter()
        .flat_map(|w| w.to_be_bytes())
        .collect();
    let call_ = Call {
        prog: portmap::PROGRAM,
        vers: 2,
        proc_: 3,
        cred: &CallCred::None,
        args: &args,
    };
    let results = call(portmapper, Transport::Tcp, &call_, timeout).await?;
    let port = XdrReader::new(&results)
        .u32()
        .ok_or(ClientError::BadReply)?;
    match u16::try_from(port) {
        Ok(0) => Err(ClientError::NotRegistered),
        Ok(p) => Ok(p),
        Err(_) => Err(ClientError::BadReply),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Credential, decode_call};

    #[test]
    fn encoded_calls_decode_with_their_credential() {
        let cred = CallCred::Root {
            machine_name: b"server".to_vec(),
        };
        let c = Call {
            prog: 100021,
            vers: 4,
            proc_: 5,
            cred: &cred,
            args: b"ARGS",
        };
        let msg = encode_call(42, &c);
        let h = decode_call(&msg).unwrap();
        assert_eq!((h.xid, h.prog, h.vers, h.proc_), (42, 100021, 4, 5));
        let Credential::Sys(s) = h.credential else {
            panic!("expected AUTH_SYS")
        };
        assert_eq!((s.uid, s.machine_name.as_slice()), (0, &b"server"[..]));
        assert_eq!(&msg[h.args_offset..], b"ARGS");
    }

    #[test]
    fn replies_decode_or_fail_without_panicking() {
        let mut ok = Vec::new();
        crate::message::encode_reply_header(7, &crate::Reply::Success(vec![]), &mut ok);
        let mut msg = ok;
        msg.extend_from_slice(b"RES!");
        assert_eq!(decode_reply(7, &msg).unwrap(), Some(&b"RES!"[..]));
        assert_eq!(decode_reply(8, &msg).unwrap(), None);
        for len in 0..msg.len() - 4 {
            let _ = decode_reply(7, &msg[..len]);
        }
        let mut garbage = Vec::new();
        crate::message::encode_reply_header(7, &crate::Reply::GarbageArgs, &mut garbage);
        assert!(matches!(
            decode_reply(7, &garbage),
            Err(ClientError::Refused(4))
        ));
    }
}
