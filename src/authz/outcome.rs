//! The engine's answer, said the way each front proxy understands it. Every shape forwards on
//! "allow" with keygate's identity headers; a refusal keeps keygate's status, JSON body and
//! headers wherever the protocol can carry them, and where it cannot (a 200 "empty result" is
//! "allow" to every HTTP shape; nginx turns all but 401/403 into 500) the real status travels in
//! `X-Keygate-Status` for the front proxy's config to restore. Pure.

use bytes::Bytes;
use envoy_types::pb::envoy::config::core::v3::{
    header_value_option::HeaderAppendAction, HeaderValue, HeaderValueOption,
};
use envoy_types::pb::envoy::r#type::v3::HttpStatus;
use envoy_types::pb::envoy::service::auth::v3::{check_response, CheckResponse, DeniedHttpResponse, OkHttpResponse};
use envoy_types::pb::google::rpc;
use http::header::HeaderName;
use http::{HeaderMap, Response, StatusCode};

use super::check_api::{CheckOutcome, Shape};

/// The status keygate decided, when the answer to the front proxy had to carry another.
pub static X_KEYGATE_STATUS: HeaderName = HeaderName::from_static("x-keygate-status");
/// nginx only: the JSON body, since `auth_request` drops the subrequest's body.
pub static X_KEYGATE_BODY: HeaderName = HeaderName::from_static("x-keygate-body");
/// Envoy HTTP ext_authz: headers to remove from the upstream request.
pub static X_ENVOY_AUTH_HEADERS_TO_REMOVE: HeaderName = HeaderName::from_static("x-envoy-auth-headers-to-remove");

const GRPC_OK: i32 = 0;
const GRPC_PERMISSION_DENIED: i32 = 7;
const GRPC_UNAUTHENTICATED: i32 = 16;

/// The answer to an HTTP check (Envoy HTTP, nginx, forward auth).
pub fn http_answer(outcome: CheckOutcome, shape: Shape) -> Response<Bytes> {
    match outcome {
        CheckOutcome::Allow { set, remove, response } => {
            let mut resp = Response::new(Bytes::new());
            let h = resp.headers_mut();
            h.reserve(set.len() + response.len() + 1);
            h.extend(set);
            h.extend(response);
            if shape == Shape::EnvoyHttp && !remove.is_empty() {
                let list = remove.iter().map(HeaderName::as_str).collect::<Vec<_>>().join(",");
                h.insert(X_ENVOY_AUTH_HEADERS_TO_REMOVE.clone(), http::HeaderValue::from_str(&list).expect("names"));
            }
            resp
        }
        CheckOutcome::Deny(resp) => http_denial(resp, shape),
    }
}

fn http_denial(mut resp: Response<Bytes>, shape: Shape) -> Response<Bytes> {
    let decided = resp.status();
    let carried = match shape {
        // Only 401 and 403 reach the client through `auth_request` (anything else is a 500).
        Shape::NginxAuthRequest if decided == StatusCode::UNAUTHORIZED => decided,
        Shape::NginxAuthRequest => StatusCode::FORBIDDEN,
        // A 2xx is "allow" to these: the empty result must not read as permission to forward.
        Shape::EnvoyHttp | Shape::ForwardAuth | Shape::Inline | Shape::EnvoyGrpc if decided.is_success() => {
            StatusCode::FORBIDDEN
        }
        Shape::EnvoyHttp | Shape::ForwardAuth | Shape::Inline | Shape::EnvoyGrpc => decided,
    };
    let h = resp.headers_mut();
    if carried != decided || shape == Shape::NginxAuthRequest {
        h.insert(X_KEYGATE_STATUS.clone(), http::HeaderValue::from(decided.as_u16()));
    }
    if shape == Shape::NginxAuthRequest {
        // The JSON is one line; a body that is not a valid header value stays the body only.
        if let Ok(v) = http::HeaderValue::from_bytes(resp.body()) {
            resp.headers_mut().insert(X_KEYGATE_BODY.clone(), v);
        }
    }
    *resp.status_mut() = carried;
    resp
}

/// The answer to Envoy's gRPC `Check`.
pub fn grpc_answer(outcome: CheckOutcome) -> CheckResponse {
    match outcome {
        CheckOutcome::Allow { set, remove, response } => CheckResponse {
            status: Some(rpc::Status { code: GRPC_OK, ..Default::default() }),
            http_response: Some(check_response::HttpResponse::OkResponse(OkHttpResponse {
                headers: options(&set),
                headers_to_remove: remove.iter().map(|n| n.as_str().to_string()).collect(),
                response_headers_to_add: options(&response),
                ..Default::default()
            })),
            dynamic_metadata: None,
        },
        CheckOutcome::Deny(resp) => {
            let code =
                if resp.status() == StatusCode::UNAUTHORIZED { GRPC_UNAUTHENTICATED } else { GRPC_PERMISSION_DENIED };
            let status = resp.status();
            CheckResponse {
                status: Some(rpc::Status { code, message: status.to_string(), details: Vec::new() }),
                http_response: Some(check_response::HttpResponse::DeniedResponse(DeniedHttpResponse {
                    // Every status keygate answers is in Envoy's StatusCode enum (200 included).
                    status: Some(HttpStatus { code: i32::from(status.as_u16()) }),
                    headers: options(resp.headers()),
                    body: String::from_utf8_lossy(resp.body()).into_owned(),
                })),
                dynamic_metadata: None,
            }
        }
    }
}

/// keygate's value replaces whatever the request (or Envoy's reply) had under that name: the
/// first value overwrites, further values of the same name append to it.
fn options(headers: &HeaderMap) -> Vec<HeaderValueOption> {
    let mut out = Vec::with_capacity(headers.len());
    for name in headers.keys() {
        for (i, v) in headers.get_all(name).iter().enumerate() {
            let action = if i == 0 {
                HeaderAppendAction::OverwriteIfExistsOrAdd
            } else {
                HeaderAppendAction::AppendIfExistsOrAdd
            };
            let (value, raw_value) = match v.to_str() {
                Ok(s) => (s.to_string(), Vec::new()),
                Err(_) => (String::new(), v.as_bytes().to_vec()),
            };
            #[allow(deprecated)]
            out.push(HeaderValueOption {
                header: Some(HeaderValue { key: name.as_str().to_string(), value, raw_value }),
                append: None,
                append_action: action.into(),
                keep_empty_value: true,
            });
        }
    }
    out
}

#[cfg(test)]
#[path = "outcome_tests.rs"]
mod tests;
