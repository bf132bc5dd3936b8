//! What the RPC layer counts: calls by program, version, procedure and outcome, their
//! latency, connections, and messages rejected before reaching a service. Recorded when the
//! reply is handed to the writer, so the latency covers decoding, the file-system work and
//! encoding. Registered into a `prometheus-client` registry by the process.

use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::message::Reply;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub program: &'static str,
    pub version: &'static str,
    pub procedure: &'static str,
    pub status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LatencyLabels {
    pub program: &'static str,
    pub procedure: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

fn latency_histogram() -> Histogram {
    // 50 µs .. ~13 s, by factors of 4.
    Histogram::new(exponential_buckets(0.000_05, 4.0, 10))
}

/// The RPC layer's metrics (cheap to clone: every field is shared).
#[derive(Clone, Debug)]
pub struct RpcMetrics {
    calls: Family<CallLabels, Counter>,
    latency: Family<LatencyLabels, Histogram, fn() -> Histogram>,
    connections: Gauge,
    accepted: Counter,
    rejected: Family<ReasonLabels, Counter>,
    refused: Family<ReasonLabels, Counter>,
    closed: Family<ReasonLabels, Counter>,
    accept_failures: Counter,
    backpressure: Counter,
    /// Bytes of requests and replies held for all clients now.
    pub(crate) bytes_in_flight: Gauge,
}

impl Default for RpcMetrics {
    fn default() -> Self {
        Self {
            calls: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            connections: Gauge::default(),
            accepted: Counter::default(),
            rejected: Family::default(),
            refused: Family::default(),
            closed: Family::default(),
            accept_failures: Counter::default(),
            backpressure: Counter::default(),
            bytes_in_flight: Gauge::default(),
        }
    }
}

impl RpcMetrics {
    /// Creates the metrics and registers them under their documented names.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "nfs_requests",
            "RPC calls answered, by program, version, procedure and status",
            m.calls.clone(),
        );
        registry.register(
            "nfs_request_duration_seconds",
            "Time from a call's arrival to its reply being queued for sending",
            m.latency.clone(),
        );
        registry.register(
            "rpc_connections",
            "Client connections open now",
            m.connections.clone(),
        );
        registry.register(
            "rpc_connections_accepted",
            "Client connections accepted",
            m.accepted.clone(),
        );
        registry.register(
            "rpc_rejected_messages",
            "Messages refused before reaching a service (malformed records, bad headers, \
             unknown programs or versions, refused credentials), by reason",
            m.rejected.clone(),
        );
        registry.register(
            "rpc_connections_refused",
            "New connections closed at once because a connection limit was reached, by limit",
            m.refused.clone(),
        );
        registry.register(
            "rpc_connections_closed",
            "Connections the server closed because the client was idle, sent a record too \
             slowly, or did not read its replies, by reason",
            m.closed.clone(),
        );
        registry.register(
            "rpc_accept_failures",
            "Failed accepts (out of file descriptors or memory), each retried after a pause",
            m.accept_failures.clone(),
        );
        registry.register(
            "rpc_backpressure_waits",
            "Times a connection was not read because its client's (or all clients') bytes in \
             flight had reached the limit",
            m.backpressure.clone(),
        );
        registry.register(
            "rpc_bytes_in_flight",
            "Bytes of requests and replies held in memory for all clients now",
            m.bytes_in_flight.clone(),
        );
        // Zero series from the start, so dashboards and alerts see the reasons before the
        // first event.
        for reason in ["max_connections", "max_connections_per_address"] {
            drop(m.refused.get_or_create(&ReasonLabels { reason }));
        }
        for reason in ["idle", "record_timeout", "send_timeout"] {
            drop(m.closed.get_or_create(&ReasonLabels { reason }));
        }
        m
    }

    pub(crate) fn refused(&self, reason: &'static str) {
        self.refused.get_or_create(&ReasonLabels { reason }).inc();
    }

    pub(crate) fn closed(&self, reason: &'static str) {
        self.closed.get_or_create(&ReasonLabels { reason }).inc();
    }

    pub(crate) fn accept_failed(&self) {
        self.accept_failures.inc();
    }

    pub(crate) fn backpressure(&self) {
        self.backpressure.inc();
    }

    pub(crate) fn connection_opened(&self) {
        self.accepted.inc();
        self.connections.inc();
    }

    pub(crate) fn connection_closed(&self) {
        self.connections.dec();
    }

    pub(crate) fn rejected(&self, reason: &'static str) {
        self.rejected.get_or_create(&ReasonLabels { reason }).inc();
    }

    pub(crate) fn answered(&self, call: &Observed, status: &'static str) {
        self.calls
            .get_or_create(&CallLabels {
                program: call.names.program,
                version: call.names.version,
                procedure: call.names.procedure,
                status,
            })
            .inc();
        self.latency
            .get_or_create(&LatencyLabels {
                program: call.names.program,
                procedure: call.names.procedure,
            })
            .observe(call.start.elapsed().as_secs_f64());
    }
}

/// How a service names itself and its procedures in metrics.
#[derive(Clone, Copy, Debug)]
pub struct CallNames {
    pub program: &'static str,
    pub version: &'static str,
    pub procedure: &'static str,
}

/// A call being timed, carried by its [`crate::ReplySender`].
pub struct Observed {
    pub(crate) metrics: std::sync::Arc<RpcMetrics>,
    pub(crate) names: CallNames,
    pub(crate) start: Instant,
    /// Reads the status of a successful reply's body (an `nfsstat3`, say).
    pub(crate) status_of: fn(u32, &[u8]) -> &'static str,
    pub(crate) proc_: u32,
}

impl Observed {
    pub(crate) fn finish(&self, reply: &Reply) {
        let status = match reply {
            Reply::Success(body) | Reply::SuccessFile(body, _) => {
                (self.status_of)(self.proc_, body)
            }
            Reply::ProgUnavail => "PROG_UNAVAIL",
            Reply::ProgMismatch { .. } => "PROG_MISMATCH",
            Reply::ProcUnavail => "PROC_UNAVAIL",
            Reply::GarbageArgs => "GARBAGE_ARGS",
            Reply::SystemErr => "SYSTEM_ERR",
            Reply::RpcMismatch => "RPC_MISMATCH",
            Reply::AuthError(_) => "AUTH_ERROR",
        };
        self.metrics.answered(self, status);
    }
}
