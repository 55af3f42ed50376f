//! The same decisions answered to a front proxy that holds the request: Envoy/Istio ext_authz
//! over gRPC (`envoy_grpc`) and HTTP, nginx `auth_request`, and Traefik / Caddy / ingress-nginx
//! forward auth (`http_check`). `request` reads what each front proxy reports, `outcome` says the
//! engine's answer in each protocol; the engine itself decides, counts and audits.

pub mod check_api;
pub mod outcome;
pub mod request;
