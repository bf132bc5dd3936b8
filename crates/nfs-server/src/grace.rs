//! The grace period after a restart (RFC 8881 section 8.4.2; NLM's equivalent).
//!
//! While it lasts, only reclaims of state held before the restart are granted: new opens and
//! locks get NFS4ERR_GRACE / NLM4_DENIED_GRACE_PERIOD, so a client cannot take a lock that
//! another client is about to reclaim. It ends when its time runs out or, sooner, when every
//! client known before the restart has said it finished reclaiming.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Shared by NFSv4.1 and NLM.
#[derive(Debug, Default)]
pub struct Grace {
    until: Mutex<Option<Instant>>,
    /// Set when some protocol cannot tell when its clients are done (NLM): the period then
    /// runs its whole length.
    full: AtomicBool,
}

impl Grace {
    /// No grace period.
    pub fn none() -> Self {
        Self::default()
    }

    /// A grace period of `length` from now.
    pub fn starting_now(length: Duration) -> Self {
        Self {
            until: Mutex::new(Some(Instant::now() + length)),
            full: AtomicBool::new(false),
        }
    }

    fn until(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.until.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether reclaims are still accepted and new state refused.
    pub fn active(&self) -> bool {
        let mut until = self.until();
        match *until {
            Some(t) if Instant::now() < t => true,
            Some(_) => {
                *until = None;
                false
            }
            None => false,
        }
    }

    /// Time left, if the period is active.
    pub fn remaining(&self) -> Option<Duration> {
        let until = *self.until();
        until.and_then(|t| t.checked_duration_since(Instant::now()))
    }

    /// Starts (or restarts) the period for `length` from now.
    pub fn start(&self, length: Duration) {
        *self.until() = Some(Instant::now() + length);
    }

    /// Starts the period (or extends it) to last at least `length` from now, and keeps it from
    /// ending early.
    pub fn start_full(&self, length: Duration) {
        self.full.store(true, Ordering::SeqCst);
        let mut until = self.until();
        let t = Instant::now() + length;
        if until.is_none_or(|u| u < t) {
            *until = Some(t);
        }
    }

    /// Ends the period now (every previous client finished reclaiming), unless it must run
    /// its whole length. Returns whether it ended.
    pub fn end(&self) -> bool {
        if self.full.load(Ordering::SeqCst) {
            return false;
        }
        *self.until() = None;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ends_by_time_or_on_demand() {
        assert!(!Grace::none().active());
        let g = Grace::starting_now(Duration::from_secs(60));
        assert!(g.active());
        assert!(g.remaining().unwrap() > Duration::from_secs(50));
        assert!(g.end());
        assert!(!g.active());
        let g = Grace::starting_now(Duration::ZERO);
        assert!(!g.active());
        // A period that must run its length does not end early.
        let g = Grace::none();
        g.start_full(Duration::from_secs(60));
        assert!(!g.end());
        assert!(g.active());
    }
}
