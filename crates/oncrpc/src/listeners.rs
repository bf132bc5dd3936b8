//! The health of every listening socket, for the probes: a listener is serving, failing
//! (its accept or receive has been failing since some instant: out of file descriptors,
//! say; it retries with back-off and serves again once the cause is gone), or ended (its task
//! is gone, which only a bug can cause, and only a restart mends).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    Serving,
    Failing { since: Instant, error: String },
    Ended,
}

/// One listening socket's health, updated by its loop.
#[derive(Debug)]
pub struct ListenerHealth {
    name: &'static str,
    addr: SocketAddr,
    state: Mutex<State>,
}

impl ListenerHealth {
    pub fn new(name: &'static str, addr: SocketAddr) -> Arc<Self> {
        Arc::new(Self {
            name,
            addr,
            state: Mutex::new(State::Serving),
        })
    }

    fn set(&self, state: State) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = state;
    }

    pub(crate) fn serving(&self) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if *s != State::Serving {
            *s = State::Serving;
        }
    }

    /// Records a failure; the first of a run fixes since when it has been failing.
    pub(crate) fn failing(&self, error: &std::io::Error) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let since = match &*s {
            State::Failing { since, .. } => *since,
            _ => Instant::now(),
        };
        *s = State::Failing {
            since,
            error: error.to_string(),
        };
    }

    pub fn report(&self) -> ListenerReport {
        let status = match &*self.state.lock().unwrap_or_else(|e| e.into_inner()) {
            State::Serving => Status::Serving,
            State::Failing { since, error } => Status::Failing {
                for_: since.elapsed(),
                error: error.clone(),
            },
            State::Ended => Status::Ended,
        };
        ListenerReport {
            name: self.name,
            addr: self.addr,
            status,
        }
    }
}

/// Marks its listener ended when dropped: the listener's task returned or panicked.
pub(crate) struct EndGuard(pub(crate) Arc<ListenerHealth>);

impl Drop for EndGuard {
    fn drop(&mut self) {
        self.0.set(State::Ended);
    }
}

/// What a probe reads about one listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerReport {
    pub name: &'static str,
    pub addr: SocketAddr,
    pub status: Status,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    Serving,
    Failing { for_: Duration, error: String },
    Ended,
}

impl std::fmt::Display for ListenerReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.status {
            Status::Serving => write!(f, "{} {}: serving", self.name, self.addr),
            Status::Failing { for_, error } => write!(
                f,
                "{} {}: failing for {} s: {error}",
                self.name,
                self.addr,
                for_.as_secs()
            ),
            Status::Ended => write!(f, "{} {}: stopped", self.name, self.addr),
        }
    }
}
