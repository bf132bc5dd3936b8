//! The RPC call/reply envelope (RFC 5531 section 9) as pure functions over byte buffers.
//!
//! Decoding is strict and bounded: auth bodies may not exceed 400 bytes (the RFC's limit),
//! AUTH_SYS machine names 255 bytes and group lists 16 entries.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

use thiserror::Error;

const MSG_CALL: u32 = 0;
const MSG_REPLY: u32 = 1;
const MSG_ACCEPTED: u32 = 0;
const MSG_DENIED: u32 = 1;
const RPC_VERSION: u32 = 2;
/// RFC 5531: "the opaque data ... is limited to 400 bytes".
const MAX_AUTH_BYTES: usize = 400;
const MAX_MACHINE_NAME: usize = 255;
const MAX_GROUPS: usize = 16;

pub const AUTH_NONE: u32 = 0;
pub const AUTH_SYS: u32 = 1;

/// `auth_stat` values used in MSG_DENIED replies.
pub const AUTH_BADCRED: u32 = 1;
pub const AUTH_TOOWEAK: u32 = 5;

/// AUTH_SYS (a.k.a. AUTH_UNIX) credentials as sent by the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthSys {
    pub stamp: u32,
    pub machine_name: Vec<u8>,
    pub uid: u32,
    pub gid: u32,
    pub gids: Vec<u32>,
}

/// The caller's credential.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credential {
    None,
    Sys(AuthSys),
}

/// A decoded call header; the procedure arguments follow at `args_offset`.
#[derive(Clone, Debug)]
pub struct CallHeader {
    pub xid: u32,
    pub prog: u32,
    pub vers: u32,
    pub proc_: u32,
    pub credential: Credential,
    pub args_offset: usize,
}

/// Why a message could not be taken as a call.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    /// Not even an xid and message type: nothing can be replied, the connection is closed.
    #[error("message too short to carry an RPC header")]
    Unreplyable,
    /// A reply or unknown message type where a call was expected: ignored.
    #[error("message type {0} is not a call")]
    NotACall(u32),
    /// The call asks for an RPC version other than 2.
    #[error("RPC version {0} is not supported")]
    RpcMismatch(u32),
    /// The credential or verifier is malformed.
    #[error("malformed credential")]
    BadCredential,
    /// A credential flavor we do not accept.
    #[error("credential flavor {0} is not supported")]
    UnsupportedFlavor(u32),
}

/// A minimal XDR reader over a byte slice; every read is bounds-checked.
#[derive(Debug)]
pub struct XdrReader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> XdrReader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn u32(&mut self) -> Option<u32> {
        let bytes = self.buf.get(self.pos..self.pos + 4)?;
        self.pos += 4;
        Some(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    /// Variable-length opaque of at most `max` bytes, padding skipped.
    pub fn opaque(&mut self, max: usize) -> Option<&'a [u8]> {
        let len = self.u32()? as usize;
        if len > max {
            return None;
        }
        let padded = len.checked_add(3)? & !3;
        let data = self.buf.get(self.pos..self.pos + len)?;
        self.buf.get(self.pos..self.pos + padded)?;
        self.pos += padded;
        Some(data)
    }
}

/// Decodes a call header from a whole record.
pub fn decode_call(record: &[u8]) -> Result<CallHeader, DecodeError> {
    let mut r = XdrReader::new(record);
    let xid = r.u32().ok_or(DecodeError::Unreplyable)?;
    let mtype = r.u32().ok_or(DecodeError::Unreplyable)?;
    if mtype != MSG_CALL {
        return Err(DecodeError::NotACall(mtype));
    }
    let rpcvers = r.u32().ok_or(DecodeError::Unreplyable)?;
    if rpcvers != RPC_VERSION {
        return Err(DecodeError::RpcMismatch(rpcvers));
    }
    let (Some(prog), Some(vers), Some(proc_)) = (r.u32(), r.u32(), r.u32()) else {
        return Err(DecodeError::BadCredential);
    };
    let flavor = r.u32().ok_or(DecodeError::BadCredential)?;
    let body = r.opaque(MAX_AUTH_BYTES).ok_or(DecodeError::BadCredential)?;
    let credential = match flavor {
        AUTH_NONE => Credential::None,
        AUTH_SYS => Credential::Sys(decode_auth_sys(body).ok_or(DecodeError::BadCredential)?),
        other => return Err(DecodeError::UnsupportedFlavor(other)),
    };
    let _verf_flavor = r.u32().ok_or(DecodeError::BadCredential)?;
    r.opaque(MAX_AUTH_BYTES).ok_or(DecodeError::BadCredential)?;
    Ok(CallHeader {
        xid,
        prog,
        vers,
        proc_,
        credential,
        args_offset: r.position(),
    })
}

