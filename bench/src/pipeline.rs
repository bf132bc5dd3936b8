//! A small pipelining NFSv3 client: one TCP connection, ONC RPC record marking, AUTH_SYS as
//! root, and exactly `depth` calls outstanding (send `depth`, then one more for every reply).
//!
//! `nfs3_client` sends one call and waits for its reply, so it cannot show what a server does
//! with many calls in flight on one connection. This client is a single thread with a blocking
//! socket: it writes the first `depth` calls in one `write`, then reads whatever replies have
//! arrived (one `read` often brings many), matches each to its call by xid (replies may come in
//! any order), checks the RPC accept status, hands the result to the caller's check, and writes
//! the replacement calls for all those replies in one `write`. No locks, no wake-ups between
//! threads: on loopback it is far faster than the servers it measures (see
//! docs/benchmarks.md). Every read and write has a timeout, so a silent server ends the run
//! with an error.
//!
//! Calls are small (< 1 KiB) and `depth` is bounded by [`MAX_DEPTH`], so the calls in flight
//! always fit the socket buffers and writing while the server writes replies cannot deadlock.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use nfs3_types::rpc::opaque_auth;
use nfs3_types::xdr_codec::Pack;
use tokio::net::TcpSocket;

use crate::client::{CALL_TIMEOUT, Endpoint};

/// Upper bound for calls in flight.
pub const MAX_DEPTH: usize = 1024;
/// Largest reply record accepted (a guard against a garbage length).
const MAX_RECORD: usize = 1 << 20;
const LAST_FRAGMENT: u32 = 0x8000_0000;
const NFS_PROGRAM: u32 = 100_003;
const NFS_V3: u32 = 3;

/// The NFSv3 procedures this client sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proc {
    Null = 0,
    Getattr = 1,
    Lookup = 3,
    Access = 4,
    Create = 8,
    Remove = 12,
}

impl Proc {
    pub fn name(self) -> &'static str {
        match self {
            Self::Null => "NULL",
            Self::Getattr => "GETATTR",
            Self::Lookup => "LOOKUP",
            Self::Access => "ACCESS",
            Self::Create => "CREATE",
            Self::Remove => "REMOVE",
        }
    }
}

/// Appends one call record (record mark, RPC header, credential, arguments) to `out`.
/// `cred_verf` is the packed credential followed by the packed verifier.
pub fn encode_call(
    out: &mut Vec<u8>,
    xid: u32,
    proc: Proc,
    cred_verf: &[u8],
    args: impl FnOnce(&mut Vec<u8>) -> Result<()>,
) -> Result<()> {
    let start = out.len();
    out.extend_from_slice(&[0; 4]); // record mark, patched below
    for word in [xid, 0 /* CALL */, 2, NFS_PROGRAM, NFS_V3, proc as u32] {
        out.extend_from_slice(&word.to_be_bytes());
    }
    out.extend_from_slice(cred_verf);
    args(out)?;
    let len = u32::try_from(out.len() - start - 4).context("call too large")?;
    if len & LAST_FRAGMENT != 0 {
        bail!("call too large");
    }
    out[start..start + 4].copy_from_slice(&(len | LAST_FRAGMENT).to_be_bytes());
    Ok(())
}

/// Packs `value` (XDR) onto `out`.
pub fn pack(out: &mut Vec<u8>, value: &impl Pack) -> Result<()> {
    value.pack(out).map_err(|e| anyhow!("XDR encoding: {e}"))?;
    Ok(())
}

