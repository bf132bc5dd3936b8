//! Who may change another host's lock state: the rules for the calls that release locks or
//! restart our NSM state without being the lock's owner (SM_NOTIFY, NLM FREE_ALL,
//! SM_SIMU_CRASH), and a log that says so at a bounded rate.
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
use std::sync::Mutex;
use std::time::{Duration, Instant};

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

/// At most one log line per period for one reason; counts the occurrences between lines.
pub struct LogLimit {
    every: Duration,
    state: Mutex<LimitState>,
}

#[derive(Default)]
struct LimitState {
    last: Option<Instant>,
    held_back: u64,
    total: u64,
}

impl LogLimit {
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            state: Mutex::new(LimitState::default()),
        }
    }

    /// Counts one occurrence. `Some((held_back, total))` when it may be logged now:
    /// how many occurrences were not logged since the last line, and how many there were.
    pub fn hit(&self) -> Option<(u64, u64)> {
        self.hit_at(Instant::now())
    }

    fn hit_at(&self, now: Instant) -> Option<(u64, u64)> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.total += 1;
        if s.last.is_some_and(|t| now.duration_since(t) < self.every) {
            s.held_back += 1;
            return None;
        }
        s.last = Some(now);
        Some((std::mem::take(&mut s.held_back), s.total))
    }
}

/// The period of the logs of ignored calls.
pub const LOG_EVERY: Duration = Duration::from_secs(60);

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

    #[test]
    fn one_line_per_period_with_what_was_held_back() {
        let limit = LogLimit::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(limit.hit_at(t0), Some((0, 1)));
        assert_eq!(limit.hit_at(t0 + Duration::from_secs(1)), None);
        assert_eq!(limit.hit_at(t0 + Duration::from_secs(9)), None);
        assert_eq!(limit.hit_at(t0 + Duration::from_secs(10)), Some((2, 4)));
        assert_eq!(limit.hit_at(t0 + Duration::from_secs(11)), None);
    }
}