fn decode_auth_sys(body: &[u8]) -> Option<AuthSys> {
    let mut r = XdrReader::new(body);
    let stamp = r.u32()?;
    let machine_name = r.opaque(MAX_MACHINE_NAME)?.to_vec();
    let uid = r.u32()?;
    let gid = r.u32()?;
    let count = r.u32()? as usize;
    if count > MAX_GROUPS {
        return None;
    }
    let gids = (0..count).map(|_| r.u32()).collect::<Option<Vec<_>>>()?;
    Some(AuthSys {
        stamp,
        machine_name,
        uid,
        gid,
        gids,
    })
}

/// What a service answers to a call.
#[derive(Debug)]
pub enum Reply {
    /// SUCCESS with the encoded results.
    Success(Vec<u8>),
    /// SUCCESS with results that end in file data (a READ): the encoded results, then the
    /// slice's bytes and their XDR padding. Over TCP the bytes go from the page cache to the
    /// socket with `sendfile`, never through a buffer of ours.
    SuccessFile(Vec<u8>, FileSlice),
    ProgUnavail,
    ProgMismatch {
        low: u32,
        high: u32,
    },
    ProcUnavail,
    GarbageArgs,
    SystemErr,
    /// MSG_DENIED / RPC_MISMATCH (we speak version 2 only).
    RpcMismatch,
    /// MSG_DENIED / AUTH_ERROR with the given `auth_stat`.
    AuthError(u32),
}

/// Bytes of an open file that end a reply.
#[derive(Debug, Clone)]
pub struct FileSlice {
    pub fd: Arc<OwnedFd>,
    pub offset: u64,
    /// Bytes promised in the reply; if the file shrank meanwhile, the missing ones go out
    /// as zeros so the record keeps its announced length.
    pub len: u32,
}

impl FileSlice {
    /// Zero bytes after the data, to a multiple of 4.
    pub fn pad(&self) -> usize {
        (4 - self.len as usize % 4) % 4
    }

    /// Appends the bytes and their padding to `out` (UDP replies, tests): what goes on the wire.
    pub fn read_into(&self, out: &mut Vec<u8>) {
        let start = out.len();
        let len = self.len as usize;
        out.reserve(len + self.pad());
        while out.len() - start < len {
            let done = out.len() - start;
            let spare = out.spare_capacity_mut();
            // SAFETY: the kernel writes at most `len - done` bytes into the spare capacity,
            // which holds at least that many.
            let n = unsafe {
                libc::pread(
                    self.fd.as_raw_fd(),
                    spare.as_mut_ptr().cast(),
                    len - done,
                    (self.offset + done as u64) as libc::off_t,
                )
            };
            if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            if n <= 0 {
                break;
            }
            // SAFETY: the kernel initialised n more bytes.
            unsafe { out.set_len(out.len() + n as usize) };
        }
        out.resize(start + len + self.pad(), 0);
    }
}

impl Reply {
    /// The reply with any file data read into its results (for transports and callers that
    /// need the bytes).
    pub fn into_bytes(self) -> Reply {
        match self {
            Reply::SuccessFile(mut body, file) => {
                file.read_into(&mut body);
                Reply::Success(body)
            }
            other => other,
        }
    }

    /// The encoded results before any file data.
    pub fn results(&self) -> Option<&[u8]> {
        match self {
            Reply::Success(b) | Reply::SuccessFile(b, _) => Some(b),
            _ => None,
        }
    }
}