/// The first complete record at the start of `buf` and the number of bytes it used (record
/// marks included), or `None` if more bytes are needed. A record of several fragments is joined.
pub fn take_record(buf: &[u8]) -> Result<Option<(Cow<'_, [u8]>, usize)>> {
    let mut pos = 0;
    let mut parts: Vec<(usize, usize)> = Vec::new();
    let mut total = 0;
    loop {
        let Some(mark) = buf.get(pos..pos + 4) else {
            return Ok(None);
        };
        let mark = u32::from_be_bytes(mark.try_into().expect("4 bytes"));
        let len = (mark & !LAST_FRAGMENT) as usize;
        total += len;
        if total > MAX_RECORD {
            bail!("reply record of more than {MAX_RECORD} bytes: the stream is out of step");
        }
        let body = pos + 4..pos + 4 + len;
        if buf.len() < body.end {
            return Ok(None);
        }
        parts.push((body.start, body.end));
        pos = body.end;
        if mark & LAST_FRAGMENT != 0 {
            break;
        }
    }
    let record = if let [(s, e)] = parts[..] {
        Cow::Borrowed(&buf[s..e])
    } else {
        Cow::Owned(
            parts
                .iter()
                .flat_map(|&(s, e)| &buf[s..e])
                .copied()
                .collect(),
        )
    };
    Ok(Some((record, pos)))
}

fn word(rec: &[u8], at: usize) -> Result<u32> {
    rec.get(at..at + 4)
        .map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")))
        .ok_or_else(|| anyhow!("reply truncated at byte {at}"))
}

/// Splits an RPC reply into its xid and the procedure's results (after an accepted SUCCESS).
/// The outer error is a malformed reply; the inner one a reply that is well formed but says the
/// call failed at the RPC level (the caller adds the procedure and the file).
pub fn parse_reply(rec: &[u8]) -> Result<(u32, Result<&[u8], String>)> {
    let xid = word(rec, 0)?;
    if word(rec, 4)? != 1 {
        bail!("xid {xid}: a CALL where a REPLY was expected");
    }
    let outcome = match word(rec, 8)? {
        0 => {
            // MSG_ACCEPTED: verifier (flavor, opaque body), then accept_stat.
            let verf_len = word(rec, 16)? as usize;
            let at = 20 + verf_len.div_ceil(4) * 4;
            match word(rec, at)? {
                0 => Ok(&rec[at + 4..]),
                1 => Err("RPC PROG_UNAVAIL".to_string()),
                2 => Err(format!(
                    "RPC PROG_MISMATCH (versions {}..{})",
                    word(rec, at + 4)?,
                    word(rec, at + 8)?
                )),
                3 => Err("RPC PROC_UNAVAIL".to_string()),
                4 => Err("RPC GARBAGE_ARGS".to_string()),
                5 => Err("RPC SYSTEM_ERR".to_string()),
                s => Err(format!("RPC accept status {s}")),
            }
        }
        1 => match word(rec, 12)? {
            0 => Err("RPC MSG_DENIED: RPC_MISMATCH".to_string()),
            1 => Err(format!("RPC MSG_DENIED: AUTH_ERROR {}", word(rec, 16)?)),
            s => Err(format!("RPC MSG_DENIED, reject status {s}")),
        },
        s => bail!("xid {xid}: reply status {s}"),
    };
    Ok((xid, outcome))
}

/// Calls in flight: xid -> index of the item the call was for.
#[derive(Debug, Default)]
pub struct InFlight {
    calls: HashMap<u32, usize>,
}

impl InFlight {
    pub fn insert(&mut self, xid: u32, item: usize) {
        let old = self.calls.insert(xid, item);
        debug_assert!(old.is_none(), "xid {xid} reused while in flight");
    }

    /// The item whose call had `xid`; an error for a reply nobody is waiting for (unknown or
    /// duplicate xid).
    pub fn complete(&mut self, xid: u32) -> Result<usize> {
        self.calls
            .remove(&xid)
            .ok_or_else(|| anyhow!("reply with xid {xid} matches no call in flight"))
    }

    pub fn len(&self) -> usize {
        self.calls.len()
    }

    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }
}

/// One connection to a server's NFS port.
pub struct Pipe {
    stream: TcpStream,
    cred_verf: Vec<u8>,
    next_xid: u32,
    rbuf: Vec<u8>,
    rpos: usize,
    rend: usize,
}

