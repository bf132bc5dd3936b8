//! What one client may hold, so no client can stop the server for the others or grow its
//! memory without bound:
//! - connections, in total and per client address (beyond the cap a new connection is closed
//!   at once; existing ones keep working);
//! - time: an idle connection is closed, a record must arrive in full within a deadline once its
//!   first byte came, and a reply the client does not read within a deadline closes the
//!   connection;
//! - memory: every call holds a charge of bytes (its request, then its reply, until the reply is
//!   written) against a budget per client address and a global one. A connection whose budget is
//!   spent stops being read until its replies drain (back-pressure), instead of the server
//!   buffering for it.
//!
//! [`Admission`] counts connections; [`Budget`] and [`Charge`] account bytes.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Notify;

/// The limits of one RPC server (every listening port shares them).
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest request record.
    pub max_record: usize,
    /// Calls in flight per connection before reading it pauses.
    pub max_in_flight: usize,
    /// Open TCP connections in total.
    pub max_connections: usize,
    /// Open TCP connections from one client address.
    pub max_connections_per_address: usize,
    /// A connection with no call in flight and nothing received for this long is closed.
    pub idle_timeout: Duration,
    /// Once a record's first byte arrived, the whole record must arrive within this.
    pub record_timeout: Duration,
    /// A reply the client does not take within this closes the connection.
    pub send_timeout: Duration,
    /// Bytes of requests and replies held for all clients together.
    pub max_bytes_in_flight: usize,
    /// Bytes of requests and replies held for one client address.
    pub max_bytes_per_address: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_record: 1024 * 1024 + 64 * 1024,
            max_in_flight: 64,
            max_connections: 4096,
            max_connections_per_address: 256,
            // knfsd closes idle connections after 6 minutes; clients reconnect on demand.
            idle_timeout: Duration::from_secs(360),
            record_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(120),
            max_bytes_in_flight: 256 * 1024 * 1024,
            max_bytes_per_address: 64 * 1024 * 1024,
        }
    }
}

/// A pool of bytes that calls charge and release. Taking waits while the pool is spent,
/// except that an empty pool always admits one charge (so a call larger than the whole
/// budget still runs, alone).
#[derive(Debug)]
pub struct Budget {
    used: AtomicUsize,
    limit: usize,
    freed: Notify,
    gauge: Option<Gauge>,
}

impl Budget {
    pub fn new(limit: usize, gauge: Option<Gauge>) -> Arc<Self> {
        Arc::new(Self {
            used: AtomicUsize::new(0),
            limit,
            freed: Notify::new(),
            gauge,
        })
    }

    /// Bytes charged now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    fn try_take(&self, n: usize) -> bool {
        let mut used = self.used.load(Ordering::Acquire);
        loop {
            if used != 0 && used.saturating_add(n) > self.limit {
                return false;
            }
            match self.used.compare_exchange_weak(
                used,
                used + n,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    self.moved();
                    return true;
                }
                Err(now) => used = now,
            }
        }
    }

    /// Waits until `n` bytes fit, then takes them. Returns whether it had to wait.
    async fn take(&self, n: usize) -> bool {
        let mut waited = false;
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if self.try_take(n) {
                return waited;
            }
            waited = true;
            freed.await;
        }
    }

    /// Waits until the budget is not spent (used below the limit).
    async fn wait_below_limit(&self) -> bool {
        let mut waited = false;
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if self.used() < self.limit {
                return waited;
            }
            waited = true;
            freed.await;
        }
    }

    /// Takes `n` bytes whether or not they fit (a reply larger than its reservation).
    fn force(&self, n: usize) {
        self.used.fetch_add(n, Ordering::AcqRel);
        self.moved();
    }

    fn release(&self, n: usize) {
        if n == 0 {
            return;
        }
        self.used.fetch_sub(n, Ordering::AcqRel);
        self.moved();
        self.freed.notify_waiters();
    }

    fn moved(&self) {
        if let Some(g) = &self.gauge {
            g.set(i64::try_from(self.used()).unwrap_or(i64::MAX));
        }
    }
}

/// Bytes held by one call against its address's budget and the global one; given back when
/// dropped (after the reply is written, or when the connection is gone).
#[derive(Debug)]
pub struct Charge {
    budgets: Option<(Arc<Budget>, Arc<Budget>)>,
    bytes: usize,
}

impl Charge {
    /// A charge of nothing (calls that are not accounted: tests, UDP).
    pub fn none() -> Self {
        Self {
            budgets: None,
            bytes: 0,
        }
    }

    /// Waits until `n` more bytes fit in both budgets. Returns whether it had to wait.
    pub(crate) async fn grow(
        &mut self,
        local: &Arc<Budget>,
        global: &Arc<Budget>,
        n: usize,
    ) -> bool {
        if self.budgets.is_none() {
            self.budgets = Some((Arc::clone(local), Arc::clone(global)));
        }
        // The address's budget first: a client over its own budget waits without holding
        // any of the global one.
        let a = local.take(n).await;
        let b = global.take(n).await;
        self.bytes += n;
        a || b
    }

    /// Sets the charge to `n` bytes: the reply's real size replacing an estimate.
    pub(crate) fn resize(&mut self, n: usize) {
        let Some((local, global)) = &self.budgets else {
            return;
        };
        if n > self.bytes {
            local.force(n - self.bytes);
            global.force(n - self.bytes);
        } else {
            local.release(self.bytes - n);
            global.release(self.bytes - n);
        }
        self.bytes = n;
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        if let Some((local, global)) = &self.budgets {
            local.release(self.bytes);
            global.release(self.bytes);
        }
    }
}

