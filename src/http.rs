//! The HTTP port (`serve --http-port`, default 8080): `/healthz` for liveness, `/readyz` for
//! readiness (the probes the Helm chart points Kubernetes at) and `/metrics` for Prometheus.
//!
//! Readiness means "every volume that existed before this start is served again": the NFS
//! listeners are up and, when the Kubernetes controller runs, it has listed our PVs and
//! re-exported any the registry lacked. Until then the Service sends no clients here.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tracing::debug;

/// What the probes report. Shared between the server and whoever makes the process ready.
#[derive(Debug, Default)]
pub struct Health {
    ready: AtomicBool,
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
    let (status, body) = match (req.method(), req.uri().path()) {
        (&Method::GET | &Method::HEAD, "/healthz" | "/livez") => (StatusCode::OK, "ok\n"),
        (&Method::GET | &Method::HEAD, "/readyz") if health.is_ready() => {
            (StatusCode::OK, "ready\n")
        }
        (&Method::GET | &Method::HEAD, "/readyz") => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: existing volumes are still being registered\n",
        ),
        (&Method::GET | &Method::HEAD, _) => (StatusCode::NOT_FOUND, "not found\n"),
        _ => (StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n"),
    };
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}