/// Connects to `ep`'s NFS port (loopback only), from a port below 1024 if the endpoint asks.
pub async fn connect(ep: &Endpoint) -> Result<Pipe> {
    let addr = SocketAddr::new(ep.addr, ep.nfs_port);
    if !addr.ip().is_loopback() {
        bail!("{addr} is not a loopback address");
    }
    let connect_from = |port: u16| async move {
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port))?;
        socket.connect(addr).await
    };
    let stream = if ep.privileged_port {
        let mut found = None;
        for port in (600..1024).rev() {
            match connect_from(port).await {
                Ok(s) => {
                    found = Some(s);
                    break;
                }
                Err(e) if e.kind() == ErrorKind::AddrInUse => {}
                Err(e) => return Err(e).with_context(|| format!("connect to {addr}")),
            }
        }
        found.ok_or_else(|| anyhow!("connect to {addr}: no free privileged port"))?
    } else {
        tokio::time::timeout(CALL_TIMEOUT, connect_from(0))
            .await
            .map_err(|_| anyhow!("connect to {addr}: timed out"))?
            .with_context(|| format!("connect to {addr}"))?
    };
    let stream = stream.into_std()?;
    stream.set_nonblocking(false)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(CALL_TIMEOUT))?;
    stream.set_write_timeout(Some(CALL_TIMEOUT))?;
    Pipe::new(stream)
}

impl Pipe {
    pub fn new(stream: TcpStream) -> Result<Self> {
        let mut cred_verf = Vec::new();
        pack(&mut cred_verf, &crate::client::credential())?;
        pack(&mut cred_verf, &opaque_auth::default())?;
        Ok(Self {
            stream,
            cred_verf,
            // Distinct connections start at distinct xids, which makes packet traces readable.
            next_xid: std::process::id().wrapping_mul(0x9e37_79b9),
            rbuf: vec![0; 256 * 1024],
            rpos: 0,
            rend: 0,
        })
    }

