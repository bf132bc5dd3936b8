//! The HTTP port (`serve --http-port`, default 8080): `/healthz` for liveness, `/readyz` for
//! readiness (the probes the Helm chart points Kubernetes at) and `/metrics` for Prometheus.
//!
//! Readiness means "every volume that existed before this start is served again and every
//! listener takes connections": when the Kubernetes controller runs, it has listed our PVs and
//! re-exported any the registry lacked, and no listener is failing to accept (out of file
//! descriptors, say). Until then the Service sends no clients here. Liveness fails when a
//! listener is gone, or has been failing for longer than [`LIVENESS_GRACE`]: a restart is
//! then the only cure. Both answers name the listeners at fault.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use oncrpc::{ListenerReport, ListenerStatus};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tracing::debug;

/// A listener failing (accept errors, retried) for longer than this fails liveness too, so
/// Kubernetes restarts the pod: the cause (descriptors held by something else, say) did not
/// go away by itself.
pub const LIVENESS_GRACE: std::time::Duration = std::time::Duration::from_secs(120);

/// What the probes report. Shared between the server and whoever makes the process ready.
#[derive(Default)]
pub struct Health {
    ready: AtomicBool,
    /// The RPC server whose listeners the probes check.
    rpc: std::sync::OnceLock<Arc<oncrpc::Server>>,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health")
            .field("ready", &self.is_ready())
            .finish_non_exhaustive()
    }
}

impl Health {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Marks the process ready: every existing volume is served.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Readiness fails from now on: the process is shutting down.
    pub fn stopping(&self) {
        self.ready.store(false, Ordering::Release);
    }

    /// Makes the probes check `server`'s listeners.
    pub fn watch(&self, server: Arc<oncrpc::Server>) {
        let _ = self.rpc.set(server);
    }

    fn listeners(&self) -> Vec<ListenerReport> {
        self.rpc.get().map(|s| s.listeners()).unwrap_or_default()
    }

    /// Liveness: every listener's task runs, and none has been failing for longer than
    /// [`LIVENESS_GRACE`]. Otherwise the listeners at fault.
    pub fn live(&self) -> Result<(), String> {
        let bad: Vec<String> = self
            .listeners()
            .into_iter()
            .filter(|l| match &l.status {
                ListenerStatus::Serving => false,
                ListenerStatus::Failing { for_, .. } => *for_ > LIVENESS_GRACE,
                ListenerStatus::Ended => true,
            })
            .map(|l| l.to_string())
            .collect();
        if bad.is_empty() {
            Ok(())
        } else {
            Err(bad.join("\n"))
        }
    }

    /// Readiness: every volume that existed before this start is served again and every
    /// listener takes connections now. Otherwise why not.
    pub fn ready(&self) -> Result<(), String> {
        if !self.is_ready() {
            return Err("existing volumes are still being registered".to_owned());
        }
        let bad: Vec<String> = self
            .listeners()
            .into_iter()
            .filter(|l| l.status != ListenerStatus::Serving)
            .map(|l| l.to_string())
            .collect();
        if bad.is_empty() {
            Ok(())
        } else {
            Err(bad.join("\n"))
        }
    }
}

/// Serves the probes on `listener` until the runtime ends. Each connection is its own task;
/// a client that misbehaves only ends its own connection.
pub async fn serve(listener: TcpListener, health: Arc<Health>, registry: Arc<Mutex<Registry>>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // EMFILE and the like: back off briefly rather than spin.
                debug!(error = %e, "http accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let health = Arc::clone(&health);
        let registry = Arc::clone(&registry);
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let (health, registry) = (Arc::clone(&health), Arc::clone(&registry));
                async move { Ok::<_, Infallible>(answer(&req, &health, &registry)) }
            });
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                debug!(%peer, error = %e, "http connection ended");
            }
        });
    }
}

fn answer<B>(
    req: &Request<B>,
    health: &Health,
    registry: &Mutex<Registry>,
) -> Response<Full<Bytes>> {
    if matches!(*req.method(), Method::GET | Method::HEAD) && req.uri().path() == "/metrics" {
        let mut text = String::new();
        let encoded = {
            let registry = registry.lock().unwrap_or_else(|e| e.into_inner());
            prometheus_client::encoding::text::encode(&mut text, &registry)
        };
        let (status, body) = match encoded {
            Ok(()) => (StatusCode::OK, Bytes::from(text)),
            Err(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                Bytes::from_static(b"encoding failed\n"),
            ),
        };
        let mut resp = Response::new(Full::new(body));
        *resp.status_mut() = status;
        resp.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static(
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            ),
        );
        return resp;
    }
    let probe = |r: Result<(), String>, ok: &str, failing: &str| match r {
        Ok(()) => (StatusCode::OK, format!("{ok}\n")),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{failing}: {why}\n"),
        ),
    };
    let (status, body) = match (req.method(), req.uri().path()) {
        (&Method::GET | &Method::HEAD, "/healthz" | "/livez") => {
            probe(health.live(), "ok", "not live")
        }
        (&Method::GET | &Method::HEAD, "/readyz") => probe(health.ready(), "ready", "not ready"),
        (&Method::GET | &Method::HEAD, _) => (StatusCode::NOT_FOUND, "not found\n".to_owned()),
        _ => (
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed\n".to_owned(),
        ),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}
