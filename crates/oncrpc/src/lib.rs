//! ONC RPC (RFC 5531) over TCP and UDP, knowing nothing about NFS.
//!
//! This crate owns the wire framing and the call/reply envelope:
//! - [`record`]: record marking with a hard bound on record size, so a peer cannot make us
//!   allocate more than the bound;
//! - [`message`]: decoding a call header (including AUTH_SYS credentials) and encoding replies,
//!   as pure functions over byte buffers;
//! - [`server`]: the TCP accept loop and per-connection pipeline (many calls in flight, replies
//!   matched by xid) dispatching to [`RpcService`] implementations;
//! - [`udp`]: the same dispatch for calls arriving as datagrams;
//! - [`client`]: a minimal caller (portmapper GETPORT, one call over TCP or UDP) for
//!   callbacks to peers;
//! - [`portmap`]: a portmapper v2 service answering for the programs this process serves;
//! - [`limits`]: what one client may hold (connections, time, bytes in flight);
//! - [`listeners`]: each listening socket's health, for the probes;
//! - [`throttle`]: rate limiting for log lines clients can cause;
//! - [`metrics`]: calls, latency, connections and rejected messages, for Prometheus.

pub mod buffers;
pub mod client;
pub mod limits;
pub mod listeners;
pub mod message;
pub mod metrics;
pub mod portmap;
pub mod record;
pub mod server;
pub mod throttle;
pub mod udp;

pub use limits::Limits;
pub use listeners::{ListenerReport, Status as ListenerStatus};
pub use message::{AuthSys, CallHeader, Credential, DecodeError, FileSlice, Reply};
pub use metrics::{CallNames, RpcMetrics};
pub use server::{CallArgs, CallContext, ReplySender, RpcService, Server};
