//! Envoy's ext_authz gRPC service (`envoy.service.auth.v3.Authorization/Check`, as Istio's
//! `envoyExtAuthzGrpc` provider also calls it): tonic with the protocol types `envoy-types`
//! ships precompiled. A check the engine never saw (wrong secret, unreadable attributes) is a
//! gRPC error, which Envoy answers with its `status_on_error` (403 by default): closed, not open.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::service::auth::v3::authorization_server::{Authorization, AuthorizationServer};
use envoy_types::pb::envoy::service::auth::v3::{CheckRequest as PbCheckRequest, CheckResponse};
use http::Method;
use tokio::net::TcpListener;
use tonic::transport::server::{Connected, TcpIncoming};
use tonic::{Request, Response, Status};

use super::check_api::{CheckRequest, Shape};
use super::{grpc_tls, outcome, request};
use crate::config::{CheckSecret, ClientIpSource};
use crate::error::ApiError;
use crate::proxy::Live;
use crate::tls::TlsState;

pub struct GrpcCheck {
    pub proxy: Live,
    pub secret: Option<CheckSecret>,
    pub client_ip: ClientIpSource,
}

#[tonic::async_trait]
impl Authorization for GrpcCheck {
    async fn check(&self, req: Request<PbCheckRequest>) -> Result<Response<CheckResponse>, Status> {
        let peer = req.remote_addr().map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip().to_canonical());
        if let Some(secret) = &self.secret {
            let presented = req.metadata().get(secret.header.as_str()).map(|v| v.as_bytes()).unwrap_or_default();
            if !secret.matches(presented) {
                tracing::warn!(shape = "envoy_grpc", "check refused: the shared secret was missing or wrong");
                // Not our front proxy: its report is not read, not even for the audit line.
                let headers = req.metadata().clone().into_headers();
                self.refused(&ApiError::CheckCallerRefused, &Method::POST, &headers, peer);
                return Err(Status::permission_denied("the check endpoint answers only its configured front proxy"));
            }
        }
        let (method, uri, mut headers, source) = request::envoy_grpc(req.get_ref()).map_err(|e| {
            tracing::warn!(shape = "envoy_grpc", reason = %e.0, "check refused: the front proxy's report is unreadable");
            let headers = req.metadata().clone().into_headers();
            self.refused(&e.clone().into(), &Method::POST, &headers, peer);
            Status::invalid_argument(e.0)
        })?;
        // A client could send the secret header itself; it is not part of its request.
        request::strip_secret(&mut headers, self.secret.as_ref().map(|s| &s.header));
        let client_ip = match request::client_ip(&self.client_ip, &headers, source) {
            Ok(ip) => ip,
            Err(e) => {
                tracing::warn!(shape = "envoy_grpc", reason = %e.0, "check refused: no client address");
                self.refused(&e.clone().into(), &method, &headers, peer);
                return Err(Status::invalid_argument(e.0));
            }
        };
        let outcome = self.proxy.check(CheckRequest { method, uri, headers, client_ip, shape: Shape::EnvoyGrpc }).await;
        Ok(Response::new(outcome::grpc_answer(outcome)))
    }
}

impl GrpcCheck {
    /// Counts and audits a check refused before the engine saw it; Envoy gets a gRPC error and
    /// answers its `status_on_error`, so the standard body goes nowhere.
    fn refused(&self, e: &ApiError, method: &Method, headers: &http::HeaderMap, peer: IpAddr) {
        let _ = self.proxy.load().refuse_check(e, Some(Shape::EnvoyGrpc), method, headers, peer);
    }
}

/// Serves `Check` on `listener` (over TLS with `tls`, handshakes bounded by
/// `handshake_timeout`) until `shutdown`, then lets open calls finish for at most `drain`
/// (Envoy holds its connection open, so the wait must be bounded).
pub async fn serve(
    listener: TcpListener,
    svc: GrpcCheck,
    tls: Option<(Arc<TlsState>, Duration)>,
    shutdown: impl Future<Output = ()> + Send,
    drain: Duration,
) {
    let addr = listener.local_addr().ok();
    match tls {
        None => serve_on(TcpIncoming::from(listener).with_nodelay(Some(true)), svc, shutdown, drain, addr).await,
        Some((tls, timeout)) => serve_on(grpc_tls::incoming(listener, tls, timeout), svc, shutdown, drain, addr).await,
    }
}

async fn serve_on<I, IO, IE>(
    incoming: I,
    svc: GrpcCheck,
    shutdown: impl Future<Output = ()> + Send,
    drain: Duration,
    addr: Option<SocketAddr>,
) where
    I: tonic::codegen::tokio_stream::Stream<Item = Result<IO, IE>>,
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Connected + Unpin + Send + 'static,
    IE: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tonic::transport::Server::builder().serve_with_incoming_shutdown(
        AuthorizationServer::new(svc),
        incoming,
        async move {
            let _ = stop_rx.await;
        },
    );
    let mut server = std::pin::pin!(server);
    tokio::select! {
        r = &mut server => {
            if let Err(e) = r {
                tracing::error!(error = %e, ?addr, "ext_authz gRPC listener failed");
            }
            return;
        }
        () = shutdown => {}
    }
    let _ = stop_tx.send(());
    if tokio::time::timeout(drain, server).await.is_err() {
        tracing::warn!(?addr, "ext_authz gRPC drain cut short");
    }
}