/// Encodes the reply header for `xid` (everything before the results) into `out`.
/// For [`Reply::Success`] the caller appends the results after it.
pub fn encode_reply_header(xid: u32, reply: &Reply, out: &mut Vec<u8>) {
    let mut put = |v: u32| out.extend_from_slice(&v.to_be_bytes());
    put(xid);
    put(MSG_REPLY);
    match reply {
        Reply::RpcMismatch => {
            put(MSG_DENIED);
            put(0); // RPC_MISMATCH
            put(RPC_VERSION);
            put(RPC_VERSION);
        }
        Reply::AuthError(stat) => {
            put(MSG_DENIED);
            put(1); // AUTH_ERROR
            put(*stat);
        }
        accepted => {
            put(MSG_ACCEPTED);
            put(AUTH_NONE); // verifier flavor
            put(0); // verifier length
            match accepted {
                Reply::Success(_) | Reply::SuccessFile(..) => put(0),
                Reply::ProgUnavail => put(1),
                Reply::ProgMismatch { low, high } => {
                    put(2);
                    put(*low);
                    put(*high);
                }
                Reply::ProcUnavail => put(3),
                Reply::GarbageArgs => put(4),
                _ => put(5), // SYSTEM_ERR
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(prog: u32, cred_flavor: u32, cred: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        for w in [
            7u32,
            MSG_CALL,
            2,
            prog,
            3,
            1,
            cred_flavor,
            cred.len() as u32,
        ] {
            v.extend_from_slice(&w.to_be_bytes());
        }
        v.extend_from_slice(cred);
        v.extend_from_slice(&[0u8; 8]); // AUTH_NONE verifier
        v.extend_from_slice(b"ARGS");
        v
    }

    fn auth_sys(groups: u32) -> Vec<u8> {
        let mut v = Vec::new();
        for w in [1u32, 3] {
            v.extend_from_slice(&w.to_be_bytes());
        }
        v.extend_from_slice(b"abc\0");
        for w in [1000u32, 100, groups] {
            v.extend_from_slice(&w.to_be_bytes());
        }
        for g in 0..groups {
            v.extend_from_slice(&(g + 1).to_be_bytes());
        }
        v
    }

    #[test]
    fn auth_sys_call_decodes_with_args_offset() {
        let msg = call(100003, AUTH_SYS, &auth_sys(2));
        let h = decode_call(&msg).unwrap();
        assert_eq!((h.xid, h.prog, h.vers, h.proc_), (7, 100003, 3, 1));
        assert_eq!(&msg[h.args_offset..], b"ARGS");
        let Credential::Sys(sys) = h.credential else {
            panic!("expected AUTH_SYS")
        };
        assert_eq!((sys.uid, sys.gid, sys.gids), (1000, 100, vec![1, 2]));
        assert_eq!(sys.machine_name, b"abc");
    }

    #[test]
    fn too_many_groups_is_a_bad_credential() {
        let msg = call(100003, AUTH_SYS, &auth_sys(17));
        assert_eq!(decode_call(&msg).unwrap_err(), DecodeError::BadCredential);
    }

    #[test]
    fn unknown_flavor_and_wrong_rpc_version_are_reported() {
        let msg = call(100003, 6, &[]);
        assert_eq!(
            decode_call(&msg).unwrap_err(),
            DecodeError::UnsupportedFlavor(6)
        );
        let mut msg = call(100003, AUTH_NONE, &[]);
        msg[8..12].copy_from_slice(&3u32.to_be_bytes());
        assert_eq!(decode_call(&msg).unwrap_err(), DecodeError::RpcMismatch(3));
    }

    #[test]
    fn every_truncation_of_a_call_is_an_error_not_a_panic() {
        let msg = call(100003, AUTH_SYS, &auth_sys(3));
        for len in 0..msg.len() - 4 {
            assert!(decode_call(&msg[..len]).is_err(), "prefix {len} accepted");
        }
    }

    #[test]
    fn prog_mismatch_reply_carries_the_range() {
        let mut out = Vec::new();
        encode_reply_header(9, &Reply::ProgMismatch { low: 3, high: 3 }, &mut out);
        let words: Vec<u32> = out
            .chunks(4)
            .map(|c| u32::from_be_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(words, vec![9, 1, 0, 0, 0, 2, 3, 3]);
    }
}