    /// Sends `n` calls of `proc`, `depth` of them in flight at any time, and returns the time
    /// from the first send to the last reply. `args(i, out)` appends the XDR arguments of call
    /// `i`; `check(i, results)` gets the results of call `i` (after the RPC header, starting
    /// with the NFS status for every procedure but NULL) and fails the run if they are wrong.
    pub fn run(
        &mut self,
        proc: Proc,
        n: usize,
        depth: usize,
        mut args: impl FnMut(usize, &mut Vec<u8>) -> Result<()>,
        mut check: impl FnMut(usize, &[u8]) -> Result<()>,
    ) -> Result<Duration> {
        if depth == 0 || depth > MAX_DEPTH {
            bail!("calls in flight must be 1..={MAX_DEPTH}, not {depth}");
        }
        let Self {
            stream,
            cred_verf,
            next_xid,
            rbuf,
            rpos,
            rend,
        } = self;
        let mut inflight = InFlight::default();
        let mut out = Vec::with_capacity(depth * 256);
        let mut sent = 0;
        let mut done = 0;
        let mut send = |out: &mut Vec<u8>, inflight: &mut InFlight, i: usize| -> Result<()> {
            let xid = *next_xid;
            *next_xid = next_xid.wrapping_add(1);
            encode_call(out, xid, proc, cred_verf, |o| args(i, o))?;
            inflight.insert(xid, i);
            Ok(())
        };

        let start = Instant::now();
        while sent < n.min(depth) {
            send(&mut out, &mut inflight, sent)?;
            sent += 1;
        }
        while done < n {
            if !out.is_empty() {
                stream
                    .write_all(&out)
                    .with_context(|| format!("{}: sending calls", proc.name()))?;
                out.clear();
            }
            // Read until at least one complete record is buffered.
            loop {
                if take_record(&rbuf[*rpos..*rend])?.is_some() {
                    break;
                }
                if *rpos > 0 {
                    rbuf.copy_within(*rpos..*rend, 0);
                    *rend -= *rpos;
                    *rpos = 0;
                }
                if *rend == rbuf.len() {
                    rbuf.resize(rbuf.len() * 2, 0);
                }
                match stream.read(&mut rbuf[*rend..]) {
                    Ok(0) => bail!(
                        "{}: server closed the connection with {} calls in flight",
                        proc.name(),
                        inflight.len()
                    ),
                    Ok(got) => *rend += got,
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                        bail!(
                            "{}: no reply within {} s ({} calls in flight, {done} of {n} done)",
                            proc.name(),
                            CALL_TIMEOUT.as_secs(),
                            inflight.len()
                        )
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => return Err(e).context(format!("{}: reading replies", proc.name())),
                }
            }
            // Every complete reply buffered: check it, queue its replacement.
            while let Some((rec, used)) = take_record(&rbuf[*rpos..*rend])? {
                let (xid, outcome) = parse_reply(&rec)
                    .with_context(|| format!("{}: malformed reply", proc.name()))?;
                let i = inflight
                    .complete(xid)
                    .with_context(|| proc.name().to_string())?;
                let results = outcome.map_err(|e| anyhow!("{} (call {i}): {e}", proc.name()))?;
                check(i, results)?;
                *rpos += used;
                done += 1;
                if sent < n {
                    send(&mut out, &mut inflight, sent)?;
                    sent += 1;
                }
            }
        }
        let elapsed = start.elapsed();
        debug_assert!(inflight.is_empty());
        Ok(elapsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(xid: u32, words: &[u32]) -> Vec<u8> {
        let mut rec = Vec::new();
        for w in [xid, 1].iter().chain(words) {
            rec.extend_from_slice(&w.to_be_bytes());
        }
        rec
    }

    fn framed(rec: &[u8]) -> Vec<u8> {
        let mut out = (rec.len() as u32 | LAST_FRAGMENT).to_be_bytes().to_vec();
        out.extend_from_slice(rec);
        out
    }

    #[test]
    fn call_is_framed_and_encoded() {
        let mut out = vec![0xaa]; // something already queued stays untouched
        encode_call(&mut out, 7, Proc::Getattr, &[1, 2, 3, 4], |o| {
            o.extend_from_slice(&[9; 8]);
            Ok(())
        })
        .unwrap();
        assert_eq!(out[0], 0xaa);
        let (rec, used) = take_record(&out[1..]).unwrap().unwrap();
        assert_eq!(used, out.len() - 1);
        assert_eq!(rec.len(), 6 * 4 + 4 + 8);
        assert_eq!(word(&rec, 0).unwrap(), 7);
        assert_eq!(word(&rec, 4).unwrap(), 0); // CALL
        assert_eq!(word(&rec, 12).unwrap(), NFS_PROGRAM);
        assert_eq!(word(&rec, 20).unwrap(), 1); // GETATTR
        assert_eq!(&rec[24..28], &[1, 2, 3, 4]);
    }

    #[test]
    fn records_need_all_their_bytes() {
        let stream = framed(&reply(1, &[0, 0, 0, 0, 5]));
        for cut in 0..stream.len() {
            assert!(take_record(&stream[..cut]).unwrap().is_none(), "cut {cut}");
        }
        let mut two = stream.clone();
        two.extend_from_slice(&framed(&reply(2, &[0, 0, 0, 0])));
        let (rec, used) = take_record(&two).unwrap().unwrap();
        assert_eq!(used, stream.len());
        assert_eq!(word(&rec, 0).unwrap(), 1);
        let (rec, _) = take_record(&two[used..]).unwrap().unwrap();
        assert_eq!(word(&rec, 0).unwrap(), 2);
    }

    #[test]
    fn fragments_are_joined() {
        let rec = reply(3, &[0, 0, 0, 0, 42]);
        let mut stream = (8u32).to_be_bytes().to_vec(); // not the last fragment
        stream.extend_from_slice(&rec[..8]);
        stream.extend_from_slice(&framed(&rec[8..]));
        let (joined, used) = take_record(&stream).unwrap().unwrap();
        assert_eq!(used, stream.len());
        assert_eq!(&joined[..], &rec[..]);
        assert!(take_record(&stream[..stream.len() - 1]).unwrap().is_none());
    }

    #[test]
    fn oversized_record_is_an_error() {
        let stream = (LAST_FRAGMENT | (MAX_RECORD as u32 + 1)).to_be_bytes();
        assert!(take_record(&stream).is_err());
    }

    #[test]
    fn replies_are_parsed() {
        // Accepted, AUTH_NULL verifier, SUCCESS, then results.
        let ok = reply(9, &[0, 0, 0, 0, 70]);
        let (xid, res) = parse_reply(&ok).unwrap();
        assert_eq!(xid, 9);
        assert_eq!(res.unwrap(), &70u32.to_be_bytes());
        // A verifier with a 5-byte body (padded to 8) is skipped.
        let verf = reply(9, &[0, 1, 5, 0, 0, 0, 71]);
        assert_eq!(parse_reply(&verf).unwrap().1.unwrap(), &71u32.to_be_bytes());
        let garbage = reply(10, &[0, 0, 0, 4]);
        assert!(
            parse_reply(&garbage)
                .unwrap()
                .1
                .unwrap_err()
                .contains("GARBAGE_ARGS")
        );
        let denied = reply(11, &[1, 1, 2]);
        assert!(
            parse_reply(&denied)
                .unwrap()
                .1
                .unwrap_err()
                .contains("AUTH_ERROR 2")
        );
        assert!(parse_reply(&ok[..10]).is_err());
    }

    #[test]
    fn replies_match_calls_in_any_order() {
        let mut f = InFlight::default();
        for (xid, item) in [(u32::MAX, 0), (0, 1), (1, 2)] {
            f.insert(xid, item);
        }
        assert_eq!(f.complete(1).unwrap(), 2);
        assert_eq!(f.complete(u32::MAX).unwrap(), 0);
        assert!(f.complete(1).is_err(), "duplicate reply");
        assert!(f.complete(77).is_err(), "unknown xid");
        assert_eq!(f.complete(0).unwrap(), 1);
        assert!(f.is_empty());
    }

    /// The whole loop against a tiny in-process server that answers in reverse order.
    #[test]
    fn run_keeps_depth_in_flight_and_matches_reordered_replies() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let depth = 4;
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let mut max_seen = 0;
            let mut pending: Vec<(u32, u32)> = Vec::new();
            let mut answered = 0;
            while answered < 10 {
                let got = s.read(&mut chunk).unwrap();
                assert!(got > 0);
                buf.extend_from_slice(&chunk[..got]);
                while let Some((rec, used)) = take_record(&buf).unwrap() {
                    let xid = word(&rec, 0).unwrap();
                    let arg = word(&rec, rec.len() - 4).unwrap();
                    pending.push((xid, arg));
                    buf.drain(..used);
                }
                max_seen = max_seen.max(pending.len());
                // Answer only when the client has filled its window (or at the tail end).
                if pending.len() == depth || answered + pending.len() == 10 {
                    let mut out = Vec::new();
                    for (xid, arg) in pending.drain(..).rev() {
                        out.extend_from_slice(&framed(&reply(xid, &[0, 0, 0, 0, arg * 10])));
                        answered += 1;
                    }
                    s.write_all(&out).unwrap();
                }
            }
            max_seen
        });
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut pipe = Pipe::new(stream).unwrap();
        let mut seen = [false; 10];
        pipe.run(
            Proc::Access,
            10,
            depth,
            |i, o| pack(o, &(i as u32)),
            |i, res| {
                assert_eq!(res, &(i as u32 * 10).to_be_bytes());
                assert!(!seen[i]);
                seen[i] = true;
                Ok(())
            },
        )
        .unwrap();
        assert!(seen.iter().all(|&s| s));
        assert_eq!(server.join().unwrap(), depth);
    }
}
