//! The same decisions answered to a front proxy that holds the request: Envoy/Istio ext_authz
//! over gRPC (`envoy_grpc`) and HTTP, nginx `auth_request`, and Traefik / Caddy / ingress-nginx
//! forward auth (`http_check`). `request` reads what each front proxy reports, `outcome` says the
//! engine's answer in each protocol; `proxy::check` decides, counts and audits.

pub mod check_api;
pub mod envoy_grpc;
mod grpc_tls;
pub mod http_check;
pub mod outcome;
pub mod request;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::config::{Authz, Limits};
use crate::proxy::Live;
use crate::server::{self, ServeOptions};
use crate::tls::TlsState;

/// The check listeners, bound and serving.
pub struct Listening {
    pub http_addr: SocketAddr,
    pub grpc_addr: Option<SocketAddr>,
    /// The listeners' certificate, key and client CA (`authz.tls`), for a reload.
    pub tls: Option<Arc<TlsState>>,
    /// Ends when both listeners have drained.
    pub done: JoinHandle<()>,
}

/// Binds the check listeners and serves them until `shutdown` (called once per listener).
pub async fn start<F>(
    settings: &Authz,
    proxy: Live,
    limits: &Limits,
    drain: Duration,
    shutdown: impl Fn() -> F,
) -> anyhow::Result<Listening>
where
    F: Future<Output = ()> + Send + 'static,
{
    let http = TcpListener::bind(settings.listen).await.with_context(|| format!("authz.listen {}", settings.listen))?;
    let http_addr = http.local_addr()?;
    let grpc = match settings.grpc_listen {
        Some(addr) => Some(TcpListener::bind(addr).await.with_context(|| format!("authz.grpc_listen {addr}"))?),
        None => None,
    };
    let grpc_addr = grpc.as_ref().map(TcpListener::local_addr).transpose()?;
    let tls = match &settings.tls {
        Some(t) => Some(Arc::new(TlsState::load_requiring_client_cert("authz.tls", &t.files, &t.client_ca_file)?)),
        None => None,
    };
    let opts =
        ServeOptions { limits: limits.clone(), drain_timeout: drain, tls: tls.clone(), metrics: None, name: "authz" };
    let handler = Arc::new(http_check::HttpCheck { proxy: proxy.clone(), settings: settings.clone() });
    let http_task = tokio::spawn(server::serve(http, handler, opts, shutdown()));
    let grpc_task = grpc.map(|listener| {
        let svc = envoy_grpc::GrpcCheck {
            proxy,
            secret: settings.secret.clone(),
            client_ip: settings.client_ip.envoy_grpc.clone(),
        };
        let tls = tls.clone().map(|t| (t, limits.header_read_timeout));
        tokio::spawn(envoy_grpc::serve(listener, svc, tls, shutdown(), drain))
    });
    let (secret, mtls) = (settings.secret.is_some(), tls.is_some());
    tracing::info!(%http_addr, ?grpc_addr, secret, mtls, "external authorization listening");
    let done = tokio::spawn(async move {
        let _ = http_task.await;
        if let Some(t) = grpc_task {
            let _ = t.await;
        }
    });
    Ok(Listening { http_addr, grpc_addr, tls, done })
}
