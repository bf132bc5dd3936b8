//! Who may change another host's lock state: the rules for the calls that release locks or
//! restart our NSM state without being the lock's owner (SM_NOTIFY, NLM FREE_ALL,
//! SM_SIMU_CRASH); refusals are logged through `oncrpc::throttle`.
//!
//! - SM_NOTIFY ("I rebooted") is honoured for a host only when it comes from an address that
//!   host's lock requests came from, or from a local peer. The Linux rpc.statd sends it from
//!   the host's own address, which is where its kernel's lock requests came from too.
//! - FREE_ALL and SM_SIMU_CRASH are meant for the local statd (ours is in-process, so in
//!   practice nobody sends them) and are honoured only from a local peer.
//!
//! A local peer is `127.0.0.1` or `::1`, or the address the server is bound to when that is
//! a specific one; the rest of 127/8 is not (tests use `127.0.0.2` as a foreign host). An
//! IPv4-mapped IPv6 address is the same as its IPv4 form everywhere here.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The address in the form addresses are compared in: `::ffff:a.b.c.d` is `a.b.c.d`.
pub fn canonical(addr: IpAddr) -> IpAddr {
    addr.to_canonical()
}

/// Which peers count as this machine.
#[derive(Clone, Copy, Debug)]
pub struct LocalPeers {
    /// The address the server listens on, when it is a specific one.
    bound: Option<IpAddr>,
}

impl LocalPeers {
    /// The local peers of a server bound to `bind` (`0.0.0.0` or `::`: loopback only).
    pub fn new(bind: IpAddr) -> Self {
        let bind = canonical(bind);
        Self {
            bound: (!bind.is_unspecified()).then_some(bind),
        }
    }

    pub fn contains(&self, peer: IpAddr) -> bool {
        let peer = canonical(peer);
        peer == IpAddr::V4(Ipv4Addr::LOCALHOST)
            || peer == IpAddr::V6(Ipv6Addr::LOCALHOST)
            || Some(peer) == self.bound
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn loopback_and_the_bound_address_are_local_in_either_form() {
        let any = LocalPeers::new(ip("0.0.0.0"));
        assert!(any.contains(ip("127.0.0.1")));
        assert!(any.contains(ip("::1")));
        assert!(any.contains(ip("::ffff:127.0.0.1")));
        assert!(!any.contains(ip("127.0.0.2")));
        assert!(!any.contains(ip("0.0.0.0")));
        assert!(!any.contains(ip("10.1.2.3")));
        let pod = LocalPeers::new(ip("::ffff:10.1.2.3"));
        assert!(pod.contains(ip("10.1.2.3")));
        assert!(pod.contains(ip("::ffff:10.1.2.3")));
        assert!(!pod.contains(ip("10.1.2.4")));
        assert!(LocalPeers::new(ip("::")).bound.is_none());
    }

    #[test]
    fn mapped_addresses_compare_equal_to_their_ipv4_form() {
        assert_eq!(canonical(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(canonical(ip("2001:db8::1")), ip("2001:db8::1"));
    }
}
