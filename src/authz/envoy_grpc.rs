//! Envoy's ext_authz gRPC service (`envoy.service.auth.v3.Authorization/Check`, as Istio's
//! `envoyExtAuthzGrpc` provider also calls it): tonic with the protocol types `envoy-types`
//! ships precompiled. A check the engine never saw (wrong secret, unreadable attributes) is a
//! gRPC error, which Envoy answers with its `status_on_error` (403 by default): closed, not open.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use envoy_types::pb::envoy::service::auth::v3::authorization_server::{Authorization, AuthorizationServer};
use envoy_types::pb::envoy::service::auth::v3::{CheckRequest as PbCheckRequest, CheckResponse};
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};

use super::check_api::{CheckRequest, Shape};
use super::{outcome, request};
use crate::config::{CheckSecret, ClientIpSource};
use crate::proxy::Live;

pub struct GrpcCheck {
    pub proxy: Live,
    pub secret: Option<CheckSecret>,
    pub client_ip: ClientIpSource,
}

#[tonic::async_trait]
impl Authorization for GrpcCheck {
    async fn check(&self, req: Request<PbCheckRequest>) -> Result<Response<CheckResponse>, Status> {
        if let Some(secret) = &self.secret {
            let presented = req.metadata().get(secret.header.as_str()).map(|v| v.as_bytes()).unwrap_or_default();
            if !secret.matches(presented) {
                tracing::warn!(shape = "envoy_grpc", "check refused: the shared secret was missing or wrong");
                return Err(Status::permission_denied("the check endpoint answers only its configured front proxy"));
            }
        }
        let (method, uri, mut headers, source) = request::envoy_grpc(req.get_ref()).map_err(|e| {
            tracing::warn!(shape = "envoy_grpc", reason = %e.0, "check refused: the front proxy's report is unreadable");
            Status::invalid_argument(e.0)
        })?;
        // A client could send the secret header itself; it is not part of its request.
        request::strip_secret(&mut headers, self.secret.as_ref().map(|s| &s.header));
        let client_ip = request::client_ip(&self.client_ip, &headers, source).map_err(|e| {
            tracing::warn!(shape = "envoy_grpc", reason = %e.0, "check refused: no client address");
            Status::invalid_argument(e.0)
        })?;
        let outcome = self.proxy.check(CheckRequest { method, uri, headers, client_ip, shape: Shape::EnvoyGrpc }).await;
        Ok(Response::new(outcome::grpc_answer(outcome)))
    }
}

/// Serves `Check` on `listener` until `shutdown`, then lets open calls finish for at most
/// `drain` (Envoy holds its connection open, so the wait must be bounded).
pub async fn serve(listener: TcpListener, svc: GrpcCheck, shutdown: impl Future<Output = ()> + Send, drain: Duration) {
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tonic::transport::Server::builder().serve_with_incoming_shutdown(
        AuthorizationServer::new(svc),
        tonic::transport::server::TcpIncoming::from(listener),
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
