//! Portmapper v2 (RFC 1833 section 3): NULL, GETPORT and DUMP answer from a fixed table of the
//! programs this process serves; SET and UNSET are refused (nobody else registers with us) and
//! CALLIT is not offered.

use std::sync::Arc;

use crate::message::{Reply, XdrReader};
use crate::server::{CallArgs, CallContext, ReplySender, RpcService};

pub const PROGRAM: u32 = 100_000;
pub const IPPROTO_TCP: u32 = 6;
pub const IPPROTO_UDP: u32 = 17;

/// One registration: program, version, protocol, port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub prog: u32,
    pub vers: u32,
    pub prot: u32,
    pub port: u32,
}

/// The portmapper service.
pub struct Portmapper {
    mappings: Arc<Vec<Mapping>>,
}

impl Portmapper {
    pub fn new(mappings: Vec<Mapping>) -> Self {
        Self {
            mappings: Arc::new(mappings),
        }
    }

    /// The reply to a call, computed synchronously (the table never changes).
    pub fn answer(&self, proc_: u32, args: &[u8]) -> Reply {
        let word = |v: u32| v.to_be_bytes().to_vec();
        match proc_ {
            0 => Reply::Success(Vec::new()),
            // SET / UNSET: answer FALSE, registrations are fixed.
            1 | 2 => {
                if args.len() < 16 {
                    return Reply::GarbageArgs;
                }
                Reply::Success(word(0))
            }
            3 => {
                let mut r = XdrReader::new(args);
                let (Some(prog), Some(vers), Some(prot), Some(_port)) =
                    (r.u32(), r.u32(), r.u32(), r.u32())
                else {
                    return Reply::GarbageArgs;
                };
                let port = self
                    .mappings
                    .iter()
                    .find(|m| m.prog == prog && m.vers == vers && m.prot == prot)
                    .map_or(0, |m| m.port);
                Reply::Success(word(port))
            }
            4 => {
                let mut out = Vec::with_capacity(self.mappings.len() * 20 + 4);
                for m in self.mappings.iter() {
                    for v in [1, m.prog, m.vers, m.prot, m.port] {
                        out.extend_from_slice(&v.to_be_bytes());
                    }
                }
                out.extend_from_slice(&0u32.to_be_bytes());
                Reply::Success(out)
            }
            _ => Reply::ProcUnavail,
        }
    }
}

impl RpcService for Portmapper {
    fn program(&self) -> u32 {
        PROGRAM
    }

    fn versions(&self) -> (u32, u32) {
        (2, 2)
    }

    fn call_names(&self, _vers: u32, proc_: u32) -> crate::CallNames {
        const NAMES: [&str; 6] = ["NULL", "SET", "UNSET", "GETPORT", "DUMP", "CALLIT"];
        crate::CallNames {
            program: "portmap",
            version: "2",
            procedure: NAMES.get(proc_ as usize).copied().unwrap_or("unknown"),
        }
    }

    fn call(&self, ctx: CallContext, args: CallArgs, reply: ReplySender) {
        reply.send(self.answer(ctx.proc_, args.bytes()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Portmapper {
        Portmapper::new(vec![Mapping {
            prog: 100003,
            vers: 3,
            prot: IPPROTO_TCP,
            port: 2049,
        }])
    }

    fn args(words: &[u32]) -> Vec<u8> {
        words.iter().flat_map(|w| w.to_be_bytes()).collect()
    }

    #[test]
    fn getport_finds_tcp_registrations_only() {
        let pm = table();
        let Reply::Success(r) = pm.answer(3, &args(&[100003, 3, IPPROTO_TCP, 0])) else {
            panic!()
        };
        assert_eq!(r, 2049u32.to_be_bytes());
        let Reply::Success(r) = pm.answer(3, &args(&[100003, 3, IPPROTO_UDP, 0])) else {
            panic!()
        };
        assert_eq!(r, 0u32.to_be_bytes());
    }

    #[test]
    fn set_is_refused_and_callit_unavailable() {
        let pm = table();
        let Reply::Success(r) = pm.answer(1, &args(&[1, 1, 6, 99])) else {
            panic!()
        };
        assert_eq!(r, 0u32.to_be_bytes());
        assert!(matches!(pm.answer(5, &[]), Reply::ProcUnavail));
        assert!(matches!(pm.answer(3, &[0, 0]), Reply::GarbageArgs));
    }
}