/// Waits until neither budget is spent; returns whether it had to wait.
pub(crate) async fn wait_for_room(local: &Budget, global: &Budget) -> bool {
    let a = local.wait_below_limit().await;
    let b = global.wait_below_limit().await;
    a || b
}

/// Why a new connection was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    MaxConnections,
    MaxConnectionsPerAddress,
}

impl Refusal {
    pub fn reason(self) -> &'static str {
        match self {
            Self::MaxConnections => "max_connections",
            Self::MaxConnectionsPerAddress => "max_connections_per_address",
        }
    }
}

/// One client address: its open connections and its byte budget.
struct Peer {
    connections: usize,
    budget: Arc<Budget>,
}

/// Counts open connections, in total and per address, and hands out each address's budget.
pub struct Admission {
    limits: Limits,
    peers: Mutex<HashMap<IpAddr, Peer>>,
    total: AtomicUsize,
    pub(crate) global: Arc<Budget>,
}

impl Admission {
    pub fn new(limits: Limits, global_gauge: Option<Gauge>) -> Self {
        let global = Budget::new(limits.max_bytes_in_flight, global_gauge);
        Self {
            limits,
            peers: Mutex::new(HashMap::new()),
            total: AtomicUsize::new(0),
            global,
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Counts a new connection from `addr`, or says why it is refused.
    pub fn admit(self: &Arc<Self>, addr: IpAddr) -> Result<Slot, Refusal> {
        // An IPv4-mapped IPv6 address is its IPv4 address.
        let addr = addr.to_canonical();
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        if self.total.load(Ordering::Acquire) >= self.limits.max_connections {
            return Err(Refusal::MaxConnections);
        }
        let peer = peers.entry(addr).or_insert_with(|| Peer {
            connections: 0,
            budget: Budget::new(self.limits.max_bytes_per_address, None),
        });
        if peer.connections >= self.limits.max_connections_per_address {
            return Err(Refusal::MaxConnectionsPerAddress);
        }
        peer.connections += 1;
        self.total.fetch_add(1, Ordering::AcqRel);
        Ok(Slot {
            admission: Arc::clone(self),
            addr,
            budget: Arc::clone(&peer.budget),
        })
    }

    /// Open connections now.
    pub fn open(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }
}

/// An admitted connection; dropping it frees its place.
pub struct Slot {
    admission: Arc<Admission>,
    addr: IpAddr,
    pub(crate) budget: Arc<Budget>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut peers = self
            .admission
            .peers
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(p) = peers.get_mut(&self.addr) {
            p.connections -= 1;
            // Forget the address with its last connection, so the table holds only addresses
            // connected now. Calls still finishing keep their own reference to its budget; a
            // new connection meanwhile starts a fresh one.
            if p.connections == 0 {
                peers.remove(&self.addr);
            }
        }
        self.admission.total.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(total: usize, per_address: usize) -> Limits {
        Limits {
            max_connections: total,
            max_connections_per_address: per_address,
            ..Limits::default()
        }
    }

    #[test]
    fn connections_are_capped_in_total_and_per_address_and_freed_on_drop() {
        let a = Arc::new(Admission::new(limits(3, 2), None));
        let one: IpAddr = "10.0.0.1".parse().unwrap();
        let two: IpAddr = "10.0.0.2".parse().unwrap();
        let s1 = a.admit(one).unwrap();
        let _s2 = a.admit(one).unwrap();
        assert_eq!(a.admit(one).err(), Some(Refusal::MaxConnectionsPerAddress));
        // The IPv4-mapped form is the same address.
        assert_eq!(
            a.admit("::ffff:10.0.0.1".parse().unwrap()).err(),
            Some(Refusal::MaxConnectionsPerAddress)
        );
        let _s3 = a.admit(two).unwrap();
        assert_eq!(a.admit(two).err(), Some(Refusal::MaxConnections));
        drop(s1);
        assert_eq!(a.open(), 2);
        assert!(a.admit(one).is_ok());
    }

    #[test]
    fn an_address_is_forgotten_with_its_last_connection() {
        let a = Arc::new(Admission::new(limits(10, 10), None));
        for i in 0..100u8 {
            let slot = a.admit(IpAddr::from([10, 0, 1, i])).unwrap();
            // A charge outlives its connection.
            slot.budget.force(10);
            drop(slot);
        }
        assert_eq!(
            a.peers.lock().unwrap().len(),
            0,
            "one entry per address ever seen"
        );
    }

    #[tokio::test]
    async fn a_spent_budget_makes_the_next_charge_wait_until_bytes_are_released() {
        let local = Budget::new(100, None);
        let global = Budget::new(1000, None);
        let mut first = Charge::none();
        assert!(!first.grow(&local, &global, 80).await);
        let (l, g) = (Arc::clone(&local), Arc::clone(&global));
        let waiter = tokio::spawn(async move {
            let mut c = Charge::none();
            c.grow(&l, &g, 50).await
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !waiter.is_finished(),
            "80 + 50 > 100: the second charge waits"
        );
        first.resize(10);
        assert!(waiter.await.unwrap(), "admitted once the first shrank");
        assert_eq!(local.used(), 10, "the second charge was dropped");
        assert_eq!(global.used(), 10);
        drop(first);
        assert_eq!((local.used(), global.used()), (0, 0));
    }

    #[tokio::test]
    async fn an_empty_budget_admits_a_charge_larger_than_itself() {
        let local = Budget::new(10, None);
        let global = Budget::new(10, None);
        let mut c = Charge::none();
        c.grow(&local, &global, 1000).await;
        assert_eq!(local.used(), 1000);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), wait_for_room(&local, &global))
                .await
                .is_err(),
            "spent: whoever waits for room waits"
        );
        drop(c);
        assert!(!wait_for_room(&local, &global).await);
    }
}
